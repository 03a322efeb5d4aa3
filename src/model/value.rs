//! Typed canonical values and their canonical JSON form.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::{
    CountryCode, Email, Field, Gender, InvalidValue, NhsNumber, NiNumber, PassportNumber,
    PhoneNumber, Postcode,
};

/// The storage type of a canonical field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Text,
    Date,
    DateTime,
    Bool,
    Int,
    TextList,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Date => "date",
            ValueType::DateTime => "datetime",
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::TextList => "list of text",
        }
    }
}

/// One canonical value. Text values are already in their field's canonical form (see
/// [`Field::canonicalise`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Text(String),
    Date(NaiveDate),
    /// Always UTC.
    DateTime(DateTime<Utc>),
    Bool(bool),
    Int(i64),
    TextList(Vec<String>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Text(_) => ValueType::Text,
            Value::Date(_) => ValueType::Date,
            Value::DateTime(_) => ValueType::DateTime,
            Value::Bool(_) => ValueType::Bool,
            Value::Int(_) => ValueType::Int,
            Value::TextList(_) => ValueType::TextList,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Canonical JSON: dates `YYYY-MM-DD`, date-times RFC 3339 in UTC with `Z`, lists as
    /// arrays of strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Date(d) => serde_json::Value::String(format_date(*d)),
            Value::DateTime(t) => serde_json::Value::String(format_datetime(*t)),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::TextList(items) => items
                .iter()
                .cloned()
                .map(serde_json::Value::String)
                .collect(),
        }
    }

    /// Reads the canonical JSON form back for a given type. Strict: no coercions.
    /// [`Value::from_json`] of a value the caller no longer needs: text is moved, not copied.
    pub fn from_json_owned(ty: ValueType, json: serde_json::Value) -> Result<Value, InvalidValue> {
        use serde_json::Value as J;
        match (ty, json) {
            (ValueType::Text, J::String(s)) => Ok(Value::Text(s)),
            (ValueType::TextList, J::Array(items)) => items
                .into_iter()
                .map(|i| match i {
                    J::String(s) => Ok(s),
                    _ => Err(InvalidValue::WrongType(ty.as_str())),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::TextList),
            (ty, json) => Value::from_json(ty, &json),
        }
    }

    pub fn from_json(ty: ValueType, json: &serde_json::Value) -> Result<Value, InvalidValue> {
        use serde_json::Value as J;
        let wrong = InvalidValue::WrongType(ty.as_str());
        match (ty, json) {
            (ValueType::Text, J::String(s)) => Ok(Value::Text(s.clone())),
            (ValueType::Date, J::String(s)) => parse_iso_date(s).map(Value::Date),
            (ValueType::DateTime, J::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Value::DateTime(t.with_timezone(&Utc)))
                .map_err(|_| InvalidValue::BadFormat),
            (ValueType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
            (ValueType::Int, J::Number(n)) => n.as_i64().map(Value::Int).ok_or(wrong),
            (ValueType::TextList, J::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(wrong))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::TextList),
            _ => Err(wrong),
        }
    }
}

/// `YYYY-MM-DD`.
pub fn format_date(date: NaiveDate) -> String {
    use chrono::Datelike;
    match date.year() {
        // What `%Y-%m-%d` gives, without interpreting a format string for every value.
        y @ 0..=9999 => format!("{y:04}-{:02}-{:02}", date.month(), date.day()),
        _ => date.format("%Y-%m-%d").to_string(),
    }
}

/// RFC 3339 in UTC with `Z`; fractional seconds only when present.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The earliest and latest years a date in a care record can sensibly have.
pub const DATE_YEARS: std::ops::RangeInclusive<i32> = 1850..=2200;

/// Strict `YYYY-MM-DD` (exactly ten characters, four-digit year within [`DATE_YEARS`]).
pub fn parse_iso_date(input: &str) -> Result<NaiveDate, InvalidValue> {
    let b = input.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(InvalidValue::BadFormat);
    }
    // The shape is checked: every other byte is an ASCII digit.
    let number = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0u32, |n, c| n * 10 + u32::from(c - b'0'))
    };
    let date = NaiveDate::from_ymd_opt(number(0..4) as i32, number(5..7), number(8..10))
        .ok_or(InvalidValue::OutOfRange)?;
    check_date_range(date)
}

pub fn check_date_range(date: NaiveDate) -> Result<NaiveDate, InvalidValue> {
    use chrono::Datelike;
    if DATE_YEARS.contains(&date.year()) {
        Ok(date)
    } else {
        Err(InvalidValue::OutOfRange)
    }
}

/// The canonical values of one record (or one person), by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalValues(BTreeMap<Field, Value>);

impl CanonicalValues {
    pub fn new() -> Self {
        CanonicalValues(BTreeMap::new())
    }

    pub fn get(&self, field: Field) -> Option<&Value> {
        self.0.get(&field)
    }

    pub fn insert(&mut self, field: Field, value: Value) -> Option<Value> {
        self.0.insert(field, value)
    }

    pub fn remove(&mut self, field: Field) -> Option<Value> {
        self.0.remove(&field)
    }

    pub fn contains(&self, field: Field) -> bool {
        self.0.contains_key(&field)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Field, &Value)> {
        self.0.iter().map(|(f, v)| (*f, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `{ "given_name": "Anna", "birth_date": "1946-03-25", ... }` keyed by canonical name.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.iter()
            .map(|(f, v)| (f.name().to_owned(), v.to_json()))
            .collect()
    }

    fn text(&self, field: Field) -> Option<&str> {
        self.get(field).and_then(Value::as_text)
    }

    pub fn nhs_number(&self) -> Option<NhsNumber> {
        self.text(Field::NhsNumber)
            .and_then(|s| NhsNumber::parse(s).ok())
    }

    pub fn email(&self) -> Option<Email> {
        self.text(Field::Email).and_then(|s| Email::parse(s).ok())
    }

    pub fn mobile(&self) -> Option<PhoneNumber> {
        self.text(Field::Mobile)
            .and_then(|s| PhoneNumber::parse(s).ok())
    }

    pub fn phone(&self) -> Option<PhoneNumber> {
        self.text(Field::Phone)
            .and_then(|s| PhoneNumber::parse(s).ok())
    }

    pub fn postcode(&self) -> Option<Postcode> {
        self.text(Field::Postcode)
            .and_then(|s| Postcode::parse(s).ok())
    }

    pub fn ni_number(&self) -> Option<NiNumber> {
        self.text(Field::NiNumber)
            .and_then(|s| NiNumber::parse(s).ok())
    }

    pub fn passport_number(&self) -> Option<PassportNumber> {
        self.text(Field::PassportNumber)
            .and_then(|s| PassportNumber::parse(s).ok())
    }

    pub fn country(&self) -> Option<CountryCode> {
        self.text(Field::Country)
            .and_then(|s| CountryCode::parse(s).ok())
    }

    pub fn gender(&self) -> Option<Gender> {
        self.text(Field::Gender)
            .and_then(|s| Gender::from_token(s).ok())
    }

    pub fn birth_date(&self) -> Option<NaiveDate> {
        match self.get(Field::BirthDate) {
            Some(Value::Date(d)) => Some(*d),
            _ => None,
        }
    }
}

impl FromIterator<(Field, Value)> for CanonicalValues {
    fn from_iter<I: IntoIterator<Item = (Field, Value)>>(iter: I) -> Self {
        CanonicalValues(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_date(input: &str, expected: Result<&str, InvalidValue>) {
        let got = parse_iso_date(input).map(format_date);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn iso_dates() {
        check_date("1946-03-25", Ok("1946-03-25"));
        check_date("2024-02-29", Ok("2024-02-29"));
        check_date("2023-02-29", Err(InvalidValue::OutOfRange));
        check_date("1946-3-25", Err(InvalidValue::BadFormat));
        check_date("+1946-03-25", Err(InvalidValue::BadFormat));
        check_date("1800-01-01", Err(InvalidValue::OutOfRange));
        check_date("25/03/1946", Err(InvalidValue::BadFormat));
        check_date("", Err(InvalidValue::BadFormat));
        check_date("1946-00-25", Err(InvalidValue::OutOfRange));
        check_date("1946-13-25", Err(InvalidValue::OutOfRange));
        check_date("1946-03-00", Err(InvalidValue::OutOfRange));
        check_date("1946-04-31", Err(InvalidValue::OutOfRange));
        check_date("2200-12-31", Ok("2200-12-31"));
        check_date("2201-01-01", Err(InvalidValue::OutOfRange));
    }

    #[test]
    fn dates_format_as_chrono_does() {
        for (y, m, d) in [
            (1, 1, 1),
            (999, 12, 31),
            (1946, 3, 5),
            (9999, 1, 9),
            (-5, 1, 1),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(format_date(date), date.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn json_round_trip() {
        let values = [
            (ValueType::Text, Value::Text("x".into())),
            (
                ValueType::Date,
                Value::Date(NaiveDate::from_ymd_opt(1946, 3, 25).unwrap_or_default()),
            ),
            (ValueType::Bool, Value::Bool(true)),
            (ValueType::Int, Value::Int(-3)),
            (
                ValueType::TextList,
                Value::TextList(vec!["a".into(), "b".into()]),
            ),
        ];
        for (ty, v) in values {
            assert_eq!(Value::from_json(ty, &v.to_json()), Ok(v));
        }
        let t = Value::from_json(
            ValueType::DateTime,
            &serde_json::json!("2026-03-05T20:15:51Z"),
        );
        assert_eq!(
            t.map(|t| t.to_json()),
            Ok(serde_json::json!("2026-03-05T20:15:51Z"))
        );
        assert_eq!(
            Value::from_json(ValueType::Int, &serde_json::json!("3")),
            Err(InvalidValue::WrongType("int"))
        );
    }
}

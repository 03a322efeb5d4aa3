//! Named converters: each reads one API's spelling of a value into its canonical form, and
//! encodes a canonical value back into that spelling for write-back.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value as Json;

use crate::model::{
    CountryCode, Email, FieldKind, Gender, InvalidValue, NhsNumber, NiNumber, PassportNumber,
    PhoneNumber, Postcode, Value, check_date_range, format_date, format_datetime, parse_iso_date,
};

/// How a source value becomes canonical, and back. Named in mapping files by
/// [`Converter::name`]; `enum` takes a table (see [`EnumMap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converter {
    /// Text, trimmed; empty is absent.
    Trim,
    /// A name: trimmed, inner white space collapsed, casing as given.
    Name,
    /// `YYYY-MM-DD`.
    Date,
    /// CareHQ `YYYY-MM-DD HH:MM:SS`, no zone, UTC.
    CarehqDatetime,
    /// RFC 3339 with `Z` or an offset (marketplace `created`); written in UTC with `Z`.
    IsoDatetime,
    /// An ISO date-time standing for a date (marketplace `dob`): the date as written, never
    /// shifted by its zone; written as `YYYY-MM-DDT00:00:00Z`.
    IsoDatetimeToDate,
    /// `YYYY-MM-DDTHH:MM:SS[.fff]` without zone, UTC (PACE); a trailing `Z` is tolerated.
    UtcDatetime,
    /// JSON `true`/`false`; `null` and `""` are absent. Written as JSON booleans.
    TriStateBool,
    /// As `tri_state_bool`, written as `yes`/`no` (CareHQ form bodies).
    CarehqBool,
    /// `"yes"`/`"no"` strings (marketplace); written the same way.
    YesNo,
    /// An integer, as a JSON number or a numeric string.
    Int,
    /// An integer ≥ 0, as a JSON number or a numeric string (marketplace `number_of_children`).
    Count,
    /// A JSON array of strings; `null` is absent, `[]` is an empty list.
    TextList,
    /// One string of comma- or semicolon-separated items (CareValidate `allergies`); written
    /// joined with `, `.
    CommaList,
    Email,
    /// Any phone spelling to E.164; only valid with the `mobile_or_phone` target, which puts a
    /// UK mobile in `mobile` and any other number in `phone`. Written in E.164.
    Phone,
    NhsNumber,
    NiNumber,
    Postcode,
    PassportNumber,
    /// A country name or code to its ISO code; written as the code (CareValidate).
    CountryCode,
    /// A country name or code to its ISO code; written as the English name (free-text fields).
    CountryName,
    /// CareHQ `genders`, a list of `male|female|non_binary|transgender|intersex`.
    GenderCarehqList,
    /// CareValidate `MALE|FEMALE|OTHER`.
    GenderCv,
    /// Free text (`Female`, `F`, `non-binary`, ...); written as the canonical token.
    GenderText,
    /// A closed vocabulary; see [`EnumMap`].
    Enum(EnumMap),
}

/// Source tokens to canonical tokens, matched case-insensitively after trimming, and canonical
/// tokens to what is written. The write side is the inverse of the read side unless given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnumMap {
    read: BTreeMap<String, String>,
    write: BTreeMap<String, String>,
}

impl EnumMap {
    /// `read`: source token → canonical token. `write`: canonical token → source token; when
    /// `None`, the inverse of `read`, which must then be one-to-one.
    pub fn new(
        read: Vec<(String, String)>,
        write: Option<Vec<(String, String)>>,
    ) -> Result<EnumMap, EnumMapError> {
        let mut map = EnumMap::default();
        for (source, canonical) in &read {
            let key = source.trim().to_lowercase();
            if map.read.insert(key, canonical.clone()).is_some() {
                return Err(EnumMapError::DuplicateSourceToken);
            }
        }
        match write {
            Some(pairs) => {
                for (canonical, source) in pairs {
                    if map.write.insert(canonical, source).is_some() {
                        return Err(EnumMapError::DuplicateCanonicalToken);
                    }
                }
            }
            None => {
                for (source, canonical) in read {
                    if map.write.insert(canonical, source).is_some() {
                        return Err(EnumMapError::NotInvertible);
                    }
                }
            }
        }
        Ok(map)
    }

    /// Every canonical token this map can produce or write.
    pub fn canonical_tokens(&self) -> impl Iterator<Item = &str> {
        self.read
            .values()
            .chain(self.write.keys())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnumMapError {
    #[error("two source tokens are the same once trimmed and lower-cased")]
    DuplicateSourceToken,
    #[error("a canonical token appears twice in `write`")]
    DuplicateCanonicalToken,
    #[error(
        "two source tokens map to one canonical token, so the write side is ambiguous: give `write = {{ ... }}`"
    )]
    NotInvertible,
}

/// The converters that take no parameters, by name.
const SIMPLE: &[(&str, Converter)] = &[
    ("trim", Converter::Trim),
    ("name", Converter::Name),
    ("date", Converter::Date),
    ("carehq_datetime", Converter::CarehqDatetime),
    ("iso_datetime", Converter::IsoDatetime),
    ("iso_datetime_to_date", Converter::IsoDatetimeToDate),
    ("utc_datetime", Converter::UtcDatetime),
    ("tri_state_bool", Converter::TriStateBool),
    ("carehq_bool", Converter::CarehqBool),
    ("yes_no", Converter::YesNo),
    ("int", Converter::Int),
    ("count", Converter::Count),
    ("text_list", Converter::TextList),
    ("comma_list", Converter::CommaList),
    ("email", Converter::Email),
    ("phone", Converter::Phone),
    ("nhs_number", Converter::NhsNumber),
    ("ni_number", Converter::NiNumber),
    ("postcode", Converter::Postcode),
    ("passport_number", Converter::PassportNumber),
    ("country_code", Converter::CountryCode),
    ("country_name", Converter::CountryName),
    ("gender_carehq_list", Converter::GenderCarehqList),
    ("gender_cv", Converter::GenderCv),
    ("gender_text", Converter::GenderText),
];

impl Converter {
    /// A converter without parameters, by its mapping-file name.
    pub fn from_name(name: &str) -> Option<Converter> {
        SIMPLE
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
    }

    /// Every name [`Converter::from_name`] knows, plus `enum`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SIMPLE.iter().map(|(n, _)| *n).chain(["enum"])
    }

    pub fn name(&self) -> &'static str {
        match self {
            Converter::Enum(_) => "enum",
            other => SIMPLE
                .iter()
                .find(|(_, c)| c == other)
                .map_or("enum", |(n, _)| n),
        }
    }

    /// Whether this converter's output is a valid value for a field of `kind`.
    /// [`Converter::Phone`] fits no single field: it goes with the `mobile_or_phone` target.
    pub fn fits(&self, kind: FieldKind) -> bool {
        use FieldKind as K;
        match self {
            Converter::Trim => kind == K::Text,
            Converter::Name => matches!(kind, K::Name | K::Text),
            Converter::Date | Converter::IsoDatetimeToDate => kind == K::Date,
            Converter::CarehqDatetime | Converter::IsoDatetime | Converter::UtcDatetime => {
                kind == K::DateTime
            }
            Converter::TriStateBool | Converter::CarehqBool | Converter::YesNo => kind == K::Bool,
            Converter::Int => kind == K::Int,
            Converter::Count => matches!(kind, K::Count | K::Int),
            Converter::TextList | Converter::CommaList => kind == K::TextList,
            Converter::Email => kind == K::Email,
            Converter::Phone => false,
            Converter::NhsNumber => kind == K::NhsNumber,
            Converter::NiNumber => kind == K::NiNumber,
            Converter::Postcode => kind == K::Postcode,
            Converter::PassportNumber => kind == K::Passport,
            Converter::CountryCode | Converter::CountryName => kind == K::Country,
            Converter::GenderCarehqList | Converter::GenderCv | Converter::GenderText => {
                kind == K::Gender
            }
            Converter::Enum(map) => match kind {
                K::Token(vocabulary) => map.canonical_tokens().all(|t| vocabulary.contains(&t)),
                _ => false,
            },
        }
    }

    /// Reads a source value. `Ok(None)`: the source holds nothing (`null`, `""`, blank).
    pub fn read(&self, raw: &Json) -> Result<Option<Value>, InvalidValue> {
        if raw.is_null() {
            return Ok(None);
        }
        match self {
            Converter::TriStateBool | Converter::CarehqBool => read_bool(raw, true),
            Converter::YesNo => read_bool(raw, false),
            Converter::Int => read_int(raw).map(|i| i.map(Value::Int)),
            Converter::Count => match read_int(raw)? {
                Some(i) if i < 0 => Err(InvalidValue::OutOfRange),
                other => Ok(other.map(Value::Int)),
            },
            Converter::TextList => read_string_array(raw).map(|items| Some(Value::TextList(items))),
            Converter::CommaList => read_comma_list(raw),
            Converter::GenderCarehqList => read_carehq_genders(raw),
            Converter::NhsNumber => match raw {
                // A number loses leading zeros; the length check then rejects it.
                Json::Number(n) => NhsNumber::parse(&n.to_string())
                    .map(|n| Some(Value::Text(n.as_str().to_owned()))),
                _ => self.read_text(raw),
            },
            _ => self.read_text(raw),
        }
    }

    /// Converters whose source value is one string.
    fn read_text(&self, raw: &Json) -> Result<Option<Value>, InvalidValue> {
        let Json::String(s) = raw else {
            return Err(InvalidValue::WrongType("string"));
        };
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let text = |t: String| Ok(Some(Value::Text(t)));
        match self {
            Converter::Trim => text(s.to_owned()),
            Converter::Name => text(s.split_whitespace().collect::<Vec<_>>().join(" ")),
            Converter::Date => parse_iso_date(s).map(|d| Some(Value::Date(d))),
            Converter::CarehqDatetime => read_carehq_datetime(s).map(Some),
            Converter::IsoDatetime => read_iso_datetime(s).map(Some),
            Converter::IsoDatetimeToDate => read_iso_datetime_as_date(s).map(Some),
            Converter::UtcDatetime => read_utc_datetime(s).map(Some),
            Converter::Email => text(Email::parse(s)?.as_str().to_owned()),
            Converter::Phone => text(PhoneNumber::parse(s)?.as_str().to_owned()),
            Converter::NhsNumber => text(NhsNumber::parse(s)?.as_str().to_owned()),
            Converter::NiNumber => text(NiNumber::parse(s)?.as_str().to_owned()),
            Converter::Postcode => text(Postcode::parse(s)?.as_str().to_owned()),
            Converter::PassportNumber => text(PassportNumber::parse(s)?.as_str().to_owned()),
            Converter::CountryCode | Converter::CountryName => {
                text(CountryCode::parse(s)?.as_str().to_owned())
            }
            Converter::GenderCv => {
                let gender = match s.to_ascii_uppercase().as_str() {
                    "MALE" => Gender::Male,
                    "FEMALE" => Gender::Female,
                    "OTHER" => Gender::Other,
                    _ => return Err(InvalidValue::NotInVocabulary),
                };
                text(gender.as_str().to_owned())
            }
            Converter::GenderText => text(Gender::from_free_text(s)?.as_str().to_owned()),
            Converter::Enum(map) => map
                .read
                .get(&s.to_lowercase())
                .map(|t| Some(Value::Text(t.clone())))
                .ok_or(InvalidValue::NotInVocabulary),
            Converter::TriStateBool
            | Converter::CarehqBool
            | Converter::YesNo
            | Converter::Int
            | Converter::Count
            | Converter::TextList
            | Converter::CommaList
            | Converter::GenderCarehqList => Err(InvalidValue::WrongType("string")),
        }
    }

    /// Encodes a canonical value the way the source expects it on write.
    pub fn write(&self, value: &Value) -> Result<Json, InvalidValue> {
        let string = |s: &str| Ok(Json::String(s.to_owned()));
        match (self, value) {
            (Converter::Trim | Converter::Name, Value::Text(s)) => string(s),
            (Converter::Date, Value::Date(d)) => Ok(Json::String(format_date(*d))),
            (Converter::IsoDatetimeToDate, Value::Date(d)) => {
                Ok(Json::String(format!("{}T00:00:00Z", format_date(*d))))
            }
            (Converter::CarehqDatetime, Value::DateTime(t)) => {
                Ok(Json::String(t.format("%Y-%m-%d %H:%M:%S").to_string()))
            }
            (Converter::IsoDatetime, Value::DateTime(t)) => Ok(Json::String(format_datetime(*t))),
            (Converter::UtcDatetime, Value::DateTime(t)) => {
                Ok(Json::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
            }
            (Converter::TriStateBool, Value::Bool(b)) => Ok(Json::Bool(*b)),
            (Converter::CarehqBool | Converter::YesNo, Value::Bool(b)) => {
                string(if *b { "yes" } else { "no" })
            }
            (Converter::Int, Value::Int(i)) => Ok(Json::from(*i)),
            (Converter::Count, Value::Int(i)) if *i >= 0 => Ok(Json::from(*i)),
            (Converter::Count, Value::Int(_)) => Err(InvalidValue::OutOfRange),
            (Converter::TextList, Value::TextList(items)) => {
                Ok(items.iter().cloned().map(Json::String).collect())
            }
            (Converter::CommaList, Value::TextList(items)) => {
                if items.iter().any(|i| i.contains(',') || i.contains(';')) {
                    return Err(InvalidValue::NotRepresentable);
                }
                string(&items.join(", "))
            }
            (Converter::Email, Value::Text(s)) => string(Email::parse(s)?.as_str()),
            (Converter::Phone, Value::Text(s)) => string(PhoneNumber::parse(s)?.as_str()),
            (Converter::NhsNumber, Value::Text(s)) => string(NhsNumber::parse(s)?.as_str()),
            (Converter::NiNumber, Value::Text(s)) => string(NiNumber::parse(s)?.as_str()),
            (Converter::Postcode, Value::Text(s)) => string(Postcode::parse(s)?.as_str()),
            (Converter::PassportNumber, Value::Text(s)) => {
                string(PassportNumber::parse(s)?.as_str())
            }
            (Converter::CountryCode, Value::Text(s)) => string(CountryCode::parse(s)?.as_str()),
            (Converter::CountryName, Value::Text(s)) => CountryCode::parse(s)?
                .name()
                .map(|n| Json::String(n.to_owned()))
                .ok_or(InvalidValue::NotRepresentable),
            (Converter::GenderCarehqList, Value::Text(s)) => match Gender::from_token(s)? {
                g @ (Gender::Female | Gender::Male | Gender::NonBinary) => {
                    Ok(Json::Array(vec![Json::String(g.as_str().to_owned())]))
                }
                // `other` needs the free text of `genders_other`; `unknown` has no token.
                Gender::Other | Gender::Unknown => Err(InvalidValue::NotRepresentable),
            },
            (Converter::GenderCv, Value::Text(s)) => match Gender::from_token(s)? {
                Gender::Female => string("FEMALE"),
                Gender::Male => string("MALE"),
                Gender::Other => string("OTHER"),
                // Writing OTHER would read back as `other` and flip the canonical value.
                Gender::NonBinary | Gender::Unknown => Err(InvalidValue::NotRepresentable),
            },
            (Converter::GenderText, Value::Text(s)) => string(Gender::from_token(s)?.as_str()),
            (Converter::Enum(map), Value::Text(s)) => map
                .write
                .get(s)
                .map(|t| Json::String(t.clone()))
                .ok_or(InvalidValue::NotRepresentable),
            (_, v) => Err(InvalidValue::WrongType(match v {
                Value::Text(_) => "a non-text value",
                _ => "a text value",
            })),
        }
    }
}

fn read_bool(raw: &Json, accept_true_false_words: bool) -> Result<Option<Value>, InvalidValue> {
    match raw {
        Json::Bool(b) => Ok(Some(Value::Bool(*b))),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "yes" => Ok(Some(Value::Bool(true))),
            "no" => Ok(Some(Value::Bool(false))),
            "true" if accept_true_false_words => Ok(Some(Value::Bool(true))),
            "false" if accept_true_false_words => Ok(Some(Value::Bool(false))),
            _ => Err(InvalidValue::BadFormat),
        },
        _ => Err(InvalidValue::WrongType("boolean")),
    }
}

fn read_int(raw: &Json) -> Result<Option<i64>, InvalidValue> {
    match raw {
        Json::Number(n) => n.as_i64().map(Some).ok_or(InvalidValue::BadFormat),
        Json::String(s) if s.trim().is_empty() => Ok(None),
        Json::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| InvalidValue::BadFormat),
        _ => Err(InvalidValue::WrongType("integer")),
    }
}

fn read_string_array(raw: &Json) -> Result<Vec<String>, InvalidValue> {
    let Json::Array(items) = raw else {
        return Err(InvalidValue::WrongType("list of strings"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Json::String(s) if s.trim().is_empty() => {}
            Json::String(s) => out.push(s.trim().to_owned()),
            _ => return Err(InvalidValue::WrongType("list of strings")),
        }
    }
    Ok(out)
}

fn read_comma_list(raw: &Json) -> Result<Option<Value>, InvalidValue> {
    let items: Vec<String> = match raw {
        Json::String(s) => s
            .split([',', ';'])
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect(),
        Json::Array(_) => read_string_array(raw)?,
        _ => return Err(InvalidValue::WrongType("string")),
    };
    Ok((!items.is_empty()).then_some(Value::TextList(items)))
}

/// One of male/female/non_binary wins; transgender or intersex alone is `other`; two of the
/// first three are ambiguous, never guessed.
fn read_carehq_genders(raw: &Json) -> Result<Option<Value>, InvalidValue> {
    let tokens = read_string_array(raw)?;
    let mut primary: Option<Gender> = None;
    let mut has_other = false;
    for token in &tokens {
        let gender = match token.to_ascii_lowercase().as_str() {
            "female" => Gender::Female,
            "male" => Gender::Male,
            "non_binary" => Gender::NonBinary,
            "transgender" | "intersex" => {
                has_other = true;
                continue;
            }
            _ => return Err(InvalidValue::NotInVocabulary),
        };
        match primary {
            Some(p) if p != gender => return Err(InvalidValue::Ambiguous),
            _ => primary = Some(gender),
        }
    }
    let gender = match (primary, has_other) {
        (Some(g), _) => g,
        (None, true) => Gender::Other,
        (None, false) => return Ok(None),
    };
    Ok(Some(Value::Text(gender.as_str().to_owned())))
}

fn starts_with_iso_date(s: &str) -> bool {
    s.get(..10).is_some_and(|d| parse_iso_date(d).is_ok())
}

fn checked_utc(t: NaiveDateTime) -> Result<Value, InvalidValue> {
    check_date_range(t.date())?;
    Ok(Value::DateTime(t.and_utc()))
}

/// Exactly `YYYY-MM-DD HH:MM:SS`.
fn read_carehq_datetime(s: &str) -> Result<Value, InvalidValue> {
    let shape_ok = s.len() == 19 && s.as_bytes()[10] == b' ' && starts_with_iso_date(s);
    if !shape_ok {
        return Err(InvalidValue::BadFormat);
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| InvalidValue::BadFormat)
        .and_then(checked_utc)
}

fn read_iso_datetime(s: &str) -> Result<Value, InvalidValue> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|_| InvalidValue::BadFormat)?;
    let utc = t.with_timezone(&Utc);
    check_date_range(utc.date_naive())?;
    Ok(Value::DateTime(utc))
}

/// The date as written in the string: `1946-03-25T23:30:00-02:00` is the 25th, not the 26th.
fn read_iso_datetime_as_date(s: &str) -> Result<Value, InvalidValue> {
    let date_part = s.get(..10).ok_or(InvalidValue::BadFormat)?;
    let date = parse_iso_date(date_part)?;
    if s.len() > 10 {
        let full_ok = DateTime::parse_from_rfc3339(s).is_ok() || naive_iso(s).is_ok();
        if !full_ok {
            return Err(InvalidValue::BadFormat);
        }
    }
    Ok(Value::Date(date))
}

fn naive_iso(s: &str) -> Result<NaiveDateTime, InvalidValue> {
    let shape_ok = s.len() >= 19 && s.as_bytes()[10] == b'T' && starts_with_iso_date(s);
    if !shape_ok {
        return Err(InvalidValue::BadFormat);
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| InvalidValue::BadFormat)
}

fn read_utc_datetime(s: &str) -> Result<Value, InvalidValue> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    naive_iso(s).and_then(checked_utc)
}

#[cfg(test)]
mod tests;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::model::{Field, PhoneKind};

fn date(y: i32, m: u32, d: u32) -> Value {
    Value::Date(chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default())
}

fn datetime(s: &str) -> Value {
    Value::DateTime(
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default(),
    )
}

fn text(s: &str) -> Result<Option<Value>, InvalidValue> {
    Ok(Some(Value::Text(s.to_owned())))
}

fn list(items: &[&str]) -> Result<Option<Value>, InvalidValue> {
    Ok(Some(Value::TextList(
        items.iter().map(|s| (*s).to_owned()).collect(),
    )))
}

/// One table row: converter, source value, what reading it must give.
fn check(converter: &Converter, input: Json, expected: Result<Option<Value>, InvalidValue>) {
    assert_eq!(
        converter.read(&input),
        expected,
        "{} reading {input}",
        converter.name()
    );
}

/// One table row for the write direction.
fn check_write(converter: &Converter, value: Value, expected: Result<Json, InvalidValue>) {
    assert_eq!(
        converter.write(&value),
        expected,
        "{} writing {value:?}",
        converter.name()
    );
}

fn pace_status() -> Converter {
    let read = [
        ("Active", "active"),
        ("Long term absent", "long_term_absent"),
        ("LongTermAbsent", "long_term_absent"),
    ];
    let write = [("active", "Active"), ("long_term_absent", "LongTermAbsent")];
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    match EnumMap::new(pairs(&read), Some(pairs(&write))) {
        Ok(map) => Converter::Enum(map),
        Err(e) => panic!("test enum: {e}"),
    }
}

#[test]
fn absent_values() {
    for (name, _) in SIMPLE {
        let c = Converter::from_name(name).unwrap_or(Converter::Trim);
        check(&c, Json::Null, Ok(None));
    }
    for c in [
        Converter::Trim,
        Converter::Date,
        Converter::Email,
        Converter::CarehqBool,
    ] {
        check(&c, json!(""), Ok(None));
        check(&c, json!("   "), Ok(None));
    }
}

#[test]
fn text_and_names() {
    check(&Converter::Trim, json!("  Mrs "), text("Mrs"));
    check(
        &Converter::Trim,
        json!("line one\n\nline two"),
        text("line one\n\nline two"),
    );
    check(
        &Converter::Trim,
        json!(3),
        Err(InvalidValue::WrongType("string")),
    );
    check(&Converter::Name, json!("  Mary   Ann\t"), text("Mary Ann"));
    check(&Converter::Name, json!("mcDONALD"), text("mcDONALD"));
}

#[test]
fn dates_and_times() {
    check(
        &Converter::Date,
        json!("1946-03-25"),
        Ok(Some(date(1946, 3, 25))),
    );
    check(
        &Converter::Date,
        json!("25/03/1946"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::Date,
        json!("1946-02-30"),
        Err(InvalidValue::OutOfRange),
    );
    check(
        &Converter::CarehqDatetime,
        json!("2026-03-05 20:15:51"),
        Ok(Some(datetime("2026-03-05T20:15:51Z"))),
    );
    check(
        &Converter::CarehqDatetime,
        json!("2026-03-05T20:15:51"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::CarehqDatetime,
        json!("2026-03-05 25:15:51"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::CarehqDatetime,
        json!("2026-03-05 20:15:5é"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::IsoDatetime,
        json!("2023-06-07T17:32:28+01:00"),
        Ok(Some(datetime("2023-06-07T16:32:28Z"))),
    );
    check(
        &Converter::IsoDatetime,
        json!("2023-06-07"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("2023-06-07T17:32:28Z"),
        Ok(Some(date(2023, 6, 7))),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("1946-03-25T23:30:00-02:00"),
        Ok(Some(date(1946, 3, 25))),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("1946-03-25"),
        Ok(Some(date(1946, 3, 25))),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("1946-03-25T00:00:00"),
        Ok(Some(date(1946, 3, 25))),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("1946-03-25Tnoon"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::IsoDatetimeToDate,
        json!("1946-03-2"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::UtcDatetime,
        json!("2024-05-01T08:00:00.123"),
        Ok(Some(datetime("2024-05-01T08:00:00.123Z"))),
    );
    check(
        &Converter::UtcDatetime,
        json!("2024-05-01T08:00:00Z"),
        Ok(Some(datetime("2024-05-01T08:00:00Z"))),
    );
    check(
        &Converter::UtcDatetime,
        json!("2024-05-01 08:00:00"),
        Err(InvalidValue::BadFormat),
    );
}

#[test]
fn booleans_and_numbers() {
    check(
        &Converter::TriStateBool,
        json!(true),
        Ok(Some(Value::Bool(true))),
    );
    check(
        &Converter::CarehqBool,
        json!(false),
        Ok(Some(Value::Bool(false))),
    );
    check(
        &Converter::CarehqBool,
        json!("yes"),
        Ok(Some(Value::Bool(true))),
    );
    check(
        &Converter::TriStateBool,
        json!("False"),
        Ok(Some(Value::Bool(false))),
    );
    check(
        &Converter::CarehqBool,
        json!(1),
        Err(InvalidValue::WrongType("boolean")),
    );
    check(&Converter::YesNo, json!("Yes"), Ok(Some(Value::Bool(true))));
    check(&Converter::YesNo, json!("no"), Ok(Some(Value::Bool(false))));
    check(
        &Converter::YesNo,
        json!("true"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::YesNo,
        json!("string"),
        Err(InvalidValue::BadFormat),
    );
    check(&Converter::Int, json!(-2), Ok(Some(Value::Int(-2))));
    check(&Converter::Count, json!("3"), Ok(Some(Value::Int(3))));
    check(&Converter::Count, json!(" 3 "), Ok(Some(Value::Int(3))));
    check(&Converter::Count, json!(""), Ok(None));
    check(&Converter::Count, json!(-1), Err(InvalidValue::OutOfRange));
    check(&Converter::Count, json!(2.5), Err(InvalidValue::BadFormat));
    check(
        &Converter::Count,
        json!("two"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::Count,
        json!(true),
        Err(InvalidValue::WrongType("integer")),
    );
}

#[test]
fn lists() {
    check(
        &Converter::TextList,
        json!(["christian"]),
        list(&["christian"]),
    );
    check(&Converter::TextList, json!([]), list(&[]));
    check(&Converter::TextList, json!([" en ", ""]), list(&["en"]));
    check(
        &Converter::TextList,
        json!([1]),
        Err(InvalidValue::WrongType("list of strings")),
    );
    check(
        &Converter::TextList,
        json!("en"),
        Err(InvalidValue::WrongType("list of strings")),
    );
    check(
        &Converter::CommaList,
        json!("Peanuts, Shellfish"),
        list(&["Peanuts", "Shellfish"]),
    );
    check(
        &Converter::CommaList,
        json!("Penicillin;latex ,"),
        list(&["Penicillin", "latex"]),
    );
    check(&Converter::CommaList, json!(" , "), Ok(None));
}

#[test]
fn identifiers() {
    check(
        &Converter::Email,
        json!(" Ant.Demo@CRMHQ.co.uk"),
        text("ant.demo@crmhq.co.uk"),
    );
    check(
        &Converter::Email,
        json!("[email protected]"),
        Err(InvalidValue::BadFormat),
    );
    check(
        &Converter::NhsNumber,
        json!("943 476 5919"),
        text("9434765919"),
    );
    check(
        &Converter::NhsNumber,
        json!(9434765919u64),
        text("9434765919"),
    );
    check(
        &Converter::NhsNumber,
        json!("485 777 3456"),
        Err(InvalidValue::CheckDigitMismatch),
    );
    check(&Converter::NiNumber, json!("ab123456c"), text("AB123456C"));
    check(&Converter::Postcode, json!("ne2 1pa"), text("NE2 1PA"));
    check(
        &Converter::PassportNumber,
        json!("12345 6789"),
        text("123456789"),
    );
    check(&Converter::CountryCode, json!("United Kingdom"), text("GB"));
    check(&Converter::CountryName, json!("uk"), text("GB"));
    check(
        &Converter::Phone,
        json!("07832 963 114"),
        text("+447832963114"),
    );
    check(
        &Converter::Phone,
        json!("+1 202 555 0100"),
        text("+12025550100"),
    );
}

#[test]
fn genders() {
    let c = Converter::GenderCarehqList;
    check(&c, json!(["female"]), text("female"));
    check(&c, json!(["non_binary", "transgender"]), text("non_binary"));
    check(&c, json!(["intersex"]), text("other"));
    check(&c, json!([]), Ok(None));
    check(&c, json!(["male", "female"]), Err(InvalidValue::Ambiguous));
    check(&c, json!(["male", "male"]), text("male"));
    check(&c, json!(["man"]), Err(InvalidValue::NotInVocabulary));
    check(
        &c,
        json!("female"),
        Err(InvalidValue::WrongType("list of strings")),
    );
    check(&Converter::GenderCv, json!("FEMALE"), text("female"));
    check(&Converter::GenderCv, json!("other"), text("other"));
    check(
        &Converter::GenderCv,
        json!("NON_BINARY"),
        Err(InvalidValue::NotInVocabulary),
    );
    check(&Converter::GenderText, json!("Woman"), text("female"));
    check(
        &Converter::GenderText,
        json!("string"),
        Err(InvalidValue::NotInVocabulary),
    );
}

#[test]
fn enums() {
    let c = pace_status();
    check(&c, json!("Long term absent"), text("long_term_absent"));
    check(&c, json!("long TERM absent "), text("long_term_absent"));
    check(&c, json!("LongTermAbsent"), text("long_term_absent"));
    check(&c, json!("On leave"), Err(InvalidValue::NotInVocabulary));
    check_write(
        &c,
        Value::Text("long_term_absent".into()),
        Ok(json!("LongTermAbsent")),
    );
    check_write(
        &c,
        Value::Text("archived".into()),
        Err(InvalidValue::NotRepresentable),
    );
}

#[test]
fn enum_maps_must_be_invertible_to_write() {
    let read = vec![
        ("a".to_owned(), "x".to_owned()),
        ("b".to_owned(), "x".to_owned()),
    ];
    assert_eq!(
        EnumMap::new(read.clone(), None),
        Err(EnumMapError::NotInvertible)
    );
    assert!(EnumMap::new(read, Some(vec![])).is_ok());
    let dup = vec![
        ("A".to_owned(), "x".to_owned()),
        ("a ".to_owned(), "y".to_owned()),
    ];
    assert_eq!(
        EnumMap::new(dup, Some(vec![])),
        Err(EnumMapError::DuplicateSourceToken)
    );
}

#[test]
fn writes() {
    check_write(&Converter::CarehqBool, Value::Bool(true), Ok(json!("yes")));
    check_write(&Converter::CarehqBool, Value::Bool(false), Ok(json!("no")));
    check_write(
        &Converter::TriStateBool,
        Value::Bool(false),
        Ok(json!(false)),
    );
    check_write(&Converter::YesNo, Value::Bool(true), Ok(json!("yes")));
    check_write(&Converter::Date, date(1946, 3, 25), Ok(json!("1946-03-25")));
    check_write(
        &Converter::IsoDatetimeToDate,
        date(1946, 3, 25),
        Ok(json!("1946-03-25T00:00:00Z")),
    );
    check_write(
        &Converter::CarehqDatetime,
        datetime("2026-03-05T20:15:51Z"),
        Ok(json!("2026-03-05 20:15:51")),
    );
    check_write(
        &Converter::UtcDatetime,
        datetime("2026-03-05T20:15:51Z"),
        Ok(json!("2026-03-05T20:15:51")),
    );
    check_write(
        &Converter::GenderCv,
        Value::Text("female".into()),
        Ok(json!("FEMALE")),
    );
    check_write(
        &Converter::GenderCv,
        Value::Text("non_binary".into()),
        Err(InvalidValue::NotRepresentable),
    );
    check_write(
        &Converter::GenderCarehqList,
        Value::Text("male".into()),
        Ok(json!(["male"])),
    );
    check_write(
        &Converter::GenderCarehqList,
        Value::Text("other".into()),
        Err(InvalidValue::NotRepresentable),
    );
    check_write(
        &Converter::Phone,
        Value::Text("+447832963114".into()),
        Ok(json!("+447832963114")),
    );
    check_write(
        &Converter::Phone,
        Value::Text("not a number".into()),
        Err(InvalidValue::BadCharacters),
    );
    check_write(
        &Converter::CountryName,
        Value::Text("GB".into()),
        Ok(json!("United Kingdom")),
    );
    check_write(
        &Converter::CountryName,
        Value::Text("ZZ".into()),
        Err(InvalidValue::NotRepresentable),
    );
    check_write(
        &Converter::CountryCode,
        Value::Text("GB".into()),
        Ok(json!("GB")),
    );
    check_write(
        &Converter::CommaList,
        Value::TextList(vec!["Peanuts".into(), "Shellfish".into()]),
        Ok(json!("Peanuts, Shellfish")),
    );
    check_write(
        &Converter::Count,
        Value::Int(-1),
        Err(InvalidValue::OutOfRange),
    );
    check_write(
        &Converter::Date,
        Value::Text("1946-03-25".into()),
        Err(InvalidValue::WrongType("a non-text value")),
    );
    check_write(
        &Converter::Trim,
        Value::Bool(true),
        Err(InvalidValue::WrongType("a text value")),
    );
}

#[test]
fn fits_field_kinds() {
    assert!(Converter::Name.fits(Field::GivenName.kind()));
    assert!(!Converter::Trim.fits(Field::NhsNumber.kind()));
    assert!(!Converter::Phone.fits(Field::Mobile.kind()));
    assert!(pace_status().fits(Field::StaffStatus.kind()));
    assert!(!pace_status().fits(Field::ServiceUserStatus.kind()));
    for name in Converter::names().filter(|n| *n != "enum") {
        assert_eq!(Converter::from_name(name).map(|c| c.name()), Some(name));
    }
}

/// Every converter that reads a plain string, plus an enum.
fn string_converters() -> Vec<Converter> {
    let mut all: Vec<Converter> = SIMPLE.iter().map(|(_, c)| c.clone()).collect();
    all.push(pace_status());
    all
}

/// Reading never panics; whatever reads is canonical: written back and read again it is the
/// same value (or the source cannot represent it).
fn assert_canonical_round_trip(input: &str) {
    for c in string_converters() {
        let Ok(Some(value)) = c.read(&Json::String(input.to_owned())) else {
            continue;
        };
        match c.write(&value) {
            Ok(written) => assert_eq!(
                c.read(&written),
                Ok(Some(value.clone())),
                "{} did not round-trip {input:?}",
                c.name()
            ),
            Err(InvalidValue::NotRepresentable) => {}
            Err(e) => panic!("{} cannot write what it read from {input:?}: {e}", c.name()),
        }
        if let Value::Text(t) = &value {
            assert_eq!(t.trim(), t, "{} output not trimmed", c.name());
        }
    }
}

fn assert_newtypes_idempotent(input: &str) {
    if let Ok(n) = NhsNumber::parse(input) {
        assert!(n.as_str().len() == 10 && n.as_str().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(NhsNumber::parse(n.as_str()), Ok(n.clone()));
        assert_eq!(NhsNumber::parse(&n.spaced()), Ok(n));
    }
    if let Ok(p) = PhoneNumber::parse(input) {
        assert!(p.as_str().starts_with('+'));
        assert_eq!(PhoneNumber::parse(p.as_str()), Ok(p.clone()));
        assert_eq!(PhoneNumber::parse(&p.national()), Ok(p.clone()));
        if p.kind() == PhoneKind::UkMobile {
            assert!(p.as_str().starts_with("+447"));
        }
    }
    if let Ok(p) = Postcode::parse(input) {
        assert_eq!(Postcode::parse(p.as_str()), Ok(p.clone()));
        assert_eq!(p.as_str().matches(' ').count(), 1);
        assert_eq!(p.as_str(), p.as_str().to_ascii_uppercase());
    }
    if let Ok(e) = Email::parse(input) {
        assert_eq!(Email::parse(e.as_str()), Ok(e.clone()));
        assert_eq!(e.as_str(), e.as_str().to_ascii_lowercase());
    }
    if let Ok(n) = NiNumber::parse(input) {
        assert_eq!(NiNumber::parse(n.as_str()), Ok(n.clone()));
        assert_eq!(n.as_str().len(), 9);
    }
    if let Ok(p) = PassportNumber::parse(input) {
        assert_eq!(PassportNumber::parse(p.as_str()), Ok(p));
    }
    if let Ok(c) = CountryCode::parse(input) {
        assert_eq!(CountryCode::parse(c.as_str()), Ok(c));
    }
    if let Ok(d) = parse_iso_date(input) {
        assert_eq!(format_date(d), input);
    }
    for field in crate::model::Field::ALL {
        if let Ok(v) = field.parse_text(input) {
            assert_eq!(field.canonicalise(&v), Ok(v.clone()), "{}", field.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string(input in any::<String>()) {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn phone_like(input in "[+(]{0,2}[0-9 ()+.-]{0,18}") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn nhs_like(input in "[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{3,5}") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn postcode_like(input in " ?[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2} ?") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
        // Every string of a valid shape is accepted.
        prop_assert!(Postcode::parse(&input).is_ok());
    }

    #[test]
    fn email_like(input in "[ A-Za-z0-9._+'-]{0,10}@?[A-Za-z0-9.-]{0,12}") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn ni_like(input in "[A-Za-z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-Ea-e]?") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn date_like(input in "[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?)?") {
        assert_canonical_round_trip(&input);
        assert_newtypes_idempotent(&input);
    }

    #[test]
    fn valid_nhs_numbers_are_accepted_in_any_spacing(first_nine in proptest::collection::vec(0u8..10, 9)) {
        let sum: u32 = first_nine.iter().zip((2..=10u32).rev()).map(|(d, w)| u32::from(*d) * w).sum();
        let check = match 11 - sum % 11 { 11 => 0, n => n };
        let digits: String = first_nine.iter().map(|d| char::from(b'0' + d)).collect();
        let all_same = first_nine.iter().all(|d| *d == first_nine[0]);
        let last = char::from_digit(check % 10, 10).unwrap_or('0');
        let result = NhsNumber::parse(&format!("{} {} {}{last}", &digits[..3], &digits[3..6], &digits[6..]));
        if check == 10 {
            prop_assert_eq!(result, Err(InvalidValue::CheckDigitTen));
        } else if !all_same && digits != "012345678" {
            prop_assert_eq!(result.map(|n| n.as_str().to_owned()), Ok(format!("{digits}{check}")));
        }
    }

    #[test]
    fn one_wrong_digit_is_always_caught(first_nine in proptest::collection::vec(0u8..10, 9), pos in 0usize..9, delta in 1u8..10) {
        let sum: u32 = first_nine.iter().zip((2..=10u32).rev()).map(|(d, w)| u32::from(*d) * w).sum();
        let check = match 11 - sum % 11 { 11 => 0, n => n };
        prop_assume!(check != 10);
        let mut wrong = first_nine.clone();
        wrong[pos] = (wrong[pos] + delta) % 10;
        let text: String = wrong.iter().map(|d| char::from(b'0' + d)).chain(char::from_digit(check, 10)).collect();
        prop_assert!(NhsNumber::parse(&text).is_err());
    }
}

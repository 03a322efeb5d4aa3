//! Tests of mapping files: every example of every file, load-time errors with file and line,
//! and `apply` on arbitrary records.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::model::{CanonicalValues, Field, Value};

/// The mapping files under test: `$CARESYNC_MAPPINGS_DIR`, else the crate's `mappings/`.
fn mappings_dir() -> PathBuf {
    std::env::var_os("CARESYNC_MAPPINGS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
}

fn load_all() -> Vec<CompiledMapping> {
    match compile_dir(&mappings_dir()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn mapping(source: SourceSchema) -> CompiledMapping {
    match load_all().into_iter().find(|m| m.source() == source) {
        Some(m) => m,
        None => panic!("no mapping for {}", source.name()),
    }
}

#[test]
fn every_example_of_every_mapping_file_passes() {
    let mappings = load_all();
    assert_eq!(mappings.len(), SourceSchema::ALL.len());
    let mut failures = Vec::new();
    for m in &mappings {
        assert!(
            m.examples().len() >= 2,
            "{} needs examples",
            m.file().display()
        );
        failures.extend(m.check_examples().into_iter().map(|f| f.to_string()));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_documented_field_is_mapped_or_kept_raw() {
    for m in load_all() {
        for field in m.source().readable() {
            let mapped = m.mapped_source_fields().any(|f| f == *field);
            let kept = m.kept_raw().iter().any(|f| f == field);
            assert!(mapped ^ kept, "{}: {field}", m.source().name());
        }
    }
}

#[test]
fn mobile_is_written_where_issue_5_says() {
    let expected = [
        (SourceSchema::CarehqServiceUsers, Some("mobile")),
        (SourceSchema::CarehqUsers, None),
        (SourceSchema::MarketplaceUsers, Some("mobile_number")),
        (SourceSchema::CarevalidateUsers, Some("phoneNumber")),
        (SourceSchema::PaceUsers, Some("TelephoneNumber")),
    ];
    let mappings = load_all();
    for (source, path) in expected {
        let m = mappings.iter().find(|m| m.source() == source);
        let written = m.and_then(|m| {
            m.writable_fields()
                .find(|(f, _)| *f == Field::Mobile)
                .map(|(_, p)| p.to_owned())
        });
        assert_eq!(written.as_deref(), path, "{}", source.name());
    }
}

#[test]
fn a_landline_in_a_mobile_field_is_the_canonical_phone() {
    let m = mapping(SourceSchema::CarehqUsers);
    let record = json!({"first_name": "A", "mobile": "0191 496 0000"});
    let mapped = m.apply(&record).map(|r| r.values);
    let mut expected = CanonicalValues::new();
    expected.insert(Field::GivenName, Value::Text("A".into()));
    expected.insert(Field::Phone, Value::Text("+441914960000".into()));
    assert_eq!(mapped, Ok(expected));
}

#[test]
fn two_different_mobiles_keep_the_first_and_record_a_conflict() {
    let m = mapping(SourceSchema::MarketplaceUsers);
    let record =
        json!({"first_name": "A", "mobile_number": "07700 900001", "phone_number": "07700 900002"});
    let mapped = m.apply(&record).unwrap_or_default();
    assert_eq!(
        mapped.values.get(Field::Mobile),
        Some(&Value::Text("+447700900001".into()))
    );
    assert_eq!(
        mapped.origins.get(&Field::Mobile).map(String::as_str),
        Some("mobile_number")
    );
    let codes: Vec<_> = mapped
        .problems
        .iter()
        .map(|p| (p.source_path.as_str(), p.reason.code()))
        .collect();
    assert_eq!(codes, [("phone_number", "conflict")]);
}

#[test]
fn pace_alternative_spellings_and_undocumented_fields() {
    let m = mapping(SourceSchema::PaceUsers);
    let record = json!({
        "FirstName": "Jan", "PreferredName": "", "Preferred Name": "Janny",
        "Shoe size": "5", "AdditionalDetails": {"anything": "x"}
    });
    let mapped = m.apply(&record).unwrap_or_default();
    assert_eq!(
        mapped.values.get(Field::PreferredName),
        Some(&Value::Text("Janny".into()))
    );
    assert_eq!(mapped.unexpected_fields, ["Shoe size"]);
}

#[test]
fn record_errors() {
    let m = mapping(SourceSchema::CarevalidateUsers);
    assert_eq!(m.apply(&json!([1, 2])), Err(RecordError::NotAnObject));
    assert_eq!(m.apply(&json!("x")), Err(RecordError::NotAnObject));
    assert_eq!(
        m.apply(&json!({"firstName": "A"})).map_err(|e| e.code()),
        Err("required_field_missing")
    );
    let pace = mapping(SourceSchema::PaceUsers);
    assert_eq!(
        pace.apply(&json!({"UserGuid": "x"})),
        Err(RecordError::NothingMapped)
    );
}

#[test]
fn a_nested_object_of_the_wrong_type_is_a_problem_not_a_failure() {
    let m = mapping(SourceSchema::CarehqServiceUsers);
    let record = json!({"first_name": "A", "street_address": "12 Acorn Road"});
    let mapped = m.apply(&record).unwrap_or_default();
    assert_eq!(mapped.values.len(), 1);
    assert_eq!(mapped.problems.len(), 6);
    assert!(
        mapped
            .problems
            .iter()
            .all(|p| p.reason.code() == "wrong_type")
    );
}

#[test]
fn problems_never_contain_the_value() {
    let m = mapping(SourceSchema::CarehqServiceUsers);
    let secret_values = [
        "485 777 3456",
        "QQ123456B",
        "SECRETPOSTCODE",
        "07-secret",
        "1999-13-45",
    ];
    let record = json!({
        "first_name": "A",
        "nhs_number": secret_values[0],
        "national_insurance_number": secret_values[1],
        "street_address": {"postcode": secret_values[2]},
        "mobile": secret_values[3],
        "dob": secret_values[4],
    });
    let mapped = m.apply(&record).unwrap_or_default();
    assert_eq!(mapped.problems.len(), 5);
    let rendered = format!("{:?} {}", mapped.problems, {
        let shown: Vec<String> = mapped.problems.iter().map(|p| p.to_string()).collect();
        shown.join(" ")
    });
    for secret in secret_values {
        assert!(!rendered.contains(secret), "{secret} leaked: {rendered}");
    }
    let cv = mapping(SourceSchema::CarevalidateUsers);
    let err = cv.apply(&json!({"email": "secret(at)example.org"}));
    let rendered = format!(
        "{err:?} {}",
        err.as_ref()
            .map_or_else(|e| e.to_string(), |_| String::new())
    );
    assert!(!rendered.contains("secret"), "{rendered}");
}

#[test]
fn reverse_writes_only_what_it_can_and_says_why() {
    let m = mapping(SourceSchema::CarevalidateUsers);
    let values: CanonicalValues = [
        (Field::Mobile, Value::Text("+447700900123".into())),
        (Field::Phone, Value::Text("+441914960000".into())),
        (Field::Gender, Value::Text("non_binary".into())),
        (Field::ServiceUserRef, Value::Text("404".into())),
    ]
    .into_iter()
    .collect();
    let payload = m.reverse(&values);
    assert_eq!(
        serde_json::Value::Object(payload.to_json_body()),
        json!({"phoneNumber": "+447700900123"})
    );
    assert_eq!(payload.not_writable, [Field::Phone, Field::ServiceUserRef]);
    let problems: Vec<_> = payload
        .problems
        .iter()
        .map(|p| (p.source_path.as_str(), p.reason.code()))
        .collect();
    assert_eq!(problems, [("gender", "not_representable")]);
}

#[test]
fn carehq_users_are_read_only() {
    let m = mapping(SourceSchema::CarehqUsers);
    assert_eq!(m.writable_fields().count(), 0);
}

/// Arbitrary JSON, biased towards objects whose keys are real source fields.
fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::String),
        "[0-9 +()-]{0,14}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arbitrary_record() -> impl Strategy<Value = serde_json::Value> {
    let all_fields: Vec<&'static str> = SourceSchema::ALL
        .iter()
        .flat_map(|s| s.readable().iter().copied())
        .flat_map(|p| [p, p.split('.').next().unwrap_or(p)])
        .collect();
    proptest::collection::vec(
        (proptest::sample::select(all_fields), arbitrary_json()),
        0..12,
    )
    .prop_map(|kv| {
        serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn apply_and_reverse_never_panic_and_values_are_canonical(
        record in prop_oneof![arbitrary_record(), arbitrary_json()]
    ) {
        for m in load_all() {
            if let Ok(mapped) = m.apply(&record) {
                for (field, value) in mapped.values.iter() {
                    prop_assert_eq!(field.canonicalise(value), Ok(value.clone()));
                }
                // Writing back what was read and reading it again gives the same values.
                let body = serde_json::Value::Object(m.reverse(&mapped.values).to_json_body());
                if let Ok(again) = m.apply(&body) {
                    for (field, value) in again.values.iter() {
                        prop_assert_eq!(mapped.values.get(field), Some(value), "{}", field.name());
                    }
                }
            }
        }
    }
}

// --- Load-time errors ---------------------------------------------------------------------

/// A mapping for `source` with the given rules; every other documented field is kept raw so
/// that only the problem under test is reported.
fn file_with(source: SourceSchema, mapped: &[&str], rules: &str) -> String {
    let keep: Vec<String> = source
        .readable()
        .iter()
        .filter(|f| !mapped.contains(f))
        .map(|f| format!("    \"{f}\",\n"))
        .collect();
    format!(
        "source = \"{}\"\nkeep_raw = [\n{}]\n{rules}",
        source.name(),
        keep.concat()
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match compile_str(Path::new("mappings/test.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics,
    }
}

/// Compiling `text` gives exactly one error, on the line containing `marker`, whose message
/// contains `says`.
fn check_error(text: &str, marker: &str, says: &str) {
    let found = diagnostics(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    let d = &found[0];
    assert_eq!(d.file, Path::new("mappings/test.toml"));
    assert_eq!(d.line, Some(line_of(text, marker)), "{d}");
    assert!(d.message.contains(says), "{d}");
    assert!(d.to_string().starts_with("mappings/test.toml:"), "{d}");
}

const PACE: SourceSchema = SourceSchema::PaceUsers;

#[test]
fn a_minimal_file_compiles() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\nwrite = true\n",
    );
    assert_eq!(diagnostics(&text), []);
}

#[test]
fn unknown_canonical_field() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"first_name\"\nconvert = \"name\"\n",
    );
    check_error(
        &text,
        "to = \"first_name\"",
        "unknown canonical field `first_name`",
    );
}

#[test]
fn unknown_canonical_field_suggests_the_qualified_name() {
    let text = file_with(
        PACE,
        &["UserId"],
        "[[field]]\nfrom = \"UserId\"\nto = \"username\"\nconvert = \"trim\"\n",
    );
    check_error(
        &text,
        "to = \"username\"",
        "did you mean `staff_user.username`?",
    );
}

#[test]
fn unknown_converter() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"titlecase\"\n",
    );
    check_error(&text, "titlecase", "unknown converter `titlecase`");
}

#[test]
fn unknown_source_path() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\n\n[[field]]\nfrom = \"Forename\"\nto = \"preferred_name\"\nconvert = \"name\"\n",
    );
    check_error(&text, "Forename", "unknown source field `Forename`");
}

#[test]
fn unknown_nested_source_path() {
    let source = SourceSchema::CarehqServiceUsers;
    let text = file_with(
        source,
        &[],
        "[[field]]\nfrom = \"street_address.postal_code\"\nto = \"postcode\"\nconvert = \"postcode\"\n",
    );
    check_error(
        &text,
        "postal_code",
        "unknown source field `street_address.postal_code`",
    );
}

#[test]
fn converter_that_cannot_fill_the_field() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"nhs_number\"\nconvert = \"trim\"\n",
    );
    check_error(&text, "convert = \"trim\"", "cannot produce `nhs_number`");
    let text = file_with(
        PACE,
        &["TelephoneNumber"],
        "[[field]]\nfrom = \"TelephoneNumber\"\nto = \"mobile\"\nconvert = \"phone\"\n",
    );
    check_error(
        &text,
        "convert = \"phone\"",
        "goes with `to = \"mobile_or_phone\"`",
    );
}

#[test]
fn enum_tokens_outside_the_vocabulary() {
    let text = file_with(
        PACE,
        &["UserStatus"],
        "[[field]]\nfrom = \"UserStatus\"\nto = \"staff_user.status\"\nconvert = { enum = { Active = \"active\", Away = \"away\" } }\n",
    );
    check_error(
        &text,
        "Away",
        "one of: active, archived, suspended, long_term_absent",
    );
}

#[test]
fn enum_without_an_inverse_cannot_write() {
    let rule = "[[field]]\nfrom = \"UserStatus\"\nto = \"staff_user.status\"\nconvert = { enum = { Active = \"active\", Live = \"active\" } }\n";
    let read_only = file_with(PACE, &["UserStatus"], rule);
    assert_eq!(diagnostics(&read_only), []);
    let writing = file_with(PACE, &["UserStatus"], &format!("{rule}write = true\n"));
    check_error(&writing, "Live", "give `write = { ... }`");
}

#[test]
fn unknown_key_in_a_rule() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\nconverter = \"name\"\n",
    );
    check_error(&text, "converter = ", "unknown field `converter`");
}

#[test]
fn toml_syntax_error() {
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\nto = \"given_name\"\n",
    );
    let found = diagnostics(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(line_of(&text, "from = ")));
}

#[test]
fn a_field_neither_mapped_nor_kept_raw() {
    let text = "source = \"pace_users\"\nkeep_raw = [\"UserGuid\"]\n";
    let found = diagnostics(text);
    assert_eq!(found.len(), PACE.readable().len() - 1);
    assert!(found.iter().all(|d| d.line == Some(2)));
    assert!(found.iter().any(|d| {
        d.message
            .contains("`AdditionalDetails` is neither mapped nor listed in keep_raw")
    }));
}

#[test]
fn keep_raw_problems() {
    let text =
        file_with(PACE, &[], "").replace("keep_raw = [\n", "keep_raw = [\n    \"Nickname\",\n");
    check_error(
        &text,
        "Nickname",
        "unknown source field `Nickname` in keep_raw",
    );
    let text = file_with(
        PACE,
        &[],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\n",
    );
    check_error(&text, "    \"FirstName\",", "both mapped (line");
}

#[test]
fn writes_that_cannot_happen() {
    let text = file_with(
        SourceSchema::CarehqUsers,
        &["first_name"],
        "[[field]]\nfrom = \"first_name\"\nto = \"given_name\"\nconvert = \"name\"\nwrite = true\n",
    );
    check_error(&text, "write = true", "read-only");
    let text = file_with(
        PACE,
        &["IsLocked"],
        "[[field]]\nfrom = \"IsLocked\"\nto = \"staff_user.locked\"\nconvert = \"tri_state_bool\"\nwrite = true\n",
    );
    check_error(&text, "write = true", "`IsLocked` cannot be written");
    let text = file_with(
        PACE,
        &["TelephoneNumber"],
        "[[field]]\nfrom = \"TelephoneNumber\"\nto = \"mobile_or_phone\"\nconvert = \"phone\"\nwrite = true\n",
    );
    check_error(&text, "write = true", "say which canonical fields");
}

#[test]
fn two_rules_for_one_field() {
    let text = file_with(
        PACE,
        &["FirstName", "UserId"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\n\n[[field]]\nfrom = \"UserId\"\nto = \"given_name\"\nconvert = \"name\"\n",
    );
    let marker_line = line_of(&text, "from = \"UserId\"") + 1;
    let found = diagnostics(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(marker_line));
    assert!(
        found[0]
            .message
            .contains("already the target of the rule on line")
    );
}

#[test]
fn bad_examples_are_load_errors() {
    let rules = "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\n\n[[example]]\nname = \"x\"\ninput = '''{\"FirstName\": '''\nexpected = '''{}'''\n";
    check_error(
        &file_with(PACE, &["FirstName"], rules),
        "input = ",
        "`input` is not valid JSON",
    );
    let rules = "[[field]]\nfrom = \"FirstName\"\nto = \"given_name\"\nconvert = \"name\"\n\n[[example]]\nname = \"x\"\ninput = '''{}'''\nexpected = '''{\"given_name\": \" Ann \"}'''\n";
    check_error(
        &file_with(PACE, &["FirstName"], rules),
        "expected = ",
        "not in canonical form",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = file_with(
        PACE,
        &["FirstName", "LastName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given\"\nconvert = \"name\"\n\n[[field]]\nfrom = \"LastName\"\nto = \"family_name\"\nconvert = \"nope\"\n",
    );
    let lines: Vec<_> = diagnostics(&text).iter().map(|d| d.line).collect();
    assert_eq!(
        lines,
        [
            Some(line_of(&text, "to = \"given\"")),
            Some(line_of(&text, "\"nope\""))
        ]
    );
}

#[test]
fn compile_names_the_real_file() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("pace_users.toml");
    let text = file_with(
        PACE,
        &["FirstName"],
        "[[field]]\nfrom = \"FirstName\"\nto = \"given_nam\"\nconvert = \"name\"\n",
    );
    if let Err(e) = std::fs::write(&path, &text) {
        panic!("write: {e}");
    }
    let err = compile(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let expected = format!("{}:{}:", path.display(), line_of(&text, "given_nam"));
    assert!(err.contains(&expected), "{err}");
    let missing = compile(&dir.path().join("absent.toml")).err();
    assert!(missing.is_some_and(|e| e.diagnostics[0].line.is_none()));
    // The directory has only one of the five sources.
    let _ = std::fs::write(&path, file_with(PACE, &[], ""));
    let dir_err = compile_dir(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        dir_err.contains("no mapping file for source `carehq_service_users`"),
        "{dir_err}"
    );
}

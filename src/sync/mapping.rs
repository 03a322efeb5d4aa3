//! The compiled mappings the pipeline applies, one per source kind: built into the binary
//! from `mappings/`, or read from a folder named in `sync.toml` (`[mappings] dir`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use crate::model::{Field, FieldKind, Value, format_date, format_datetime};
use crate::source::kind::SourceKind;
use crate::store::Canonical;
use crate::transform::{self, CompiledMapping};

const BUILTIN: [(SourceKind, &str); 5] = [
    (
        SourceKind::CarehqServiceUsers,
        include_str!("../../mappings/carehq_service_users.toml"),
    ),
    (
        SourceKind::CarehqUsers,
        include_str!("../../mappings/carehq_users.toml"),
    ),
    (
        SourceKind::MarketplaceUsers,
        include_str!("../../mappings/marketplace_users.toml"),
    ),
    (
        SourceKind::CarevalidateUsers,
        include_str!("../../mappings/carevalidate_users.toml"),
    ),
    (
        SourceKind::PaceUsers,
        include_str!("../../mappings/pace_users.toml"),
    ),
];

/// A compiled mapping and a hash of its text: records mapped by another version are re-mapped.
#[derive(Clone)]
pub struct KindMapping {
    pub mapping: Arc<CompiledMapping>,
    pub hash: Arc<str>,
}

#[derive(Clone)]
pub struct Mappings {
    by_kind: HashMap<SourceKind, KindMapping>,
}

impl Mappings {
    pub fn builtin() -> Result<Mappings> {
        Self::compile(BUILTIN.iter().map(|(kind, text)| {
            (
                *kind,
                PathBuf::from(format!("mappings/{kind}.toml")),
                text.to_string(),
            )
        }))
    }

    pub fn from_dir(dir: &Path) -> Result<Mappings> {
        let mut files = Vec::new();
        for kind in SourceKind::ALL {
            let path = dir.join(format!("{kind}.toml"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("cannot read the mapping file {}: {e}", path.display())
            })?;
            files.push((kind, path, text));
        }
        Self::compile(files.into_iter())
    }

    fn compile(files: impl Iterator<Item = (SourceKind, PathBuf, String)>) -> Result<Mappings> {
        let mut by_kind = HashMap::new();
        let mut errors = Vec::new();
        for (kind, path, text) in files {
            match transform::compile_str(&path, &text) {
                Ok(mapping) => {
                    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
                    by_kind.insert(
                        kind,
                        KindMapping {
                            mapping: Arc::new(mapping),
                            hash: Arc::from(hash),
                        },
                    );
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("\n"));
        }
        Ok(Mappings { by_kind })
    }

    pub fn for_kind(&self, kind: SourceKind) -> Option<&KindMapping> {
        self.by_kind.get(&kind)
    }
}

/// Maps one raw record. Never panics; a record that cannot be read at all is a failure with
/// its reason (field names and codes, never values).
pub fn map_payload(mapping: &CompiledMapping, payload: &str) -> Canonical {
    let record = match mapping.parse_record(payload) {
        Ok(v) => v,
        Err(_) => {
            return Canonical::Failed {
                code: "not_json",
                reason: "the record is not valid JSON".into(),
            };
        }
    };
    match mapping.apply_parsed(&record) {
        Ok(mapped) => {
            let values_json = values_json(&mapped.values);
            let problems: Vec<serde_json::Value> = mapped
                .problems
                .iter()
                .map(|p| {
                    let is_date = Field::from_name(p.target)
                        .is_some_and(|f| matches!(f.kind(), FieldKind::Date | FieldKind::DateTime));
                    serde_json::json!({ "path": p.source_path, "field": p.target, "code": p.reason.code(), "date": is_date })
                })
                .collect();
            let problems_json =
                (!problems.is_empty()).then(|| serde_json::Value::Array(problems).to_string());
            Canonical::Mapped {
                values_json,
                problems_json,
            }
        }
        Err(e) => Canonical::Failed {
            code: e.code(),
            reason: e.to_string(),
        },
    }
}

/// `CanonicalValues::to_json` as compact text, written straight out rather than through an
/// intermediate map (this runs for every record).
fn values_json(values: &crate::model::CanonicalValues) -> String {
    let mut out = Vec::with_capacity(64 * values.len() + 2);
    out.push(b'{');
    for (i, (field, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing strings and JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, field.name());
        out.push(b':');
        // `value.to_json()`, written without building it.
        let _ = match value {
            Value::Text(s) => serde_json::to_writer(&mut out, s),
            Value::Date(d) => serde_json::to_writer(&mut out, &format_date(*d)),
            Value::DateTime(t) => serde_json::to_writer(&mut out, &format_datetime(*t)),
            Value::Bool(b) => serde_json::to_writer(&mut out, b),
            Value::Int(i) => serde_json::to_writer(&mut out, i),
            Value::TextList(items) => serde_json::to_writer(&mut out, items),
        };
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_mappings_compile_and_match_the_folder() {
        let builtin = Mappings::builtin().expect("builtin mappings compile");
        let folder =
            Mappings::from_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings")))
                .unwrap();
        for kind in SourceKind::ALL {
            assert_eq!(
                builtin.for_kind(kind).unwrap().hash,
                folder.for_kind(kind).unwrap().hash,
                "{kind}"
            );
        }
    }

    /// Mapping from the members the rules read gives what mapping from the whole record gives.
    #[test]
    fn mapping_from_the_read_members_equals_mapping_from_the_whole_record() {
        let m = Mappings::builtin().unwrap();
        let sim = crate::sim::SimState::generate(crate::sim::SimOptions {
            people: 300,
            ..Default::default()
        });
        for kind in SourceKind::ALL {
            let mapping = &m.for_kind(kind).unwrap().mapping;
            let records = sim.records(kind);
            assert!(!records.is_empty(), "{kind}");
            for record in records {
                let text = record.to_string();
                let whole = mapping.apply_values(&record);
                let parsed = mapping.parse_record(&text).unwrap();
                assert_eq!(mapping.apply_parsed(&parsed), whole, "{kind}");
            }
        }
        let cv = &m.for_kind(SourceKind::CarevalidateUsers).unwrap().mapping;
        // Escaped keys, duplicate keys (the last wins, as serde_json does), a nested path under
        // a member that is not an object, or null, and non-objects.
        let hq = SourceKind::CarehqServiceUsers;
        let cases = [
            (
                SourceKind::CarevalidateUsers,
                r#"{"em\u0061il": "a@example.org", "email": "b@example.org", "x": [1, {"y": 2}]}"#,
            ),
            (
                SourceKind::CarevalidateUsers,
                r#"{"email": "a@example.org", "firstName": "Ann", "email": "c@example.org", "dob": 5}"#,
            ),
            (SourceKind::CarevalidateUsers, "{}"),
            (
                hq,
                r#"{"first_name": "Ann", "street_address": "1 High St"}"#,
            ),
            (hq, r#"{"first_name": "Ann", "street_address": null}"#),
            (
                hq,
                r#"{"first_name": "Ann", "street_address": {"postcode": "SW1A 1AA", "zz": {}}}"#,
            ),
            (
                hq,
                r#"{"first_name": "Ann", "street_address": {"postcode": 7}, "street_address": {"town": "Leeds"}}"#,
            ),
        ];
        for (kind, text) in cases {
            let mapping = &m.for_kind(kind).unwrap().mapping;
            assert_eq!(
                mapping.apply_parsed(&mapping.parse_record(text).unwrap()),
                mapping.apply_values(&serde_json::from_str(text).unwrap()),
                "{text}"
            );
        }
        for text in ["[1, 2]", "null", " 7"] {
            assert_eq!(
                cv.apply_parsed(&cv.parse_record(text).unwrap()),
                Err(crate::transform::RecordError::NotAnObject)
            );
        }
        assert!(cv.parse_record(r#"{"email": "a@example.org"} x"#).is_err());
        assert!(cv.parse_record(r#"{"email": "a@exa"#).is_err());
    }

    #[test]
    fn values_json_is_the_canonical_map_as_text() {
        let m = Mappings::builtin().unwrap();
        let cv = &m.for_kind(SourceKind::CarevalidateUsers).unwrap().mapping;
        let json = serde_json::json!({"email": "zoe@example.org", "firstName": "Zoë \"Z\"",
            "lastName": "O'Neil", "dob": "1950-02-01", "gender": "female"});
        let mapped = cv.apply_values(&json).unwrap();
        assert_eq!(
            values_json(&mapped.values),
            serde_json::Value::Object(mapped.values.to_json()).to_string()
        );
        let mut every_kind = crate::model::CanonicalValues::new();
        let t = chrono::DateTime::parse_from_rfc3339("2024-03-01T10:20:30.5+01:00").unwrap();
        for (field, value) in [
            (Field::GivenName, Value::Text("Zoë \"Z\" \\ \u{1}".into())),
            (
                Field::BirthDate,
                Value::Date(chrono::NaiveDate::from_ymd_opt(1946, 3, 5).unwrap()),
            ),
            (
                Field::SourceModifiedAt,
                Value::DateTime(t.with_timezone(&chrono::Utc)),
            ),
            (Field::Dementia, Value::Bool(true)),
            (Field::GivenAge, Value::Int(-7)),
            (
                Field::Religions,
                Value::TextList(vec!["en".into(), "cy".into()]),
            ),
        ] {
            every_kind.insert(field, value);
        }
        assert_eq!(
            values_json(&every_kind),
            serde_json::Value::Object(every_kind.to_json()).to_string()
        );
    }

    #[test]
    fn a_record_that_cannot_map_is_a_failure_with_a_reason() {
        let m = Mappings::builtin().unwrap();
        let cv = &m.for_kind(SourceKind::CarevalidateUsers).unwrap().mapping;
        match map_payload(cv, r#"{"firstName": "Zoë"}"#) {
            Canonical::Failed { code, reason } => {
                assert_eq!(code, "required_field_missing");
                assert!(!reason.contains("Zoë"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(
            map_payload(cv, "not json"),
            Canonical::Failed {
                code: "not_json",
                ..
            }
        ));
        match map_payload(cv, r#"{"email": " Zoe@Example.org ", "dob": "31/02/1950"}"#) {
            Canonical::Mapped {
                values_json,
                problems_json,
            } => {
                assert!(values_json.contains("zoe@example.org"), "{values_json}");
                let problems = problems_json.expect("the bad date is a problem");
                assert!(
                    problems.contains("\"date\":true") && problems.contains("birth_date"),
                    "{problems}"
                );
            }
            other => panic!("expected a mapping, got {other:?}"),
        }
    }
}

//! Applying a compiled mapping: source record → canonical values, and back for write-back.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::error::{FieldProblem, ProblemReason, RecordError};
use super::mapping::{CompiledMapping, ReadRule, SourcePath, Target};
use crate::model::{CanonicalValues, Field, InvalidValue, PhoneNumber, Value};

/// The canonical reading of one source record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedRecord {
    pub values: CanonicalValues,
    /// The source path each canonical value came from (for provenance).
    pub origins: BTreeMap<Field, String>,
    /// Source fields that held something unusable; their values stay in the raw payload only.
    pub problems: Vec<FieldProblem>,
    /// Paths present in the record but absent from the API's documented fields: kept raw,
    /// reported so that new fields get noticed.
    pub unexpected_fields: Vec<String>,
}

/// The source-side fields that bring a source record in line with canonical values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritePayload {
    /// In mapping-file order: canonical field, source path (dotted), encoded value.
    pub entries: Vec<WriteEntry>,
    /// Fields that could not be encoded for this source (e.g. `non_binary` for CareValidate).
    pub problems: Vec<FieldProblem>,
    /// Fields given that this source has no place for.
    pub not_writable: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteEntry {
    pub field: Field,
    pub source_path: String,
    pub value: Json,
}

impl WritePayload {
    /// The entries as one JSON object, nested along dotted paths (`street_address.postcode` →
    /// `{"street_address": {"postcode": ..}}`). Form-encoded sinks flatten the entries instead.
    pub fn to_json_body(&self) -> serde_json::Map<String, Json> {
        let mut body = serde_json::Map::new();
        for entry in &self.entries {
            insert_at(&mut body, &entry.source_path, entry.value.clone());
        }
        body
    }
}

fn insert_at(body: &mut serde_json::Map<String, Json>, path: &str, value: Json) {
    match path.split_once('.') {
        None => {
            body.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = body
                .entry(head.to_owned())
                .or_insert_with(|| Json::Object(serde_json::Map::new()));
            if !child.is_object() {
                *child = Json::Object(serde_json::Map::new());
            }
            if let Json::Object(map) = child {
                insert_at(map, rest, value);
            }
        }
    }
}

/// What a path lookup found.
enum Lookup<'a> {
    Absent,
    Found(&'a Json),
    /// A parent on the path is present but not an object.
    NotAnObject,
}

fn lookup<'a>(record: &'a Json, path: &SourcePath) -> Lookup<'a> {
    let mut current = record;
    for segment in path.segments() {
        current = match current {
            Json::Object(map) => match map.get(segment) {
                Some(v) => v,
                None => return Lookup::Absent,
            },
            Json::Null => return Lookup::Absent,
            _ => return Lookup::NotAnObject,
        };
    }
    Lookup::Found(current)
}

fn holds_something(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

impl CompiledMapping {
    /// Maps one source record. Never panics. A field whose value cannot be converted is
    /// recorded in [`MappedRecord::problems`] and the other fields still map; only a record that
    /// is not an object, lacks a `required` field, or yields nothing at all is an error.
    pub fn apply(&self, record: &Json) -> Result<MappedRecord, RecordError> {
        let mut out = self.apply_rules(record, true)?;
        out.unexpected_fields = self.unexpected_fields(record);
        Ok(out)
    }

    /// Parses a record's JSON text for [`Self::apply_values`], building only the top-level
    /// members the rules read (the others are skipped, not built): the same mapping as from
    /// the whole record, for much less work. Text that is not JSON is an error; JSON that is
    /// not an object comes back as it is, for `apply_values` to refuse.
    pub fn parse_record(&self, text: &str) -> serde_json::Result<Json> {
        if !text.trim_start().starts_with('{') {
            return serde_json::from_str(text);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let record = serde::Deserializer::deserialize_map(&mut de, Members(&self.roots))?;
        de.end()?;
        Ok(record)
    }

    /// [`Self::apply`] without looking for undocumented fields or recording each value's
    /// origin (`unexpected_fields` and `origins` stay empty): the pipeline's per-record path,
    /// which stores values and problems only.
    pub fn apply_values(&self, record: &Json) -> Result<MappedRecord, RecordError> {
        self.apply_rules(record, false)
    }

    fn apply_rules(&self, record: &Json, origins: bool) -> Result<MappedRecord, RecordError> {
        if !record.is_object() {
            return Err(RecordError::NotAnObject);
        }
        let mut out = MappedRecord::default();
        for rule in &self.rules {
            self.apply_rule(rule, record, &mut out, origins)?;
        }
        if out.values.is_empty() {
            return Err(RecordError::NothingMapped);
        }
        Ok(out)
    }

    fn apply_rule(
        &self,
        rule: &ReadRule,
        record: &Json,
        out: &mut MappedRecord,
        origins: bool,
    ) -> Result<(), RecordError> {
        let first_path = || rule.paths.first().map_or("", SourcePath::as_str).to_owned();
        let mut blocked = None;
        let mut found = None;
        for path in &rule.paths {
            match lookup(record, path) {
                Lookup::Found(v) if holds_something(v) => {
                    found = Some((path, v));
                    break;
                }
                Lookup::NotAnObject => blocked = blocked.or(Some(path)),
                Lookup::Found(_) | Lookup::Absent => {}
            }
        }
        let problem = |path: &SourcePath, reason: InvalidValue| FieldProblem {
            source_path: path.as_str().to_owned(),
            target: rule.target.name(),
            reason: ProblemReason::Invalid(reason),
        };
        let Some((path, raw)) = found else {
            if rule.required {
                return Err(RecordError::RequiredFieldMissing {
                    source_path: first_path(),
                });
            }
            if let Some(path) = blocked {
                out.problems
                    .push(problem(path, InvalidValue::WrongType("object")));
            }
            return Ok(());
        };
        let converted = rule.converter.read(raw).and_then(|value| match value {
            Some(value) => resolve(rule.target, value).map(Some),
            None => Ok(None),
        });
        match converted {
            Ok(Some((field, value))) => {
                if let Some(existing) = out.values.get(field) {
                    if *existing != value {
                        out.problems.push(FieldProblem {
                            source_path: path.as_str().to_owned(),
                            target: field.name(),
                            reason: ProblemReason::Conflict,
                        });
                    }
                } else {
                    out.values.insert(field, value);
                    if origins {
                        out.origins.insert(field, path.as_str().to_owned());
                    }
                }
            }
            Ok(None) if rule.required => {
                return Err(RecordError::RequiredFieldMissing {
                    source_path: path.as_str().to_owned(),
                });
            }
            Ok(None) => {}
            Err(reason) if rule.required => {
                return Err(RecordError::RequiredFieldInvalid {
                    source_path: path.as_str().to_owned(),
                    reason,
                });
            }
            Err(reason) => out.problems.push(problem(path, reason)),
        }
        Ok(())
    }

    /// Paths in the record that the API's documentation does not list.
    fn unexpected_fields(&self, record: &Json) -> Vec<String> {
        let documented = self.source.readable();
        let opaque = self.source.opaque();
        let mut unexpected = Vec::new();
        let mut stack: Vec<(String, &Json)> = vec![(String::new(), record)];
        while let Some((prefix, value)) = stack.pop() {
            let Json::Object(map) = value else { continue };
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let is_parent = documented.iter().any(|d| {
                    d.strip_prefix(path.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
                });
                if documented.contains(&path.as_str()) || opaque.contains(&path.as_str()) {
                    continue;
                }
                if is_parent {
                    stack.push((path, child));
                } else {
                    unexpected.push(path);
                }
            }
        }
        unexpected.sort();
        unexpected
    }

    /// Encodes canonical values for this source. Only fields present in `values` are written;
    /// each goes to its declared source field with the rule's encoder. Never panics.
    pub fn reverse(&self, values: &CanonicalValues) -> WritePayload {
        let mut payload = WritePayload {
            entries: Vec::with_capacity(values.len()),
            ..WritePayload::default()
        };
        for binding in &self.writes {
            let Some(value) = values.get(binding.field) else {
                continue;
            };
            match binding.converter.write(value) {
                Ok(json) => payload.entries.push(WriteEntry {
                    field: binding.field,
                    source_path: binding.path.as_str().to_owned(),
                    value: json,
                }),
                Err(reason) => payload.problems.push(FieldProblem {
                    source_path: binding.path.as_str().to_owned(),
                    target: binding.field.name(),
                    reason: ProblemReason::Invalid(reason),
                }),
            }
        }
        payload.not_writable = values
            .iter()
            .map(|(f, _)| f)
            .filter(|f| !self.writes.iter().any(|w| w.field == *f))
            .collect();
        payload
    }
}

/// Builds an object of only the members named in the set (see `parse_record`).
struct Members<'m>(&'m [String]);

impl<'de> serde::de::Visitor<'de> for Members<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(MemberKey(key)) = map.next_key()? {
            if self
                .0
                .binary_search_by(|root| root.as_str().cmp(key.as_ref()))
                .is_ok()
            {
                let value: Json = map.next_value()?;
                out.insert(key.into_owned(), value);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Json::Object(out))
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct MemberKey<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for MemberKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = MemberKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberKey(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberKey(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Puts a converted value in its canonical field and checks it is canonical there.
fn resolve(target: Target, value: Value) -> Result<(Field, Value), InvalidValue> {
    let field = match target {
        Target::Field(f) => f,
        Target::MobileOrPhone => {
            let text = value.as_text().ok_or(InvalidValue::WrongType("text"))?;
            if PhoneNumber::parse(text)?.is_uk_mobile() {
                Field::Mobile
            } else {
                Field::Phone
            }
        }
    };
    // Compile-time checks make this hold; checking costs little and keeps the store clean.
    let canonical = field.canonicalise(&value)?;
    if canonical == value {
        Ok((field, value))
    } else {
        Err(InvalidValue::BadFormat)
    }
}

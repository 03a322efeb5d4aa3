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

/// Follows `path` below its top-level member `root` (absent when `None`).
fn lookup<'a>(root: Option<&'a Json>, path: &SourcePath) -> Lookup<'a> {
    let Some(mut current) = root else {
        return Lookup::Absent;
    };
    for segment in path.segments().skip(1) {
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

/// A record as the read rules see it: an object whose top-level members they look up.
trait Members {
    fn is_object(&self) -> bool;
    /// The top-level member of the rule's `i`-th path.
    fn root_of(&self, rule: &ReadRule, i: usize) -> Option<&Json>;
}

impl Members for Json {
    fn is_object(&self) -> bool {
        Json::is_object(self)
    }

    fn root_of(&self, rule: &ReadRule, i: usize) -> Option<&Json> {
        self.as_object()?.get(rule.paths.get(i)?.root())
    }
}

/// A record parsed for mapping ([`CompiledMapping::parse_record`]): only the top-level
/// members the rules read, each in its place in the mapping's list of them.
#[derive(Debug)]
pub struct ParsedRecord(
    /// `None` when the JSON is not an object.
    Option<Vec<Option<Json>>>,
);

impl Members for ParsedRecord {
    fn is_object(&self) -> bool {
        self.0.is_some()
    }

    fn root_of(&self, rule: &ReadRule, i: usize) -> Option<&Json> {
        self.0.as_ref()?.get(*rule.roots.get(i)?)?.as_ref()
    }
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

    /// Parses a record's JSON text for [`Self::apply_parsed`], building only the top-level
    /// members the rules read (the others are skipped, not built) in a slot each: the same
    /// mapping as from the whole record, for much less work. Text that is not JSON is an
    /// error; JSON that is not an object parses, for `apply_parsed` to refuse.
    pub fn parse_record(&self, text: &str) -> serde_json::Result<ParsedRecord> {
        if !text.trim_start().starts_with('{') {
            let _: serde::de::IgnoredAny = serde_json::from_str(text)?;
            return Ok(ParsedRecord(None));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let members = serde::Deserializer::deserialize_map(&mut de, RootSlots(self))?;
        de.end()?;
        Ok(ParsedRecord(Some(members)))
    }

    /// [`Self::apply`] without looking for undocumented fields or recording each value's
    /// origin (`unexpected_fields` and `origins` stay empty): the pipeline's per-record path,
    /// which stores values and problems only.
    pub fn apply_parsed(&self, record: &ParsedRecord) -> Result<MappedRecord, RecordError> {
        self.apply_rules(record, false)
    }

    /// [`Self::apply_parsed`] from a whole record.
    pub fn apply_values(&self, record: &Json) -> Result<MappedRecord, RecordError> {
        self.apply_rules(record, false)
    }

    fn apply_rules(
        &self,
        record: &impl Members,
        origins: bool,
    ) -> Result<MappedRecord, RecordError> {
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
        record: &impl Members,
        out: &mut MappedRecord,
        origins: bool,
    ) -> Result<(), RecordError> {
        let first_path = || rule.paths.first().map_or("", SourcePath::as_str).to_owned();
        let mut blocked = None;
        let mut found = None;
        for (i, path) in rule.paths.iter().enumerate() {
            match lookup(record.root_of(rule, i), path) {
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

/// Reads an object's members into the slots of the mapping's roots, skipping the others
/// (see `parse_record`). A repeated member keeps its last value, as a JSON map would.
struct RootSlots<'m>(&'m CompiledMapping);

impl<'de> serde::de::Visitor<'de> for RootSlots<'_> {
    type Value = Vec<Option<Json>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Vec<Option<Json>>, A::Error> {
        let roots = &self.0.roots;
        let mut slots: Vec<Option<Json>> = vec![None; roots.len()];
        while let Some(MemberKey(key)) = map.next_key()? {
            match roots.find(&key) {
                Some(i) => slots[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
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

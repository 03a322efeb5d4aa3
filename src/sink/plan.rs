//! `plan`: the writes that bring each writable source in line with the canonical person
//! (survivorship and operator overrides), computed from the store without touching any API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::Result;
use rusqlite::Connection;
use serde_json::json;

use super::NaturalKey;
use crate::config::Config;
use crate::model::{CanonicalValues, Field, Value};
use crate::person::materialize::{load_person, values_from_json};
use crate::person::survivorship::{Chosen, survive};
use crate::source::kind::SourceKind;
use crate::sync::mapping::Mappings;
use crate::transform::WritePayload;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: Field,
    pub old: Option<Value>,
    pub new: Value,
}

#[derive(Debug, Clone)]
pub struct PlannedWrite {
    pub source: String,
    pub kind: SourceKind,
    pub person_id: i64,
    pub action: Action,
    /// The record updated; `None` for a create.
    pub external_id: Option<String>,
    /// The stored version the update was planned against (conflict detection).
    pub base_hash: Option<String>,
    pub changes: Vec<FieldChange>,
    /// The source-side encoding of the changes.
    pub payload: WritePayload,
    pub natural_key: Option<NaturalKey>,
    /// Creates: the source-side fields from `create_defaults`, templates filled in.
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Things that may still stop the write (e.g. CareValidate's case lock).
    pub warnings: Vec<String>,
}

/// A change the plan cannot make, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub source: String,
    pub external_id: Option<String>,
    pub person_id: i64,
    pub field: Field,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub refused: Vec<Refusal>,
}

/// Residents and staff live in different systems: a person is created only in a system of
/// the same kind as one that already holds them.
fn family(kind: SourceKind) -> u8 {
    match kind {
        SourceKind::CarehqServiceUsers
        | SourceKind::MarketplaceUsers
        | SourceKind::CarevalidateUsers => 0,
        SourceKind::CarehqUsers | SourceKind::PaceUsers => 1,
    }
}

/// Fields that identify a person, sent with every create.
const IDENTITY: [Field; 6] = [
    Field::Title,
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Gender,
    Field::Email,
];

/// What each API needs to create a person (the rest of its required fields come from
/// `create_defaults`). Alternatives are listed together: any one of them will do.
fn required_for_create(kind: SourceKind) -> &'static [&'static [Field]] {
    match kind {
        SourceKind::CarehqServiceUsers => &[
            &[Field::GivenName],
            &[Field::FamilyName],
            &[Field::BirthDate, Field::GivenAge],
        ],
        SourceKind::MarketplaceUsers | SourceKind::CarevalidateUsers | SourceKind::PaceUsers => {
            &[&[Field::GivenName], &[Field::FamilyName], &[Field::Email]]
        }
        SourceKind::CarehqUsers => &[],
    }
}

/// CareValidate locks these once a case is assigned; the API says when.
const CAREVALIDATE_LOCKED: [Field; 4] = [
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Gender,
];

pub fn compute(conn: &Connection, config: &Config, mappings: &Mappings) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut desired_cache: HashMap<i64, BTreeMap<Field, Chosen>> = HashMap::new();
    let mut desired = |person: i64| -> Result<BTreeMap<Field, Chosen>> {
        if let Some(d) = desired_cache.get(&person) {
            return Ok(d.clone());
        }
        let (observations, overrides) = load_person(conn, person)?;
        let d = survive(&observations, &overrides, &config.survivorship);
        desired_cache.insert(person, d.clone());
        Ok(d)
    };
    for (name, policy) in &config.push {
        let Some(source) = config.source(name) else {
            continue;
        };
        let Some(mapping) = mappings.for_kind(source.kind) else {
            continue;
        };
        let mapping = &mapping.mapping;
        if !policy.fields.is_empty() {
            let mut stmt = conn.prepare(
                "SELECT l.person_id, l.external_id, c.values_json, s.content_hash
                 FROM person_link l
                 JOIN canonical_record c ON c.source = l.source AND c.external_id = l.external_id
                 JOIN source_record s ON s.source = l.source AND s.external_id = l.external_id
                 WHERE l.source = ?1 AND s.deleted_at IS NULL
                 ORDER BY l.person_id, l.external_id",
            )?;
            let rows: Vec<(i64, String, String, String)> = stmt
                .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (person, external_id, values_json, hash) in rows {
                let want = desired(person)?;
                let have = values_from_json(&values_json);
                let mut changes = Vec::new();
                for field in &policy.fields {
                    let Some(new) = want.get(field).map(|c| c.value.clone()) else {
                        continue;
                    };
                    let old = have.get(*field).cloned();
                    if old.as_ref() == Some(&new) {
                        continue;
                    }
                    if source.kind == SourceKind::CarevalidateUsers && *field == Field::Email {
                        plan.refused.push(Refusal {
                            source: name.clone(),
                            external_id: Some(external_id.clone()),
                            person_id: person,
                            field: *field,
                            reason: "CareValidate keys users by email: an email change cannot be pushed there".into(),
                        });
                        continue;
                    }
                    changes.push(FieldChange {
                        field: *field,
                        old,
                        new,
                    });
                }
                if changes.is_empty() {
                    continue;
                }
                let values: CanonicalValues =
                    changes.iter().map(|c| (c.field, c.new.clone())).collect();
                let payload = mapping.reverse(&values);
                let (changes, payload) = keep_encodable(
                    &mut plan.refused,
                    name,
                    Some(&external_id),
                    person,
                    changes,
                    payload,
                );
                if changes.is_empty() {
                    continue;
                }
                let warnings = locked_warnings(source.kind, &changes);
                plan.writes.push(PlannedWrite {
                    source: name.clone(),
                    kind: source.kind,
                    person_id: person,
                    action: Action::Update,
                    external_id: Some(external_id),
                    base_hash: Some(hash),
                    changes,
                    payload,
                    natural_key: None,
                    defaults: BTreeMap::new(),
                    warnings,
                });
            }
        }
        if policy.create {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT l.person_id, l.kind FROM person_link l
                 WHERE NOT EXISTS (SELECT 1 FROM person_link m WHERE m.person_id = l.person_id AND m.source = ?1)
                 ORDER BY l.person_id",
            )?;
            let rows: Vec<(i64, String)> = stmt
                .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let candidates: Vec<i64> = {
                let mut seen = HashSet::new();
                rows.into_iter()
                    .filter(|(_, kind)| {
                        kind.parse::<SourceKind>()
                            .is_ok_and(|k| family(k) == family(source.kind))
                    })
                    .filter_map(|(p, _)| seen.insert(p).then_some(p))
                    .collect()
            };
            'person: for person in candidates {
                let want = desired(person)?;
                for alternatives in required_for_create(source.kind) {
                    if !alternatives.iter().any(|f| want.contains_key(f)) {
                        plan.refused.push(Refusal {
                            source: name.clone(),
                            external_id: None,
                            person_id: person,
                            field: alternatives[0],
                            reason: format!(
                                "{} needs it to create a person, and the person has none",
                                source.kind
                            ),
                        });
                        continue 'person;
                    }
                }
                let extra: &[Field] = if source.kind == SourceKind::CarehqServiceUsers {
                    &[Field::GivenAge]
                } else {
                    &[]
                };
                let fields: Vec<Field> = IDENTITY
                    .iter()
                    .chain(extra)
                    .chain(&policy.fields)
                    .copied()
                    .collect();
                let mut changes: Vec<FieldChange> = Vec::new();
                for field in fields {
                    if changes.iter().any(|c| c.field == field) {
                        continue;
                    }
                    if let Some(c) = want.get(&field) {
                        changes.push(FieldChange {
                            field,
                            old: None,
                            new: c.value.clone(),
                        });
                    }
                }
                let values: CanonicalValues =
                    changes.iter().map(|c| (c.field, c.new.clone())).collect();
                let payload = mapping.reverse(&values);
                let natural_key = NaturalKey {
                    email: values.email().map(|e| e.as_str().to_string()),
                    given_name: values
                        .get(Field::GivenName)
                        .and_then(Value::as_text)
                        .map(str::to_string),
                    family_name: values
                        .get(Field::FamilyName)
                        .and_then(Value::as_text)
                        .map(str::to_string),
                    birth_date: values.birth_date().map(|d| d.to_string()),
                };
                let (changes, payload) =
                    keep_encodable(&mut plan.refused, name, None, person, changes, payload);
                let defaults = match fill_templates(&policy.create_defaults, &want) {
                    Ok(d) => d,
                    Err(field) => {
                        plan.refused.push(Refusal {
                            source: name.clone(),
                            external_id: None,
                            person_id: person,
                            field,
                            reason: "a create_defaults template names this field, and the person has no value for it".into(),
                        });
                        continue;
                    }
                };
                plan.writes.push(PlannedWrite {
                    source: name.clone(),
                    kind: source.kind,
                    person_id: person,
                    action: Action::Create,
                    external_id: None,
                    base_hash: None,
                    changes,
                    payload,
                    natural_key: Some(natural_key),
                    defaults,
                    warnings: Vec::new(),
                });
            }
        }
    }
    Ok(plan)
}

/// `create_defaults` values may name canonical fields, `"{email}"` or `"{given_name}.{family_name}"`
/// (PACE needs a `UserId` per person): filled in from the person's values.
fn fill_templates(
    defaults: &BTreeMap<String, serde_json::Value>,
    person: &BTreeMap<Field, Chosen>,
) -> Result<BTreeMap<String, serde_json::Value>, Field> {
    let mut out = BTreeMap::new();
    for (key, value) in defaults {
        let serde_json::Value::String(template) = value else {
            out.insert(key.clone(), value.clone());
            continue;
        };
        let mut filled = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            filled.push_str(&rest[..open]);
            let name = &rest[open + 1..open + close];
            match Field::from_name(name) {
                Some(field) => {
                    let text = person
                        .get(&field)
                        .map(|c| show(Some(&c.value)))
                        .ok_or(field)?;
                    filled.push_str(&text);
                }
                None => filled.push_str(&rest[open..=open + close]),
            }
            rest = &rest[open + close + 1..];
        }
        filled.push_str(rest);
        out.insert(key.clone(), serde_json::Value::String(filled));
    }
    Ok(out)
}

/// Drops the changes the source cannot hold or encode, recording why.
fn keep_encodable(
    refused: &mut Vec<Refusal>,
    source: &str,
    external_id: Option<&String>,
    person: i64,
    changes: Vec<FieldChange>,
    payload: WritePayload,
) -> (Vec<FieldChange>, WritePayload) {
    let mut dropped: HashSet<Field> = HashSet::new();
    for field in &payload.not_writable {
        dropped.insert(*field);
        refused.push(Refusal {
            source: source.into(),
            external_id: external_id.cloned(),
            person_id: person,
            field: *field,
            reason: "this source has no field that can be written for it".into(),
        });
    }
    for p in &payload.problems {
        if let Some(field) = Field::from_name(p.target) {
            dropped.insert(field);
            refused.push(Refusal {
                source: source.into(),
                external_id: external_id.cloned(),
                person_id: person,
                field,
                reason: format!(
                    "the value cannot be expressed in this source ({})",
                    p.reason.code()
                ),
            });
        }
    }
    let written: HashSet<Field> = payload.entries.iter().map(|e| e.field).collect();
    let changes = changes
        .into_iter()
        .filter(|c| !dropped.contains(&c.field) && written.contains(&c.field))
        .collect();
    (changes, payload)
}

fn locked_warnings(kind: SourceKind, changes: &[FieldChange]) -> Vec<String> {
    if kind != SourceKind::CarevalidateUsers {
        return Vec::new();
    }
    changes
        .iter()
        .filter(|c| CAREVALIDATE_LOCKED.contains(&c.field))
        .map(|c| {
            format!(
                "{}: CareValidate refuses this once a case is assigned",
                c.field.name()
            )
        })
        .collect()
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => match v.to_json() {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        },
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.refused.is_empty()
    }

    /// The readable per-field diff. It shows values: it is for the operator's terminal, not logs.
    pub fn render(&self) -> String {
        if self.is_empty() {
            return "No changes.\n".into();
        }
        let mut out = String::new();
        for w in &self.writes {
            match w.action {
                Action::Update => {
                    let id = w.external_id.as_deref().unwrap_or("");
                    let _ = writeln!(out, "update {} {id} (person {})", w.source, w.person_id);
                    for c in &w.changes {
                        let _ = writeln!(
                            out,
                            "    {}: {} -> {}",
                            c.field.name(),
                            show(c.old.as_ref()),
                            show(Some(&c.new))
                        );
                    }
                }
                Action::Create => {
                    let fields: Vec<&str> = w
                        .payload
                        .entries
                        .iter()
                        .map(|e| e.source_path.as_str())
                        .collect();
                    let _ = writeln!(
                        out,
                        "create {} (person {}): {}",
                        w.source,
                        w.person_id,
                        fields.join(", ")
                    );
                }
            }
            for warning in &w.warnings {
                let _ = writeln!(out, "    note: {warning}");
            }
        }
        if !self.refused.is_empty() {
            let _ = writeln!(out, "\ncannot be pushed:");
            for r in &self.refused {
                let id = r.external_id.as_deref().unwrap_or("(new)");
                let _ = writeln!(
                    out,
                    "    {} {id} (person {}) {}: {}",
                    r.source,
                    r.person_id,
                    r.field.name(),
                    r.reason
                );
            }
        }
        let updates = self
            .writes
            .iter()
            .filter(|w| w.action == Action::Update)
            .count();
        let _ = writeln!(
            out,
            "\n{updates} updates, {} creates, {} refused",
            self.writes.len() - updates,
            self.refused.len()
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "writes": self.writes.iter().map(|w| json!({
                "source": w.source,
                "kind": w.kind.as_str(),
                "person_id": w.person_id,
                "action": w.action.as_str(),
                "external_id": w.external_id,
                "changes": w.changes.iter().map(|c| json!({
                    "field": c.field.name(),
                    "old": c.old.as_ref().map(Value::to_json),
                    "new": c.new.to_json(),
                })).collect::<Vec<_>>(),
                "payload": w.payload.to_json_body(),
                "warnings": w.warnings,
            })).collect::<Vec<_>>(),
            "refused": self.refused.iter().map(|r| json!({
                "source": r.source,
                "external_id": r.external_id,
                "person_id": r.person_id,
                "field": r.field.name(),
                "reason": r.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

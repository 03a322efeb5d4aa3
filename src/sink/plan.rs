//! `plan`: the writes that bring each writable source in line with the canonical person
//! (survivorship and operator overrides), computed from the store without touching any API.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::Result;
use rusqlite::Connection;
use serde_json::json;

use super::NaturalKey;
use crate::config::Config;
use crate::model::{CanonicalValues, Field, Value};
use crate::person::materialize::load_all_overrides;
use crate::person::scan::{LinkedRecord, Read, for_each_person};
use crate::person::survivorship::{Chosen, Observation, Override, survive};
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
    /// Shared by every refusal of the source: a plan may hold hundreds of thousands.
    pub source: Arc<str>,
    pub external_id: Option<String>,
    pub person_id: i64,
    pub field: Field,
    pub reason: RefusalReason,
}

/// Why a change cannot be pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The source never returns the field, so an update could not be confirmed.
    WriteOnly(SourceKind),
    /// CareValidate keys users by email.
    EmailKeysUser,
    /// The source needs the field to create a person.
    NeededToCreate(SourceKind),
    /// A `create_defaults` template names the field.
    NamedByTemplate,
    /// The source has no field that can be written for it.
    NotWritable,
    /// The value cannot be encoded for the source (the encoding problem's code).
    CannotExpress(&'static str),
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::WriteOnly(kind) => write!(
                f,
                "{kind} never returns this field, so an update could not be confirmed; it is written on create only"
            ),
            RefusalReason::EmailKeysUser => f.write_str(
                "CareValidate keys users by email: an email change cannot be pushed there",
            ),
            RefusalReason::NeededToCreate(kind) => {
                write!(
                    f,
                    "{kind} needs it to create a person, and the person has none"
                )
            }
            RefusalReason::NamedByTemplate => f.write_str(
                "a create_defaults template names this field, and the person has no value for it",
            ),
            RefusalReason::NotWritable => {
                f.write_str("this source has no field that can be written for it")
            }
            RefusalReason::CannotExpress(code) => {
                write!(f, "the value cannot be expressed in this source ({code})")
            }
        }
    }
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

/// One writable source of the plan.
struct Target<'a> {
    /// Shared by the source's refusals.
    name: Arc<str>,
    kind: SourceKind,
    policy: &'a crate::config::PushPolicy,
    mapping: &'a crate::transform::CompiledMapping,
    /// Fields this source takes but never gives back (CareHQ's `phone`): an update could not
    /// be confirmed and would be planned again after every push, so they are written on
    /// create only.
    write_only: HashSet<Field>,
}

/// The planned writes and refusals of one source (for one person, or all of them).
#[derive(Default)]
struct TargetWrites {
    updates: Vec<PlannedWrite>,
    update_refused: Vec<Refusal>,
    creates: Vec<PlannedWrite>,
    create_refused: Vec<Refusal>,
}

impl TargetWrites {
    fn append(&mut self, other: TargetWrites) {
        self.updates.extend(other.updates);
        self.update_refused.extend(other.update_refused);
        self.creates.extend(other.creates);
        self.create_refused.extend(other.create_refused);
    }
}

/// The plan, in one pass over every person's links in person order: each person's
/// survivorship is computed once and dropped, so memory does not grow with the store.
/// The result is the same as planning each source in turn (updates in (person, record)
/// order, then creates in person order).
pub fn compute(conn: &Connection, config: &Config, mappings: &Mappings) -> Result<Plan> {
    let mut targets: Vec<Target<'_>> = Vec::new();
    for (name, policy) in &config.push {
        let Some(source) = config.source(name) else {
            continue;
        };
        let Some(mapping) = mappings.for_kind(source.kind) else {
            continue;
        };
        let read: HashSet<&str> = mapping.mapping.mapped_source_fields().collect();
        let write_only = mapping
            .mapping
            .writable_fields()
            .filter(|(field, path)| {
                !read.contains(path)
                    && !mapping
                        .mapping
                        .writable_fields()
                        .any(|(f, p)| f == *field && read.contains(p))
            })
            .map(|(field, _)| field)
            .collect();
        targets.push(Target {
            name: Arc::from(name.as_str()),
            kind: source.kind,
            policy,
            mapping: &mapping.mapping,
            write_only,
        });
    }
    let started = std::time::Instant::now();
    let mut plan = Plan::default();
    if targets.is_empty() {
        return Ok(plan);
    }
    let overrides = load_all_overrides(conn)?;
    let no_overrides = BTreeMap::new();
    // Per target: updates in (person, record) order, then creates in person order.
    let mut planned: Vec<TargetWrites> = targets.iter().map(|_| TargetWrites::default()).collect();
    for_each_person(
        conn,
        Read::WithLiveHash,
        None,
        |person, links| {
            plan_person(
                person,
                links,
                overrides.get(&person).unwrap_or(&no_overrides),
                config,
                &targets,
            )
        },
        |_, writes| {
            for (all, one) in planned.iter_mut().zip(writes) {
                all.append(one);
            }
            Ok(())
        },
    )?;
    plan.writes.reserve_exact(
        planned
            .iter()
            .map(|t| t.updates.len() + t.creates.len())
            .sum(),
    );
    plan.refused.reserve_exact(
        planned
            .iter()
            .map(|t| t.update_refused.len() + t.create_refused.len())
            .sum(),
    );
    for t in planned {
        plan.writes.extend(t.updates);
        plan.writes.extend(t.creates);
        plan.refused.extend(t.update_refused);
        plan.refused.extend(t.create_refused);
    }
    tracing::debug!(
        writes = plan.writes.len(),
        refused = plan.refused.len(),
        millis = started.elapsed().as_millis() as u64,
        "plan computed"
    );
    Ok(plan)
}

/// Plans one person for every target (pure; runs on a worker). `links` are the person's
/// links in (source, external id) order; their values are moved into the survivorship input.
fn plan_person(
    person: i64,
    mut links: Vec<LinkedRecord>,
    overrides: &BTreeMap<Field, Override>,
    config: &Config,
    targets: &[Target<'_>],
) -> Vec<TargetWrites> {
    let mut out: Vec<TargetWrites> = targets.iter().map(|_| TargetWrites::default()).collect();
    // Which targets this person concerns: records to update, or a create.
    let updates_any = targets.iter().any(|t| {
        !t.policy.fields.is_empty()
            && links
                .iter()
                .any(|l| *l.source == *t.name && l.values.is_some() && l.live_hash.is_some())
    });
    let creates: Vec<bool> = targets
        .iter()
        .map(|t| {
            t.policy.create
                && !links.iter().any(|l| *l.source == *t.name)
                && links.iter().any(|l| {
                    l.kind
                        .parse::<SourceKind>()
                        .is_ok_and(|k| family(k) == family(t.kind))
                })
        })
        .collect();
    if !updates_any && !creates.iter().any(|c| *c) {
        return out;
    }
    // The person's records (those with a canonical form and a known kind), as `load_observations`
    // reads them; the values are borrowed back below for the updates.
    let mut observations: Vec<Observation> = Vec::new();
    let mut observed: Vec<Option<usize>> = Vec::with_capacity(links.len());
    for l in links.iter_mut() {
        match (l.values.take(), l.kind.parse::<SourceKind>()) {
            (Some(values), Ok(kind)) => {
                observed.push(Some(observations.len()));
                observations.push(Observation {
                    source: l.source.clone(),
                    external_id: l.external_id.clone(),
                    kind,
                    values,
                    observed_at: l.mapped_at.take().unwrap_or_default(),
                });
            }
            (values, _) => {
                l.values = values;
                observed.push(None);
            }
        }
    }
    let want = survive(&observations, overrides, &config.survivorship);
    for ((t, out), create) in targets.iter().zip(out.iter_mut()).zip(creates) {
        if !t.policy.fields.is_empty() {
            for (i, l) in links.iter().enumerate() {
                if *l.source != *t.name {
                    continue;
                }
                let Some(hash) = &l.live_hash else {
                    continue;
                };
                let have = match observed[i] {
                    Some(o) => &observations[o].values,
                    None => match &l.values {
                        Some(v) => v,
                        None => continue,
                    },
                };
                plan_update(t, out, person, &l.external_id, hash, have, &want);
            }
        }
        if create {
            plan_create(t, out, person, &want);
        }
    }
    out
}

/// The update of one record, if its values differ from the person's.
fn plan_update(
    t: &Target<'_>,
    out: &mut TargetWrites,
    person: i64,
    external_id: &str,
    hash: &str,
    have: &CanonicalValues,
    want: &BTreeMap<Field, Chosen>,
) {
    let mut changes = Vec::new();
    for field in &t.policy.fields {
        let Some(new) = want.get(field).map(|c| c.value.clone()) else {
            continue;
        };
        let old = have.get(*field).cloned();
        if old.as_ref() == Some(&new) {
            continue;
        }
        if t.write_only.contains(field) {
            out.update_refused.push(Refusal {
                source: t.name.clone(),
                external_id: Some(external_id.to_string()),
                person_id: person,
                field: *field,
                reason: RefusalReason::WriteOnly(t.kind),
            });
            continue;
        }
        if t.kind == SourceKind::CarevalidateUsers && *field == Field::Email {
            out.update_refused.push(Refusal {
                source: t.name.clone(),
                external_id: Some(external_id.to_string()),
                person_id: person,
                field: *field,
                reason: RefusalReason::EmailKeysUser,
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
        return;
    }
    let values: CanonicalValues = changes.iter().map(|c| (c.field, c.new.clone())).collect();
    let payload = t.mapping.reverse(&values);
    let external_id = external_id.to_string();
    let (changes, payload) = keep_encodable(
        &mut out.update_refused,
        &t.name,
        Some(&external_id),
        person,
        changes,
        payload,
    );
    if changes.is_empty() {
        return;
    }
    let warnings = locked_warnings(t.kind, &changes);
    out.updates.push(PlannedWrite {
        source: t.name.to_string(),
        kind: t.kind,
        person_id: person,
        action: Action::Update,
        external_id: Some(external_id),
        base_hash: Some(hash.to_string()),
        changes,
        payload,
        natural_key: None,
        defaults: BTreeMap::new(),
        warnings,
    });
}

/// The create of a person in a source of its family that lacks it.
fn plan_create(
    t: &Target<'_>,
    out: &mut TargetWrites,
    person: i64,
    want: &BTreeMap<Field, Chosen>,
) {
    for alternatives in required_for_create(t.kind) {
        if !alternatives.iter().any(|f| want.contains_key(f)) {
            out.create_refused.push(Refusal {
                source: t.name.clone(),
                external_id: None,
                person_id: person,
                field: alternatives[0],
                reason: RefusalReason::NeededToCreate(t.kind),
            });
            return;
        }
    }
    let extra: &[Field] = if t.kind == SourceKind::CarehqServiceUsers {
        &[Field::GivenAge]
    } else {
        &[]
    };
    let fields: Vec<Field> = IDENTITY
        .iter()
        .chain(extra)
        .chain(&t.policy.fields)
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
    let values: CanonicalValues = changes.iter().map(|c| (c.field, c.new.clone())).collect();
    let payload = t.mapping.reverse(&values);
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
    let (changes, payload) = keep_encodable(
        &mut out.create_refused,
        &t.name,
        None,
        person,
        changes,
        payload,
    );
    let defaults = match fill_templates(&t.policy.create_defaults, want) {
        Ok(d) => d,
        Err(field) => {
            out.create_refused.push(Refusal {
                source: t.name.clone(),
                external_id: None,
                person_id: person,
                field,
                reason: RefusalReason::NamedByTemplate,
            });
            return;
        }
    };
    out.creates.push(PlannedWrite {
        source: t.name.to_string(),
        kind: t.kind,
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
                        .map(|c| show(Some(c.value)))
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
    source: &Arc<str>,
    external_id: Option<&String>,
    person: i64,
    changes: Vec<FieldChange>,
    mut payload: WritePayload,
) -> (Vec<FieldChange>, WritePayload) {
    let mut dropped: HashSet<Field> = HashSet::new();
    for field in &payload.not_writable {
        dropped.insert(*field);
        refused.push(Refusal {
            source: source.clone(),
            external_id: external_id.cloned(),
            person_id: person,
            field: *field,
            reason: RefusalReason::NotWritable,
        });
    }
    for p in &payload.problems {
        if let Some(field) = Field::from_name(p.target) {
            dropped.insert(field);
            refused.push(Refusal {
                source: source.clone(),
                external_id: external_id.cloned(),
                person_id: person,
                field,
                reason: RefusalReason::CannotExpress(p.reason.code()),
            });
        }
    }
    let written: HashSet<Field> = payload.entries.iter().map(|e| e.field).collect();
    let mut changes: Vec<FieldChange> = changes
        .into_iter()
        .filter(|c| !dropped.contains(&c.field) && written.contains(&c.field))
        .collect();
    // A plan holds every write: what it keeps is sized exactly, and what the refusals above
    // now say is not kept twice.
    changes.shrink_to_fit();
    payload.entries.shrink_to_fit();
    payload.not_writable = Vec::new();
    payload.problems = Vec::new();
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

struct PlanJson<'a>(&'a Plan);

impl serde::Serialize for PlanJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(
            "writes",
            &Seq(|| self.0.writes.iter().map(planned_write_json)),
        )?;
        map.serialize_entry("refused", &Seq(|| self.0.refused.iter().map(refusal_json)))?;
        map.end()
    }
}

/// A sequence serialised from an iterator made on demand.
struct Seq<F>(F);

impl<F, I> serde::Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

fn planned_write_json(w: &PlannedWrite) -> serde_json::Value {
    json!({
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
    })
}

fn refusal_json(r: &Refusal) -> serde_json::Value {
    json!({
        "source": &*r.source,
        "external_id": r.external_id,
        "person_id": r.person_id,
        "field": r.field.name(),
        "reason": r.reason.to_string(),
    })
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.refused.is_empty()
    }

    /// The readable per-field diff. It shows values: it is for the operator's terminal, not logs.
    pub fn write_text(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        if self.is_empty() {
            return writeln!(out, "No changes.");
        }
        for w in &self.writes {
            match w.action {
                Action::Update => {
                    let id = w.external_id.as_deref().unwrap_or("");
                    writeln!(out, "update {} {id} (person {})", w.source, w.person_id)?;
                    for c in &w.changes {
                        writeln!(
                            out,
                            "    {}: {} -> {}",
                            c.field.name(),
                            show(c.old.as_ref()),
                            show(Some(&c.new))
                        )?;
                    }
                }
                Action::Create => {
                    let fields: Vec<&str> = w
                        .payload
                        .entries
                        .iter()
                        .map(|e| e.source_path.as_str())
                        .collect();
                    writeln!(
                        out,
                        "create {} (person {}): {}",
                        w.source,
                        w.person_id,
                        fields.join(", ")
                    )?;
                }
            }
            for warning in &w.warnings {
                writeln!(out, "    note: {warning}")?;
            }
        }
        if !self.refused.is_empty() {
            writeln!(out, "\ncannot be pushed:")?;
            for r in &self.refused {
                let id = r.external_id.as_deref().unwrap_or("(new)");
                writeln!(
                    out,
                    "    {} {id} (person {}) {}: {}",
                    r.source,
                    r.person_id,
                    r.field.name(),
                    r.reason
                )?;
            }
        }
        let updates = self
            .writes
            .iter()
            .filter(|w| w.action == Action::Update)
            .count();
        writeln!(
            out,
            "\n{updates} updates, {} creates, {} refused",
            self.writes.len() - updates,
            self.refused.len()
        )
    }

    /// Writes the plan as pretty JSON, one write at a time: a plan of a large store holds
    /// hundreds of thousands of writes, which as one `serde_json::Value` would double its memory.
    pub fn write_json(&self, out: impl std::io::Write) -> serde_json::Result<()> {
        serde_json::to_writer_pretty(out, &PlanJson(self))
    }
}

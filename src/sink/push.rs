//! `push`: applies a plan through the loaders, safely.
//!
//! Every write is recorded in `outbox` before it is sent and its outcome after. An update
//! first re-reads the remote record: if it changed since caresync last read it, nothing is
//! written and a conflict is recorded. A create first looks the person up by natural key, so
//! a create whose answer was lost is never repeated. After a write the stored record is
//! refreshed from the API, so the next sync reads back what we wrote as unchanged (no echo).

use std::collections::BTreeSet;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::plan::{Action, Plan, PlannedWrite};
use super::{NaturalKey, loader_for};
use crate::model::{Field, Value};
use crate::person::materialize::values_from_json;
use crate::privacy::redact;
use crate::source::Source;
use crate::source::http::FetchError;
use crate::store::{Canonical, CanonicalForm, StoredRecord, Writer, now_rfc3339};
use crate::sync::{read_by_keys, store_outside_scan};

/// How one push ended, by count and by write (ids and field names only).
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub succeeded: usize,
    /// Creates that found the person already there (a lost answer, or made elsewhere).
    pub found_existing: usize,
    pub conflicts: Vec<String>,
    pub failed: Vec<String>,
    /// Writes not sent: refused before for the same payload, or waiting for their backoff.
    pub held: Vec<String>,
}

impl PushReport {
    /// Every planned write succeeded.
    pub fn ok(&self) -> bool {
        self.conflicts.is_empty() && self.failed.is_empty() && self.held.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} writes succeeded ({} creates found the record already there), {} conflicts, {} failed, {} held back\n",
            self.succeeded,
            self.found_existing,
            self.conflicts.len(),
            self.failed.len(),
            self.held.len()
        );
        for c in &self.conflicts {
            out.push_str(&format!("  conflict: {c}\n"));
        }
        for f in &self.failed {
            out.push_str(&format!("  failed: {f}\n"));
        }
        for h in &self.held {
            out.push_str(&format!("  held back: {h}\n"));
        }
        out
    }
}

enum Outcome {
    Succeeded {
        external_id: String,
        found_existing: bool,
    },
    Conflict {
        fields: Vec<String>,
    },
    Failed {
        kind: &'static str,
        reason: String,
    },
}

/// Applies `plan` with `sources` (built by the pipeline for the push sources).
pub async fn apply(writer: &Writer, sources: &[Source], plan: &Plan) -> Result<PushReport> {
    let mut report = PushReport::default();
    for write in &plan.writes {
        let Some(source) = sources.iter().find(|s| s.name() == write.source) else {
            continue;
        };
        let Some(write_id) = begin(writer, write).await? else {
            report.held.push(format!(
                "{} {} (person {}): an earlier attempt failed validation with the same values, or is backing off (see outbox)",
                write.source,
                write.external_id.as_deref().unwrap_or("(new)"),
                write.person_id
            ));
            continue;
        };
        let outcome = send(writer, source, write, write_id.1).await?;
        let describe = format!(
            "{} {} (person {}, write {})",
            write.source,
            write.external_id.as_deref().unwrap_or("(new)"),
            write.person_id,
            write_id.0
        );
        match &outcome {
            Outcome::Succeeded { found_existing, .. } => {
                report.succeeded += 1;
                report.found_existing += *found_existing as usize;
            }
            Outcome::Conflict { fields } => report.conflicts.push(format!(
                "{describe}: changed upstream ({})",
                fields.join(", ")
            )),
            Outcome::Failed { kind, reason } => {
                report.failed.push(format!("{describe}: {kind}: {reason}"))
            }
        }
        finish(writer, write, write_id.0, outcome).await?;
    }
    Ok(report)
}

/// An earlier outbox row for the same write: id, status, error kind, payload, next attempt.
type EarlierAttempt = (i64, String, Option<String>, String, Option<String>);

/// Records the intended write (or takes over the outbox row of an earlier attempt).
/// Returns `(write_id, recovering)`, or `None` when the write must wait.
async fn begin(writer: &Writer, write: &PlannedWrite) -> Result<Option<(i64, bool)>> {
    let payload = serde_json::Value::Object(write.payload.to_json_body()).to_string();
    let fields = serde_json::to_string(
        &write
            .changes
            .iter()
            .map(|c| c.field.name())
            .collect::<Vec<_>>(),
    )?;
    let natural_key = write
        .natural_key
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    let (source, external_id, person, action, base_hash) = (
        write.source.clone(),
        write.external_id.clone(),
        write.person_id,
        write.action.as_str(),
        write.base_hash.clone(),
    );
    writer
        .call(move |conn| {
            let tx = conn.transaction()?;
            let now = now_rfc3339();
            let earlier: Option<EarlierAttempt> = tx
                .query_row(
                    "SELECT write_id, status, error_kind, payload_json, next_attempt_at FROM outbox
                     WHERE source = ?1 AND action = ?2 AND status IN ('pending', 'sending', 'failed')
                       AND ((?2 = 'update' AND external_id = ?3) OR (?2 = 'create' AND person_id = ?4))
                     ORDER BY write_id DESC LIMIT 1",
                    params![source, action, external_id, person],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let (write_id, recovering) = match earlier {
                Some((_, status, Some(kind), old_payload, _)) if status == "failed" && kind == "validation" && old_payload == payload => {
                    return Ok(None);
                }
                Some((_, status, _, _, Some(next))) if status == "failed" && next > now => return Ok(None),
                Some((id, status, ..)) => {
                    tx.execute(
                        "UPDATE outbox SET payload_json = ?2, fields = ?3, base_hash = COALESCE(?4, base_hash),
                             natural_key = COALESCE(?5, natural_key), updated_at = ?6 WHERE write_id = ?1",
                        params![id, payload, fields, base_hash, natural_key, now],
                    )?;
                    (id, status == "sending")
                }
                None => {
                    tx.execute(
                        "INSERT INTO outbox (source, external_id, person_id, action, fields, payload_json, base_hash,
                             natural_key, status, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?9)",
                        params![source, external_id, person, action, fields, payload, base_hash, natural_key, now],
                    )?;
                    (tx.last_insert_rowid(), false)
                }
            };
            // Marked before the request leaves: a crash from here on is found by the next push.
            tx.execute(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = ?2 WHERE write_id = ?1",
                params![write_id, now],
            )?;
            tx.commit()?;
            Ok(Some((write_id, recovering)))
        })
        .await
}

async fn send(
    writer: &Writer,
    source: &Source,
    write: &PlannedWrite,
    recovering: bool,
) -> Result<Outcome> {
    let Some(loader) = loader_for(source.config.kind) else {
        return Ok(Outcome::Failed {
            kind: "validation",
            reason: "this source is read-only".into(),
        });
    };
    match write.action {
        Action::Update => {
            let Some(id) = write.external_id.clone() else {
                return Ok(Outcome::Failed {
                    kind: "validation",
                    reason: "an update without a record".into(),
                });
            };
            let remote = match read_by_keys(source, std::slice::from_ref(&id)).await {
                Ok(mut found) => found.pop(),
                Err(e) => return Ok(failure(&e)),
            };
            let Some(remote) = remote else {
                return Ok(Outcome::Failed {
                    kind: "validation",
                    reason: "the record no longer exists upstream".into(),
                });
            };
            if write.base_hash.as_deref() != Some(remote.content_hash.as_str()) {
                if recovering && holds_written_values(&remote, write) {
                    // The earlier attempt landed before the crash: keep what is there.
                    store_outside_scan(writer, source, vec![remote]).await?;
                    return Ok(Outcome::Succeeded {
                        external_id: id,
                        found_existing: true,
                    });
                }
                let fields = changed_fields(writer, &write.source, &id, &remote).await?;
                store_outside_scan(writer, source, vec![remote]).await?;
                return Ok(Outcome::Conflict { fields });
            }
            let spec = loader.update(&id, &write.payload);
            if let Err(e) = source.http.execute(&spec, Ok).await {
                return Ok(failure(&e));
            }
            refresh(writer, source, &id).await?;
            Ok(Outcome::Succeeded {
                external_id: id,
                found_existing: false,
            })
        }
        Action::Create => {
            if let Some(key) = &write.natural_key
                && let Some(existing) = find_existing(source, loader.as_ref(), key).await?
            {
                let id = existing.external_id.clone();
                store_outside_scan(writer, source, vec![existing]).await?;
                return Ok(Outcome::Succeeded {
                    external_id: id,
                    found_existing: true,
                });
            }
            let spec = loader.create(&write.payload, &write.defaults);
            let answer = match source.http.execute(&spec, Ok).await {
                Ok(a) => a,
                Err(e) => return Ok(failure(&e)),
            };
            let key = match loader.created_key(&answer, &write.payload) {
                Ok(k) => source.config.kind.normalise_external_id(&k),
                Err(reason) => {
                    return Ok(Outcome::Failed {
                        kind: "transient",
                        reason,
                    });
                }
            };
            refresh(writer, source, &key).await?;
            Ok(Outcome::Succeeded {
                external_id: key,
                found_existing: false,
            })
        }
    }
}

fn failure(e: &FetchError) -> Outcome {
    match e {
        FetchError::Uncertain { reason } => Outcome::Failed {
            kind: "uncertain",
            reason: redact(reason),
        },
        FetchError::Refused { status, reason } if (400..500).contains(status) => Outcome::Failed {
            kind: "validation",
            reason: format!("HTTP {status}: {}", redact(reason)),
        },
        other => Outcome::Failed {
            kind: "transient",
            reason: redact(&other.to_string()),
        },
    }
}

/// Re-reads the written record and stores it: the stored version is then what the API holds.
async fn refresh(writer: &Writer, source: &Source, id: &str) -> Result<()> {
    if let Ok(records) = read_by_keys(source, &[id.to_string()]).await
        && !records.is_empty()
    {
        store_outside_scan(writer, source, records).await?;
    }
    Ok(())
}

fn canonical_values(record: &StoredRecord) -> crate::model::CanonicalValues {
    match &record.canonical {
        CanonicalForm::Mapped(Canonical::Mapped { values_json, .. }) => {
            values_from_json(values_json)
        }
        _ => crate::model::CanonicalValues::new(),
    }
}

fn holds_written_values(remote: &StoredRecord, write: &PlannedWrite) -> bool {
    let values = canonical_values(remote);
    write
        .changes
        .iter()
        .all(|c| values.get(c.field) == Some(&c.new))
}

/// The canonical fields on which the remote record differs from the stored one.
async fn changed_fields(
    writer: &Writer,
    source: &str,
    id: &str,
    remote: &StoredRecord,
) -> Result<Vec<String>> {
    let (source, id) = (source.to_string(), id.to_string());
    let stored: Option<String> = writer
        .call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT values_json FROM canonical_record WHERE source = ?1 AND external_id = ?2",
                    params![source, id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await?;
    let before = stored.map(|s| values_from_json(&s)).unwrap_or_default();
    let after = canonical_values(remote);
    let mut fields: BTreeSet<&'static str> = BTreeSet::new();
    for (field, _) in after.iter().chain(before.iter()) {
        if field != Field::SourceModifiedAt && before.get(field) != after.get(field) {
            fields.insert(field.name());
        }
    }
    if fields.is_empty() {
        fields.insert("(fields caresync does not map)");
    }
    Ok(fields.into_iter().map(String::from).collect())
}

/// A record of this person already in the source: same email, or same names and birth date.
async fn find_existing(
    source: &Source,
    loader: &dyn super::Loader,
    key: &NaturalKey,
) -> Result<Option<StoredRecord>> {
    let Some(spec) = loader.find(key) else {
        return Ok(None);
    };
    let parse = source.parser(|api, body| api.parse_page(body));
    let page = match source.http.execute(&spec, parse).await {
        Ok(p) => p,
        Err(FetchError::Refused { status: 404, .. }) => return Ok(None),
        Err(e) => anyhow::bail!("looking up an earlier create in `{}`: {e}", source.name()),
    };
    let text = |v: &crate::model::CanonicalValues, f: Field| {
        v.get(f).and_then(Value::as_text).map(str::to_lowercase)
    };
    Ok(page.records.into_iter().find(|r| {
        let v = canonical_values(r);
        let same_email =
            key.email.is_some() && v.email().map(|e| e.as_str().to_string()) == key.email;
        let same_person = key.birth_date.is_some()
            && v.birth_date().map(|d| d.to_string()) == key.birth_date
            && text(&v, Field::GivenName) == key.given_name.as_deref().map(str::to_lowercase)
            && text(&v, Field::FamilyName) == key.family_name.as_deref().map(str::to_lowercase);
        same_email || same_person
    }))
}

async fn finish(
    writer: &Writer,
    write: &PlannedWrite,
    write_id: i64,
    outcome: Outcome,
) -> Result<()> {
    let fields = serde_json::to_string(
        &write
            .changes
            .iter()
            .map(|c| c.field.name())
            .collect::<Vec<_>>(),
    )?;
    let (source, person, action, planned_id) = (
        write.source.clone(),
        write.person_id,
        write.action.as_str(),
        write.external_id.clone(),
    );
    writer
        .call(move |conn| {
            let tx = conn.transaction()?;
            let now = now_rfc3339();
            let (status, log_outcome, external_id, detail, kind) = match &outcome {
                Outcome::Succeeded { external_id, found_existing } => (
                    "succeeded",
                    if *found_existing { "found_existing" } else { "succeeded" },
                    Some(external_id.clone()),
                    None,
                    None,
                ),
                Outcome::Conflict { fields } => ("conflict", "conflict", planned_id.clone(), Some(fields.join(", ")), None),
                // Unknown outcome: left `sending`, so the next push settles it before anything else.
                Outcome::Failed { kind: "uncertain", reason } => {
                    ("sending", "uncertain", planned_id.clone(), Some(reason.clone()), Some("uncertain"))
                }
                Outcome::Failed { kind, reason } => ("failed", "failed", planned_id.clone(), Some(reason.clone()), Some(*kind)),
            };
            let next_attempt = match kind {
                Some("transient") => {
                    let attempts: i64 = tx.query_row("SELECT attempts FROM outbox WHERE write_id = ?1", [write_id], |r| r.get(0))?;
                    let wait = 30i64.saturating_mul(1 << attempts.clamp(0, 10)).min(3600);
                    Some((chrono::Utc::now() + chrono::Duration::seconds(wait)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                }
                _ => None,
            };
            tx.execute(
                "UPDATE outbox SET status = ?2, external_id = COALESCE(?3, external_id), error_kind = ?4,
                     last_error = ?5, next_attempt_at = ?6, updated_at = ?7 WHERE write_id = ?1",
                params![write_id, status, external_id, kind, detail, next_attempt, now],
            )?;
            if let Outcome::Conflict { fields } = &outcome {
                for field in fields {
                    tx.execute(
                        "INSERT INTO conflict (write_id, source, external_id, person_id, field, detected_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![write_id, source, planned_id, person, field, now],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO write_log (at, write_id, source, external_id, person_id, action, fields, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![now, write_id, source, external_id, person, action, fields, log_outcome, detail],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    tracing::info!(write_id, source = %write.source, person_id = write.person_id, action = write.action.as_str(), "write finished");
    Ok(())
}

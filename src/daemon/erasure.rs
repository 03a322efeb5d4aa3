//! `caresync forget`: erasing a person's data from the store, and keeping it erased.
//!
//! A person's data lives in the raw payloads of its linked source records and in everything
//! derived from them (canonical rows, links, provenance, review pairs, the outbox). Erasure
//! removes all of it in one transaction and leaves one `erasure_log` row without personal
//! data. The erased records' keys go into `suppressed_record` (as a salted hash: some APIs
//! key records by email address), which the store writer consults, so a later sync does not
//! store them again while the upstream system still has them. An operator who wants them back
//! (the upstream system corrected, say) deletes the suppression rows of that erasure.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use crate::store::{StoredRecord, now_rfc3339};

/// The suppression key of a record: hex SHA-256 of salt, source, a zero byte, external id.
pub fn key_hash(salt: &[u8], source: &str, external_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(external_id.as_bytes());
    hex::encode(h.finalize())
}

fn salt(conn: &Connection) -> Result<Vec<u8>> {
    conn.query_row("SELECT salt FROM erasure_salt WHERE id = 1", [], |r| {
        r.get(0)
    })
    .context("the store has no erasure salt")
}

/// The external ids among `records` that were erased and must not be stored again.
/// Costs one indexed lookup per page when the source has no suppressed records.
pub fn suppressed(
    tx: &Transaction<'_>,
    source: &str,
    records: &[StoredRecord],
) -> Result<HashSet<String>> {
    let any: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM suppressed_record WHERE source = ?1)")?
        .query_row([source], |r| r.get(0))?;
    if !any {
        return Ok(HashSet::new());
    }
    let salt = salt(tx)?;
    let mut lookup = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM suppressed_record WHERE source = ?1 AND key_hash = ?2)",
    )?;
    let mut out = HashSet::new();
    for r in records {
        let hit: bool = lookup.query_row(
            params![source, key_hash(&salt, source, &r.external_id)],
            |row| row.get(0),
        )?;
        if hit {
            out.insert(r.external_id.clone());
        }
    }
    Ok(out)
}

/// What an erasure removed (counts only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erasure {
    pub erasure_id: i64,
    pub records: usize,
    pub overrides: usize,
    pub rows: usize,
}

fn table_exists(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// Erases person `person_id` and every record linked to it, in one transaction.
pub fn erase_person(
    conn: &mut Connection,
    person_id: i64,
    reason: &str,
    actor: &str,
) -> Result<Erasure> {
    let tx = conn.transaction()?;
    let records: Vec<(String, String)> = tx
        .prepare("SELECT source, external_id FROM person_link WHERE person_id = ?1 ORDER BY 1, 2")?
        .query_map([person_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM person WHERE person_id = ?1)",
        [person_id],
        |r| r.get(0),
    )?;
    if !exists && records.is_empty() {
        let earlier: Option<(i64, String)> = tx
            .query_row(
                "SELECT erasure_id, erased_at FROM erasure_log WHERE person_id = ?1 ORDER BY erasure_id DESC LIMIT 1",
                [person_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match earlier {
            Some((id, at)) => bail!("person {person_id} was already erased (erasure {id}, {at})"),
            None => bail!("there is no person {person_id}"),
        }
    }
    let now = now_rfc3339();
    tx.execute(
        "INSERT INTO erasure_log (person_id, records_erased, reason, actor, erased_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![person_id, records.len() as i64, reason, actor, now],
    )?;
    let erasure_id = tx.last_insert_rowid();
    let salt = salt(&tx)?;
    // Conflicts point at outbox rows, so they go first.
    let writeback = ["conflict", "write_log", "outbox"]
        .into_iter()
        .map(|t| Ok((t, table_exists(&tx, t)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = 0usize;
    for (source, external_id) in &records {
        tx.execute(
            "INSERT OR IGNORE INTO suppressed_record (source, key_hash, erasure_id, erased_at) VALUES (?1, ?2, ?3, ?4)",
            params![source, key_hash(&salt, source, external_id), erasure_id, now],
        )?;
        for sql in [
            // The queue is keyed by record id: found through the raw record, removed first.
            "DELETE FROM relink_queue WHERE record_id IN
                 (SELECT record_id FROM source_record WHERE source = ?1 AND external_id = ?2)",
            "DELETE FROM source_record WHERE source = ?1 AND external_id = ?2",
            "DELETE FROM canonical_record WHERE source = ?1 AND external_id = ?2",
            "DELETE FROM mapping_failure WHERE source = ?1 AND external_id = ?2",
            "DELETE FROM sync_error WHERE source = ?1 AND external_id = ?2",
            "DELETE FROM link_review WHERE (source_a = ?1 AND external_id_a = ?2) OR (source_b = ?1 AND external_id_b = ?2)",
            "DELETE FROM link_runner_up WHERE (source = ?1 AND external_id = ?2) OR (other_source = ?1 AND other_external_id = ?2)",
        ] {
            rows += tx.execute(sql, params![source, external_id])?;
        }
        rows += crate::person::link_state::forget_record(&tx, source, external_id)?;
        for (table, present) in &writeback {
            if *present {
                rows += tx.execute(
                    &format!("DELETE FROM {table} WHERE source = ?1 AND external_id = ?2"),
                    params![source, external_id],
                )?;
            }
        }
    }
    for (table, present) in &writeback {
        if *present {
            rows += tx.execute(
                &format!("DELETE FROM {table} WHERE person_id = ?1"),
                [person_id],
            )?;
        }
    }
    for table in [
        "link_runner_up",
        "person_link",
        "person_provenance",
        "service_user",
        "staff_user",
        "health_profile",
        "lifestyle",
        "person",
    ] {
        rows += tx.execute(
            &format!("DELETE FROM {table} WHERE person_id = ?1"),
            [person_id],
        )?;
    }
    let overrides = tx.execute(
        "DELETE FROM operator_override WHERE person_id = ?1",
        [person_id],
    )?;
    // The erased records' pairs made rivals and blocks for others: the next link is a full one.
    crate::person::link_state::invalidate(&tx)?;
    tx.commit()?;
    Ok(Erasure {
        erasure_id,
        records: records.len(),
        overrides,
        rows: rows + overrides,
    })
}

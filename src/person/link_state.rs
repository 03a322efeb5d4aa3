//! The linking state in the store (`schema/0007_link_state.sql`): each linked record's
//! blocking keys and kept comparisons. A full link writes it; afterwards any process re-links
//! only the neighbourhood of the queued records, reading what it needs from the store.
//!
//! The neighbourhood of a set of changed records is every record whose cluster a full re-link
//! could change: the records in the changed records' blocks (before and after the change),
//! and in blocks whose size crossed the cap, expanded along the stored pairs that clustering
//! reads to whole link-graph components. Their other kept pairs lead to a rim of records that
//! are loaded only so that review pairs and runners-up come out as in a full link.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};

use crate::identity::{
    BlockSize, Candidate, Cluster, KeyOf, KeySet, LinkIndex, MatchConfig, Prepared, RecordRef,
};

/// Bump when a code change alters how records are compared or blocked: the stored state is
/// then rebuilt by a full link.
const ALGORITHM_VERSION: u32 = 2;

/// The settings the state depends on. The day given ages are compared on moves daily and is
/// left out: a pair is scored as of when one of its records last changed.
pub(super) fn config_hash(config: &MatchConfig) -> String {
    let fixed = MatchConfig {
        age_reference: chrono::NaiveDate::MIN,
        ..config.clone()
    };
    let text = format!("{ALGORITHM_VERSION}:{fixed:?}");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Whether the stored state was computed with these settings (and can be updated in place),
/// and about how many records it holds (the highest rid: no count over the whole table).
pub(super) fn current(conn: &Connection, config: &MatchConfig) -> Result<Option<u64>> {
    let stored: Option<String> = conn
        .query_row("SELECT config_hash FROM link_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    if stored.as_deref() != Some(config_hash(config).as_str()) {
        return Ok(None);
    }
    let records: i64 =
        conn.query_row("SELECT coalesce(max(rid), 0) FROM link_record", [], |r| {
            r.get(0)
        })?;
    Ok(Some(records as u64))
}

/// Forgets the stored state: the next link is a full one.
pub fn invalidate(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM link_state", [])?;
    Ok(())
}

/// Removes a record from the stored state (for `caresync forget`, which also invalidates it).
pub fn forget_record(conn: &Connection, source: &str, external_id: &str) -> Result<usize> {
    let Some((rid, keys)) = stored_record(conn, &RecordRef::new(source, external_id))? else {
        return Ok(0);
    };
    let mut rows = remove_keys(conn, rid, &keys)?;
    rows += remove_edges(conn, &[rid])?;
    rows += conn.execute("DELETE FROM link_record WHERE rid = ?1", [rid])?;
    Ok(rows)
}

pub(super) fn encode_keys(keys: impl Iterator<Item = KeyOf>) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys {
        out.extend_from_slice(&k.hash.to_be_bytes());
        out.push(u8::from(k.filtered));
    }
    out
}

pub(super) fn decode_keys(blob: &[u8]) -> Result<Vec<KeyOf>> {
    if !blob.len().is_multiple_of(9) {
        bail!(
            "link_record.keys is {} bytes, not a multiple of 9",
            blob.len()
        );
    }
    Ok(blob
        .chunks_exact(9)
        .map(|c| KeyOf {
            hash: u64::from_be_bytes(c[..8].try_into().unwrap_or_default()),
            filtered: c[8] != 0,
        })
        .collect())
}

/// Rows a bulk insert gathers before writing them.
pub(super) const INSERT_CHUNK: usize = 64 * 1024;
/// Rows per INSERT statement: one statement execution for many rows, not one per row.
const ROWS_PER_STATEMENT: usize = 128;

/// Inserts rows of integers, many per statement, in the order given.
pub(super) fn insert_rows<const W: usize>(
    conn: &Connection,
    table: &str,
    rows: &[[i64; W]],
) -> Result<()> {
    let sql = |n: usize| {
        let row = format!("({})", vec!["?"; W].join(","));
        format!("INSERT INTO {table} VALUES {}", vec![row; n].join(","))
    };
    let full = sql(ROWS_PER_STATEMENT);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values = rusqlite::params_from_iter(chunk.iter().flatten());
        if chunk.len() == ROWS_PER_STATEMENT {
            conn.prepare_cached(&full)?.execute(values)?;
        } else {
            conn.prepare(&sql(chunk.len()))?.execute(values)?;
        }
    }
    Ok(())
}

/// A record's rid and blocking keys, as stored.
type StoredKeys = (i64, Vec<KeyOf>);

fn stored_record(conn: &Connection, record: &RecordRef) -> Result<Option<StoredKeys>> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT rid, keys FROM link_record WHERE source = ?1 AND external_id = ?2")?
        .query_row(params![record.source, record.external_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    found
        .map(|(rid, blob)| Ok((rid, decode_keys(&blob)?)))
        .transpose()
}

fn remove_keys(conn: &Connection, rid: i64, keys: &[KeyOf]) -> Result<usize> {
    let mut delete = conn.prepare_cached("DELETE FROM link_key WHERE key = ?1 AND rid = ?2")?;
    let mut rows = 0;
    for k in keys {
        rows += delete.execute(params![k.hash as i64, rid])?;
    }
    Ok(rows)
}

/// Removes every stored pair of `rids`, in both directions.
fn remove_edges(conn: &Connection, rids: &[i64]) -> Result<usize> {
    let mut others = conn.prepare_cached("SELECT other FROM link_edge WHERE rid = ?1")?;
    let mut delete_one =
        conn.prepare_cached("DELETE FROM link_edge WHERE rid = ?1 AND other = ?2")?;
    let mut delete_all = conn.prepare_cached("DELETE FROM link_edge WHERE rid = ?1")?;
    let mut rows = 0;
    for &rid in rids {
        let list: Vec<i64> = others
            .query_map([rid], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for other in list {
            rows += delete_one.execute(params![other, rid])?;
        }
        rows += delete_all.execute([rid])?;
    }
    Ok(rows)
}

fn block_sizes(
    conn: &Connection,
    keys: impl Iterator<Item = u64>,
) -> Result<HashMap<u64, BlockSize>> {
    let mut stmt = conn.prepare_cached(
        "SELECT count(*), coalesce(sum(lacks_birth_date), 0), coalesce(max(filtered), 0)
         FROM link_key WHERE key = ?1",
    )?;
    let mut out = HashMap::new();
    for key in keys {
        let size = stmt.query_row([key as i64], |r| {
            Ok(BlockSize {
                members: r.get::<_, i64>(0)? as u64,
                lacking_birth_date: r.get::<_, i64>(1)? as u64,
                filtered: r.get::<_, i64>(2)? != 0,
            })
        })?;
        out.insert(key, size);
    }
    Ok(out)
}

/// The members of a block: all, or only those lacking a birth date.
fn block_members(
    conn: &Connection,
    key: u64,
    only_lacking: bool,
    into: &mut BTreeSet<i64>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT rid FROM link_key WHERE key = ?1 AND (?2 = 0 OR lacks_birth_date = 1)",
    )?;
    for rid in stmt.query_map(params![key as i64, only_lacking], |r| r.get::<_, i64>(0))? {
        into.insert(rid?);
    }
    Ok(())
}

/// What re-linking a neighbourhood recomputed: replace what is stored for `affected`.
pub(super) struct Relinked {
    pub affected: Vec<RecordRef>,
    pub clusters: Vec<Cluster>,
    pub review: Vec<Candidate>,
    pub compared_pairs: u64,
}

/// Re-links the neighbourhood of `queue`, whose live records are `live` (the others were
/// removed), and brings the stored state up to date.
pub(super) fn relink_neighbourhood(
    conn: &Connection,
    config: &MatchConfig,
    queue: &[RecordRef],
    live: Vec<Prepared>,
    load: impl Fn(&[RecordRef]) -> Result<Vec<Prepared>>,
) -> Result<Relinked> {
    let live: HashMap<RecordRef, Prepared> =
        live.into_iter().map(|p| (p.record().clone(), p)).collect();
    let before: Vec<(RecordRef, Option<StoredKeys>)> = queue
        .iter()
        .map(|r| Ok((r.clone(), stored_record(conn, r)?)))
        .collect::<Result<_>>()?;
    let touched: BTreeSet<u64> = before
        .iter()
        .flat_map(|(_, s)| s.iter().flat_map(|(_, keys)| keys.iter().map(|k| k.hash)))
        .chain(live.values().flat_map(|p| p.keys().map(|k| k.hash)))
        .collect();
    let sizes_before = block_sizes(conn, touched.iter().copied())?;

    // The queued records' new keys; removed records keep their row (and pairs) until the
    // neighbourhood is known.
    let mut rescore: BTreeSet<i64> = BTreeSet::new();
    let mut removed: Vec<i64> = Vec::new();
    let mut upsert = conn.prepare_cached(
        "INSERT INTO link_record (source, external_id, lacks_birth_date, keys, kind, features)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, external_id) DO UPDATE SET lacks_birth_date = excluded.lacks_birth_date,
             keys = excluded.keys, kind = excluded.kind, features = excluded.features
         RETURNING rid",
    )?;
    let mut add_key = conn.prepare_cached(
        "INSERT INTO link_key (key, rid, lacks_birth_date, filtered) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (record, stored) in &before {
        if let Some((rid, keys)) = stored {
            remove_keys(conn, *rid, keys)?;
        }
        match live.get(record) {
            Some(p) => {
                let lacks = p.lacks_birth_date();
                let rid: i64 = upsert.query_row(
                    params![
                        record.source,
                        record.external_id,
                        lacks,
                        encode_keys(p.keys()),
                        p.kind().as_str(),
                        p.encode()
                    ],
                    |r| r.get(0),
                )?;
                for k in p.keys() {
                    add_key.execute(params![k.hash as i64, rid, lacks, k.filtered])?;
                }
                rescore.insert(rid);
            }
            None => {
                if let Some((rid, _)) = stored {
                    removed.push(*rid);
                    rescore.insert(*rid);
                }
            }
        }
    }
    let sizes_after = block_sizes(conn, touched.iter().copied())?;

    // Blocks that crossed the cap: all their members' pairs change.
    let mut start = rescore.clone();
    for key in &touched {
        let (b, a) = (
            sizes_before.get(key).copied().unwrap_or_default(),
            sizes_after.get(key).copied().unwrap_or_default(),
        );
        if b.oversized(config) != a.oversized(config) {
            block_members(conn, *key, false, &mut start)?;
        }
    }
    // The queued records' blocks after the change.
    for p in live.values() {
        for k in p.keys() {
            let size = sizes_after.get(&k.hash).copied().unwrap_or_default();
            if !size.oversized(config) {
                block_members(
                    conn,
                    k.hash,
                    k.filtered && !p.lacks_birth_date(),
                    &mut start,
                )?;
            }
        }
    }

    // Whole components along the pairs clustering reads, then the rim.
    let mut scope: BTreeSet<i64> = BTreeSet::new();
    {
        let mut strong =
            conn.prepare_cached("SELECT other FROM link_edge WHERE rid = ?1 AND strong = 1")?;
        let mut stack: Vec<i64> = start.into_iter().collect();
        while let Some(rid) = stack.pop() {
            if !scope.insert(rid) {
                continue;
            }
            for other in strong.query_map([rid], |r| r.get::<_, i64>(0))? {
                let other = other?;
                if !scope.contains(&other) {
                    stack.push(other);
                }
            }
        }
    }
    let mut rim: BTreeSet<i64> = BTreeSet::new();
    {
        let mut any = conn.prepare_cached("SELECT other FROM link_edge WHERE rid = ?1")?;
        for &rid in &scope {
            for other in any.query_map([rid], |r| r.get::<_, i64>(0))? {
                let other = other?;
                if !scope.contains(&other) {
                    rim.insert(other);
                }
            }
        }
    }

    let mut ref_of: HashMap<i64, RecordRef> = HashMap::new();
    {
        let mut stmt =
            conn.prepare_cached("SELECT source, external_id FROM link_record WHERE rid = ?1")?;
        for &rid in scope.iter().chain(&rim) {
            if let Some(r) = stmt
                .query_row([rid], |r| {
                    Ok(RecordRef::new(
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                    ))
                })
                .optional()?
            {
                ref_of.insert(rid, r);
            }
        }
    }
    let rid_of: HashMap<&RecordRef, i64> = ref_of.iter().map(|(rid, r)| (r, *rid)).collect();
    let in_scope: HashSet<&RecordRef> = scope.iter().filter_map(|rid| ref_of.get(rid)).collect();

    // Queued records are loaded already; the rest from the store.
    let others: Vec<RecordRef> = ref_of
        .values()
        .filter(|r| !live.contains_key(*r))
        .cloned()
        .collect();
    let mut records = load(&others)?;
    records.extend(live.into_values());
    // Block sizes after the change: the touched blocks' are known already.
    let unmeasured: BTreeSet<u64> = records
        .iter()
        .flat_map(|p| p.keys().map(|k| k.hash))
        .filter(|key| !sizes_after.contains_key(key))
        .collect();
    let mut sizes = sizes_after;
    sizes.extend(block_sizes(conn, unmeasured.into_iter())?);
    let oversized: KeySet = sizes
        .into_iter()
        .filter(|(_, size)| size.oversized(config))
        .map(|(key, _)| key)
        .collect();
    let index = LinkIndex::build_part(config.clone(), records, oversized);
    let resolution = index.resolution();
    let compared_pairs = resolution.stats.compared_pairs;
    let clusters: Vec<Cluster> = resolution
        .clusters
        .into_iter()
        .filter(|c| c.records().any(|r| in_scope.contains(r)))
        .collect();
    let review: Vec<Candidate> = resolution
        .review
        .into_iter()
        .filter(|c| in_scope.contains(&c.record) || in_scope.contains(&c.other))
        .collect();

    // The scope's pairs, recomputed.
    let scope_rids: Vec<i64> = scope.iter().copied().collect();
    remove_edges(conn, &scope_rids)?;
    let slot_rid: HashMap<u32, i64> = index
        .records()
        .filter_map(|(slot, r)| rid_of.get(r).map(|rid| (slot, *rid)))
        .collect();
    let mut add_edge = conn.prepare_cached(
        "INSERT OR REPLACE INTO link_edge (rid, other, strong) VALUES (?1, ?2, ?3)",
    )?;
    let mut failed: Option<rusqlite::Error> = None;
    index.kept_pairs(|a, b, strong| {
        let (Some(&ra), Some(&rb)) = (slot_rid.get(&a), slot_rid.get(&b)) else {
            return;
        };
        if failed.is_some() || !(scope.contains(&ra) || scope.contains(&rb)) {
            return;
        }
        for (x, y) in [(ra, rb), (rb, ra)] {
            if let Err(e) = add_edge.execute(params![x, y, strong]) {
                failed = Some(e);
            }
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    let mut delete = conn.prepare_cached("DELETE FROM link_record WHERE rid = ?1")?;
    for rid in &removed {
        delete.execute([rid])?;
    }

    let mut affected: BTreeSet<RecordRef> = in_scope.into_iter().cloned().collect();
    affected.extend(queue.iter().cloned());
    Ok(Relinked {
        affected: affected.into_iter().collect(),
        clusters,
        review,
        compared_pairs,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::identity::InputRecord;
    use crate::identity::tests::dataset;
    use crate::model::{Field, Value};
    use crate::person::link::Linker;
    use crate::person::survivorship::Policy;

    /// The default settings, and a block cap so low that many blocks are too large to compare.
    pub(in crate::person) fn default_and_low_cap() -> [MatchConfig; 2] {
        [
            MatchConfig::default(),
            MatchConfig {
                max_block_pairs: 6,
                ..MatchConfig::default()
            },
        ]
    }

    pub(in crate::person) fn put(conn: &Connection, r: &InputRecord) {
        let values = serde_json::Value::Object(r.values.to_json()).to_string();
        conn.execute(
            "INSERT INTO source_record (source, external_id, kind, payload, content_hash, first_seen_at, sighting_stored_at, changed_at, sighting_scan, deleted_at)
             VALUES (?1, ?2, ?3, '{}', 'h', 't', 't', 't', 1, NULL)
             ON CONFLICT (source, external_id) DO UPDATE SET deleted_at = NULL",
            params![r.record.source, r.record.external_id, r.kind.as_str()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO canonical_record (source, external_id, kind, content_hash, mapping_hash, values_json, mapped_at)
             VALUES (?1, ?2, ?3, 'h', 'm', ?4, '2026-01-01T00:00:00Z')
             ON CONFLICT (source, external_id) DO UPDATE SET values_json = excluded.values_json",
            params![r.record.source, r.record.external_id, r.kind.as_str(), values],
        )
        .unwrap();
        queue(conn, &r.record);
    }

    fn queue(conn: &Connection, r: &RecordRef) {
        conn.execute(
            "INSERT OR IGNORE INTO relink_queue (record_id, source, external_id)
             SELECT record_id, source, external_id FROM source_record
             WHERE source = ?1 AND external_id = ?2",
            params![r.source, r.external_id],
        )
        .unwrap();
    }

    pub(in crate::person) fn delete(conn: &Connection, r: &RecordRef) {
        conn.execute(
            "UPDATE source_record SET deleted_at = 't' WHERE source = ?1 AND external_id = ?2",
            params![r.source, r.external_id],
        )
        .unwrap();
        queue(conn, r);
    }

    /// Everything linking writes, as text, with rids replaced by record references.
    pub(in crate::person) fn linked_tables(conn: &Connection) -> Vec<String> {
        let queries = [
            "SELECT 'link', source, external_id, person_id, rule, score FROM person_link",
            "SELECT 'review', source_a, external_id_a, source_b, external_id_b, score FROM link_review",
            "SELECT 'runner_up', person_id, source, external_id, other_source, other_external_id, score, reason FROM link_runner_up",
            "SELECT 'person', person_id, given_name, family_name, birth_date, nhs_number, email FROM person",
            "SELECT 'provenance', person_id, records, fields FROM person_provenance",
            "SELECT 'record', source, external_id, lacks_birth_date, hex(keys) FROM link_record",
            "SELECT 'key', k.key, r.source, r.external_id, k.lacks_birth_date, k.filtered
             FROM link_key k JOIN link_record r USING (rid)",
            "SELECT 'edge', a.source, a.external_id, b.source, b.external_id, e.strong
             FROM link_edge e JOIN link_record a ON a.rid = e.rid JOIN link_record b ON b.rid = e.other",
        ];
        let mut out: Vec<String> = queries
            .iter()
            .flat_map(|sql| crate::person::rows_as_text(conn, sql))
            .collect();
        out.sort();
        out
    }

    /// What a full link of the same store writes (on a copy).
    fn full_relink(
        conn: &Connection,
        dir: &std::path::Path,
        round: usize,
        config: &MatchConfig,
    ) -> Vec<String> {
        let path = dir.join(format!("full{round}.db"));
        conn.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
            .unwrap();
        let mut copy = crate::store::open(&path).unwrap();
        invalidate(&copy).unwrap();
        copy.execute(crate::store::QUEUE_ALL_CANONICAL_SQL, [])
            .unwrap();
        Linker::new(config.clone(), Policy::default())
            .link_pending(&mut copy)
            .unwrap();
        linked_tables(&copy)
    }

    /// Rounds of random changes (new, edited, removed and restored records), each re-linked
    /// by neighbourhood, write exactly what a full link writes — with the default block cap,
    /// and with a cap so low that changes push blocks across it.
    #[test]
    fn neighbourhood_relink_writes_what_a_full_link_writes() {
        let data = dataset(600, 5);
        for config in default_and_low_cap() {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
            let mut records = data.records.clone();
            let mut held = records.split_off(records.len() - 40);
            for r in &records {
                put(&conn, r);
            }
            let mut linker = Linker::new(config.clone(), Policy::default());
            let first = linker.link_pending(&mut conn).unwrap();
            assert_eq!(first.records_linked, records.len());
            assert!(current(&conn, &config).unwrap().is_some());

            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut removed: Vec<InputRecord> = Vec::new();
            let mut compared_in_rounds = 0;
            for round in 0..6 {
                let mut changed = 0;
                for _ in 0..rng.gen_range(8..24) {
                    match rng.gen_range(0..9) {
                        0 if !held.is_empty() => put(&conn, &held.pop().unwrap()),
                        1 if !removed.is_empty() => {
                            let back = removed.swap_remove(rng.gen_range(0..removed.len()));
                            put(&conn, &back);
                            records.push(back);
                        }
                        2 => {
                            let gone = records.swap_remove(rng.gen_range(0..records.len()));
                            delete(&conn, &gone.record);
                            removed.push(gone);
                        }
                        // Re-link a record whose component holds a review-only pair (so the
                        // other side is outside the neighbourhood, on its rim).
                        6 => {
                            let rid: Option<i64> = conn
                                .query_row(
                                    "SELECT s.other FROM link_edge w JOIN link_edge s ON s.rid = w.rid AND s.strong = 1
                                     WHERE w.strong = 0 ORDER BY w.rid, s.other LIMIT 1 OFFSET ?1",
                                    [rng.gen_range(0..20)],
                                    |r| r.get(0),
                                )
                                .optional()
                                .unwrap();
                            let Some(rid) = rid else { continue };
                            let r: RecordRef = conn
                                .query_row(
                                    "SELECT source, external_id FROM link_record WHERE rid = ?1",
                                    [rid],
                                    |r| {
                                        Ok(RecordRef::new(
                                            r.get::<_, String>(0)?,
                                            r.get::<_, String>(1)?,
                                        ))
                                    },
                                )
                                .unwrap();
                            queue(&conn, &r);
                        }
                        // A record of a member's names alone joins its name blocks, and pushes
                        // one that compared pairs across the cap: those pairs are gone.
                        7 | 8 => {
                            let rid: Option<i64> = conn
                                .query_row(
                                    "SELECT min(rid) FROM link_key WHERE filtered = 1 GROUP BY key
                                     HAVING sum(lacks_birth_date) >= 1
                                        AND sum(lacks_birth_date) * (count(*) - 1) <= ?1
                                        AND (sum(lacks_birth_date) + 1) * count(*) > ?1
                                     ORDER BY key LIMIT 1 OFFSET ?2",
                                    params![config.max_block_pairs as i64, rng.gen_range(0..20)],
                                    |r| r.get(0),
                                )
                                .optional()
                                .unwrap();
                            let Some(rid) = rid else { continue };
                            let external_id: String = conn
                                .query_row(
                                    "SELECT external_id FROM link_record WHERE rid = ?1",
                                    [rid],
                                    |r| r.get(0),
                                )
                                .unwrap();
                            let Some(original) =
                                records.iter().find(|r| r.record.external_id == external_id)
                            else {
                                continue;
                            };
                            let mut copy = original.clone();
                            copy.record.external_id = format!("names-{round}-{changed}");
                            copy.values = Default::default();
                            for f in [Field::GivenName, Field::FamilyName] {
                                if let Some(v) = original.values.get(f) {
                                    copy.values.insert(f, v.clone());
                                }
                            }
                            put(&conn, &copy);
                            records.push(copy);
                        }
                        choice => {
                            let r = records.choose_mut(&mut rng).unwrap();
                            match choice {
                                3 => {
                                    r.values.remove(Field::BirthDate);
                                }
                                4 => {
                                    r.values.insert(
                                        Field::GivenName,
                                        Value::Text("Bartholomew".into()),
                                    );
                                }
                                _ => {
                                    // Take another record's name: a new namesake or duplicate.
                                    let other = data.records.choose(&mut rng).unwrap();
                                    for f in [Field::GivenName, Field::FamilyName, Field::BirthDate]
                                    {
                                        match other.values.get(f) {
                                            Some(v) => r.values.insert(f, v.clone()),
                                            None => r.values.remove(f),
                                        };
                                    }
                                }
                            }
                            put(&conn, r);
                        }
                    }
                    changed += 1;
                }
                let outcome = linker.link_pending(&mut conn).unwrap();
                assert!(
                    outcome.queued > 0 && outcome.queued <= changed,
                    "round {round}: {outcome:?}"
                );
                assert!(
                    outcome.records_linked < records.len() / 2,
                    "round {round}: a neighbourhood re-link touched {} of {} records",
                    outcome.records_linked,
                    records.len()
                );
                assert!(
                    outcome.compared_pairs < first.compared_pairs,
                    "round {round}: {} pairs compared, {} by the full link",
                    outcome.compared_pairs,
                    first.compared_pairs
                );
                compared_in_rounds += outcome.compared_pairs;
                let incremental = linked_tables(&conn);
                let full = full_relink(&conn, dir.path(), round, &config);
                let only_inc: Vec<_> = incremental
                    .iter()
                    .filter(|r| !full.contains(r))
                    .take(5)
                    .collect();
                let only_full: Vec<_> = full
                    .iter()
                    .filter(|r| !incremental.contains(r))
                    .take(5)
                    .collect();
                assert!(
                    incremental == full,
                    "round {round}, cap {}: only incremental {only_inc:#?}, only full {only_full:#?}",
                    config.max_block_pairs
                );
            }
            assert!(
                compared_in_rounds > 0,
                "the neighbourhoods compared nothing"
            );
        }
    }

    #[test]
    fn stored_keys_read_back_and_a_damaged_blob_is_an_error() {
        let keys = [
            KeyOf {
                hash: u64::MAX,
                filtered: true,
            },
            KeyOf {
                hash: 7,
                filtered: false,
            },
        ];
        let blob = encode_keys(keys.iter().copied());
        assert_eq!(decode_keys(&blob).unwrap(), keys);
        let error = decode_keys(&blob[..10]).unwrap_err().to_string();
        assert!(error.contains("not a multiple of 9"), "{error}");
    }

    #[test]
    fn other_settings_mean_a_full_link() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let data = dataset(50, 3);
        for r in &data.records {
            put(&conn, r);
        }
        let config = MatchConfig::default();
        Linker::new(config.clone(), Policy::default())
            .link_pending(&mut conn)
            .unwrap();
        assert_eq!(
            current(&conn, &config).unwrap(),
            Some(data.records.len() as u64)
        );
        let tomorrow = MatchConfig {
            age_reference: config.age_reference.succ_opt().unwrap(),
            ..config.clone()
        };
        assert!(
            current(&conn, &tomorrow).unwrap().is_some(),
            "the day alone changes nothing"
        );
        let stricter = MatchConfig {
            link_threshold: 25.0,
            ..config.clone()
        };
        assert_eq!(current(&conn, &stricter).unwrap(), None);
        // One changed record under new settings is linked with every other.
        put(&conn, &data.records[0]);
        let outcome = Linker::new(stricter.clone(), Policy::default())
            .link_pending(&mut conn)
            .unwrap();
        assert_eq!(outcome.records_linked, data.records.len());
        assert!(current(&conn, &stricter).unwrap().is_some());
    }
}

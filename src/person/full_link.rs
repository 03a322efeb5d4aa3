//! A full link that does not hold the store in memory (the first link, a large change, new
//! matching settings). Each live record is prepared once and stored with its features
//! (`link_record`); its blocks are written in key order (`link_key`) and scored a batch of
//! blocks at a time, reading the members' features back; the kept pairs are stored
//! (`link_edge`); then the records are linked a part at a time. A part is whole components
//! of the pairs clustering reads and of the previous persons, plus a rim of records one
//! review-only pair away (as `link_state` re-links a neighbourhood), so
//! [`LinkIndex::build_part`] links it exactly as the whole would, and its persons take their
//! ids as they would in one pass. Memory holds a few integers per record and one part, not
//! the records.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

use super::link::{LinkOutcome, Scope, input_record, materialize_persons, next_person_id, persist};
use super::link_state::{INSERT_CHUNK, config_hash, decode_keys, encode_keys, insert_rows};
use super::scan::deleted_upstream;
use super::survivorship::Policy;
use crate::identity::{
    BlockSize, Candidate, Cluster, KeptPair, KeyOf, KeySet, LinkIndex, MatchConfig, Prepared,
    RecordRef, UnionFind, parallel_map, prepare_all, score_block,
};
use crate::source::kind::SourceKind;
use crate::store::now_rfc3339;

/// Records read, then parsed and prepared on every core, at a time.
const PREPARE_CHUNK: usize = 8192;

/// How much a full link holds at a time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Records linked together in one part (whole components, so a part may hold more):
    /// enough that per-part work is small beside the part's.
    pub part_records: usize,
    /// Block memberships held while `link_key` is written: the keys are split into ranges
    /// of about this many.
    pub entries_per_pass: i64,
    /// Block members scored at a time: their stored features read back (encoded, about 200
    /// bytes a record), then decoded on the scoring thread and scored on every core. Each
    /// batch reads pages from all over `link_record`, so fewer, larger batches read fewer
    /// pages; two are held at a time (one read while one is scored), and 64k held about 40 MB
    /// more than 16k at 1M records.
    pub score_batch: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        part_records: 4096,
        entries_per_pass: 1 << 20,
        score_batch: 32 * 1024,
    };
}

/// A record's membership of a block, as held while the blocks are written and scored.
#[derive(Clone, Copy)]
struct KeyEntry {
    /// The key's hash as SQLite orders it (signed).
    key: i64,
    rid: u32,
    lacks_birth_date: bool,
    filtered: bool,
}

/// Links every live record, replacing the stored links, review pairs, runners-up and
/// linking state.
pub(super) fn link_all(
    tx: &Connection,
    config: &MatchConfig,
    policy: &Policy,
    limits: Limits,
    outcome: &mut LinkOutcome,
) -> Result<()> {
    let started = Instant::now();
    for table in [
        "link_edge",
        "link_key",
        "link_record",
        "link_state",
        "link_review",
        "link_runner_up",
    ] {
        tx.execute(&format!("DELETE FROM {table}"), [])?;
    }
    let records = store_records(tx, config)?;
    outcome.records_linked = records as usize;
    let stored_ms = started.elapsed().as_millis() as u64;

    let oversized = write_blocks(tx, config, limits.entries_per_pass)?;
    let (pairs, compared) = score_blocks(tx, config, &oversized, limits.score_batch)?;
    outcome.compared_pairs = compared;
    write_pairs(tx, &pairs)?;
    let scored_ms = started.elapsed().as_millis() as u64;

    let components = Components::of(tx, records, &pairs)?;
    let kept_pairs = pairs.len();
    drop(pairs);
    let mut affected: BTreeSet<i64> = BTreeSet::new();
    remove_links_of_unlinked(tx, &mut affected, outcome)?;
    let first_new_id = next_person_id(tx)?;
    let largest_part = link_parts(
        tx,
        config,
        &oversized,
        &components,
        limits.part_records,
        &mut affected,
        outcome,
    )?;
    let linked_ms = started.elapsed().as_millis() as u64;
    let (written, removed) =
        materialize_persons(tx, &affected, first_new_id, policy, &now_rfc3339())?;
    outcome.persons_written += written;
    outcome.persons_removed += removed;
    tx.execute(
        "INSERT INTO link_state (id, config_hash, built_at) VALUES (1, ?1, ?2)",
        params![config_hash(config), now_rfc3339()],
    )?;
    tracing::debug!(
        records,
        oversized_blocks = oversized.len(),
        compared_pairs = compared,
        kept_pairs,
        largest_part,
        stored_ms,
        scored_ms,
        linked_ms,
        persons_ms = started.elapsed().as_millis() as u64,
        "full link"
    );
    Ok(())
}

/// Links the records a part at a time and writes each part's links, review pairs and
/// runners-up. A part is linked on a thread of its own while the next is read and the last
/// written. Returns the most records a part held.
fn link_parts(
    tx: &Connection,
    config: &MatchConfig,
    oversized: &KeySet,
    components: &Components,
    part_records: usize,
    affected: &mut BTreeSet<i64>,
    outcome: &mut LinkOutcome,
) -> Result<usize> {
    // Whether any record was linked as the parts begin (they write only their own records).
    let parts_scope = Scope::Part {
        links_before: tx.query_row("SELECT EXISTS (SELECT 1 FROM person_link)", [], |r| {
            r.get(0)
        })?,
    };
    let mut largest_part = 0;
    std::thread::scope(|scope| -> Result<usize> {
        let (to_link, loaded) = std::sync::mpsc::sync_channel::<(StoredFeatures, usize)>(1);
        let (to_write, linked) =
            std::sync::mpsc::sync_channel::<Result<(Vec<Cluster>, Vec<Candidate>)>>(1);
        scope.spawn(move || {
            for (stored, in_part) in loaded {
                let linked = stored
                    .decode_all()
                    .map(|records| link_part(config, oversized, records, in_part));
                if to_write.send(linked).is_err() {
                    break;
                }
            }
        });
        let mut write = |linked: Result<(Vec<Cluster>, Vec<Candidate>)>| {
            let (clusters, review) = linked?;
            persist(
                tx,
                &clusters,
                &review,
                &parts_scope,
                |_| true,
                affected,
                outcome,
            )
        };
        let mut in_flight = 0;
        for part in components.parts(part_records) {
            largest_part = largest_part.max(part.len());
            let stored = StoredFeatures::read(tx, components.with_rim(part), Names::Read)?;
            if to_link.send((stored, part.len())).is_err() {
                break;
            }
            in_flight += 1;
            if in_flight == 2 {
                write(linked.recv()?)?;
                in_flight -= 1;
            }
        }
        drop(to_link);
        for part in linked {
            write(part)?;
        }
        Ok(largest_part)
    })
}

/// Links a part (its first `in_part` records, then its rim): the clusters of the part's
/// records and the review pairs that touch them.
fn link_part(
    config: &MatchConfig,
    oversized: &KeySet,
    records: Vec<Prepared>,
    in_part: usize,
) -> (Vec<Cluster>, Vec<Candidate>) {
    let in_scope: HashSet<RecordRef> = records[..in_part]
        .iter()
        .map(|p| p.record().clone())
        .collect();
    let index = LinkIndex::build_part(config.clone(), records, oversized.clone());
    let resolution = index.into_resolution();
    let clusters = resolution
        .clusters
        .into_iter()
        .filter(|c| c.records().any(|r| in_scope.contains(r)))
        .collect();
    let review = resolution
        .review
        .into_iter()
        .filter(|c| in_scope.contains(&c.record) || in_scope.contains(&c.other))
        .collect();
    (clusters, review)
}

/// Prepares every live (not deleted upstream) canonical record a chunk at a time on every
/// core (while the next chunk is read and the last stored) and stores it (`link_record`),
/// rids in record order. Returns the number stored.
fn store_records(tx: &Connection, config: &MatchConfig) -> Result<u32> {
    type Row = (String, String, String, String);
    let deleted = deleted_upstream(tx)?;
    let mut stmt = tx.prepare(
        "SELECT source, external_id, kind, values_json FROM canonical_record
         ORDER BY source, external_id",
    )?;
    let mut insert = tx.prepare(
        "INSERT INTO link_record (rid, source, external_id, lacks_birth_date, keys, kind, features)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut rid = 0u32;
    let mut store = |prepared: Vec<Prepared>| -> Result<()> {
        for p in prepared {
            rid += 1;
            insert.execute(params![
                rid,
                p.record().source,
                p.record().external_id,
                p.lacks_birth_date(),
                encode_keys(p.keys()),
                p.kind().as_str(),
                p.encode()
            ])?;
        }
        Ok(())
    };
    std::thread::scope(|scope| -> Result<()> {
        let (to_prepare, read) = std::sync::mpsc::sync_channel::<Vec<Row>>(1);
        let (to_store, prepared) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(1);
        scope.spawn(move || {
            for chunk in read {
                let ready = prepare_all(config, &chunk, |(source, external_id, kind, values)| {
                    input_record(source, external_id, kind, values)
                });
                if to_store.send(ready).is_err() {
                    break;
                }
            }
        });
        let mut rows = stmt.query([])?;
        let mut chunk: Vec<Row> = Vec::with_capacity(PREPARE_CHUNK);
        let mut in_flight = 0;
        loop {
            let row = rows.next()?;
            let done = row.is_none();
            if let Some(r) = row {
                let (source, external_id): (String, String) = (r.get(0)?, r.get(1)?);
                if !deleted
                    .get(&source)
                    .is_some_and(|ids| ids.contains(&external_id))
                {
                    chunk.push((source, external_id, r.get(2)?, r.get(3)?));
                }
            }
            if chunk.len() == PREPARE_CHUNK || (done && !chunk.is_empty()) {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(PREPARE_CHUNK));
                if to_prepare.send(full).is_err() {
                    break;
                }
                in_flight += 1;
                if in_flight == 2 {
                    store(prepared.recv()?)?;
                    in_flight -= 1;
                }
            }
            if done {
                break;
            }
        }
        drop(to_prepare);
        for ready in prepared {
            store(ready)?;
        }
        Ok(())
    })?;
    Ok(rid)
}

/// Writes `link_key` in key order, a range of keys at a time (each range read back from
/// `link_record.keys`, sorted and written); returns the blocks too large to compare.
fn write_blocks(tx: &Connection, config: &MatchConfig, entries_per_pass: i64) -> Result<KeySet> {
    let total: i64 = tx.query_row(
        "SELECT coalesce(sum(length(keys)), 0) / 9 FROM link_record",
        [],
        |r| r.get(0),
    )?;
    let passes = i128::from(total / entries_per_pass.max(1) + 1);
    let span = (i128::from(i64::MAX) - i128::from(i64::MIN) + 1) / passes;
    let mut oversized = KeySet::default();
    let mut read = tx.prepare("SELECT rid, lacks_birth_date, keys FROM link_record")?;
    let mut rows: Vec<[i64; 4]> = Vec::new();
    for pass in 0..passes {
        let from = i128::from(i64::MIN) + pass * span;
        let to = if pass + 1 == passes {
            i128::from(i64::MAX) + 1
        } else {
            from + span
        };
        let mut entries: Vec<KeyEntry> =
            Vec::with_capacity(usize::try_from(total / passes as i64).unwrap_or_default());
        let mut stored = read.query([])?;
        while let Some(r) = stored.next()? {
            let (rid, lacks_birth_date): (u32, bool) = (r.get(0)?, r.get(1)?);
            let keys = decode_keys(r.get_ref(2)?.as_blob()?)
                .with_context(|| format!("link_record {rid}"))?;
            entries.extend(
                keys.into_iter()
                    .filter(|k| (from..to).contains(&i128::from(k.hash as i64)))
                    .map(|k| KeyEntry {
                        key: k.hash as i64,
                        rid,
                        lacks_birth_date,
                        filtered: k.filtered,
                    }),
            );
        }
        entries.sort_unstable_by_key(|e| (e.key, e.rid));
        for members in entries.chunk_by(|x, y| x.key == y.key) {
            let (key, size) = block_size(members);
            if size.oversized(config) {
                oversized.insert(key.hash);
            }
            rows.extend(members.iter().map(|m| {
                [
                    m.key,
                    i64::from(m.rid),
                    i64::from(m.lacks_birth_date),
                    i64::from(m.filtered),
                ]
            }));
            if rows.len() >= INSERT_CHUNK {
                insert_rows(tx, "link_key", &rows)?;
                rows.clear();
            }
        }
    }
    insert_rows(tx, "link_key", &rows)?;
    Ok(oversized)
}

/// A block's key, from its members.
fn block_key(members: &[KeyEntry]) -> KeyOf {
    KeyOf {
        hash: members[0].key as u64,
        filtered: members[0].filtered,
    }
}

/// A block's key and size, from its members.
fn block_size(members: &[KeyEntry]) -> (KeyOf, BlockSize) {
    let key = block_key(members);
    let size = BlockSize {
        members: members.len() as u64,
        lacking_birth_date: members.iter().filter(|m| m.lacks_birth_date).count() as u64,
        filtered: key.filtered,
    };
    (key, size)
}

/// Scores every block that has a pair to compare, reading `link_key` in key order; a batch
/// of blocks is scored on every core while the next is read. Returns the kept pairs (sorted)
/// and the number of pairs compared.
fn score_blocks(
    tx: &Connection,
    config: &MatchConfig,
    oversized: &KeySet,
    score_batch_members: usize,
) -> Result<(Vec<KeptPair>, u64)> {
    std::thread::scope(|scope| -> Result<(Vec<KeptPair>, u64)> {
        let (to_score, ready) = std::sync::mpsc::sync_channel::<ScoreBatch>(0);
        let scorer = scope.spawn(move || -> Result<(Vec<KeptPair>, u64)> {
            let (mut kept, mut compared) = (Vec::new(), 0);
            for batch in ready {
                compared += batch.score(config, oversized, &mut kept)?;
            }
            Ok((kept, compared))
        });
        // The batch's members, block after block; a block is a range of them.
        let mut members: Vec<KeyEntry> = Vec::with_capacity(score_batch_members);
        let mut blocks: Vec<(KeyOf, std::ops::Range<usize>)> = Vec::new();
        let mut block_start = 0;
        let mut read = tx.prepare(
            "SELECT key, rid, lacks_birth_date, filtered FROM link_key ORDER BY key, rid",
        )?;
        let mut rows = read.query([])?;
        loop {
            let row = rows.next()?;
            let entry = row
                .map(|r| -> rusqlite::Result<KeyEntry> {
                    Ok(KeyEntry {
                        key: r.get(0)?,
                        rid: r.get(1)?,
                        lacks_birth_date: r.get(2)?,
                        filtered: r.get(3)?,
                    })
                })
                .transpose()?;
            let block_ends = members.len() > block_start
                && entry.is_none_or(|e| e.key != members[block_start].key);
            if block_ends {
                let block = &members[block_start..];
                let key = block_key(block);
                let to_compare = block.len() > 1
                    && !oversized.contains(&key.hash)
                    && (!key.filtered || block.iter().any(|m| m.lacks_birth_date));
                if to_compare {
                    blocks.push((key, block_start..members.len()));
                    block_start = members.len();
                } else {
                    members.truncate(block_start);
                }
                if members.len() >= score_batch_members || entry.is_none() {
                    let batch = ScoreBatch::read(
                        tx,
                        std::mem::replace(&mut members, Vec::with_capacity(score_batch_members)),
                        std::mem::take(&mut blocks),
                    )?;
                    if to_score.send(batch).is_err() {
                        break;
                    }
                    block_start = 0;
                }
            }
            match entry {
                Some(e) => members.push(e),
                None => break,
            }
        }
        drop(to_score);
        let (mut kept, compared) = scorer
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
        kept.sort_unstable();
        kept.dedup();
        Ok((kept, compared))
    })
}

/// Blocks ready to score: their members block after block, each block a range of them, and
/// the members' stored features.
struct ScoreBatch {
    members: Vec<KeyEntry>,
    blocks: Vec<(KeyOf, std::ops::Range<usize>)>,
    stored: StoredFeatures,
}

impl ScoreBatch {
    /// Reads the members' features from `link_record`.
    fn read(
        tx: &Connection,
        members: Vec<KeyEntry>,
        blocks: Vec<(KeyOf, std::ops::Range<usize>)>,
    ) -> Result<ScoreBatch> {
        let mut rids: Vec<u32> = members.iter().map(|m| m.rid).collect();
        rids.sort_unstable();
        rids.dedup();
        let stored = StoredFeatures::read(tx, rids, Names::Skip)?;
        Ok(ScoreBatch {
            members,
            blocks,
            stored,
        })
    }

    /// Decodes the members once (a record may be in several of the batch's blocks), then
    /// scores the blocks on every core; pushes the kept pairs, returns the number compared.
    fn score(
        self,
        config: &MatchConfig,
        oversized: &KeySet,
        kept: &mut Vec<KeptPair>,
    ) -> Result<u64> {
        let ScoreBatch {
            members,
            blocks,
            stored,
        } = self;
        let records = stored.decode_all()?;
        let rids = stored.rids;
        let of = |rid: u32| rids.binary_search(&rid).ok().map(|i| &records[i]);
        let results = parallel_map(&blocks, |(key, range)| {
            let members: Vec<(u32, &Prepared)> = members[range.clone()]
                .iter()
                .filter_map(|m| Some((m.rid, of(m.rid)?)))
                .collect();
            let mut found = Vec::new();
            let compared = score_block(config, oversized, *key, &members, &mut found);
            (found, compared)
        });
        let mut compared = 0;
        for (found, n) in results {
            kept.extend(found);
            compared += n;
        }
        Ok(compared)
    }
}

/// Writes `link_edge`: each pair in both directions, in (rid, other) order.
fn write_pairs(tx: &Connection, pairs: &[KeptPair]) -> Result<()> {
    let directed = |from: u32, to: u32, strong: bool| {
        (u64::from(from) << 32) | (u64::from(to) << 1) | u64::from(strong)
    };
    let mut edges: Vec<u64> = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        edges.push(directed(p.a, p.b, p.strong));
        edges.push(directed(p.b, p.a, p.strong));
    }
    edges.sort_unstable();
    for chunk in edges.chunks(INSERT_CHUNK) {
        let rows: Vec<[i64; 3]> = chunk
            .iter()
            .map(|e| {
                [
                    (e >> 32) as i64,
                    ((e & 0xffff_ffff) >> 1) as i64,
                    (e & 1) as i64,
                ]
            })
            .collect();
        insert_rows(tx, "link_edge", &rows)?;
    }
    Ok(())
}

/// The records grouped into components: joined by a pair clustering reads (see
/// `link_state`) or by a previous person. A record's other kept pairs are review-only: they
/// lead to its part's rim.
struct Components {
    /// Rids, component by component, components in order of their smallest rid.
    rids: Vec<u32>,
    /// Where each component starts in `rids`, then `rids.len()`.
    starts: Vec<usize>,
    review_only: ReviewOnly,
}

impl Components {
    fn of(tx: &Connection, records: u32, pairs: &[KeptPair]) -> Result<Components> {
        let mut uf = UnionFind::new(records as usize + 1);
        for p in pairs.iter().filter(|p| p.strong) {
            uf.join(p.a as usize, p.b as usize);
        }
        let mut stmt = tx.prepare(
            "SELECT r.rid, l.person_id FROM person_link l
             JOIN link_record r ON r.source = l.source AND r.external_id = l.external_id
             ORDER BY l.person_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut last: Option<(i64, u32)> = None;
        while let Some(r) = rows.next()? {
            let (rid, person): (u32, i64) = (r.get(0)?, r.get(1)?);
            if let Some((p, other)) = last
                && p == person
            {
                uf.join(other as usize, rid as usize);
            }
            last = Some((person, rid));
        }
        // Keyed by (the component's smallest rid, rid): rids visited in ascending order
        // meet each component first at its smallest.
        let mut smallest = vec![0u32; records as usize + 1];
        let mut keyed: Vec<u64> = Vec::with_capacity(records as usize);
        for rid in 1..=records {
            let root = uf.find(rid as usize);
            if smallest[root] == 0 {
                smallest[root] = rid;
            }
            keyed.push((u64::from(smallest[root]) << 32) | u64::from(rid));
        }
        drop(uf);
        drop(smallest);
        keyed.sort_unstable();
        let mut starts = Vec::new();
        let mut rids = Vec::with_capacity(keyed.len());
        for (i, k) in keyed.iter().enumerate() {
            if i == 0 || keyed[i - 1] >> 32 != k >> 32 {
                starts.push(i);
            }
            rids.push(*k as u32);
        }
        starts.push(rids.len());
        Ok(Components {
            rids,
            starts,
            review_only: ReviewOnly::of(records, pairs),
        })
    }

    /// A part's records, then its rim: records one review-only pair away, loaded so that
    /// review pairs and runners-up come out whole (their own clusters are another part's).
    fn with_rim(&self, part: &[u32]) -> Vec<u32> {
        let in_part: HashSet<u32> = part.iter().copied().collect();
        let mut rim: Vec<u32> = part
            .iter()
            .flat_map(|rid| self.review_only.others_of(*rid))
            .copied()
            .filter(|rid| !in_part.contains(rid))
            .collect();
        rim.sort_unstable();
        rim.dedup();
        [part, &rim].concat()
    }

    /// Whole components, gathered until a part holds at least `records` records.
    fn parts(&self, records: usize) -> impl Iterator<Item = &[u32]> {
        let mut at = 0;
        let mut bounds = Vec::new();
        for w in self.starts.windows(2) {
            if w[1] - at >= records.max(1) {
                bounds.push((at, w[1]));
                at = w[1];
            }
        }
        if at < self.rids.len() {
            bounds.push((at, self.rids.len()));
        }
        bounds.into_iter().map(|(from, to)| &self.rids[from..to])
    }
}

/// Each record's review-only pairs (those clustering does not read), as lists of the other
/// records: `others[starts[rid]..starts[rid + 1]]`.
struct ReviewOnly {
    starts: Vec<u32>,
    others: Vec<u32>,
}

impl ReviewOnly {
    fn of(records: u32, pairs: &[KeptPair]) -> ReviewOnly {
        let review_only = || pairs.iter().filter(|p| !p.strong);
        let mut starts = vec![0u32; records as usize + 2];
        for p in review_only() {
            starts[p.a as usize + 1] += 1;
            starts[p.b as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut others = vec![0u32; starts[starts.len() - 1] as usize];
        for p in review_only() {
            for (from, to) in [(p.a, p.b), (p.b, p.a)] {
                others[next[from as usize] as usize] = to;
                next[from as usize] += 1;
            }
        }
        ReviewOnly { starts, others }
    }

    fn others_of(&self, rid: u32) -> &[u32] {
        let (from, to) = (self.starts[rid as usize], self.starts[rid as usize + 1]);
        &self.others[from as usize..to as usize]
    }
}

/// Removes the links of records that are no longer linked (deleted upstream, or no longer
/// mapped); their persons are re-materialised.
fn remove_links_of_unlinked(
    tx: &Connection,
    affected: &mut BTreeSet<i64>,
    outcome: &mut LinkOutcome,
) -> Result<()> {
    let gone: Vec<(String, String, i64)> = tx
        .prepare(
            "SELECT l.source, l.external_id, l.person_id FROM person_link l
             WHERE NOT EXISTS (SELECT 1 FROM link_record r
                               WHERE r.source = l.source AND r.external_id = l.external_id)",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete =
        tx.prepare_cached("DELETE FROM person_link WHERE source = ?1 AND external_id = ?2")?;
    for (source, external_id, person) in gone {
        delete.execute(params![source, external_id])?;
        affected.insert(person);
        outcome.links_removed += 1;
    }
    Ok(())
}

/// Whether records are loaded with their names (source, external id): scoring needs only
/// their features.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    Read,
    Skip,
}

/// Stored records as read from `link_record`, in the order asked for, their features still
/// encoded: the connection's thread only copies bytes, and the thread that uses the records
/// decodes them.
struct StoredFeatures {
    rids: Vec<u32>,
    records: Vec<RecordRef>,
    kinds: Vec<SourceKind>,
    features: Chunks,
}

/// Byte strings back to back in chunks of a fixed size, none split across two: memory is the
/// bytes themselves, not a doubling buffer's slack or an allocation each.
#[derive(Default)]
struct Chunks {
    chunks: Vec<Vec<u8>>,
    /// Each string's chunk and range in it.
    spans: Vec<(u32, std::ops::Range<u32>)>,
}

impl Chunks {
    const CHUNK_BYTES: usize = 1 << 16;

    fn push(&mut self, bytes: &[u8]) {
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() + bytes.len() > c.capacity())
        {
            self.chunks
                .push(Vec::with_capacity(Self::CHUNK_BYTES.max(bytes.len())));
        }
        let (at, chunk) = (
            self.chunks.len() - 1,
            self.chunks.last_mut().expect("pushed"),
        );
        let from = chunk.len();
        chunk.extend_from_slice(bytes);
        self.spans
            .push((at as u32, from as u32..chunk.len() as u32));
    }

    fn get(&self, i: usize) -> &[u8] {
        let (at, range) = &self.spans[i];
        &self.chunks[*at as usize][range.start as usize..range.end as usize]
    }
}

impl StoredFeatures {
    /// Reads the records `rids` (with their names if asked: scoring needs only features).
    fn read(tx: &Connection, rids: Vec<u32>, names: Names) -> Result<StoredFeatures> {
        let mut read = tx.prepare_cached(match names {
            Names::Read => {
                "SELECT kind, features, source, external_id FROM link_record WHERE rid = ?1"
            }
            Names::Skip => "SELECT kind, features FROM link_record WHERE rid = ?1",
        })?;
        let mut stored = StoredFeatures {
            records: Vec::with_capacity(if names == Names::Read { rids.len() } else { 0 }),
            kinds: Vec::with_capacity(rids.len()),
            features: Chunks::default(),
            rids: Vec::new(),
        };
        for rid in &rids {
            read.query_row([rid], |r| {
                if names == Names::Read {
                    stored.records.push(RecordRef::new(
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ));
                }
                let kind = r.get_ref(0)?.as_str()?.parse::<SourceKind>().ok();
                stored.features.push(r.get_ref(1)?.as_blob()?);
                Ok(kind)
            })?
            .map(|kind| stored.kinds.push(kind))
            .with_context(|| format!("link_record {rid}: its stored kind is not known"))?;
        }
        stored.rids = rids;
        Ok(stored)
    }

    /// The record at `i` in the order read.
    fn decode_at(&self, i: usize) -> Result<Prepared> {
        let record = self
            .records
            .get(i)
            .cloned()
            .unwrap_or_else(|| RecordRef::new("", ""));
        Prepared::decode(record, self.kinds[i], self.features.get(i)).with_context(|| {
            format!(
                "link_record {}: its stored features cannot be read",
                self.rids[i]
            )
        })
    }

    /// Every record, in the order read.
    fn decode_all(&self) -> Result<Vec<Prepared>> {
        (0..self.rids.len()).map(|i| self.decode_at(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::identity::tests::dataset;
    use crate::identity::{InputRecord, resolve};
    use crate::person::link_state::tests::{default_and_low_cap, delete, linked_tables, put};

    fn pair_text(a: &RecordRef, b: &RecordRef) -> String {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        format!(
            "{}/{} {}/{}",
            x.source, x.external_id, y.source, y.external_id
        )
    }

    /// What linking every record at once in memory gives, with each person named by its
    /// smallest record: links, runners-up, review pairs and kept pairs.
    fn in_memory(config: &MatchConfig, records: &[InputRecord]) -> Vec<String> {
        let mut out = Vec::new();
        let resolution = resolve(config, records.to_vec());
        for c in &resolution.clusters {
            let anchor = &c.members[0].record;
            for m in &c.members {
                let (rule, score) = match &m.link {
                    Some(l) => (l.rule.as_str(), Some(l.score)),
                    None if c.members.len() == 1 => ("single", None),
                    None => ("anchor", None),
                };
                out.push(format!(
                    "link {} {anchor:?} {rule} {score:?}",
                    pair_text(&m.record, &m.record)
                ));
            }
            for r in &c.runners_up {
                out.push(format!(
                    "runner_up {anchor:?} {:?} {:?} {} {}",
                    r.record,
                    r.other,
                    r.score,
                    r.reason.as_str()
                ));
            }
        }
        for r in &resolution.review {
            out.push(format!("review {:?} {:?} {}", r.record, r.other, r.score));
        }
        let index = LinkIndex::build(config.clone(), records.to_vec());
        let refs: Vec<RecordRef> = index.records().map(|(_, r)| r.clone()).collect();
        index.kept_pairs(|a, b, strong| {
            out.push(format!(
                "pair {} {strong}",
                pair_text(&refs[a as usize], &refs[b as usize])
            ));
        });
        out.sort();
        out
    }

    /// Rows of two records (four columns) and a value.
    fn record_pairs<T: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
    ) -> Vec<(RecordRef, RecordRef, T)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| {
                Ok((
                    RecordRef::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    RecordRef::new(r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                    r.get(4)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The same, as the store holds it.
    fn stored(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        let links: Vec<(RecordRef, i64, String, Option<f64>)> = conn
            .prepare("SELECT source, external_id, person_id, rule, score FROM person_link")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    RecordRef::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut anchor: BTreeMap<i64, RecordRef> = BTreeMap::new();
        for (record, person, _, _) in &links {
            let a = anchor.entry(*person).or_insert_with(|| record.clone());
            if record < a {
                *a = record.clone();
            }
        }
        for (record, person, rule, score) in &links {
            out.push(format!(
                "link {} {:?} {rule} {score:?}",
                pair_text(record, record),
                anchor[person]
            ));
        }
        let runners: Vec<(i64, RecordRef, RecordRef, f64, String)> = conn
            .prepare("SELECT person_id, source, external_id, other_source, other_external_id, score, reason FROM link_runner_up")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    RecordRef::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                    RecordRef::new(r.get::<_, String>(3)?, r.get::<_, String>(4)?),
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (person, record, other, score, reason) in runners {
            out.push(format!(
                "runner_up {:?} {record:?} {other:?} {score} {reason}",
                anchor[&person]
            ));
        }
        let review: Vec<(RecordRef, RecordRef, f64)> = record_pairs(
            conn,
            "SELECT source_a, external_id_a, source_b, external_id_b, score FROM link_review",
        );
        for (record, other, score) in review {
            out.push(format!("review {record:?} {other:?} {score}"));
        }
        let pairs: Vec<(RecordRef, RecordRef, bool)> = record_pairs(
            conn,
            "SELECT a.source, a.external_id, b.source, b.external_id, e.strong FROM link_edge e
             JOIN link_record a ON a.rid = e.rid JOIN link_record b ON b.rid = e.other",
        );
        for (a, b, strong) in pairs.iter().filter(|(a, b, _)| a < b) {
            out.push(format!("pair {} {strong}", pair_text(a, b)));
        }
        out.sort();
        out
    }

    /// A full link holding `part_records` records at a time, and (below 4096) a few dozen
    /// block memberships and block members at a time.
    fn link_in_parts(
        conn: &mut Connection,
        config: &MatchConfig,
        part_records: usize,
    ) -> LinkOutcome {
        let limits = match part_records {
            4096.. => Limits::DEFAULT,
            _ => Limits {
                part_records,
                entries_per_pass: 40 + part_records as i64,
                score_batch: 20 + part_records,
            },
        };
        let tx = conn.transaction().unwrap();
        let mut outcome = LinkOutcome::default();
        link_all(&tx, config, &Policy::default(), limits, &mut outcome).unwrap();
        tx.execute("DELETE FROM relink_queue", []).unwrap();
        tx.commit().unwrap();
        outcome
    }

    /// Scored a block at a time from the store and linked a part at a time, the store holds
    /// exactly what linking every record at once in memory gives — whatever the part size,
    /// with blocks too large to compare and without.
    #[test]
    fn a_full_link_in_parts_writes_what_linking_all_at_once_gives() {
        let data = dataset(600, 5);
        for config in default_and_low_cap() {
            let expected = in_memory(&config, &data.records);
            assert!(expected.iter().any(|r| r.starts_with("review")));
            assert!(expected.iter().any(|r| r.starts_with("runner_up")));
            assert!(expected.iter().any(|r| r.contains(" anchor ")));
            for part_records in [1, 7, 4096] {
                let dir = tempfile::tempdir().unwrap();
                let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
                for r in &data.records {
                    put(&conn, r);
                }
                let outcome = link_in_parts(&mut conn, &config, part_records);
                assert_eq!(outcome.records_linked, data.records.len());
                assert_eq!(
                    stored(&conn),
                    expected,
                    "part size {part_records}, {config:?}"
                );
            }
        }
    }

    /// A full link over persons already stored (new settings split some, records deleted
    /// upstream leave) gives every person the same id however it is split into parts: a
    /// part holds whole previous persons.
    #[test]
    fn persons_keep_their_ids_whatever_the_part_size() {
        let data = dataset(400, 9);
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        for r in &data.records {
            put(&conn, r);
        }
        link_in_parts(&mut conn, &MatchConfig::default(), 4096);
        let person_of = |conn: &Connection| -> HashMap<RecordRef, i64> {
            conn.prepare("SELECT source, external_id, person_id FROM person_link")
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        RecordRef::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        r.get(2)?,
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let before = person_of(&conn);
        let gone: Vec<&RecordRef> = data.records.iter().step_by(37).map(|r| &r.record).collect();
        for r in &gone {
            delete(&conn, r);
        }
        let stricter = MatchConfig {
            max_cluster_size: 2,
            ..MatchConfig::default()
        };
        let fresh_from = next_person_id(&conn).unwrap();
        let mut results = Vec::new();
        for part_records in [1, 3, 4096] {
            let path = dir.path().join(format!("copy{part_records}.db"));
            conn.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
                .unwrap();
            let mut copy = crate::store::open(&path).unwrap();
            let outcome = link_in_parts(&mut copy, &stricter, part_records);
            assert_eq!(outcome.links_removed, gone.len());
            let after = person_of(&copy);
            assert_eq!(after.len(), data.records.len() - gone.len());
            let mut parts_of: HashMap<i64, HashSet<i64>> = HashMap::new();
            for (record, person) in &after {
                parts_of.entry(before[record]).or_default().insert(*person);
            }
            let split = parts_of.values().filter(|p| p.len() > 1).count();
            assert!(split > 5, "the stricter settings split {split} persons");
            // A person kept from before keeps its id; a new one (a split-off part) is named by
            // its smallest record: new ids are numbered in the order the parts are linked.
            let mut smallest: HashMap<i64, &RecordRef> = HashMap::new();
            for (record, person) in &after {
                let s = smallest.entry(*person).or_insert(record);
                if record < *s {
                    *s = record;
                }
            }
            let mut persons: Vec<String> = after
                .iter()
                .map(|(record, person)| match *person < fresh_from {
                    true => format!("{record:?} kept {person}"),
                    false => format!("{record:?} new {:?}", smallest[person]),
                })
                .collect();
            persons.sort();
            let others: Vec<String> = linked_tables(&copy)
                .into_iter()
                .filter(|row| {
                    !row.starts_with("Text(\"link\")")
                        && !row.starts_with("Text(\"runner_up\")")
                        && !row.starts_with("Text(\"person\")")
                        && !row.starts_with("Text(\"provenance\")")
                })
                .collect();
            assert!(others.iter().any(|r| r.starts_with("Text(\"review\")")));
            results.push((persons, others));
        }
        assert!(results[2].0.iter().any(|r| r.contains(" new ")));
        assert_eq!(results[0], results[2]);
        assert_eq!(results[1], results[2]);
    }

    /// Strings come back whole and in order, across chunk boundaries and larger than a chunk.
    #[test]
    fn chunks_keep_each_string_whole() {
        let strings: Vec<Vec<u8>> = (0..3000usize)
            .map(|i| {
                vec![
                    (i % 251) as u8;
                    if i == 1500 {
                        Chunks::CHUNK_BYTES + 7
                    } else {
                        i % 700
                    }
                ]
            })
            .collect();
        let mut chunks = Chunks::default();
        for s in &strings {
            chunks.push(s);
        }
        assert!(chunks.chunks.len() > 2);
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(chunks.get(i), &s[..], "string {i}");
        }
    }

    /// A stored record whose features cannot be read is an error naming it, not a record
    /// linked on empty features; a readable one loads with or without its names.
    #[test]
    fn unreadable_stored_features_are_an_error_naming_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let record = &dataset(20, 1).records[0];
        let prepared = Prepared::new(record, MatchConfig::default().blocking());
        let insert = |rid: i64, features: Vec<u8>| {
            conn.execute(
                "INSERT INTO link_record (rid, source, external_id, lacks_birth_date, keys, kind, features)
                 VALUES (?1, ?2, ?3, 0, x'', ?4, ?5)",
                params![rid, format!("s{rid}"), record.record.external_id, record.kind.as_str(), features],
            )
            .unwrap();
        };
        insert(7, prepared.encode());
        let mut damaged = prepared.encode();
        damaged[0] = 0;
        insert(8, damaged);
        let load =
            |rids: &[u32], names| StoredFeatures::read(&conn, rids.to_vec(), names)?.decode_all();
        let named = load(&[7], Names::Read).unwrap();
        assert_eq!(
            named[0].record(),
            &RecordRef::new("s7", &record.record.external_id)
        );
        assert_eq!(
            named[0].keys().collect::<Vec<_>>(),
            prepared.keys().collect::<Vec<_>>()
        );
        let nameless = load(&[7], Names::Skip).unwrap();
        assert_eq!(nameless[0].record(), &RecordRef::new("", ""));
        let Err(err) = load(&[7, 8], Names::Skip) else {
            panic!("damaged features were read");
        };
        assert!(format!("{err:#}").contains("link_record 8"), "{err:#}");
        conn.execute(
            "UPDATE link_record SET kind = 'no_such_kind' WHERE rid = 7",
            [],
        )
        .unwrap();
        let Err(err) = load(&[7], Names::Read) else {
            panic!("a record of an unknown kind was read");
        };
        assert!(
            format!("{err:#}").contains("link_record 7: its stored kind is not known"),
            "{err:#}"
        );
    }
}

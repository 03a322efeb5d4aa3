//! One pass over persons and their linked records in person order, the records' values parsed
//! and each person processed on worker threads, the results handed back in person order.
//! Shared by materialising many persons after a large link and by `plan`: both are a pure
//! function of one person's records, and their cost is parsing and survivorship, which this
//! spreads over the cores while the calling thread reads (and writes) SQLite.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, mpsc};

use anyhow::Result;
use rusqlite::Connection;

use super::materialize::values_from_json;
use super::survivorship::Observation;
use crate::model::CanonicalValues;
use crate::source::kind::SourceKind;

/// One link of a person with what the store holds for its record.
#[derive(Debug)]
pub struct LinkedRecord {
    pub source: String,
    pub external_id: String,
    pub kind: String,
    /// `None` when the record has no canonical form.
    pub values: Option<CanonicalValues>,
    /// `canonical_record.mapped_at`.
    pub mapped_at: Option<String>,
    /// The content hash of the stored record while it is live (not deleted upstream); read
    /// only when asked for.
    pub live_hash: Option<String>,
}

impl LinkedRecord {
    /// The record as survivorship reads it: only a record with a canonical form and a known
    /// kind is an observation.
    pub fn into_observation(self) -> Option<Observation> {
        Some(Observation {
            kind: self.kind.parse::<SourceKind>().ok()?,
            values: self.values?,
            source: self.source,
            external_id: self.external_id,
            observed_at: self.mapped_at.unwrap_or_default(),
        })
    }
}

/// What to read besides the links and canonical values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    CanonicalOnly,
    WithLiveHash,
}

/// Source → external ids of the records deleted upstream.
pub type DeletedUpstream = HashMap<String, HashSet<String>>;

/// The records deleted upstream, from their partial index: few, and found without visiting
/// the kilobyte `source_record` row of every live record.
pub fn deleted_upstream(conn: &Connection) -> Result<DeletedUpstream> {
    let mut deleted = DeletedUpstream::new();
    let mut stmt = conn.prepare(
        "SELECT source, external_id FROM source_record INDEXED BY source_record_deleted
         WHERE deleted_at IS NOT NULL",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
        let (source, external_id) = row?;
        deleted.entry(source).or_default().insert(external_id);
    }
    Ok(deleted)
}

/// Persons per batch handed to a worker.
const PERSONS_PER_BATCH: usize = 256;

struct RawLink {
    source: String,
    external_id: String,
    kind: String,
    values_json: Option<String>,
    mapped_at: Option<String>,
    live_hash: Option<String>,
}

type Batch = Vec<(i64, Vec<RawLink>)>;

/// Calls `work` for every person with links (or only those in `only`), with its records in
/// (source, external id) order, on worker threads; `sink` gets each result on the calling
/// thread, in person order. Memory is bounded by the batches in flight.
pub fn for_each_person<T, W, S>(
    conn: &Connection,
    read: Read,
    only: Option<&BTreeSet<i64>>,
    work: W,
    mut sink: S,
) -> Result<()>
where
    T: Send,
    W: Fn(i64, Vec<LinkedRecord>) -> T + Sync,
    S: FnMut(i64, T) -> Result<()>,
{
    // A canonical row's content hash is its stored record's (both change in one write), so
    // the live hash is read from it; the few records deleted upstream come from a partial
    // index. Reading source_record itself would visit a row of kilobytes per link.
    let sql = match read {
        Read::CanonicalOnly => {
            "SELECT l.person_id, l.source, l.external_id, l.kind, c.values_json, c.mapped_at, NULL
             FROM person_link l
             LEFT JOIN canonical_record c ON c.source = l.source AND c.external_id = l.external_id
             ORDER BY l.person_id, l.source, l.external_id"
        }
        Read::WithLiveHash => {
            "SELECT l.person_id, l.source, l.external_id, l.kind, c.values_json, c.mapped_at,
                    c.content_hash
             FROM person_link l
             LEFT JOIN canonical_record c ON c.source = l.source AND c.external_id = l.external_id
             ORDER BY l.person_id, l.source, l.external_id"
        }
    };
    let deleted = if read == Read::WithLiveHash {
        deleted_upstream(conn)?
    } else {
        DeletedUpstream::new()
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (to_workers, from_reader) = mpsc::sync_channel::<(usize, Batch)>(workers * 2);
    let from_reader = Mutex::new(from_reader);
    let (to_reader, results) = mpsc::channel::<(usize, Vec<(i64, T)>)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let (from_reader, to_reader, work) = (&from_reader, to_reader.clone(), &work);
            scope.spawn(move || {
                loop {
                    let next = from_reader.lock().map(|r| r.recv());
                    let Ok(Ok((seq, batch))) = next else { break };
                    let done: Vec<(i64, T)> = batch
                        .into_iter()
                        .map(|(person, links)| (person, work(person, parse(links))))
                        .collect();
                    if to_reader.send((seq, done)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(to_reader);
        let mut ordered = InOrder::default();
        let outcome = (|| -> Result<()> {
            let mut stmt = conn.prepare(sql)?;
            let mut rows = stmt.query([])?;
            let mut batch: Batch = Vec::with_capacity(PERSONS_PER_BATCH);
            let mut sent = 0usize;
            while let Some(r) = rows.next()? {
                let person: i64 = r.get(0)?;
                if only.is_some_and(|o| !o.contains(&person)) {
                    continue;
                }
                let mut link = RawLink {
                    source: r.get(1)?,
                    external_id: r.get(2)?,
                    kind: r.get(3)?,
                    values_json: r.get(4)?,
                    mapped_at: r.get(5)?,
                    live_hash: r.get(6)?,
                };
                if deleted
                    .get(&link.source)
                    .is_some_and(|ids| ids.contains(&link.external_id))
                {
                    link.live_hash = None;
                }
                match batch.last_mut() {
                    Some((p, links)) if *p == person => links.push(link),
                    _ => {
                        if batch.len() == PERSONS_PER_BATCH {
                            to_workers.send((sent, std::mem::take(&mut batch)))?;
                            sent += 1;
                            ordered.drain_ready(&results, &mut sink)?;
                        }
                        batch.push((person, vec![link]));
                    }
                }
            }
            if !batch.is_empty() {
                to_workers.send((sent, batch))?;
                sent += 1;
            }
            drop(to_workers);
            while ordered.next < sent {
                let (seq, done) = results.recv()?;
                ordered.pending.insert(seq, done);
                ordered.emit(&mut sink)?;
            }
            Ok(())
        })();
        // On an error the workers see the channel close and stop.
        outcome
    })
}

/// Results put back in the order their batches were sent.
struct InOrder<T> {
    next: usize,
    pending: BTreeMap<usize, Vec<(i64, T)>>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            next: 0,
            pending: BTreeMap::new(),
        }
    }
}

impl<T> InOrder<T> {
    fn drain_ready(
        &mut self,
        results: &mpsc::Receiver<(usize, Vec<(i64, T)>)>,
        sink: &mut impl FnMut(i64, T) -> Result<()>,
    ) -> Result<()> {
        while let Ok((seq, done)) = results.try_recv() {
            self.pending.insert(seq, done);
        }
        self.emit(sink)
    }

    fn emit(&mut self, sink: &mut impl FnMut(i64, T) -> Result<()>) -> Result<()> {
        while let Some(done) = self.pending.remove(&self.next) {
            self.next += 1;
            for (person, result) in done {
                sink(person, result)?;
            }
        }
        Ok(())
    }
}

fn parse(links: Vec<RawLink>) -> Vec<LinkedRecord> {
    links
        .into_iter()
        .map(|l| LinkedRecord {
            values: l.values_json.as_deref().map(values_from_json),
            source: l.source,
            external_id: l.external_id,
            kind: l.kind,
            mapped_at: l.mapped_at,
            live_hash: l.live_hash,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose persons 1..=n each have `p % 3 + 1` linked records with canonical values.
    fn store(n: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let tx = conn.transaction().unwrap();
        for p in 1..=n {
            tx.execute(
                "INSERT INTO person (person_id, created_at, updated_at) VALUES (?1, 't', 't')",
                [p],
            )
            .unwrap();
            for r in 0..(p % 3 + 1) {
                let id = format!("p{p}r{r}");
                tx.execute(
                    "INSERT INTO person_link (source, external_id, kind, person_id, rule, linked_at)
                     VALUES ('homes', ?1, 'carehq_service_users', ?2, 'anchor', 't')",
                    rusqlite::params![id, p],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO canonical_record (source, external_id, kind, content_hash, mapping_hash, values_json, mapped_at)
                     VALUES ('homes', ?1, 'carehq_service_users', 'h', 'm', ?2, 't')",
                    rusqlite::params![id, format!(r#"{{"given_name":"Ann{p}"}}"#)],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        (dir, conn)
    }

    /// Every person (or every chosen one) once, in person order, with all its records parsed,
    /// across many batches handed to the workers.
    #[test]
    fn persons_come_back_in_order_with_their_records() {
        let n = PERSONS_PER_BATCH as i64 * 3 + 7;
        let (_dir, conn) = store(n);
        let summarise = |person: i64, links: Vec<LinkedRecord>| {
            let names: Vec<bool> = links
                .iter()
                .map(|l| {
                    l.values
                        .as_ref()
                        .and_then(|v| v.get(crate::model::Field::GivenName))
                        == Some(&crate::model::Value::Text(format!("Ann{person}")))
                })
                .collect();
            (links.len(), names.iter().all(|ok| *ok))
        };
        let mut seen = Vec::new();
        for_each_person(
            &conn,
            Read::CanonicalOnly,
            None,
            summarise,
            |p, (len, ok)| {
                seen.push((p, len, ok));
                Ok(())
            },
        )
        .unwrap();
        let expected: Vec<(i64, usize, bool)> =
            (1..=n).map(|p| (p, (p % 3 + 1) as usize, true)).collect();
        assert_eq!(seen, expected);

        let only: BTreeSet<i64> = [2, 300, n].into();
        let mut chosen = Vec::new();
        for_each_person(&conn, Read::WithLiveHash, Some(&only), summarise, |p, _| {
            chosen.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(chosen, vec![2, 300, n]);
    }

    /// An error from the sink stops the pass and is returned; nothing after it is handed on.
    /// The live hash is the stored record's content hash, and none once the record is
    /// deleted upstream (what `plan` must not write to).
    #[test]
    fn the_live_hash_is_absent_for_records_deleted_upstream() {
        let (_dir, conn) = store(3);
        for (id, deleted) in [("p1r0", None), ("p1r1", Some("t")), ("p2r0", None)] {
            conn.execute(
                "INSERT INTO source_record (source, external_id, kind, payload, content_hash, first_seen_at, sighting_stored_at, changed_at, sighting_scan, deleted_at)
                 VALUES ('homes', ?1, 'carehq_service_users', '{}', 'h', 't', 't', 't', 1, ?2)",
                rusqlite::params![id, deleted],
            )
            .unwrap();
        }
        let mut hashes: Vec<(String, Option<String>)> = Vec::new();
        for_each_person(
            &conn,
            Read::WithLiveHash,
            None,
            |_, links| {
                links
                    .into_iter()
                    .map(|l| (l.external_id, l.live_hash))
                    .collect::<Vec<_>>()
            },
            |_, found| {
                hashes.extend(found);
                Ok(())
            },
        )
        .unwrap();
        let live = |id: &str| hashes.iter().find(|h| h.0 == id).unwrap().1.clone();
        assert_eq!(live("p1r0").as_deref(), Some("h"));
        assert_eq!(live("p1r1"), None, "deleted upstream");
        assert_eq!(live("p2r0").as_deref(), Some("h"));
        // Only asked for: materialising reads no hash.
        let mut any = false;
        for_each_person(
            &conn,
            Read::CanonicalOnly,
            None,
            |_, links| links.iter().any(|l| l.live_hash.is_some()),
            |_, found| {
                any |= found;
                Ok(())
            },
        )
        .unwrap();
        assert!(!any);
    }

    #[test]
    fn a_sink_error_stops_the_pass() {
        let n = PERSONS_PER_BATCH as i64 * 4;
        let (_dir, conn) = store(n);
        let mut handed = Vec::new();
        let result = for_each_person(
            &conn,
            Read::CanonicalOnly,
            None,
            |_, links| links.len(),
            |p, _| {
                if p == 300 {
                    anyhow::bail!("cannot write person {p}");
                }
                handed.push(p);
                Ok(())
            },
        );
        assert_eq!(result.unwrap_err().to_string(), "cannot write person 300");
        assert_eq!(handed, (1..300).collect::<Vec<i64>>());
    }
}

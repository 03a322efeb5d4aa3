//! The look-up the parse step makes before mapping a page: which of its records the store
//! already holds mapped, so that a sync over unchanged data maps nothing. Read-only, on a
//! small pool of its own connections, one query per page.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;
use rusqlite::{Connection, params};

use super::StoredRecord;

/// Connections kept open between pages: one per concurrent parse is plenty.
const IDLE_CONNECTIONS: usize = 4;
/// Each connection's page cache, in KiB: with the file mapped (below) it holds only pages
/// read from the WAL, so SQLite's default suffices.
const CACHE_KIB: i64 = 2 * 1024;
/// The look-ups read the database file through a memory map (up to SQLite's built-in cap of
/// about 2 GiB), not through the page cache. Every key costs a few page reads, mostly of
/// `canonical_record` leaves in key order rather than page order; through the page cache
/// each read is a `pread` and takes the process-wide page-cache mutex (rusqlite's bundled
/// SQLite is built with SQLITE_ENABLE_MEMORY_MANAGEMENT, so all connections share one cache
/// group), contending with the writer on every page. Mapped, a no-change sync of 185k records
/// spent about a fifth less CPU than mapping every record; through the cache, hardly less.
/// The mapped pages are the OS's file cache: they count in RSS but are not the heap.
const MMAP_BYTES: i64 = 2 << 30;

/// Finds the records of a page that need no mapping: stored live (not marked deleted) with
/// the same content hash, and holding a canonical row or a mapping failure made by the
/// current mapping version. Those are exactly the records the writer would not write a
/// canonical row for. The answer is a snapshot: the writer checks again when it writes.
pub struct AlreadyMapped {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl AlreadyMapped {
    pub fn new(path: &Path) -> AlreadyMapped {
        AlreadyMapped {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// For each record of `records` (in order), whether it needs no mapping.
    pub fn unchanged(
        &self,
        source: &str,
        mapping_hash: &str,
        records: &[StoredRecord],
    ) -> Result<Vec<bool>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.take()?;
        let found = stored_hashes(&conn, source, mapping_hash, records);
        self.give_back(conn);
        let found = found?;
        Ok(records
            .iter()
            .map(|r| found.get(r.external_id.as_str()) == Some(&r.content_hash))
            .collect())
    }

    /// Whether the store holds any record of `source` mapped by this mapping version: if
    /// not (a first backfill, a new mapping), every record needs mapping and the look-ups
    /// per page would find nothing.
    pub fn holds_any(&self, source: &str, mapping_hash: &str) -> Result<bool> {
        let conn = self.take()?;
        let found = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM canonical_record WHERE source = ?1 AND mapping_hash = ?2)
                     OR EXISTS (SELECT 1 FROM mapping_failure WHERE source = ?1 AND mapping_hash = ?2)",
            )
            .and_then(|mut s| s.query_row(params![source, mapping_hash], |r| r.get(0)));
        self.give_back(conn);
        Ok(found?)
    }

    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = super::open_read_only(&self.path)?;
                conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
                conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
                Ok(conn)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }
}

/// The stored content hash of each of these records that is live and mapped (or failed)
/// by `mapping_hash`; one query, so one consistent snapshot.
fn stored_hashes(
    conn: &Connection,
    source: &str,
    mapping_hash: &str,
    records: &[StoredRecord],
) -> Result<HashMap<String, String>> {
    let keys = serde_json::to_string(
        &records
            .iter()
            .map(|r| r.external_id.as_str())
            .collect::<Vec<_>>(),
    )?;
    // The same test as the writer's: `COALESCE` because at most one of the two rows exists.
    let mut stmt = conn.prepare_cached(
        "SELECT s.external_id, s.content_hash
         FROM source_record s
         LEFT JOIN canonical_record c ON c.source = s.source AND c.external_id = s.external_id
         LEFT JOIN mapping_failure f ON f.source = s.source AND f.external_id = s.external_id
         WHERE s.source = ?1 AND s.external_id IN (SELECT value FROM json_each(?2))
           AND s.deleted_at IS NULL
           AND COALESCE(c.mapping_hash, f.mapping_hash) = ?3",
    )?;
    let rows = stmt.query_map(params![source, keys, mapping_hash], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::OptionalExtension;

    use super::*;
    use crate::source::content_hash;
    use crate::source::kind::SourceKind;
    use crate::store::{CanonicalForm, PageCounts, PageWrite, Store};
    use crate::sync::mapping::{KindMapping, Mappings, map_payload};

    const SOURCE: &str = "care360";

    /// A fresh store, the test mapping, and a look-up on the store (keep the folder alive).
    fn fixture() -> (tempfile::TempDir, Store, KindMapping, AlreadyMapped) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let lookup = AlreadyMapped::new(&store.path);
        (dir, store, mapping(), lookup)
    }

    fn mapping() -> KindMapping {
        Mappings::builtin()
            .unwrap()
            .for_kind(SourceKind::CarevalidateUsers)
            .unwrap()
            .clone()
    }

    fn payload(email: &str, given: &str) -> String {
        format!(r#"{{"email":"{email}","firstName":"{given}","lastName":"Ng","dob":"1950-02-01"}}"#)
    }

    /// A record as the parse step leaves it: mapped, or marked unchanged.
    fn record(id: &str, payload: String, m: &KindMapping, unchanged: bool) -> StoredRecord {
        StoredRecord {
            external_id: id.into(),
            content_hash: content_hash(&payload),
            canonical: if unchanged {
                CanonicalForm::Unchanged
            } else {
                CanonicalForm::Mapped(map_payload(&m.mapping, &payload))
            },
            payload,
        }
    }

    async fn write(store: &Store, records: Vec<StoredRecord>, m: &KindMapping) -> PageCounts {
        store
            .writer
            .write_page(PageWrite {
                source: Arc::from(SOURCE),
                kind: "carevalidate_users",
                scan_id: 1,
                records,
                mapping: Some(m.clone()),
                checkpoint: None,
            })
            .await
            .unwrap()
            .await
            .unwrap()
            .unwrap()
    }

    /// Another connection can hold SQLite's write lock for a moment (a reader rebuilding a
    /// torn WAL-index header takes it). A page's transaction reads before it writes; begun
    /// deferred, its upgrade to a write failed at once with "database is locked", without
    /// waiting out the busy timeout: the likely cause of a 1M-record bench's failed second
    /// sync (it failed 6.4 s in, under the 10 s timeout, with this message).
    #[tokio::test]
    async fn a_page_waits_for_a_write_lock_held_elsewhere_for_a_moment() {
        let (_dir, store, m, _lookup) = fixture();
        let other = crate::store::open(&store.path).unwrap();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        is_locked.recv().unwrap();
        let id = "a@example.org";
        let counts = write(&store, vec![record(id, payload(id, "Ann"), &m, false)], &m).await;
        holder.join().unwrap();
        assert_eq!((counts.inserted, counts.mapped), (1, 1));
        assert!(stored(&store, id).await.0.is_some());
    }

    /// (content hash, mapping hash, given name) of the canonical row, and whether the record
    /// is queued for linking; the queue is emptied.
    async fn stored(store: &Store, id: &str) -> (Option<(String, String, String)>, bool) {
        let id = id.to_string();
        store
            .writer
            .call(move |conn| {
                let row = conn
                    .query_row(
                        "SELECT content_hash, mapping_hash, json_extract(values_json, '$.given_name')
                         FROM canonical_record WHERE source = ?1 AND external_id = ?2",
                        params![SOURCE, id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let queued = conn.execute(
                    "DELETE FROM relink_queue WHERE source = ?1 AND external_id = ?2",
                    params![SOURCE, id],
                )? == 1;
                conn.execute("DELETE FROM relink_queue", [])?;
                Ok((row, queued))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_live_records_of_the_same_content_and_mapping_version_are_unchanged() {
        let (_dir, store, m, lookup) = fixture();
        let mapped = payload("a@example.org", "Ann");
        let failed = r#"{"firstName":"Bo"}"#.to_string();
        let deleted = payload("d@example.org", "Di");
        write(
            &store,
            vec![
                record("a@example.org", mapped.clone(), &m, false),
                record("b@example.org", failed.clone(), &m, false),
                record("d@example.org", deleted.clone(), &m, false),
            ],
            &m,
        )
        .await;
        store
            .writer
            .call(|conn| {
                conn.execute(
                    "UPDATE source_record SET deleted_at = 'x' WHERE external_id = 'd@example.org'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let page = vec![
            record("a@example.org", mapped.clone(), &m, false),
            // A mapping failure of the current version needs no mapping either.
            record("b@example.org", failed, &m, false),
            record("a@example.org", payload("a@example.org", "Anne"), &m, false),
            record("d@example.org", deleted, &m, false),
            record(
                "new@example.org",
                payload("new@example.org", "Nia"),
                &m,
                false,
            ),
        ];
        assert_eq!(
            lookup.unchanged(SOURCE, &m.hash, &page).unwrap(),
            [true, true, false, false, false]
        );
        // Another mapping version, or another source, holds nothing.
        assert_eq!(
            lookup.unchanged(SOURCE, "another", &page).unwrap(),
            [false; 5]
        );
        assert_eq!(
            lookup.unchanged("elsewhere", &m.hash, &page).unwrap(),
            [false; 5]
        );
        assert!(lookup.unchanged(SOURCE, &m.hash, &[]).unwrap().is_empty());
        // Whether a source's pages are worth looking up at all.
        assert!(lookup.holds_any(SOURCE, &m.hash).unwrap());
        assert!(!lookup.holds_any(SOURCE, "another").unwrap());
        assert!(!lookup.holds_any("elsewhere", &m.hash).unwrap());
    }

    /// Only mapping failures of the current version: still worth looking up.
    #[tokio::test]
    async fn a_source_holding_only_mapping_failures_is_looked_up() {
        let (_dir, store, m, lookup) = fixture();
        assert!(
            !lookup.holds_any(SOURCE, &m.hash).unwrap(),
            "an empty store"
        );
        write(
            &store,
            vec![record(
                "b@example.org",
                r#"{"firstName":"Bo"}"#.to_string(),
                &m,
                false,
            )],
            &m,
        )
        .await;
        assert!(lookup.holds_any(SOURCE, &m.hash).unwrap());
    }

    /// The look-up is a snapshot: a page marked unchanged may reach the writer after an
    /// earlier page changed the record (a record read twice in one scan), after it was
    /// marked deleted, or when it was never stored. The writer then maps it itself, stores
    /// its canonical form and queues it for linking; otherwise it maps nothing.
    #[tokio::test]
    async fn the_writer_maps_a_record_whose_unchanged_mark_went_stale() {
        let (_dir, store, m, lookup) = fixture();
        let id = "a@example.org";
        let v1 = payload(id, "Ann");
        let v2 = payload(id, "Anne");
        write(&store, vec![record(id, v1.clone(), &m, false)], &m).await;
        let _ = stored(&store, id).await;

        // Still current when written: nothing mapped, nothing queued.
        let page = vec![record(id, v1.clone(), &m, false)];
        assert_eq!(lookup.unchanged(SOURCE, &m.hash, &page).unwrap(), [true]);
        let counts = write(&store, vec![record(id, v1.clone(), &m, true)], &m).await;
        assert_eq!((counts.skipped_unchanged, counts.mapped_by_writer), (1, 0));
        assert_eq!((counts.mapped, counts.unchanged), (0, 1));
        assert!(!stored(&store, id).await.1);

        // Looked up while v1 was stored; an earlier page then stored v2.
        assert_eq!(lookup.unchanged(SOURCE, &m.hash, &page).unwrap(), [true]);
        let stale = vec![record(id, v1.clone(), &m, true)];
        write(&store, vec![record(id, v2, &m, false)], &m).await;
        let counts = write(&store, stale, &m).await;
        assert_eq!((counts.skipped_unchanged, counts.mapped_by_writer), (0, 1));
        assert_eq!((counts.mapped, counts.updated), (1, 1));
        let (row, queued) = stored(&store, id).await;
        assert_eq!(
            row,
            Some((content_hash(&v1), m.hash.to_string(), "Ann".to_string()))
        );
        assert!(queued, "a re-mapped record is queued for linking");

        // Marked deleted meanwhile.
        store
            .writer
            .call(|conn| {
                conn.execute("UPDATE source_record SET deleted_at = 'x'", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let counts = write(&store, vec![record(id, v1.clone(), &m, true)], &m).await;
        assert_eq!((counts.mapped_by_writer, counts.mapped), (1, 1));
        assert!(stored(&store, id).await.1);

        // Never stored (or erased) meanwhile.
        let other = "b@example.org";
        let counts = write(
            &store,
            vec![record(other, payload(other, "Bea"), &m, true)],
            &m,
        )
        .await;
        assert_eq!((counts.inserted, counts.mapped_by_writer), (1, 1));
        let (row, queued) = stored(&store, other).await;
        assert_eq!(row.map(|r| r.2), Some("Bea".to_string()));
        assert!(queued);

        // Another mapping version by the time it is written: mapped with that version.
        let newer = KindMapping {
            mapping: m.mapping.clone(),
            hash: Arc::from("newer"),
        };
        let counts = write(&store, vec![record(id, v1, &m, true)], &newer).await;
        assert_eq!((counts.mapped_by_writer, counts.mapped), (1, 1));
        assert_eq!(
            stored(&store, id).await.0.map(|r| r.1),
            Some("newer".to_string())
        );
    }
}

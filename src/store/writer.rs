//! The batched writer: one thread owns the writing connection, fed by a bounded channel.
//! Pages are grouped into transactions of about [`ROWS_PER_TRANSACTION`] rows, and each
//! page's checkpoint is committed in the same transaction as its records.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{insert_or_upsert, now_rfc3339};
use crate::sync::mapping::{KindMapping, map_payload};

const ROWS_PER_TRANSACTION: usize = 1000;
const QUEUE_DEPTH: usize = 64;
/// How long the writer waits for more of a scan's pages to fill a transaction.
const FILL_WAIT: Duration = Duration::from_millis(20);
/// The writer's page cache, in KiB: linking rewrites many persons in one transaction, and a
/// cache much smaller than that transaction spills pages to the WAL and re-reads them.
const CACHE_KIB: i64 = 32 * 1024;
/// Prepared statements kept per connection: the writer, linking and materialising use
/// about forty distinct fixed statements; SQLite's default of 16 would re-prepare them.
const STATEMENT_CACHE: usize = 96;
/// With a checkpointer thread, the writer checkpoints only when the WAL passes this many
/// pages (64 MiB at 8 KiB pages): a backstop that bounds the WAL should the checkpointer lag.
const WAL_BACKSTOP_PAGES: i64 = 8192;

/// One record as it goes into `source_record`, with what the parse step did about its
/// canonical form.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub external_id: String,
    pub payload: String,
    pub content_hash: String,
    pub canonical: CanonicalForm,
}

/// What the parse step did about a record's canonical form. Three cases that must not be
/// confused: no mapping applies, the record was mapped (possibly to a failure), or it was
/// not mapped because the store already held its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalForm {
    /// Nothing to map: the source has no mapping (or the page is read for its ids only).
    /// No canonical row or mapping failure is written.
    NoMapping,
    /// Mapped in the parse step: a canonical form, or a mapping failure with its reason.
    Mapped(Canonical),
    /// Not mapped: when the page was parsed, the store held this record live, with this
    /// content hash, and a canonical row or mapping failure of the page's mapping version
    /// (`AlreadyMapped`). That look-up may be stale by the time the page is written, so the
    /// writer checks again and maps the record itself if it needs a canonical row after all.
    Unchanged,
}

/// A record's canonical form, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canonical {
    Mapped {
        values_json: String,
        problems_json: Option<String>,
    },
    Failed {
        code: &'static str,
        reason: String,
    },
}

/// Where a scan has got to, saved with the page it follows.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub scan_id: i64,
    /// JSON of the next position to read; `None` when the page was the last.
    pub next_position: Option<String>,
    pub pages_done: u64,
    /// Newest `modified` on this page (CareHQ); becomes the watermark when the scan completes.
    pub watermark: Option<String>,
}

/// A page of records for one source, with the checkpoint that follows it.
pub struct PageWrite {
    pub source: Arc<str>,
    pub kind: &'static str,
    pub scan_id: i64,
    pub records: Vec<StoredRecord>,
    /// The source's mapping: its version (hash) is stored with each canonical row, and the
    /// writer maps records marked [`CanonicalForm::Unchanged`] that turn out to need a row.
    pub mapping: Option<KindMapping>,
    /// `None` for records read outside the scan's order (lookups of unseen records).
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Canonical rows written (new or changed content, or a new mapping version).
    pub mapped: u64,
    pub mapping_failures: u64,
    /// Records not mapped at all: the parse step found them unchanged, and the writer
    /// confirmed that their canonical row (or mapping failure) is current.
    pub skipped_unchanged: u64,
    /// Records the parse step found unchanged but whose stored state had moved by the time
    /// they were written (an earlier page of the same scan, say): mapped on the writer.
    pub mapped_by_writer: u64,
}

impl PageCounts {
    pub fn add(&mut self, other: PageCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.mapped += other.mapped;
        self.mapping_failures += other.mapping_failures;
        self.skipped_unchanged += other.skipped_unchanged;
        self.mapped_by_writer += other.mapped_by_writer;
    }
}

/// Counts kept on a `sync_run` row.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunCounts {
    pub pages: u64,
    pub requests: u64,
    pub records_seen: u64,
    pub records: PageCounts,
    pub deleted: u64,
    pub errors: u64,
}

type Exec = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    Page(PageWrite, oneshot::Sender<Result<PageCounts>>),
    Exec(Exec),
}

/// A cheap handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    pub fn spawn(mut conn: Connection) -> Writer {
        // Every transaction here writes, and most read first. Begun deferred, a read's upgrade
        // to a write fails at once when another connection holds the write lock for a moment
        // (SQLite does not wait out the busy timeout there); begun immediate, it waits.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        if let Err(e) = conn.pragma_update(None, "cache_size", -CACHE_KIB) {
            tracing::warn!(error = %e, "cannot enlarge the writer's page cache");
        }
        let checkpointer = Checkpointer::start(&conn);
        if checkpointer.is_some()
            && let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
        {
            tracing::warn!(error = %e, "cannot set the writer's WAL backstop");
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("caresync-writer".into())
            .spawn(move || run(conn, rx, checkpointer))
            .expect("spawning the writer thread");
        Writer { tx }
    }

    /// Queues a page; the returned receiver answers once it is committed.
    pub async fn write_page(
        &self,
        page: PageWrite,
    ) -> Result<oneshot::Receiver<Result<PageCounts>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Page(page, reply))
            .await
            .map_err(|_| anyhow!("the store writer has stopped"))?;
        Ok(rx)
    }

    /// Runs `f` on the writer's connection, after everything queued before it.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Exec = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.tx
            .send(Job::Exec(job))
            .await
            .map_err(|_| anyhow!("the store writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the store writer dropped a request"))?
    }
}

/// Copies committed WAL frames into the database on its own thread and connection, so the
/// writer's commits do not pay for checkpoints (a quarter of its time during a backfill).
/// It writes no data of its own: a checkpoint only moves what the writer committed. Passive
/// checkpoints never block the writer; the writer's own autocheckpoint, set high, stays as a
/// backstop.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// `None` for a database without a file (in memory), or when the second connection
    /// cannot be opened: the writer then checkpoints itself, as SQLite does by default.
    fn start(writer: &Connection) -> Option<Checkpointer> {
        let path = writer.path().filter(|p| !p.is_empty())?.to_owned();
        let conn = match Connection::open(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no checkpointer thread; the writer checkpoints");
                return None;
            }
        };
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        thread::Builder::new()
            .name("caresync-checkpoint".into())
            .spawn(move || {
                // Ends when the writer (the only sender) is gone.
                while woken.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "checkpoint skipped");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { wake })
    }

    /// Asks for a checkpoint after a commit; requests made while one runs are merged.
    fn nudge(&self) {
        let _ = self.wake.try_send(());
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, checkpointer: Option<Checkpointer>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Exec(f) => {
                f(&mut conn);
                if let Some(c) = &checkpointer {
                    c.nudge();
                }
            }
            Job::Page(page, reply) => {
                // A scan's pages come in a stream: wait a moment for the transaction to fill
                // rather than commit a page at a time (each commit rewrites the index pages
                // it touched, so small transactions multiply the bytes written).
                let linger = page
                    .checkpoint
                    .is_some()
                    .then(|| Instant::now() + FILL_WAIT);
                let mut batch = vec![(page, reply)];
                let mut rows = batch[0].0.records.len();
                while rows < ROWS_PER_TRANSACTION {
                    match rx.try_recv() {
                        Ok(Job::Page(page, reply)) => {
                            rows += page.records.len();
                            batch.push((page, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty)
                            if linger.is_some_and(|until| Instant::now() < until) =>
                        {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(_) => break,
                    }
                }
                commit_pages(&mut conn, batch);
                if let Some(c) = &checkpointer {
                    c.nudge();
                }
            }
        }
    }
}

fn commit_pages(
    conn: &mut Connection,
    batch: Vec<(PageWrite, oneshot::Sender<Result<PageCounts>>)>,
) {
    let result = (|| -> Result<Vec<PageCounts>> {
        let tx = conn.transaction()?;
        let now = now_rfc3339();
        let mut all = Vec::with_capacity(batch.len());
        for (page, _) in &batch {
            all.push(write_page(&tx, page, &now)?);
        }
        tx.commit()?;
        Ok(all)
    })();
    match result {
        Ok(counts) => {
            for ((_, reply), c) in batch.into_iter().zip(counts) {
                let _ = reply.send(Ok(c));
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            for (_, reply) in batch {
                let _ = reply.send(Err(anyhow!("store write failed: {message}")));
            }
        }
    }
}

/// A stored record: its record id, content hash, deleted upstream, and the mapping hash of
/// its canonical row and of its mapping failure (at most one of them exists).
type Found = (i64, String, bool, Option<String>, Option<String>);

/// Live records re-mapped per transaction by [`remap_stale`].
const REMAP_CHUNK: i64 = 1000;

/// Brings every live record of `source` to the current version of its mapping, from the
/// stored payloads, once after that version changed: a scan maps only the records it reads
/// (an incremental CareHQ sync reads only what changed upstream). `fresh_full_scan`: the
/// scan that just completed read every record from its first page, so none can be stale.
/// Returns the canonical rows and mapping failures written.
pub fn remap_stale(
    conn: &mut Connection,
    source: &str,
    kind: &'static str,
    mapping: &KindMapping,
    fresh_full_scan: bool,
) -> Result<PageCounts> {
    let mut counts = PageCounts::default();
    let applied: Option<String> = conn
        .query_row(
            "SELECT mapping_hash FROM sync_state WHERE source = ?1",
            [source],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if applied.as_deref() == Some(&*mapping.hash) {
        return Ok(counts);
    }
    let page = PageWrite {
        source: Arc::from(source),
        kind,
        scan_id: 0,
        records: Vec::new(),
        mapping: Some(mapping.clone()),
        checkpoint: None,
    };
    if !fresh_full_scan {
        remap_live(conn, &page, mapping, &mut counts)?;
    }
    conn.execute(
        "UPDATE sync_state SET mapping_hash = ?2 WHERE source = ?1",
        params![source, &*mapping.hash],
    )?;
    Ok(counts)
}

/// Maps the live records of `page.source` not on `mapping`'s version, a chunk per transaction.
fn remap_live(
    conn: &mut Connection,
    page: &PageWrite,
    mapping: &KindMapping,
    counts: &mut PageCounts,
) -> Result<()> {
    let source: &str = &page.source;
    let mut after = 0_i64;
    loop {
        let tx = conn.transaction()?;
        let stale: Vec<(i64, StoredRecord, Stored)> = tx
            .prepare_cached(
                "SELECT s.record_id, s.external_id, s.payload, s.content_hash,
                        c.mapping_hash IS NOT NULL, f.mapping_hash IS NOT NULL
                 FROM source_record s
                 LEFT JOIN canonical_record c ON c.source = s.source AND c.external_id = s.external_id
                 LEFT JOIN mapping_failure f ON f.source = s.source AND f.external_id = s.external_id
                 WHERE s.source = ?1 AND s.record_id > ?2 AND s.deleted_at IS NULL
                   AND COALESCE(c.mapping_hash, f.mapping_hash, '') <> ?3
                 ORDER BY s.record_id LIMIT ?4",
            )?
            .query_map(params![source, after, &*mapping.hash, REMAP_CHUNK], |r| {
                let record = StoredRecord {
                    external_id: r.get(1)?,
                    payload: r.get(2)?,
                    content_hash: r.get(3)?,
                    canonical: CanonicalForm::Unchanged,
                };
                let stored = Stored {
                    record_id: r.get(0)?,
                    canonical: r.get(4)?,
                    failure: r.get(5)?,
                };
                Ok((r.get(0)?, record, stored))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some((last, _, _)) = stale.last() else {
            break;
        };
        after = *last;
        let now = now_rfc3339();
        for (_, record, stored) in &stale {
            let canonical = map_payload(&mapping.mapping, &record.payload);
            write_canonical(&tx, page, record, &canonical, &now, *stored, counts)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// A stored record (its `source_record.record_id`) and which of its derived rows are stored
/// already.
#[derive(Debug, Clone, Copy)]
struct Stored {
    record_id: i64,
    canonical: bool,
    failure: bool,
}

/// Stores a record's canonical form (or its mapping failure) and queues it for linking.
/// The page's mapping version goes with it; a page without a mapping stores nothing here.
fn write_canonical(
    tx: &rusqlite::Transaction<'_>,
    page: &PageWrite,
    record: &StoredRecord,
    canonical: &Canonical,
    now: &str,
    stored: Stored,
    counts: &mut PageCounts,
) -> Result<()> {
    let Some(mapping_hash) = page.mapping.as_ref().map(|m| &*m.hash) else {
        return Ok(());
    };
    let source: &str = &page.source;
    match canonical {
        Canonical::Mapped {
            values_json,
            problems_json,
        } => {
            let sql = insert_or_upsert!(
                stored.canonical,
                "INSERT INTO canonical_record (source, external_id, kind, content_hash, mapping_hash, values_json, problems_json, mapped_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                "ON CONFLICT (source, external_id) DO UPDATE SET kind = excluded.kind, content_hash = excluded.content_hash,
                     mapping_hash = excluded.mapping_hash, values_json = excluded.values_json,
                     problems_json = excluded.problems_json, mapped_at = excluded.mapped_at",
            );
            tx.prepare_cached(sql)?.execute(params![
                source,
                record.external_id,
                page.kind,
                record.content_hash,
                mapping_hash,
                values_json,
                problems_json,
                now
            ])?;
            if stored.failure {
                tx.prepare_cached(
                    "DELETE FROM mapping_failure WHERE source = ?1 AND external_id = ?2",
                )?
                .execute(params![source, record.external_id])?;
            }
            counts.mapped += 1;
        }
        Canonical::Failed { code, reason } => {
            let sql = insert_or_upsert!(
                stored.failure,
                "INSERT INTO mapping_failure (source, external_id, code, reason, mapping_hash, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                "ON CONFLICT (source, external_id) DO UPDATE SET code = excluded.code, reason = excluded.reason,
                     mapping_hash = excluded.mapping_hash, failed_at = excluded.failed_at",
            );
            tx.prepare_cached(sql)?.execute(params![
                source,
                record.external_id,
                code,
                reason,
                mapping_hash,
                now
            ])?;
            // Its old canonical form no longer describes the record.
            if stored.canonical {
                tx.prepare_cached(
                    "DELETE FROM canonical_record WHERE source = ?1 AND external_id = ?2",
                )?
                .execute(params![source, record.external_id])?;
            }
            counts.mapping_failures += 1;
        }
    }
    super::queue_relink(tx, stored.record_id, source, &record.external_id)?;
    Ok(())
}

fn write_page(tx: &rusqlite::Transaction<'_>, page: &PageWrite, now: &str) -> Result<PageCounts> {
    let mut counts = PageCounts::default();
    let mut lookup = tx.prepare_cached(
        "SELECT s.record_id, s.content_hash, s.deleted_at IS NOT NULL, c.mapping_hash, f.mapping_hash
         FROM source_record s
         LEFT JOIN canonical_record c ON c.source = s.source AND c.external_id = s.external_id
         LEFT JOIN mapping_failure f ON f.source = s.source AND f.external_id = s.external_id
         WHERE s.source = ?1 AND s.external_id = ?2",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO source_record (source, external_id, kind, payload, content_hash,
             first_seen_at, sighting_stored_at, changed_at, sighting_scan, deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, NULL)",
    )?;
    let mut touch = tx.prepare_cached(
        "UPDATE source_record SET sighting_stored_at = ?2, sighting_scan = ?3, deleted_at = NULL
         WHERE record_id = ?1",
    )?;
    let mut change = tx.prepare_cached(
        "UPDATE source_record SET payload = ?2, content_hash = ?3, sighting_stored_at = ?4,
             changed_at = ?4, sighting_scan = ?5, deleted_at = NULL
         WHERE record_id = ?1",
    )?;
    let mut seen: Vec<i64> = Vec::with_capacity(page.records.len());
    let source: &str = &page.source;
    // Records erased by `caresync forget` are not stored again (see daemon::erasure).
    let suppressed = crate::daemon::erasure::suppressed(tx, source, &page.records)?;
    for record in &page.records {
        if suppressed.contains(&record.external_id) {
            continue;
        }
        let found: Option<Found> = lookup
            .query_row(params![source, record.external_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let (canonical_stored, failure_stored) = found
            .as_ref()
            .map_or((false, false), |e| (e.3.is_some(), e.4.is_some()));
        let existing: Option<(i64, String, bool, Option<String>)> =
            found.map(|(id, hash, deleted, c, f)| (id, hash, deleted, c.or(f)));
        let content_changed = existing
            .as_ref()
            .is_none_or(|e| e.1 != record.content_hash || e.2);
        let mapping_changed = existing
            .as_ref()
            .is_none_or(|e| e.3.as_deref() != page.mapping.as_ref().map(|m| &*m.hash));
        let needs_row = content_changed || mapping_changed;
        let record_id = match existing.map(|(id, hash, deleted, _)| (id, hash, deleted)) {
            None => {
                insert.execute(params![
                    source,
                    record.external_id,
                    page.kind,
                    record.payload,
                    record.content_hash,
                    now,
                    page.scan_id
                ])?;
                counts.inserted += 1;
                tx.last_insert_rowid()
            }
            // Seen again unchanged: noted with the page's sightings, the row is not written.
            Some((id, hash, deleted)) if hash == record.content_hash => {
                if deleted {
                    touch.execute(params![id, now, page.scan_id])?;
                    counts.updated += 1;
                } else {
                    counts.unchanged += 1;
                }
                id
            }
            Some((id, _, _)) => {
                change.execute(params![
                    id,
                    record.payload,
                    record.content_hash,
                    now,
                    page.scan_id
                ])?;
                counts.updated += 1;
                id
            }
        };
        seen.push(record_id);
        let stored = Stored {
            record_id,
            canonical: canonical_stored,
            failure: failure_stored,
        };
        match (&record.canonical, &page.mapping) {
            (CanonicalForm::Mapped(canonical), Some(_)) if needs_row => {
                write_canonical(tx, page, record, canonical, now, stored, &mut counts)?;
            }
            // The parse step's look-up was stale (an earlier page of this scan changed or
            // re-stored the record, it was marked deleted, ...): map it here.
            (CanonicalForm::Unchanged, Some(m)) if needs_row => {
                let canonical = map_payload(&m.mapping, &record.payload);
                write_canonical(tx, page, record, &canonical, now, stored, &mut counts)?;
                counts.mapped_by_writer += 1;
            }
            (CanonicalForm::Unchanged, Some(_)) => counts.skipped_unchanged += 1,
            _ => {}
        }
    }
    super::sightings::note(tx, source, page.scan_id, &seen)?;
    let Some(cp) = &page.checkpoint else {
        return Ok(counts);
    };
    let updated = tx
        .prepare_cached(
            "UPDATE sync_state SET position = ?3, pages_done = ?4,
                 scan_watermark = CASE WHEN ?5 IS NULL THEN scan_watermark
                                  WHEN scan_watermark IS NULL OR ?5 > scan_watermark THEN ?5
                                  ELSE scan_watermark END
             WHERE source = ?1 AND scan_id = ?2",
        )?
        .execute(params![
            source,
            cp.scan_id,
            cp.next_position,
            cp.pages_done as i64,
            cp.watermark
        ])?;
    if updated != 1 {
        return Err(anyhow!(
            "source `{source}`: scan {} is no longer current; page not saved",
            cp.scan_id
        ))
        .context("checkpoint");
    }
    Ok(counts)
}

//! The one pipeline: backfill, sync, the daemon and the bench all call [`Pipeline::run`].
//!
//! Per source: open a `sync_run`, decide the scan (resume a checkpoint or start anew), page
//! through the API, hand each page to the store writer with its checkpoint, then close the
//! scan (marking records a complete full scan no longer returned) and the run.

pub mod mapping;
pub mod paginate;
pub mod progress;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::person::link::{LinkOutcome, Linker};
use crate::source::ratelimit::Budgets;
use crate::source::{MISSING_KEY_PREFIX, Page, Position, Scope, Source, build_sources};
use crate::store::{
    AlreadyMapped, Checkpoint, PageCounts, PageWrite, RunCounts, Store, Writer, now_rfc3339,
    remap_stale, sightings,
};
use paginate::{PageSink, ScanError};
use progress::{Progress, SourceProgress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read everything.
    Backfill,
    /// Read what changed: CareHQ from its watermark, the others by a full re-scan.
    Sync,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Backfill => "backfill",
            Mode::Sync => "sync",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    QuotaExhausted,
    /// Stopped at a page boundary because the process is shutting down (the daemon's stop flag).
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::QuotaExhausted => "quota_exhausted",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// How one source's run ended.
#[derive(Debug, Clone)]
pub struct SourceOutcome {
    pub source: String,
    pub kind: &'static str,
    pub run_id: i64,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub elapsed: Duration,
    /// Why it failed, naming the position; never personal data.
    pub error: Option<String>,
}

/// Seconds of overlap when reading CareHQ from its watermark: records that share the
/// boundary second, or were written while we read, are read again rather than missed.
const WATERMARK_OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

pub struct RunOptions {
    pub mode: Mode,
    /// Source names; empty means all.
    pub only: Vec<String>,
    pub progress: Progress,
}

/// Everything a run needs, built once and reused (the daemon keeps one for its lifetime,
/// so rate budgets persist across runs).
pub struct Pipeline {
    pub config: Config,
    pub writer: Writer,
    budgets: Budgets,
    mappings: mapping::Mappings,
    /// Extraction's look-up of records already mapped (read-only connections to the store).
    already_mapped: Arc<AlreadyMapped>,
    /// Set to stop: scans end before their next page is stored, and linking is skipped.
    stop: Arc<AtomicBool>,
}

/// What one run did: each source's extraction, then linking.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub sources: Vec<SourceOutcome>,
    pub link: Result<LinkOutcome, String>,
}

impl Pipeline {
    /// Compiles the mappings (a broken mapping file stops here, before any request).
    pub fn new(config: Config, store: &Store) -> Result<Pipeline> {
        let mappings = match &config.mappings_dir {
            Some(dir) => mapping::Mappings::from_dir(dir)?,
            None => mapping::Mappings::builtin()?,
        };
        Ok(Pipeline {
            config,
            writer: store.writer.clone(),
            budgets: Budgets::default(),
            mappings,
            already_mapped: Arc::new(AlreadyMapped::new(&store.path)),
            stop: Arc::default(),
        })
    }

    /// The flag that stops runs at their next checkpoint (the daemon sets it on SIGTERM).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Reads the sources, then links what changed.
    pub async fn run(&self, options: &RunOptions) -> Result<RunReport> {
        let sources = self.extract(options).await?;
        let link = self.link_unless_stopping().await;
        Ok(RunReport { sources, link })
    }

    /// [`Self::link`], unless shutting down: the queue is kept in the store, and the next run
    /// links it.
    pub async fn link_unless_stopping(&self) -> Result<LinkOutcome, String> {
        if self.stop.load(Ordering::SeqCst) {
            Err("skipped: shutting down".to_string())
        } else {
            self.link().await
        }
    }

    /// The writes that would bring each writable source in line with the canonical persons.
    pub async fn plan(&self) -> Result<crate::sink::plan::Plan> {
        self.link().await.map_err(anyhow::Error::msg)?;
        let (config, mappings) = (self.config.clone(), self.mappings.clone());
        tokio::task::spawn_blocking(move || {
            let conn = crate::store::open_read_only(&config.store_path)?;
            crate::sink::plan::compute(&conn, &config, &mappings)
        })
        .await?
    }

    /// Applies a plan through the loaders, then links what the writes changed.
    pub async fn push(
        &self,
        plan: &crate::sink::plan::Plan,
    ) -> Result<crate::sink::push::PushReport> {
        let mut names: Vec<String> = plan.writes.iter().map(|w| w.source.clone()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(crate::sink::push::PushReport::default());
        }
        let sources = build_sources(&self.config, &names, &self.budgets, Some(&self.mappings))?;
        let report = crate::sink::push::apply(&self.writer, &sources, plan).await?;
        self.link().await.map_err(anyhow::Error::msg)?;
        Ok(report)
    }

    /// Links the records whose canonical form changed since the last link (the queue).
    pub async fn link(&self) -> Result<LinkOutcome, String> {
        let mut linker = Linker::new(
            self.config.matching.clone(),
            self.config.survivorship.clone(),
        );
        let outcome = self
            .writer
            .call(move |conn| linker.link_pending(conn))
            .await
            .map_err(|e| format!("{e:#}"))?;
        if outcome.queued > 0 {
            tracing::info!(
                queued = outcome.queued,
                linked = outcome.records_linked,
                links_written = outcome.links_written,
                links_removed = outcome.links_removed,
                persons_written = outcome.persons_written,
                persons_removed = outcome.persons_removed,
                elapsed_ms = outcome.millis as u64,
                "linked"
            );
        }
        Ok(outcome)
    }

    /// Reads the sources into the store, each on its own task: the first half of [`Self::run`].
    pub async fn extract(&self, options: &RunOptions) -> Result<Vec<SourceOutcome>> {
        let sources = build_sources(
            &self.config,
            &options.only,
            &self.budgets,
            Some(&self.mappings),
        )?;
        let concurrency = self.config.http.concurrency;
        // A source none of whose records are stored mapped by its mapping version (a first
        // backfill, a new mapping) maps every record: its pages need no look-up.
        let versions: Vec<(String, Option<Arc<str>>)> = sources
            .iter()
            .map(|s| {
                (
                    s.name().to_string(),
                    s.mapping.as_ref().map(|m| m.hash.clone()),
                )
            })
            .collect();
        let lookup = self.already_mapped.clone();
        let worth_looking_up: Vec<bool> = tokio::task::spawn_blocking(move || {
            versions
                .iter()
                .map(|(name, hash)| {
                    hash.as_ref()
                        .is_some_and(|h| lookup.holds_any(name, h).unwrap_or(true))
                })
                .collect()
        })
        .await?;
        let runs = sources.into_iter().zip(worth_looking_up).map(|(mut source, look_up)| {
            if look_up {
                source.already_mapped = Some(self.already_mapped.clone());
            }
            let bar = options.progress.source(source.name());
            let writer = self.writer.clone();
            let stop = self.stop.clone();
            async move { run_source(source, writer, options.mode, concurrency, bar, stop).await }
        });
        Ok(futures::future::join_all(runs).await)
    }
}

/// The scan a run performs, decided from `sync_state`.
#[derive(Debug, Clone)]
struct ScanPlan {
    scan_id: i64,
    full: bool,
    /// After an incremental read, sweep CareHQ's ids to find deletions.
    sweep: bool,
    start: Position,
    pages_done: u64,
    scope: Scope,
}

async fn run_source(
    source: Source,
    writer: Writer,
    mode: Mode,
    concurrency: usize,
    bar: SourceProgress,
    stop: Arc<AtomicBool>,
) -> SourceOutcome {
    let started = Instant::now();
    let name: Arc<str> = Arc::from(source.name());
    let kind = source.config.kind.as_str();
    let mut outcome = SourceOutcome {
        source: name.to_string(),
        kind,
        run_id: 0,
        status: RunStatus::Failed,
        counts: RunCounts::default(),
        elapsed: Duration::ZERO,
        error: None,
    };
    let begin = {
        let name = name.clone();
        let incremental_capable = source.config.kind.is_carehq();
        let sweep_every = source.config.deletion_sweep_every;
        let first = Position::first(source.api.paging());
        writer
            .call(move |conn| begin_run(conn, &name, mode, incremental_capable, sweep_every, first))
            .await
    };
    let (run_id, plan) = match begin {
        Ok(v) => v,
        Err(e) => {
            outcome.error = Some(format!("cannot start the run: {e:#}"));
            bar.finish_failed();
            return outcome;
        }
    };
    outcome.run_id = run_id;
    tracing::info!(source = %name, run_id, scan_id = plan.scan_id, full = plan.full, resume = plan.pages_done > 0, "run started");

    let mut sink = StoreSink {
        writer: writer.clone(),
        source: name.clone(),
        kind,
        run_id,
        scan_id: plan.scan_id,
        pages_done: plan.pages_done,
        counts: RunCounts::default(),
        pending: Vec::new(),
        bar: bar.clone(),
        shift: ShiftWatch::default(),
        hold_watermark: false,
        mapping: source.mapping.clone(),
        stop: stop.clone(),
    };
    let scanned = scan_source(&source, &plan, concurrency, &mut sink).await;
    let committed = sink.settle().await;
    let mut counts = sink.counts;
    let promote_watermark = !sink.hold_watermark;
    counts.requests = source.http.stats.requests();

    let (status, error) = match (scanned, committed) {
        (Ok(()), Ok(())) => (RunStatus::Succeeded, None),
        (Err(_), Ok(())) if stop.load(Ordering::SeqCst) => (
            RunStatus::Interrupted,
            Some((
                "interrupted",
                "stopped at shutdown; the next run resumes from the checkpoint".to_string(),
            )),
        ),
        (_, Err(e)) => (RunStatus::Failed, Some(("store", format!("{e:#}")))),
        (
            Err(
                e @ ScanError::Fetch {
                    error: crate::source::http::FetchError::QuotaExhausted { .. },
                    ..
                },
            ),
            _,
        ) => (RunStatus::QuotaExhausted, Some((e.code(), e.to_string()))),
        (Err(e), _) => (RunStatus::Failed, Some((e.code(), e.to_string()))),
    };
    let mut problems: Vec<(String, Option<String>, &'static str, String)> = source
        .http
        .stats
        .take_retried()
        .into_iter()
        .map(|r| (String::new(), None, r.kind, r.message))
        .collect();
    if let Some((code, message)) = &error {
        problems.push((String::new(), None, code, message.clone()));
    }
    let finish = {
        let name = name.clone();
        let message = error.as_ref().map(|(_, m)| m.clone());
        let complete = status == RunStatus::Succeeded;
        let (full, sweep) = (plan.full, plan.sweep);
        let fresh_full_scan = plan.full && plan.pages_done == 0;
        let scan_id = plan.scan_id;
        let mapping = source.mapping.clone();
        writer
            .call(move |conn| {
                record_problems(conn, run_id, &name, &problems)?;
                counts.errors += problems.len() as u64;
                if complete {
                    counts.deleted =
                        close_scan(conn, &name, scan_id, full, sweep, promote_watermark)?;
                    if let Some(mapping) = &mapping {
                        let remapped = remap_stale(conn, &name, kind, mapping, fresh_full_scan)?;
                        counts.records.mapped += remapped.mapped;
                        counts.records.mapping_failures += remapped.mapping_failures;
                    }
                }
                finish_run(conn, run_id, status, &counts, message.as_deref())?;
                Ok(counts)
            })
            .await
    };
    match finish {
        Ok(c) => outcome.counts = c,
        Err(e) => {
            outcome.counts = counts;
            outcome.status = RunStatus::Failed;
            outcome.error = Some(format!("cannot record the run: {e:#}"));
            bar.finish_failed();
            return outcome;
        }
    }
    outcome.status = status;
    outcome.error = error.map(|(_, m)| m);
    outcome.elapsed = started.elapsed();
    match outcome.status {
        RunStatus::Succeeded => bar.finish_ok(&outcome.counts),
        _ => bar.finish_failed(),
    }
    tracing::info!(
        source = %name, run_id, status = status.as_str(), pages = outcome.counts.pages,
        requests = outcome.counts.requests, records = outcome.counts.records_seen,
        inserted = outcome.counts.records.inserted, updated = outcome.counts.records.updated,
        deleted = outcome.counts.deleted, errors = outcome.counts.errors,
        canonical_written = outcome.counts.records.mapped + outcome.counts.records.mapping_failures,
        skipped_unchanged = outcome.counts.records.skipped_unchanged,
        mapped_by_writer = outcome.counts.records.mapped_by_writer,
        elapsed_ms = outcome.elapsed.as_millis() as u64, "run finished"
    );
    outcome
}

struct StoreSink {
    writer: Writer,
    source: Arc<str>,
    kind: &'static str,
    run_id: i64,
    scan_id: i64,
    pages_done: u64,
    counts: RunCounts,
    pending: Vec<oneshot::Receiver<Result<PageCounts>>>,
    bar: SourceProgress,
    shift: ShiftWatch,
    hold_watermark: bool,
    mapping: Option<mapping::KindMapping>,
    stop: Arc<AtomicBool>,
}

/// Signs that records were added, removed or re-sorted upstream while we paged: the total
/// moved, or an id came back. Full scans compare neighbouring pages; incremental scans
/// (small, and sorted by `modified`, so an edit moves a record to the end) remember every id.
#[derive(Default)]
struct ShiftWatch {
    remember_all: bool,
    first_total: Option<u64>,
    last_total: Option<u64>,
    seen: std::collections::HashSet<String>,
    overlapping: u64,
}

impl ShiftWatch {
    fn new(remember_all: bool) -> ShiftWatch {
        ShiftWatch {
            remember_all,
            ..ShiftWatch::default()
        }
    }

    fn observe(&mut self, page: &Page) {
        if let Some(t) = page.total_records {
            self.first_total.get_or_insert(t);
            self.last_total = Some(t);
        }
        if !self.remember_all {
            let ids: std::collections::HashSet<String> =
                page.records.iter().map(|r| r.external_id.clone()).collect();
            self.overlapping += ids.intersection(&self.seen).count() as u64;
            self.seen = ids;
        } else {
            for r in &page.records {
                if !self.seen.insert(r.external_id.clone()) {
                    self.overlapping += 1;
                }
            }
        }
    }

    /// A description of the shift, if one was seen.
    fn detected(&self) -> Option<String> {
        let total_moved = self.first_total != self.last_total;
        (total_moved || self.overlapping > 0).then(|| {
            format!(
                "records were added or removed while paging ({} ids repeated across pages, total {} -> {})",
                self.overlapping,
                self.first_total.map_or("unknown".into(), |t| t.to_string()),
                self.last_total.map_or("unknown".into(), |t| t.to_string())
            )
        })
    }
}

/// At most this many passes over a source whose pages shift while it is read.
const MAX_PASSES: u32 = 2;

/// Pages through the source; a full scan then re-reads once if pages shifted, and looks up
/// every stored record it did not see, so only records really gone are marked deleted.
async fn scan_source(
    source: &Source,
    plan: &ScanPlan,
    concurrency: usize,
    sink: &mut StoreSink,
) -> Result<(), ScanError> {
    let mut start = plan.start.clone();
    for pass in 1..=MAX_PASSES {
        sink.shift = ShiftWatch::new(!plan.full);
        paginate::scan(source, start, &plan.scope, concurrency, sink).await?;
        let Some(shift) = sink.shift.detected() else {
            sink.hold_watermark = false;
            break;
        };
        // Until a pass reads without a shift, the watermark stays put so nothing is skipped.
        sink.hold_watermark = true;
        tracing::info!(source = %sink.source, pass, "pages shifted during the scan");
        sink.note_problem("page_shift", format!("pass {pass}: {shift}"))
            .await
            .map_err(ScanError::Sink)?;
        start = Position::first(source.api.paging());
    }
    if plan.sweep {
        sweep_ids(source, sink).await?;
    }
    if plan.full || plan.sweep {
        sink.settle().await.map_err(ScanError::Sink)?;
        recover_unseen(source, sink).await?;
    }
    Ok(())
}

/// CareHQ's id-only sweep: sights every id (bookkeeping only) and fetches ids the store
/// has never seen.
async fn sweep_ids(source: &Source, sink: &mut StoreSink) -> Result<(), ScanError> {
    let mut sightings = Sightings {
        writer: sink.writer.clone(),
        source: sink.source.clone(),
        scan_id: sink.scan_id,
        unknown: Vec::new(),
    };
    let scope = Scope {
        modified_after: None,
        ids_only: true,
    };
    paginate::scan(
        source,
        Position::first(source.api.paging()),
        &scope,
        4,
        &mut sightings,
    )
    .await?;
    if !sightings.unknown.is_empty() {
        tracing::info!(source = %sink.source, unknown = sightings.unknown.len(), "sweep found records the store lacks");
        fetch_and_store(source, sink, &sightings.unknown).await?;
    }
    Ok(())
}

struct Sightings {
    writer: Writer,
    source: Arc<str>,
    scan_id: i64,
    unknown: Vec<String>,
}

impl PageSink for Sightings {
    async fn accept(&mut self, _fetched: Position, page: Page, _next: Position) -> Result<()> {
        let ids: Vec<String> = page.records.into_iter().map(|r| r.external_id).collect();
        let (source, scan_id) = (self.source.clone(), self.scan_id);
        let unknown = self
            .writer
            .call(move |conn| {
                let tx = conn.transaction()?;
                let mut unknown = Vec::new();
                let mut seen = Vec::with_capacity(ids.len());
                {
                    let mut live = tx.prepare_cached(
                        "SELECT record_id FROM source_record
                         WHERE source = ?1 AND external_id = ?2 AND deleted_at IS NULL",
                    )?;
                    for id in ids {
                        match live
                            .query_row(params![&*source, id], |r| r.get(0))
                            .optional()?
                        {
                            Some(record_id) => seen.push(record_id),
                            None => unknown.push(id),
                        }
                    }
                }
                sightings::note(&tx, &source, scan_id, &seen)?;
                tx.commit()?;
                Ok(unknown)
            })
            .await?;
        self.unknown.extend(unknown);
        Ok(())
    }
}

/// Looks up the stored records this full scan did not see. Those the API still has were
/// hidden by a page shift and are stored now; the rest stay unseen, to be marked deleted.
async fn recover_unseen(source: &Source, sink: &mut StoreSink) -> Result<(), ScanError> {
    let (name, scan_id) = (sink.source.clone(), sink.scan_id);
    let unseen: Vec<String> = sink
        .writer
        .call(move |conn| {
            Ok(sightings::unseen(conn, &name, scan_id)?
                .into_iter()
                .map(|(_, external_id)| external_id)
                .filter(|id| !id.starts_with(MISSING_KEY_PREFIX))
                .collect())
        })
        .await
        .map_err(ScanError::Sink)?;
    if unseen.is_empty() {
        return Ok(());
    }
    let recovered = fetch_and_store(source, sink, &unseen).await?;
    if recovered > 0 {
        tracing::info!(source = %sink.source, unseen = unseen.len(), recovered, "recovered records a page shift hid");
        sink.note_problem(
            "page_shift",
            format!(
                "{recovered} of {} unseen records still exist upstream; re-read",
                unseen.len()
            ),
        )
        .await
        .map_err(ScanError::Sink)?;
    }
    Ok(())
}

/// Fetches these records by key and stores those the API still has; returns how many.
async fn fetch_and_store(
    source: &Source,
    sink: &mut StoreSink,
    ids: &[String],
) -> Result<u64, ScanError> {
    let records = read_by_keys(source, ids)
        .await
        .map_err(|error| ScanError::Fetch {
            position: "looking up records by key".into(),
            error,
        })?;
    let found = records.len() as u64;
    if found > 0 {
        sink.counts.records_seen += found;
        let rx = sink
            .writer
            .write_page(PageWrite {
                source: sink.source.clone(),
                kind: sink.kind,
                scan_id: sink.scan_id,
                records,
                mapping: sink.mapping.clone(),
                checkpoint: None,
            })
            .await
            .map_err(ScanError::Sink)?;
        sink.pending.push(rx);
    }
    Ok(found)
}

/// Reads records by key through the source's lookups, parsed and mapped; records the API
/// no longer has are simply absent.
pub async fn read_by_keys(
    source: &Source,
    ids: &[String],
) -> Result<Vec<crate::store::StoredRecord>, crate::source::http::FetchError> {
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut found = Vec::new();
    for lookup in source.api.lookups(ids) {
        let request = lookup.clone();
        let parse = source.parser(move |api, body| api.parse_lookup(&request, body));
        match source.http.execute(&lookup.spec, parse).await {
            Ok(page) => found.extend(
                page.records
                    .into_iter()
                    .filter(|r| wanted.contains(r.external_id.as_str())),
            ),
            Err(crate::source::http::FetchError::Refused { status: 404, .. }) if lookup.single => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

/// Stores records read outside a scan (write-back's re-reads), as seen by the source's
/// current scan so they are not taken for deleted; they are re-mapped and re-linked.
pub async fn store_outside_scan(
    writer: &Writer,
    source: &Source,
    records: Vec<crate::store::StoredRecord>,
) -> Result<PageCounts> {
    let name: Arc<str> = Arc::from(source.name());
    let scan_id = {
        let name = name.clone();
        writer
            .call(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT scan_id FROM sync_state WHERE source = ?1",
                        [&*name],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .unwrap_or(0))
            })
            .await?
    };
    let rx = writer
        .write_page(PageWrite {
            source: name,
            kind: source.config.kind.as_str(),
            scan_id,
            records,
            mapping: source.mapping.clone(),
            checkpoint: None,
        })
        .await?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the store writer stopped"))?
}

impl StoreSink {
    /// Waits for every queued page to be committed, adding up their counts.
    async fn settle(&mut self) -> Result<()> {
        let mut first_error = None;
        for rx in self.pending.drain(..) {
            match rx.await {
                Ok(Ok(c)) => self.counts.records.add(c),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("the store writer stopped"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl StoreSink {
    async fn note_problem(&mut self, kind: &'static str, message: String) -> Result<()> {
        self.counts.errors += 1;
        let (run_id, source) = (self.run_id, self.source.clone());
        let problems = vec![(String::new(), None, kind, message)];
        self.writer
            .call(move |conn| record_problems(conn, run_id, &source, &problems))
            .await
    }
}

impl PageSink for StoreSink {
    async fn accept(&mut self, fetched: Position, page: Page, next: Position) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            anyhow::bail!("interrupted: shutting down");
        }
        self.shift.observe(&page);
        self.pages_done += 1;
        self.counts.pages += 1;
        self.counts.records_seen += page.records.len() as u64;
        self.bar.page(page.records.len() as u64, page.total_records);
        if !page.problems.is_empty() {
            let at = fetched.describe();
            let problems: Vec<_> = page
                .problems
                .iter()
                .map(|p| (at.clone(), p.external_id.clone(), p.kind, p.message.clone()))
                .collect();
            self.counts.errors += problems.len() as u64;
            let (run_id, source) = (self.run_id, self.source.clone());
            self.writer
                .call(move |conn| record_problems(conn, run_id, &source, &problems))
                .await?;
        }
        let rx = self
            .writer
            .write_page(PageWrite {
                source: self.source.clone(),
                kind: self.kind,
                scan_id: self.scan_id,
                records: page.records,
                mapping: self.mapping.clone(),
                checkpoint: Some(Checkpoint {
                    scan_id: self.scan_id,
                    next_position: Some(next.to_json()),
                    pages_done: self.pages_done,
                    watermark: page.newest_modified,
                }),
            })
            .await?;
        self.pending.push(rx);
        // Keep the queue of unconfirmed pages short so a failing store stops the scan early.
        if self.pending.len() >= 32 {
            let oldest = self.pending.remove(0);
            match oldest.await {
                Ok(Ok(c)) => self.counts.records.add(c),
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("the store writer stopped"),
            }
        }
        Ok(())
    }
}

/// `sync_state`: scan_id, scan_mode, position, pages_done, complete, watermark, syncs_since_sweep.
type StoredState = (i64, String, Option<String>, i64, bool, Option<String>, i64);

fn begin_run(
    conn: &mut Connection,
    source: &str,
    mode: Mode,
    incremental_capable: bool,
    sweep_every: u32,
    first: Position,
) -> Result<(i64, ScanPlan)> {
    let tx = conn.transaction()?;
    let now = now_rfc3339();
    // A run still marked running was cut short (killed, or the machine went down).
    tx.execute(
        "UPDATE sync_run SET status = 'interrupted', message = 'the process stopped before the run finished'
         WHERE source = ?1 AND status = 'running'",
        params![source],
    )?;
    tx.execute(
        "INSERT INTO sync_run (source, mode, started_at, status) VALUES (?1, ?2, ?3, 'running')",
        params![source, mode.as_str(), now],
    )?;
    let run_id = tx.last_insert_rowid();
    let state: Option<StoredState> = tx
        .query_row(
            "SELECT scan_id, scan_mode, position, pages_done, complete, watermark, syncs_since_sweep
             FROM sync_state WHERE source = ?1",
            params![source],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    let syncs_since_sweep = state.as_ref().map_or(0, |s| s.6);
    let watermark = state.as_ref().and_then(|s| s.5.clone());
    let want_full = !(mode == Mode::Sync && incremental_capable && watermark.is_some());
    let sweep = !want_full && sweep_every > 0 && syncs_since_sweep + 1 >= sweep_every as i64;
    let scope = if want_full {
        Scope::default()
    } else {
        Scope {
            modified_after: watermark.as_deref().map(overlap_before),
            ids_only: false,
        }
    };
    let resumable = state.as_ref().and_then(
        |(scan_id, scan_mode, position, pages_done, complete, _, _)| {
            let same_kind = (scan_mode == "full") == want_full;
            let position = position.as_deref().and_then(Position::from_json)?;
            (!complete && same_kind).then_some((*scan_id, position, *pages_done as u64))
        },
    );
    let plan = match resumable {
        Some((scan_id, start, pages_done)) => ScanPlan {
            scan_id,
            full: want_full,
            sweep,
            start,
            pages_done,
            scope,
        },
        None => {
            let scan_id = state.as_ref().map_or(1, |s| s.0 + 1);
            tx.execute(
                "INSERT INTO sync_state (source, scan_id, scan_mode, scan_started_at, position, pages_done, complete, scan_watermark)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, NULL)
                 ON CONFLICT (source) DO UPDATE SET scan_id = ?2, scan_mode = ?3, scan_started_at = ?4,
                     position = ?5, pages_done = 0, complete = 0, scan_watermark = NULL",
                params![source, scan_id, if want_full { "full" } else { "incremental" }, now, first.to_json()],
            )?;
            sightings::forget_other_scans(&tx, source, Some(scan_id))?;
            ScanPlan {
                scan_id,
                full: want_full,
                sweep,
                start: first,
                pages_done: 0,
                scope,
            }
        }
    };
    tx.commit()?;
    Ok((run_id, plan))
}

/// The watermark minus the overlap, in CareHQ's `YYYY-MM-DD HH:MM:SS`.
fn overlap_before(watermark: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(watermark, "%Y-%m-%d %H:%M:%S") {
        Ok(t) => (t - WATERMARK_OVERLAP)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => watermark.to_string(),
    }
}

/// Closes a completed scan; a full scan, or an incremental one with an id sweep, marks what
/// it no longer saw as deleted.
fn close_scan(
    conn: &mut Connection,
    source: &str,
    scan_id: i64,
    full: bool,
    sweep: bool,
    promote_watermark: bool,
) -> Result<u64> {
    let tx = conn.transaction()?;
    let now = now_rfc3339();
    let saw_everything = full || sweep;
    let deleted = if saw_everything {
        // Each was last seen by the previous complete scan, or when stored after it.
        let last_complete: Option<String> = tx.query_row(
            "SELECT last_complete_at FROM sync_state WHERE source = ?1",
            [source],
            |r| r.get(0),
        )?;
        let unseen = sightings::unseen(&tx, source, scan_id)?;
        let mut delete = tx.prepare_cached(
            "UPDATE source_record SET deleted_at = ?2,
                 sighting_stored_at = max(sighting_stored_at, coalesce(?3, ''))
             WHERE record_id = ?1",
        )?;
        for (record_id, external_id) in &unseen {
            crate::store::queue_relink(&tx, *record_id, source, external_id)?;
            delete.execute(params![record_id, now, last_complete])?;
        }
        unseen.len() as u64
    } else {
        0
    };
    sightings::forget_other_scans(&tx, source, None)?;
    tx.execute(
        "UPDATE sync_state SET complete = 1, position = NULL,
             watermark = CASE WHEN ?5 AND scan_watermark IS NOT NULL AND (watermark IS NULL OR scan_watermark > watermark)
                              THEN scan_watermark ELSE watermark END,
             last_complete_at = CASE WHEN ?3 THEN ?4 ELSE last_complete_at END,
             syncs_since_sweep = CASE WHEN ?3 THEN 0 ELSE syncs_since_sweep + 1 END
         WHERE source = ?1 AND scan_id = ?2",
        params![source, scan_id, saw_everything, now, promote_watermark],
    )?;
    tx.commit()?;
    Ok(deleted)
}

fn finish_run(
    conn: &mut Connection,
    run_id: i64,
    status: RunStatus,
    c: &RunCounts,
    message: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE sync_run SET finished_at = ?2, status = ?3, pages = ?4, requests = ?5, records_seen = ?6,
             records_inserted = ?7, records_updated = ?8, records_unchanged = ?9, records_deleted = ?10,
             error_count = ?11, message = ?12
         WHERE run_id = ?1",
        params![
            run_id,
            now_rfc3339(),
            status.as_str(),
            c.pages as i64,
            c.requests as i64,
            c.records_seen as i64,
            c.records.inserted as i64,
            c.records.updated as i64,
            c.records.unchanged as i64,
            c.deleted as i64,
            c.errors as i64,
            message
        ],
    )?;
    Ok(())
}

/// (page, external_id, kind, message) rows for `sync_error`.
type Problem = (String, Option<String>, &'static str, String);

fn record_problems(
    conn: &mut Connection,
    run_id: i64,
    source: &str,
    problems: &[Problem],
) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let now = now_rfc3339();
        let mut insert = tx.prepare_cached(
            "INSERT INTO sync_error (run_id, source, at, page, external_id, kind, message)
             VALUES (?1, ?2, ?3, NULLIF(?4, ''), ?5, ?6, ?7)",
        )?;
        for (page, external_id, kind, message) in problems {
            insert.execute(params![
                run_id,
                source,
                now,
                page,
                external_id,
                kind,
                message
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

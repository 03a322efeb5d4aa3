//! `caresync bench`: the pipeline against the built-in simulators, measured against the
//! limits of each stage on the same record shapes. The same `Pipeline` as `backfill`: its
//! backfill is `Pipeline::run`'s two halves, called one after the other.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Serialize;

use crate::config::RateLimit;
use crate::sim::{self, SimOptions};
use crate::source::http::HttpClient;
use crate::source::kind::SourceKind;
use crate::source::ratelimit::RateLimiter;
use crate::source::{Paging, Position, Scope, api_for};
use crate::store::{CanonicalForm, Checkpoint, PageWrite, Store, StoredRecord};
use crate::sync::mapping::map_payload;
use crate::sync::progress::Progress;
use crate::sync::{Mode, Pipeline, RunOptions, RunReport, RunStatus, SourceOutcome};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many people the simulators generate.
    #[arg(long, default_value_t = 20_000)]
    pub people: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// `none`: simulators without rate limits; `documented`: CareHQ 10/s per key and PACE
    /// 5 per 10 s enforced, to compare wall time with the floor the limits allow.
    #[arg(long, value_enum, default_value_t = Limits::None)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limits {
    None,
    Documented,
}

#[derive(Debug, Serialize)]
struct SourceFigures {
    source: String,
    records: u64,
    requests: u64,
    minimum_requests: u64,
    throttled_429: u64,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    people: usize,
    limits: String,
    /// The processor, its cores and memory: figures from different machines do not compare.
    machine: String,
    records: u64,
    backfill_secs: f64,
    backfill_records_per_sec: f64,
    /// Of the backfill's wall time: linking every record and writing the persons.
    link_secs: Option<f64>,
    /// Of the backfill's wall time: extraction (fetch, parse, map, store), before linking.
    extraction_secs: Option<f64>,
    extraction_records_per_sec: Option<f64>,
    /// Extraction records/s ÷ the slowest stage limit.
    extraction_share_of_slowest_stage: Option<f64>,
    peak_rss_mb_above_simulators: Option<f64>,
    /// Peak RSS above the simulators' own while extracting: bounded by the queues.
    extraction_peak_rss_mb: Option<f64>,
    /// Peak RSS above the simulators' own while linking (the peak restarted when it began).
    link_peak_rss_mb: Option<f64>,
    sources: Vec<SourceFigures>,
    nochange_sync_secs: f64,
    nochange_sync_rows_written: u64,
    /// Every row the store's writer inserted, updated or deleted during the no-change sync,
    /// the runs' bookkeeping included (sync_run, sync_state, scan_sighting).
    nochange_sync_store_rows_changed: u64,
    /// Records the no-change sync read and mapped: those not found already mapped.
    nochange_sync_records_mapped: u64,
    /// Every stored record relinked by a fresh link index into empty person tables.
    link_all_secs: Option<f64>,
    link_all_records: Option<u64>,
    link_all_persons: Option<u64>,
    /// Pairs of records the full link compared.
    link_all_compared_pairs: Option<u64>,
    /// `plan` over every person, with every field of every writable source pushed.
    plan_secs: Option<f64>,
    plan_writes: Option<u64>,
    plan_refused: Option<u64>,
    stage_fetch_records_per_sec: Option<f64>,
    /// Parse and map, as the pipeline does, over every core.
    stage_parse_records_per_sec: Option<f64>,
    /// Records stored per second, each a `source_record`, `canonical_record` and
    /// `relink_queue` row (the name is kept for readers of the JSON).
    stage_store_rows_per_sec: Option<f64>,
    /// `source_record` upserts alone (raw payloads): the store-stage limit.
    stage_raw_upsert_rows_per_sec: Option<f64>,
    share_of_slowest_stage: Option<f64>,
    /// Requests ÷ allowed rate, for the slowest budget.
    floor_secs: Option<f64>,
    wall_over_floor: Option<f64>,
    /// (⌈requests ÷ N⌉ − 1) windows: the least a window-counting limit allows, bursts included.
    window_floor_secs: Option<f64>,
    wall_over_window_floor: Option<f64>,
    responses_429: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let documented = args.limits == Limits::Documented;
    let sims = sim::start(SimOptions {
        people: args.people,
        enforce_rate_limits: documented,
        ..SimOptions::default()
    })
    .await?;
    let dir = tempfile_dir()?;
    let store_path = dir.join("bench.db");
    // Without limits, pace nothing; with the documented ones, use each API's own defaults.
    let rate = if documented { None } else { Some("1000000/1s") };
    let config = super::demo::simulator_config(&sims, &store_path, rate, "")?;
    let store = Store::open(&config.store_path)?;
    let pipeline = Pipeline::new(config.clone(), &store)?;
    let mut report = Report {
        people: args.people,
        limits: format!("{:?}", args.limits).to_lowercase(),
        machine: machine::describe(),
        ..Report::default()
    };

    // `Pipeline::run`'s two halves, called here one after the other as `run` does, so that
    // each half's peak memory is measured on its own.
    let baseline = memory::reset_peak();
    let started = Instant::now();
    let sources = pipeline
        .extract(&RunOptions {
            mode: Mode::Backfill,
            only: Vec::new(),
            progress: Progress::quiet(),
        })
        .await?;
    let extraction_elapsed = started.elapsed();
    report.extraction_peak_rss_mb = memory::peak_above(baseline);
    memory::reset_peak();
    let link = pipeline.link_unless_stopping().await;
    let elapsed = started.elapsed();
    report.link_peak_rss_mb = memory::peak_above(baseline);
    report.peak_rss_mb_above_simulators = report
        .extraction_peak_rss_mb
        .zip(report.link_peak_rss_mb)
        .map(|(e, l)| e.max(l));
    let outcomes = RunReport { sources, link };
    check_all_succeeded(&outcomes)?;
    report.link_secs = outcomes
        .link
        .as_ref()
        .map(|l| l.millis as f64 / 1000.0)
        .ok();
    let outcomes = outcomes.sources;
    report.records = outcomes.iter().map(|o| o.counts.records_seen).sum();
    report.backfill_secs = elapsed.as_secs_f64();
    report.backfill_records_per_sec = report.records as f64 / elapsed.as_secs_f64();
    report.extraction_secs = Some(extraction_elapsed.as_secs_f64().max(f64::EPSILON));
    report.extraction_records_per_sec = report
        .extraction_secs
        .map(|secs| report.records as f64 / secs);
    for o in &outcomes {
        let kind: SourceKind = o.kind.parse().map_err(anyhow::Error::msg)?;
        let stats = sims.state().stats(kind);
        report.responses_429 += stats.rate_limited;
        report.sources.push(SourceFigures {
            source: o.source.clone(),
            records: o.counts.records_seen,
            requests: o.counts.requests,
            minimum_requests: o
                .counts
                .records_seen
                .div_ceil(kind.max_page_size() as u64)
                .max(1),
            throttled_429: stats.rate_limited,
        });
    }
    if documented {
        let (floor, window_floor) = floor_secs(&outcomes, &config);
        report.floor_secs = Some(floor);
        report.wall_over_floor = Some(elapsed.as_secs_f64() / floor.max(f64::EPSILON));
        report.window_floor_secs = Some(window_floor);
        report.wall_over_window_floor =
            Some(elapsed.as_secs_f64() / window_floor.max(f64::EPSILON));
    }

    let changes_before = total_changes(&store).await?;
    let started = Instant::now();
    let again = pipeline
        .run(&RunOptions {
            mode: Mode::Sync,
            only: Vec::new(),
            progress: Progress::quiet(),
        })
        .await?;
    report.nochange_sync_secs = started.elapsed().as_secs_f64();
    report.nochange_sync_store_rows_changed =
        total_changes(&store).await?.saturating_sub(changes_before);
    check_all_succeeded(&again)?;
    let again = again.sources;
    report.nochange_sync_rows_written = again
        .iter()
        .map(|o| o.counts.records.inserted + o.counts.records.updated + o.counts.deleted)
        .sum();
    report.nochange_sync_records_mapped = again
        .iter()
        .map(|o| {
            o.counts
                .records_seen
                .saturating_sub(o.counts.records.skipped_unchanged)
        })
        .sum();

    if !documented {
        settle(&store).await?;
        let (secs, outcome) = link_all(&store, &config).await?;
        report.link_all_secs = Some(secs);
        report.link_all_records = Some(outcome.records_linked as u64);
        report.link_all_persons = Some(outcome.persons_written as u64);
        report.link_all_compared_pairs = Some(outcome.compared_pairs);
        settle(&store).await?;
        let (secs, writes, refused) = plan_all(&config).await?;
        report.plan_secs = Some(secs);
        report.plan_writes = Some(writes);
        report.plan_refused = Some(refused);
    }

    if !documented {
        let stages = stage_limits(&config, &dir).await?;
        report.stage_fetch_records_per_sec = Some(stages.fetch);
        report.stage_parse_records_per_sec = Some(stages.parse_map);
        report.stage_raw_upsert_rows_per_sec = Some(stages.raw_upsert);
        report.stage_store_rows_per_sec = Some(stages.store);
        // The stages: fetch, parse + map, raw upsert. Writing the canonical and
        // relink rows is the pipeline's own choice of work, so it does not lower the limit.
        let slowest = stages.fetch.min(stages.parse_map).min(stages.raw_upsert);
        report.share_of_slowest_stage = Some(report.backfill_records_per_sec / slowest);
        report.extraction_share_of_slowest_stage =
            report.extraction_records_per_sec.map(|r| r / slowest);
    }
    sims.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_all_succeeded(report: &RunReport) -> anyhow::Result<()> {
    if let Err(e) = &report.link {
        anyhow::bail!("linking failed during the bench: {e}");
    }
    match report
        .sources
        .iter()
        .find(|o| o.status != RunStatus::Succeeded)
    {
        Some(o) => anyhow::bail!(
            "source `{}` failed during the bench: {}",
            o.source,
            o.error.as_deref().unwrap_or("")
        ),
        None => Ok(()),
    }
}

/// The least wall time the rate limits allow, for the slowest budget (sources sharing a key):
/// requests ÷ allowed rate, and the whole windows a burst-allowing window limit needs.
fn floor_secs(outcomes: &[SourceOutcome], config: &crate::config::Config) -> (f64, f64) {
    let mut by_budget: std::collections::HashMap<(bool, u64), (u64, Option<RateLimit>)> =
        Default::default();
    for o in outcomes {
        let Some(source) = config.source(&o.source) else {
            continue;
        };
        let limit = source.effective_rate_limit().or_else(|| {
            source
                .kind
                .is_carehq()
                .then(crate::source::carehq::assumed_rate_limit)
        });
        let key = (source.kind.is_carehq(), source.credentials.budget_key());
        let entry = by_budget.entry(key).or_insert((0, limit));
        entry.0 += o.counts.requests;
    }
    let budgets: Vec<(u64, RateLimit)> = by_budget
        .values()
        .filter_map(|(r, l)| l.map(|l| (*r, l)))
        .collect();
    let rate_floor = budgets
        .iter()
        .map(|(r, l)| *r as f64 * l.per.as_secs_f64() / l.requests as f64)
        .fold(0.0, f64::max);
    let window_floor = budgets
        .iter()
        .map(|(r, l)| {
            (r.div_ceil(l.requests as u64).saturating_sub(1)) as f64 * l.per.as_secs_f64()
        })
        .fold(0.0, f64::max);
    (rate_floor, window_floor)
}

/// Rows the writer's connection has inserted, updated or deleted since it opened.
async fn total_changes(store: &Store) -> anyhow::Result<u64> {
    store.writer.call(|conn| Ok(conn.total_changes())).await
}

/// Copies the write-ahead log into the database, untimed, so that a stage timed alone does not
/// share the machine with the background checkpoint of the stage before it (as it would not
/// in a new process).
async fn settle(store: &Store) -> anyhow::Result<()> {
    store
        .writer
        .call(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
}

/// Linking alone over the whole store: the person tables emptied, every canonical record
/// queued, and a fresh link index (as in a new process) built and persisted. Timed on the
/// writer, without the emptying.
async fn link_all(
    store: &Store,
    config: &crate::config::Config,
) -> anyhow::Result<(f64, crate::person::link::LinkOutcome)> {
    let (matching, policy) = (config.matching.clone(), config.survivorship.clone());
    store
        .writer
        .call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute_batch(
                "DELETE FROM person_provenance; DELETE FROM lifestyle; DELETE FROM health_profile;
                 DELETE FROM staff_user; DELETE FROM service_user; DELETE FROM person_link;
                 DELETE FROM person; DELETE FROM link_review; DELETE FROM link_runner_up;",
            )?;
            tx.execute(crate::store::QUEUE_ALL_CANONICAL_SQL, [])?;
            tx.commit()?;
            let started = Instant::now();
            let outcome = crate::person::link::Linker::new(matching, policy).link_pending(conn)?;
            Ok((started.elapsed().as_secs_f64(), outcome))
        })
        .await
}

/// `plan` over every person: every writable source keeps every canonical field it can hold
/// in line, and creates the persons it lacks. Returns wall time, writes and refusals.
async fn plan_all(config: &crate::config::Config) -> anyhow::Result<(f64, u64, u64)> {
    use crate::config::PushPolicy;
    use crate::model::{Field, Table};
    let mut config = config.clone();
    let fields: Vec<Field> = Field::ALL
        .iter()
        .copied()
        .filter(|f| f.table() == Table::Person)
        .collect();
    config.push = config
        .sources
        .iter()
        .filter(|s| s.kind != SourceKind::CarehqUsers)
        .map(|s| {
            (
                s.name.clone(),
                PushPolicy {
                    fields: fields.clone(),
                    create: true,
                    create_defaults: Default::default(),
                },
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let mappings = crate::sync::mapping::Mappings::builtin()?;
        let conn = crate::store::open_read_only(&config.store_path)?;
        let started = Instant::now();
        let plan = crate::sink::plan::compute(&conn, &config, &mappings)?;
        Ok((
            started.elapsed().as_secs_f64(),
            plan.writes.len() as u64,
            plan.refused.len() as u64,
        ))
    })
    .await?
}

/// Each stage alone, on every source's records (the same mix the backfill reads): fetch (HTTP
/// as the pipeline pages: numbered pages `http.concurrency` at a time, cursors one by one),
/// parse + map (on every core), and store (the writer's inserts of raw record, canonical row
/// and relink_queue row into a fresh database): each the work the pipeline does per record.
async fn stage_limits(
    config: &crate::config::Config,
    dir: &std::path::Path,
) -> anyhow::Result<StageLimits> {
    let mappings = match &config.mappings_dir {
        Some(dir) => crate::sync::mapping::Mappings::from_dir(dir)?,
        None => crate::sync::mapping::Mappings::builtin()?,
    };
    let http = HttpClient::build_client(&config.http)?;

    // Fetch: every page of every source, the sources side by side, bodies kept.
    let started = Instant::now();
    let fetched = futures::future::join_all(
        config
            .sources
            .iter()
            .map(|source| fetch_every_page(config, source, http.clone())),
    )
    .await;
    let fetch_secs = started.elapsed().as_secs_f64();
    let mut bodies: Vec<(usize, bytes::Bytes)> = Vec::new();
    for (i, result) in fetched.into_iter().enumerate() {
        bodies.extend(result?.into_iter().map(|b| (i, b)));
    }
    let apis: Vec<_> = config.sources.iter().map(|s| api_for(s.kind)).collect();
    let kind_mappings: Vec<_> = config
        .sources
        .iter()
        .map(|s| mappings.for_kind(s.kind).cloned())
        .collect();

    // Parse + map: the same bodies split over the cores, each record parsed and mapped as the
    // pipeline does (`Source::parser`: envelope, key, content hash, then the mapping).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let parsed: Vec<(usize, Vec<StoredRecord>)> = std::thread::scope(|scope| {
        let chunks: Vec<_> = bodies.chunks(bodies.len().div_ceil(cores).max(1)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (apis, kind_mappings) = (&apis, &kind_mappings);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(i, body)| {
                            let mut page = apis[*i].parse_page(body).ok()?;
                            if let Some(m) = &kind_mappings[*i] {
                                for r in &mut page.records {
                                    r.canonical =
                                        CanonicalForm::Mapped(map_payload(&m.mapping, &r.payload));
                                }
                            }
                            Some((*i, page.records))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let parse_secs = started.elapsed().as_secs_f64();
    let records: usize = parsed.iter().map(|(_, r)| r.len()).sum();

    // Store: the writer alone, into a fresh database, writing what the pipeline writes for a
    // new record: the raw record, its canonical row and its relink_queue row, with each
    // page's checkpoint.
    // Raw upsert (the physical limit): the same pages with no canonical form, so only
    // `source_record` rows; copied a page at a time, the writer's queue bounding memory.
    let raw_secs = store_pages(
        config,
        &dir.join("stage-raw.db"),
        &kind_mappings,
        parsed.iter().map(|(i, page)| {
            let raw = page
                .iter()
                .map(|r| StoredRecord {
                    canonical: CanonicalForm::NoMapping,
                    ..r.clone()
                })
                .collect();
            (*i, raw)
        }),
    )
    .await?;
    let store_secs = store_pages(
        config,
        &dir.join("stage.db"),
        &kind_mappings,
        parsed.into_iter(),
    )
    .await?;
    let per_sec = |secs: f64| records as f64 / secs.max(f64::EPSILON);
    Ok(StageLimits {
        fetch: per_sec(fetch_secs),
        parse_map: per_sec(parse_secs),
        raw_upsert: per_sec(raw_secs),
        store: per_sec(store_secs),
    })
}

/// Records per second of each stage alone.
struct StageLimits {
    fetch: f64,
    parse_map: f64,
    /// `source_record` rows only.
    raw_upsert: f64,
    /// What the pipeline writes per new record: raw, canonical and relink_queue rows.
    store: f64,
}

/// The writer alone, into a fresh database at `path`: every page with its checkpoint.
/// Returns the wall seconds.
async fn store_pages(
    config: &crate::config::Config,
    path: &std::path::Path,
    kind_mappings: &[Option<crate::sync::mapping::KindMapping>],
    pages: impl Iterator<Item = (usize, Vec<StoredRecord>)>,
) -> anyhow::Result<f64> {
    let store = Store::open(path)?;
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    store
        .writer
        .call(move |conn| {
            for name in names {
                conn.execute(
                    "INSERT INTO sync_state (source, scan_id, scan_mode, scan_started_at) VALUES (?1, 1, 'full', '')",
                    [name],
                )?;
            }
            Ok(())
        })
        .await?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for (n, (i, page)) in pages.enumerate() {
        let source = &config.sources[i];
        pending.push(
            store
                .writer
                .write_page(PageWrite {
                    source: Arc::from(source.name.as_str()),
                    kind: source.kind.as_str(),
                    scan_id: 1,
                    records: page,
                    mapping: kind_mappings[i].clone(),
                    checkpoint: Some(Checkpoint {
                        scan_id: 1,
                        next_position: None,
                        pages_done: n as u64 + 1,
                        watermark: None,
                    }),
                })
                .await?,
        );
    }
    for rx in pending {
        rx.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Every list page of one source, paged as `sync::paginate` pages it; bodies unparsed except
/// where the next position is in the body (cursors, pages without a count).
async fn fetch_every_page(
    config: &crate::config::Config,
    source: &crate::config::SourceConfig,
    http: reqwest::Client,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    let api = api_for(source.kind);
    let client = HttpClient::new(
        http,
        source.collection_url(),
        source.credentials.clone(),
        config.http.clone(),
        Arc::new(RateLimiter::unlimited()),
    );
    let (size, scope) = (source.page_size, Scope::default());
    let mut position = Position::first(api.paging());
    let body = client
        .execute(&api.list_request(&position, size, &scope), Ok)
        .await?;
    let mut page = api.parse_page(&body).map_err(anyhow::Error::msg)?;
    let mut bodies = vec![body];
    if let (Paging::Numbered { first }, Some(n)) = (api.paging(), page.total_pages) {
        let rest: Vec<bytes::Bytes> = futures::stream::iter(first + 1..first + n)
            .map(|p| {
                let spec = api.list_request(&Position::Page(p), size, &scope);
                let client = &client;
                async move { client.execute(&spec, Ok).await }
            })
            .buffered(config.http.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        bodies.extend(rest);
        return Ok(bodies);
    }
    loop {
        position = match (&position, page.has_more, page.next_cursor.take()) {
            (Position::Cursor(_), Some(true), Some(cursor)) => Position::Cursor(Some(cursor)),
            (Position::Page(p), _, _) if page.records.len() >= size as usize => {
                Position::Page(p + 1)
            }
            _ => return Ok(bodies),
        };
        let body = client
            .execute(&api.list_request(&position, size, &scope), Ok)
            .await?;
        page = api.parse_page(&body).map_err(anyhow::Error::msg)?;
        bodies.push(body);
    }
}

fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "caresync bench: {} people, limits {}\nmachine: {}",
        r.people, r.limits, r.machine
    );
    let _ = writeln!(
        out,
        "\nend-to-end backfill (raw payloads into a fresh store)"
    );
    let _ = writeln!(out, "  records            {:>12}", r.records);
    let _ = writeln!(out, "  wall time          {:>12.2} s", r.backfill_secs);
    let _ = writeln!(
        out,
        "  records/s          {:>12.0}",
        r.backfill_records_per_sec
    );
    if let Some(secs) = r.link_secs {
        let _ = writeln!(out, "  of which linking   {:>12.2} s", secs);
    }
    if let (Some(secs), Some(rate)) = (r.extraction_secs, r.extraction_records_per_sec) {
        let _ = writeln!(out, "  of which extraction{:>12.2} s", secs);
        let _ = writeln!(out, "  extraction records/s {:>10.0}", rate);
    }
    if let Some(mb) = r.peak_rss_mb_above_simulators {
        let _ = writeln!(
            out,
            "  peak RSS           {:>12.1} MB above the simulators' own",
            mb
        );
    }
    if let (Some(extraction), Some(link)) = (r.extraction_peak_rss_mb, r.link_peak_rss_mb) {
        let _ = writeln!(out, "    while extracting {:>12.1} MB", extraction);
        let _ = writeln!(out, "    while linking    {:>12.1} MB", link);
    }
    let _ = writeln!(
        out,
        "\nrequests per source (minimum = records / maximum page size)"
    );
    for s in &r.sources {
        let _ = writeln!(
            out,
            "  {:<24} {:>8} records {:>6} requests {:>6} minimum {:>4} x 429",
            s.source, s.records, s.requests, s.minimum_requests, s.throttled_429
        );
    }
    let _ = writeln!(out, "\nsecond sync, no upstream change");
    let _ = writeln!(out, "  wall time          {:>12.2} s", r.nochange_sync_secs);
    let _ = writeln!(
        out,
        "  rows written       {:>12}   (records, canonical forms, deletions)",
        r.nochange_sync_rows_written
    );
    let _ = writeln!(
        out,
        "  store rows changed {:>12}   (every table; bookkeeping: runs, checkpoints, sightings)",
        r.nochange_sync_store_rows_changed
    );
    let _ = writeln!(
        out,
        "  records mapped     {:>12}",
        r.nochange_sync_records_mapped
    );
    if let (Some(secs), Some(records), Some(persons)) =
        (r.link_all_secs, r.link_all_records, r.link_all_persons)
    {
        let _ = writeln!(
            out,
            "\nlinking alone, whole store, fresh index into empty person tables (WAL checkpointed first)"
        );
        let _ = writeln!(out, "  records            {:>12}", records);
        let _ = writeln!(out, "  persons written    {:>12}", persons);
        if let Some(pairs) = r.link_all_compared_pairs {
            let _ = writeln!(
                out,
                "  pairs compared     {:>12}   ({:.2} a record)",
                pairs,
                pairs as f64 / records.max(1) as f64
            );
        }
        let _ = writeln!(out, "  wall time          {:>12.2} s", secs);
    }
    if let (Some(secs), Some(writes), Some(refused)) = (r.plan_secs, r.plan_writes, r.plan_refused)
    {
        let _ = writeln!(
            out,
            "\nplan over all persons (every person field pushed, creates on; WAL checkpointed first)"
        );
        let _ = writeln!(out, "  writes planned     {:>12}", writes);
        let _ = writeln!(out, "  refused            {:>12}", refused);
        let _ = writeln!(out, "  wall time          {:>12.2} s", secs);
    }
    if let (Some(f), Some(p), Some(s)) = (
        r.stage_fetch_records_per_sec,
        r.stage_parse_records_per_sec,
        r.stage_store_rows_per_sec,
    ) {
        let _ = writeln!(
            out,
            "\nstage limits, same record shapes (records/s; the limit is the slowest of fetch, parse + map and raw upsert)"
        );
        let _ = writeln!(out, "  fetch (HTTP)       {:>12.0}", f);
        let _ = writeln!(out, "  parse + map        {:>12.0}", p);
        if let Some(raw) = r.stage_raw_upsert_rows_per_sec {
            let _ = writeln!(out, "  raw upsert         {:>12.0}", raw);
        }
        let _ = writeln!(out, "  store (record, canonical, relink queue) {:>6.0}", s);
        if let Some(share) = r.share_of_slowest_stage {
            let _ = writeln!(
                out,
                "  end-to-end share of the slowest stage {:>6.0}%",
                share * 100.0
            );
        }
        if let Some(share) = r.extraction_share_of_slowest_stage {
            let _ = writeln!(
                out,
                "  extraction share of the slowest stage {:>6.0}%",
                share * 100.0
            );
        }
    }
    if let (Some(floor), Some(ratio), Some(wfloor), Some(wratio)) = (
        r.floor_secs,
        r.wall_over_floor,
        r.window_floor_secs,
        r.wall_over_window_floor,
    ) {
        let _ = writeln!(out, "\nrate limits, {} x 429 received", r.responses_429);
        let _ = writeln!(
            out,
            "  wall time vs requests / rate          {:>8.2} s vs {:>8.2} s  ({:.2}x)",
            r.backfill_secs, floor, ratio
        );
        let _ = writeln!(
            out,
            "  wall time vs whole windows needed     {:>8.2} s vs {:>8.2} s  ({:.2}x)",
            r.backfill_secs, wfloor, wratio
        );
    }
    out
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("caresync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What the figures were measured on, from /proc (Linux); elsewhere the core count only.
mod machine {
    pub fn describe() -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| model_name(&info))
            .unwrap_or_else(|| "unknown processor".to_string());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| total_gib(&info))
            .map_or(String::new(), |gib| format!(", {gib:.1} GiB"));
        format!("{cpu}, {cores} cores{memory}")
    }

    fn model_name(cpuinfo: &str) -> Option<String> {
        let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
        let name = line.split_once(':')?.1.trim();
        (!name.is_empty()).then(|| name.to_string())
    }

    fn total_gib(meminfo: &str) -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / (1024.0 * 1024.0))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_the_processor_and_memory() {
            let cpuinfo =
                "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
            assert_eq!(super::model_name(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
            assert_eq!(super::model_name("processor\t: 0\nmodel name\t:\n"), None);
            let meminfo = "MemTotal:       24683520 kB\nMemFree:        1 kB\n";
            let gib = super::total_gib(meminfo).unwrap();
            assert!((gib - 23.54).abs() < 0.01, "{gib}");
        }
    }
}

/// Peak resident memory, from /proc (Linux); elsewhere the bench reports none.
mod memory {
    fn read_kb(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Resets the kernel's peak (VmHWM) to the current RSS and returns that RSS in kB.
    pub fn reset_peak() -> Option<u64> {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        read_kb("VmRSS:")
    }

    pub fn peak_above(baseline: Option<u64>) -> Option<f64> {
        let peak = read_kb("VmHWM:")?;
        Some(peak.saturating_sub(baseline?) as f64 / 1024.0)
    }
}

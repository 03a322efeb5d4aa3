//! `caresync status [--json]`: per source the last run, the next scheduled run, the
//! watermark and the last run's errors; then writes waiting or failed, open conflicts and
//! records that failed mapping. Reads the store only (safe while the daemon runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub store: String,
    pub at: String,
    pub sources: Vec<SourceStatus>,
    /// Outbox writes waiting to be sent (`pending`, `sending`); `None`: no outbox in this store.
    pub pending_writes: Option<i64>,
    /// Outbox writes that failed for good.
    pub failed_writes: Option<i64>,
    /// Conflicts nobody has resolved yet; `None`: no conflict table in this store.
    pub open_conflicts: Option<i64>,
    /// Each open conflict (ids and field names), oldest first.
    pub conflicts: Vec<OpenConflict>,
    pub mapping_failures: i64,
}

#[derive(Debug, Serialize)]
pub struct OpenConflict {
    pub conflict_id: i64,
    pub source: String,
    pub external_id: String,
    pub person_id: i64,
    pub field: String,
    pub detected_at: String,
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub kind: String,
    pub schedule: Option<String>,
    pub next_run: Option<String>,
    pub last_run: Option<LastRun>,
    pub last_success_at: Option<String>,
    /// CareHQ: the newest `modified` of the last completed scan (incremental reads start here).
    pub watermark: Option<String>,
    /// An unfinished scan's checkpoint (pages done), when one is waiting to resume.
    pub resumable_pages: Option<i64>,
    pub last_run_errors: Vec<ErrorSummary>,
    pub mapping_failures: i64,
    pub pending_writes: Option<i64>,
    pub failed_writes: Option<i64>,
    pub open_conflicts: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct LastRun {
    pub run_id: i64,
    pub mode: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_secs: Option<i64>,
    pub pages: i64,
    pub requests: i64,
    pub records_seen: i64,
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deleted: i64,
    pub errors: i64,
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ErrorSummary {
    pub kind: String,
    pub count: i64,
    /// One of the messages (they never carry personal data).
    pub example: String,
}

pub async fn run(config: &Config, args: StatusArgs) -> Result<ExitCode> {
    let status = collect(config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn has_table(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// Counts per source from an optional table; `None` when the table (or its query) is absent.
fn counts_by_source(conn: &Connection, table: &str, sql: &str) -> Option<BTreeMap<String, i64>> {
    if !has_table(conn, table).ok()? {
        return None;
    }
    let mut stmt = conn.prepare(sql).ok()?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .ok()?;
    rows.collect::<rusqlite::Result<BTreeMap<_, _>>>().ok()
}

pub fn collect(config: &Config) -> Result<Status> {
    let path = &config.store_path;
    if !path.exists() {
        anyhow::bail!(
            "there is no store at {} yet: run `caresync backfill` first",
            path.display()
        );
    }
    let conn = crate::store::open_read_only(path)?;
    let now = chrono::Utc::now();
    let pending = counts_by_source(
        &conn,
        "outbox",
        "SELECT source, count(*) FROM outbox WHERE status IN ('pending', 'sending') GROUP BY source",
    );
    let failed = counts_by_source(
        &conn,
        "outbox",
        "SELECT source, count(*) FROM outbox WHERE status = 'failed' GROUP BY source",
    );
    let conflicts = counts_by_source(
        &conn,
        "conflict",
        "SELECT source, count(*) FROM conflict WHERE resolved_at IS NULL GROUP BY source",
    );
    let failures = counts_by_source(
        &conn,
        "mapping_failure",
        "SELECT source, count(*) FROM mapping_failure GROUP BY source",
    )
    .unwrap_or_default();
    let of = |m: &Option<BTreeMap<String, i64>>, s: &str| {
        m.as_ref().map(|m| m.get(s).copied().unwrap_or(0))
    };
    let total = |m: &Option<BTreeMap<String, i64>>| m.as_ref().map(|m| m.values().sum());

    let mut sources = Vec::new();
    for s in &config.sources {
        let last_run = last_run(&conn, &s.name)?;
        let last_success_at: Option<String> = conn
            .query_row(
                "SELECT MAX(finished_at) FROM sync_run WHERE source = ?1 AND status = 'succeeded'",
                [&s.name],
                |r| r.get(0),
            )
            .context("reading sync_run")?;
        let state: Option<(Option<String>, bool, i64)> = conn
            .query_row(
                "SELECT watermark, complete, pages_done FROM sync_state WHERE source = ?1",
                [&s.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .context("reading sync_state")?;
        let last_run_errors = match &last_run {
            Some(run) => errors_of(&conn, run.run_id)?,
            None => Vec::new(),
        };
        sources.push(SourceStatus {
            source: s.name.clone(),
            kind: s.kind.as_str().to_string(),
            schedule: s.schedule.clone(),
            next_run: s.schedule.as_deref().and_then(|e| {
                crate::daemon::schedule::next_after(e, now)
                    .ok()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }),
            last_run,
            last_success_at,
            watermark: state.as_ref().and_then(|s| s.0.clone()),
            resumable_pages: state.as_ref().filter(|s| !s.1 && s.2 > 0).map(|s| s.2),
            last_run_errors,
            mapping_failures: failures.get(&s.name).copied().unwrap_or(0),
            pending_writes: of(&pending, &s.name),
            failed_writes: of(&failed, &s.name),
            open_conflicts: of(&conflicts, &s.name),
        });
    }
    Ok(Status {
        store: path.display().to_string(),
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sources,
        pending_writes: total(&pending),
        failed_writes: total(&failed),
        open_conflicts: total(&conflicts),
        conflicts: open_conflicts(&conn),
        mapping_failures: failures.values().sum(),
    })
}

/// The open conflicts, oldest first; none when the store has no conflict table yet.
fn open_conflicts(conn: &Connection) -> Vec<OpenConflict> {
    let Ok(mut stmt) = conn.prepare(
        "SELECT conflict_id, source, external_id, person_id, field, detected_at FROM v_conflicts ORDER BY conflict_id",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        Ok(OpenConflict {
            conflict_id: r.get(0)?,
            source: r.get(1)?,
            external_id: r.get(2)?,
            person_id: r.get(3)?,
            field: r.get(4)?,
            detected_at: r.get(5)?,
        })
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

fn last_run(conn: &Connection, source: &str) -> Result<Option<LastRun>> {
    conn.query_row(
        "SELECT run_id, mode, status, started_at, finished_at, pages, requests, records_seen,
                records_inserted, records_updated, records_unchanged, records_deleted, error_count, message
         FROM sync_run WHERE source = ?1 ORDER BY run_id DESC LIMIT 1",
        [source],
        |r| {
            let started_at: String = r.get(3)?;
            let finished_at: Option<String> = r.get(4)?;
            let duration_secs = finished_at.as_deref().and_then(|f| {
                let a = chrono::DateTime::parse_from_rfc3339(&started_at).ok()?;
                let b = chrono::DateTime::parse_from_rfc3339(f).ok()?;
                Some((b - a).num_seconds())
            });
            Ok(LastRun {
                run_id: r.get(0)?,
                mode: r.get(1)?,
                status: r.get(2)?,
                started_at,
                finished_at,
                duration_secs,
                pages: r.get(5)?,
                requests: r.get(6)?,
                records_seen: r.get(7)?,
                inserted: r.get(8)?,
                updated: r.get(9)?,
                unchanged: r.get(10)?,
                deleted: r.get(11)?,
                errors: r.get(12)?,
                message: r.get(13)?,
            })
        },
    )
    .optional()
    .context("reading sync_run")
}

fn errors_of(conn: &Connection, run_id: i64) -> Result<Vec<ErrorSummary>> {
    let mut stmt = conn.prepare(
        "SELECT kind, count(*), MIN(message) FROM sync_error WHERE run_id = ?1 GROUP BY kind ORDER BY 2 DESC",
    )?;
    let rows = stmt.query_map(params![run_id], |r| {
        Ok(ErrorSummary {
            kind: r.get(0)?,
            count: r.get(1)?,
            example: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn n_a(v: Option<i64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |n| n.to_string())
}

/// The terminal view.
pub fn render(s: &Status) -> String {
    let headers = [
        "source",
        "last run",
        "result",
        "took",
        "seen",
        "new",
        "changed",
        "deleted",
        "errors",
        "next run",
        "watermark",
    ];
    let rows: Vec<Vec<String>> = s
        .sources
        .iter()
        .map(|src| {
            let r = src.last_run.as_ref();
            let dash = || "-".to_string();
            vec![
                src.source.clone(),
                r.map_or_else(dash, |r| format!("{} {}", r.mode, r.started_at)),
                r.map_or_else(dash, |r| r.status.clone()),
                r.and_then(|r| r.duration_secs)
                    .map_or_else(dash, |d| format!("{d}s")),
                r.map_or_else(dash, |r| r.records_seen.to_string()),
                r.map_or_else(dash, |r| r.inserted.to_string()),
                r.map_or_else(dash, |r| r.updated.to_string()),
                r.map_or_else(dash, |r| r.deleted.to_string()),
                r.map_or_else(dash, |r| r.errors.to_string()),
                src.next_run
                    .clone()
                    .unwrap_or_else(|| "not scheduled".to_string()),
                src.watermark.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "Store {} at {}\n", s.store, s.at);
    let line = |out: &mut String, cells: &[String]| {
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            if (4..=8).contains(&i) {
                let _ = write!(out, "{sep}{cell:>w$}");
            } else {
                let _ = write!(out, "{sep}{cell:<w$}");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(
        &mut out,
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for row in &rows {
        line(&mut out, row);
    }
    let mut problems = String::new();
    for src in &s.sources {
        let Some(run) = &src.last_run else { continue };
        if let Some(pages) = src.resumable_pages {
            let _ = writeln!(
                problems,
                "  {}: an unfinished scan resumes after page {pages}",
                src.source
            );
        }
        if run.status != "succeeded"
            && let Some(m) = &run.message
        {
            let _ = writeln!(
                problems,
                "  {} run {} {}: {m}",
                src.source, run.run_id, run.status
            );
        }
        for e in &src.last_run_errors {
            let _ = writeln!(
                problems,
                "  {} run {}: {} x{}, e.g. {}",
                src.source, run.run_id, e.kind, e.count, e.example
            );
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "\nProblems of the last runs:\n{problems}");
    } else {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Writes: {} pending, {} failed. Open conflicts: {}. Records that failed mapping: {}.",
        n_a(s.pending_writes),
        n_a(s.failed_writes),
        n_a(s.open_conflicts),
        s.mapping_failures
    );
    let by_source: Vec<String> = s
        .sources
        .iter()
        .filter(|x| {
            x.mapping_failures > 0
                || x.pending_writes.unwrap_or(0) > 0
                || x.failed_writes.unwrap_or(0) > 0
                || x.open_conflicts.unwrap_or(0) > 0
        })
        .map(|x| {
            format!(
                "  {}: {} pending, {} failed, {} conflicts, {} mapping failures",
                x.source,
                n_a(x.pending_writes),
                n_a(x.failed_writes),
                n_a(x.open_conflicts),
                x.mapping_failures
            )
        })
        .collect();
    if !by_source.is_empty() {
        let _ = writeln!(out, "{}", by_source.join("\n"));
    }
    const LISTED: usize = 20;
    if !s.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\nOpen conflicts (the record changed upstream; nothing was overwritten):"
        );
        for c in s.conflicts.iter().take(LISTED) {
            let _ = writeln!(
                out,
                "  #{} {} {} (person {}) {} since {}",
                c.conflict_id, c.source, c.external_id, c.person_id, c.field, c.detected_at
            );
        }
        if s.conflicts.len() > LISTED {
            let _ = writeln!(
                out,
                "  ... and {} more: SELECT * FROM v_conflicts",
                s.conflicts.len() - LISTED
            );
        }
    }
    out
}

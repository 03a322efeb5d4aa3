//! The daemon's in-memory metrics, updated after each run, served as Prometheus text and
//! summarised as health.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::sync::{RunStatus, SourceOutcome};

/// Per source, since the daemon started (the last success is seeded from the store).
#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    pub runs: BTreeMap<&'static str, u64>,
    pub records_seen: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub requests: u64,
    pub throttled: u64,
    pub errors: u64,
    pub skipped_ticks: u64,
    pub duration_sum: f64,
    pub duration_count: u64,
    pub last_duration: Option<f64>,
    pub last_status: Option<&'static str>,
    pub last_success: Option<DateTime<Utc>>,
    pub running: bool,
    /// How long without a success before the source is unhealthy.
    pub window: Duration,
}

pub struct Metrics {
    started: DateTime<Utc>,
    sources: Mutex<BTreeMap<String, SourceMetrics>>,
    link_failures: Mutex<u64>,
}

/// One source's health, as `/healthz` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    pub source: String,
    pub healthy: bool,
    pub last_success: Option<String>,
    pub window_secs: u64,
    pub reason: Option<String>,
}

impl Metrics {
    /// `sources`: (name, health window, last success found in the store).
    pub fn new(sources: &[(String, Duration, Option<DateTime<Utc>>)]) -> Metrics {
        Metrics {
            started: Utc::now(),
            sources: Mutex::new(
                sources
                    .iter()
                    .map(|(name, window, last)| {
                        (
                            name.clone(),
                            SourceMetrics {
                                window: *window,
                                last_success: *last,
                                ..SourceMetrics::default()
                            },
                        )
                    })
                    .collect(),
            ),
            link_failures: Mutex::new(0),
        }
    }

    fn with<R>(&self, source: &str, f: impl FnOnce(&mut SourceMetrics) -> R) -> R {
        let mut all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(source.to_string()).or_default())
    }

    pub fn skipped(&self, source: &str) -> u64 {
        self.with(source, |m| {
            m.skipped_ticks += 1;
            m.skipped_ticks
        })
    }

    pub fn started(&self, source: &str) {
        self.with(source, |m| m.running = true);
    }

    /// A run that could not even start (its sources could not be built).
    pub fn not_started(&self, source: &str) {
        self.with(source, |m| {
            m.running = false;
            *m.runs.entry(RunStatus::Failed.as_str()).or_default() += 1;
            m.errors += 1;
            m.last_status = Some(RunStatus::Failed.as_str());
        });
    }

    pub fn finished(&self, outcome: &SourceOutcome, throttled: u64) {
        let c = &outcome.counts;
        self.with(&outcome.source, |m| {
            m.running = false;
            *m.runs.entry(outcome.status.as_str()).or_default() += 1;
            m.records_seen += c.records_seen;
            m.inserted += c.records.inserted;
            m.updated += c.records.updated;
            m.unchanged += c.records.unchanged;
            m.deleted += c.deleted;
            m.requests += c.requests;
            m.throttled += throttled;
            m.errors += c.errors;
            let secs = outcome.elapsed.as_secs_f64();
            m.duration_sum += secs;
            m.duration_count += 1;
            m.last_duration = Some(secs);
            m.last_status = Some(outcome.status.as_str());
            if outcome.status == RunStatus::Succeeded {
                m.last_success = Some(Utc::now());
            }
        });
    }

    pub fn link_failed(&self) {
        *self.link_failures.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceMetrics> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Healthy when every source succeeded within its window. A source that has not
    /// succeeded since the daemon started is given one window from the start.
    pub fn health(&self, now: DateTime<Utc>) -> (bool, Vec<SourceHealth>) {
        let list: Vec<SourceHealth> = self
            .snapshot()
            .into_iter()
            .map(|(source, m)| {
                let window = chrono::Duration::from_std(m.window).unwrap_or(chrono::Duration::MAX);
                let reason = match m.last_success {
                    Some(t) if now - t <= window => None,
                    Some(t) => Some(format!(
                        "no successful run for {}s (window {}s)",
                        (now - t).num_seconds(),
                        m.window.as_secs()
                    )),
                    None if now - self.started <= window => None,
                    None => Some(format!(
                        "no successful run since the daemon started {}s ago (window {}s)",
                        (now - self.started).num_seconds(),
                        m.window.as_secs()
                    )),
                };
                SourceHealth {
                    source,
                    healthy: reason.is_none(),
                    last_success: m.last_success.map(|t| t.to_rfc3339()),
                    window_secs: m.window.as_secs(),
                    reason,
                }
            })
            .collect();
        (list.iter().all(|s| s.healthy), list)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let all = self.snapshot();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let per = |f: &dyn Fn(&SourceMetrics) -> Option<f64>| -> Vec<(String, f64)> {
            all.iter()
                .filter_map(|(s, m)| f(m).map(|v| (format!("source=\"{}\"", escape(s)), v)))
                .collect()
        };
        let mut runs = Vec::new();
        for (s, m) in &all {
            for (status, n) in &m.runs {
                runs.push((
                    format!("source=\"{}\",status=\"{status}\"", escape(s)),
                    *n as f64,
                ));
            }
        }
        family(
            "caresync_runs_total",
            "counter",
            "Runs finished, by result.",
            runs,
        );
        let mut records = Vec::new();
        for (s, m) in &all {
            for (change, n) in [
                ("seen", m.records_seen),
                ("inserted", m.inserted),
                ("updated", m.updated),
                ("unchanged", m.unchanged),
                ("deleted", m.deleted),
            ] {
                records.push((
                    format!("source=\"{}\",change=\"{change}\"", escape(s)),
                    n as f64,
                ));
            }
        }
        family(
            "caresync_records_synced_total",
            "counter",
            "Records read, by what the store did with them.",
            records,
        );
        family(
            "caresync_requests_total",
            "counter",
            "HTTP requests made to the source's API.",
            per(&|m| Some(m.requests as f64)),
        );
        family(
            "caresync_throttled_total",
            "counter",
            "Responses with status 429 (rate limited).",
            per(&|m| Some(m.throttled as f64)),
        );
        family(
            "caresync_errors_total",
            "counter",
            "Problems recorded in sync_error (retried requests included).",
            per(&|m| Some(m.errors as f64)),
        );
        family(
            "caresync_skipped_ticks_total",
            "counter",
            "Scheduled runs skipped because the previous run was still going.",
            per(&|m| Some(m.skipped_ticks as f64)),
        );
        family(
            "caresync_run_duration_seconds_sum",
            "counter",
            "Total time spent in runs.",
            per(&|m| Some(m.duration_sum)),
        );
        family(
            "caresync_run_duration_seconds_count",
            "counter",
            "Runs timed.",
            per(&|m| Some(m.duration_count as f64)),
        );
        family(
            "caresync_last_run_duration_seconds",
            "gauge",
            "How long the last run took.",
            per(&|m| m.last_duration),
        );
        family(
            "caresync_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful run.",
            per(&|m| m.last_success.map(|t| t.timestamp() as f64)),
        );
        family(
            "caresync_running",
            "gauge",
            "1 while a run of the source is going.",
            per(&|m| Some(if m.running { 1.0 } else { 0.0 })),
        );
        let (healthy, _) = self.health(Utc::now());
        let link_failures = *self.link_failures.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP caresync_link_failures_total Linking steps that failed.\n# TYPE caresync_link_failures_total counter\ncaresync_link_failures_total {link_failures}"
        );
        let _ = writeln!(
            out,
            "# HELP caresync_healthy 1 when every scheduled source succeeded within its window.\n# TYPE caresync_healthy gauge\ncaresync_healthy {}",
            u8::from(healthy)
        );
        out
    }
}

/// Label values: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunCounts;

    #[test]
    fn metrics_render_and_health_follows_the_window() {
        let m = Metrics::new(&[("a".into(), Duration::from_secs(60), None)]);
        let mut counts = RunCounts {
            requests: 3,
            records_seen: 10,
            ..RunCounts::default()
        };
        counts.records.inserted = 4;
        m.finished(
            &SourceOutcome {
                source: "a".into(),
                kind: "pace_users",
                run_id: 1,
                status: RunStatus::Succeeded,
                counts,
                elapsed: Duration::from_millis(1500),
                error: None,
            },
            2,
        );
        m.skipped("a");
        let text = m.render();
        for line in [
            "caresync_runs_total{source=\"a\",status=\"succeeded\"} 1",
            "caresync_records_synced_total{source=\"a\",change=\"inserted\"} 4",
            "caresync_requests_total{source=\"a\"} 3",
            "caresync_throttled_total{source=\"a\"} 2",
            "caresync_skipped_ticks_total{source=\"a\"} 1",
            "caresync_last_run_duration_seconds{source=\"a\"} 1.5",
            "caresync_healthy 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let (ok, _) = m.health(Utc::now() + chrono::Duration::seconds(30));
        assert!(ok);
        let (ok, list) = m.health(Utc::now() + chrono::Duration::seconds(120));
        assert!(!ok);
        assert!(list[0].reason.as_deref().unwrap().contains("window 60s"));
    }
}

//! Issue 6: the daemon (schedules, no overlaps, clean stop, health, metrics), `status`,
//! logs without personal data, owner-only files, and `forget`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use caresync::cli::demo::{simulator_config_toml, simulator_env, simulator_source_name};
use caresync::sim::FaultConfig;
use caresync::sim::generator::PersonTruth;
use caresync::source::kind::SourceKind;
use caresync::sync::Mode;

use crate::support::{Harness, assert_all_succeeded, options};

const EVERY_SECOND: &str = "schedule = \"* * * * * *\"\n";

/// `caresync daemon` on `config`, its stderr going to `log`.
fn spawn_daemon(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_caresync"))
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .envs(simulator_env())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("caresync daemon starts")
}

/// Sends SIGTERM and waits (without blocking the runtime the simulators run on).
async fn terminate(child: &mut Child) -> (ExitStatus, Duration) {
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "SIGTERM could not be sent");
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status, sent.elapsed());
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the daemon did not stop within 20 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Fails the test if the daemon exited early (a config or start-up error), showing its log.
fn assert_alive(child: &mut Child, log: &Path) {
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!(
            "the daemon exited early ({status}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Where the daemon serves /healthz and /metrics: it listens on port 0 (a port picked by the
/// system, so no other test can take it first) and logs the address it bound.
async fn served_addr(child: &mut Child, log: &Path) -> String {
    let started = Instant::now();
    loop {
        assert_alive(child, log);
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("serving /healthz"))
            .and_then(|l| l.split("listen=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
        {
            return addr.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon did not log where it listens:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The sync_run rows of one source: (run_id, status, started_at, finished_at, message).
type RunRow = (i64, String, String, Option<String>, Option<String>);

fn runs_of(h: &Harness, source: &str) -> Vec<RunRow> {
    let db = h.db();
    let mut stmt = db
        .prepare("SELECT run_id, status, started_at, finished_at, message FROM sync_run WHERE source = ?1 ORDER BY run_id")
        .unwrap();
    stmt.query_map([source], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_picks_up_a_change_within_3_seconds() {
    let h = Harness::start_with(
        options(200),
        Some("1000/1s"),
        &format!("page_size = 50\n{EVERY_SECOND}"),
        |text| format!("{text}\n[daemon]\nlisten = \"127.0.0.1:0\"\nhealth_window = \"60s\"\n"),
    )
    .await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let log = h._dir.path().join("daemon.log");
    let mut child = spawn_daemon(&h.config.file, &log, &[]);
    let addr = served_addr(&mut child, &log).await;
    let name = simulator_source_name(SourceKind::CarehqServiceUsers);
    // Wait for the daemon's first sync of the source, so the edit is picked up by a tick.
    let started = Instant::now();
    while runs_of(&h, name)
        .iter()
        .filter(|r| r.1 == "succeeded")
        .count()
        < 2
    {
        assert_alive(&mut child, &log);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no daemon run:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = h.sims.state().keys(SourceKind::CarehqServiceUsers)[3].clone();
    let id = SourceKind::CarehqServiceUsers.normalise_external_id(&key);
    assert!(h.sims.state().update_field(
        SourceKind::CarehqServiceUsers,
        &key,
        "preferred_name",
        serde_json::json!("Daemonpicked")
    ));
    let changed = Instant::now();
    loop {
        let stored: Option<String> = h
            .db()
            .query_row(
                "SELECT json_extract(payload, '$.preferred_name') FROM source_record WHERE source = ?1 AND external_id = ?2",
                [name, id.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        if stored.as_deref() == Some("Daemonpicked") {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the change was not stored within 3 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Health and metrics while it runs.
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz answers");
    assert_eq!(health.status().as_u16(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["sources"].as_array().unwrap().len(), 5, "{body}");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap();
    for family in [
        "caresync_runs_total{source=\"carehq_residents\",status=\"succeeded\"}",
        "caresync_records_synced_total{source=\"pace\",change=\"unchanged\"}",
        "caresync_requests_total{source=\"care360\"}",
        "caresync_throttled_total{source=\"marketplace\"}",
        "caresync_errors_total{source=\"carehq_staff\"}",
        "caresync_last_success_timestamp_seconds{source=\"carehq_residents\"}",
        "caresync_run_duration_seconds_sum{source=\"pace\"}",
        "caresync_skipped_ticks_total{source=\"pace\"}",
        "# TYPE caresync_runs_total counter",
    ] {
        assert!(metrics.contains(family), "missing {family} in\n{metrics}");
    }

    let (status, took) = terminate(&mut child).await;
    assert!(status.success(), "daemon exit {status}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("daemon stopped"), "{text}");
    h.sims.shutdown().await;
}

/// SIGTERM in the middle of a backfill-sized first sync: exit 0 within 10 s, nothing left
/// `running`, the checkpoint kept, and the next run ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_sync_exits_0_within_10s_and_the_next_run_is_exact() {
    let mut opts = options(2500);
    opts.faults = FaultConfig {
        seed: 9,
        slow_rate: 0.3,
        slow_ms: 15,
        ..FaultConfig::default()
    };
    let h = Harness::start(opts, &format!("page_size = 5\n{EVERY_SECOND}")).await;
    let log = h._dir.path().join("daemon.log");
    let mut child = spawn_daemon(&h.config.file, &log, &[("CARESYNC_LOG", "info")]);
    let started = Instant::now();
    // Until a few hundred records are stored, so the scans are well under way.
    while h.count("SELECT count(*) FROM source_record") < 300 {
        assert_alive(&mut child, &log);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, took) = terminate(&mut child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "daemon exit {status}:\n{text}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(
        !text.contains("cancelled"),
        "the runs should stop at a checkpoint, not be cancelled:\n{text}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sync_run WHERE status = 'running'"),
        0,
        "runs left running"
    );
    assert!(
        h.count("SELECT count(*) FROM sync_run WHERE status = 'interrupted'") > 0,
        "the stopped runs are recorded as interrupted"
    );
    assert!(
        h.count("SELECT count(*) FROM sync_state WHERE complete = 0 AND pages_done > 0") > 0,
        "an unfinished scan keeps its checkpoint"
    );
    assert!(
        h.count("SELECT count(*) FROM source_record") < 2500,
        "the sync should have been stopped part-way"
    );
    // The next run resumes and ends exact.
    assert_all_succeeded(&h.run(Mode::Sync).await);
    h.assert_exact();
    h.sims.shutdown().await;
}

/// Every page is slow, so runs outlast the 1-second schedule: ticks are skipped, never
/// overlapped. A run that started while another of the same source was going would show
/// as overlapping intervals, or as a run closed by the next one's start (`interrupted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_source_never_runs_twice_at_once() {
    let mut opts = options(150);
    opts.faults = FaultConfig {
        seed: 4,
        slow_rate: 1.0,
        slow_ms: 400,
        ..FaultConfig::default()
    };
    let h = Harness::start_with(
        opts,
        Some("1000/1s"),
        &format!("page_size = 10\n{EVERY_SECOND}"),
        |text| format!("{text}\n[daemon]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    let log = h._dir.path().join("daemon.log");
    let mut child = spawn_daemon(&h.config.file, &log, &[]);
    let addr = served_addr(&mut child, &log).await;
    let started = Instant::now();
    let names: Vec<&str> = SourceKind::ALL
        .iter()
        .map(|k| simulator_source_name(*k))
        .collect();
    while names
        .iter()
        .any(|n| runs_of(&h, n).iter().filter(|r| r.1 == "succeeded").count() < 2)
    {
        assert_alive(&mut child, &log);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few runs:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .unwrap();
    let skipped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("caresync_skipped_ticks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        skipped > 0.0,
        "runs outlast the schedule, so ticks must be skipped:\n{metrics}"
    );
    let (status, _) = terminate(&mut child).await;
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tick skipped"), "skips are logged");
    for name in &names {
        let runs = runs_of(&h, name);
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let a_end =
                a.3.as_deref()
                    .unwrap_or_else(|| panic!("{name}: run {} never finished", a.0));
            assert!(
                b.2.as_str() >= a_end,
                "{name}: run {} started at {} before run {} finished at {a_end}",
                b.0,
                b.2,
                a.0
            );
            assert_ne!(
                a.4.as_deref(),
                Some("the process stopped before the run finished"),
                "{name}: run {} was cut short by an overlapping run",
                a.0
            );
        }
    }
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_fails_healthz_and_does_not_stop_the_others() {
    let h = Harness::start_with(
        options(100),
        Some("1000/1s"),
        &format!("page_size = 50\n{EVERY_SECOND}"),
        |text| {
            let url = sim_port_line(&text, "marketplace");
            let text = text.replacen(
                &format!("base_url = \"{url}\""),
                "base_url = \"http://127.0.0.1:1\"",
                1,
            );
            format!(
                "{text}\n[http]\nmax_retries = 1\nmin_backoff_ms = 10\nmax_backoff_ms = 20\nconnect_timeout_secs = 1\n\n[daemon]\nlisten = \"127.0.0.1:0\"\nhealth_window = \"2s\"\n"
            )
        },
    )
    .await;
    let log = h._dir.path().join("daemon.log");
    let mut child = spawn_daemon(&h.config.file, &log, &[]);
    let addr = served_addr(&mut child, &log).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_alive(&mut child, &log);
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz answers");
    assert_eq!(health.status().as_u16(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("marketplace"), "{body}");
    assert!(!reason.contains("pace"), "{body}");
    let (status, _) = terminate(&mut child).await;
    assert!(status.success());
    assert!(
        runs_of(&h, "marketplace")
            .iter()
            .filter(|r| r.1 == "failed")
            .count()
            >= 2,
        "the failing source keeps being tried"
    );
    for name in ["carehq_residents", "carehq_staff", "care360", "pace"] {
        assert!(
            runs_of(&h, name)
                .iter()
                .filter(|r| r.1 == "succeeded")
                .count()
                >= 2,
            "{name} stopped syncing because another source failed"
        );
    }
    h.sims.shutdown().await;
}

/// The `base_url = "..."` text of a source in a simulator config.
fn sim_port_line(text: &str, source: &str) -> String {
    text.split(&format!("[sources.{source}]"))
        .nth(1)
        .and_then(|t| t.lines().find(|l| l.starts_with("base_url")))
        .map(|l| {
            l.trim_start_matches("base_url = ")
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_stop_the_daemon_at_start_up_with_every_problem() {
    let h = Harness::start(options(20), "").await;
    // No schedule anywhere.
    let (ok, _, err) = h.cli(&["daemon"]);
    assert!(!ok);
    assert!(err.contains("no source has a schedule"), "{err}");
    // Several problems at once, cron included.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    let text = simulator_config_toml(|k| h.sims.base_url(k), &dir.path().join("x.db"), None, "")
        .replacen(
            "[sources.pace]",
            "[sources.pace]\nschedule = \"every five minutes\"",
            1,
        )
        .replacen(
            "[sources.care360]",
            "[sources.care360]\nschedule = \"* * * * *\"",
            1,
        )
        + "\n[daemon]\nlisten = \"localhost\"\nhealth_window = \"soon\"\ncolour = 1\n";
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caresync"))
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .envs(simulator_env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "5 problems",
        "sources.pace.schedule: `every five minutes` is not a cron schedule",
        "sources.care360.schedule: `* * * * *` is not a cron schedule",
        "daemon.listen: `localhost` is not an address",
        "daemon.health_window: `soon` is not a duration",
        "daemon.colour: unknown key",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(
        !dir.path().join("x.db").exists(),
        "nothing is started on a bad config"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_runs_schedules_watermarks_and_problems() {
    let h = Harness::start_with(options(150), Some("1000/1s"), "page_size = 10\n", |text| {
        text.replacen(
            "[sources.carehq_residents]",
            "[sources.carehq_residents]\nschedule = \"0 */15 * * * *\"",
            1,
        )
    })
    .await;
    h.sims.state().set_faults(FaultConfig {
        pace_daily_quota: Some(1),
        ..FaultConfig::default()
    });
    let _ = h.run_report(Mode::Backfill, Vec::new()).await;
    let (ok, out, err) = h.cli(&["status", "--json"]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    let source = |name: &str| {
        s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["source"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing in {s}"))
    };
    let residents = source("carehq_residents");
    assert_eq!(residents["last_run"]["status"], "succeeded", "{residents}");
    assert!(residents["last_run"]["inserted"].as_i64().unwrap() > 0);
    assert!(residents["watermark"].is_string(), "{residents}");
    let next = residents["next_run"].as_str().expect("a next run");
    let next = chrono::DateTime::parse_from_rfc3339(next).expect("RFC 3339");
    use chrono::Timelike;
    assert_eq!((next.minute() % 15, next.second()), (0, 0), "{next}");
    let pace = source("pace");
    assert_eq!(pace["last_run"]["status"], "quota_exhausted", "{pace}");
    assert!(pace["next_run"].is_null());
    assert!(
        pace["last_run_errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "quota_exhausted"),
        "{pace}"
    );
    assert_eq!(s["pending_writes"], 0, "{s}");
    assert_eq!(s["open_conflicts"], 0, "{s}");
    assert!(s["mapping_failures"].is_i64());
    let (ok, text, _) = h.cli(&["status"]);
    assert!(ok);
    for expected in [
        "source",
        "carehq_residents",
        "not scheduled",
        "quota_exhausted",
        "Writes: 0 pending",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    h.sims.shutdown().await;
}

/// The personal data of the simulated people, in the forms the simulators emit.
#[derive(Default, Debug)]
struct Pii {
    /// Name parts of four letters or more, matched as whole words, case as written.
    names: HashSet<String>,
    /// Lower case, matched anywhere.
    exact: HashSet<String>,
    /// Phone numbers without the trunk 0, and NHS numbers, matched inside digit runs.
    digits: HashSet<String>,
}

impl Pii {
    fn of<'a>(people: impl IntoIterator<Item = &'a PersonTruth>) -> Pii {
        let mut p = Pii::default();
        for person in people {
            for name in std::iter::once(&person.first_name)
                .chain(&person.nicknames)
                .chain(std::iter::once(&person.last_name))
            {
                for part in name.split(|c: char| !c.is_alphabetic()) {
                    if part.chars().count() >= 4 {
                        p.names.insert(part.to_string());
                    }
                }
            }
            p.exact.insert(person.email.to_lowercase());
            p.exact.insert(person.ni_number.to_lowercase());
            p.digits
                .insert(person.phone.trim_start_matches('0').to_string());
            p.digits.insert(person.nhs_number.clone());
        }
        p.exact.retain(|e| e.len() >= 6);
        p.digits.retain(|d| d.len() >= 9);
        p
    }

    /// What of this appears in `text`.
    fn find(&self, text: &str) -> BTreeSet<String> {
        let mut hits = BTreeSet::new();
        for word in text.split(|c: char| !c.is_alphabetic()) {
            if self.names.contains(word) {
                hits.insert(format!("name {word}"));
            }
        }
        let lower = text.to_lowercase();
        for e in &self.exact {
            if lower.contains(e.as_str()) {
                hits.insert(format!("value {e}"));
            }
        }
        for run in digit_runs(text) {
            for d in &self.digits {
                if run.contains(d.as_str()) {
                    hits.insert(format!("number {d}"));
                }
            }
        }
        hits
    }

    fn without(mut self, found: &BTreeSet<String>) -> Pii {
        for f in found {
            let (_, v) = f.split_once(' ').unwrap();
            self.names.remove(v);
            self.exact.remove(v);
            self.digits.remove(v);
        }
        self
    }

    fn len(&self) -> usize {
        self.names.len() + self.exact.len() + self.digits.len()
    }
}

/// Runs of digits, joined across single spaces, dashes, dots and brackets (`+44 (0)7700 900123`).
fn digit_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current = String::new();
    let mut gap = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            current.push(c);
            gap = 0;
        } else if matches!(c, ' ' | '-' | '(' | ')' | '+' | '.') && gap < 2 && !current.is_empty() {
            gap += 1;
        } else {
            if current.len() >= 9 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
            gap = 0;
        }
    }
    if current.len() >= 9 {
        runs.push(current);
    }
    runs
}

fn run_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caresync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(simulator_env())
        .envs(env.iter().copied())
        .output()
        .expect("caresync runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A full backfill, a sync, the daemon and `status`, at debug level, text and JSON, with
/// faults (errors, 429s, malformed and dropped bodies): none of the simulated people's
/// names, emails, phone, NI or NHS numbers appears in any log line or output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_debug_level_carry_no_personal_data() {
    // Write-back everywhere, from the CLI and from the daemon's own push schedule.
    let push = "[daemon]\npush_schedule = \"*/1 * * * * *\"\n[push.carehq_residents]\nfields = [\"mobile\"]\n\
                [push.marketplace]\nfields = [\"mobile\"]\n[push.care360]\nfields = [\"mobile\"]\n[push.pace]\nfields = [\"mobile\"]\n";
    let h = Harness::start_with(
        options(300),
        Some("1000/1s"),
        &format!("page_size = 20\n{EVERY_SECOND}"),
        |t| t + push,
    )
    .await;
    h.sims.state().set_faults(FaultConfig {
        seed: 21,
        error_rate: 0.05,
        rate_429: 0.05,
        malformed_rate: 0.03,
        drop_rate: 0.02,
        ..FaultConfig::default()
    });
    let debug = [("CARESYNC_LOG", "debug")];
    let mut captured: Vec<(String, String)> = Vec::new();
    let (ok, out, err) = run_with_env(&h.config.file, &["backfill"], &debug);
    assert!(ok, "backfill failed:\n{err}");
    captured.push(("backfill stderr".into(), err));
    captured.push(("backfill stdout".into(), out));
    let key = h.sims.state().keys(SourceKind::CarehqServiceUsers)[0].clone();
    h.sims.state().update_field(
        SourceKind::CarehqServiceUsers,
        &key,
        "preferred_name",
        serde_json::json!("Changed"),
    );
    let (ok, out, err) = run_with_env(&h.config.file, &["--log-format", "json", "sync"], &debug);
    assert!(ok, "sync failed:\n{err}");
    assert!(
        err.lines().filter(|l| l.starts_with('{')).count() > 10,
        "JSON log lines expected:\n{err}"
    );
    captured.push(("sync json stderr".into(), err));
    captured.push(("sync stdout".into(), out));
    // `plan` and `push` show values on stdout by design (the operator's diff); their logs
    // (stderr) must not.
    let person: i64 = h
        .db()
        .query_row("SELECT min(person_id) FROM person", [], |r| r.get(0))
        .unwrap();
    let (ok, _, err) = run_with_env(
        &h.config.file,
        &[
            "set",
            &person.to_string(),
            "mobile=07700900321",
            "--reason",
            "pii test",
        ],
        &debug,
    );
    assert!(ok, "set failed:\n{err}");
    captured.push(("set stderr".into(), err));
    let (_, _, err) = run_with_env(&h.config.file, &["push", "--yes"], &debug);
    assert!(err.contains("write finished"), "push wrote nothing:\n{err}");
    captured.push(("push stderr".into(), err));
    let log = h._dir.path().join("daemon.log");
    let mut child = spawn_daemon(&h.config.file, &log, &debug);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_alive(&mut child, &log);
    let (status, _) = terminate(&mut child).await;
    assert!(status.success());
    captured.push((
        "daemon stderr".into(),
        std::fs::read_to_string(&log).unwrap(),
    ));
    for args in [&["status"][..], &["status", "--json"][..]] {
        let (ok, out, err) = run_with_env(&h.config.file, args, &debug);
        assert!(ok, "{err}");
        captured.push((format!("{args:?} stdout"), out));
        captured.push((format!("{args:?} stderr"), err));
    }
    assert!(
        captured.iter().any(|(_, t)| t.contains("run finished")),
        "the logs were captured"
    );
    let people = h.sims.state().people();
    let pii = Pii::of(&people);
    assert!(pii.len() > 1000, "{} values", pii.len());
    let mut leaks = Vec::new();
    for (what, text) in &captured {
        for line in text.lines() {
            let hits = pii.find(line);
            if !hits.is_empty() {
                leaks.push(format!("{what}: {hits:?} in {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} log lines carry personal data, e.g.:\n{}",
        leaks.len(),
        leaks[..leaks.len().min(10)].join("\n")
    );
    h.sims.shutdown().await;
}

/// `check` proves the credentials without printing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_never_echoes_secrets() {
    let h = Harness::start(options(20), "").await;
    let (ok, out, err) = run_with_env(&h.config.file, &["check"], &[("CARESYNC_LOG", "debug")]);
    assert!(ok, "{err}");
    for (name, secret) in simulator_env() {
        assert!(
            !out.contains(&secret) && !err.contains(&secret),
            "check printed the value of {name}"
        );
    }
    h.sims.shutdown().await;
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The daemon's store, its WAL and its shared-memory file are readable by the owner only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_wal_and_shm_are_owner_only_after_a_daemon_run() {
    let h = Harness::start(options(100), "").await;
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("private.db");
    let config = dir.path().join("sync.toml");
    std::fs::write(
        &config,
        simulator_config_toml(|k| h.sims.base_url(k), &db, Some("1000/1s"), EVERY_SECOND),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log, &[]);
    let wal = dir.path().join("private.db-wal");
    let shm = dir.path().join("private.db-shm");
    let started = Instant::now();
    let ready = |log: &Path| {
        wal.exists()
            && shm.exists()
            && std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("run finished")
    };
    while !ready(&log) {
        assert_alive(&mut child, &log);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no run finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [&db, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{} while running", path.display());
    }
    let (status, _) = terminate(&mut child).await;
    assert!(status.success());
    for path in [&db, &wal, &shm] {
        if path.exists() {
            assert_eq!(mode(path), 0o600, "{} after the run", path.display());
        }
    }
    h.sims.shutdown().await;
}

/// Every value in every table of the store, as text (blobs skipped).
fn every_value(h: &Harness) -> Vec<(String, String)> {
    let db = h.db();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let text = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(x) => x.to_string(),
                    _ => continue,
                };
                out.push((table.clone(), text));
            }
        }
    }
    out
}

/// `forget` erases a linked person from every table; a later sync does not bring the
/// records back while the simulator still serves them; the audit row holds no values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_no_trace_and_the_person_does_not_come_back() {
    let h = Harness::start(options(300), "page_size = 50\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let state = h.sims.state();
    let truth = state.truth();
    let people = state.people();
    let payloads: Vec<(String, String, String)> = {
        let db = h.db();
        let mut stmt = db
            .prepare("SELECT source, external_id, payload FROM source_record")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // A person linked whole (every record of the human in one person), with values found
    // nowhere else, so that "no trace" is decidable.
    let mut chosen = None;
    for person in &people {
        let records: HashSet<(String, String)> = truth
            .iter()
            .filter(|(_, _, n)| *n == person.number)
            .map(|(kind, key, _)| {
                (
                    simulator_source_name(*kind).to_string(),
                    kind.normalise_external_id(key),
                )
            })
            .collect();
        if records.len() < 2 {
            continue;
        }
        let ids: BTreeSet<Option<i64>> = records
            .iter()
            .map(|(s, id)| {
                h.db()
                    .query_row(
                        "SELECT person_id FROM person_link WHERE source = ?1 AND external_id = ?2",
                        [s, id],
                        |r| r.get(0),
                    )
                    .ok()
            })
            .collect();
        let Some(Some(person_id)) = (ids.len() == 1).then(|| *ids.iter().next().unwrap()) else {
            continue;
        };
        let linked: i64 = h
            .db()
            .query_row(
                "SELECT count(*) FROM person_link WHERE person_id = ?1",
                [person_id],
                |r| r.get(0),
            )
            .unwrap();
        if linked as usize != records.len() {
            continue;
        }
        let own = Pii::of([person]);
        let elsewhere: BTreeSet<String> = payloads
            .iter()
            .filter(|(s, id, _)| !records.contains(&(s.clone(), id.clone())))
            .flat_map(|(_, _, p)| own.find(p))
            .collect();
        let own = own.without(&elsewhere);
        if own.exact.is_empty() || own.digits.is_empty() || own.names.is_empty() {
            continue;
        }
        chosen = Some((person_id, records, own));
        break;
    }
    let (person_id, records, pii) = chosen.expect("a person linked whole with distinctive values");
    let before: BTreeSet<String> = every_value(&h)
        .iter()
        .flat_map(|(_, v)| pii.find(v))
        .collect();
    assert!(
        before.len() >= 3,
        "the person's values are in the store before: {before:?}"
    );
    let (ok, _, err) = h.cli(&[
        "set",
        &person_id.to_string(),
        "mobile=07700 900123",
        "--reason",
        "test correction",
    ]);
    assert!(ok, "set failed: {err}");

    // Queued and not yet linked (a sync's changes), the records leave the queue too: it is
    // keyed by record id, found through the raw records that the erasure removes.
    let writable = rusqlite::Connection::open(h.db_path()).unwrap();
    for (s, id) in &records {
        writable
            .execute(
                "INSERT OR IGNORE INTO relink_queue (record_id, source, external_id)
                 SELECT record_id, source, external_id FROM source_record
                 WHERE source = ?1 AND external_id = ?2",
                [s, id],
            )
            .unwrap();
    }
    drop(writable);
    let queued = |h: &Harness| -> usize {
        records
            .iter()
            .map(|(s, id)| {
                h.db()
                    .query_row(
                        "SELECT count(*) FROM relink_queue WHERE source = ?1 AND external_id = ?2",
                        [s, id],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap() as usize
            })
            .sum()
    };
    assert_eq!(queued(&h), records.len());

    let (ok, out, err) = h.cli(&[
        "forget",
        &person_id.to_string(),
        "--reason",
        "erasure request 42",
    ]);
    assert!(ok, "forget failed: {err}");
    assert_eq!(queued(&h), 0, "queued records left after forget");
    assert!(out.contains(&format!("Erased person {person_id}")), "{out}");
    let remaining: Vec<String> = every_value(&h)
        .iter()
        .filter_map(|(t, v)| {
            let hits = pii.find(v);
            (!hits.is_empty()).then(|| format!("{t}: {hits:?}"))
        })
        .collect();
    assert!(
        remaining.is_empty(),
        "values left after forget: {remaining:?}"
    );
    let records_left = |h: &Harness| -> usize {
        records
            .iter()
            .map(|(s, id)| {
                h.db()
                    .query_row(
                        "SELECT (SELECT count(*) FROM source_record WHERE source = ?1 AND external_id = ?2)
                              + (SELECT count(*) FROM person_link WHERE source = ?1 AND external_id = ?2)
                              + (SELECT count(*) FROM canonical_record WHERE source = ?1 AND external_id = ?2)",
                        [s, id],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap() as usize
            })
            .sum()
    };
    assert_eq!(records_left(&h), 0);
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM operator_override WHERE person_id = {person_id}"
        )),
        0
    );
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM erasure_log WHERE person_id = {person_id} AND records_erased = {} AND reason = 'erasure request 42'",
            records.len()
        )),
        1
    );
    let (ok, _, err) = h.cli(&["forget", &person_id.to_string(), "--reason", "again"]);
    assert!(!ok && err.contains("already erased"), "{err}");

    // The simulators still serve the records: syncs (full and incremental) do not store them again.
    assert_all_succeeded(&h.run(Mode::Sync).await);
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    assert_eq!(records_left(&h), 0, "erased records came back");
    let after: Vec<String> = every_value(&h)
        .iter()
        .filter_map(|(t, v)| {
            let hits = pii.find(v);
            (!hits.is_empty()).then(|| format!("{t}: {hits:?}"))
        })
        .collect();
    assert!(after.is_empty(), "values back after a sync: {after:?}");
    h.sims.shutdown().await;
}

/// `caresync bench` runs the real pipeline end to end and reports every figure issue 7 asks
/// for: requests at the minimum, a no-change sync that writes nothing, linking and plan
/// timings, and each stage's limit with the end-to-end share of the slowest.
#[test]
fn bench_reports_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caresync"))
        .args(["bench", "--people", "400", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["machine"].as_str().is_some_and(|m| m.contains(" cores")),
        "{}",
        r["machine"]
    );
    let records = r["records"].as_u64().unwrap();
    assert!(records > 400, "every source's records: {records}");
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 5);
    let per_source: u64 = sources.iter().map(|s| s["records"].as_u64().unwrap()).sum();
    assert_eq!(per_source, records);
    for s in sources {
        let (requests, minimum) = (
            s["requests"].as_u64().unwrap(),
            s["minimum_requests"].as_u64().unwrap(),
        );
        assert!(
            requests == minimum || requests == minimum + 1,
            "{}: {requests} requests for a minimum of {minimum}",
            s["source"]
        );
    }
    assert_eq!(r["nochange_sync_rows_written"], 0);
    assert_eq!(r["link_all_records"].as_u64(), Some(records));
    // Blocking's yield: a few comparisons a record, not every namesake.
    let compared = r["link_all_compared_pairs"].as_u64().unwrap();
    assert!(
        compared > records / 4 && compared < records * 4,
        "{compared} pairs compared for {records} records"
    );
    let persons = r["link_all_persons"].as_u64().unwrap();
    assert!(
        persons * 2 > records && persons < records,
        "{persons} persons from {records} records"
    );
    for figure in [
        "backfill_records_per_sec",
        "link_secs",
        "extraction_secs",
        "plan_secs",
        "stage_fetch_records_per_sec",
        "stage_parse_records_per_sec",
        "stage_raw_upsert_rows_per_sec",
        "stage_store_rows_per_sec",
        "share_of_slowest_stage",
    ] {
        assert!(
            r[figure].as_f64().is_some_and(|x| x > 0.0),
            "{figure}: {}",
            r[figure]
        );
    }
    let slowest = [
        "stage_fetch_records_per_sec",
        "stage_parse_records_per_sec",
        "stage_raw_upsert_rows_per_sec",
    ]
    .iter()
    .map(|k| r[*k].as_f64().unwrap())
    .fold(f64::INFINITY, f64::min);
    let share = r["share_of_slowest_stage"].as_f64().unwrap();
    let expected = r["backfill_records_per_sec"].as_f64().unwrap() / slowest;
    assert!((share - expected).abs() < 1e-9, "{share} vs {expected}");
    // Extraction and linking are timed and their peak memory measured each on its own.
    let secs = |k: &str| r[k].as_f64().unwrap();
    assert!(secs("extraction_secs") + secs("link_secs") <= secs("backfill_secs"));
    if cfg!(target_os = "linux") {
        let (extracting, linking) = (secs("extraction_peak_rss_mb"), secs("link_peak_rss_mb"));
        assert_eq!(
            secs("peak_rss_mb_above_simulators"),
            extracting.max(linking)
        );
    }
}

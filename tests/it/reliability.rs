//! Issue 4: sync that loses nothing under faults, kills, page shifts and deletions.

use std::process::{Command, Stdio};
use std::time::Duration;

use caresync::cli::demo::{simulator_config_toml, simulator_env, simulator_source_name};
use caresync::sim::FaultConfig;
use caresync::source::kind::SourceKind;
use caresync::sync::{Mode, RunStatus};
use rand::{Rng, SeedableRng};

use crate::support::{Harness, assert_all_succeeded, options, outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_injected_faults_ends_exact() {
    let h = Harness::start(options(800), "page_size = 20\n").await;
    h.sims.state().set_faults(FaultConfig {
        seed: 11,
        error_rate: 0.10,
        rate_429: 0.05,
        malformed_rate: 0.02,
        drop_rate: 0.02,
        ..FaultConfig::default()
    });
    let outcomes = h.run(Mode::Backfill).await;
    assert_all_succeeded(&outcomes);
    h.assert_exact();
    let retried = h.count("SELECT count(*) FROM sync_error WHERE kind IN ('http_status', 'malformed_body', 'transport', 'throttled')");
    assert!(
        retried > 0,
        "faults were injected, so retries must have been recorded"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_no_upstream_change_writes_no_data() {
    let h = Harness::start(options(300), "page_size = 25\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let snapshot = |h: &Harness| -> Vec<(String, String, String, String, Option<String>)> {
        let db = h.db();
        let mut s = db
            .prepare("SELECT source, external_id, content_hash, changed_at, deleted_at FROM source_record ORDER BY 1, 2")
            .unwrap();
        s.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let before = snapshot(&h);
    let outcomes = h.run(Mode::Sync).await;
    assert_all_succeeded(&outcomes);
    for o in &outcomes {
        assert_eq!(
            (
                o.counts.records.inserted,
                o.counts.records.updated,
                o.counts.deleted
            ),
            (0, 0, 0),
            "{} wrote data on a no-change sync",
            o.source
        );
    }
    assert_eq!(before, snapshot(&h));
    h.sims.shutdown().await;
}

fn churn() -> FaultConfig {
    FaultConfig {
        seed: 5,
        inserts_per_list_request: 1,
        deletes_per_list_request: 1,
        ..FaultConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_and_deletes_during_pagination_end_exact_after_the_next_sync() {
    let h = Harness::start(options(600), "page_size = 10\n").await;
    h.sims.state().set_faults(churn());
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    h.sims.state().set_faults(FaultConfig::default());
    assert_all_succeeded(&h.run(Mode::Sync).await);
    h.assert_exact();

    // A sync whose pages shift under it loses nothing the store holds: every record that is
    // upstream before and after it is still stored and not marked deleted.
    let before: Vec<Vec<String>> = SourceKind::ALL.iter().map(|k| h.upstream_ids(*k)).collect();
    h.sims.state().set_faults(churn());
    let churned = h.run(Mode::Sync).await;
    assert_all_succeeded(&churned);
    h.sims.state().set_faults(FaultConfig::default());
    for (kind, before) in SourceKind::ALL.iter().zip(&before) {
        let after = h.upstream_ids(*kind);
        let stored = h.stored_ids(*kind);
        let throughout: Vec<&String> = before
            .iter()
            .filter(|id| after.binary_search(id).is_ok())
            .collect();
        assert!(
            throughout.len() + 5 < before.len(),
            "{kind}: the faults should have deleted records"
        );
        let lost: Vec<_> = throughout
            .iter()
            .filter(|id| stored.binary_search(id).is_err())
            .collect();
        assert!(
            lost.is_empty(),
            "{kind}: {} live records lost or marked deleted, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        );
    }
    assert!(
        h.count("SELECT count(*) FROM sync_error WHERE kind = 'page_shift'") > 0,
        "the shifts were detected and recorded"
    );
    assert_all_succeeded(&h.run(Mode::Sync).await);
    h.assert_exact();
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_is_marked_after_a_complete_scan_only() {
    let mut h = Harness::start(options(200), "page_size = 20\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let backfilled: Vec<(String, String)> = h
        .db()
        .prepare("SELECT source, last_complete_at FROM sync_state ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    let state = h.sims.state();
    let mut gone = Vec::new();
    for kind in SourceKind::ALL {
        let key = state.keys(kind)[0].clone();
        assert!(state.delete(kind, &key));
        gone.push((kind, kind.normalise_external_id(&key)));
    }
    let deleted_at = |h: &Harness, kind: SourceKind, id: &str| -> Option<String> {
        h.db()
            .query_row(
                "SELECT deleted_at FROM source_record WHERE source = ?1 AND external_id = ?2",
                [simulator_source_name(kind), id],
                |r| r.get(0),
            )
            .unwrap()
    };
    // A scan that fails part-way marks nothing.
    h.config.http.max_retries = 1;
    state.set_faults(FaultConfig {
        seed: 3,
        error_rate: 0.6,
        ..FaultConfig::default()
    });
    let failed = h.run(Mode::Sync).await;
    for (kind, id) in &gone {
        if outcome(&failed, *kind).status != RunStatus::Succeeded {
            assert_eq!(
                deleted_at(&h, *kind, id),
                None,
                "{kind}: marked deleted by a failed scan"
            );
        }
    }
    assert!(
        failed.iter().any(|o| o.status == RunStatus::Failed),
        "the faults should fail some scan"
    );
    // A complete scan marks them, and only them. Each was last seen by the backfill.
    state.set_faults(FaultConfig::default());
    h.config.http.max_retries = 8;
    assert_all_succeeded(&h.run(Mode::Sync).await);
    for (kind, id) in &gone {
        assert!(
            deleted_at(&h, *kind, id).is_some(),
            "{kind}: not marked deleted"
        );
        let last_seen: String = h
            .db()
            .query_row(
                "SELECT last_seen_at FROM v_source_record WHERE source = ?1 AND external_id = ?2",
                [simulator_source_name(*kind), id],
                |r| r.get(0),
            )
            .unwrap();
        let (_, complete) = backfilled
            .iter()
            .find(|(s, _)| *s == simulator_source_name(*kind))
            .unwrap();
        assert_eq!(&last_seen, complete, "{kind}: last seen by the backfill");
        assert!(
            Some(last_seen) < deleted_at(&h, *kind, id),
            "{kind}: seen before it was found deleted"
        );
    }
    h.assert_exact();
    h.sims.shutdown().await;
}

/// Kills `caresync backfill` with SIGKILL at random moments; the next run resumes and the
/// store ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_at_random_moments_ends_exact() {
    let mut opts = options(2500);
    opts.faults = FaultConfig {
        seed: 9,
        slow_rate: 0.3,
        slow_ms: 15,
        ..FaultConfig::default()
    };
    let h = Harness::start(opts, "").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let config_path = dir.path().join("sync.toml");
    std::fs::write(
        &config_path,
        simulator_config_toml(
            |k| h.sims.base_url(k),
            &db,
            Some("1000/1s"),
            "page_size = 5\n",
        ),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_caresync"))
            .args(["--config", config_path.to_str().unwrap(), "backfill"])
            .envs(simulator_env())
            .env("CARESYNC_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caresync starts")
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let mut killed = 0;
    for _ in 0..10 {
        let mut child = run();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..900))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        killed >= 5,
        "only {killed} runs were still going when killed; make the dataset larger"
    );
    let status = run().wait().unwrap();
    assert!(status.success(), "the final backfill failed");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for kind in SourceKind::ALL {
        let mut stmt = conn
            .prepare("SELECT external_id FROM source_record WHERE source = ?1 AND deleted_at IS NULL ORDER BY 1")
            .unwrap();
        let stored: Vec<String> = stmt
            .query_map([simulator_source_name(kind)], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            stored,
            h.upstream_ids(kind),
            "{kind}: not exact after kills and resume"
        );
    }
    let interrupted: i64 = conn
        .query_row(
            "SELECT count(*) FROM sync_run WHERE status = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        interrupted >= 5,
        "killed runs are recorded as interrupted, found {interrupted}"
    );
    let running: i64 = conn
        .query_row(
            "SELECT count(*) FROM sync_run WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_rate_limits_are_never_hit() {
    let mut opts = options(400);
    opts.enforce_rate_limits = true;
    opts.pace_window_secs = 2;
    // CareHQ learns its 10/s from the headers; PACE is told the simulator's shorter window.
    // A second CareHQ source on the same key shares the budget.
    let h = Harness::start_with(opts, None, "page_size = 10\n", |text| {
        let second = text
            .split("[sources.")
            .find(|t| t.starts_with("carehq_residents]"))
            .unwrap()
            .replacen("carehq_residents]", "carehq_residents_again]", 1);
        format!("{text}\n[sources.{second}").replace(
            "customer_id_env = \"CARESYNC_SIM_PACE_CUSTOMER\"\n",
            "customer_id_env = \"CARESYNC_SIM_PACE_CUSTOMER\"\nrate_limit = \"5/2s\"\n",
        )
    })
    .await;
    let started = std::time::Instant::now();
    let outcomes = h.run(Mode::Backfill).await;
    assert_all_succeeded(&outcomes);
    assert_eq!(outcomes.len(), 6);
    h.assert_exact();
    for kind in SourceKind::ALL {
        let stats = h.sims.state().stats(kind);
        assert_eq!(
            stats.rate_limited, 0,
            "{kind}: {} responses were 429",
            stats.rate_limited
        );
    }
    // The two CareHQ sources together made ~60 requests at 10/s: they cannot both have had
    // their own budget and they must not have been slower than the shared floor allows.
    let carehq_requests: u64 = outcomes
        .iter()
        .filter(|o| o.kind.starts_with("carehq"))
        .map(|o| o.counts.requests)
        .sum();
    let floor = Duration::from_secs_f64((carehq_requests as f64 / 10.0) - 1.0);
    assert!(
        started.elapsed() >= floor,
        "{carehq_requests} CareHQ requests in {:?}",
        started.elapsed()
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pace_quota_stops_only_pace() {
    let mut opts = options(300);
    opts.faults = FaultConfig {
        pace_daily_quota: Some(3),
        ..FaultConfig::default()
    };
    let h = Harness::start(opts, "page_size = 10\n").await;
    let outcomes = h.run(Mode::Backfill).await;
    let pace = outcome(&outcomes, SourceKind::PaceUsers);
    assert_eq!(pace.status, RunStatus::QuotaExhausted, "{:?}", pace.error);
    assert!(
        pace.error.as_deref().unwrap().contains("Maximum quota"),
        "{:?}",
        pace.error
    );
    // The quota (3) plus at most the requests already in flight (4 at a time): no retries.
    let in_flight = h.config.http.concurrency as u64;
    assert!(
        pace.counts.requests <= 3 + in_flight,
        "PACE kept asking: {} requests",
        pace.counts.requests
    );
    for kind in SourceKind::ALL
        .into_iter()
        .filter(|k| *k != SourceKind::PaceUsers)
    {
        assert_eq!(
            outcome(&outcomes, kind).status,
            RunStatus::Succeeded,
            "{kind}"
        );
    }
    assert_eq!(
        h.count(
            "SELECT count(*) FROM sync_run WHERE source = 'pace' AND status = 'quota_exhausted'"
        ),
        1
    );
    // The pages it did read are kept, exactly those its checkpoint covers, so the next run
    // resumes after them. (Which of the concurrent pages beat the quota varies.)
    let stored = h.count("SELECT count(*) FROM source_record WHERE source = 'pace'");
    let pages_done = h.count("SELECT pages_done FROM sync_state WHERE source = 'pace'");
    assert!(
        stored > 0 && stored == pages_done * 10,
        "{stored} records stored, checkpoint after {pages_done} pages"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_reads_changes_across_the_watermark() {
    let h = Harness::start(options(300), "page_size = 20\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let state = h.sims.state();
    let residents = state.keys(SourceKind::CarehqServiceUsers);
    let total = residents.len() as u64;
    let name = simulator_source_name(SourceKind::CarehqServiceUsers);
    for round in 0..3 {
        // Two edits in the same second as the previous sync's watermark, one each side of it.
        let a = &residents[round * 2];
        let b = &residents[round * 2 + 1];
        assert!(state.update_field(
            SourceKind::CarehqServiceUsers,
            a,
            "preferred_name",
            serde_json::json!(format!("A{round}"))
        ));
        let first = h.run_only(Mode::Sync, vec![name.into()]).await;
        assert_all_succeeded(&first);
        assert!(state.update_field(
            SourceKind::CarehqServiceUsers,
            b,
            "preferred_name",
            serde_json::json!(format!("B{round}"))
        ));
        let second = h.run_only(Mode::Sync, vec![name.into()]).await;
        assert_all_succeeded(&second);
        for (id, value) in [(a, format!("A{round}")), (b, format!("B{round}"))] {
            let stored: String = h
                .db()
                .query_row(
                    "SELECT json_extract(payload, '$.preferred_name') FROM source_record WHERE source = ?1 AND external_id = ?2",
                    [name, id.as_str()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stored, value, "round {round}: an edit was missed");
        }
        // Incremental: far fewer records read than a full scan, plus the cheap id sweep.
        assert!(
            second[0].counts.records_seen < total / 2,
            "read {} of {total}",
            second[0].counts.records_seen
        );
    }
    h.assert_exact();
    h.sims.shutdown().await;
}

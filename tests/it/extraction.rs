//! Issue 2: every record of every source lands exactly once, whatever the page size and
//! dataset size; credentials and endless pagination fail clearly.

use caresync::cli::demo::simulator_source_name;
use caresync::sim::FaultConfig;
use caresync::source::kind::SourceKind;
use caresync::sync::{Mode, RunStatus};

use crate::support::{Harness, assert_all_succeeded, options, outcome};

async fn backfill_is_exact(people: usize, limit: Option<usize>, page_size: u32) {
    let mut opts = options(people);
    opts.per_source_limit = limit;
    let h = Harness::start(opts, &format!("page_size = {page_size}\n")).await;
    let outcomes = h.run(Mode::Backfill).await;
    assert_all_succeeded(&outcomes);
    h.assert_exact();
    for kind in SourceKind::ALL {
        let o = outcome(&outcomes, kind);
        let n = h.sims.state().count(kind) as u64;
        assert_eq!(o.counts.records.inserted, n, "{kind}: inserted");
        assert_eq!(o.counts.records_seen, n, "{kind}: every record read once");
        // Minimum requests, plus one terminating request where the style needs one.
        let minimum = n.div_ceil(page_size as u64).max(1);
        assert!(
            o.counts.requests >= minimum && o.counts.requests <= minimum + 1,
            "{kind}: {} requests for {n} records at page size {page_size}",
            o.counts.requests
        );
    }
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pages_at_page_size_one() {
    backfill_is_exact(60, None, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pages_at_page_size_seven() {
    backfill_is_exact(400, None, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pages_at_the_maximum_page_size() {
    backfill_is_exact(1500, None, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dataset() {
    backfill_is_exact(50, Some(0), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_record() {
    backfill_is_exact(50, Some(1), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_full_page() {
    backfill_is_exact(200, Some(7), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backfill_over_unchanged_data_changes_nothing() {
    let h = Harness::start(options(300), "page_size = 50\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let before: Vec<(String, String, String)> = {
        let db = h.db();
        let mut s = db
            .prepare("SELECT external_id, content_hash, changed_at FROM source_record ORDER BY 1")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let second = h.run(Mode::Backfill).await;
    assert_all_succeeded(&second);
    for o in &second {
        assert_eq!(
            (o.counts.records.inserted, o.counts.records.updated),
            (0, 0),
            "{}",
            o.source
        );
        assert_eq!(
            o.counts.records.unchanged, o.counts.records_seen,
            "{}",
            o.source
        );
    }
    let after: Vec<(String, String, String)> = {
        let db = h.db();
        let mut s = db
            .prepare("SELECT external_id, content_hash, changed_at FROM source_record ORDER BY 1")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(before, after);
    assert_eq!(
        h.count("SELECT count(*) FROM sync_run WHERE status = 'succeeded'"),
        10
    );
    h.sims.shutdown().await;
}

/// Issue 7: a sync or backfill over unchanged data writes no row of any data table (only the
/// runs' own bookkeeping: sync_run, sync_state, scan_sighting), and the records it saw are
/// still seen then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_over_unchanged_data_writes_no_data_row() {
    let h = Harness::start(options(200), "page_size = 30\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let bookkeeping = ["sync_run", "sync_state", "scan_sighting"];
    let db = rusqlite::Connection::open(h.db_path()).unwrap();
    db.execute_batch("CREATE TABLE write_audit (tbl TEXT, op TEXT)")
        .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'write_audit'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|t: &String| !bookkeeping.contains(&t.as_str()))
        .collect();
    assert!(tables.len() > 15, "{tables:?}");
    for t in &tables {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            db.execute_batch(&format!(
                "CREATE TRIGGER audit_{t}_{op} AFTER {op} ON {t} BEGIN INSERT INTO write_audit VALUES ('{t}', '{op}'); END;"
            ))
            .unwrap();
        }
    }
    let last_complete = |h: &Harness| -> Vec<String> {
        h.db()
            .prepare("SELECT last_complete_at FROM sync_state ORDER BY source")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = last_complete(&h);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for mode in [Mode::Sync, Mode::Backfill] {
        assert_all_succeeded(&h.run(mode).await);
        let writes: Vec<(String, String)> = db
            .prepare("SELECT tbl, op FROM write_audit GROUP BY 1, 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(writes, Vec::new(), "{mode:?} wrote data rows");
    }
    // Every record is still live, and was last seen by its source's latest complete scan.
    assert_eq!(
        h.count("SELECT count(*) FROM source_record WHERE deleted_at IS NOT NULL"),
        0
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM v_source_record v JOIN sync_state s ON s.source = v.source
             WHERE v.last_seen_at IS NOT s.last_complete_at"
        ),
        0
    );
    assert!(last_complete(&h) > before, "the scans completed later");
    assert_eq!(
        h.count("SELECT count(*) FROM scan_sighting"),
        0,
        "closed scans forget their sightings"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_fails_that_source_by_name() {
    let mut h = Harness::start(options(100), "").await;
    // Point the marketplace at a token the simulator does not know.
    let good = h.config.clone();
    let src = h
        .config
        .sources
        .iter_mut()
        .find(|s| s.kind == SourceKind::MarketplaceUsers)
        .unwrap();
    src.credentials =
        caresync::config::Credentials::Bearer(caresync::config::Secret::new("wrong-token"));
    let outcomes = h.run(Mode::Backfill).await;
    let bad = outcome(&outcomes, SourceKind::MarketplaceUsers);
    assert_eq!(bad.status, RunStatus::Failed);
    let message = bad.error.clone().unwrap();
    assert!(message.contains("HTTP 401"), "{message}");
    let exit = caresync::cli::extract::exit_for(&caresync::sync::RunReport {
        sources: outcomes.clone(),
        link: Ok(Default::default()),
    })
    .unwrap_err()
    .to_string();
    assert!(exit.contains("source `marketplace` failed"), "{exit}");
    assert!(!exit.contains("wrong-token"), "the secret leaked: {exit}");
    // The other sources were not stopped by it.
    for kind in SourceKind::ALL
        .into_iter()
        .filter(|k| *k != SourceKind::MarketplaceUsers)
    {
        assert_eq!(
            outcome(&outcomes, kind).status,
            RunStatus::Succeeded,
            "{kind}"
        );
    }
    assert_eq!(
        h.count("SELECT count(*) FROM sync_error WHERE source = 'marketplace' AND kind = 'auth'"),
        1
    );
    h.config = good;
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_signature_is_rejected_by_carehq() {
    let mut h = Harness::start(options(50), "").await;
    for s in h.config.sources.iter_mut().filter(|s| s.kind.is_carehq()) {
        if let caresync::config::Credentials::CareHq { api_secret, .. } = &mut s.credentials {
            *api_secret = caresync::config::Secret::new("not-the-secret");
        }
    }
    let outcomes = h
        .run_only(
            Mode::Backfill,
            vec![simulator_source_name(SourceKind::CarehqServiceUsers).into()],
        )
        .await;
    assert_eq!(outcomes[0].status, RunStatus::Failed);
    assert!(
        outcomes[0].error.as_deref().unwrap().contains("HTTP 401"),
        "{:?}",
        outcomes[0].error
    );
    h.sims.shutdown().await;
}

async fn loops_are_caught(faults: FaultConfig, kinds: &[SourceKind]) {
    let h = Harness::start(options(300), "page_size = 10\n").await;
    h.sims.state().set_faults(faults);
    let outcomes = h.run(Mode::Backfill).await;
    for kind in kinds {
        let o = outcome(&outcomes, *kind);
        assert_eq!(o.status, RunStatus::Failed, "{kind} should stop");
        assert!(
            o.error.as_deref().unwrap().contains("endless pagination"),
            "{kind}: {:?}",
            o.error
        );
        assert!(
            o.counts.requests < 50,
            "{kind}: stopped only after {} requests",
            o.counts.requests
        );
    }
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cursor_stops_the_source() {
    loops_are_caught(
        FaultConfig {
            repeat_cursor: true,
            ..FaultConfig::default()
        },
        &[SourceKind::CarevalidateUsers],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_page_stops_the_source() {
    loops_are_caught(
        FaultConfig {
            repeat_page: true,
            ..FaultConfig::default()
        },
        &[
            SourceKind::CarehqServiceUsers,
            SourceKind::MarketplaceUsers,
            SourceKind::PaceUsers,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::start(options(20), "").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", h.db_path().display());
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");
        } else {
            assert!(!suffix.is_empty(), "the database file exists");
        }
    }
    h.sims.shutdown().await;
}

/// The published CareHQ signing vectors (api-notes.md), through the same function the client
/// and the simulator use.
#[test]
fn carehq_signing_matches_the_published_vectors() {
    use caresync::source::carehq::signing::signature;
    let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let nonce = "AAAAAAAAAAAAAAAAAAAAAA";
    let get = p(&[
        ("attributes", "ref"),
        ("attributes", "first_name"),
        ("attributes", "last_name"),
        ("filters-status", "pending"),
        ("filters-status", "active"),
        ("sort_by", "full_name"),
        ("page", "2"),
        ("per_page", "50"),
    ]);
    let patch = p(&[
        ("first_name", "Anna"),
        ("street_address-postcode", "NE2 1PA"),
        ("dementia", "yes"),
        ("genders", "female"),
    ]);
    let cases = [
        (
            "GET",
            "service-users",
            get,
            "33c8adb8269ab29a94290366531f783e0cf0be249e8f191644ebf0a4234b9f6b",
        ),
        (
            "PATCH",
            "service-users/69a9e47783e6ab081d8eda64",
            patch,
            "065cc3d6aafd24b59381130840a6ef46005fbc47b42b51ed1eaf5a7457793e5b",
        ),
        (
            "DELETE",
            "service-users/69a9e47783e6ab081d8eda64",
            Vec::new(),
            "977e3147a107f53973d2b9e5ad30b23e89b6def58785a672478bebe6b5d71584",
        ),
    ];
    for (method, path, params, expected) in cases {
        assert_eq!(
            signature("test-secret", 1_700_000_000, nonce, method, path, &params),
            expected,
            "{method} {path}"
        );
    }
}

//! Issue 3: one canonical person per human — linking quality against ground truth, stable
//! person ids, survivorship, overrides.

use caresync::cli::evaluate::measure;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_matches_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let q = measure(2000, 3, dir.path()).await.expect("linking runs");
    let e = &q.evaluation;
    assert_eq!(
        e.false_merge_count,
        0,
        "false merges: {:?}",
        &e.false_merges[..e.false_merges.len().min(5)]
    );
    assert!(e.precision >= 0.999, "precision {}", e.precision);
    assert!(
        e.recall >= 0.98,
        "recall {} ({} missed, e.g. {:?})",
        e.recall,
        e.true_pairs - e.correct_pairs,
        &e.missed[..e.missed.len().min(5)]
    );
    assert!(
        q.persons < q.records,
        "records were linked into fewer persons"
    );
}

use caresync::cli::demo::simulator_source_name;
use caresync::source::kind::SourceKind;
use caresync::sync::Mode;

use crate::support::{Harness, assert_all_succeeded, options};

fn links(h: &Harness) -> Vec<(String, String, i64)> {
    let db = h.db();
    let mut s = db
        .prepare("SELECT source, external_id, person_id FROM person_link ORDER BY 1, 2")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_are_stable_and_follow_upstream_changes() {
    let h = Harness::start(options(400), "").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let first = links(&h);
    let live = h.count("SELECT count(*) FROM source_record WHERE deleted_at IS NULL");
    assert_eq!(
        first.len() as i64,
        live,
        "every live record is linked to a person"
    );
    assert_eq!(h.count("SELECT count(*) FROM person p WHERE NOT EXISTS (SELECT 1 FROM person_link l WHERE l.person_id = p.person_id)"), 0);
    assert_eq!(h.count("SELECT count(*) FROM relink_queue"), 0);

    // Nothing changed upstream: nothing is re-linked and every id stays.
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    assert_eq!(report.link.as_ref().unwrap().queued, 0);
    assert_eq!(links(&h), first);

    // A resident changes her preferred name upstream: her person follows, ids stay.
    let state = h.sims.state();
    let resident = state.keys(SourceKind::CarehqServiceUsers)[3].clone();
    assert!(state.update_field(
        SourceKind::CarehqServiceUsers,
        &resident,
        "preferred_name",
        serde_json::json!("Queenie")
    ));
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    let link = report.link.as_ref().unwrap();
    assert_eq!(link.queued, 1, "only the changed record is re-linked");
    assert_eq!(links(&h), first);
    let person: i64 = h
        .db()
        .query_row("SELECT person_id FROM person_link WHERE source = 'carehq_residents' AND external_id = ?1", [&resident], |r| r.get(0))
        .unwrap();
    let (preferred, source): (String, String) = h
        .db()
        .query_row(
            "SELECT p.preferred_name, f.source FROM person p JOIN field_provenance f ON f.person_id = p.person_id AND f.field = 'preferred_name' WHERE p.person_id = ?1",
            [person],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (preferred.as_str(), source.as_str()),
        ("Queenie", "carehq_residents")
    );

    // A record deleted upstream leaves its person (and the person goes if it was its only record).
    assert!(state.delete(SourceKind::CarehqServiceUsers, &resident));
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    assert_eq!(
        h.count(&format!("SELECT count(*) FROM person_link WHERE source = 'carehq_residents' AND external_id = '{resident}'")),
        0
    );
    let after = links(&h);
    let unchanged = first
        .iter()
        .filter(|l| l.1 != resident)
        .filter(|l| after.contains(l))
        .count();
    assert_eq!(
        unchanged,
        first.len() - 1,
        "other records keep their persons"
    );
    h.sims.shutdown().await;
}

/// Issue 7: a sync run by a new process that changed ten records re-links only what they
/// touch, from the linking state the backfill stored, not the whole store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_relinks_only_the_neighbourhood_of_a_change() {
    let h = Harness::start(options(1500), "").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let live = h.count("SELECT count(*) FROM canonical_record");
    let built: String = h
        .db()
        .query_row("SELECT built_at FROM link_state", [], |r| r.get(0))
        .unwrap();
    let state = h.sims.state();
    let keys = state.keys(SourceKind::CarehqServiceUsers);
    for (i, key) in keys.iter().take(8).enumerate() {
        assert!(state.update_field(
            SourceKind::CarehqServiceUsers,
            key,
            "preferred_name",
            serde_json::json!(format!("Nickname{i}"))
        ));
    }
    assert!(state.delete(SourceKind::CarehqServiceUsers, &keys[20]));
    state.insert_new(SourceKind::CarehqServiceUsers, 1);

    let (ok, stdout, stderr) = h.cli(&["sync"]);
    assert!(ok, "sync failed: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("linking"))
        .unwrap_or_else(|| panic!("no linking line in {stdout}"));
    assert!(
        line.starts_with("linking (their neighbourhood): 10 changed records;"),
        "{line}"
    );
    let linked: i64 = line
        .split("; ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(
        (10..live / 20).contains(&linked),
        "{linked} of {live} records re-linked: {line}"
    );
    let rebuilt: String = h
        .db()
        .query_row("SELECT built_at FROM link_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rebuilt, built, "the stored state was updated, not rebuilt");
    assert_eq!(h.count("SELECT count(*) FROM relink_queue"), 0);
    assert_eq!(
        h.count("SELECT count(*) FROM link_record"),
        h.count("SELECT count(*) FROM person_link"),
        "every linked record is in the linking state"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_override_wins_and_is_explained() {
    let h = Harness::start(options(300), "").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let person: i64 = h
        .db()
        .query_row(
            "SELECT person_id FROM v_person WHERE linked_records >= 2 ORDER BY person_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (ok, out, err) = h.cli(&[
        "set",
        &person.to_string(),
        "mobile=07700 900123",
        "--reason",
        "daughter phoned with the new number",
        "--actor",
        "test",
    ]);
    assert!(ok, "set failed: {err}");
    assert!(out.contains("mobile overridden"), "{out}");
    let check = |h: &Harness| -> (String, String, String) {
        h.db()
            .query_row(
                "SELECT p.mobile, f.source, f.rule FROM person p JOIN field_provenance f ON f.person_id = p.person_id AND f.field = 'mobile' WHERE p.person_id = ?1",
                [person],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    };
    assert_eq!(
        check(&h),
        (
            "+447700900123".into(),
            "operator".into(),
            "operator_override".into()
        )
    );
    // It survives later runs, and it is audited.
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    assert_eq!(check(&h).0, "+447700900123");
    assert_eq!(h.count(&format!("SELECT count(*) FROM operator_override WHERE person_id = {person} AND actor = 'test' AND superseded_at IS NULL")), 1);

    let (ok, out, err) = h.cli(&["explain", &person.to_string()]);
    assert!(ok, "explain failed: {err}");
    for expected in [
        "linked records:",
        "runner-up candidates",
        "where each value came from:",
        "mobile",
        "operator/ by operator_override",
        "daughter phoned",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    let external: String = h
        .db()
        .query_row(
            "SELECT external_id FROM person_link WHERE person_id = ?1 LIMIT 1",
            [person],
            |r| r.get(0),
        )
        .unwrap();
    assert!(out.contains(&external), "{out}");

    // Bad input is refused with a reason.
    let (ok, _, err) = h.cli(&[
        "set",
        &person.to_string(),
        "nhs_number=1234567890",
        "--reason",
        "x",
    ]);
    assert!(!ok && err.contains("nhs_number"), "{err}");
    let (ok, _, err) = h.cli(&["set", "999999", "mobile=07700900123", "--reason", "x"]);
    assert!(!ok && err.contains("no person 999999"), "{err}");
    h.sims.shutdown().await;
}

/// Issue 7: a record whose content and mapping version are unchanged is not mapped again
/// (nor re-linked); a changed record is; a new mapping version re-maps every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changed_records_or_a_new_mapping_version_are_mapped() {
    let mut h = Harness::start(options(300), "page_size = 40\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let mapped_rows =
        "SELECT (SELECT count(*) FROM canonical_record) + (SELECT count(*) FROM mapping_failure)";
    assert_eq!(
        h.count(mapped_rows),
        h.count("SELECT count(*) FROM source_record")
    );

    // Nothing changed upstream: nothing is mapped, written or queued.
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    assert_all_succeeded(&report.sources);
    assert_eq!(report.link.as_ref().unwrap().queued, 0);
    for o in &report.sources {
        let c = &o.counts.records;
        assert!(o.counts.records_seen > 0, "{}", o.source);
        assert_eq!(c.skipped_unchanged, o.counts.records_seen, "{}", o.source);
        assert_eq!(
            (c.mapped, c.mapping_failures, c.mapped_by_writer),
            (0, 0, 0),
            "{}",
            o.source
        );
    }

    // One record changes upstream: it alone is mapped, stored and queued.
    let kind = SourceKind::CarevalidateUsers;
    let key = h.sims.state().keys(kind)[5].clone();
    let id = kind.normalise_external_id(&key);
    assert!(
        h.sims
            .state()
            .update_field(kind, &key, "firstName", serde_json::json!("Zebedee"))
    );
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    assert_all_succeeded(&report.sources);
    assert_eq!(report.link.as_ref().unwrap().queued, 1);
    for o in &report.sources {
        let c = &o.counts.records;
        let changed = u64::from(o.source == simulator_source_name(kind));
        assert_eq!((c.mapped, c.updated), (changed, changed), "{}", o.source);
        assert_eq!(
            c.skipped_unchanged,
            o.counts.records_seen - changed,
            "{}",
            o.source
        );
    }
    let given: String = h
        .db()
        .query_row(
            "SELECT json_extract(values_json, '$.given_name') FROM canonical_record WHERE source = ?1 AND external_id = ?2",
            [simulator_source_name(kind), id.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(given, "Zebedee");

    // A new version of every mapping file (a comment is enough): every record is mapped again.
    let mappings = new_mapping_versions();
    h.config.mappings_dir = Some(mappings.path().to_path_buf());
    let report = h.run_report(Mode::Backfill, Vec::new()).await;
    assert_all_succeeded(&report.sources);
    for o in &report.sources {
        let c = &o.counts.records;
        assert_eq!(c.skipped_unchanged, 0, "{}", o.source);
        assert_eq!(
            c.mapped + c.mapping_failures,
            o.counts.records_seen,
            "{}",
            o.source
        );
    }
    assert_eq!(
        h.count(mapped_rows),
        h.count("SELECT count(*) FROM source_record")
    );
    let versions = caresync::sync::mapping::Mappings::from_dir(mappings.path()).unwrap();
    let db = h.db();
    for kind in SourceKind::ALL {
        let hash = versions.for_kind(kind).unwrap().hash.to_string();
        let stale: i64 = db
            .query_row(
                "SELECT (SELECT count(*) FROM canonical_record WHERE source = ?1 AND mapping_hash != ?2)
                      + (SELECT count(*) FROM mapping_failure WHERE source = ?1 AND mapping_hash != ?2)",
                [simulator_source_name(kind), hash.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stale, 0, "{kind}: rows of the old mapping version");
    }
    h.sims.shutdown().await;
}

/// A new mapping version reaches every live record on the next `sync`, including the CareHQ
/// records its incremental read does not return: they are re-mapped from their stored
/// payloads, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mapping_version_reaches_every_record_on_an_incremental_sync() {
    let mut h = Harness::start(options(300), "page_size = 40\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    assert_all_succeeded(&h.run(Mode::Sync).await);
    let versions = |h: &Harness| -> Vec<(String, i64)> {
        h.db()
            .prepare(
                "SELECT s.source, count(DISTINCT COALESCE(c.mapping_hash, f.mapping_hash))
                 FROM source_record s
                 LEFT JOIN canonical_record c USING (source, external_id)
                 LEFT JOIN mapping_failure f USING (source, external_id)
                 WHERE s.deleted_at IS NULL GROUP BY 1 ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let old_hashes = h.count("SELECT count(DISTINCT mapping_hash) FROM canonical_record");
    assert_eq!(old_hashes, 5, "one version per kind");

    let mappings = new_mapping_versions();
    h.config.mappings_dir = Some(mappings.path().to_path_buf());
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    assert_all_succeeded(&report.sources);
    let carehq = simulator_source_name(SourceKind::CarehqServiceUsers);
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM sync_state WHERE source = '{carehq}' AND scan_mode = 'incremental'"
        )),
        1,
        "CareHQ's sync is incremental"
    );
    for o in &report.sources {
        let live = h.count(&format!(
            "SELECT count(*) FROM source_record WHERE source = '{}' AND deleted_at IS NULL",
            o.source
        ));
        let c = &o.counts.records;
        assert_eq!(
            (c.mapped + c.mapping_failures) as i64,
            live,
            "{}: every live record mapped once",
            o.source
        );
    }
    // One version per source, and none of them the old one.
    assert!(
        versions(&h).iter().all(|(_, n)| *n == 1),
        "{:?}",
        versions(&h)
    );
    assert_eq!(
        h.count("SELECT count(DISTINCT mapping_hash) FROM canonical_record"),
        5
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM canonical_record c JOIN sync_state s USING (source)
             WHERE c.mapping_hash IS NOT s.mapping_hash"
        ),
        0
    );
    assert_eq!(report.link.as_ref().unwrap().queued as i64, h.count("SELECT count(*) FROM canonical_record c JOIN source_record s USING (source, external_id) WHERE s.deleted_at IS NULL") + h.count("SELECT count(*) FROM mapping_failure"));

    // Done once: the next sync maps nothing.
    let report = h.run_report(Mode::Sync, Vec::new()).await;
    assert_all_succeeded(&report.sources);
    for o in &report.sources {
        let c = &o.counts.records;
        assert_eq!((c.mapped, c.mapping_failures), (0, 0), "{}", o.source);
    }
    h.sims.shutdown().await;
}

/// A copy of every built-in mapping file with a comment added: a new version of each, mapping
/// as before.
fn new_mapping_versions() -> tempfile::TempDir {
    let mappings = tempfile::tempdir().unwrap();
    for kind in SourceKind::ALL {
        let from = format!("{}/mappings/{kind}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(from).unwrap();
        std::fs::write(
            mappings.path().join(format!("{kind}.toml")),
            format!("{text}\n# version 2\n"),
        )
        .unwrap();
    }
    mappings
}

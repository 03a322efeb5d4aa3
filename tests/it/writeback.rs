//! Issue 5: write-back — plan, push, conflicts, no duplicate creates, no echo.

use caresync::sim::FaultConfig;
use caresync::source::kind::SourceKind;
use caresync::sync::Mode;
use serde_json::Value;

use crate::support::{Harness, assert_all_succeeded, options};

const MOBILE_EVERYWHERE: &str = r#"
[push.carehq_residents]
fields = ["mobile"]
[push.marketplace]
fields = ["mobile"]
[push.care360]
fields = ["mobile"]
[push.pace]
fields = ["mobile"]
"#;

async fn harness(people: usize, push: &str) -> Harness {
    let push = push.to_string();
    Harness::start_with(options(people), Some("1000/1s"), "", move |t| t + &push).await
}

/// The mobile field each API calls its own.
fn mobile_of(kind: SourceKind, body: &Value) -> Option<String> {
    let field = match kind {
        SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => "mobile",
        SourceKind::MarketplaceUsers => "mobile_number",
        SourceKind::CarevalidateUsers => "phoneNumber",
        SourceKind::PaceUsers => "TelephoneNumber",
    };
    let v = body
        .get(field)
        .or_else(|| body.get("Telephone Number"))?
        .as_str()?;
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    Some(
        digits
            .trim_start_matches("44")
            .trim_start_matches('0')
            .to_string(),
    )
}

fn upstream(h: &Harness, kind: SourceKind, external_id: &str) -> Value {
    let state = h.sims.state();
    let keys = state.keys(kind);
    let records = state.records(kind);
    keys.iter()
        .zip(records)
        .find(|(k, _)| kind.normalise_external_id(k) == external_id)
        .map(|(_, r)| r)
        .expect("the record is upstream")
}

fn person_links(h: &Harness, person: i64) -> Vec<(SourceKind, String)> {
    let db = h.db();
    let mut s = db
        .prepare("SELECT kind, external_id FROM person_link WHERE person_id = ?1")
        .unwrap();
    s.query_map([person], |r| {
        Ok((r.get::<_, String>(0)?.parse().unwrap(), r.get(1)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_reaches_every_linked_system_without_echo() {
    let h = harness(300, MOBILE_EVERYWHERE).await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    // First bring the systems in line with each other.
    let (ok, out, err) = h.cli(&["push", "--yes"]);
    assert!(ok, "first push failed:\n{out}\n{err}");
    let (_, out, _) = h.cli(&["plan"]);
    assert_eq!(out.trim(), "No changes.", "after a push the plan is empty");

    let resident: i64 = h
        .db()
        .query_row(
            "SELECT person_id FROM v_person WHERE carehq_service_user_records > 0 AND marketplace_records > 0 AND carevalidate_records > 0 ORDER BY person_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let staff: i64 = h
        .db()
        .query_row(
            "SELECT person_id FROM v_person WHERE pace_records > 0 ORDER BY person_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (person, number) in [(resident, "07700 900123"), (staff, "07700900456")] {
        let (ok, _, err) = h.cli(&[
            "set",
            &person.to_string(),
            &format!("mobile={number}"),
            "--reason",
            "new phone",
        ]);
        assert!(ok, "{err}");
    }
    let (_, plan, _) = h.cli(&["plan"]);
    assert!(
        plan.contains("mobile:") && plan.contains("+447700900123"),
        "{plan}"
    );
    let (ok, out, err) = h.cli(&["push", "--yes"]);
    assert!(ok, "push failed:\n{out}\n{err}");

    for (person, expected) in [(resident, "7700900123"), (staff, "7700900456")] {
        let links = person_links(&h, person);
        let writable: Vec<_> = links
            .iter()
            .filter(|(k, _)| *k != SourceKind::CarehqUsers)
            .collect();
        assert!(!writable.is_empty());
        for (kind, id) in writable {
            assert_eq!(
                mobile_of(*kind, &upstream(&h, *kind, id)).as_deref(),
                Some(expected),
                "{kind} {id}"
            );
        }
    }
    let kinds: Vec<SourceKind> = person_links(&h, resident)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in [
        SourceKind::CarehqServiceUsers,
        SourceKind::MarketplaceUsers,
        SourceKind::CarevalidateUsers,
    ] {
        assert!(kinds.contains(&k), "the resident is linked in {k}");
    }
    assert!(
        person_links(&h, staff)
            .iter()
            .any(|(k, _)| *k == SourceKind::PaceUsers)
    );

    let (_, out, _) = h.cli(&["plan"]);
    assert_eq!(out.trim(), "No changes.");
    // No echo: reading back what we wrote changes nothing and plans nothing.
    let writes_before: u64 = SourceKind::ALL
        .iter()
        .map(|k| h.sims.state().stats(*k).writes)
        .sum();
    let sync = h.run(Mode::Sync).await;
    assert_all_succeeded(&sync);
    for o in &sync {
        assert_eq!(
            o.counts.records.updated, 0,
            "{}: the sync saw our own writes as changes",
            o.source
        );
    }
    let (_, out, _) = h.cli(&["plan"]);
    assert_eq!(out.trim(), "No changes.");
    let writes_after: u64 = SourceKind::ALL
        .iter()
        .map(|k| h.sims.state().stats(*k).writes)
        .sum();
    assert_eq!(writes_before, writes_after);
    assert!(h.count("SELECT count(*) FROM write_log WHERE outcome = 'succeeded'") > 0);
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_upstream_is_a_conflict_not_an_overwrite() {
    let h = harness(200, "[push.carehq_residents]\nfields = [\"mobile\"]\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let (ok, _, err) = h.cli(&["push", "--yes"]);
    assert!(ok, "{err}");
    let (person, external_id): (i64, String) = h
        .db()
        .query_row("SELECT person_id, external_id FROM person_link WHERE source = 'carehq_residents' ORDER BY 1 LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let (ok, _, err) = h.cli(&[
        "set",
        &person.to_string(),
        "mobile=07700900777",
        "--reason",
        "test",
    ]);
    assert!(ok, "{err}");
    // Someone edits the resident in CareHQ between our last read and the push.
    assert!(h.sims.state().update_field(
        SourceKind::CarehqServiceUsers,
        &external_id,
        "preferred_name",
        Value::from("Bunty")
    ));
    let (ok, out, _) = h.cli(&["push", "--yes"]);
    assert!(!ok, "a conflict must give a non-zero status:\n{out}");
    assert!(out.contains("conflict"), "{out}");
    let (c_person, field): (i64, String) = h
        .db()
        .query_row("SELECT person_id, field FROM v_conflicts WHERE source = 'carehq_residents' AND external_id = ?1", [&external_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((c_person, field.as_str()), (person, "preferred_name"));
    assert_ne!(
        mobile_of(
            SourceKind::CarehqServiceUsers,
            &upstream(&h, SourceKind::CarehqServiceUsers, &external_id)
        )
        .as_deref(),
        Some("7700900777")
    );
    let (ok, status, err) = h.cli(&["status"]);
    assert!(ok, "{err}");
    assert!(
        status.contains("Open conflicts")
            && status.contains(&external_id)
            && status.contains("preferred_name"),
        "{status}"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_never_creates_twice() {
    let h = harness(
        300,
        "[push.marketplace]\nfields = [\"mobile\"]\ncreate = true\n",
    )
    .await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let before = h.sims.state().count(SourceKind::MarketplaceUsers);
    // Half the answers are lost after the API applied the write (and some reads fail too).
    h.sims.state().set_faults(FaultConfig {
        seed: 4,
        drop_rate: 0.5,
        ..FaultConfig::default()
    });
    let (_, out, err) = h.cli(&["push", "--yes"]);
    let uncertain =
        h.count("SELECT count(*) FROM outbox WHERE status = 'sending' AND action = 'create'");
    assert!(
        uncertain > 0,
        "some creates should have lost their answer:\n{out}\n{err}"
    );
    h.sims.state().set_faults(FaultConfig::default());
    let (_, out, err) = h.cli(&["push", "--yes"]);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE status = 'sending'"),
        0,
        "{out}\n{err}"
    );
    assert!(
        h.count("SELECT count(*) FROM write_log WHERE outcome = 'found_existing'") >= uncertain,
        "{out}"
    );
    // Exactly one marketplace record per created person: no email appears twice upstream.
    let created = h.count("SELECT count(DISTINCT person_id) FROM outbox WHERE action = 'create' AND status = 'succeeded'") as usize;
    assert!(created > 0);
    assert_eq!(
        h.sims.state().count(SourceKind::MarketplaceUsers),
        before + created,
        "{out}"
    );
    let mut emails: Vec<String> = h
        .sims
        .state()
        .records(SourceKind::MarketplaceUsers)
        .iter()
        .filter_map(|r| {
            r.get("email")
                .and_then(Value::as_str)
                .map(|e| e.trim().to_lowercase())
        })
        .collect();
    let n = emails.len();
    emails.sort();
    emails.dedup();
    let generated_duplicates = n - emails.len();
    assert!(
        generated_duplicates <= before / 100 + 3,
        "{generated_duplicates} duplicated emails upstream"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_error_is_kept_and_not_retried() {
    // CareHQ requires location, funding type, service and day-care use on a create.
    let h = harness(300, "[push.carehq_residents]\ncreate = true\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let (ok, out, _) = h.cli(&["push", "--yes"]);
    assert!(!ok, "{out}");
    let reason: String = h
        .db()
        .query_row("SELECT last_error FROM outbox WHERE status = 'failed' AND error_kind = 'validation' LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        reason.contains("HTTP 400") && reason.contains("location"),
        "{reason}"
    );
    let writes = h.sims.state().stats(SourceKind::CarehqServiceUsers).writes;
    let (ok, out, _) = h.cli(&["push", "--yes"]);
    assert!(!ok, "a write held back is not a success:\n{out}");
    assert!(out.contains("held back"), "{out}");
    assert_eq!(
        h.sims.state().stats(SourceKind::CarehqServiceUsers).writes,
        writes,
        "a validation failure was retried"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_reach_carehq_and_pace_with_their_encodings() {
    let location = {
        let sims = caresync::sim::start(options(10)).await.unwrap();
        let l = sims.state().locations()[0].clone();
        sims.shutdown().await;
        l
    };
    let push = format!(
        "[push.carehq_residents]\nfields = [\"mobile\"]\ncreate = true\n[push.carehq_residents.create_defaults]\nlocation = \"{location}\"\nfunding_type = \"private\"\nservice = \"residential_home\"\nday_care_use = \"not_used\"\n\
         [push.pace]\nfields = [\"mobile\"]\ncreate = true\n[push.pace.create_defaults]\nUserId = \"{{email}}\"\nUserStatus = \"Active\"\n"
    );
    let h = harness(400, &push).await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let su_before = h.sims.state().count(SourceKind::CarehqServiceUsers);
    let pace_before = h.sims.state().count(SourceKind::PaceUsers);
    let (_, plan, _) = h.cli(&["plan"]);
    assert!(
        plan.contains("create carehq_residents") && plan.contains("create pace"),
        "{plan}"
    );
    let (ok, out, err) = h.cli(&["push", "--yes"]);
    assert!(ok, "{out}\n{err}");
    assert!(h.sims.state().count(SourceKind::CarehqServiceUsers) > su_before);
    assert!(h.sims.state().count(SourceKind::PaceUsers) > pace_before);
    let db = h.db();
    let (su_id, person): (String, i64) = db
        .query_row("SELECT external_id, person_id FROM outbox WHERE source = 'carehq_residents' AND action = 'create' AND status = 'succeeded' LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let body = upstream(&h, SourceKind::CarehqServiceUsers, &su_id);
    let (given, family): (String, String) = db
        .query_row(
            "SELECT given_name, family_name FROM person WHERE person_id = ?1",
            [person],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(body["first_name"], Value::from(given));
    assert_eq!(body["last_name"], Value::from(family));
    assert_eq!(body["location"], Value::from(location));
    assert_eq!(body["funding_type"], "private");
    assert!(
        body["genders"].is_array(),
        "genders were sent as a repeated key: {}",
        body["genders"]
    );
    let (pace_id, pace_person): (String, i64) = db
        .query_row("SELECT external_id, person_id FROM outbox WHERE source = 'pace' AND action = 'create' AND status = 'succeeded' LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let pace = upstream(&h, SourceKind::PaceUsers, &pace_id);
    let email: String = db
        .query_row(
            "SELECT email FROM person WHERE person_id = ?1",
            [pace_person],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pace["UserStatus"], "Active");
    assert_eq!(
        pace["UserId"].as_str().map(str::to_lowercase),
        Some(email.clone())
    );
    assert_eq!(
        pace["EmailAddress"]
            .as_str()
            .map(|e| e.trim().to_lowercase()),
        Some(email)
    );
    // The created records belong to the persons they were made for.
    assert!(
        person_links(&h, person)
            .iter()
            .any(|(k, id)| *k == SourceKind::CarehqServiceUsers && *id == su_id)
    );
    assert!(
        person_links(&h, pace_person)
            .iter()
            .any(|(k, id)| *k == SourceKind::PaceUsers && *id == pace_id)
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_the_source_never_returns_is_not_updated_forever() {
    // CareHQ takes `phone` on writes but never lists it: an update could not be confirmed.
    let h = harness(
        150,
        "[push.carehq_residents]\nfields = [\"phone\", \"mobile\"]\n",
    )
    .await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let (ok, out, err) = h.cli(&["plan", "--json"]);
    assert!(ok, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let phone_updates = plan["writes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["changes"].as_array().unwrap().iter())
        .filter(|c| c["field"] == "phone")
        .count();
    assert_eq!(phone_updates, 0, "phone was planned as an update");
    let refused = plan["refused"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r["field"] == "phone"
                && r["reason"].as_str().unwrap().contains("never returns")),
        "{out}"
    );
    h.sims.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_answer_was_lost_is_settled_not_conflicted() {
    let h = harness(200, "[push.carehq_residents]\nfields = [\"mobile\"]\n").await;
    assert_all_succeeded(&h.run(Mode::Backfill).await);
    let (ok, _, err) = h.cli(&["push", "--yes"]);
    assert!(ok, "{err}");
    let persons: Vec<(i64, String)> = {
        let db = h.db();
        let mut s = db
            .prepare("SELECT person_id, external_id FROM person_link WHERE source = 'carehq_residents' ORDER BY 1 LIMIT 10")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (i, (person, _)) in persons.iter().enumerate() {
        let (ok, _, err) = h.cli(&[
            "set",
            &person.to_string(),
            &format!("mobile=077009008{i:02}"),
            "--reason",
            "test",
        ]);
        assert!(ok, "{err}");
    }
    // Half the answers are lost after the API applied the update.
    h.sims.state().set_faults(FaultConfig {
        seed: 8,
        drop_rate: 0.5,
        ..FaultConfig::default()
    });
    let _ = h.cli(&["push", "--yes"]);
    let uncertain =
        h.count("SELECT count(*) FROM outbox WHERE status = 'sending' AND action = 'update'");
    assert!(uncertain > 0, "some updates should have lost their answer");
    h.sims.state().set_faults(FaultConfig::default());
    let (ok, out, err) = h.cli(&["push", "--yes"]);
    assert!(
        ok,
        "the lost updates were taken for conflicts:\n{out}\n{err}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE status = 'sending'"),
        0
    );
    assert_eq!(h.count("SELECT count(*) FROM v_conflicts"), 0);
    assert!(
        h.count(
            "SELECT count(*) FROM write_log WHERE action = 'update' AND outcome = 'found_existing'"
        ) >= uncertain
    );
    for (i, (_, id)) in persons.iter().enumerate() {
        let expected = format!("77009008{i:02}");
        assert_eq!(
            mobile_of(
                SourceKind::CarehqServiceUsers,
                &upstream(&h, SourceKind::CarehqServiceUsers, id)
            )
            .as_deref(),
            Some(expected.as_str()),
            "{id}"
        );
    }
    let (_, out, _) = h.cli(&["plan"]);
    assert_eq!(out.trim(), "No changes.");
    h.sims.shutdown().await;
}

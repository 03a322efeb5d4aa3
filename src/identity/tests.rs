//! Linking the simulator's people, measured against its ground truth; incremental = full.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::model::{Field, Value};
use crate::sim::{SimOptions, SimState};
use crate::transform::compile_dir;

pub(crate) struct Dataset {
    pub records: Vec<InputRecord>,
    pub truth: HashMap<RecordRef, u64>,
}

/// Every record of a simulated population, mapped to canonical values, with who is who.
pub(crate) fn dataset(people: usize, seed: u64) -> Dataset {
    let state = SimState::generate(SimOptions {
        people,
        seed,
        ..SimOptions::default()
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mappings = compile_dir(&dir).expect("mappings compile");
    let truth_raw: HashMap<(SourceKind, String), u64> = state
        .truth()
        .into_iter()
        .map(|(k, key, p)| ((k, key), p))
        .collect();
    let mut records = Vec::new();
    let mut truth = HashMap::new();
    for kind in SourceKind::ALL {
        let mapping = mappings
            .iter()
            .find(|m| m.source().name() == kind.as_str())
            .expect("a mapping per kind");
        for (body, key) in state.records(kind).iter().zip(state.keys(kind)) {
            let Ok(mapped) = mapping.apply(body) else {
                continue;
            };
            let record = RecordRef::new(kind.as_str(), kind.normalise_external_id(&key));
            if let Some(p) = truth_raw.get(&(kind, key)) {
                truth.insert(record.clone(), *p);
            }
            records.push(InputRecord {
                record,
                kind,
                values: mapped.values,
            });
        }
    }
    Dataset { records, truth }
}

fn report(label: &str, ev: &Evaluation, res: &Resolution, secs: f64) {
    println!(
        "{label}: records {} clusters {} true_pairs {} predicted {} correct {} precision {:.5} \
         recall {:.5} false_merges {} review {} compared {} oversized_blocks {} link_secs {secs:.3}",
        res.stats.records,
        res.stats.clusters,
        ev.true_pairs,
        ev.predicted_pairs,
        ev.correct_pairs,
        ev.precision,
        ev.recall,
        ev.false_merge_count,
        res.review.len(),
        res.stats.compared_pairs,
        res.stats.oversized_blocks,
    );
}

fn run(people: usize, seed: u64) -> (Evaluation, Resolution, f64) {
    let data = dataset(people, seed);
    let started = Instant::now();
    let res = resolve(&MatchConfig::default(), data.records);
    let secs = started.elapsed().as_secs_f64();
    let ev = evaluate(&res.clusters, &data.truth);
    (ev, res, secs)
}

#[test]
fn links_2000_people_against_ground_truth() {
    let (ev, res, secs) = run(2000, 7);
    report("2k", &ev, &res, secs);
    assert_eq!(
        ev.false_merge_count, 0,
        "false merges: {}",
        ev.false_merge_count
    );
    assert!(ev.precision >= 0.999, "precision {}", ev.precision);
    assert!(ev.recall >= 0.98, "recall {}", ev.recall);
    // Every record is in exactly one cluster.
    let placed: usize = res.clusters.iter().map(|c| c.members.len()).sum();
    assert_eq!(placed, res.stats.records);
}

/// `cargo test --release -- --ignored links_10000 --nocapture`
#[test]
#[ignore = "10,000 people: run in release"]
fn links_10000_people_against_ground_truth() {
    let (ev, res, secs) = run(10_000, 20_260_630);
    report("10k", &ev, &res, secs);
    assert!(ev.precision >= 0.999, "precision {}", ev.precision);
    assert!(ev.recall >= 0.98, "recall {}", ev.recall);
    assert_eq!(
        ev.false_merge_count, 0,
        "false merges {}",
        ev.false_merge_count
    );
}

fn sorted_clusters(res: &Resolution) -> Vec<Vec<RecordRef>> {
    res.clusters
        .iter()
        .map(|c| c.records().cloned().collect())
        .collect()
}

fn values(fields: &[(Field, &str)]) -> crate::model::CanonicalValues {
    fields
        .iter()
        .map(|(f, v)| (*f, f.parse_text(v).unwrap_or(Value::Text((*v).to_owned()))))
        .collect()
}

fn input(id: &str, fields: &[(Field, &str)]) -> InputRecord {
    InputRecord {
        record: RecordRef::new("carehq", id),
        kind: SourceKind::CarehqServiceUsers,
        values: values(fields),
    }
}

use crate::source::kind::SourceKind;

#[test]
fn transitivity_cannot_merge_two_nhs_numbers() {
    use Field::*;
    let anna = [
        (GivenName, "Anna"),
        (FamilyName, "Murphy"),
        (BirthDate, "1946-03-25"),
    ];
    let with = |extra: (Field, &'static str)| {
        let mut v = anna.to_vec();
        v.push(extra);
        v
    };
    let records = vec![
        input("a", &with((NhsNumber, "9434765919"))),
        input("b", &with((NhsNumber, "4857773457"))),
        // Links to both by name + birth date.
        input("c", &with((Email, "anna@example.co.uk"))),
    ];
    let res = resolve(&MatchConfig::default(), records);
    let cluster_of = |id: &str| {
        res.clusters
            .iter()
            .position(|c| c.records().any(|r| r.external_id == id))
    };
    assert_ne!(cluster_of("a"), cluster_of("b"));
    // "c" could be either person: picking one would be a guess, so it links to neither.
    assert_eq!(res.clusters.len(), 3);
    let ambiguous: Vec<&Candidate> = res
        .review
        .iter()
        .filter(|c| c.reason == NotLinked::Ambiguous)
        .collect();
    assert_eq!(ambiguous.len(), 2, "{:?}", res.review);
    assert!(
        ambiguous
            .iter()
            .all(|c| c.record.external_id == "c" || c.other.external_id == "c")
    );
    assert!(res.clusters.iter().all(|c| c.members.len() == 1));
}

/// Namesakes born the same day, with different contact details, and a record without any
/// contact details that matches both on name and birth date.
fn namesakes() -> Vec<InputRecord> {
    use Field::*;
    let chloe = [
        (GivenName, "Chloe"),
        (FamilyName, "Smith"),
        (BirthDate, "1959-05-27"),
        (Gender, "female"),
    ];
    let with = |extra: &[(Field, &'static str)]| {
        let mut v = chloe.to_vec();
        v.extend_from_slice(extra);
        v
    };
    vec![
        input(
            "a",
            &with(&[(Email, "chloe.a@example.co.uk"), (Postcode, "L18 9ZR")]),
        ),
        input(
            "b",
            &with(&[(Email, "chloe.b@example.co.uk"), (Postcode, "BA2 9EB")]),
        ),
        input("c", &with(&[(NhsNumber, "9434765919")])),
    ]
}

#[test]
fn contact_details_keep_namesakes_apart() {
    let res = resolve(&MatchConfig::default(), namesakes());
    assert_eq!(res.clusters.len(), 3, "{:?}", res.clusters);
    assert!(res.review.iter().any(|c| {
        (c.record.external_id.as_str(), c.other.external_id.as_str()) == ("a", "b")
            && c.reason == NotLinked::Veto(Veto::ContactDetails)
    }));
    // The rule off: the three merge (the behaviour it prevents).
    let off = MatchConfig {
        contact_conflict_fields: 0,
        ..MatchConfig::default()
    };
    assert_eq!(resolve(&off, namesakes()).clusters.len(), 1);
}

#[test]
fn a_shared_nhs_number_outweighs_contact_details() {
    let mut records = namesakes();
    records[1]
        .values
        .insert(Field::NhsNumber, Value::Text("9434765919".into()));
    let records: Vec<InputRecord> = records
        .into_iter()
        .map(|mut r| {
            if let Some(v) = r.values.get(Field::NhsNumber).and_then(Value::as_text) {
                let parsed = Field::NhsNumber.parse_text(v);
                if let Ok(v) = parsed {
                    r.values.insert(Field::NhsNumber, v);
                }
            }
            r
        })
        .collect();
    let res = resolve(&MatchConfig::default(), records);
    // b and c share the NHS number; a disagrees with b on email and postcode.
    let groups: Vec<Vec<&str>> = res
        .clusters
        .iter()
        .map(|c| c.records().map(|r| r.external_id.as_str()).collect())
        .collect();
    assert_eq!(groups, vec![vec!["a"], vec!["b", "c"]]);
}

#[test]
fn twins_stay_apart_and_nicknames_link() {
    use Field::*;
    let home = [
        (FamilyName, "Okafor"),
        (BirthDate, "1939-11-02"),
        (Postcode, "NE2 1PA"),
    ];
    let rec = |id: &str, given: &str| {
        let mut v = home.to_vec();
        v.push((GivenName, given));
        input(id, &v)
    };
    let res = resolve(
        &MatchConfig::default(),
        vec![
            rec("1", "Margaret"),
            rec("2", "Peggy"),
            rec("3", "Dorothy"),
            rec("4", "Dot"),
        ],
    );
    let groups: Vec<Vec<&str>> = res
        .clusters
        .iter()
        .map(|c| c.records().map(|r| r.external_id.as_str()).collect())
        .collect();
    assert_eq!(groups, vec![vec!["1", "2"], vec!["3", "4"]]);
    assert!(
        res.review
            .iter()
            .all(|c| matches!(c.reason, NotLinked::Veto(Veto::GivenName)) || c.score < 12.0)
    );
}

/// Prints why missed pairs were missed (field levels and weights only, no values).
#[test]
#[ignore = "diagnostics"]
fn diagnose_missed_pairs() {
    let people = std::env::var("IDENTITY_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed = std::env::var("IDENTITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let data = dataset(people, seed);
    let by_ref: HashMap<RecordRef, InputRecord> = data
        .records
        .iter()
        .map(|r| (r.record.clone(), r.clone()))
        .collect();
    let res = resolve(&MatchConfig::default(), data.records.clone());
    let ev = evaluate(&res.clusters, &data.truth);
    let describe = |a: &RecordRef, b: &RecordRef| {
        let (Some(ra), Some(rb)) = (by_ref.get(a), by_ref.get(b)) else {
            return String::new();
        };
        let c = compare_records(&MatchConfig::default(), &ra.values, &rb.values);
        let fields: Vec<String> = c
            .fields
            .iter()
            .map(|f| format!("{}:{}", f.field, f.level))
            .collect();
        format!(
            "{}-{} rule={:?} veto={:?} strong={} score={:.1} [{}]",
            ra.kind.as_str(),
            rb.kind.as_str(),
            c.rule,
            c.veto,
            c.strong,
            c.score,
            fields.join(" ")
        )
    };
    for (a, b) in &ev.false_merges {
        println!("FALSE {}", describe(a, b));
        for c in res.clusters.iter().filter(|c| c.records().any(|r| r == a)) {
            for m in &c.members {
                let via = m.link.as_ref().map(|l| {
                    format!(
                        "{} {:.1} {}",
                        l.rule.as_str(),
                        l.score,
                        describe(&m.record, &l.via)
                    )
                });
                println!("   member {} {:?}", m.kind.as_str(), via);
            }
        }
    }
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for c in &res.review {
        *reasons.entry(c.reason.as_str()).or_default() += 1;
    }
    println!("REVIEW {reasons:?}");
    let mut summary: HashMap<String, usize> = HashMap::new();
    for (a, b) in &ev.missed {
        let (Some(ra), Some(rb)) = (by_ref.get(a), by_ref.get(b)) else {
            continue;
        };
        let c = compare_records(&MatchConfig::default(), &ra.values, &rb.values);
        let fields: Vec<String> = c
            .fields
            .iter()
            .map(|f| format!("{}:{}", f.field, f.level))
            .collect();
        let line = format!(
            "{}-{} rule={:?} veto={:?} strong={} score={:.1} [{}]",
            ra.kind.as_str(),
            rb.kind.as_str(),
            c.rule,
            c.veto,
            c.strong,
            c.score,
            fields.join(" ")
        );
        *summary.entry(line).or_default() += 1;
    }
    let mut lines: Vec<_> = summary.into_iter().collect();
    lines.sort_by_key(|l| std::cmp::Reverse(l.1));
    for (line, n) in lines {
        println!("{n:4} {line}");
    }
}

/// Pairs below the review threshold are kept only as runners-up: dropping them changes no link,
/// whatever the configured thresholds, and every runner-up kept is at least the keep score.
#[test]
fn weak_candidates_change_no_link() {
    let data = dataset(2000, 5);
    for review_threshold in [13.0, 9.0] {
        let with_all = MatchConfig {
            review_threshold,
            candidate_min_score: 4.0,
            ..MatchConfig::default()
        };
        let default_keep = MatchConfig {
            review_threshold,
            ..MatchConfig::default()
        };
        let all = resolve(&with_all, data.records.clone());
        let kept = resolve(&default_keep, data.records.clone());
        assert_eq!(sorted_clusters(&kept), sorted_clusters(&all));
        assert!(kept.stats.kept_pairs < all.stats.kept_pairs);
        let floor = default_keep.candidate_keep_score();
        assert!(
            kept.clusters
                .iter()
                .flat_map(|c| &c.runners_up)
                .all(|r| r.score >= floor)
        );
    }
}

/// A record given twice is linked once, as its last version.
#[test]
fn of_a_record_given_twice_the_last_version_is_linked() {
    use Field::*;
    let ann = [
        (GivenName, "Ann"),
        (FamilyName, "Lee"),
        (BirthDate, "1950-02-03"),
        (NhsNumber, "9434765919"),
    ];
    let bob = [
        (GivenName, "Bob"),
        (FamilyName, "Stone"),
        (BirthDate, "1961-07-08"),
    ];
    let res = resolve(
        &MatchConfig::default(),
        vec![
            input("a", &ann),
            input("dup", &bob),
            input("b", &ann),
            input("dup", &ann),
        ],
    );
    assert_eq!(res.stats.records, 3);
    assert_eq!(
        sorted_clusters(&res).len(),
        1,
        "the last version of `dup` is Ann"
    );
}

/// A full link lets the index go as it resolves (`into_resolution`): the result is the one
/// an index that stays (as an incremental link keeps it) gives.
#[test]
fn letting_the_index_go_leaves_the_resolution_unchanged() {
    let data = dataset(1500, 11);
    let index = LinkIndex::build(MatchConfig::default(), data.records);
    let kept = index.resolution();
    assert!(kept.clusters.iter().any(|c| c.members.len() > 2));
    assert!(kept.clusters.iter().any(|c| !c.runners_up.is_empty()));
    assert!(!kept.review.is_empty());
    assert!(kept.stats.blocks > 0 && kept.stats.kept_pairs > 0);
    assert_eq!(index.into_resolution(), kept);
}

/// Names are blocked beside the decade of birth, the postcode area and each landline, never
/// alone: with the shipped weights names alone cannot keep a pair, so linking gives exactly
/// what blocking every record's names alone gives (when neither way has a block too large to
/// compare), with fewer comparisons.
#[test]
fn blocking_names_only_where_they_can_keep_a_pair_links_the_same() {
    let config = MatchConfig::default();
    assert!(!config.names_alone_may_keep());
    for (people, seed) in [(3000, 3), (2500, 17)] {
        let data = dataset(people, seed);
        let link = |names_alone: bool| {
            let blocking = features::Blocking {
                names_alone,
                ..config.blocking()
            };
            let prepared = data
                .records
                .iter()
                .map(|r| Prepared::new(r, blocking))
                .collect();
            LinkIndex::build_prepared(config.clone(), prepared).into_resolution()
        };
        let (narrow, every) = (link(false), link(true));
        assert_eq!(every.stats.oversized_blocks, 0);
        assert_eq!(narrow.stats.oversized_blocks, 0);
        assert_eq!(narrow.clusters, every.clusters);
        assert_eq!(narrow.review, every.review);
        assert_eq!(narrow.stats.kept_pairs, every.stats.kept_pairs);
        assert!(
            narrow.stats.compared_pairs * 3 < every.stats.compared_pairs * 2,
            "{} against {} comparisons",
            narrow.stats.compared_pairs,
            every.stats.compared_pairs
        );
    }
}

/// A record without a birth date or age still meets its namesake in the same postcode area
/// or on the same landline; names alone are blocked for everyone when the settings let them
/// keep a pair.
#[test]
fn names_meet_beside_a_postcode_area_or_landline() {
    use Field::*;
    // From another system: two records of one system are two people.
    let undated = |id: &str, extra: (Field, &str)| InputRecord {
        record: RecordRef::new("pace", id),
        kind: SourceKind::PaceUsers,
        ..input(
            id,
            &[
                (GivenName, "Margaret"),
                (FamilyName, "Okonjo"),
                (Gender, "female"),
                extra,
            ],
        )
    };
    let dated = input(
        "dated",
        &[
            (GivenName, "Margaret"),
            (FamilyName, "Okonjo"),
            (Gender, "female"),
            (BirthDate, "1941-05-06"),
            (Postcode, "LS6 2AB"),
            (Phone, "0113 496 0000"),
        ],
    );
    let linked = |config: &MatchConfig, other: InputRecord| {
        let res = resolve(config, vec![dated.clone(), other]);
        res.clusters.len() == 1
    };
    let config = MatchConfig::default();
    // Same postcode area, another postcode: 14 bits, a unique candidate.
    assert!(linked(&config, undated("area", (Postcode, "LS6 9ZZ"))));
    // A landline in common (5 bits more than names), even one too common to be a block of
    // its own (a care home's), is enough to be kept and linked.
    let care_home = MatchConfig {
        max_block_pairs: 100,
        ..MatchConfig::default()
    };
    let residents: Vec<InputRecord> = (0..30)
        .map(|i| {
            input(
                &format!("resident{i}"),
                &[
                    (GivenName, ["Ann", "Bob", "Cy", "Di", "Ed"][i % 5]),
                    (FamilyName, &format!("Resident{i}")),
                    (BirthDate, &format!("1930-01-{:02}", i + 1)),
                    (Phone, "0113 496 0000"),
                ],
            )
        })
        .collect();
    let mut records = residents;
    records.push(dated.clone());
    records.push(undated("landline", (Phone, "0113 496 0000")));
    let res = resolve(&care_home, records);
    assert!(
        res.stats.oversized_blocks > 0,
        "the landline's own block is too large"
    );
    let together = res.clusters.iter().any(|c| {
        let ids: Vec<&str> = c.records().map(|r| r.external_id.as_str()).collect();
        ids.contains(&"dated") && ids.contains(&"landline")
    });
    assert!(together);
    // Another area: names alone (12.5 bits) never reach the keep score.
    assert!(!linked(&config, undated("elsewhere", (Postcode, "M1 1AA"))));

    let names_alone = MatchConfig {
        review_threshold: 12.0,
        unique_link_threshold: 12.0,
        ..MatchConfig::default()
    };
    assert!(names_alone.names_alone_may_keep());
    assert!(linked(
        &names_alone,
        undated("elsewhere", (Postcode, "M1 1AA"))
    ));
    // Evidence against a pair that weighs for it makes names alone enough too.
    let mut adversarial = MatchConfig::default();
    adversarial.weights.postcode_differ = 1.0;
    assert!(adversarial.names_alone_may_keep());
}

/// A given age meets, in a name-and-decade block, every birth date it gives weight to
/// (consistent or close), and every given age it agrees with; still so when compared up to a
/// year after it was blocked (a record is blocked as of when it last changed).
#[test]
fn a_given_age_meets_every_birth_date_and_age_it_fits() {
    use features::{Features, KeyKind, block_keys};
    let blocked_on = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    let config = MatchConfig {
        age_reference: blocked_on,
        ..MatchConfig::default()
    };
    let ann = |extra: (Field, String)| {
        let f = Features::from_values(&values(&[
            (Field::GivenName, "Ann"),
            (Field::FamilyName, "Lee"),
            (extra.0, &extra.1),
        ]));
        let eras: Vec<u64> = block_keys(&f, config.blocking())
            .into_iter()
            .filter(|k| k.kind == KeyKind::NameEra)
            .map(|k| k.hash)
            .collect();
        (f, eras)
    };
    let age_weighs = |compared_on: NaiveDate, a: &Features, b: &Features| {
        let on = MatchConfig {
            age_reference: compared_on,
            ..config.clone()
        };
        compare::compare(&on, a, b)
            .fields
            .iter()
            .any(|f| f.field == "given_age" && f.weight > 0.0)
    };
    let (mut fitting, mut apart) = (0, 0);
    for age in [0, 1, 9, 40, 85, 104] {
        let (probe, probe_eras) = ann((Field::GivenAge, age.to_string()));
        assert!(!probe_eras.is_empty());
        for later in [0, 200, 364] {
            let compared_on = blocked_on + chrono::Days::new(later);
            for day in (0..365 * 40).step_by(5) {
                let born = NaiveDate::from_ymd_opt(2026 - age - 20, 1, 1).unwrap()
                    + chrono::Days::new(day);
                let (dated, dated_eras) = ann((Field::BirthDate, born.to_string()));
                let meet = dated_eras.iter().any(|e| probe_eras.contains(e));
                if age_weighs(compared_on, &probe, &dated) {
                    fitting += 1;
                    assert!(meet, "age {age}, born {born}, compared on {compared_on}");
                } else if !meet {
                    apart += 1;
                }
            }
        }
        for other in (age - 3).max(0)..=age + 3 {
            let (them, their_eras) = ann((Field::GivenAge, other.to_string()));
            if age_weighs(blocked_on, &probe, &them) {
                assert!(their_eras.iter().any(|e| probe_eras.contains(e)));
            }
        }
    }
    assert!(
        fitting > 0 && apart > fitting,
        "{fitting} fitting, {apart} apart"
    );
}

/// A cluster keeps its best runners-up only, best score first and ties in record order,
/// however many namesakes it was compared with.
#[test]
fn a_cluster_keeps_its_best_runners_up_in_order() {
    use Field::*;
    let nhs = [
        "9434765005",
        "9434765013",
        "9434765021",
        "9434765048",
        "9434765056",
        "9434765064",
        "9434765072",
        "9434765080",
        "9434765099",
    ];
    let ann = |nhs: &'static str, postcode: &'static str| {
        vec![
            (GivenName, "Ann"),
            (FamilyName, "Lee"),
            (BirthDate, "1950-02-03"),
            (NhsNumber, nhs),
            (Postcode, postcode),
        ]
    };
    // Each namesake has an NHS number of its own, so none links; n3 and n7 share the
    // anchor's postcode and score higher.
    let mut records = vec![input("a", &ann(nhs[0], "L18 9ZR"))];
    for (i, number) in nhs[1..].iter().enumerate() {
        let id = format!("n{}", i + 1);
        let postcode = if id == "n3" || id == "n7" {
            "L18 9ZR"
        } else {
            "BA2 9EB"
        };
        records.push(input(&id, &ann(number, postcode)));
    }
    let config = MatchConfig::default();
    let res = resolve(&config, records);
    let a = res
        .clusters
        .iter()
        .find(|c| c.members[0].record.external_id == "a")
        .unwrap();
    assert_eq!(a.members.len(), 1, "{:?}", res.clusters);
    let runners: Vec<(&str, f64)> = a
        .runners_up
        .iter()
        .map(|r| (r.other.external_id.as_str(), r.score))
        .collect();
    let others: Vec<&str> = runners.iter().map(|r| r.0).collect();
    assert_eq!(config.runner_up_limit, 5);
    assert_eq!(others, ["n3", "n7", "n1", "n2", "n4"], "{runners:?}");
    assert!(runners[1].1 > runners[2].1, "{runners:?}");
    assert!(a.runners_up.iter().all(|r| r.record.external_id == "a"));
}

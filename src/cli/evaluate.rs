//! `caresync evaluate`: links a simulated care group through the real pipeline and scores
//! the stored links against the simulator's ground truth (pairwise precision and recall,
//! and every false merge).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::identity::{Cluster, Evaluation, Member, RecordRef, evaluate};
use crate::sim::{self, SimOptions};
use crate::source::kind::SourceKind;
use crate::store::Store;
use crate::sync::progress::Progress;
use crate::sync::{Mode, Pipeline, RunOptions};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// How many people the simulators generate.
    #[arg(long, default_value_t = 10_000)]
    pub people: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// List at most this many false merges and missed pairs (record ids only).
    #[arg(long, default_value_t = 20)]
    pub list: usize,
}

pub struct LinkingQuality {
    pub evaluation: Evaluation,
    pub records: u64,
    pub persons: u64,
    pub backfill: Duration,
    pub linking: Duration,
}

/// Backfills fresh simulators into a store in `dir` and scores the links it made.
pub async fn measure(
    people: usize,
    seed: u64,
    dir: &std::path::Path,
) -> anyhow::Result<LinkingQuality> {
    let sims = sim::start(SimOptions {
        people,
        seed,
        ..SimOptions::default()
    })
    .await?;
    let config =
        super::demo::simulator_config(&sims, &dir.join("evaluate.db"), Some("1000000/1s"), "")?;
    let store = Store::open(&config.store_path)?;
    let pipeline = Pipeline::new(config, &store)?;
    let started = Instant::now();
    let report = pipeline
        .run(&RunOptions {
            mode: Mode::Backfill,
            only: Vec::new(),
            progress: Progress::quiet(),
        })
        .await?;
    let backfill = started.elapsed();
    let link = report.link.map_err(anyhow::Error::msg)?;
    if let Some(failed) = report.sources.iter().find(|o| o.error.is_some()) {
        anyhow::bail!(
            "source `{}` failed: {}",
            failed.source,
            failed.error.as_deref().unwrap_or("")
        );
    }
    let truth: HashMap<RecordRef, u64> = sims
        .state()
        .truth()
        .into_iter()
        .map(|(kind, key, person)| {
            (
                RecordRef::new(
                    super::demo::simulator_source_name(kind),
                    kind.normalise_external_id(&key),
                ),
                person,
            )
        })
        .collect();
    sims.shutdown().await;
    let conn = store.reader()?;
    // In person order, records in record order: the pairs listed are the same every run.
    let mut by_person: BTreeMap<i64, Vec<Member>> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT person_id, source, external_id, kind FROM person_link
         ORDER BY person_id, source, external_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (person, source, external_id, kind) = row?;
        let kind: SourceKind = kind.parse().map_err(anyhow::Error::msg)?;
        by_person.entry(person).or_default().push(Member {
            record: RecordRef::new(source, external_id),
            kind,
            link: None,
        });
    }
    let persons = by_person.len() as u64;
    let clusters: Vec<Cluster> = by_person
        .into_values()
        .map(|members| Cluster {
            members,
            runners_up: Vec::new(),
        })
        .collect();
    let records = clusters.iter().map(|c| c.members.len() as u64).sum();
    Ok(LinkingQuality {
        evaluation: evaluate(&clusters, &truth),
        records,
        persons,
        backfill,
        linking: Duration::from_millis(link.millis as u64),
    })
}

pub async fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("caresync-evaluate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let q = measure(args.people, args.seed, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let q = q?;
    let e = &q.evaluation;
    println!(
        "linking {} simulated people (seed {}): {} records into {} persons",
        args.people, args.seed, q.records, q.persons
    );
    println!(
        "  pairwise precision  {:.5}  ({} of {} linked pairs are the same person)",
        e.precision, e.correct_pairs, e.predicted_pairs
    );
    println!(
        "  pairwise recall     {:.5}  ({} of {} same-person pairs linked)",
        e.recall, e.correct_pairs, e.true_pairs
    );
    println!("  false merges        {}", e.false_merge_count);
    for (a, b) in e.false_merges.iter().take(args.list) {
        println!(
            "    {}/{}  +  {}/{}",
            a.source, a.external_id, b.source, b.external_id
        );
    }
    println!("  missed pairs        {}", e.true_pairs - e.correct_pairs);
    for (a, b) in e.missed.iter().take(args.list) {
        println!(
            "    {}/{}  -  {}/{}",
            a.source, a.external_id, b.source, b.external_id
        );
    }
    println!(
        "  backfill {:.2}s, of which linking {:.2}s",
        q.backfill.as_secs_f64(),
        q.linking.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

//! Shared test plumbing: simulators, a config for them, a fresh store, and store queries.

use std::collections::BTreeSet;
use std::path::PathBuf;

use caresync::cli::demo::{simulator_config_toml, simulator_env, simulator_source_name};
use caresync::config::Config;
use caresync::sim::{self, SimOptions, Simulators};
use caresync::source::kind::SourceKind;
use caresync::store::Store;
use caresync::sync::progress::Progress;
use caresync::sync::{Mode, Pipeline, RunOptions, RunReport, SourceOutcome};

pub struct Harness {
    pub sims: Simulators,
    /// Keeps the store's folder alive for the test.
    pub _dir: tempfile::TempDir,
    pub config: Config,
    pub store: Store,
}

pub fn options(people: usize) -> SimOptions {
    SimOptions {
        people,
        seed: 7,
        ..SimOptions::default()
    }
}

impl Harness {
    /// Simulators with `opts`, and a config whose sources carry `extra` keys
    /// (page size and so on). Retries back off in milliseconds so faults stay quick.
    pub async fn start(opts: SimOptions, extra: &str) -> Harness {
        Harness::start_with(opts, Some("1000/1s"), extra, |text| text).await
    }

    /// As [`Harness::start`], with each API's own default rate limit unless `rate_limit` is
    /// given, and a last edit of the config text.
    pub async fn start_with(
        opts: SimOptions,
        rate_limit: Option<&str>,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Harness {
        let sims = sim::start(opts).await.expect("simulators start");
        let dir = tempfile::tempdir().expect("temp dir");
        let store_path = dir.path().join("test.db");
        let text = edit(simulator_config_toml(
            |k| sims.base_url(k),
            &store_path,
            rate_limit,
            extra,
        ));
        std::fs::write(dir.path().join("sync.toml"), &text).expect("config file written");
        let env = simulator_env();
        let lookup = move |name: &str| env.get(name).cloned();
        let mut config =
            caresync::config::parse(&text, &dir.path().join("sync.toml"), &lookup).expect("config");
        config.http.min_backoff = std::time::Duration::from_millis(2);
        config.http.max_backoff = std::time::Duration::from_millis(20);
        config.http.timeout = std::time::Duration::from_secs(5);
        let store = Store::open(&config.store_path).expect("store opens");
        Harness {
            sims,
            _dir: dir,
            config,
            store,
        }
    }

    pub async fn run(&self, mode: Mode) -> Vec<SourceOutcome> {
        self.run_only(mode, Vec::new()).await
    }

    pub async fn run_only(&self, mode: Mode, only: Vec<String>) -> Vec<SourceOutcome> {
        let report = self.run_report(mode, only).await;
        if let Err(e) = &report.link {
            panic!("linking failed: {e}");
        }
        report.sources
    }

    pub async fn run_report(&self, mode: Mode, only: Vec<String>) -> RunReport {
        let pipeline = Pipeline::new(self.config.clone(), &self.store).expect("mappings compile");
        pipeline
            .run(&RunOptions {
                mode,
                only,
                progress: Progress::quiet(),
            })
            .await
            .expect("pipeline runs")
    }

    /// Runs the `caresync` binary on this harness's config; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caresync"))
            .arg("--config")
            .arg(self.config.file.clone())
            .args(args)
            .envs(simulator_env())
            .output()
            .expect("caresync runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn db(&self) -> rusqlite::Connection {
        self.store.reader().expect("reader")
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.store_path.clone()
    }

    /// External ids of live (not deleted) records of one kind in the store.
    pub fn stored_ids(&self, kind: SourceKind) -> Vec<String> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT external_id FROM source_record WHERE source = ?1 AND deleted_at IS NULL ORDER BY external_id")
            .unwrap();
        stmt.query_map([simulator_source_name(kind)], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The simulator's keys of one kind, normalised as caresync keys them.
    pub fn upstream_ids(&self, kind: SourceKind) -> Vec<String> {
        let set: BTreeSet<String> = self
            .sims
            .state()
            .keys(kind)
            .iter()
            .map(|k| kind.normalise_external_id(k))
            .collect();
        set.into_iter().collect()
    }

    /// Every source's store holds exactly the simulator's records: no misses, no extras.
    pub fn assert_exact(&self) {
        for kind in SourceKind::ALL {
            let upstream = self.upstream_ids(kind);
            assert_eq!(
                upstream.len(),
                self.sims.state().count(kind),
                "{kind}: simulator keys are not unique after normalisation"
            );
            let stored = self.stored_ids(kind);
            let missing: Vec<_> = upstream
                .iter()
                .filter(|id| stored.binary_search(id).is_err())
                .take(5)
                .collect();
            let extra: Vec<_> = stored
                .iter()
                .filter(|id| upstream.binary_search(id).is_err())
                .take(5)
                .collect();
            assert!(
                missing.is_empty() && extra.is_empty() && stored.len() == upstream.len(),
                "{kind}: store has {} records, upstream {}; missing e.g. {missing:?}; extra e.g. {extra:?}",
                stored.len(),
                upstream.len()
            );
        }
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

pub fn assert_all_succeeded(outcomes: &[SourceOutcome]) {
    for o in outcomes {
        assert_eq!(
            o.status,
            caresync::sync::RunStatus::Succeeded,
            "source {} failed: {:?}",
            o.source,
            o.error
        );
    }
}

pub fn outcome(outcomes: &[SourceOutcome], kind: SourceKind) -> &SourceOutcome {
    outcomes
        .iter()
        .find(|o| o.source == simulator_source_name(kind))
        .expect("outcome for the kind")
}

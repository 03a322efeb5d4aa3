//! `caresync demo`: the simulators in-process, a backfill into a fresh demo database, and
//! where to look. Also the config every in-process run against the simulators uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config::{self, Config};
use crate::sim::{self, SimOptions, Simulators};
use crate::source::kind::SourceKind;
use crate::store::Store;
use crate::sync::Mode;
use crate::sync::progress::Progress;
use crate::sync::report::summary_table;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many people the simulators generate.
    #[arg(long, default_value_t = 2000)]
    pub people: usize,
    /// Seed of the generator: the same seed gives the same people.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Folder for the demo database (emptied first).
    #[arg(long, default_value = "caresync-demo", value_name = "DIR")]
    pub dir: PathBuf,
}

/// The environment variables a simulator config names, with the simulators' credentials.
pub fn simulator_env() -> HashMap<String, String> {
    [
        (
            "CARESYNC_SIM_CAREHQ_ACCOUNT_ID",
            sim::creds::CAREHQ_ACCOUNT_ID,
        ),
        ("CARESYNC_SIM_CAREHQ_API_KEY", sim::creds::CAREHQ_API_KEY),
        (
            "CARESYNC_SIM_CAREHQ_API_SECRET",
            sim::creds::CAREHQ_API_SECRET,
        ),
        (
            "CARESYNC_SIM_MARKETPLACE_TOKEN",
            sim::creds::MARKETPLACE_TOKEN,
        ),
        (
            "CARESYNC_SIM_CAREVALIDATE_KEY",
            sim::creds::CAREVALIDATE_API_KEY,
        ),
        ("CARESYNC_SIM_PACE_KEY", sim::creds::PACE_API_KEY),
        ("CARESYNC_SIM_PACE_CUSTOMER", sim::creds::PACE_CUSTOMER_ID),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Source names used against the simulators, one per kind.
pub fn simulator_source_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::CarehqServiceUsers => "carehq_residents",
        SourceKind::CarehqUsers => "carehq_staff",
        SourceKind::MarketplaceUsers => "marketplace",
        SourceKind::CarevalidateUsers => "care360",
        SourceKind::PaceUsers => "pace",
    }
}

/// `sync.toml` text for the running simulators. `extra_source_keys` is added to every
/// source table (e.g. `page_size = 7`); `rate_limit`, when given, replaces each API's default.
pub fn simulator_config_toml(
    base_url: impl Fn(SourceKind) -> String,
    store_path: &Path,
    rate_limit: Option<&str>,
    extra_source_keys: &str,
) -> String {
    let mut text = format!("[store]\npath = {:?}\n\n", store_path.display().to_string());
    for kind in SourceKind::ALL {
        let creds = match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                "account_id_env = \"CARESYNC_SIM_CAREHQ_ACCOUNT_ID\"\napi_key_env = \"CARESYNC_SIM_CAREHQ_API_KEY\"\napi_secret_env = \"CARESYNC_SIM_CAREHQ_API_SECRET\"\n"
            }
            SourceKind::MarketplaceUsers => "api_key_env = \"CARESYNC_SIM_MARKETPLACE_TOKEN\"\n",
            SourceKind::CarevalidateUsers => "api_key_env = \"CARESYNC_SIM_CAREVALIDATE_KEY\"\n",
            SourceKind::PaceUsers => {
                "api_key_env = \"CARESYNC_SIM_PACE_KEY\"\ncustomer_id_env = \"CARESYNC_SIM_PACE_CUSTOMER\"\n"
            }
        };
        text.push_str(&format!(
            "[sources.{}]\nkind = \"{kind}\"\nbase_url = \"{}\"\n{creds}",
            simulator_source_name(kind),
            base_url(kind)
        ));
        if let Some(rate) = rate_limit {
            text.push_str(&format!("rate_limit = \"{rate}\"\n"));
        }
        text.push_str(extra_source_keys);
        text.push('\n');
    }
    text
}

/// A validated config for the running simulators, with their credentials injected.
pub fn simulator_config(
    sims: &Simulators,
    store_path: &Path,
    rate_limit: Option<&str>,
    extra_source_keys: &str,
) -> anyhow::Result<Config> {
    let text = simulator_config_toml(
        |k| sims.base_url(k),
        store_path,
        rate_limit,
        extra_source_keys,
    );
    let env = simulator_env();
    let lookup = move |name: &str| env.get(name).cloned();
    Ok(config::parse(
        &text,
        &store_path.with_file_name("sync.toml"),
        &lookup,
    )?)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).map_err(|e| {
            anyhow::anyhow!("cannot empty the demo folder {}: {e}", args.dir.display())
        })?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let store_path = std::path::absolute(args.dir.join("demo.db"))?;
    let sims = sim::start(SimOptions {
        people: args.people,
        seed: args.seed,
        ..SimOptions::default()
    })
    .await?;
    println!(
        "Simulators started for {} people (seed {}):\n{}",
        args.people,
        args.seed,
        sims.describe()
    );
    // The simulators enforce no rate limits unless asked, so the demo does not pace itself.
    let config_text = simulator_config_toml(|k| sims.base_url(k), &store_path, Some("1000/1s"), "");
    let config_path = std::path::absolute(args.dir.join("sync.toml"))?;
    std::fs::write(&config_path, &config_text)?;
    let config = simulator_config(&sims, &store_path, Some("1000/1s"), "")?;
    let store = Store::open(&config.store_path)?;
    let outcomes =
        super::extract::run_pipeline(config, &store, Mode::Backfill, Vec::new(), Progress::auto())
            .await?;
    sims.shutdown().await;
    println!("\n{}", summary_table(&outcomes));
    let db = store_path.display();
    println!("The demo database is {db}");
    println!("Open it with any SQLite client and try, for example:\n");
    for (what, sql) in [
        (
            "records per source",
            "SELECT source, kind, count(*) FROM source_record GROUP BY source;",
        ),
        (
            "the last run of each source",
            "SELECT source, status, pages, requests, records_inserted, error_count FROM sync_run ORDER BY run_id DESC LIMIT 5;",
        ),
        (
            "persons held by several systems",
            "SELECT person_id, given_name, family_name, carehq_service_user_records, marketplace_records, carevalidate_records FROM v_person WHERE linked_records > 2 LIMIT 5;",
        ),
        (
            "where one person's values came from",
            "SELECT field, source, rule FROM field_provenance WHERE person_id = 1 ORDER BY field;",
        ),
        (
            "what needs a person's attention",
            "SELECT issue, count(*) FROM v_data_quality GROUP BY issue;",
        ),
    ] {
        println!("  -- {what}\n  sqlite3 {db} \"{sql}\"\n");
    }
    let env: Vec<String> = simulator_env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "Or ask caresync about a person (the config it used is {}):\n  env {} caresync --config {} explain 1\n",
        config_path.display(),
        env.join(" "),
        config_path.display()
    );
    super::extract::exit_for(&outcomes)
}

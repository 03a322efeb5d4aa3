//! `caresync simulate`: the five API simulators on loopback, with optional faults.

use std::process::ExitCode;

use clap::Args;

use crate::sim::{self, FaultConfig, SimOptions};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// How many people to generate.
    #[arg(long, default_value_t = 1000)]
    pub people: usize,
    /// Seed of the generator and of the faults: the same seed gives the same run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First of five consecutive ports, one per API (default: any free ports).
    #[arg(long)]
    pub port: Option<u16>,
    /// Enforce the documented rate limits (CareHQ per second per key, PACE 5 per 10 s).
    #[arg(long)]
    pub rate_limits: bool,
    /// Share of requests answered with 500, 502 or 503 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of requests answered with 429.
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Share of successful answers whose body is truncated or not JSON.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Share of requests whose connection is dropped mid-answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Share of requests answered slowly, and how slowly.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// Records created and deleted upstream on every list request, to shift pages.
    #[arg(long, default_value_t = 0)]
    pub inserts_per_list_request: usize,
    #[arg(long, default_value_t = 0)]
    pub deletes_per_list_request: usize,
    /// PACE's daily request quota.
    #[arg(long)]
    pub pace_daily_quota: Option<u32>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let faults = FaultConfig {
        seed: args.seed,
        error_rate: args.error_rate,
        rate_429: args.rate_429,
        slow_rate: args.slow_rate,
        slow_ms: args.slow_ms,
        malformed_rate: args.malformed_rate,
        drop_rate: args.drop_rate,
        inserts_per_list_request: args.inserts_per_list_request,
        deletes_per_list_request: args.deletes_per_list_request,
        pace_daily_quota: args.pace_daily_quota,
        ..FaultConfig::default()
    };
    let sims = sim::start(SimOptions {
        people: args.people,
        seed: args.seed,
        faults,
        enforce_rate_limits: args.rate_limits,
        port: args.port,
        ..SimOptions::default()
    })
    .await?;
    println!("{}", sims.describe());
    println!(
        "\nA sync.toml for these simulators (credentials from these environment variables):\n"
    );
    for (k, v) in super::demo::simulator_env()
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
    {
        println!("export {k}={v}");
    }
    println!(
        "\n{}",
        super::demo::simulator_config_toml(
            |k| sims.base_url(k),
            std::path::Path::new("caresync.db"),
            None,
            ""
        )
    );
    println!("Serving until Ctrl-C.");
    tokio::signal::ctrl_c().await?;
    sims.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

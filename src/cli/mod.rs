//! The command line: one file per subcommand; each variant's `///` comment is its `--help`.

mod bench;
mod check;
mod daemon;
pub mod demo;
pub mod evaluate;
pub mod extract;
mod forget;
mod person;
mod simulate;
mod status;
mod writeback;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};

#[derive(Debug, Parser)]
#[command(
    name = "caresync",
    version,
    about = "Keeps a care provider's person records from CareHQ, Care360, PACE and the marketplace in one SQLite store"
)]
pub struct Cli {
    /// The configuration file; relative paths inside it resolve against its folder.
    #[arg(long, global = true, default_value = "sync.toml", value_name = "PATH")]
    pub config: PathBuf,

    /// Log lines as text for people or JSON for log shippers (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and make one request per source to prove its credentials work.
    Check,
    /// Read every record from all sources (or those named) into the store; resumes an interrupted scan.
    Backfill(extract::ExtractArgs),
    /// Read what changed since the last run: CareHQ from its watermark, the others by a re-scan.
    Sync(extract::ExtractArgs),
    /// Serve the five built-in API simulators on loopback until interrupted.
    Simulate(simulate::SimulateArgs),
    /// Start the simulators in-process, backfill them into a fresh demo database, and show it.
    Demo(demo::DemoArgs),
    /// Measure the pipeline against the simulators and against each stage's own limit.
    Bench(bench::BenchArgs),
    /// Show a person: linked records and why, runners-up not linked, where each value came from.
    Explain(person::ExplainArgs),
    /// Correct a person's field; the override wins survivorship, is audited, and is pushed to linked systems.
    Set(person::SetArgs),
    /// Show the writes that would bring each writable source in line with the canonical persons.
    Plan(writeback::PlanArgs),
    /// Apply the plan: create and update records in the sources, safely (conflicts, no duplicate creates).
    Push(writeback::PushArgs),
    /// Link a simulated care group and score the links against the simulator's ground truth.
    Evaluate(evaluate::EvaluateArgs),
    /// Sync each source on its `schedule` until SIGTERM; optional /healthz and /metrics (`[daemon] listen`).
    Daemon,
    /// Show each source's last and next run, watermark and errors, writes waiting, conflicts, mapping failures.
    Status(status::StatusArgs),
    /// Erase a person's data from the store (raw records, canonical rows, links, outbox), leaving an audit entry.
    Forget(forget::ForgetArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => check::run(&load_config(&cli.config)?).await,
        Command::Backfill(args) => {
            extract::run(load_config(&cli.config)?, crate::sync::Mode::Backfill, args).await
        }
        Command::Sync(args) => {
            extract::run(load_config(&cli.config)?, crate::sync::Mode::Sync, args).await
        }
        Command::Simulate(args) => simulate::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Evaluate(args) => evaluate::run(args).await,
        Command::Daemon => daemon::run(load_config(&cli.config)?).await,
        Command::Status(args) => status::run(&load_config(&cli.config)?, args).await,
        Command::Forget(args) => forget::run(&load_config(&cli.config)?, args).await,
        Command::Plan(args) => writeback::plan(load_config(&cli.config)?, args).await,
        Command::Push(args) => writeback::push(load_config(&cli.config)?, args).await,
        Command::Explain(args) => person::explain(&load_config(&cli.config)?, args).await,
        Command::Set(args) => person::set(&load_config(&cli.config)?, args).await,
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(config::load(path, &config::process_env)?)
}

//! `caresync backfill` and `caresync sync`: one pipeline, two modes.

use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::store::Store;
use crate::sync::progress::Progress;
use crate::sync::report::summary_table;
use crate::sync::{Mode, Pipeline, RunOptions, RunReport, RunStatus};

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Only this source (a `[sources.<name>]` name); repeat for several. Default: all.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
}

pub async fn run(config: Config, mode: Mode, args: ExtractArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.store_path)?;
    let report = run_pipeline(config, &store, mode, args.sources, Progress::auto()).await?;
    print!("{}", summary_table(&report));
    exit_for(&report)
}

pub async fn run_pipeline(
    config: Config,
    store: &Store,
    mode: Mode,
    only: Vec<String>,
    progress: Progress,
) -> anyhow::Result<RunReport> {
    let pipeline = Pipeline::new(config, store)?;
    pipeline
        .run(&RunOptions {
            mode,
            only,
            progress,
        })
        .await
}

/// Success only when every source and the linking succeeded; otherwise an error naming
/// each failed source and why.
pub fn exit_for(report: &RunReport) -> anyhow::Result<ExitCode> {
    let outcomes = &report.sources;
    let mut failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != RunStatus::Succeeded)
        .map(|o| {
            format!(
                "source `{}` {}: {}",
                o.source,
                o.status.as_str(),
                o.error.as_deref().unwrap_or("unknown error")
            )
        })
        .collect();
    if let Err(e) = &report.link {
        failed.push(format!("linking failed: {e}"));
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("the run did not finish:\n  {}", failed.join("\n  "))
    }
}

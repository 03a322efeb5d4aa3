//! `caresync backfill` and `caresync sync`: one pipeline, two modes.

use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::store::Store;
use crate::sync::progress::Progress;
use crate::sync::report::summary_table;
use crate::sync::{Mode, Pipeline, RunOptions, RunStatus, SourceOutcome};

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Only this source (a `[sources.<name>]` name); repeat for several. Default: all.
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
}

pub async fn run(config: Config, mode: Mode, args: ExtractArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.store_path)?;
    let outcomes = run_pipeline(config, &store, mode, args.sources, Progress::auto()).await?;
    print!("{}", summary_table(&outcomes));
    exit_for(&outcomes)
}

pub async fn run_pipeline(
    config: Config,
    store: &Store,
    mode: Mode,
    only: Vec<String>,
    progress: Progress,
) -> anyhow::Result<Vec<SourceOutcome>> {
    let pipeline = Pipeline::new(config, store)?;
    pipeline
        .run(&RunOptions {
            mode,
            only,
            progress,
        })
        .await
}

/// Success only when every source succeeded; otherwise an error naming each failed source.
pub fn exit_for(outcomes: &[SourceOutcome]) -> anyhow::Result<ExitCode> {
    let failed: Vec<String> = outcomes
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
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "{} of {} sources did not finish:\n  {}",
            failed.len(),
            outcomes.len(),
            failed.join("\n  ")
        )
    }
}

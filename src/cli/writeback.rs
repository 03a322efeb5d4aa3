//! `caresync plan` and `caresync push`: write-back, planned first.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::store::Store;
use crate::sync::Pipeline;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Print the plan as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Show the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
}

pub async fn plan(config: Config, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.store_path)?;
    let plan = Pipeline::new(config, &store)?.plan().await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        plan.write_json(&mut out)?;
        writeln!(out)?;
    } else {
        plan.write_text(&mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn push(config: Config, args: PushArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.store_path)?;
    let pipeline = Pipeline::new(config, &store)?;
    let plan = pipeline.plan().await?;
    {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        plan.write_text(&mut out)?;
        out.flush()?;
    }
    if plan.writes.is_empty() || args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("not on a terminal: add --yes to apply these writes");
        }
        print!("Apply {} writes? [y/N] ", plan.writes.len());
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing written.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let report = pipeline.push(&plan).await?;
    print!("{}", report.render());
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "{} writes failed, {} met conflicts and {} were held back (see `caresync status` and v_conflicts)",
            report.failed.len(),
            report.conflicts.len(),
            report.held.len()
        )
    }
}

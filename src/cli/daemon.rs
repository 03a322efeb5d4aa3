//! `caresync daemon`: the scheduled syncs, health and metrics (see `crate::daemon`).

use std::process::ExitCode;

use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    crate::daemon::run(config).await
}

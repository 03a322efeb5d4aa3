//! `caresync check`: the config is valid (loading it proved that) and every source answers.

use std::process::ExitCode;

use crate::config::Config;
use crate::source::ratelimit::Budgets;
use crate::source::{Position, Scope, build_sources};

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    println!(
        "{}: configuration is valid ({} sources)",
        config.file.display(),
        config.sources.len()
    );
    let budgets = Budgets::default();
    let sources = build_sources(config, &[], &budgets, None)?;
    let checks = sources.iter().map(|source| async move {
        let first = Position::first(source.api.paging());
        let spec = source.api.list_request(&first, 1, &Scope::default());
        let api = source.api.clone();
        let result = source
            .http
            .execute(&spec, move |body| api.parse_page(&body))
            .await;
        (source, result)
    });
    let mut failed = 0;
    for (source, result) in futures::future::join_all(checks).await {
        let name = source.name();
        match result {
            Ok(page) => {
                let total = page
                    .total_records
                    .map(|t| format!(", {t} records reported"))
                    .unwrap_or_default();
                println!(
                    "  ok    {name} ({}): credentials accepted{total}",
                    source.config.kind
                );
            }
            Err(e) => {
                failed += 1;
                println!("  FAIL  {name} ({}): {e}", source.config.kind);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} sources failed the check", sources.len());
    }
    Ok(ExitCode::SUCCESS)
}

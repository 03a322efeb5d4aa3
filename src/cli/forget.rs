//! `caresync forget PERSON_ID --reason "..."`: erases a person's data from the store
//! (see `crate::daemon::erasure`).

use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The person (`person.person_id`) whose data is erased.
    pub person_id: i64,
    /// Why, e.g. the request's reference. Kept in `erasure_log`: no personal data here
    /// (emails and long numbers are redacted anyway).
    #[arg(long)]
    pub reason: String,
    /// Who asked for it; default: the operating-system user.
    #[arg(long)]
    pub actor: Option<String>,
}

pub async fn run(config: &Config, args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let reason = crate::privacy::redact(args.reason.trim());
    if reason.is_empty() {
        anyhow::bail!("--reason must say why the person is erased");
    }
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_string());
    let store = Store::open(&config.store_path)?;
    let person_id = args.person_id;
    let erased = store
        .writer
        .call(move |conn| crate::daemon::erasure::erase_person(conn, person_id, &reason, &actor))
        .await?;
    tracing::info!(
        person_id,
        erasure_id = erased.erasure_id,
        records = erased.records,
        overrides = erased.overrides,
        rows = erased.rows,
        "person erased"
    );
    println!(
        "Erased person {person_id}: {} source records and everything derived from them, {} operator corrections ({} rows; erasure {}).",
        erased.records, erased.overrides, erased.rows, erased.erasure_id
    );
    println!(
        "Those records will not be stored again while the upstream systems still return them; erase them there too.\n\
         To let them back in: sqlite3 {} \"DELETE FROM suppressed_record WHERE erasure_id = {}\"",
        config.store_path.display(),
        erased.erasure_id
    );
    Ok(ExitCode::SUCCESS)
}

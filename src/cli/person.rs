//! `caresync set` and `caresync explain`: an operator's view of one person.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use rusqlite::{OptionalExtension, params};

use crate::config::Config;
use crate::model::Field;
use crate::person::materialize::materialize;
use crate::store::{Store, now_rfc3339};

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The person (`person.person_id`).
    pub person_id: i64,
    /// The correction, as `field=value`, e.g. `mobile=07700 900123` or `service_user.status=inactive`.
    #[arg(value_name = "FIELD=VALUE")]
    pub assignment: String,
    /// Why: kept with the override for audit.
    #[arg(long)]
    pub reason: String,
    /// Who made it (default: the operating-system user).
    #[arg(long)]
    pub actor: Option<String>,
}

pub async fn set(config: &Config, args: SetArgs) -> anyhow::Result<ExitCode> {
    let (name, raw) = args
        .assignment
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("expected FIELD=VALUE, e.g. mobile=07700900123"))?;
    let field = Field::from_name(name.trim()).ok_or_else(|| {
        anyhow::anyhow!(
            "`{}` is not a canonical field (see schema/DATA_DICTIONARY.md)",
            name.trim()
        )
    })?;
    let value = field
        .parse_text(raw)
        .map_err(|e| anyhow::anyhow!("`{}` cannot hold that value: {e}", field.name()))?;
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the correction is made");
    }
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_string());
    let store = Store::open(&config.store_path)?;
    let policy = config.survivorship.clone();
    let person_id = args.person_id;
    let reason = args.reason.trim().to_string();
    let value_json = value.to_json().to_string();
    let (override_id, linked) = store
        .writer
        .call(move |conn| {
            let tx = conn.transaction()?;
            let exists: Option<i64> = tx
                .query_row("SELECT person_id FROM person WHERE person_id = ?1", [person_id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                anyhow::bail!("there is no person {person_id}");
            }
            let now = now_rfc3339();
            tx.execute(
                "UPDATE operator_override SET superseded_at = ?3
                 WHERE person_id = ?1 AND field = ?2 AND superseded_at IS NULL",
                params![person_id, field.name(), now],
            )?;
            tx.execute(
                "INSERT INTO operator_override (person_id, field, value_json, reason, actor, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![person_id, field.name(), value_json, reason, actor, now],
            )?;
            let id = tx.last_insert_rowid();
            materialize(&tx, person_id, &policy)?;
            let linked: i64 = tx.query_row("SELECT count(*) FROM person_link WHERE person_id = ?1", [person_id], |r| r.get(0))?;
            tx.commit()?;
            Ok((id, linked))
        })
        .await?;
    tracing::info!(
        person_id,
        field = field.name(),
        override_id,
        "override recorded"
    );
    println!(
        "person {person_id}: {} overridden (override {override_id}); it wins survivorship, and `caresync push` writes it to those of the {linked} linked records whose source is configured to receive it",
        field.name()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The person (`person.person_id`).
    pub person_id: i64,
}

/// Prints the person's linked records and why each is linked, the runners-up that were not
/// linked and why, where each field's value came from, and the overrides.
pub async fn explain(config: &Config, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let conn = crate::store::open_read_only(&config.store_path)
        .with_context(|| "run a backfill first: there is no store yet")?;
    let id = args.person_id;
    let updated: Option<String> = conn
        .query_row(
            "SELECT updated_at FROM person WHERE person_id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(updated) = updated else {
        anyhow::bail!("there is no person {id}");
    };
    println!("person {id} (updated {updated})\n\nlinked records:");
    let mut stmt = conn.prepare(
        "SELECT source, kind, external_id, rule, score, linked_at FROM person_link WHERE person_id = ?1 ORDER BY source, external_id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<f64>>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (source, kind, external_id, rule, score, at) = row?;
        let score = score.map(|s| format!(" score {s:.1}")).unwrap_or_default();
        println!("  {source:<20} {kind:<22} {external_id:<40} {rule}{score} (linked {at})");
    }
    println!("\nrunner-up candidates, not linked:");
    let mut stmt = conn.prepare(
        "SELECT source, external_id, other_source, other_external_id, score, reason FROM link_runner_up
         WHERE person_id = ?1 ORDER BY score DESC",
    )?;
    let mut any = false;
    for row in stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, f64>(4)?,
            r.get::<_, String>(5)?,
        ))
    })? {
        let (source, external_id, other_source, other_id, score, reason) = row?;
        let other_person: Option<i64> = conn
            .query_row(
                "SELECT person_id FROM person_link WHERE source = ?1 AND external_id = ?2",
                [&other_source, &other_id],
                |r| r.get(0),
            )
            .optional()?;
        let other_person = other_person
            .map(|p| format!(" (person {p})"))
            .unwrap_or_default();
        println!(
            "  {other_source}/{other_id}{other_person}: score {score:.1} against {source}/{external_id}: {reason}"
        );
        any = true;
    }
    if !any {
        println!("  none scored");
    }
    println!("\nwhere each value came from:");
    let mut stmt = conn.prepare(
        "SELECT field, source, COALESCE(external_id, ''), rule, observed_at FROM field_provenance WHERE person_id = ?1 ORDER BY field",
    )?;
    for row in stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })? {
        let (field, source, external_id, rule, at) = row?;
        println!("  {field:<40} {source}/{external_id} by {rule} (seen {at})");
    }
    println!("\noperator overrides:");
    let mut stmt = conn.prepare(
        "SELECT override_id, field, actor, created_at, reason, superseded_at FROM operator_override WHERE person_id = ?1 ORDER BY override_id",
    )?;
    let mut any = false;
    for row in stmt.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })? {
        let (oid, field, actor, at, reason, superseded) = row?;
        let state = superseded
            .map(|s| format!(", superseded {s}"))
            .unwrap_or_else(|| ", in force".into());
        println!("  #{oid} {field} by {actor} at {at}{state}: {reason}");
        any = true;
    }
    if !any {
        println!("  none");
    }
    Ok(ExitCode::SUCCESS)
}

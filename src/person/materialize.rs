//! Writes the canonical rows of persons: `person`, the role tables and `field_provenance`,
//! from their linked records' canonical values and any operator overrides. Runs on the
//! store writer.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use anyhow::Result;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params, params_from_iter};

use super::survivorship::{Observation, Override, Policy, survive};
use crate::model::{CanonicalValues, Field, Table, Value};
use crate::source::kind::SourceKind;
use crate::store::now_rfc3339;

/// The tables materialised, with their canonical fields in column order.
static TABLES: LazyLock<Vec<(Table, Vec<Field>)>> = LazyLock::new(|| {
    [
        Table::Person,
        Table::ServiceUser,
        Table::StaffUser,
        Table::HealthProfile,
        Table::Lifestyle,
    ]
    .into_iter()
    .map(|t| {
        (
            t,
            Field::ALL
                .iter()
                .copied()
                .filter(|f| f.table() == t)
                .collect(),
        )
    })
    .collect()
});

/// Reads a canonical record's stored values (`canonical_record.values_json`).
pub fn values_from_json(text: &str) -> CanonicalValues {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return CanonicalValues::new();
    };
    map.iter()
        .filter_map(|(name, json)| {
            let field = Field::from_name(name)?;
            Value::from_json(field.value_type(), json)
                .ok()
                .map(|v| (field, v))
        })
        .collect()
}

/// A canonical value as SQLite stores it: dates and instants as text, lists as JSON arrays.
pub fn to_sql(value: &Value) -> SqlValue {
    match value.to_json() {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Bool(b) => SqlValue::Integer(b as i64),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or(SqlValue::Real(n.as_f64().unwrap_or(0.0)), SqlValue::Integer),
        serde_json::Value::String(s) => SqlValue::Text(s),
        other => SqlValue::Text(other.to_string()),
    }
}

/// The linked records of a person and its live overrides.
pub fn load_person(
    conn: &Connection,
    person_id: i64,
) -> Result<(Vec<Observation>, BTreeMap<Field, Override>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.source, l.external_id, l.kind, c.values_json, c.mapped_at
         FROM person_link l JOIN canonical_record c ON c.source = l.source AND c.external_id = l.external_id
         WHERE l.person_id = ?1 ORDER BY l.source, l.external_id",
    )?;
    let observations = stmt
        .query_map([person_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .filter_map(|row| {
            let (source, external_id, kind, values_json, observed_at) = row.ok()?;
            Some(Observation {
                source,
                external_id,
                kind: kind.parse::<SourceKind>().ok()?,
                values: values_from_json(&values_json),
                observed_at,
            })
        })
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT field, value_json, created_at FROM operator_override
         WHERE person_id = ?1 AND superseded_at IS NULL",
    )?;
    let overrides = stmt
        .query_map([person_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .filter_map(|row| {
            let (field, value_json, created_at) = row.ok()?;
            let field = Field::from_name(&field)?;
            let json: serde_json::Value = serde_json::from_str(&value_json).ok()?;
            let value = Value::from_json(field.value_type(), &json).ok()?;
            Some((field, Override { value, created_at }))
        })
        .collect();
    Ok((observations, overrides))
}

/// Recomputes and writes one person; a person with no linked record and no override is
/// removed (its overrides stay, as audit). Returns whether the person still exists.
pub fn materialize(conn: &Connection, person_id: i64, policy: &Policy) -> Result<bool> {
    let (observations, overrides) = load_person(conn, person_id)?;
    if observations.is_empty() {
        for (table, _) in TABLES.iter().rev() {
            conn.execute(
                &format!("DELETE FROM {} WHERE person_id = ?1", table.as_str()),
                [person_id],
            )?;
        }
        conn.execute(
            "DELETE FROM field_provenance WHERE person_id = ?1",
            [person_id],
        )?;
        return Ok(false);
    }
    let chosen = survive(&observations, &overrides, policy);
    let now = now_rfc3339();
    for (table, fields) in TABLES.iter() {
        let present: Vec<&Field> = fields.iter().filter(|f| chosen.contains_key(f)).collect();
        let name = table.as_str();
        if present.is_empty() && *table != Table::Person {
            conn.execute(
                &format!("DELETE FROM {name} WHERE person_id = ?1"),
                [person_id],
            )?;
            continue;
        }
        let columns: Vec<&str> = fields.iter().map(|f| f.column()).collect();
        let placeholders: Vec<String> = (0..columns.len()).map(|i| format!("?{}", i + 3)).collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let created = if *table == Table::Person {
            ", created_at"
        } else {
            ""
        };
        let created_value = if *table == Table::Person { ", ?2" } else { "" };
        let sql = format!(
            "INSERT INTO {name} (person_id, {cols}{created}, updated_at) VALUES (?1, {ph}{created_value}, ?2)
             ON CONFLICT (person_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
            cols = columns.join(", "),
            ph = placeholders.join(", "),
            updates = updates.join(", "),
        );
        let mut values: Vec<SqlValue> =
            vec![SqlValue::Integer(person_id), SqlValue::Text(now.clone())];
        values.extend(
            fields
                .iter()
                .map(|f| chosen.get(f).map_or(SqlValue::Null, |c| to_sql(&c.value))),
        );
        conn.prepare_cached(&sql)?
            .execute(params_from_iter(values))?;
    }
    conn.execute(
        "DELETE FROM field_provenance WHERE person_id = ?1",
        [person_id],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO field_provenance (person_id, field, source, external_id, observed_at, rule) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (field, c) in &chosen {
        if field.table() == Table::SourceRecord {
            continue;
        }
        insert.execute(params![
            person_id,
            field.name(),
            c.source,
            c.external_id,
            c.observed_at,
            c.rule
        ])?;
    }
    Ok(true)
}

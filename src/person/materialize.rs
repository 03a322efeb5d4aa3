//! Writes the canonical rows of persons: `person`, the role tables and `field_provenance`,
//! from their linked records' canonical values and any operator overrides. Runs on the
//! store writer.
//!
//! Only what changed is written: a person's stored rows are compared with the newly chosen
//! values first, so relinking a person whose values did not change writes nothing. Every
//! statement is a fixed SQL string, prepared once per connection (cached).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use anyhow::Result;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::survivorship::{Chosen, Observation, Override, Policy, survive};
use crate::model::{CanonicalValues, Field, Table, Value};
use crate::source::kind::SourceKind;
use crate::store::now_rfc3339;

/// One materialised table: its canonical fields in column order and its fixed statements.
struct TableSql {
    table: Table,
    fields: Vec<Field>,
    upsert: String,
    select: String,
    delete: String,
}

/// The tables materialised, person first.
static TABLES: LazyLock<Vec<TableSql>> = LazyLock::new(|| {
    [
        Table::Person,
        Table::ServiceUser,
        Table::StaffUser,
        Table::HealthProfile,
        Table::Lifestyle,
    ]
    .into_iter()
    .map(|table| {
        let fields: Vec<Field> = Field::ALL
            .iter()
            .copied()
            .filter(|f| f.table() == table)
            .collect();
        let name = table.as_str();
        let columns: Vec<&str> = fields.iter().map(|f| f.column()).collect();
        let placeholders: Vec<String> = (0..columns.len()).map(|i| format!("?{}", i + 3)).collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let (created, created_value) = if table == Table::Person {
            (", created_at", ", ?2")
        } else {
            ("", "")
        };
        let upsert = format!(
            "INSERT INTO {name} (person_id, {cols}{created}, updated_at) VALUES (?1, {ph}{created_value}, ?2)
             ON CONFLICT (person_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
            cols = columns.join(", "),
            ph = placeholders.join(", "),
            updates = updates.join(", "),
        );
        let select = format!(
            "SELECT {cols} FROM {name} WHERE person_id = ?1",
            cols = columns.join(", ")
        );
        let delete = format!("DELETE FROM {name} WHERE person_id = ?1");
        TableSql {
            table,
            fields,
            upsert,
            select,
            delete,
        }
    })
    .collect()
});

/// Canonical fields by name (`Field::from_name` without the linear search).
static FIELDS_BY_NAME: LazyLock<HashMap<&'static str, Field>> =
    LazyLock::new(|| Field::ALL.iter().map(|f| (f.name(), *f)).collect());

/// Reads a canonical record's stored values (`canonical_record.values_json`): fields that
/// are unknown or do not hold their type are left out; text that is not a JSON object gives
/// no values. Parsed straight into typed values, without an intermediate JSON map.
pub fn values_from_json(text: &str) -> CanonicalValues {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde::Deserializer::deserialize_map(&mut de, ValuesVisitor).and_then(|v| {
        de.end()?;
        Ok(v)
    }) {
        Ok(values) => values,
        Err(_) => CanonicalValues::new(),
    }
}

struct ValuesVisitor;

/// An object key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::de::Visitor<'de> for ValuesVisitor {
    type Value = CanonicalValues;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of canonical values")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = CanonicalValues::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some(field) = FIELDS_BY_NAME.get(key.as_ref()).copied() else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let json: serde_json::Value = map.next_value()?;
            // A later duplicate key replaces an earlier one, as in a JSON map.
            match Value::from_json(field.value_type(), &json) {
                Ok(v) => values.insert(field, v),
                Err(_) => values.remove(field),
            };
        }
        Ok(values)
    }
}

/// A canonical value as SQLite stores it: dates and instants as text, lists as JSON arrays.
pub fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Text(s) => SqlValue::Text(s.clone()),
        Value::Bool(b) => SqlValue::Integer(*b as i64),
        Value::Int(i) => SqlValue::Integer(*i),
        other => match other.to_json() {
            serde_json::Value::Null => SqlValue::Null,
            serde_json::Value::Bool(b) => SqlValue::Integer(b as i64),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map_or(SqlValue::Real(n.as_f64().unwrap_or(0.0)), SqlValue::Integer),
            serde_json::Value::String(s) => SqlValue::Text(s),
            other => SqlValue::Text(other.to_string()),
        },
    }
}

const OBSERVATIONS_SQL: &str = "SELECT l.source, l.external_id, l.kind, c.values_json, c.mapped_at
     FROM person_link l JOIN canonical_record c ON c.source = l.source AND c.external_id = l.external_id
     WHERE l.person_id = ?1 ORDER BY l.source, l.external_id";

const OVERRIDES_SQL: &str = "SELECT field, value_json, created_at FROM operator_override
     WHERE person_id = ?1 AND superseded_at IS NULL";

/// The linked records of a person, in (source, external id) order.
pub fn load_observations(conn: &Connection, person_id: i64) -> Result<Vec<Observation>> {
    let mut stmt = conn.prepare_cached(OBSERVATIONS_SQL)?;
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
    Ok(observations)
}

/// A person's live operator overrides.
pub fn load_overrides(conn: &Connection, person_id: i64) -> Result<BTreeMap<Field, Override>> {
    let mut stmt = conn.prepare_cached(OVERRIDES_SQL)?;
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
            parse_override(&field, &value_json, created_at)
        })
        .collect();
    Ok(overrides)
}

/// Every live operator override, by person (there are few; one scan instead of a query per
/// person).
pub fn load_all_overrides(conn: &Connection) -> Result<BTreeMap<i64, BTreeMap<Field, Override>>> {
    let mut stmt = conn.prepare(
        "SELECT person_id, field, value_json, created_at FROM operator_override
         WHERE superseded_at IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out: BTreeMap<i64, BTreeMap<Field, Override>> = BTreeMap::new();
    for row in rows {
        let (person, field, value_json, created_at) = row?;
        if let Some((field, o)) = parse_override(&field, &value_json, created_at) {
            out.entry(person).or_default().insert(field, o);
        }
    }
    Ok(out)
}

fn parse_override(field: &str, value_json: &str, created_at: String) -> Option<(Field, Override)> {
    let field = Field::from_name(field)?;
    let json: serde_json::Value = serde_json::from_str(value_json).ok()?;
    let value = Value::from_json(field.value_type(), &json).ok()?;
    Some((field, Override { value, created_at }))
}

/// The linked records of a person and its live overrides.
pub fn load_person(
    conn: &Connection,
    person_id: i64,
) -> Result<(Vec<Observation>, BTreeMap<Field, Override>)> {
    Ok((
        load_observations(conn, person_id)?,
        load_overrides(conn, person_id)?,
    ))
}

/// `field_provenance` rows waiting to be inserted, written many rows per statement: most of
/// what materialising a new person writes is its provenance (one row per field).
#[derive(Default)]
pub struct ProvenanceBatch {
    rows: Vec<ProvenanceRow>,
}

struct ProvenanceRow {
    person_id: i64,
    field: &'static str,
    source: String,
    external_id: Option<String>,
    observed_at: String,
    rule: &'static str,
}

/// Rows per multi-row insert (six parameters each, well under SQLite's limit).
const PROVENANCE_ROWS_PER_STATEMENT: usize = 64;

static PROVENANCE_INSERT_MANY: LazyLock<String> = LazyLock::new(|| {
    let rows: Vec<String> = (0..PROVENANCE_ROWS_PER_STATEMENT)
        .map(|i| {
            let b = i * 6;
            format!(
                "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            )
        })
        .collect();
    format!(
        "INSERT INTO field_provenance (person_id, field, source, external_id, observed_at, rule) VALUES {}",
        rows.join(", ")
    )
});

impl ProvenanceBatch {
    fn push(&mut self, conn: &Connection, row: ProvenanceRow) -> Result<()> {
        self.rows.push(row);
        if self.rows.len() >= PROVENANCE_ROWS_PER_STATEMENT {
            self.flush(conn)?;
        }
        Ok(())
    }

    /// Inserts every waiting row. Must run before the transaction commits.
    pub fn flush(&mut self, conn: &Connection) -> Result<()> {
        let mut rows = std::mem::take(&mut self.rows).into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<ProvenanceRow> =
                rows.by_ref().take(PROVENANCE_ROWS_PER_STATEMENT).collect();
            if chunk.len() == PROVENANCE_ROWS_PER_STATEMENT {
                let mut stmt = conn.prepare_cached(&PROVENANCE_INSERT_MANY)?;
                let params: Vec<&dyn rusqlite::ToSql> = chunk
                    .iter()
                    .flat_map(|r| -> [&dyn rusqlite::ToSql; 6] {
                        [
                            &r.person_id,
                            &r.field,
                            &r.source,
                            &r.external_id,
                            &r.observed_at,
                            &r.rule,
                        ]
                    })
                    .collect();
                stmt.execute(params.as_slice())?;
            } else {
                let mut stmt = conn.prepare_cached(
                    "INSERT INTO field_provenance (person_id, field, source, external_id, observed_at, rule) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for r in &chunk {
                    stmt.execute(params![
                        r.person_id,
                        r.field,
                        r.source,
                        r.external_id,
                        r.observed_at,
                        r.rule
                    ])?;
                }
            }
        }
        Ok(())
    }
}

/// What [`materialize_with`] did to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// Rows were written (new person, or values or provenance changed).
    Written,
    /// The person's stored rows already held the chosen values: nothing was written.
    Unchanged,
    /// No linked record is left: the person's rows were removed.
    Removed,
}

/// Recomputes and writes one person; a person with no linked record and no override is
/// removed (its overrides stay, as audit). Returns whether the person still exists.
pub fn materialize(conn: &Connection, person_id: i64, policy: &Policy) -> Result<bool> {
    let observations = load_observations(conn, person_id)?;
    let overrides = load_overrides(conn, person_id)?;
    let mut batch = ProvenanceBatch::default();
    let outcome = materialize_with(
        conn,
        person_id,
        &observations,
        &overrides,
        policy,
        false,
        &now_rfc3339(),
        &mut batch,
    )?;
    batch.flush(conn)?;
    Ok(outcome != Materialized::Removed)
}

/// Writes one person from its observations and overrides. `known_new`: the person id was
/// just assigned, so nothing is stored for it yet (no comparison, no deletes). Provenance
/// rows go to `batch`, which the caller flushes before committing.
#[allow(clippy::too_many_arguments)]
pub fn materialize_with(
    conn: &Connection,
    person_id: i64,
    observations: &[Observation],
    overrides: &BTreeMap<Field, Override>,
    policy: &Policy,
    known_new: bool,
    now: &str,
    batch: &mut ProvenanceBatch,
) -> Result<Materialized> {
    if observations.is_empty() {
        if !known_new {
            for t in TABLES.iter().rev() {
                conn.prepare_cached(&t.delete)?.execute([person_id])?;
            }
            conn.prepare_cached("DELETE FROM field_provenance WHERE person_id = ?1")?
                .execute([person_id])?;
        }
        return Ok(Materialized::Removed);
    }
    let chosen = survive(observations, overrides, policy);
    let mut wrote = false;
    for t in TABLES.iter() {
        let present = t.fields.iter().any(|f| chosen.contains_key(f));
        if !present && t.table != Table::Person {
            if !known_new && conn.prepare_cached(&t.delete)?.execute([person_id])? > 0 {
                wrote = true;
            }
            continue;
        }
        let values: Vec<SqlValue> = t
            .fields
            .iter()
            .map(|f| chosen.get(f).map_or(SqlValue::Null, |c| to_sql(&c.value)))
            .collect();
        if !known_new {
            let stored: Option<Vec<SqlValue>> = conn
                .prepare_cached(&t.select)?
                .query_row([person_id], |r| {
                    (0..t.fields.len())
                        .map(|i| r.get::<_, SqlValue>(i))
                        .collect()
                })
                .optional()?;
            if stored.as_ref() == Some(&values) {
                continue;
            }
        }
        let head = [
            SqlValue::Integer(person_id),
            SqlValue::Text(now.to_string()),
        ];
        conn.prepare_cached(&t.upsert)?
            .execute(params_from_iter(head.into_iter().chain(values)))?;
        wrote = true;
    }
    let provenance: Vec<(&'static str, &Chosen)> = chosen
        .iter()
        .filter(|(f, _)| f.table() != Table::SourceRecord)
        .map(|(f, c)| (f.name(), c))
        .collect();
    if known_new || !provenance_matches(conn, person_id, &provenance)? {
        if !known_new {
            conn.prepare_cached("DELETE FROM field_provenance WHERE person_id = ?1")?
                .execute([person_id])?;
        }
        for (field, c) in &provenance {
            batch.push(
                conn,
                ProvenanceRow {
                    person_id,
                    field,
                    source: c.source.clone(),
                    external_id: c.external_id.clone(),
                    observed_at: c.observed_at.clone(),
                    rule: c.rule,
                },
            )?;
        }
        wrote = true;
    }
    Ok(if wrote {
        Materialized::Written
    } else {
        Materialized::Unchanged
    })
}

/// Whether the stored provenance of a person is exactly `wanted`.
fn provenance_matches(
    conn: &Connection,
    person_id: i64,
    wanted: &[(&'static str, &Chosen)],
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT field, source, external_id, observed_at, rule FROM field_provenance
         WHERE person_id = ?1 ORDER BY field",
    )?;
    let mut stored: Vec<(String, String, Option<String>, String, String)> = stmt
        .query_map([person_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if stored.len() != wanted.len() {
        return Ok(false);
    }
    // SQLite's ORDER BY uses byte order, as does str's Ord; sort again to be independent of it.
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    let mut wanted: Vec<&(&'static str, &Chosen)> = wanted.iter().collect();
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    Ok(stored.iter().zip(wanted).all(|(s, (field, c))| {
        s.0 == *field
            && s.1 == c.source
            && s.2 == c.external_id
            && s.3 == c.observed_at
            && s.4 == c.rule
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference reading: a JSON map, then each known field that holds its type.
    fn reference(text: &str) -> CanonicalValues {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
        else {
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

    #[test]
    fn values_from_json_reads_as_a_json_map_does() {
        for text in [
            r#"{"given_name":"Ann","family_name":"Lee","birth_date":"1950-02-03","dementia":true,"given_age":71}"#,
            r#"{"given_name":"Ann","unknown":{"a":[1,2]},"birth_date":"not a date","smoker":"yes"}"#,
            r#"{"given_\u006eame":"Esc","email":"a@example.org","allergies":["nuts","dust"]}"#,
            r#"{"given_name":"First","given_name":"Second"}"#,
            r#"{"given_name":"Kept","given_name":42}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#"{"given_name":"Ann"} trailing"#,
            r#"not json"#,
            "",
        ] {
            assert_eq!(values_from_json(text), reference(text), "{text}");
        }
    }

    #[test]
    fn every_field_is_found_by_name() {
        for f in Field::ALL {
            assert_eq!(FIELDS_BY_NAME.get(f.name()), Some(f));
        }
    }
}

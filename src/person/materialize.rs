//! Writes the canonical rows of persons: `person`, the role tables and `person_provenance`,
//! from their linked records' canonical values and any operator overrides. Choosing
//! ([`choose_rows`]) is pure and runs on any thread; writing ([`write_rows`]) runs on the
//! store writer.
//!
//! Only what changed is written: a person's stored rows are compared with the newly chosen
//! values first, so relinking a person whose values did not change writes nothing. Every
//! statement is a fixed SQL string, prepared once per connection (cached).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
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
            match Value::from_json_owned(field.value_type(), json) {
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

/// What survivorship chose for one person, as the rows to store.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRows {
    /// Per materialised table, in [`TABLES`] order: the row, or `None` for a role table the
    /// person has no value in (`person` always has a row).
    tables: Vec<Option<Vec<SqlValue>>>,
    /// `person_provenance.records` and `.fields`.
    provenance: (String, String),
}

/// Chooses a person's values from its records and overrides; `None` when it has no record
/// left. Pure: runs on any thread.
pub fn choose_rows(
    observations: &[Observation],
    overrides: &BTreeMap<Field, Override>,
    policy: &Policy,
) -> Option<PersonRows> {
    if observations.is_empty() {
        return None;
    }
    let chosen = survive(observations, overrides, policy);
    let tables = TABLES
        .iter()
        .map(|t| {
            let present = t.fields.iter().any(|f| chosen.contains_key(f));
            (present || t.table == Table::Person).then(|| {
                t.fields
                    .iter()
                    .map(|f| chosen.get(f).map_or(SqlValue::Null, |c| to_sql(c.value)))
                    .collect()
            })
        })
        .collect();
    Some(PersonRows {
        tables,
        provenance: provenance_json(&chosen),
    })
}

/// The compact provenance of a person: the winning records once each, and the fields each
/// record won by each rule, as field numbers (`schema/0011_provenance_field_ids.sql`).
fn provenance_json(chosen: &BTreeMap<Field, Chosen>) -> (String, String) {
    let mut records: Vec<(&str, Option<&str>, &str)> = Vec::new();
    // (record index, rule, field id), sorted below: the groups' order and the ids' order.
    let mut won: Vec<(usize, &str, u16)> = Vec::with_capacity(chosen.len());
    for (field, c) in chosen
        .iter()
        .filter(|(f, _)| f.table() != Table::SourceRecord)
    {
        let record = (c.source, c.external_id, c.observed_at);
        let index = match records.iter().position(|r| *r == record) {
            Some(i) => i,
            None => {
                records.push(record);
                records.len() - 1
            }
        };
        won.push((index, c.rule, field.id()));
    }
    won.sort_unstable();
    let mut fields = String::with_capacity(8 + 4 * won.len());
    fields.push('[');
    let mut group: Option<(usize, &str)> = None;
    for (index, rule, id) in won {
        if group == Some((index, rule)) {
            let _ = write!(fields, ",{id}");
            continue;
        }
        if group.is_some() {
            fields.push_str("]],");
        }
        let _ = write!(fields, "[{index},");
        push_json_str(&mut fields, rule);
        let _ = write!(fields, ",[{id}");
        group = Some((index, rule));
    }
    if group.is_some() {
        fields.push_str("]]");
    }
    fields.push(']');
    let mut list = String::with_capacity(80 * records.len());
    list.push('[');
    for (i, (source, external_id, at)) in records.into_iter().enumerate() {
        list.push_str(if i == 0 { "[" } else { ",[" });
        push_json_str(&mut list, source);
        list.push(',');
        match external_id {
            Some(id) => push_json_str(&mut list, id),
            None => list.push_str("null"),
        }
        list.push(',');
        push_json_str(&mut list, at);
        list.push(']');
    }
    list.push(']');
    (list, fields)
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        // Serialising a string cannot fail.
        out.push_str(&quoted);
    }
}

/// What [`write_rows`] did to a person.
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
    let rows = choose_rows(&observations, &overrides, policy);
    let outcome = write_rows(conn, person_id, rows.as_ref(), false, &now_rfc3339())?;
    Ok(outcome != Materialized::Removed)
}

/// Stores one person's chosen rows, or removes the person when `rows` is `None`. `known_new`:
/// the person id was just assigned, so nothing is stored for it yet (no comparison, no
/// deletes). Only rows that differ from what is stored are written.
pub fn write_rows(
    conn: &Connection,
    person_id: i64,
    rows: Option<&PersonRows>,
    known_new: bool,
    now: &str,
) -> Result<Materialized> {
    let Some(rows) = rows else {
        if !known_new {
            conn.prepare_cached("DELETE FROM person_provenance WHERE person_id = ?1")?
                .execute([person_id])?;
            for t in TABLES.iter().rev() {
                conn.prepare_cached(&t.delete)?.execute([person_id])?;
            }
        }
        return Ok(Materialized::Removed);
    };
    let mut wrote = false;
    for (t, row) in TABLES.iter().zip(&rows.tables) {
        let Some(values) = row else {
            if !known_new && conn.prepare_cached(&t.delete)?.execute([person_id])? > 0 {
                wrote = true;
            }
            continue;
        };
        if !known_new {
            let stored: Option<Vec<SqlValue>> = conn
                .prepare_cached(&t.select)?
                .query_row([person_id], |r| {
                    (0..t.fields.len())
                        .map(|i| r.get::<_, SqlValue>(i))
                        .collect()
                })
                .optional()?;
            if stored.as_ref() == Some(values) {
                continue;
            }
        }
        let head = [
            SqlValue::Integer(person_id),
            SqlValue::Text(now.to_string()),
        ];
        conn.prepare_cached(&t.upsert)?
            .execute(params_from_iter(head.iter().chain(values)))?;
        wrote = true;
    }
    let (records, fields) = &rows.provenance;
    let stored: Option<(String, String)> = if known_new {
        None
    } else {
        conn.prepare_cached("SELECT records, fields FROM person_provenance WHERE person_id = ?1")?
            .query_row([person_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    };
    if stored.as_ref() != Some(&rows.provenance) {
        conn.prepare_cached(
            "INSERT INTO person_provenance (person_id, records, fields) VALUES (?1, ?2, ?3)
             ON CONFLICT (person_id) DO UPDATE SET records = excluded.records, fields = excluded.fields",
        )?
        .execute(params![person_id, records, fields])?;
        wrote = true;
    }
    Ok(if wrote {
        Materialized::Written
    } else {
        Materialized::Unchanged
    })
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
            r#"{"health_profile.allergies":["nuts",1],"health_profile.medications":["a","b"],"given_name":"Ann"}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#"{"given_name":"Ann"} trailing"#,
            r#"not json"#,
            "",
        ] {
            assert_eq!(values_from_json(text), reference(text), "{text}");
        }
    }

    /// What `write_rows` stores reads back through the `field_provenance` view, one row per
    /// field, with text that needs JSON escaping intact.
    #[test]
    fn provenance_reads_back_through_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let values = |json: &str| values_from_json(json);
        let observations = vec![
            Observation {
                source: "homes \"north\"".into(),
                external_id: "a\\1".into(),
                kind: SourceKind::CarehqServiceUsers,
                values: values(r#"{"given_name":"Ann","family_name":"Lee"}"#),
                observed_at: "2026-01-01T00:00:00Z".into(),
            },
            Observation {
                source: "market".into(),
                external_id: "m1".into(),
                kind: SourceKind::MarketplaceUsers,
                values: values(r#"{"given_name":"Ann","email":"ann@example.org"}"#),
                observed_at: "2026-01-02T00:00:00Z".into(),
            },
        ];
        let overrides: BTreeMap<Field, Override> = [(
            Field::Mobile,
            Override {
                value: Field::Mobile.parse_text("07700 900123").unwrap(),
                created_at: "2026-01-03T00:00:00Z".into(),
            },
        )]
        .into();
        let rows = choose_rows(&observations, &overrides, &Policy::default()).unwrap();
        assert_eq!(
            write_rows(&conn, 7, Some(&rows), true, "t").unwrap(),
            Materialized::Written
        );
        let read: Vec<(String, String, Option<String>, String, String)> = conn
            .prepare("SELECT field, source, external_id, observed_at, rule FROM field_provenance WHERE person_id = 7 ORDER BY field")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |f: &str, s: &str, id: Option<&str>, at: &str, rule: &str| {
            (
                f.to_string(),
                s.to_string(),
                id.map(str::to_string),
                at.to_string(),
                rule.to_string(),
            )
        };
        assert_eq!(
            read,
            vec![
                row(
                    "email",
                    "market",
                    Some("m1"),
                    "2026-01-02T00:00:00Z",
                    "only_source"
                ),
                row(
                    "family_name",
                    "homes \"north\"",
                    Some("a\\1"),
                    "2026-01-01T00:00:00Z",
                    "only_source"
                ),
                row(
                    "given_name",
                    "homes \"north\"",
                    Some("a\\1"),
                    "2026-01-01T00:00:00Z",
                    "agreement"
                ),
                row(
                    "mobile",
                    "operator",
                    None,
                    "2026-01-03T00:00:00Z",
                    "operator_override"
                ),
            ]
        );
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM person_provenance", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 1, "one row per person");
        // The form `schema/0011_provenance_field_ids.sql` migrates older rows to: groups by
        // record and rule, field ids ascending (given_name 0, family_name 1, email 6, mobile 8).
        let fields: String = conn
            .query_row("SELECT fields FROM person_provenance", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            fields,
            r#"[[0,"agreement",[0]],[0,"only_source",[1]],[1,"only_source",[6]],[2,"operator_override",[8]]]"#
        );
        assert_eq!(
            write_rows(&conn, 7, Some(&rows), false, "t2").unwrap(),
            Materialized::Unchanged,
            "the same choice writes nothing"
        );
    }

    #[test]
    fn every_field_is_found_by_name() {
        for f in Field::ALL {
            assert_eq!(FIELDS_BY_NAME.get(f.name()), Some(f));
        }
    }
}

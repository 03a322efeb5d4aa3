//! The SQLite store: migrations from `schema/`, connection setup, and the one writer thread.
//!
//! Architecture Invariant: every write goes through [`Writer`]; readers open their own
//! connections (WAL lets them read while the writer commits).

mod already_mapped;
pub mod sightings;
mod writer;

/// The statement `$insert`, or (when a row may already exist) it with `$on_conflict` after
/// it. A plain INSERT where no row can conflict: an upsert makes SQLite journal every page it
/// touches, in case it has to undo the statement.
macro_rules! insert_or_upsert {
    ($may_exist:expr, $insert:literal, $on_conflict:literal $(,)?) => {
        if $may_exist {
            concat!($insert, " ", $on_conflict)
        } else {
            $insert
        }
    };
}
pub(crate) use insert_or_upsert;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

pub use already_mapped::AlreadyMapped;
pub use writer::{
    Canonical, CanonicalForm, Checkpoint, PageCounts, PageWrite, RunCounts, StoredRecord, Writer,
    remap_stale,
};

static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::new(vec![
        M::up(include_str!("../../schema/0001_extraction.sql")),
        M::up(include_str!("../../schema/0002_canonical.sql")),
        M::up(include_str!("../../schema/0003_writeback.sql")),
        M::up(include_str!("../../schema/0004_operations.sql")),
        M::up(include_str!("../../schema/0005_performance.sql")),
        M::up(include_str!("../../schema/0006_compact_provenance.sql")),
        M::up(include_str!("../../schema/0007_link_state.sql")),
        M::up(include_str!("../../schema/0008_deleted_records.sql")),
        M::up(include_str!("../../schema/0009_sightings.sql")),
        M::up(include_str!("../../schema/0010_streamed_full_link.sql")),
        M::up(include_str!("../../schema/0011_provenance_field_ids.sql")),
        M::up(include_str!(
            "../../schema/0012_relink_queue_by_record_id.sql"
        )),
    ])
});

/// Current time as stored everywhere: RFC 3339, UTC, second precision.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Queues a stored record for linking. The queue is keyed by `source_record.record_id`, so
/// queueing new records appends (`schema/0012_relink_queue_by_record_id.sql`).
pub fn queue_relink(
    conn: &Connection,
    record_id: i64,
    source: &str,
    external_id: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO relink_queue (record_id, source, external_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(rusqlite::params![record_id, source, external_id])?;
    Ok(())
}

/// Queues every canonical record for linking (a full relink), in record id order.
pub const QUEUE_ALL_CANONICAL_SQL: &str =
    "INSERT OR IGNORE INTO relink_queue (record_id, source, external_id)
     SELECT s.record_id, c.source, c.external_id FROM canonical_record c
     JOIN source_record s ON s.source = c.source AND s.external_id = c.external_id
     ORDER BY s.record_id";

/// Opens (creating if needed, owner-only) and migrates the store at `path`.
pub fn open(path: &Path) -> Result<Connection> {
    create_private_file(path)?;
    let mut conn = Connection::open(path)
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    configure(&conn)?;
    MIGRATIONS
        .to_latest(&mut conn)
        .with_context(|| format!("cannot migrate the store at {}", path.display()))?;
    Ok(conn)
}

/// A read-only connection for commands that only look (status, explain, plan).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the store at {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // `plan` reads every person's records in person order: lookups all over the record
    // tables, which SQLite's default 2 MiB cache turns into a read call each.
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    Ok(conn)
}

/// A read-only connection's page cache, in KiB.
const READER_CACHE_KIB: i64 = 32 * 1024;

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Larger pages suit kilobyte payloads; this only takes effect on a new, empty database.
    conn.pragma_update(None, "page_size", 8192)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals in memory: an upsert (or any statement that may abort part-way)
    // saves each page it first touches; in a temp file that was a write system call of a
    // whole page, for every row of a large link transaction. Nor do pages of records then
    // reach temporary files on disk.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// SQLite gives the -wal and -shm files the mode of the database file, so creating the
/// database 0600 keeps all three readable by the owner only.
fn create_private_file(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the store at {}", path.display()))?;
    }
    Ok(())
}

/// Where the store lives, plus the writer that owns its only writing connection.
pub struct Store {
    pub path: PathBuf,
    pub writer: Writer,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = open(path)?;
        Ok(Store {
            path: path.to_path_buf(),
            writer: Writer::spawn(conn),
        })
    }

    pub fn reader(&self) -> Result<Connection> {
        open_read_only(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Field, FieldKind, Table};

    #[test]
    fn migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
    }

    /// Every row of the `field_provenance` view, in (person, field) order.
    fn field_provenance_rows(
        conn: &Connection,
    ) -> Vec<(i64, String, String, Option<String>, String, String)> {
        conn.prepare("SELECT person_id, field, source, external_id, observed_at, rule FROM field_provenance ORDER BY person_id, field")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// A store written before provenance became one row per person keeps every provenance
    /// row, read back through the `field_provenance` view with the same columns.
    #[test]
    fn compact_provenance_migration_keeps_every_row() {
        let mut conn = Connection::open_in_memory().unwrap();
        MIGRATIONS.to_version(&mut conn, 5).unwrap();
        let rows = [
            (
                1,
                "birth_date",
                "homes",
                Some("a1"),
                "2026-01-01T00:00:00Z",
                "agreement",
            ),
            (
                1,
                "given_name",
                "market",
                Some("m9"),
                "2026-01-02T00:00:00Z",
                "source_priority",
            ),
            (
                1,
                "mobile",
                "operator",
                None,
                "2026-01-03T00:00:00Z",
                "operator_override",
            ),
            (
                2,
                "family_name",
                "homes",
                Some("a2"),
                "2026-01-01T00:00:00Z",
                "only_source",
            ),
        ];
        conn.execute_batch(
            "INSERT INTO person (person_id, created_at, updated_at) VALUES (1, 't', 't'), (2, 't', 't')",
        )
        .unwrap();
        for r in &rows {
            conn.execute(
                "INSERT INTO field_provenance (person_id, field, source, external_id, observed_at, rule) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![r.0, r.1, r.2, r.3, r.4, r.5],
            )
            .unwrap();
        }
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let read = field_provenance_rows(&conn);
        let expected: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.0,
                    r.1.into(),
                    r.2.into(),
                    r.3.map(Into::into),
                    r.4.into(),
                    r.5.into(),
                )
            })
            .collect();
        assert_eq!(read, expected);
    }

    /// Provenance written before fields were numbered reads back the same through the view,
    /// and takes the form the writer gives now (so the next sync does not rewrite it).
    #[test]
    fn provenance_field_ids_migration_keeps_every_row_in_the_writers_form() {
        let mut conn = Connection::open_in_memory().unwrap();
        MIGRATIONS.to_version(&mut conn, 10).unwrap();
        conn.execute_batch(
            r#"INSERT INTO person (person_id, created_at, updated_at) VALUES (1, 't', 't'), (2, 't', 't');
               INSERT INTO person_provenance (person_id, records, fields) VALUES
                 (1, '[["homes","a1","2026-01-01T00:00:00Z"],["operator",null,"2026-01-03T00:00:00Z"],["market","m\"9","2026-01-02T00:00:00Z"]]',
                     '{"service_user.dementia":[0,"only_source"],"mobile":[1,"operator_override"],"given_name":[2,"source_priority"],"birth_date":[0,"agreement"],"family_name":[0,"agreement"]}'),
                 (2, '[["homes","a2","2026-01-01T00:00:00Z"]]', '{"family_name":[0,"only_source"]}');"#,
        )
        .unwrap();
        let before = field_provenance_rows(&conn);
        assert_eq!(before.len(), 6);
        MIGRATIONS.to_latest(&mut conn).unwrap();
        assert_eq!(field_provenance_rows(&conn), before);
        let fields: Vec<String> = conn
            .prepare("SELECT fields FROM person_provenance ORDER BY person_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            fields,
            [
                r#"[[0,"agreement",[1,4]],[0,"only_source",[34]],[1,"operator_override",[8]],[2,"source_priority",[0]]]"#,
                r#"[[0,"only_source",[1]]]"#,
            ]
        );
    }

    /// Records queued before the queue was keyed by record id stay queued, each under its
    /// raw record's id; a queued record without a raw record is kept too.
    #[test]
    fn relink_queue_migration_keeps_every_queued_record() {
        let mut conn = Connection::open_in_memory().unwrap();
        MIGRATIONS.to_version(&mut conn, 11).unwrap();
        conn.execute_batch(
            "INSERT INTO source_record (record_id, source, external_id, kind, payload, content_hash,
                 first_seen_at, sighting_stored_at, changed_at, sighting_scan)
             VALUES (7, 'homes', 'a1', 'k', '{}', 'h', 't', 't', 't', 1),
                    (3, 'homes', 'a2', 'k', '{}', 'h', 't', 't', 't', 1),
                    (9, 'market', 'm1', 'k', '{}', 'h', 't', 't', 't', 1);
             INSERT INTO relink_queue (source, external_id) VALUES
                 ('market', 'm1'), ('homes', 'a1'), ('homes', 'gone'), ('homes', 'a2');",
        )
        .unwrap();
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let queued: Vec<(i64, String, String)> = conn
            .prepare("SELECT record_id, source, external_id FROM relink_queue ORDER BY record_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |id: i64, s: &str, e: &str| (id, s.to_string(), e.to_string());
        assert_eq!(
            queued,
            [
                row(-3, "homes", "gone"),
                row(3, "homes", "a2"),
                row(7, "homes", "a1"),
                row(9, "market", "m1"),
            ]
        );
        // Queueing again is a no-op: one row per record.
        queue_relink(&conn, 7, "homes", "a1").unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM relink_queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 4);
    }

    /// `canonical_field` numbers every field as [`Field::id`] does: a field added to the model
    /// needs its row in a new migration.
    #[test]
    fn canonical_field_numbers_every_field_as_the_model_does() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        let stored: Vec<(u16, String)> = conn
            .prepare("SELECT field_id, name FROM canonical_field ORDER BY field_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let model: Vec<(u16, String)> = Field::ALL
            .iter()
            .map(|f| (f.id(), f.name().to_owned()))
            .collect();
        assert_eq!(stored, model);
    }

    /// Every canonical field of a person or role table has its column, with a fitting type.
    #[test]
    fn the_schema_holds_every_canonical_field() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        for field in Field::ALL
            .iter()
            .filter(|f| f.table() != Table::SourceRecord)
        {
            let table = field.table().as_str();
            let declared: Option<String> = conn
                .query_row(
                    "SELECT type FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, field.column()],
                    |r| r.get(0),
                )
                .ok();
            let expected = match field.kind() {
                FieldKind::Bool | FieldKind::Int | FieldKind::Count => "INTEGER",
                _ => "TEXT",
            };
            assert_eq!(
                declared.as_deref(),
                Some(expected),
                "{table}.{}",
                field.column()
            );
        }
    }
}

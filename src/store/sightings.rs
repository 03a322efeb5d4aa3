//! Which stored records a scan has seen: one `scan_sighting` row of record ids per page,
//! instead of a mark written on every record, so a scan over unchanged data writes no record
//! row. When a scan that saw everything closes, the live records of its source that it did
//! not see are the ones deleted upstream.

use std::collections::HashSet;

use anyhow::{Result, anyhow};
use rusqlite::{Connection, params};

/// Notes that scan `scan_id` of `source` saw the records `record_ids`.
pub fn note(conn: &Connection, source: &str, scan_id: i64, record_ids: &[i64]) -> Result<()> {
    if record_ids.is_empty() {
        return Ok(());
    }
    let blob: Vec<u8> = record_ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    conn.prepare_cached(
        "INSERT INTO scan_sighting (source, scan_id, record_ids) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![source, scan_id, blob])?;
    Ok(())
}

/// The live records of `source` (record id, external id) that scan `scan_id` did not see.
pub fn unseen(conn: &Connection, source: &str, scan_id: i64) -> Result<Vec<(i64, String)>> {
    let mut seen: HashSet<i64> = HashSet::new();
    let mut blobs = conn.prepare_cached(
        "SELECT record_ids FROM scan_sighting WHERE source = ?1 AND scan_id = ?2",
    )?;
    let mut rows = blobs.query(params![source, scan_id])?;
    while let Some(row) = rows.next()? {
        let blob = row.get_ref(0)?.as_blob()?;
        if blob.len() % 8 != 0 {
            return Err(anyhow!(
                "source `{source}`: a scan_sighting row of scan {scan_id} is damaged ({} bytes)",
                blob.len()
            ));
        }
        seen.extend(
            blob.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default())),
        );
    }
    // Both read from indexes alone: every record of the source from its unique key, the
    // deleted ones from their partial index.
    let mut deleted = conn.prepare_cached(
        "SELECT record_id FROM source_record WHERE source = ?1 AND deleted_at IS NOT NULL",
    )?;
    for id in deleted.query_map([source], |r| r.get::<_, i64>(0))? {
        seen.insert(id?);
    }
    let mut all = conn.prepare_cached(
        "SELECT record_id, external_id FROM source_record WHERE source = ?1 ORDER BY external_id",
    )?;
    let mut unseen = Vec::new();
    let mut rows = all.query([source])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if !seen.contains(&id) {
            unseen.push((id, row.get(1)?));
        }
    }
    Ok(unseen)
}

/// Forgets the sightings of every scan of `source` but `keep` (a closed or abandoned scan).
pub fn forget_other_scans(conn: &Connection, source: &str, keep: Option<i64>) -> Result<()> {
    conn.prepare_cached("DELETE FROM scan_sighting WHERE source = ?1 AND scan_id IS NOT ?2")?
        .execute(params![source, keep])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        for (id, deleted) in [("a", None), ("b", None), ("c", Some("t")), ("d", None)] {
            conn.execute(
                "INSERT INTO source_record (source, external_id, kind, payload, content_hash, first_seen_at, sighting_stored_at, changed_at, sighting_scan, deleted_at)
                 VALUES ('s', ?1, 'pace_users', '{}', 'h', 't', 't', 't', 1, ?2)",
                params![id, deleted],
            )
            .unwrap();
        }
        (dir, conn)
    }

    fn id_of(conn: &Connection, external_id: &str) -> i64 {
        conn.query_row(
            "SELECT record_id FROM source_record WHERE external_id = ?1",
            [external_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn the_live_records_a_scan_did_not_note_are_unseen() {
        let (_dir, conn) = store();
        note(&conn, "s", 2, &[id_of(&conn, "a")]).unwrap();
        note(&conn, "s", 1, &[id_of(&conn, "b")]).unwrap();
        let unseen: Vec<String> = unseen(&conn, "s", 2)
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        // `b` was seen by another scan only; `c` is already deleted.
        assert_eq!(unseen, ["b", "d"]);
        forget_other_scans(&conn, "s", Some(2)).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM scan_sighting", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_damaged_sighting_row_is_an_error() {
        let (_dir, conn) = store();
        conn.execute(
            "INSERT INTO scan_sighting (source, scan_id, record_ids) VALUES ('s', 2, x'0102')",
            [],
        )
        .unwrap();
        let error = unseen(&conn, "s", 2).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
    }
}

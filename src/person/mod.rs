//! The canonical person: linking source records into persons, choosing each field's value
//! (survivorship), operator overrides, and writing the person tables.

mod full_link;
pub mod link;
pub mod link_state;
pub mod materialize;
pub mod scan;
pub mod survivorship;

/// Every row a query returns, each as its values' debug text joined by ` | ` (tests compare
/// whole tables this way).
#[cfg(test)]
pub(crate) fn rows_as_text(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .unwrap()
    .map(|row| row.unwrap().join(" | "))
    .collect()
}

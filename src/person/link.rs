//! Linking on the store: reads the queue of changed records, resolves identities, and writes
//! only what changed — links, the persons they touch, review pairs and runners-up.
//!
//! The first link, a large change or new matching settings link every record at once (in
//! memory) and store the linking state; otherwise only the queued records' neighbourhood is
//! re-linked from that stored state (see [`super::link_state`]), so a sync that changed ten
//! records re-links only what they touch, in whatever process runs it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::materialize::{
    Materialized, PersonRows, choose_rows, load_all_overrides, load_observations, load_overrides,
    values_from_json, write_rows,
};
use super::scan::{Read, for_each_person};
use super::survivorship::Policy;
use super::{full_link, link_state};
use crate::identity::{
    Candidate, Cluster, InputRecord, MatchConfig, PersonId, Prepared, RecordRef, assign_person_ids,
};
use crate::source::kind::SourceKind;
use crate::store::{insert_or_upsert, now_rfc3339};

/// What a link step did (counts only).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkOutcome {
    pub queued: usize,
    /// Every record was linked (first link, a large change, new settings); otherwise only
    /// the changed records' neighbourhood.
    pub full: bool,
    pub records_linked: usize,
    pub links_written: usize,
    pub links_removed: usize,
    pub persons_written: usize,
    pub persons_removed: usize,
    /// Pairs of records compared (blocking's yield: near-linear in the records).
    pub compared_pairs: u64,
    pub millis: u128,
}

/// Links the queued records with the store's matching and survivorship settings.
pub struct Linker {
    config: MatchConfig,
    policy: Policy,
}

/// A queue holding more than 1/this of the stored records is linked in full: past that, one
/// pass over everything is cheaper than reading neighbourhoods record by record.
const FULL_LINK_SHARE: u64 = 20;

impl Linker {
    pub fn new(config: MatchConfig, policy: Policy) -> Linker {
        Linker { config, policy }
    }

    /// Links what the queue holds, in one transaction.
    pub fn link_pending(&mut self, conn: &mut Connection) -> Result<LinkOutcome> {
        let started = Instant::now();
        let tx = conn.transaction()?;
        let queued: i64 = tx.query_row("SELECT count(*) FROM relink_queue", [], |r| r.get(0))?;
        if queued == 0 {
            return Ok(LinkOutcome::default());
        }
        let mut outcome = LinkOutcome {
            queued: queued as usize,
            ..LinkOutcome::default()
        };
        let stored = link_state::current(&tx, &self.config)?;
        let in_full = stored.is_none_or(|n| queued as u64 * FULL_LINK_SHARE > n);
        outcome.full = in_full;
        if in_full {
            full_link::link_all(
                &tx,
                &self.config,
                &self.policy,
                full_link::Limits::DEFAULT,
                &mut outcome,
            )?;
        } else {
            let queue = read_queue(&tx)?;
            let blocking = self.config.blocking();
            let prepare = |refs: &[RecordRef]| -> Result<Vec<Prepared>> {
                Ok(load_live(&tx, refs)?
                    .iter()
                    .map(|r| Prepared::new(r, blocking))
                    .collect())
            };
            let relinked = link_state::relink_neighbourhood(
                &tx,
                &self.config,
                &queue,
                prepare(&queue)?,
                prepare,
            )?;
            outcome.records_linked = relinked.affected.len();
            outcome.compared_pairs = relinked.compared_pairs;
            let changed_values: HashSet<RecordRef> = queue.into_iter().collect();
            let first_new_id = next_person_id(&tx)?;
            let mut affected = BTreeSet::new();
            persist(
                &tx,
                &relinked.clusters,
                &relinked.review,
                &Scope::Records(relinked.affected),
                |r| changed_values.contains(r),
                &mut affected,
                &mut outcome,
            )?;
            let (written, removed) =
                materialize_persons(&tx, &affected, first_new_id, &self.policy, &now_rfc3339())?;
            outcome.persons_written += written;
            outcome.persons_removed += removed;
        }
        tx.execute("DELETE FROM relink_queue", [])?;
        tx.commit()?;
        outcome.millis = started.elapsed().as_millis();
        Ok(outcome)
    }
}

/// The records whose values changed since they were last linked, in record order.
fn read_queue(conn: &Connection) -> Result<Vec<RecordRef>> {
    let mut stmt = conn.prepare("SELECT source, external_id FROM relink_queue ORDER BY 1, 2")?;
    let queue = stmt
        .query_map([], |r| {
            Ok(RecordRef::new(
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(queue)
}

pub(super) enum Scope {
    /// An incremental link's re-linked records: what is stored for them is replaced.
    Records(Vec<RecordRef>),
    /// A part of a full link (whole components): the review and runner-up tables were
    /// emptied when the full link began. `links_before`: whether any record was linked when
    /// it began; if none was, there is no previous link to look up.
    Part { links_before: bool },
}

const LIVE_SQL: &str =
    "SELECT c.source, c.external_id, c.kind, c.values_json FROM canonical_record c
     JOIN source_record s ON s.source = c.source AND s.external_id = c.external_id
     WHERE s.deleted_at IS NULL";

pub(super) fn input_record(
    source: &str,
    external_id: &str,
    kind: &str,
    values: &str,
) -> Option<InputRecord> {
    Some(InputRecord {
        record: RecordRef::new(source, external_id),
        kind: kind.parse::<SourceKind>().ok()?,
        values: values_from_json(values),
    })
}

/// The live (not deleted upstream) canonical records among `refs`.
fn load_live(conn: &Connection, refs: &[RecordRef]) -> Result<Vec<InputRecord>> {
    let mut stmt = conn.prepare(&format!(
        "{LIVE_SQL} AND c.source = ?1 AND c.external_id = ?2"
    ))?;
    let mut records = Vec::with_capacity(refs.len());
    for r in refs {
        let row = stmt
            .query_row(params![r.source, r.external_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .optional()?;
        if let Some((source, external_id, kind, values)) = row
            && let Some(record) = input_record(&source, &external_id, &kind, &values)
        {
            records.push(record);
        }
    }
    Ok(records)
}

/// When persons merge, the retired person's live overrides move to the person that took most
/// of its records (a later override of the same field there wins), so no correction silently
/// stops applying.
fn carry_overrides_of_merged_persons(
    tx: &Connection,
    previous: &HashMap<RecordRef, StoredLink>,
    members: &[Vec<RecordRef>],
    ids: &[PersonId],
) -> Result<()> {
    let kept: HashSet<i64> = ids.iter().map(|i| i.0).collect();
    let mut moves: HashMap<i64, HashMap<i64, usize>> = HashMap::new();
    for (records, id) in members.iter().zip(ids) {
        for r in records {
            if let Some(old) = previous.get(r).map(|l| l.0)
                && old != id.0
                && !kept.contains(&old)
            {
                *moves.entry(old).or_default().entry(id.0).or_default() += 1;
            }
        }
    }
    for (old, targets) in moves {
        let Some((&new, _)) = targets
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        else {
            continue;
        };
        tx.execute(
            "UPDATE operator_override SET person_id = ?2 WHERE person_id = ?1 AND superseded_at IS NULL",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE operator_override SET superseded_at = ?2
             WHERE person_id = ?1 AND superseded_at IS NULL AND EXISTS (
                 SELECT 1 FROM operator_override later
                 WHERE later.person_id = ?1 AND later.field = operator_override.field
                   AND later.superseded_at IS NULL AND later.override_id > operator_override.override_id)",
            params![new, now_rfc3339()],
        )?;
    }
    Ok(())
}

/// The stored link of a record: (person, rule, score).
type StoredLink = (i64, String, Option<f64>);

/// The next person id to be given out.
pub(super) fn next_person_id(tx: &Connection) -> Result<i64> {
    Ok(tx.query_row(
        "SELECT next FROM id_sequence WHERE name = 'person'",
        [],
        |r| r.get(0),
    )?)
}

/// Writes the links, review pairs and runners-up of `clusters`, giving each a person id;
/// adds to `affected_persons` every person whose records or their values changed
/// (`changed_values`), to be materialised by the caller.
pub(super) fn persist(
    tx: &Connection,
    clusters: &[Cluster],
    review: &[Candidate],
    scope: &Scope,
    changed_values: impl Fn(&RecordRef) -> bool,
    affected_persons: &mut BTreeSet<i64>,
    outcome: &mut LinkOutcome,
) -> Result<()> {
    let now = now_rfc3339();
    // The stored links of every record in scope.
    let mut previous: HashMap<RecordRef, StoredLink> = HashMap::new();
    {
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(RecordRef, StoredLink)> {
            Ok((
                RecordRef::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?),
            ))
        };
        let (refs, in_clusters): (&[RecordRef], &[Cluster]) = match scope {
            Scope::Records(refs) => (refs, clusters),
            Scope::Part { links_before } => (&[], if *links_before { clusters } else { &[] }),
        };
        let mut stmt = tx.prepare_cached(
            "SELECT source, external_id, person_id, rule, score FROM person_link
             WHERE source = ?1 AND external_id = ?2",
        )?;
        for r in refs
            .iter()
            .chain(in_clusters.iter().flat_map(Cluster::records))
        {
            if let Some((k, v)) = stmt
                .query_row(params![r.source, r.external_id], read)
                .optional()?
            {
                previous.insert(k, v);
            }
        }
    }
    let previous_ids: HashMap<RecordRef, PersonId> = previous
        .iter()
        .map(|(k, v)| (k.clone(), PersonId(v.0)))
        .collect();
    let members: Vec<Vec<RecordRef>> = clusters
        .iter()
        .map(|c| c.records().cloned().collect())
        .collect();
    let mut next_id = next_person_id(tx)?;
    let ids = assign_person_ids(&previous_ids, &members, || {
        let id = PersonId(next_id);
        next_id += 1;
        id
    });
    tx.execute(
        "UPDATE id_sequence SET next = ?1 WHERE name = 'person'",
        [next_id],
    )?;

    carry_overrides_of_merged_persons(tx, &previous, &members, &ids)?;

    let mut in_clusters: HashSet<&RecordRef> = HashSet::new();
    for (cluster, id) in clusters.iter().zip(&ids) {
        for m in &cluster.members {
            in_clusters.insert(&m.record);
            let (rule, score) = match &m.link {
                Some(l) => (l.rule.as_str().to_string(), Some(l.score)),
                None if cluster.members.len() == 1 => ("single".to_string(), None),
                None => ("anchor".to_string(), None),
            };
            let new: StoredLink = (id.0, rule, score);
            let old = previous.get(&m.record);
            if old.map(|o| (o.0, &o.1)) != Some((new.0, &new.1)) {
                tx.prepare_cached(insert_or_upsert!(
                    old.is_some(),
                    "INSERT INTO person_link (source, external_id, kind, person_id, rule, score, linked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    "ON CONFLICT (source, external_id) DO UPDATE SET person_id = excluded.person_id,
                         rule = excluded.rule, score = excluded.score, linked_at = excluded.linked_at",
                ))?
                .execute(params![
                    m.record.source,
                    m.record.external_id,
                    m.kind.as_str(),
                    new.0,
                    new.1,
                    new.2,
                    now
                ])?;
                outcome.links_written += 1;
                affected_persons.insert(new.0);
                if let Some(o) = old {
                    affected_persons.insert(o.0);
                }
            } else if changed_values(&m.record) {
                affected_persons.insert(id.0);
            }
        }
    }
    // Records in scope that no longer belong to any cluster were deleted upstream.
    let mut remove =
        tx.prepare_cached("DELETE FROM person_link WHERE source = ?1 AND external_id = ?2")?;
    for (record, old) in &previous {
        if !in_clusters.contains(record) {
            remove.execute(params![record.source, record.external_id])?;
            outcome.links_removed += 1;
            affected_persons.insert(old.0);
        }
    }

    // Review pairs and runners-up touching the scope are replaced.
    match scope {
        Scope::Part { .. } => {}
        Scope::Records(_) => {
            let mut drop_review = tx.prepare_cached(
                "DELETE FROM link_review WHERE (source_a = ?1 AND external_id_a = ?2) OR (source_b = ?1 AND external_id_b = ?2)",
            )?;
            for r in clusters
                .iter()
                .flat_map(Cluster::records)
                .chain(previous.keys())
            {
                drop_review.execute(params![r.source, r.external_id])?;
            }
            let mut drop_runner =
                tx.prepare_cached("DELETE FROM link_runner_up WHERE person_id = ?1")?;
            for id in ids
                .iter()
                .map(|i| i.0)
                .chain(affected_persons.iter().copied())
            {
                drop_runner.execute([id])?;
            }
        }
    }
    let mut add_review = tx.prepare_cached(
        "INSERT OR REPLACE INTO link_review (source_a, external_id_a, source_b, external_id_b, score, computed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for c in review {
        add_review.execute(params![
            c.record.source,
            c.record.external_id,
            c.other.source,
            c.other.external_id,
            c.score,
            now
        ])?;
    }
    let mut add_runner = tx.prepare_cached(
        "INSERT INTO link_runner_up (person_id, source, external_id, other_source, other_external_id, score, reason, computed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (cluster, id) in clusters.iter().zip(&ids) {
        for c in &cluster.runners_up {
            add_runner.execute(params![
                id.0,
                c.record.source,
                c.record.external_id,
                c.other.source,
                c.other.external_id,
                c.score,
                c.reason.as_str(),
                now
            ])?;
        }
    }
    Ok(())
}

/// Persons re-materialised one query each below this many; above it, one ordered pass over
/// every link with the persons chosen on worker threads.
const PERSONS_FOR_A_FULL_PASS: usize = 2048;

/// Writes the persons in `affected` (removing those with no record left). Returns the
/// persons (written, removed).
pub(super) fn materialize_persons(
    tx: &Connection,
    affected: &BTreeSet<i64>,
    first_new_id: i64,
    policy: &Policy,
    now: &str,
) -> Result<(usize, usize)> {
    let full_pass = affected.len() >= PERSONS_FOR_A_FULL_PASS;
    materialize_persons_by(tx, affected, first_new_id, policy, now, full_pass)
}

fn materialize_persons_by(
    tx: &Connection,
    affected: &BTreeSet<i64>,
    first_new_id: i64,
    policy: &Policy,
    now: &str,
    full_pass: bool,
) -> Result<(usize, usize)> {
    let mut counts = (0, 0);
    let mut write = |person_id: i64, rows: Option<&PersonRows>| -> Result<()> {
        match write_rows(tx, person_id, rows, person_id >= first_new_id, now)? {
            Materialized::Written => counts.0 += 1,
            Materialized::Unchanged => {}
            Materialized::Removed => counts.1 += 1,
        }
        Ok(())
    };
    if !full_pass {
        for &person_id in affected {
            let observations = load_observations(tx, person_id)?;
            let overrides = load_overrides(tx, person_id)?;
            write(
                person_id,
                choose_rows(&observations, &overrides, policy).as_ref(),
            )?;
        }
        return Ok(counts);
    }
    // Overrides are few: one scan serves every person.
    let overrides = load_all_overrides(tx)?;
    let no_overrides = BTreeMap::new();
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    for_each_person(
        tx,
        Read::CanonicalOnly,
        Some(affected),
        |person_id, links| {
            let observations: Vec<_> = links
                .into_iter()
                .filter_map(|l| l.into_observation())
                .collect();
            let own = overrides.get(&person_id).unwrap_or(&no_overrides);
            choose_rows(&observations, own, policy)
        },
        |person_id, rows| {
            seen.insert(person_id);
            write(person_id, rows.as_ref())
        },
    )?;
    // Persons with no link left were not visited: they are removed.
    for &person_id in affected.difference(&seen) {
        write(person_id, None)?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store after materialising, as text: every person, role and provenance row.
    fn person_tables(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        for table in [
            "person",
            "service_user",
            "staff_user",
            "health_profile",
            "lifestyle",
            "person_provenance",
        ] {
            let sql = format!("SELECT * FROM {table} ORDER BY person_id");
            for row in crate::person::rows_as_text(conn, &sql) {
                out.push(format!("{table}: {row}"));
            }
        }
        out
    }

    /// One ordered pass on worker threads writes exactly what materialising each person by
    /// its own queries writes: new persons, a changed one, an unchanged one, a removed one.
    #[test]
    fn a_full_pass_materialises_as_person_by_person_does() {
        let run = |full_pass: bool| {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
            let tx = conn.transaction().unwrap();
            let record = |source: &str, id: &str, kind: &str, person: i64, values: &str| {
                tx.execute(
                    "INSERT INTO canonical_record (source, external_id, kind, content_hash, mapping_hash, values_json, mapped_at)
                     VALUES (?1, ?2, ?3, 'h', 'm', ?4, '2026-01-01T00:00:00Z')",
                    params![source, id, kind, values],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO person_link (source, external_id, kind, person_id, rule, linked_at)
                     VALUES (?1, ?2, ?3, ?4, 'anchor', '2026-01-01T00:00:00Z')",
                    params![source, id, kind, person],
                )
                .unwrap();
            };
            for p in 1..=40i64 {
                record(
                    "homes",
                    &format!("h{p}"),
                    "carehq_service_users",
                    p,
                    &format!(
                        r#"{{"given_name":"Ann{p}","family_name":"Lee","birth_date":"1950-02-03","nhs_number":"9434765919"}}"#
                    ),
                );
                if p % 3 == 0 {
                    record(
                        "market",
                        &format!("m{p}"),
                        "marketplace_users",
                        p,
                        &format!(
                            r#"{{"given_name":"Anne{p}","email":"ann{p}@example.org","mobile":"+447700900{p:03}"}}"#
                        ),
                    );
                }
            }
            tx.execute(
                "INSERT INTO operator_override (person_id, field, value_json, reason, actor, created_at)
                 VALUES (6, 'mobile', '\"+447700900999\"', 'test', 'test', '2026-01-05T00:00:00Z')",
                [],
            )
            .unwrap();
            let policy = Policy::default();
            let everyone: BTreeSet<i64> = (1..=41).collect();
            let first =
                materialize_persons_by(&tx, &everyone, 1, &policy, "t1", full_pass).unwrap();
            assert_eq!(first, (40, 1), "40 written, person 41 has no record");
            // Person 3's market record changes, person 4's record goes; 5 is unchanged.
            tx.execute(
                r#"UPDATE canonical_record SET values_json = '{"given_name":"Anne3","email":"new3@example.org"}' WHERE external_id = 'm3'"#,
                [],
            )
            .unwrap();
            tx.execute("DELETE FROM person_link WHERE person_id = 4", [])
                .unwrap();
            let again: BTreeSet<i64> = [3, 4, 5].into();
            let second = materialize_persons_by(&tx, &again, 41, &policy, "t2", full_pass).unwrap();
            assert_eq!(second, (1, 1), "3 rewritten, 4 removed, 5 unchanged");
            let tables = person_tables(&tx);
            tx.commit().unwrap();
            tables
        };
        let by_person = run(false);
        assert!(
            by_person
                .iter()
                .any(|r| r.starts_with("person_provenance: Integer(6)") && r.contains("operator"))
        );
        assert_eq!(run(true), by_person);
    }

    #[test]
    fn overrides_follow_a_merge_to_the_surviving_person() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let add = |person: i64, field: &str, value: &str| {
            conn.execute(
                "INSERT INTO operator_override (person_id, field, value_json, reason, actor, created_at)
                 VALUES (?1, ?2, ?3, 'test', 'test', '2026-01-01T00:00:00Z')",
                params![person, field, format!("\"{value}\"")],
            )
            .unwrap();
        };
        add(7, "mobile", "+447700900001"); // the surviving person's, older
        add(9, "mobile", "+447700900002"); // the retired person's, newer: wins
        add(9, "title", "Dr");
        let link = |id: i64| (id, "single".to_string(), None);
        let a = RecordRef::new("homes", "a");
        let b = RecordRef::new("market", "b");
        let previous: HashMap<RecordRef, StoredLink> =
            [(a.clone(), link(7)), (b.clone(), link(9))].into();
        carry_overrides_of_merged_persons(&conn, &previous, &[vec![a, b]], &[PersonId(7)]).unwrap();
        let live: Vec<(i64, String, String)> = conn
            .prepare("SELECT person_id, field, value_json FROM operator_override WHERE superseded_at IS NULL ORDER BY field")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            live,
            vec![
                (7, "mobile".into(), "\"+447700900002\"".into()),
                (7, "title".into(), "\"Dr\"".into())
            ]
        );
        let audit: i64 = conn
            .query_row("SELECT count(*) FROM operator_override", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            audit, 3,
            "nothing is deleted: the older override is superseded, kept for audit"
        );
    }
}

//! Stable person ids across runs.

use std::collections::HashMap;

use super::RecordRef;

/// `person.person_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonId(pub i64);

/// Gives each cluster a person id, reusing the previous run's ids:
/// - a cluster keeps the id most of its previously assigned records had (ties: the smallest,
///   i.e. oldest, id);
/// - when an id's records are split, the part with more of them keeps it (ties: the part with
///   the smallest record); the other part takes another of its previous ids if it has one free,
///   or a fresh one;
/// - clusters with no previous id get fresh ids from `allocate`, in the order of their smallest
///   record.
///
/// The result is parallel to `clusters`. Ids of merged-away clusters are not reused.
pub fn assign_person_ids(
    previous: &HashMap<RecordRef, PersonId>,
    clusters: &[Vec<RecordRef>],
    mut allocate: impl FnMut() -> PersonId,
) -> Vec<PersonId> {
    let smallest: Vec<Option<&RecordRef>> = clusters.iter().map(|c| c.iter().min()).collect();
    // (count, id, cluster) for every previous id a cluster's records had.
    let mut claims: Vec<(usize, PersonId, usize)> = Vec::new();
    for (i, cluster) in clusters.iter().enumerate() {
        let mut counts: HashMap<PersonId, usize> = HashMap::new();
        for r in cluster {
            if let Some(id) = previous.get(r) {
                *counts.entry(*id).or_default() += 1;
            }
        }
        claims.extend(counts.into_iter().map(|(id, n)| (n, id, i)));
    }
    claims.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| smallest[a.2].cmp(&smallest[b.2]))
    });
    let mut assigned: Vec<Option<PersonId>> = vec![None; clusters.len()];
    let mut taken: std::collections::HashSet<PersonId> = std::collections::HashSet::new();
    for (_, id, i) in claims {
        if assigned[i].is_none() && !taken.contains(&id) {
            assigned[i] = Some(id);
            taken.insert(id);
        }
    }
    let mut fresh: Vec<usize> = (0..clusters.len())
        .filter(|i| assigned[*i].is_none())
        .collect();
    fresh.sort_by(|a, b| smallest[*a].cmp(&smallest[*b]));
    for i in fresh {
        assigned[i] = Some(allocate());
    }
    assigned
        .into_iter()
        .map(|id| id.unwrap_or(PersonId(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> RecordRef {
        RecordRef::new("s", name)
    }

    /// `previous`: (record, id); `clusters`: record names; `expected`: ids (fresh from 100).
    fn check(previous: &[(&str, i64)], clusters: &[&[&str]], expected: &[i64]) {
        let previous: HashMap<RecordRef, PersonId> = previous
            .iter()
            .map(|(n, id)| (r(n), PersonId(*id)))
            .collect();
        let clusters: Vec<Vec<RecordRef>> = clusters
            .iter()
            .map(|c| c.iter().map(|n| r(n)).collect())
            .collect();
        let mut next = 100;
        let got = assign_person_ids(&previous, &clusters, || {
            next += 1;
            PersonId(next - 1)
        });
        let want: Vec<PersonId> = expected.iter().map(|i| PersonId(*i)).collect();
        assert_eq!(got, want, "previous {previous:?} clusters {clusters:?}");
    }

    #[test]
    fn table() {
        // Unchanged clusters keep their ids.
        check(
            &[("a", 1), ("b", 1), ("c", 2)],
            &[&["a", "b"], &["c"]],
            &[1, 2],
        );
        // A new record joins an existing person.
        check(&[("a", 1)], &[&["a", "z"]], &[1]);
        // New clusters get fresh ids in record order.
        check(&[], &[&["y"], &["x"]], &[101, 100]);
        // A merge keeps the id most records had...
        check(&[("a", 7), ("b", 7), ("c", 3)], &[&["a", "b", "c"]], &[7]);
        // ... and on a tie the smallest (oldest) id.
        check(&[("a", 7), ("c", 3)], &[&["a", "c"]], &[3]);
        // A split keeps the id on the larger part; the smaller part gets a fresh id.
        check(
            &[("a", 5), ("b", 5), ("c", 5)],
            &[&["c"], &["a", "b"]],
            &[100, 5],
        );
        // An even split: the part with the smallest record keeps it.
        check(&[("a", 5), ("b", 5)], &[&["b"], &["a"]], &[100, 5]);
        // The smaller part of a split falls back to another of its previous ids.
        check(
            &[("a", 5), ("b", 5), ("c", 5), ("d", 9)],
            &[&["a", "b"], &["c", "d"]],
            &[5, 9],
        );
        // Removed records are simply absent; the id stays with what remains.
        check(&[("a", 4), ("b", 4)], &[&["b"]], &[4]);
    }
}

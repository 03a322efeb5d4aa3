//! Pairwise precision and recall against a ground truth (the simulator's).

use std::collections::HashMap;

use super::{Cluster, RecordRef};

/// How clusters compare with the truth, counting record pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Pairs of records of the same real person.
    pub true_pairs: u64,
    /// Pairs of records in the same cluster.
    pub predicted_pairs: u64,
    /// Pairs in the same cluster and of the same person.
    pub correct_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    /// Pairs in one cluster but of different people: the first 1,000 in record order.
    pub false_merges: Vec<(RecordRef, RecordRef)>,
    pub false_merge_count: u64,
    /// Pairs of one person in different clusters (at most 1,000 listed).
    pub missed: Vec<(RecordRef, RecordRef)>,
}

const LISTED: usize = 1000;

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Keeps the `LISTED` smallest pairs, sorted: the same list whatever order the clusters
/// came in.
fn keep_first_listed(pairs: &mut Vec<(RecordRef, RecordRef)>) {
    pairs.sort_unstable();
    pairs.dedup();
    pairs.truncate(LISTED);
}

/// Compares `clusters` with `truth` (record → person). Records absent from `truth` are ignored.
pub fn evaluate(clusters: &[Cluster], truth: &HashMap<RecordRef, u64>) -> Evaluation {
    let mut predicted = 0;
    let mut correct = 0;
    let mut false_merges = Vec::new();
    let mut false_merge_count = 0;
    let mut cluster_of: HashMap<&RecordRef, usize> = HashMap::new();
    for (ci, c) in clusters.iter().enumerate() {
        let known: Vec<(&RecordRef, u64)> = c
            .records()
            .filter_map(|r| truth.get(r).map(|p| (r, *p)))
            .collect();
        predicted += pairs(known.len() as u64);
        let mut per_person: HashMap<u64, u64> = HashMap::new();
        for (r, p) in &known {
            *per_person.entry(*p).or_default() += 1;
            cluster_of.insert(r, ci);
        }
        correct += per_person.values().map(|n| pairs(*n)).sum::<u64>();
        for (i, (a, pa)) in known.iter().enumerate() {
            for (b, pb) in &known[i + 1..] {
                if pa != pb {
                    false_merge_count += 1;
                    let pair = if a <= b { (*a, *b) } else { (*b, *a) };
                    false_merges.push((pair.0.clone(), pair.1.clone()));
                    if false_merges.len() >= 2 * LISTED {
                        keep_first_listed(&mut false_merges);
                    }
                }
            }
        }
    }
    keep_first_listed(&mut false_merges);
    let mut by_person: HashMap<u64, Vec<&RecordRef>> = HashMap::new();
    for (r, p) in truth {
        if cluster_of.contains_key(r) {
            by_person.entry(*p).or_default().push(r);
        }
    }
    let true_pairs = by_person.values().map(|v| pairs(v.len() as u64)).sum();
    let mut missed = Vec::new();
    let mut people: Vec<_> = by_person.into_iter().collect();
    people.sort_by_key(|(p, _)| *p);
    'outer: for (_, mut records) in people {
        records.sort();
        for (i, a) in records.iter().enumerate() {
            for b in &records[i + 1..] {
                if cluster_of.get(a) != cluster_of.get(b) {
                    if missed.len() >= LISTED {
                        break 'outer;
                    }
                    missed.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            1.0
        } else {
            num as f64 / den as f64
        }
    };
    Evaluation {
        true_pairs,
        predicted_pairs: predicted,
        correct_pairs: correct,
        precision: ratio(correct, predicted),
        recall: ratio(correct, true_pairs),
        false_merges,
        false_merge_count,
        missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Member;
    use crate::source::kind::SourceKind;

    fn cluster(ids: &[&str]) -> Cluster {
        Cluster {
            members: ids
                .iter()
                .map(|id| Member {
                    record: RecordRef::new("s", *id),
                    kind: SourceKind::MarketplaceUsers,
                    link: None,
                })
                .collect(),
            runners_up: Vec::new(),
        }
    }

    /// The false merges listed are the same whatever order the clusters and their members
    /// come in.
    #[test]
    fn false_merges_are_listed_in_record_order() {
        let truth: HashMap<RecordRef, u64> = [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 4)]
            .into_iter()
            .map(|(id, p)| (RecordRef::new("s", id), p))
            .collect();
        let one = evaluate(&[cluster(&["d", "e"]), cluster(&["c", "b", "a"])], &truth);
        let other = evaluate(&[cluster(&["a", "b", "c"]), cluster(&["e", "d"])], &truth);
        assert_eq!(one, other);
        let listed: Vec<(&str, &str)> = one
            .false_merges
            .iter()
            .map(|(x, y)| (x.external_id.as_str(), y.external_id.as_str()))
            .collect();
        assert_eq!(listed, [("a", "b"), ("b", "c"), ("d", "e")]);
        assert_eq!(one.false_merge_count, 3);
    }
}

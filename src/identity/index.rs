//! The linking index: records' features, blocks, the kept comparisons, and the clusters.
//! [`LinkIndex::build`] links everything in memory (the reference a full link on the store is
//! tested against); [`LinkIndex::build_part`] links a part of the store closed under its kept
//! pairs (a part of `person::full_link`, a neighbourhood `person::link_state` re-links);
//! [`score_block`] scores one block of the store for a full link that holds no index.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

use xxhash_rust::xxh3::xxh3_64;

use super::compare::{GivenLevel, compare, contact_conflict, given_level};
use super::features::{BlockKey, Blocking, Features, block_keys};
use super::{
    Candidate, Cluster, InputRecord, Link, MatchConfig, Member, NotLinked, RecordRef, Resolution,
    Rule, Veto,
};
use crate::source::kind::SourceKind;

/// Block-key hashes (xxh3, already evenly spread), hashed as themselves rather than again
/// with SipHash: a block's pairs look their keys up in the oversized set once each.
pub type KeySet = HashSet<u64, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Counts describing a link run (no personal data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub records: usize,
    pub clusters: usize,
    pub blocks: usize,
    /// Blocks skipped for needing more than `max_block_pairs` comparisons.
    pub oversized_blocks: usize,
    /// Pairs compared by the last build or update.
    pub compared_pairs: u64,
    /// Comparisons kept (links, runners-up, review and conflicts).
    pub kept_pairs: usize,
}

/// A kept comparison, stored on both records.
#[derive(Debug, Clone, Copy)]
struct Edge {
    other: u32,
    score: f64,
    rule: Option<Rule>,
    veto: Option<Veto>,
    strong: bool,
    shares_identifier: bool,
    personal_contact_differs: bool,
}

/// A record's linking state in the index (what it was prepared with stays in its `Prepared`).
struct Linking {
    /// Hash of the reference: orders ties independently of input order.
    order: u64,
    edges: Vec<Edge>,
    /// The anchor slot of the record's cluster.
    cluster: u32,
    /// How the record joined its cluster (rule, score, via slot).
    link: Option<(Rule, f64, u32)>,
    /// Eligible links refused at cluster level.
    refused: Vec<(u32, NotLinked)>,
}

/// One record of the index as read: its prepared features and its linking state.
#[derive(Clone, Copy)]
struct Slot<'a> {
    record: &'a RecordRef,
    kind: SourceKind,
    features: &'a Features,
    keys: &'a [BlockKey],
    order: u64,
    edges: &'a [Edge],
    cluster: u32,
    link: Option<(Rule, f64, u32)>,
    refused: &'a [(u32, NotLinked)],
}

/// Records linked from scratch ([`LinkIndex::build`] and its kin), with every kept
/// comparison and the clusters.
pub struct LinkIndex {
    config: MatchConfig,
    /// The records in record order; a record's slot is its position here and in `linking`.
    /// They stay where they were prepared: a full link holds them once, not a prepared copy
    /// and an index copy.
    prepared: Vec<Prepared>,
    linking: Vec<Linking>,
    blocks: Blocks,
    oversized: KeySet,
    compared_pairs: u64,
}

/// A record ready for the index: its identifying features and blocking keys, without the
/// rest of its values (what the index keeps of it).
pub struct Prepared {
    record: RecordRef,
    kind: SourceKind,
    features: Features,
    keys: Vec<BlockKey>,
}

/// A blocking key as the store keeps it: its hash, and whether its block compares only
/// pairs with a side lacking a birth date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOf {
    pub hash: u64,
    pub filtered: bool,
}

impl KeyOf {
    fn of(key: &BlockKey) -> KeyOf {
        KeyOf {
            hash: key.hash,
            filtered: key.kind.needs_missing_birth_date(),
        }
    }
}

/// The global size of a block, from which it is judged oversized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockSize {
    pub members: u64,
    pub lacking_birth_date: u64,
    pub filtered: bool,
}

impl BlockSize {
    pub fn oversized(&self, config: &MatchConfig) -> bool {
        block_pairs(self.filtered, self.members, self.lacking_birth_date) > config.max_block_pairs
    }
}

impl Prepared {
    pub fn record(&self) -> &RecordRef {
        &self.record
    }

    pub fn lacks_birth_date(&self) -> bool {
        self.features.birth_date.is_none()
    }

    pub fn keys(&self) -> impl Iterator<Item = KeyOf> + '_ {
        self.keys.iter().map(KeyOf::of)
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Its features and keys as a full link stores them (`link_record.features`).
    pub fn encode(&self) -> Vec<u8> {
        self.features.encode(&self.keys)
    }

    /// A record prepared from its stored features; `None` if they cannot be read.
    pub fn decode(record: RecordRef, kind: SourceKind, stored: &[u8]) -> Option<Prepared> {
        let (features, keys) = Features::decode(stored)?;
        Some(Prepared {
            record,
            kind,
            features,
            keys,
        })
    }

    /// `blocking`: [`MatchConfig::blocking`], read once for many records.
    pub(crate) fn new(record: &InputRecord, blocking: Blocking) -> Prepared {
        let features = Features::from_values(&record.values);
        let keys = block_keys(&features, blocking);
        Prepared {
            record: record.record.clone(),
            kind: record.kind,
            features,
            keys,
        }
    }
}

/// Prepares `items` on every core; `read` turns an item into a record (or skips it).
pub fn prepare_all<T: Sync>(
    config: &MatchConfig,
    items: &[T],
    read: impl Fn(&T) -> Option<InputRecord> + Sync,
) -> Vec<Prepared> {
    let blocking = config.blocking();
    parallel_map(items, |item| {
        read(item).map(|r| Prepared::new(&r, blocking))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Links `records` from scratch.
pub fn resolve(config: &MatchConfig, records: Vec<InputRecord>) -> Resolution {
    LinkIndex::build(config.clone(), records).into_resolution()
}

fn order_of(record: &RecordRef) -> u64 {
    let mut buf = Vec::with_capacity(record.source.len() + record.external_id.len() + 1);
    buf.extend_from_slice(record.source.as_bytes());
    buf.push(0x1f);
    buf.extend_from_slice(record.external_id.as_bytes());
    xxh3_64(&buf)
}

/// Comparisons a block of `n` records needs, `probes` of them without a birth date.
fn block_pairs(kind_needs_missing_dob: bool, n: u64, probes: u64) -> u64 {
    if kind_needs_missing_dob {
        probes * n.saturating_sub(1)
    } else {
        n * n.saturating_sub(1) / 2
    }
}

impl LinkIndex {
    /// Links every record. Duplicated references: the last one wins.
    pub fn build(config: MatchConfig, records: Vec<InputRecord>) -> LinkIndex {
        let blocking = config.blocking();
        let prepared = parallel_map(&records, |r| Prepared::new(r, blocking));
        drop(records);
        Self::build_inner(config, prepared, None)
    }

    /// Links a part of the store closed under its kept pairs (see `person::link_state`):
    /// `oversized` holds the blocks too large to compare, judged by their size in the whole
    /// store, so the part links exactly as it would within the whole.
    pub fn build_part(config: MatchConfig, records: Vec<Prepared>, oversized: KeySet) -> LinkIndex {
        Self::build_inner(config, records, Some(oversized))
    }

    /// Links records prepared by the caller, the blocks' oversize judged among them.
    #[cfg(test)]
    pub(crate) fn build_prepared(config: MatchConfig, records: Vec<Prepared>) -> LinkIndex {
        Self::build_inner(config, records, None)
    }

    fn build_inner(
        config: MatchConfig,
        records: Vec<Prepared>,
        oversized: Option<KeySet>,
    ) -> LinkIndex {
        // In record order; of a record given twice, the last.
        let mut records: Vec<Prepared> = records;
        records.reverse();
        records.sort_by(|a, b| a.record.cmp(&b.record));
        records.dedup_by(|later, earlier| later.record == earlier.record);
        let linking = (0..records.len() as u32)
            .zip(&records)
            .map(|(id, p)| Linking {
                order: order_of(&p.record),
                edges: Vec::new(),
                cluster: id,
                link: None,
                refused: Vec::new(),
            })
            .collect();
        let mut index = LinkIndex {
            config,
            blocks: Blocks::build(&records),
            prepared: records,
            linking,
            oversized: KeySet::default(),
            compared_pairs: 0,
        };
        match oversized {
            Some(given) => index.oversized = given,
            None => {
                let oversized: KeySet = index
                    .blocks
                    .iter()
                    .filter(|(key, members)| {
                        index.block_size(*key, members).oversized(&index.config)
                    })
                    .map(|(key, _)| key.hash)
                    .collect();
                index.oversized = oversized;
            }
        }
        index.score_all_blocks();
        let all: Vec<u32> = index.slot_ids().collect();
        index.recluster(&all);
        index
    }

    fn slot_ids(&self) -> std::ops::Range<u32> {
        0..self.prepared.len() as u32
    }

    fn slot(&self, id: u32) -> Option<Slot<'_>> {
        let (p, l) = (
            self.prepared.get(id as usize)?,
            self.linking.get(id as usize)?,
        );
        Some(Slot {
            record: &p.record,
            kind: p.kind,
            features: &p.features,
            keys: &p.keys,
            order: l.order,
            edges: &l.edges,
            cluster: l.cluster,
            link: l.link,
            refused: &l.refused,
        })
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Linking> {
        self.linking.get_mut(id as usize)
    }

    fn block_size(&self, key: BlockKey, members: &[u32]) -> BlockSize {
        BlockSize {
            members: members.len() as u64,
            lacking_birth_date: members
                .iter()
                .filter(|m| {
                    self.slot(**m)
                        .is_some_and(|s| s.features.birth_date.is_none())
                })
                .count() as u64,
            filtered: key.kind.needs_missing_birth_date(),
        }
    }

    /// Compares `a` and `b` if `key` is the key they are compared under.
    fn compare_under(&self, key: u64, a: u32, b: u32) -> Option<Option<Edge>> {
        let (sa, sb) = (self.slot(a)?, self.slot(b)?);
        compare_under(
            &self.config,
            &self.oversized,
            key,
            (sa.features, sa.keys),
            (sb.features, sb.keys),
            b,
        )
    }

    /// The pairs of one block to compare: all pairs, or pairs with a side lacking a birth date.
    fn block_pairs_of(&self, key: BlockKey, members: &[u32], visit: impl FnMut(u32, u32)) {
        let lacks = |m: u32| {
            self.slot(m)
                .is_some_and(|s| s.features.birth_date.is_none())
        };
        visit_block_pairs(key.kind.needs_missing_birth_date(), members, lacks, visit);
    }

    fn score_all_blocks(&mut self) {
        let work: Vec<(BlockKey, &[u32])> = self
            .blocks
            .iter()
            .filter(|(key, members)| members.len() > 1 && !self.oversized.contains(&key.hash))
            .collect();
        let this = &*self;
        let results = parallel_map(&work, |(key, members)| {
            let mut edges = Vec::new();
            let mut compared = 0u64;
            this.block_pairs_of(*key, members, |a, b| {
                if let Some(edge) = this.compare_under(key.hash, a, b) {
                    compared += 1;
                    if let Some(e) = edge {
                        edges.push((a, e));
                    }
                }
            });
            (edges, compared)
        });
        let mut compared = 0;
        let mut all_edges = Vec::new();
        for (edges, n) in results {
            compared += n;
            all_edges.extend(edges);
        }
        self.compared_pairs = compared;
        for (a, e) in all_edges {
            self.add_edge(a, e);
        }
    }

    fn add_edge(&mut self, a: u32, e: Edge) {
        let b = e.other;
        if let Some(s) = self.slot_mut(a) {
            s.edges.push(e);
        }
        if let Some(s) = self.slot_mut(b) {
            s.edges.push(Edge { other: a, ..e });
        }
    }

    fn eligible(&self, e: &Edge) -> bool {
        eligible(&self.config, e)
    }

    /// A rival candidate for a unique-candidate link (and an edge of the link graph).
    fn context(&self, e: &Edge) -> bool {
        context(&self.config, e)
    }

    /// A pair that may link only as each other's unique candidate. Its evidence is names with
    /// an age or a postcode, so a personal email or mobile that disagrees rules it out: that
    /// is the only direct evidence about the two people, and it says they differ.
    fn weak(&self, e: &Edge) -> bool {
        e.veto.is_none()
            && !self.eligible(e)
            && !e.personal_contact_differs
            && e.score >= self.config.unique_link_threshold
    }

    /// How strongly an edge's evidence ties the two records, to choose between two candidates
    /// of one record that cannot both be right: an NHS number, another shared identifier
    /// (NI number, email, mobile), or names with a birth date, age or postcode.
    fn evidence_rank(e: &Edge) -> u8 {
        if e.rule == Some(Rule::NhsNumber) {
            3
        } else if e.shares_identifier {
            2
        } else {
            1
        }
    }

    /// Edges made ambiguous by their record's other candidates: when a record could link to
    /// two records that are vetoed from each other (different NHS numbers, birth dates,
    /// given names, or contact details), picking one by order or score would be a guess
    /// between two people — a false merge half the time. Both links are refused, unless one
    /// rests on stronger evidence (an NHS number over another identifier over names and
    /// dates), which is then kept. Depends only on the record's edges and the two candidates'
    /// values, so it is the same in a full and an incremental run.
    fn ambiguous_edges(&self, live: &[u32], local: &Positions) -> HashSet<(u32, u32)> {
        let mut out = HashSet::new();
        for &x in live {
            let Some(sx) = self.slot(x) else { continue };
            let candidates: Vec<&Edge> = sx
                .edges
                .iter()
                .filter(|e| local.contains(e.other) && (self.eligible(e) || self.weak(e)))
                .collect();
            for (i, ey) in candidates.iter().enumerate() {
                for ez in &candidates[i + 1..] {
                    let (Some(fy), Some(fz)) = (self.slot(ey.other), self.slot(ez.other)) else {
                        continue;
                    };
                    if compare(&self.config, fy.features, fz.features)
                        .veto
                        .is_none()
                    {
                        continue;
                    }
                    let (ry, rz) = (Self::evidence_rank(ey), Self::evidence_rank(ez));
                    if ry <= rz {
                        out.insert((x.min(ey.other), x.max(ey.other)));
                    }
                    if rz <= ry {
                        out.insert((x.min(ez.other), x.max(ez.other)));
                    }
                }
            }
        }
        out
    }

    fn tie_key(&self, id: u32) -> (u64, Option<&RecordRef>) {
        self.slot(id)
            .map_or((u64::MAX, None), |s| (s.order, Some(s.record)))
    }

    /// Greedy clustering of `members`, a union of whole components.
    fn recluster(&mut self, members: &[u32]) {
        let live: Vec<u32> = members
            .iter()
            .copied()
            .filter(|m| self.slot(*m).is_some())
            .collect();
        let local = Positions::new(self.prepared.len(), &live);
        let mut edges: Vec<(u32, Edge)> = Vec::new();
        let mut weak: Vec<(u32, Edge)> = Vec::new();
        for &a in &live {
            if let Some(s) = self.slot(a) {
                for e in s.edges {
                    if a < e.other && local.contains(e.other) {
                        if self.eligible(e) {
                            edges.push((a, *e));
                        } else if self.weak(e) {
                            weak.push((a, *e));
                        }
                    }
                }
            }
        }
        let priority = |r: Option<Rule>| r.unwrap_or(Rule::Probabilistic);
        let by_strength = |(a1, e1): &(u32, Edge), (a2, e2): &(u32, Edge)| {
            let pair = |a: u32, b: u32| {
                let (x, y) = (self.tie_key(a), self.tie_key(b));
                if x <= y { (x, y) } else { (y, x) }
            };
            priority(e1.rule)
                .cmp(&priority(e2.rule))
                .then(e2.score.total_cmp(&e1.score))
                .then_with(|| pair(*a1, e1.other).cmp(&pair(*a2, e2.other)))
        };
        edges.sort_by(by_strength);
        weak.sort_by(by_strength);
        let ambiguous = self.ambiguous_edges(&live, &local);
        let is_ambiguous = |a: u32, b: u32| ambiguous.contains(&(a.min(b), a.max(b)));

        let mut uf = UnionFind::new(live.len());
        let mut summary = Summaries::new(self, &live);
        let mut accepted: Vec<Vec<(u32, Rule, f64)>> = vec![Vec::new(); live.len()];
        let mut refused: Vec<(u32, u32, NotLinked)> = Vec::new();
        for (a, e) in &edges {
            let (Some(la), Some(lb)) = (local.get(*a), local.get(e.other)) else {
                continue;
            };
            let (ra, rb) = (uf.find(la), uf.find(lb));
            if ra == rb {
                continue;
            }
            if is_ambiguous(*a, e.other) {
                refused.push((*a, e.other, NotLinked::Ambiguous));
                continue;
            }
            let (sa, sb) = summary.pair(ra, rb);
            if let Some(reason) = self.cluster_conflict(sa, sb) {
                refused.push((*a, e.other, reason));
                continue;
            }
            let root = uf.union(ra, rb);
            summary.merge(root, if root == ra { rb } else { ra });
            let rule = e.rule.unwrap_or(Rule::Probabilistic);
            accepted[la].push((e.other, rule, e.score));
            accepted[lb].push((*a, rule, e.score));
        }

        // Unique candidates: between clusters formed so far, each the other's only rival.
        let roots: Vec<usize> = (0..live.len()).map(|i| uf.find(i)).collect();
        let mut rivals: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for (la, &a) in live.iter().enumerate() {
            for e in self.slot(a).map_or(&[][..], |s| s.edges) {
                if let Some(lb) = local.get(e.other)
                    && self.context(e)
                    && roots[la] != roots[lb]
                {
                    rivals.entry(roots[la]).or_default().insert(roots[lb]);
                }
            }
        }
        let only = |x: usize, y: usize| {
            rivals
                .get(&x)
                .is_some_and(|r| r.len() == 1 && r.contains(&y))
        };
        for (a, e) in &weak {
            let (Some(la), Some(lb)) = (local.get(*a), local.get(e.other)) else {
                continue;
            };
            let (pa, pb) = (roots[la], roots[lb]);
            if pa == pb {
                continue;
            }
            if is_ambiguous(*a, e.other) || !(only(pa, pb) && only(pb, pa)) {
                refused.push((*a, e.other, NotLinked::Ambiguous));
                continue;
            }
            let (ra, rb) = (uf.find(la), uf.find(lb));
            if ra == rb {
                continue;
            }
            // A source rarely holds one person twice: on weak evidence, a second record of
            // the same source is more likely a namesake.
            let (sa, sb) = summary.pair(ra, rb);
            if self.share_source(sa, sb) {
                refused.push((*a, e.other, NotLinked::Ambiguous));
                continue;
            }
            if let Some(reason) = self.cluster_conflict(sa, sb) {
                refused.push((*a, e.other, reason));
                continue;
            }
            let root = uf.union(ra, rb);
            summary.merge(root, if root == ra { rb } else { ra });
            accepted[la].push((e.other, Rule::UniqueCandidate, e.score));
            accepted[lb].push((*a, Rule::UniqueCandidate, e.score));
        }

        // Anchor = smallest record; each other record links through its tree parent.
        let mut by_root: Vec<(usize, u32)> = live
            .iter()
            .enumerate()
            .map(|(i, m)| (uf.find(i), *m))
            .collect();
        by_root.sort_unstable();
        for &m in &live {
            if let Some(s) = self.slot_mut(m) {
                s.refused.clear();
            }
        }
        for (a, b, reason) in refused {
            if let Some(s) = self.slot_mut(a) {
                s.refused.push((b, reason));
            }
            if let Some(s) = self.slot_mut(b) {
                s.refused.push((a, reason));
            }
        }
        for group in by_root.chunk_by(|x, y| x.0 == y.0) {
            if let [(_, only)] = group {
                if let Some(s) = self.slot_mut(*only) {
                    s.cluster = *only;
                    s.link = None;
                }
                continue;
            }
            let group: Vec<u32> = group.iter().map(|(_, m)| *m).collect();
            let Some(anchor) = group
                .iter()
                .copied()
                .min_by(|x, y| self.record_of(*x).cmp(&self.record_of(*y)))
            else {
                continue;
            };
            let mut links: HashMap<u32, Option<(Rule, f64, u32)>> = HashMap::new();
            links.insert(anchor, None);
            let mut queue = std::collections::VecDeque::from([anchor]);
            while let Some(x) = queue.pop_front() {
                let Some(lx) = local.get(x) else { continue };
                for &(y, rule, score) in &accepted[lx] {
                    if let std::collections::hash_map::Entry::Vacant(v) = links.entry(y) {
                        v.insert(Some((rule, score, x)));
                        queue.push_back(y);
                    }
                }
            }
            for m in group {
                let link = links.get(&m).copied().flatten();
                if let Some(s) = self.slot_mut(m) {
                    s.cluster = anchor;
                    s.link = link;
                }
            }
        }
    }

    fn record_of(&self, id: u32) -> Option<&RecordRef> {
        self.slot(id).map(|s| s.record)
    }

    fn share_source(&self, a: &ClusterSummary, b: &ClusterSummary) -> bool {
        let source = |id: &u32| self.slot(*id).map(|s| &s.record.source);
        a.members
            .iter()
            .any(|x| b.members.iter().any(|y| source(x) == source(y)))
    }

    /// A veto between any two records of two clusters, or a size limit.
    fn cluster_conflict(&self, a: &ClusterSummary, b: &ClusterSummary) -> Option<NotLinked> {
        fn differ<T: PartialEq>(x: &Option<T>, y: &Option<T>) -> bool {
            matches!((x, y), (Some(p), Some(q)) if p != q)
        }
        if a.conflicted_nhs || b.conflicted_nhs || differ(&a.nhs, &b.nhs) {
            return Some(NotLinked::ClusterConflict(Veto::NhsNumber));
        }
        if differ(&a.birth_date, &b.birth_date) {
            return Some(NotLinked::ClusterConflict(Veto::BirthDate));
        }
        if differ(&a.gender, &b.gender) {
            return Some(NotLinked::ClusterConflict(Veto::Gender));
        }
        if a.members.len() + b.members.len() > self.config.max_cluster_size {
            return Some(NotLinked::ClusterTooLarge);
        }
        for x in &a.members {
            for y in &b.members {
                let (Some(sx), Some(sy)) = (self.slot(*x), self.slot(*y)) else {
                    continue;
                };
                if given_level(sx.features, sy.features) == Some(GivenLevel::Differ) {
                    return Some(NotLinked::ClusterConflict(Veto::GivenName));
                }
                if contact_conflict(&self.config, sx.features, sy.features) {
                    return Some(NotLinked::ClusterConflict(Veto::ContactDetails));
                }
            }
        }
        None
    }

    /// Why a kept, unlinked pair is not linked.
    fn reason(&self, a: u32, e: &Edge) -> NotLinked {
        if let Some(r) = self
            .slot(a)
            .and_then(|s| s.refused.iter().find(|(o, _)| *o == e.other))
        {
            return r.1;
        }
        match e.veto {
            Some(v) => NotLinked::Veto(v),
            None if e.score >= self.config.link_threshold && !e.strong => {
                NotLinked::NoPersonalIdentifier
            }
            None => NotLinked::BelowThreshold,
        }
    }

    fn candidate(&self, a: u32, e: &Edge) -> Option<Candidate> {
        Some(Candidate {
            record: self.record_of(a)?.clone(),
            other: self.record_of(e.other)?.clone(),
            score: e.score,
            reason: self.reason(a, e),
        })
    }

    fn cluster_view(&self, mut ids: Vec<u32>) -> Cluster {
        ids.sort_by(|x, y| self.record_of(*x).cmp(&self.record_of(*y)));
        // Sized exactly: a full link holds one per person, most of them of one record.
        let mut members: Vec<Member> = Vec::with_capacity(ids.len());
        members.extend(ids.iter().filter_map(|id| {
            let s = self.slot(*id)?;
            Some(Member {
                record: s.record.clone(),
                kind: s.kind,
                link: s.link.and_then(|(rule, score, via)| {
                    Some(Link {
                        rule,
                        score,
                        via: self.record_of(via)?.clone(),
                    })
                }),
            })
        }));
        // The best few of the edges leaving the cluster, chosen before any is copied out: a
        // cluster in a large part of namesakes may have hundreds.
        let mut outside: Vec<(u32, &Edge, (&RecordRef, &RecordRef))> = Vec::new();
        for id in &ids {
            let Some(s) = self.slot(*id) else { continue };
            for e in s.edges {
                if let Some(o) = self.slot(e.other)
                    && o.cluster != s.cluster
                {
                    outside.push((*id, e, (s.record, o.record)));
                }
            }
        }
        outside.sort_by(|(_, x, x_pair), (_, y, y_pair)| {
            y.score.total_cmp(&x.score).then_with(|| x_pair.cmp(y_pair))
        });
        outside.truncate(self.config.runner_up_limit);
        let runners_up: Vec<Candidate> = outside
            .into_iter()
            .filter_map(|(id, e, _)| self.candidate(id, e))
            .collect();
        Cluster {
            members,
            runners_up,
        }
    }

    /// Unlinked pairs across clusters worth a look, filtered by `keep(a, b)`.
    fn review_pairs(&self, keep: impl Fn(u32, u32) -> bool) -> Vec<Candidate> {
        let mut out = Vec::new();
        for a in self.slot_ids() {
            let Some(s) = self.slot(a) else { continue };
            for e in s.edges {
                let Some(o) = self.slot(e.other) else {
                    continue;
                };
                if o.cluster == s.cluster || !keep(a, e.other) {
                    continue;
                }
                // Each pair once, from its smaller record.
                if s.record > o.record {
                    continue;
                }
                let reason = self.reason(a, e);
                let listed = match reason {
                    NotLinked::ClusterConflict(_)
                    | NotLinked::ClusterTooLarge
                    | NotLinked::Ambiguous => true,
                    // Names and birth date agree, contact details do not: worth a look.
                    NotLinked::Veto(Veto::ContactDetails) => {
                        e.shares_identifier || e.score >= self.config.review_threshold
                    }
                    NotLinked::Veto(_) => e.shares_identifier,
                    _ => e.score >= self.config.review_threshold,
                };
                if listed && let Some(c) = self.candidate(a, e) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| (&a.record, &a.other).cmp(&(&b.record, &b.other)))
        });
        out
    }

    /// The whole current result.
    pub fn resolution(&self) -> Resolution {
        self.resolution_with(self.stats(0))
    }

    /// The whole result, when nothing more is asked of the index: its features, keys and
    /// blocks are let go first, so that a full link does not hold them and the result at once.
    pub fn into_resolution(mut self) -> Resolution {
        let stats = self.stats(0);
        self.blocks = Blocks::default();
        for p in &mut self.prepared {
            p.features = Features::default();
            p.keys = Vec::new();
        }
        self.resolution_with(stats)
    }

    fn resolution_with(&self, stats: LinkStats) -> Resolution {
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for (id, l) in self.slot_ids().zip(&self.linking) {
            groups.entry(l.cluster).or_default().push(id);
        }
        let mut clusters: Vec<Cluster> = groups
            .into_values()
            .map(|ids| self.cluster_view(ids))
            .collect();
        clusters.sort_by(|a, b| a.members[0].record.cmp(&b.members[0].record));
        let review = self.review_pairs(|_, _| true);
        Resolution {
            stats: LinkStats {
                clusters: clusters.len(),
                ..stats
            },
            clusters,
            review,
        }
    }

    fn stats(&self, clusters: usize) -> LinkStats {
        LinkStats {
            records: self.prepared.len(),
            clusters,
            blocks: self.blocks.keys.len(),
            oversized_blocks: self.oversized.len(),
            compared_pairs: self.compared_pairs,
            kept_pairs: self.linking.iter().map(|l| l.edges.len()).sum::<usize>() / 2,
        }
    }

    /// Every record with its slot number, in record order.
    pub fn records(&self) -> impl Iterator<Item = (u32, &RecordRef)> + '_ {
        self.slot_ids().zip(self.prepared.iter().map(|p| &p.record))
    }

    /// Every kept pair, once, as slot numbers: `strong` when clustering reads it (it joins
    /// the two records' link-graph components).
    pub fn kept_pairs(&self, mut visit: impl FnMut(u32, u32, bool)) {
        for (a, l) in self.slot_ids().zip(&self.linking) {
            for e in l.edges.iter().filter(|e| e.other > a) {
                visit(a, e.other, clustering_reads(&self.config, e));
            }
        }
    }
}

fn eligible(config: &MatchConfig, e: &Edge) -> bool {
    e.veto.is_none() && (e.rule.is_some() || (e.strong && e.score >= config.link_threshold))
}

fn context(config: &MatchConfig, e: &Edge) -> bool {
    e.veto.is_none() && e.score >= config.review_threshold.min(config.unique_link_threshold)
}

/// Whether clustering reads a kept pair (it joins the two records' link-graph components).
fn clustering_reads(config: &MatchConfig, e: &Edge) -> bool {
    eligible(config, e) || context(config, e)
}

/// A record as pair scoring reads it: its features and its keys (sorted by hash).
type Scored<'a> = (&'a Features, &'a [BlockKey]);

/// The key a pair is compared under: the smallest shared key whose block is not oversized
/// and that admits the pair. Comparing each pair once, under this key, makes the set of
/// compared pairs independent of the order blocks are visited in.
fn first_admitting_key(a: Scored, b: Scored, oversized: &KeySet) -> Option<u64> {
    let ((fa, ka), (fb, kb)) = (a, b);
    let (mut i, mut j) = (0, 0);
    while i < ka.len() && j < kb.len() {
        match ka[i].hash.cmp(&kb[j].hash) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                let k = ka[i];
                let admits = !k.kind.needs_missing_birth_date()
                    || fa.birth_date.is_none()
                    || fb.birth_date.is_none();
                if admits && !oversized.contains(&k.hash) {
                    return Some(k.hash);
                }
                i += 1;
                j += 1;
            }
        }
    }
    None
}

/// Compares `a` and `b` if `key` is the key they are compared under (`None` if not); the
/// edge from `a` to `b` (numbered `other`) if the comparison is kept.
fn compare_under(
    config: &MatchConfig,
    oversized: &KeySet,
    key: u64,
    a: Scored,
    b: Scored,
    other: u32,
) -> Option<Option<Edge>> {
    if first_admitting_key(a, b, oversized) != Some(key) {
        return None;
    }
    let c = compare(config, a.0, b.0);
    let keep = c.rule.is_some()
        || (c.veto.is_none() && c.score >= config.candidate_keep_score())
        || (c.veto.is_some() && (c.shares_identifier || c.score >= config.review_threshold));
    Some(keep.then_some(Edge {
        other,
        score: c.score,
        rule: c.rule,
        veto: c.veto,
        strong: c.strong,
        shares_identifier: c.shares_identifier,
        personal_contact_differs: c.personal_contact_differs,
    }))
}

/// The pairs of one block to compare: all pairs, or (`filtered`) pairs with a side lacking
/// a birth date.
fn visit_block_pairs(
    filtered: bool,
    members: &[u32],
    lacks: impl Fn(u32) -> bool,
    mut visit: impl FnMut(u32, u32),
) {
    if filtered {
        for (i, &a) in members.iter().enumerate() {
            if !lacks(a) {
                continue;
            }
            for (j, &b) in members.iter().enumerate() {
                // A pair of two probes is visited once, from the first.
                if i != j && !(lacks(b) && j < i) {
                    visit(a, b);
                }
            }
        }
    } else {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                visit(a, b);
            }
        }
    }
}

/// A kept pair of a full link scored a block at a time without an index (see
/// `person::full_link`), in the caller's record numbers, `a < b`: `strong` when clustering
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeptPair {
    pub a: u32,
    pub b: u32,
    pub strong: bool,
}

/// Scores one block of the whole store: `members` are the block's records with the caller's
/// numbers, `oversized` the store's blocks too large to compare. Each pair is compared under
/// one key only (see [`first_admitting_key`]), so over all blocks each pair is scored once,
/// exactly as [`LinkIndex::build`] scores it. Pushes the kept pairs; returns the number compared.
pub fn score_block(
    config: &MatchConfig,
    oversized: &KeySet,
    key: KeyOf,
    members: &[(u32, &Prepared)],
    kept: &mut Vec<KeptPair>,
) -> u64 {
    let positions: Vec<u32> = (0..members.len() as u32).collect();
    let scored = |i: u32| -> Scored {
        let p = members[i as usize].1;
        (&p.features, &p.keys)
    };
    let lacks = |i: u32| members[i as usize].1.lacks_birth_date();
    let mut compared = 0;
    visit_block_pairs(key.filtered, &positions, lacks, |i, j| {
        let Some(edge) = compare_under(config, oversized, key.hash, scored(i), scored(j), j) else {
            return;
        };
        compared += 1;
        if let Some(e) = edge {
            let (a, b) = (members[i as usize].0, members[j as usize].0);
            kept.push(KeptPair {
                a: a.min(b),
                b: a.max(b),
                strong: clustering_reads(config, &e),
            });
        }
    });
    compared
}

/// Every block, in key order, in one flat list: block `i` is `keys[i]`, its members (in slot
/// order) `members[starts[i]..starts[i + 1]]`. Built once, by sorting, after the slots.
#[derive(Default)]
struct Blocks {
    keys: Vec<BlockKey>,
    starts: Vec<u32>,
    members: Vec<u32>,
}

impl Blocks {
    fn build(records: &[Prepared]) -> Blocks {
        let mut entries: Vec<(u64, u32)> =
            Vec::with_capacity(records.iter().map(|p| p.keys.len()).sum());
        for (id, p) in (0u32..).zip(records) {
            entries.extend(p.keys.iter().map(|k| (k.hash, id)));
        }
        entries.sort_unstable();
        let mut blocks = Blocks {
            members: Vec::with_capacity(entries.len()),
            ..Blocks::default()
        };
        for (hash, id) in entries {
            if blocks.keys.last().is_none_or(|k| k.hash != hash) {
                let key = records[id as usize].keys.iter().find(|k| k.hash == hash);
                if let Some(key) = key {
                    blocks.keys.push(*key);
                    blocks.starts.push(blocks.members.len() as u32);
                }
            }
            blocks.members.push(id);
        }
        blocks.starts.push(blocks.members.len() as u32);
        blocks
    }

    fn iter(&self) -> impl Iterator<Item = (BlockKey, &[u32])> + '_ {
        self.keys.iter().enumerate().map(|(i, key)| {
            let range = self.starts[i] as usize..self.starts[i + 1] as usize;
            (*key, &self.members[range])
        })
    }
}

/// What a cluster holds that a merge must not contradict.
struct ClusterSummary {
    members: Vec<u32>,
    nhs: Option<String>,
    /// Two different NHS numbers already (impossible through links; kept for safety).
    conflicted_nhs: bool,
    birth_date: Option<chrono::NaiveDate>,
    gender: Option<crate::model::Gender>,
}

impl ClusterSummary {
    fn of(id: u32, f: Option<&Features>) -> Self {
        ClusterSummary {
            members: vec![id],
            nhs: f.and_then(|f| f.nhs().map(str::to_owned)),
            conflicted_nhs: false,
            birth_date: f.and_then(|f| f.birth_date),
            gender: f.and_then(|f| f.gender),
        }
    }

    fn absorb(&mut self, other: ClusterSummary) {
        self.members.extend(other.members);
        if let (Some(a), Some(b)) = (&self.nhs, &other.nhs) {
            self.conflicted_nhs |= a != b;
        }
        self.nhs = self.nhs.take().or(other.nhs);
        self.conflicted_nhs |= other.conflicted_nhs;
        self.birth_date = self.birth_date.or(other.birth_date);
        self.gender = self.gender.or(other.gender);
    }
}

/// The summaries of the clusters being formed, by union-find root (a position in `live`):
/// made when a record first takes part in a union, as most records never do.
struct Summaries<'a> {
    index: &'a LinkIndex,
    live: &'a [u32],
    of: Vec<Option<ClusterSummary>>,
}

impl<'a> Summaries<'a> {
    fn new(index: &'a LinkIndex, live: &'a [u32]) -> Self {
        Summaries {
            index,
            live,
            of: (0..live.len()).map(|_| None).collect(),
        }
    }

    fn make(&mut self, at: usize) {
        if self.of[at].is_none() {
            let id = self.live[at];
            self.of[at] = Some(ClusterSummary::of(
                id,
                self.index.slot(id).map(|s| s.features),
            ));
        }
    }

    fn pair(&mut self, a: usize, b: usize) -> (&ClusterSummary, &ClusterSummary) {
        self.make(a);
        self.make(b);
        match (&self.of[a], &self.of[b]) {
            (Some(x), Some(y)) => (x, y),
            _ => unreachable!("both summaries were just made"),
        }
    }

    /// `other`'s cluster joined `root`'s (both summaries made by [`Summaries::pair`]).
    fn merge(&mut self, root: usize, other: usize) {
        if let Some(moved) = self.of[other].take()
            && let Some(kept) = self.of[root].as_mut()
        {
            kept.absorb(moved);
        }
    }
}

/// Each slot's position in a list of slots (slot ids are dense, so a vector, not a map).
struct Positions(Vec<u32>);

impl Positions {
    const NONE: u32 = u32::MAX;

    fn new(slots: usize, list: &[u32]) -> Positions {
        let mut at = vec![Self::NONE; slots];
        for (i, slot) in list.iter().enumerate() {
            at[*slot as usize] = i as u32;
        }
        Positions(at)
    }

    fn get(&self, slot: u32) -> Option<usize> {
        match self.0.get(slot as usize) {
            Some(&i) if i != Self::NONE => Some(i as usize),
            _ => None,
        }
    }

    fn contains(&self, slot: u32) -> bool {
        self.get(slot).is_some()
    }
}

/// Union-find by size with path halving, over up to `u32::MAX` elements (4 bytes each, so a
/// full link can hold one over every record).
pub(crate) struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub(crate) fn find(&mut self, x: usize) -> usize {
        let mut x = x as u32;
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x as usize
    }

    /// Joins two roots; returns the new root.
    pub(crate) fn union(&mut self, a: usize, b: usize) -> usize {
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        big
    }

    /// Joins the sets of any two elements.
    pub(crate) fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.union(ra, rb);
        }
    }
}

/// `f` over `items` on both cores, results in order.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const THREADS: usize = 2;
    if items.len() < 1024 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

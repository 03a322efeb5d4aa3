//! Identity resolution: which source records are the same real human.
//!
//! Pure: no I/O, no SQLite. The input is each record's canonical values; the output is clusters
//! of records (one per person), why each record is in its cluster, the candidates that were
//! scored but not linked, and the pairs close to the threshold for review.
//!
//! # How two records are compared ([`compare_records`])
//!
//! 1. **Vetoes** (never overridden, by any rule or score, nor through other records of a
//!    cluster): two different valid NHS numbers; two different birth dates (a typo in a date is
//!    indistinguishable from another person, so it is left to review); female vs male; given
//!    names that are different names (not equal after folding case and accents, not variants in
//!    the nickname table, not one typing slip apart, not an initial). The last one keeps twins
//!    (same surname, birth date and address) and couples sharing an email or phone apart.
//!    And contact details: two or more of personal email, mobile and postcode held by both and
//!    different, with no NHS or NI number agreeing ([`Veto::ContactDetails`]): namesakes born
//!    the same day, whom names and dates alone would merge.
//! 2. **Deterministic rules**, each also needing the names to agree:
//!    [`Rule::NhsNumber`] same valid NHS number and given or family name agreeing;
//!    [`Rule::NameBirthDate`] same birth date, same family name, same given name or a variant of
//!    it (given and preferred names both count), and no disagreeing NI number;
//!    [`Rule::Email`] same personal email (role addresses like `info@` never count) with given
//!    and family names agreeing: a family email shared by a couple or a mother and daughter
//!    does not merge them.
//! 3. **Fellegi–Sunter score**: the sum of per-field log-likelihood weights ([`Weights`]). A
//!    pair links when the score reaches [`MatchConfig::link_threshold`] *and* a personal
//!    identifier agrees (birth date, NHS or NI number, personal email, mobile): names,
//!    postcodes and landlines alone are shared by namesakes, households and care homes.
//! 4. **Unique candidate**: a pair scoring at least [`MatchConfig::unique_link_threshold`]
//!    without a personal identifier (typically a record missing its birth date: full name,
//!    gender, and a consistent given age or the same postcode) links only if, after the links
//!    above, each side's cluster has no other candidate at review level. Two plausible
//!    "Margaret Smith, about 85" never get one of them picked arbitrarily. A personal email or
//!    mobile that disagrees rules such a link out, and a given age counts fully only when it
//!    equals, or lags by one birthday, the age the other record's birth date implies.
//! 5. **Ambiguity**: a record whose candidates are vetoed from each other (two people it could
//!    be) links to neither, unless one link rests on stronger evidence (NHS number, then
//!    another shared identifier); the pairs are listed for review as `ambiguous`.
//!
//! Candidate pairs come from blocking ([`features::block_keys`]): NHS, NI, mailbox, phone,
//! birth date + family-name Soundex, birth date + given-name group, and — only for a record
//! missing its birth date — postcode + family Soundex, and family Soundex + given-name group
//! with the postcode area, a landline or the decade of birth (a given age: the decades it
//! fits). Names alone cannot keep a pair with these weights, so they are never a block alone.
//! A block whose comparisons would exceed [`MatchConfig::max_block_pairs`] is skipped (counted
//! in [`LinkStats::oversized_blocks`]): missing a link is safe, a quadratic blow-up is not.
//!
//! # Clusters
//!
//! Links are applied strongest first (NHS, name + birth date, email, then by score), with a
//! union-find that refuses to join two clusters if any pair across them is vetoed (contact
//! details included): transitivity cannot merge two people through a third record. A comparison never looks at other records,
//! so clusters are the greedy clustering of each connected component of the link graph, and an
//! update recomputes only the components that changed ([`LinkIndex::apply`]).

mod compare;
mod eval;
mod features;
mod ids;
mod index;
mod normalise;

#[cfg(test)]
pub(crate) mod tests;

use chrono::NaiveDate;

use crate::model::CanonicalValues;
use crate::source::kind::SourceKind;

pub use compare::{FamilyLevel, FieldScore, GivenLevel, PairComparison, Weights};
pub use eval::{Evaluation, evaluate};
pub use ids::{PersonId, assign_person_ids};
pub use index::{
    BlockSize, KeptPair, KeyHasher, KeyOf, KeySet, LinkIndex, LinkStats, Prepared, prepare_all,
    resolve, score_block,
};
pub(crate) use index::{UnionFind, parallel_map};

/// One source record: the configured source name and its key (`source_record.external_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordRef {
    pub source: String,
    pub external_id: String,
}

impl RecordRef {
    pub fn new(source: impl Into<String>, external_id: impl Into<String>) -> Self {
        RecordRef {
            source: source.into(),
            external_id: external_id.into(),
        }
    }
}

/// A record to link: its reference, its API, and its mapped values.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub record: RecordRef,
    pub kind: SourceKind,
    pub values: CanonicalValues,
}

/// Why two records are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    NhsNumber,
    NameBirthDate,
    Email,
    /// The Fellegi–Sunter score reached the link threshold, with a personal identifier.
    Probabilistic,
    /// The score reached the unique-candidate threshold on names with an age or postcode, and
    /// each side is the other's only candidate.
    UniqueCandidate,
}

impl Rule {
    /// The name stored in `person_link.rule`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NhsNumber => "nhs_number",
            Rule::NameBirthDate => "name_birth_date",
            Rule::Email => "email",
            Rule::Probabilistic => "probabilistic",
            Rule::UniqueCandidate => "unique_candidate",
        }
    }
}

/// Evidence that two records are different people, whatever else agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Veto {
    NhsNumber,
    BirthDate,
    Gender,
    GivenName,
    /// Two or more contact fields disagree and no NHS or NI number agrees
    /// ([`MatchConfig::contact_conflict_fields`]).
    ContactDetails,
}

impl Veto {
    pub fn as_str(self) -> &'static str {
        match self {
            Veto::NhsNumber => "different_nhs_number",
            Veto::BirthDate => "different_birth_date",
            Veto::Gender => "different_gender",
            Veto::GivenName => "different_given_name",
            Veto::ContactDetails => "different_contact_details",
        }
    }
}

/// Why a scored candidate pair was not linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotLinked {
    BelowThreshold,
    /// Above the threshold on names, postcode or landline only.
    NoPersonalIdentifier,
    /// The pair itself is vetoed.
    Veto(Veto),
    /// The pair would link, but its clusters contain a vetoed pair.
    ClusterConflict(Veto),
    /// The cluster reached [`MatchConfig::max_cluster_size`].
    ClusterTooLarge,
    /// Evidence without a personal identifier, and another candidate exists on either side.
    Ambiguous,
}

impl NotLinked {
    pub fn as_str(self) -> &'static str {
        match self {
            NotLinked::BelowThreshold => "below_threshold",
            NotLinked::NoPersonalIdentifier => "no_personal_identifier",
            NotLinked::Veto(v) | NotLinked::ClusterConflict(v) => v.as_str(),
            NotLinked::ClusterTooLarge => "cluster_too_large",
            NotLinked::Ambiguous => "ambiguous",
        }
    }
}

impl MatchConfig {
    /// What blocking reads of the settings.
    pub(crate) fn blocking(&self) -> features::Blocking {
        features::Blocking {
            names_alone: self.names_alone_may_keep(),
            age_reference: self.age_reference,
            age_tolerance: self.given_age_tolerance,
        }
    }

    /// Whether a pair can be kept on names and gender alone, with every other field that
    /// has no block of its own at its best (see [`features::block_keys`]): then every
    /// record's names are blocked on their own.
    pub(crate) fn names_alone_may_keep(&self) -> bool {
        let w = &self.weights;
        let best = |weights: &[f64]| weights.iter().fold(0.0_f64, |a, &b| a.max(b));
        let names = best(&[
            w.given_exact,
            w.given_variant,
            w.given_typo,
            w.given_initial,
        ]) + best(&[
            w.family_exact,
            w.family_typo,
            w.family_similar,
            w.family_part,
            w.family_differ,
        ]);
        let unblocked: f64 = [
            w.gender_agree,
            w.ni_differ,
            w.email_differ,
            w.phone_differ,
            w.postcode_differ,
            w.age_inconsistent,
        ]
        .iter()
        .map(|x| x.max(0.0))
        .sum();
        names + unblocked >= self.candidate_keep_score()
    }

    /// The score from which an unvetoed pair is kept: a runner-up, or a pair that clustering
    /// reads (a rival or unique candidate).
    pub(crate) fn candidate_keep_score(&self) -> f64 {
        self.candidate_min_score
            .min(self.review_threshold)
            .min(self.unique_link_threshold)
    }
}

/// Matching settings. The defaults are what the evaluation against the simulator's ground truth
/// was measured with.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Score (bits) at or above which a pair links, given a personal identifier agrees.
    pub link_threshold: f64,
    /// Score at or above which a pair with no personal identifier agreeing links, if each
    /// side has no other candidate (a non-vetoed pair at or above `review_threshold`) among the
    /// clusters formed by the other rules.
    pub unique_link_threshold: f64,
    /// Score at or above which an unlinked pair is listed for review, and counts as a rival
    /// candidate for `unique_link_threshold`.
    pub review_threshold: f64,
    /// Score at or above which an unlinked pair is kept as a runner-up for `explain`. Never
    /// above `review_threshold` or `unique_link_threshold` in effect (those pairs decide
    /// clustering). The default equals `review_threshold`: pairs below it are namesakes, whose
    /// number grows with the square of the store (issue 7: at 185,705 records, 1.5M kept pairs
    /// against 117k), and they change no link.
    pub candidate_min_score: f64,
    /// Runner-up candidates kept per cluster.
    pub runner_up_limit: usize,
    /// Blocks needing more comparisons than this are skipped.
    pub max_block_pairs: u64,
    /// No cluster grows beyond this many records.
    pub max_cluster_size: usize,
    /// The day `service_user.given_age` is compared on (ages are estimates taken "now"):
    /// today by default.
    pub age_reference: NaiveDate,
    /// Years a given age may differ from the age a birth date implies.
    pub given_age_tolerance: i64,
    /// Contact fields (personal email, mobile, postcode) that must disagree between two
    /// records for them to be treated as different people unless an NHS or NI number agrees
    /// ([`Veto::ContactDetails`]); 0 turns the rule off.
    pub contact_conflict_fields: u8,
    pub weights: Weights,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            link_threshold: 20.0,
            unique_link_threshold: 14.0,
            review_threshold: 13.0,
            candidate_min_score: 13.0,
            runner_up_limit: 5,
            max_block_pairs: 200_000,
            max_cluster_size: 50,
            age_reference: chrono::Utc::now().date_naive(),
            given_age_tolerance: 2,
            contact_conflict_fields: 2,
            weights: Weights::default(),
        }
    }
}

/// A record in a cluster and how it got there.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub record: RecordRef,
    pub kind: SourceKind,
    /// `None` for the cluster's first record (its anchor).
    pub link: Option<Link>,
}

/// The link that joined a record to its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub rule: Rule,
    pub score: f64,
    /// The record it was linked through.
    pub via: RecordRef,
}

/// A scored pair that was not linked.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The record of the cluster (for runners-up), or the first of the pair.
    pub record: RecordRef,
    pub other: RecordRef,
    pub score: f64,
    pub reason: NotLinked,
}

/// One person: records linked together.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The anchor (smallest record) first, then the others in record order.
    pub members: Vec<Member>,
    /// Best-scoring candidates outside the cluster, best first.
    pub runners_up: Vec<Candidate>,
}

impl Cluster {
    pub fn records(&self) -> impl Iterator<Item = &RecordRef> {
        self.members.iter().map(|m| &m.record)
    }
}

/// The result of linking.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Every record in exactly one cluster; clusters ordered by anchor.
    pub clusters: Vec<Cluster>,
    /// Unlinked pairs worth a human look: scores at or above the review threshold, and pairs
    /// refused because of a veto while sharing an identifier. Best first.
    pub review: Vec<Candidate>,
    pub stats: LinkStats,
}

/// Compares two records' values, with every field's weight (for `caresync explain`).
pub fn compare_records(
    config: &MatchConfig,
    a: &CanonicalValues,
    b: &CanonicalValues,
) -> PairComparison {
    compare::compare(
        config,
        &features::Features::from_values(a),
        &features::Features::from_values(b),
    )
}

//! Survivorship: which linked record's value each canonical field takes. Pure.
//!
//! An operator override wins outright. Otherwise the field's rules are tried in order until
//! one prefers a single candidate: `source_priority` (the configured order of sources),
//! `most_recent` (the source's own modified time, then when caresync saw it), and
//! `most_complete` (the record with the most canonical values).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::model::{CanonicalValues, Field, Value};
use crate::source::kind::SourceKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    SourcePriority,
    MostRecent,
    MostComplete,
}

impl Rule {
    pub fn parse(name: &str) -> Option<Rule> {
        match name {
            "source_priority" => Some(Rule::SourcePriority),
            "most_recent" => Some(Rule::MostRecent),
            "most_complete" => Some(Rule::MostComplete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SourcePriority => "source_priority",
            Rule::MostRecent => "most_recent",
            Rule::MostComplete => "most_complete",
        }
    }
}

/// The configured survivorship policy (`[survivorship]` in `sync.toml`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Source names, most trusted first. Sources not listed follow, ordered by kind.
    pub source_priority: Vec<String>,
    pub default_rules: Vec<Rule>,
    pub field_rules: HashMap<Field, Vec<Rule>>,
}

impl Default for Policy {
    /// Care records are the authority on a person; contact details go to the freshest source.
    fn default() -> Self {
        let recent_first = vec![Rule::MostRecent, Rule::SourcePriority, Rule::MostComplete];
        Policy {
            source_priority: Vec::new(),
            default_rules: vec![Rule::SourcePriority, Rule::MostRecent, Rule::MostComplete],
            field_rules: [Field::Email, Field::Phone, Field::Mobile]
                .into_iter()
                .map(|f| (f, recent_first.clone()))
                .collect(),
        }
    }
}

impl Policy {
    fn rules(&self, field: Field) -> &[Rule] {
        self.field_rules
            .get(&field)
            .map_or(&self.default_rules, Vec::as_slice)
    }

    /// Lower is more trusted.
    fn rank(&self, source: &str, kind: SourceKind) -> (usize, usize) {
        let listed = self
            .source_priority
            .iter()
            .position(|s| s == source)
            .unwrap_or(usize::MAX);
        (listed, kind_rank(kind))
    }
}

/// The default trust by kind: CareHQ's care record first, the marketplace last.
fn kind_rank(kind: SourceKind) -> usize {
    match kind {
        SourceKind::CarehqServiceUsers => 0,
        SourceKind::CarehqUsers => 1,
        SourceKind::PaceUsers => 2,
        SourceKind::CarevalidateUsers => 3,
        SourceKind::MarketplaceUsers => 4,
    }
}

/// One linked record's canonical values.
#[derive(Debug, Clone)]
pub struct Observation {
    pub source: String,
    pub external_id: String,
    pub kind: SourceKind,
    pub values: CanonicalValues,
    /// When caresync stored this canonical form (RFC 3339).
    pub observed_at: String,
}

/// An operator's correction of one field.
#[derive(Debug, Clone)]
pub struct Override {
    pub value: Value,
    pub created_at: String,
}

/// The surviving value of a field and where it came from, borrowed from the observations
/// and overrides it was chosen from.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen<'a> {
    pub value: &'a Value,
    /// A source name, or `operator`.
    pub source: &'a str,
    pub external_id: Option<&'a str>,
    pub observed_at: &'a str,
    /// `operator_override`, `only_source`, `agreement`, or the rule that decided.
    pub rule: &'static str,
}

/// Chooses every field any observation or override holds.
pub fn survive<'a>(
    observations: &'a [Observation],
    overrides: &'a BTreeMap<Field, Override>,
    policy: &Policy,
) -> BTreeMap<Field, Chosen<'a>> {
    let mut chosen = BTreeMap::new();
    let mut fields: Vec<Field> = observations
        .iter()
        .flat_map(|o| o.values.iter().map(|(f, _)| f))
        .collect();
    fields.extend(overrides.keys());
    fields.sort_unstable();
    fields.dedup();
    for field in fields {
        if let Some(o) = overrides.get(&field) {
            chosen.insert(
                field,
                Chosen {
                    value: &o.value,
                    source: "operator",
                    external_id: None,
                    observed_at: &o.created_at,
                    rule: "operator_override",
                },
            );
            continue;
        }
        let candidates: Vec<(&'a Observation, &'a Value)> = observations
            .iter()
            .filter_map(|o| o.values.get(field).map(|v| (o, v)))
            .collect();
        if let Some(c) = choose(field, &candidates, policy) {
            chosen.insert(field, c);
        }
    }
    chosen
}

fn choose<'a>(
    field: Field,
    candidates: &[(&'a Observation, &'a Value)],
    policy: &Policy,
) -> Option<Chosen<'a>> {
    let pick = |(o, v): (&'a Observation, &'a Value), rule: &'static str| Chosen {
        value: v,
        source: &o.source,
        external_id: Some(&o.external_id),
        observed_at: &o.observed_at,
        rule,
    };
    match candidates {
        [] => return None,
        [only] => return Some(pick(*only, "only_source")),
        _ => {}
    }
    if candidates.iter().all(|(_, v)| *v == candidates[0].1) {
        // All agree: provenance goes to the most trusted of them.
        let best = candidates
            .iter()
            .min_by_key(|(o, _)| (policy.rank(&o.source, o.kind), o.external_id.as_str()))?;
        return Some(pick(*best, "agreement"));
    }
    let mut remaining: Vec<(&'a Observation, &'a Value)> = candidates.to_vec();
    for rule in policy.rules(field) {
        let best = remaining
            .iter()
            .copied()
            .min_by(|a, b| compare(*rule, a.0, b.0, policy))?;
        remaining.retain(|c| compare(*rule, c.0, best.0, policy) == Ordering::Equal);
        if remaining.len() == 1 {
            return Some(pick(remaining[0], rule.as_str()));
        }
    }
    // Still tied: a stable, explainable last resort.
    let best = remaining
        .into_iter()
        .min_by(|a, b| (&a.0.source, &a.0.external_id).cmp(&(&b.0.source, &b.0.external_id)))?;
    Some(pick(best, "tie_break"))
}

/// `Less` means `a` is preferred.
fn compare(rule: Rule, a: &Observation, b: &Observation, policy: &Policy) -> Ordering {
    match rule {
        Rule::SourcePriority => policy
            .rank(&a.source, a.kind)
            .cmp(&policy.rank(&b.source, b.kind)),
        Rule::MostRecent => (modified_at(b), &b.observed_at).cmp(&(modified_at(a), &a.observed_at)),
        Rule::MostComplete => b.values.len().cmp(&a.values.len()),
    }
}

/// The source's own modified time, as an instant (a fraction of a second counts).
fn modified_at(o: &Observation) -> Option<chrono::DateTime<chrono::Utc>> {
    match o.values.get(Field::SourceModifiedAt) {
        Some(Value::DateTime(t)) => Some(*t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(
        source: &str,
        kind: SourceKind,
        modified: &str,
        fields: &[(Field, &str)],
    ) -> Observation {
        let mut values: CanonicalValues = fields
            .iter()
            .map(|(f, v)| (*f, f.parse_text(v).expect("valid test value")))
            .collect();
        values.insert(
            Field::SourceModifiedAt,
            Field::SourceModifiedAt.parse_text(modified).unwrap(),
        );
        Observation {
            source: source.into(),
            kind,
            external_id: format!("{source}-1"),
            values,
            observed_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn check(
        observations: &[Observation],
        overrides: &[(Field, &str)],
        field: Field,
        expected: (&str, &str, &str),
    ) {
        let overrides: BTreeMap<Field, Override> = overrides
            .iter()
            .map(|(f, v)| {
                (
                    *f,
                    Override {
                        value: f.parse_text(v).unwrap(),
                        created_at: "2026-02-02T00:00:00Z".into(),
                    },
                )
            })
            .collect();
        let chosen = survive(observations, &overrides, &Policy::default());
        let c = chosen.get(&field).expect("a value survives");
        assert_eq!(
            (
                c.value
                    .as_text()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:?}", c.value))
                    .as_str(),
                c.source,
                c.rule
            ),
            expected
        );
    }

    #[test]
    fn rules_choose_as_configured() {
        let carehq = obs(
            "homes",
            SourceKind::CarehqServiceUsers,
            "2024-01-01T00:00:00Z",
            &[
                (Field::GivenName, "Margaret"),
                (Field::Mobile, "07700 900001"),
                (Field::Town, "Leeds"),
            ],
        );
        let market = obs(
            "market",
            SourceKind::MarketplaceUsers,
            "2026-06-01T00:00:00Z",
            &[
                (Field::GivenName, "Maggie"),
                (Field::Mobile, "07700 900002"),
                (Field::Town, "Leeds"),
                (Field::Nationality, "British"),
            ],
        );
        let both = [carehq.clone(), market.clone()];
        // Names: the care record outranks the marketplace.
        check(
            &both,
            &[],
            Field::GivenName,
            ("Margaret", "homes", "source_priority"),
        );
        // Contact details: the most recently modified record wins.
        check(
            &both,
            &[],
            Field::Mobile,
            ("+447700900002", "market", "most_recent"),
        );
        // Agreement, and a value only one record holds.
        check(&both, &[], Field::Town, ("Leeds", "homes", "agreement"));
        check(
            &both,
            &[],
            Field::Nationality,
            ("British", "market", "only_source"),
        );
        // An operator override beats every source.
        check(
            &both,
            &[(Field::Mobile, "07700 900999")],
            Field::Mobile,
            ("+447700900999", "operator", "operator_override"),
        );
        check(
            &both,
            &[(Field::Email, "new@example.org")],
            Field::Email,
            ("new@example.org", "operator", "operator_override"),
        );
    }

    #[test]
    fn a_configured_priority_overrides_the_kind_order() {
        let a = obs(
            "homes",
            SourceKind::CarehqServiceUsers,
            "2024-01-01T00:00:00Z",
            &[(Field::GivenName, "Margaret")],
        );
        let b = obs(
            "market",
            SourceKind::MarketplaceUsers,
            "2024-01-01T00:00:00Z",
            &[(Field::GivenName, "Maggie")],
        );
        let policy = Policy {
            source_priority: vec!["market".into()],
            ..Policy::default()
        };
        let (records, no_overrides) = ([a, b], BTreeMap::new());
        let chosen = survive(&records, &no_overrides, &policy);
        assert_eq!(chosen[&Field::GivenName].source, "market");
    }

    #[test]
    fn ties_fall_through_to_the_next_rule() {
        let mut a = obs(
            "home_a",
            SourceKind::CarehqServiceUsers,
            "2024-01-01T00:00:00Z",
            &[(Field::Title, "Mrs")],
        );
        let b = obs(
            "home_b",
            SourceKind::CarehqServiceUsers,
            "2025-01-01T00:00:00Z",
            &[(Field::Title, "Ms")],
        );
        a.external_id = "a".into();
        let (records, no_overrides) = ([a, b], BTreeMap::new());
        let chosen = survive(&records, &no_overrides, &Policy::default());
        assert_eq!(
            (chosen[&Field::Title].source, chosen[&Field::Title].rule),
            ("home_b", "most_recent")
        );
    }
}

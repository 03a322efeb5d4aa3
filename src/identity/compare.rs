//! Comparing two records: hard vetoes, deterministic rules, and the Fellegi–Sunter score.
//!
//! A comparison is a pure function of the two records and the [`MatchConfig`]: it never looks
//! at other records, which is what lets linking be incremental.

use chrono::{Datelike, NaiveDate};

use super::features::Features;
use super::normalise::{
    OneEdit, jaro_winkler, nickname_groups, one_edit, same_name_group, within_one_edit,
};
use super::{MatchConfig, Rule, Veto};

/// How well two given names agree (best over the tokens of given and preferred names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GivenLevel {
    /// Different names (`Ann` / `Mary`, `Joan` / `Joanne`): a veto.
    Differ,
    /// One side is an initial of the other (`J` / `John`).
    Initial,
    /// One typing slip apart (`Margret` / `Margaret`).
    Typo,
    /// Variants of one name (`Peggy` / `Margaret`).
    Variant,
    Exact,
}

/// How well two family names agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FamilyLevel {
    /// Not a veto: names change on marriage.
    Differ,
    /// One part of a double-barrelled name (`Smith` / `Smith-Jones`).
    Part,
    /// Jaro–Winkler ≥ 0.9 (`Thomson` / `Thompson`).
    Similar,
    /// One typing slip apart.
    Typo,
    Exact,
}

/// The weight of one field in a score, for `caresync explain`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldScore {
    pub field: &'static str,
    /// `agree`, `typo`, `differ`, ...
    pub level: &'static str,
    pub weight: f64,
}

/// Log-likelihood weights (bits: log₂ m/u) of each field's agreement or disagreement.
/// A field missing on either side weighs 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub given_exact: f64,
    pub given_variant: f64,
    pub given_typo: f64,
    pub given_initial: f64,
    pub family_exact: f64,
    pub family_typo: f64,
    pub family_similar: f64,
    pub family_part: f64,
    pub family_differ: f64,
    pub birth_date_exact: f64,
    /// A given age consistent with the other record's birth date: equal to the age the date
    /// implies today, or one year behind it (recorded before a birthday).
    pub age_consistent: f64,
    /// A given age within [`MatchConfig::given_age_tolerance`] but otherwise off (above the
    /// age the date implies, or behind by more than a year): a rough estimate at best.
    pub age_close: f64,
    pub age_inconsistent: f64,
    pub gender_agree: f64,
    pub nhs_agree: f64,
    pub ni_agree: f64,
    pub ni_differ: f64,
    pub email_exact: f64,
    /// Same mailbox, different spelling (`+tag`, Gmail dots).
    pub email_mailbox: f64,
    pub email_differ: f64,
    pub mobile_agree: f64,
    /// Landlines are shared by households and care homes.
    pub landline_agree: f64,
    pub phone_differ: f64,
    pub postcode_exact: f64,
    pub postcode_outward: f64,
    pub postcode_differ: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            given_exact: 5.0,
            given_variant: 4.0,
            given_typo: 3.0,
            given_initial: 0.5,
            family_exact: 7.0,
            family_typo: 5.0,
            family_similar: 3.0,
            family_part: 3.0,
            family_differ: -5.0,
            birth_date_exact: 12.0,
            age_consistent: 2.5,
            age_close: 0.5,
            age_inconsistent: -6.0,
            gender_agree: 0.5,
            nhs_agree: 20.0,
            ni_agree: 14.0,
            ni_differ: -6.0,
            email_exact: 12.0,
            email_mailbox: 9.0,
            email_differ: -1.0,
            mobile_agree: 10.0,
            landline_agree: 5.0,
            phone_differ: -1.0,
            postcode_exact: 4.0,
            postcode_outward: 1.5,
            postcode_differ: -0.5,
        }
    }
}

/// The result of comparing two records.
#[derive(Debug, Clone, PartialEq)]
pub struct PairComparison {
    /// Sum of the field weights, in bits.
    pub score: f64,
    /// The deterministic rule the pair satisfies, if any (only when not vetoed).
    pub rule: Option<Rule>,
    /// Why the pair can never link, if it cannot.
    pub veto: Option<Veto>,
    /// True when an identifier that is personal (birth date, NHS, NI, personal email, mobile)
    /// agrees. A probabilistic link needs one: names, postcodes and landlines are shared by
    /// namesakes, households and care homes.
    pub strong: bool,
    /// True when an identifier (NHS, NI, email, mobile) is shared: a vetoed pair that shares
    /// one is reported as conflicting evidence.
    pub shares_identifier: bool,
    /// How many contact fields (personal email, mobile, postcode) both records hold and
    /// disagree on. See [`contact_conflict`].
    pub contact_disagreements: u8,
    /// True when a personal email or mobile is held by both and differs: direct evidence
    /// against the pair, which rules out a link on names and age alone.
    pub personal_contact_differs: bool,
    pub fields: Vec<FieldScore>,
}

/// Contact fields (personal email, mobile, postcode) that both records hold and that disagree.
pub(crate) fn contact_disagreements(a: &Features, b: &Features) -> u8 {
    let email = matches!((a.mailbox(), b.mailbox()), (Some(x), Some(y)) if x != y);
    let mobile = mobiles_differ(a, b);
    let postcode = matches!((a.postcode(), b.postcode()), (Some(x), Some(y)) if x != y);
    u8::from(email) + u8::from(mobile) + u8::from(postcode)
}

/// Both records hold a mobile, and none in common.
fn mobiles_differ(a: &Features, b: &Features) -> bool {
    !a.mobiles().is_empty() && !b.mobiles().is_empty() && !a.mobiles().shares(b.mobiles())
}

/// True when the two records' contact details say they are different people: at least
/// [`MatchConfig::contact_conflict_fields`] of personal email, mobile and postcode are held by
/// both and disagree, and no NHS or NI number agrees.
///
/// Why: one person's records usually agree on whatever contact details they both hold; one
/// field may differ (a new email, a move into a care home), but two at once are much more
/// likely two people who share a common name and birth date — the case where names and dates
/// alone would merge them. A shared NHS or NI number outweighs it (people do move and change
/// numbers). Applied to every pair that would end up in one cluster, not only to linked pairs,
/// so a third record without contact details cannot join the two.
pub(crate) fn contact_conflict(config: &MatchConfig, a: &Features, b: &Features) -> bool {
    let threshold = config.contact_conflict_fields;
    threshold > 0
        && contact_disagreements(a, b) >= threshold
        && !matches!((a.nhs(), b.nhs()), (Some(x), Some(y)) if x == y)
        && !matches!((a.ni(), b.ni()), (Some(x), Some(y)) if x == y)
}

pub(crate) fn given_level(a: &Features, b: &Features) -> Option<GivenLevel> {
    if a.given().is_empty() || b.given().is_empty() {
        return None;
    }
    let mut best = GivenLevel::Differ;
    let (a_first, b_first) = (a.given().first(), b.given().first());
    for x in a.given().iter() {
        for y in b.given().iter() {
            best = best.max(token_level(x, y, a_first == Some(x), b_first == Some(y)));
            if best == GivenLevel::Exact {
                return Some(best);
            }
        }
    }
    Some(best)
}

fn token_level(x: &str, y: &str, x_first: bool, y_first: bool) -> GivenLevel {
    if x.len() == 1 || y.len() == 1 {
        // An initial only stands for the first given name.
        let initial_ok = x_first && y_first && x.as_bytes()[0] == y.as_bytes()[0];
        return if x == y || initial_ok {
            GivenLevel::Initial
        } else {
            GivenLevel::Differ
        };
    }
    if x == y {
        return GivenLevel::Exact;
    }
    if same_name_group(x, y) {
        return GivenLevel::Variant;
    }
    // Two names we know are different names, not a slip (`Ella` / `Emma`).
    let both_known = !nickname_groups(x).is_empty() && !nickname_groups(y).is_empty();
    let min_len = x.len().min(y.len());
    // A substituted letter in a short name is as likely another name (`Jean` / `Joan`,
    // `Ella` / `Emma`); a dropped or swapped letter much less so.
    let slip = match one_edit(x.as_bytes(), y.as_bytes()) {
        Some(OneEdit::Indel) => min_len >= 3,
        Some(OneEdit::Transposition) => min_len >= 4,
        Some(OneEdit::Substitution) => min_len >= 5,
        _ => false,
    };
    if slip && !both_known {
        GivenLevel::Typo
    } else {
        GivenLevel::Differ
    }
}

pub(crate) fn family_level(a: &Features, b: &Features) -> Option<FamilyLevel> {
    let (Some(x), Some(y)) = (a.family(), b.family()) else {
        return None;
    };
    Some(if x == y {
        FamilyLevel::Exact
    } else if x.len().min(y.len()) >= 4 && within_one_edit(x.as_bytes(), y.as_bytes()) {
        FamilyLevel::Typo
    } else if x.len().min(y.len()) >= 4 && jaro_winkler(x.as_bytes(), y.as_bytes()) >= 0.9 {
        FamilyLevel::Similar
    } else if (a.family_tokens().len() > 1 || b.family_tokens().len() > 1)
        && a.family_tokens()
            .iter()
            .any(|t| t.len() > 1 && b.family_tokens().contains(t))
    {
        FamilyLevel::Part
    } else {
        FamilyLevel::Differ
    })
}

fn age_on(birth: NaiveDate, day: NaiveDate) -> i64 {
    let mut age = i64::from(day.year() - birth.year());
    if (day.month(), day.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// Compares two records. Vetoes are checked first; a vetoed pair still gets a score (for
/// reports), but no rule.
pub(crate) fn compare(config: &MatchConfig, a: &Features, b: &Features) -> PairComparison {
    let w = &config.weights;
    let mut fields = Vec::with_capacity(10);
    let mut score = 0.0;
    let mut add = |field: &'static str, level: &'static str, weight: f64| {
        score += weight;
        fields.push(FieldScore {
            field,
            level,
            weight,
        });
    };
    let mut veto = None;
    let mut strong = false;
    let mut shares_identifier = false;

    let nhs_agree = match (a.nhs(), b.nhs()) {
        (Some(x), Some(y)) if x == y => {
            add("nhs_number", "agree", w.nhs_agree);
            strong = true;
            shares_identifier = true;
            true
        }
        (Some(_), Some(_)) => {
            veto = veto.or(Some(Veto::NhsNumber));
            add("nhs_number", "differ", 0.0);
            false
        }
        _ => false,
    };
    let dob_agree = match (a.birth_date, b.birth_date) {
        (Some(x), Some(y)) if x == y => {
            add("birth_date", "agree", w.birth_date_exact);
            strong = true;
            true
        }
        (Some(_), Some(_)) => {
            veto = veto.or(Some(Veto::BirthDate));
            add("birth_date", "differ", 0.0);
            false
        }
        (Some(d), None) | (None, Some(d)) => {
            let age = if a.birth_date.is_some() {
                b.given_age
            } else {
                a.given_age
            };
            if let Some(age) = age {
                // A stated age was true when it was recorded and its owner has only aged
                // since: it may lag the age the birth date implies, but should not exceed it.
                let lag = age_on(d, config.age_reference) - age;
                if (0..=1).contains(&lag) {
                    add("given_age", "consistent", w.age_consistent);
                } else if lag.abs() <= config.given_age_tolerance {
                    add("given_age", "close", w.age_close);
                } else {
                    add("given_age", "inconsistent", w.age_inconsistent);
                }
            }
            false
        }
        (None, None) => {
            if let (Some(x), Some(y)) = (a.given_age, b.given_age) {
                if (x - y).abs() <= config.given_age_tolerance {
                    add("given_age", "consistent", w.age_consistent);
                } else {
                    add("given_age", "inconsistent", w.age_inconsistent);
                }
            }
            false
        }
    };
    match (a.gender, b.gender) {
        (Some(x), Some(y)) if x == y => add("gender", "agree", w.gender_agree),
        (Some(_), Some(_)) => {
            veto = veto.or(Some(Veto::Gender));
            add("gender", "differ", 0.0);
        }
        _ => {}
    }
    let given = given_level(a, b);
    match given {
        Some(GivenLevel::Exact) => add("given_name", "agree", w.given_exact),
        Some(GivenLevel::Variant) => add("given_name", "variant", w.given_variant),
        Some(GivenLevel::Typo) => add("given_name", "typo", w.given_typo),
        Some(GivenLevel::Initial) => add("given_name", "initial", w.given_initial),
        Some(GivenLevel::Differ) => {
            veto = veto.or(Some(Veto::GivenName));
            add("given_name", "differ", 0.0);
        }
        None => {}
    }
    let family = family_level(a, b);
    match family {
        Some(FamilyLevel::Exact) => add("family_name", "agree", w.family_exact),
        Some(FamilyLevel::Typo) => add("family_name", "typo", w.family_typo),
        Some(FamilyLevel::Similar) => add("family_name", "similar", w.family_similar),
        Some(FamilyLevel::Part) => add("family_name", "part", w.family_part),
        Some(FamilyLevel::Differ) => add("family_name", "differ", w.family_differ),
        None => {}
    }
    let mut ni_differ = false;
    match (a.ni(), b.ni()) {
        (Some(x), Some(y)) if x == y => {
            add("ni_number", "agree", w.ni_agree);
            strong = true;
            shares_identifier = true;
        }
        (Some(_), Some(_)) => {
            add("ni_number", "differ", w.ni_differ);
            ni_differ = true;
        }
        _ => {}
    }
    let email_exact = match (a.email(), b.email()) {
        (Some(x), Some(y)) if x == y => {
            add("email", "agree", w.email_exact);
            strong = true;
            shares_identifier = true;
            true
        }
        (Some(_), Some(_)) if a.mailbox() == b.mailbox() => {
            add("email", "same_mailbox", w.email_mailbox);
            strong = true;
            shares_identifier = true;
            false
        }
        (Some(_), Some(_)) => {
            add("email", "differ", w.email_differ);
            false
        }
        _ => false,
    };
    if a.mobiles().shares(b.mobiles()) {
        add("phone", "mobile_agree", w.mobile_agree);
        strong = true;
        shares_identifier = true;
    } else if a.landlines().shares(b.landlines()) {
        add("phone", "landline_agree", w.landline_agree);
    } else if (!a.mobiles().is_empty() || !a.landlines().is_empty())
        && (!b.mobiles().is_empty() || !b.landlines().is_empty())
    {
        add("phone", "differ", w.phone_differ);
    }
    match (a.postcode(), b.postcode()) {
        (Some(x), Some(y)) if x == y => add("postcode", "agree", w.postcode_exact),
        (Some(_), Some(_)) if a.outward() == b.outward() => {
            add("postcode", "outward_agree", w.postcode_outward)
        }
        (Some(_), Some(_)) => add("postcode", "differ", w.postcode_differ),
        _ => {}
    }

    let contact_disagreements = contact_disagreements(a, b);
    let personal_contact_differs =
        matches!((a.mailbox(), b.mailbox()), (Some(x), Some(y)) if x != y) || mobiles_differ(a, b);
    if contact_conflict(config, a, b) {
        veto = veto.or(Some(Veto::ContactDetails));
    }
    let rule = if veto.is_some() {
        None
    } else {
        deterministic_rule(given, family, nhs_agree, dob_agree, email_exact, ni_differ)
    };
    PairComparison {
        score,
        rule,
        veto,
        strong,
        shares_identifier,
        contact_disagreements,
        personal_contact_differs,
        fields,
    }
}

/// The deterministic rules, strongest first. Each also needs the names to agree, so that a
/// number typed on the wrong record, or an address shared by a couple, does not merge two people.
fn deterministic_rule(
    given: Option<GivenLevel>,
    family: Option<FamilyLevel>,
    nhs_agree: bool,
    dob_agree: bool,
    email_exact: bool,
    ni_differ: bool,
) -> Option<Rule> {
    let given_agrees = matches!(
        given,
        Some(GivenLevel::Exact | GivenLevel::Variant | GivenLevel::Typo)
    );
    let family_agrees = matches!(
        family,
        Some(FamilyLevel::Exact | FamilyLevel::Typo | FamilyLevel::Similar | FamilyLevel::Part)
    );
    if nhs_agree && (given_agrees || family_agrees) {
        return Some(Rule::NhsNumber);
    }
    let given_same = matches!(given, Some(GivenLevel::Exact | GivenLevel::Variant));
    if dob_agree && given_same && family == Some(FamilyLevel::Exact) && !ni_differ {
        return Some(Rule::NameBirthDate);
    }
    // A married name on one record: the same personal email and the same given name suffice.
    if email_exact && given_agrees && (family_agrees || given_same) {
        return Some(Rule::Email);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CanonicalValues, Field, Value};

    fn record(fields: &[(Field, &str)]) -> Features {
        let values: CanonicalValues = fields
            .iter()
            .map(|(f, v)| {
                let value = f.parse_text(v).unwrap_or(Value::Text((*v).to_owned()));
                (*f, value)
            })
            .collect();
        Features::from_values(&values)
    }

    fn check(a: &[(Field, &str)], b: &[(Field, &str)], rule: Option<Rule>, veto: Option<Veto>) {
        let config = MatchConfig::default();
        let c = compare(&config, &record(a), &record(b));
        assert_eq!((c.rule, c.veto), (rule, veto), "{:?}", c.fields);
        let back = compare(&config, &record(b), &record(a));
        assert_eq!(
            (back.rule, back.veto, back.score),
            (c.rule, c.veto, c.score)
        );
    }

    use Field::*;

    #[test]
    fn rules_and_vetoes() {
        let anna = [
            (GivenName, "Anna"),
            (FamilyName, "Murphy"),
            (BirthDate, "1946-03-25"),
        ];
        // Name + birth date, with case, accents and nicknames.
        check(
            &anna,
            &[
                (GivenName, "ANNA"),
                (FamilyName, "murphy"),
                (BirthDate, "1946-03-25"),
            ],
            Some(Rule::NameBirthDate),
            None,
        );
        check(
            &[
                (GivenName, "Margaret"),
                (FamilyName, "Ó Súilleabháin"),
                (BirthDate, "1940-01-02"),
            ],
            &[
                (GivenName, "Peggy"),
                (FamilyName, "O Suilleabhain"),
                (BirthDate, "1940-01-02"),
            ],
            Some(Rule::NameBirthDate),
            None,
        );
        check(
            &[
                (GivenName, "Siobhán"),
                (FamilyName, "Kelly"),
                (BirthDate, "1950-05-05"),
            ],
            &[
                (GivenName, "Mary"),
                (PreferredName, "Siobhan"),
                (FamilyName, "Kelly"),
                (BirthDate, "1950-05-05"),
            ],
            Some(Rule::NameBirthDate),
            None,
        );
        // Twins: same surname, birth date and address, different given names.
        check(
            &[
                (GivenName, "Joan"),
                (FamilyName, "Smith"),
                (BirthDate, "1940-01-02"),
                (Postcode, "NE2 1PA"),
            ],
            &[
                (GivenName, "Joanne"),
                (FamilyName, "Smith"),
                (BirthDate, "1940-01-02"),
                (Postcode, "NE2 1PA"),
            ],
            None,
            Some(Veto::GivenName),
        );
        check(
            &[
                (GivenName, "Ella"),
                (FamilyName, "Smith"),
                (BirthDate, "1940-01-02"),
            ],
            &[
                (GivenName, "Emma"),
                (FamilyName, "Smith"),
                (BirthDate, "1940-01-02"),
            ],
            None,
            Some(Veto::GivenName),
        );
        // Conflicting birth dates never merge, whatever else agrees.
        check(
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (BirthDate, "1946-03-25"),
                (NhsNumber, "943 476 5919"),
            ],
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (BirthDate, "1946-03-26"),
                (NhsNumber, "9434765919"),
            ],
            None,
            Some(Veto::BirthDate),
        );
        // Two different valid NHS numbers never merge.
        check(
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (BirthDate, "1946-03-25"),
                (NhsNumber, "9434765919"),
            ],
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (BirthDate, "1946-03-25"),
                (NhsNumber, "4857773457"),
            ],
            None,
            Some(Veto::NhsNumber),
        );
        // Same NHS number, family name typo.
        check(
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (NhsNumber, "9434765919"),
            ],
            &[
                (GivenName, "ANNA"),
                (FamilyName, "Murpy"),
                (NhsNumber, "943 476 5919"),
            ],
            Some(Rule::NhsNumber),
            None,
        );
        check(
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (Gender, "female"),
                (BirthDate, "1946-03-25"),
            ],
            &[
                (GivenName, "Anna"),
                (FamilyName, "Murphy"),
                (Gender, "male"),
                (BirthDate, "1946-03-25"),
            ],
            None,
            Some(Veto::Gender),
        );
    }

    #[test]
    fn shared_email_needs_the_same_name() {
        let email = (Email, "the.smiths@example.co.uk");
        check(
            &[(GivenName, "John"), (FamilyName, "Smith"), email],
            &[(GivenName, "Jack"), (FamilyName, "Smith"), email],
            Some(Rule::Email),
            None,
        );
        // A couple sharing an address: different given names veto.
        check(
            &[(GivenName, "John"), (FamilyName, "Smith"), email],
            &[(GivenName, "Mary"), (FamilyName, "Smith"), email],
            None,
            Some(Veto::GivenName),
        );
        // Mother and daughter of the same name: the birth dates differ.
        check(
            &[
                (GivenName, "Mary"),
                (FamilyName, "Smith"),
                (BirthDate, "1940-01-01"),
                email,
            ],
            &[
                (GivenName, "Mary"),
                (FamilyName, "Smith"),
                (BirthDate, "1968-01-01"),
                email,
            ],
            None,
            Some(Veto::BirthDate),
        );
        // A role address is never evidence.
        let c = compare(
            &MatchConfig::default(),
            &record(&[
                (GivenName, "John"),
                (FamilyName, "Smith"),
                (Email, "info@home.co.uk"),
            ]),
            &record(&[
                (GivenName, "John"),
                (FamilyName, "Smith"),
                (Email, "Info@home.co.uk"),
            ]),
        );
        assert_eq!((c.rule, c.strong), (None, false));
    }

    #[test]
    fn given_age_may_lag_the_birth_date_but_not_exceed_it() {
        let config = MatchConfig {
            age_reference: NaiveDate::from_ymd_opt(2026, 11, 22).unwrap_or_default(),
            ..MatchConfig::default()
        };
        // Born 1956-08-16: 70 on the reference day.
        let dated = record(&[(GivenName, "Linda"), (BirthDate, "1956-08-16")]);
        let level = |age: &str| {
            let aged = record(&[(GivenName, "Linda"), (GivenAge, age)]);
            let c = compare(&config, &dated, &aged);
            c.fields
                .iter()
                .find(|f| f.field == "given_age")
                .map(|f| f.level)
        };
        assert_eq!(level("70"), Some("consistent"));
        assert_eq!(level("69"), Some("consistent"));
        assert_eq!(level("71"), Some("close"));
        assert_eq!(level("68"), Some("close"));
        assert_eq!(level("73"), Some("inconsistent"));
    }

    #[test]
    fn contact_details_disagreeing_twice_veto_unless_a_number_agrees() {
        let base = [
            (GivenName, "Chloe"),
            (FamilyName, "Smith"),
            (BirthDate, "1959-05-27"),
        ];
        let with = |extra: &[(Field, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let a = [(Email, "a@example.co.uk"), (Postcode, "L18 9ZR")];
        // One field differs: a new email, say. Still the same person by name and date.
        check(
            &with(&a),
            &with(&[(Email, "b@example.co.uk"), (Postcode, "L18 9ZR")]),
            Some(Rule::NameBirthDate),
            None,
        );
        // Email and postcode both differ.
        check(
            &with(&a),
            &with(&[(Email, "b@example.co.uk"), (Postcode, "BA2 9EB")]),
            None,
            Some(Veto::ContactDetails),
        );
        // ... unless the NI number agrees.
        check(
            &with(&[a[0], a[1], (NiNumber, "AB123456C")]),
            &with(&[
                (Email, "b@example.co.uk"),
                (Postcode, "BA2 9EB"),
                (NiNumber, "AB123456C"),
            ]),
            Some(Rule::NameBirthDate),
            None,
        );
    }

    #[test]
    fn given_levels() {
        let level =
            |a: &str, b: &str| given_level(&record(&[(GivenName, a)]), &record(&[(GivenName, b)]));
        assert_eq!(level("Margaret", "Margret"), Some(GivenLevel::Typo));
        assert_eq!(level("Margaret", "Peggy"), Some(GivenLevel::Variant));
        assert_eq!(level("J", "John"), Some(GivenLevel::Initial));
        assert_eq!(level("Jean", "Joan"), Some(GivenLevel::Differ));
        assert_eq!(level("Zoë", "ZOE"), Some(GivenLevel::Exact));
        assert_eq!(level("Mary Ann", "Ann"), Some(GivenLevel::Exact));
    }
}

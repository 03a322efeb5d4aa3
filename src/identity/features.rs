//! What matching reads from one record, normalised once, and the record's blocking keys.

use chrono::{Datelike, NaiveDate};
use xxhash_rust::xxh3::xxh3_64;

use super::normalise::{email_mailbox, is_generic_email, name_tokens, nickname_groups, soundex};
use crate::model::{CanonicalValues, Field, Gender, Value};

/// The normalised identifying values of one record, held for the life of a link index: its
/// texts back to back in one allocation (a record's many small strings were most of the
/// index's memory).
#[derive(Debug, Clone, Default)]
pub(crate) struct Features {
    /// Every part's text, in [`Part`] order; a list's items separated by [`ITEM_SEPARATOR`].
    text: Box<str>,
    /// Where each part ends in `text`.
    ends: [u32; PARTS],
    /// Which optional parts are present (bit = the part's number).
    present: u16,
    pub birth_date: Option<NaiveDate>,
    /// An estimated age, used only when the birth date is unknown.
    pub given_age: Option<i64>,
    /// Female or male; other values are not compared.
    pub gender: Option<Gender>,
}

/// The texts of a record's features.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// Folded tokens of the given name, then of the preferred name (no repeats).
    Given,
    /// Folded tokens of the family name.
    FamilyTokens,
    /// The family-name tokens joined (`smith-jones` and `smith jones` → `smithjones`).
    Family,
    Nhs,
    Ni,
    /// Canonical email, unless it names a role (`info@`) or a placeholder.
    Email,
    /// The mailbox behind `email` (`+tag` removed, Gmail dots removed).
    Mailbox,
    /// UK mobiles in E.164.
    Mobiles,
    /// Other numbers in E.164: often shared by a household or a care home.
    Landlines,
    Postcode,
    Outward,
}

const PARTS: usize = Part::Outward as usize + 1;

/// Separates a list's items in `Features::text`: no name token or phone number holds it.
const ITEM_SEPARATOR: char = '\u{1f}';

/// The items of one of a record's lists (given-name tokens, phone numbers, ...).
#[derive(Debug, Clone, Copy)]
pub(crate) struct List<'a>(&'a str);

impl<'a> List<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a str> + Clone {
        self.0.split(ITEM_SEPARATOR).filter(|item| !item.is_empty())
    }

    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    pub fn len(self) -> usize {
        self.iter().count()
    }

    pub fn first(self) -> Option<&'a str> {
        self.iter().next()
    }

    pub fn contains(self, item: &str) -> bool {
        self.iter().any(|i| i == item)
    }

    /// True when the two lists hold an item in common.
    pub fn shares(self, other: List<'_>) -> bool {
        self.iter().any(|x| other.contains(x))
    }
}

/// Builds a [`Features`] text part by part, in [`Part`] order.
struct Parts {
    text: String,
    ends: [u32; PARTS],
    present: u16,
    next: usize,
}

impl Parts {
    fn new() -> Parts {
        Parts {
            text: String::with_capacity(128),
            ends: [0; PARTS],
            present: 0,
            next: 0,
        }
    }

    fn close(&mut self, part: Part) {
        debug_assert_eq!(part as usize, self.next, "parts out of order");
        self.ends[part as usize] = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        self.next += 1;
    }

    fn one(&mut self, part: Part, value: Option<&str>) {
        if let Some(value) = value {
            self.text.push_str(value);
            self.present |= 1 << part as u16;
        }
        self.close(part);
    }

    fn list<'s>(&mut self, part: Part, items: impl IntoIterator<Item = &'s str>) {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.text.push(ITEM_SEPARATOR);
            }
            self.text.push_str(item);
        }
        self.close(part);
    }
}

impl Features {
    pub fn from_values(values: &CanonicalValues) -> Features {
        let text = |f: Field| values.get(f).and_then(Value::as_text);
        let mut given = text(Field::GivenName).map(name_tokens).unwrap_or_default();
        for token in text(Field::PreferredName)
            .map(name_tokens)
            .unwrap_or_default()
        {
            if !given.contains(&token) {
                given.push(token);
            }
        }
        let family_tokens = text(Field::FamilyName).map(name_tokens).unwrap_or_default();
        let family = (!family_tokens.is_empty()).then(|| family_tokens.concat());
        let given_age = match values.get(Field::GivenAge) {
            Some(Value::Int(age)) if (0..=130).contains(age) => Some(*age),
            _ => None,
        };
        let gender = values
            .gender()
            .filter(|g| matches!(g, Gender::Female | Gender::Male));
        let email = values
            .email()
            .map(|e| e.as_str().to_owned())
            .filter(|e| !is_generic_email(e));
        let mailbox = email.as_deref().map(email_mailbox);
        let mut mobiles: Vec<String> = Vec::new();
        let mut landlines: Vec<String> = Vec::new();
        for phone in [values.mobile(), values.phone()].into_iter().flatten() {
            let list = if phone.is_uk_mobile() {
                &mut mobiles
            } else {
                &mut landlines
            };
            let number = phone.as_str().to_owned();
            if !list.contains(&number) {
                list.push(number);
            }
        }
        let postcode = values.postcode();
        let mut parts = Parts::new();
        parts.list(Part::Given, given.iter().map(String::as_str));
        parts.list(Part::FamilyTokens, family_tokens.iter().map(String::as_str));
        parts.one(Part::Family, family.as_deref());
        let (nhs, ni) = (values.nhs_number(), values.ni_number());
        parts.one(Part::Nhs, nhs.as_ref().map(|n| n.as_str()));
        parts.one(Part::Ni, ni.as_ref().map(|n| n.as_str()));
        parts.one(Part::Email, email.as_deref());
        parts.one(Part::Mailbox, mailbox.as_deref());
        parts.list(Part::Mobiles, mobiles.iter().map(String::as_str));
        parts.list(Part::Landlines, landlines.iter().map(String::as_str));
        parts.one(Part::Postcode, postcode.as_ref().map(|p| p.as_str()));
        parts.one(Part::Outward, postcode.as_ref().map(|p| p.outward()));
        Features {
            text: parts.text.into_boxed_str(),
            ends: parts.ends,
            present: parts.present,
            birth_date: values.birth_date(),
            given_age,
            gender,
        }
    }

    fn part(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn optional(&self, part: Part) -> Option<&str> {
        (self.present & (1 << part as u16) != 0).then(|| self.part(part))
    }

    pub fn given(&self) -> List<'_> {
        List(self.part(Part::Given))
    }

    pub fn family_tokens(&self) -> List<'_> {
        List(self.part(Part::FamilyTokens))
    }

    pub fn family(&self) -> Option<&str> {
        self.optional(Part::Family)
    }

    pub fn nhs(&self) -> Option<&str> {
        self.optional(Part::Nhs)
    }

    pub fn ni(&self) -> Option<&str> {
        self.optional(Part::Ni)
    }

    pub fn email(&self) -> Option<&str> {
        self.optional(Part::Email)
    }

    pub fn mailbox(&self) -> Option<&str> {
        self.optional(Part::Mailbox)
    }

    pub fn mobiles(&self) -> List<'_> {
        List(self.part(Part::Mobiles))
    }

    pub fn landlines(&self) -> List<'_> {
        List(self.part(Part::Landlines))
    }

    pub fn postcode(&self) -> Option<&str> {
        self.optional(Part::Postcode)
    }

    pub fn outward(&self) -> Option<&str> {
        self.optional(Part::Outward)
    }
}

/// The stored form of a record's features and blocking keys (`link_record.features`), read
/// back by a full link that does not hold every record: version 1, then little-endian
/// present (u16), birth date (i32 days from 0001-01-01, or i32::MIN), given age (i64, or
/// i64::MIN), gender (u8, 0 = none), the parts' ends (u32 each), the keys (count u16, then
/// hash u64 and kind u8 each), and the text.
const STORED_VERSION: u8 = 1;

impl Features {
    pub(crate) fn encode(&self, keys: &[BlockKey]) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + 4 * PARTS + 9 * keys.len() + self.text.len());
        out.push(STORED_VERSION);
        out.extend_from_slice(&self.present.to_le_bytes());
        let days = self
            .birth_date
            .map_or(i32::MIN, |d| chrono::Datelike::num_days_from_ce(&d));
        out.extend_from_slice(&days.to_le_bytes());
        out.extend_from_slice(&self.given_age.unwrap_or(i64::MIN).to_le_bytes());
        out.push(match self.gender {
            None => 0,
            Some(Gender::Female) => 1,
            Some(Gender::Male) => 2,
            Some(Gender::NonBinary) => 3,
            Some(Gender::Other) => 4,
            Some(Gender::Unknown) => 5,
        });
        for end in self.ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&u16::try_from(keys.len()).unwrap_or(u16::MAX).to_le_bytes());
        for k in keys.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&k.hash.to_le_bytes());
            out.push(k.kind as u8);
        }
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// Reads what [`Features::encode`] wrote; `None` for anything else.
    pub(crate) fn decode(blob: &[u8]) -> Option<(Features, Vec<BlockKey>)> {
        let mut at = blob;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = at.split_at_checked(n)?;
            at = rest;
            Some(head)
        };
        if take(1)? != [STORED_VERSION] {
            return None;
        }
        let present = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let days = i32::from_le_bytes(take(4)?.try_into().ok()?);
        let age = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let gender = match take(1)?[0] {
            0 => None,
            1 => Some(Gender::Female),
            2 => Some(Gender::Male),
            3 => Some(Gender::NonBinary),
            4 => Some(Gender::Other),
            5 => Some(Gender::Unknown),
            _ => return None,
        };
        let mut ends = [0u32; PARTS];
        for end in &mut ends {
            *end = u32::from_le_bytes(take(4)?.try_into().ok()?);
        }
        let count = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let mut keys = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let hash = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let kind = KeyKind::from_u8(take(1)?[0])?;
            keys.push(BlockKey { hash, kind });
        }
        let text = std::str::from_utf8(at).ok()?;
        let mut last = 0;
        for &end in &ends {
            if end < last || end as usize > text.len() {
                return None;
            }
            last = end;
        }
        if last as usize != text.len() {
            return None;
        }
        let features = Features {
            text: text.into(),
            ends,
            present,
            birth_date: (days != i32::MIN)
                .then(|| NaiveDate::from_num_days_from_ce_opt(days))
                .flatten(),
            given_age: (age != i64::MIN).then_some(age),
            gender,
        };
        Some((features, keys))
    }
}

/// What a blocking key is made of. Keys that do not include the birth date only pair a record
/// that lacks one: two records that both have a birth date either share it (and meet in a
/// birth-date block) or conflict (and can never link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum KeyKind {
    Nhs,
    Ni,
    Mailbox,
    Phone,
    BirthDateFamily,
    BirthDateGiven,
    /// Family-name Soundex + given-name group: only pairs with a side lacking a birth date.
    /// Held only when names alone can keep a pair (see [`block_keys`]).
    Name,
    /// Postcode + family-name Soundex: only pairs with a side lacking a birth date.
    PostcodeFamily,
    /// Family-name Soundex + given-name group + postcode area: only pairs with a side
    /// lacking a birth date.
    NameOutward,
    /// Family-name Soundex + given-name group + landline: only pairs with a side lacking a
    /// birth date (a care home's landline may be too common a block on its own).
    NameLandline,
    /// Family-name Soundex + given-name group + the decade of the birth year (one a birth
    /// date gives, or those a given age allows): only pairs with a side lacking a birth date.
    NameEra,
}

impl KeyKind {
    const ALL: [KeyKind; 11] = [
        KeyKind::Nhs,
        KeyKind::Ni,
        KeyKind::Mailbox,
        KeyKind::Phone,
        KeyKind::BirthDateFamily,
        KeyKind::BirthDateGiven,
        KeyKind::Name,
        KeyKind::PostcodeFamily,
        KeyKind::NameOutward,
        KeyKind::NameLandline,
        KeyKind::NameEra,
    ];

    fn from_u8(n: u8) -> Option<KeyKind> {
        Self::ALL.get(usize::from(n)).copied()
    }

    /// True when only pairs with at least one record lacking a birth date are compared.
    pub fn needs_missing_birth_date(self) -> bool {
        matches!(
            self,
            KeyKind::Name
                | KeyKind::PostcodeFamily
                | KeyKind::NameOutward
                | KeyKind::NameLandline
                | KeyKind::NameEra
        )
    }

    fn tag(self) -> &'static str {
        match self {
            KeyKind::Nhs => "n",
            KeyKind::Ni => "i",
            KeyKind::Mailbox => "e",
            KeyKind::Phone => "p",
            KeyKind::BirthDateFamily => "df",
            KeyKind::BirthDateGiven => "dg",
            KeyKind::Name => "m",
            KeyKind::PostcodeFamily => "c",
            KeyKind::NameOutward => "mo",
            KeyKind::NameLandline => "ml",
            KeyKind::NameEra => "my",
        }
    }
}

/// One blocking key: a hash of its kind and parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BlockKey {
    pub hash: u64,
    pub kind: KeyKind,
}

fn key(kind: KeyKind, parts: &[&str]) -> BlockKey {
    let mut buf = String::with_capacity(32);
    buf.push_str(kind.tag());
    for p in parts {
        buf.push('\u{1f}');
        buf.push_str(p);
    }
    BlockKey {
        hash: xxh3_64(buf.as_bytes()),
        kind,
    }
}

/// Name-group labels of a given-name token: its nickname groups, or the token itself.
fn given_labels(token: &str) -> Vec<String> {
    let groups = nickname_groups(token);
    if groups.is_empty() {
        vec![token.to_owned()]
    } else {
        groups.iter().map(|g| format!("#{g}")).collect()
    }
}

/// What blocking reads of the matching settings ([`super::MatchConfig::blocking`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    /// Names and gender alone can reach the score a pair is kept from.
    pub names_alone: bool,
    pub age_reference: NaiveDate,
    pub age_tolerance: i64,
}

/// Birth years blocked together on names.
const ERA_YEARS: i32 = 10;

impl Blocking {
    /// The birth years a given age gives some weight to (consistent or close), as of the
    /// reference day, and a year later: a record is blocked as of when it last changed.
    fn birth_years(&self, age: i64) -> std::ops::RangeInclusive<i64> {
        // The lag of a stated age behind the age a birth date implies that scores.
        let (lo, hi) = ((-self.age_tolerance).min(0), self.age_tolerance.max(1));
        let year = i64::from(self.age_reference.year());
        (year - age - 1 - hi)..=(year - age - lo + 1)
    }
}

/// The blocking keys of a record, sorted by hash, without repeats.
///
/// Unless names alone can keep a pair (`blocking.names_alone`: the weights let names and
/// gender reach the score a pair is kept from), a pair lacking a birth date on a side is
/// kept only with more evidence than its names: an age that fits, the same postcode area or
/// landline, or a shared identifier (its own block). So names are blocked beside the decade
/// of the birth year (a given age: the decades of the years it fits), the postcode area and
/// each landline, never alone; the namesakes that share nothing more are never compared
/// (issue 7: they were 97% of a full link's comparisons, and grew with the square of the
/// store).
pub(crate) fn block_keys(f: &Features, blocking: Blocking) -> Vec<BlockKey> {
    let mut keys = Vec::with_capacity(10);
    if let Some(nhs) = f.nhs() {
        keys.push(key(KeyKind::Nhs, &[nhs]));
    }
    if let Some(ni) = f.ni() {
        keys.push(key(KeyKind::Ni, &[ni]));
    }
    if let Some(mailbox) = f.mailbox() {
        keys.push(key(KeyKind::Mailbox, &[mailbox]));
    }
    for phone in f.mobiles().iter().chain(f.landlines().iter()) {
        keys.push(key(KeyKind::Phone, &[phone]));
    }
    let family_code = f
        .family()
        .and_then(soundex)
        .map(|c| String::from_utf8_lossy(&c).into_owned());
    // The given name's first token and the preferred name's (a nickname used as first name).
    let mut labels: Vec<String> = Vec::new();
    for token in f.given().iter().filter(|t| t.len() > 1).take(3) {
        for label in given_labels(token) {
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
    }
    if let Some(dob) = f.birth_date {
        let dob = dob.to_string();
        if let Some(code) = &family_code {
            keys.push(key(KeyKind::BirthDateFamily, &[&dob, code]));
        }
        for label in &labels {
            keys.push(key(KeyKind::BirthDateGiven, &[&dob, label]));
        }
    }
    if let Some(code) = &family_code {
        if blocking.names_alone {
            for label in &labels {
                keys.push(key(KeyKind::Name, &[code, label]));
            }
        } else {
            let mut eras: Vec<String> = Vec::new();
            if let Some(dob) = f.birth_date {
                eras.push(dob.year().div_euclid(ERA_YEARS).to_string());
            } else if let Some(age) = f.given_age.filter(|a| (0..=150).contains(a)) {
                let years = blocking.birth_years(age);
                let era = |y: i64| y.div_euclid(i64::from(ERA_YEARS));
                eras.extend((era(*years.start())..=era(*years.end())).map(|e| e.to_string()));
            }
            for label in &labels {
                for era in &eras {
                    keys.push(key(KeyKind::NameEra, &[code, label, era]));
                }
                if let Some(outward) = f.outward() {
                    keys.push(key(KeyKind::NameOutward, &[code, label, outward]));
                }
                for landline in f.landlines().iter() {
                    keys.push(key(KeyKind::NameLandline, &[code, label, landline]));
                }
            }
        }
        if let Some(postcode) = f.postcode() {
            keys.push(key(KeyKind::PostcodeFamily, &[postcode, code]));
        }
    }
    keys.sort_unstable();
    keys.dedup_by_key(|k| k.hash);
    // Kept for the life of the link index: no spare capacity.
    keys.shrink_to_fit();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::MatchConfig;

    fn features(fields: &[(Field, &str)]) -> Features {
        let values: CanonicalValues = fields
            .iter()
            .map(|(f, v)| (*f, f.parse_text(v).expect("a valid value")))
            .collect();
        Features::from_values(&values)
    }

    #[test]
    fn every_part_reads_back_as_built() {
        let f = features(&[
            (Field::GivenName, "Mary-Ann"),
            (Field::PreferredName, "Molly"),
            (Field::FamilyName, "Smith Jones"),
            (Field::NhsNumber, "943 476 5919"),
            (Field::Email, "Mary.Ann+care@gmail.com"),
            (Field::Mobile, "07700 900123"),
            (Field::Phone, "020 7946 0018"),
            (Field::Postcode, "sw1a 1aa"),
        ]);
        assert_eq!(
            f.given().iter().collect::<Vec<_>>(),
            ["mary", "ann", "molly"]
        );
        assert_eq!(f.given().first(), Some("mary"));
        assert_eq!(f.given().len(), 3);
        assert_eq!(
            f.family_tokens().iter().collect::<Vec<_>>(),
            ["smith", "jones"]
        );
        assert!(f.family_tokens().contains("jones") && !f.family_tokens().contains("smithjones"));
        assert_eq!(f.family(), Some("smithjones"));
        assert_eq!(f.nhs(), Some("9434765919"));
        assert_eq!(f.ni(), None);
        assert_eq!(f.email(), Some("mary.ann+care@gmail.com"));
        assert_eq!(f.mailbox(), Some("maryann@gmail.com"));
        assert_eq!(f.mobiles().iter().collect::<Vec<_>>(), ["+447700900123"]);
        assert_eq!(f.landlines().iter().collect::<Vec<_>>(), ["+442079460018"]);
        assert!(
            f.mobiles()
                .shares(features(&[(Field::Mobile, "+44 7700 900123")]).mobiles())
        );
        assert!(!f.mobiles().shares(f.landlines()));
        assert_eq!(f.postcode(), Some("SW1A 1AA"));
        assert_eq!(f.outward(), Some("SW1A"));
    }

    #[test]
    fn a_record_without_identifiers_has_empty_parts() {
        let f = features(&[(Field::FamilyName, "O'Brien")]);
        assert!(f.given().is_empty() && f.given().first().is_none());
        assert_eq!(f.given().len(), 0);
        assert_eq!(f.family(), Some("obrien"));
        assert_eq!(
            (
                f.nhs(),
                f.ni(),
                f.email(),
                f.mailbox(),
                f.postcode(),
                f.outward()
            ),
            (None, None, None, None, None, None)
        );
        assert!(f.mobiles().is_empty() && f.landlines().is_empty());
        assert!(!f.mobiles().shares(f.landlines()));
    }

    /// What a full link stores of a record reads back as it was: every part, date, age,
    /// gender and key; anything else is refused rather than misread.
    #[test]
    fn stored_features_read_back_as_they_were() {
        let records = [
            features(&[
                (Field::GivenName, "Mary-Ann"),
                (Field::FamilyName, "Smith Jones"),
                (Field::BirthDate, "1950-02-03"),
                (Field::Gender, "female"),
                (Field::NhsNumber, "943 476 5919"),
                (Field::Mobile, "07700 900123"),
                (Field::Phone, "020 7946 0018"),
                (Field::Postcode, "sw1a 1aa"),
            ]),
            features(&[(Field::FamilyName, "O'Brien"), (Field::GivenAge, "87")]),
            Features::default(),
        ];
        for f in &records {
            let keys = block_keys(f, MatchConfig::default().blocking());
            let blob = f.encode(&keys);
            let (back, back_keys) = Features::decode(&blob).expect("reads back");
            assert_eq!(format!("{back:?}"), format!("{f:?}"));
            assert_eq!(back_keys, keys);
            assert!(Features::decode(&blob[..blob.len() - 1]).is_none());
            let mut other_version = blob.clone();
            other_version[0] = 2;
            assert!(Features::decode(&other_version).is_none());
        }
        assert!(records[0].birth_date.is_some() && records[0].gender.is_some());
        assert_eq!(records[1].given_age, Some(87));
        let blob = records[0].encode(&block_keys(&records[0], MatchConfig::default().blocking()));
        assert!(Features::decode(&blob[..30]).is_none(), "cut short");
    }
}

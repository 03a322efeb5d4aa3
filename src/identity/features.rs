//! What matching reads from one record, normalised once, and the record's blocking keys.

use chrono::NaiveDate;
use xxhash_rust::xxh3::xxh3_64;

use super::normalise::{email_mailbox, is_generic_email, name_tokens, nickname_groups, soundex};
use crate::model::{CanonicalValues, Field, Gender, Value};

/// The normalised identifying values of one record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Features {
    /// Folded tokens of the given name, then of the preferred name (no repeats).
    pub given: Vec<String>,
    /// Folded tokens of the family name.
    pub family_tokens: Vec<String>,
    /// The family-name tokens joined (`smith-jones` and `smith jones` → `smithjones`).
    pub family: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// An estimated age, used only when the birth date is unknown.
    pub given_age: Option<i64>,
    /// Female or male; other values are not compared.
    pub gender: Option<Gender>,
    pub nhs: Option<String>,
    pub ni: Option<String>,
    /// Canonical email, unless it names a role (`info@`) or a placeholder.
    pub email: Option<String>,
    /// The mailbox behind `email` (`+tag` removed, Gmail dots removed).
    pub mailbox: Option<String>,
    /// UK mobiles in E.164.
    pub mobiles: Vec<String>,
    /// Other numbers in E.164: often shared by a household or a care home.
    pub landlines: Vec<String>,
    pub postcode: Option<String>,
    pub outward: Option<String>,
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
        let mut mobiles = Vec::new();
        let mut landlines = Vec::new();
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
        Features {
            given,
            family_tokens,
            family,
            birth_date: values.birth_date(),
            given_age,
            gender,
            nhs: values.nhs_number().map(|n| n.as_str().to_owned()),
            ni: values.ni_number().map(|n| n.as_str().to_owned()),
            email,
            mailbox,
            mobiles,
            landlines,
            outward: postcode.as_ref().map(|p| p.outward().to_owned()),
            postcode: postcode.map(|p| p.as_str().to_owned()),
        }
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
    Name,
    /// Postcode + family-name Soundex: only pairs with a side lacking a birth date.
    PostcodeFamily,
}

impl KeyKind {
    /// True when only pairs with at least one record lacking a birth date are compared.
    pub fn needs_missing_birth_date(self) -> bool {
        matches!(self, KeyKind::Name | KeyKind::PostcodeFamily)
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

/// The blocking keys of a record, sorted by hash, without repeats.
pub(crate) fn block_keys(f: &Features) -> Vec<BlockKey> {
    let mut keys = Vec::with_capacity(10);
    if let Some(nhs) = &f.nhs {
        keys.push(key(KeyKind::Nhs, &[nhs]));
    }
    if let Some(ni) = &f.ni {
        keys.push(key(KeyKind::Ni, &[ni]));
    }
    if let Some(mailbox) = &f.mailbox {
        keys.push(key(KeyKind::Mailbox, &[mailbox]));
    }
    for phone in f.mobiles.iter().chain(&f.landlines) {
        keys.push(key(KeyKind::Phone, &[phone]));
    }
    let family_code = f
        .family
        .as_deref()
        .and_then(soundex)
        .map(|c| String::from_utf8_lossy(&c).into_owned());
    // The given name's first token and the preferred name's (a nickname used as first name).
    let mut labels: Vec<String> = Vec::new();
    for token in f.given.iter().filter(|t| t.len() > 1).take(3) {
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
        for label in &labels {
            keys.push(key(KeyKind::Name, &[code, label]));
        }
        if let Some(postcode) = &f.postcode {
            keys.push(key(KeyKind::PostcodeFamily, &[postcode, code]));
        }
    }
    keys.sort_unstable();
    keys.dedup_by_key(|k| k.hash);
    // Kept for the life of the link index: no spare capacity.
    keys.shrink_to_fit();
    keys
}

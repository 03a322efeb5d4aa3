//! Seeded generator of realistic UK people and of each API's copy of them.
//!
//! Every person is a pure function of `(seed, number)`, so nothing about the humans is kept in
//! memory: [`person`] regenerates one on demand. Which APIs hold a person, and the noise of each
//! copy (nicknames, email case, phone and NHS formats, typos) come from their own seeded streams.

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use super::http_util::{carehq_time, iso_no_zone, iso_z};
use super::names;
use super::store::{Meta, ObjWriter, Record};
use crate::source::kind::SourceKind;

/// Generated records are created between these instants (fixed, so a seed is reproducible).
pub const EPOCH_START_MS: i64 = 1_514_764_800_000; // 2018-01-01
pub const EPOCH_END_MS: i64 = 1_793_491_200_000; // 2026-10-31
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Resident,
    Staff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

/// One generated human, as the truth behind every record (and the PII a test may grep logs for).
#[derive(Clone, Debug, Serialize)]
pub struct PersonTruth {
    pub number: u64,
    pub role: Role,
    pub sex: Sex,
    pub title: String,
    pub first_name: String,
    pub nicknames: Vec<String>,
    pub last_name: String,
    pub dob: NaiveDate,
    /// Personal email for residents, work email for staff.
    pub email: String,
    /// National format, digits only (`07...` or `01...`).
    pub phone: String,
    /// 10 digits, no spaces, valid modulus-11 check digit.
    pub nhs_number: String,
    pub ni_number: String,
    pub address_1: String,
    pub address_2: String,
    pub town: String,
    pub county: String,
    pub postcode: String,
    /// Index of the care home (CareHQ location / PACE organisation).
    pub home: usize,
    /// The twin this person was generated from (same surname, dob, address).
    pub twin_of: Option<u64>,
    /// The person whose name this person shares (a hard negative for linking).
    pub namesake_of: Option<u64>,
}

impl PersonTruth {
    pub fn age_on(&self, day: NaiveDate) -> i32 {
        let mut age = day.year() - self.dob.year();
        if (day.month(), day.day()) < (self.dob.month(), self.dob.day()) {
            age -= 1;
        }
        age
    }

    pub fn phone_is_mobile(&self) -> bool {
        self.phone.starts_with("07")
    }
}

fn ymd(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// SplitMix64 step: a cheap, good mixer for deriving independent seeds.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub fn stream(seed: u64, tag: u64, n: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(seed ^ tag.wrapping_mul(0xA24B_AED4_963E_E407)) ^ n))
}

fn kind_tag(kind: SourceKind) -> u64 {
    match kind {
        SourceKind::CarehqServiceUsers => 11,
        SourceKind::CarehqUsers => 12,
        SourceKind::MarketplaceUsers => 13,
        SourceKind::CarevalidateUsers => 14,
        SourceKind::PaceUsers => 15,
    }
}

/// Index skewed towards the start of a list (common names first).
fn skewed(rng: &mut ChaCha8Rng, len: usize) -> usize {
    let u: f64 = rng.r#gen();
    ((u * u * len as f64) as usize).min(len - 1)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

fn reference_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 30).unwrap_or_default()
}

/// The part of a person drawn before twin/namesake adjustments.
fn core(seed: u64, n: u64) -> PersonTruth {
    let mut rng = stream(seed, 1, n);
    let role = draw_role(&mut rng, n);
    let female_share = if role == Role::Resident { 0.66 } else { 0.8 };
    let sex = if rng.gen_bool(female_share) {
        Sex::Female
    } else {
        Sex::Male
    };
    let list = if sex == Sex::Female {
        names::FEMALE
    } else {
        names::MALE
    };
    let (first, nicks) = list[skewed(&mut rng, list.len())];
    let last = names::SURNAMES[skewed(&mut rng, names::SURNAMES.len())];
    let age = if role == Role::Resident {
        rng.gen_range(65..=102)
    } else {
        rng.gen_range(18..=66)
    };
    let dob = reference_day() - chrono::Duration::days(age * 365 + rng.gen_range(0..365));
    let title = match (sex, role) {
        (_, _) if rng.gen_bool(0.02) => "Dr",
        (Sex::Male, _) => "Mr",
        (Sex::Female, Role::Resident) => *pick(&mut rng, &["Mrs", "Mrs", "Miss", "Ms"]),
        (Sex::Female, Role::Staff) => *pick(&mut rng, &["Mrs", "Miss", "Ms", "Ms"]),
    };
    let (town, county, outwards) = *pick(&mut rng, names::TOWNS);
    let postcode = format!(
        "{} {}{}{}",
        pick(&mut rng, outwards),
        rng.gen_range(1..10),
        *pick(&mut rng, POSTCODE_LETTERS) as char,
        *pick(&mut rng, POSTCODE_LETTERS) as char
    );
    let (address_1, address_2) = if rng.gen_bool(0.15) {
        (
            pick(&mut rng, names::HOUSE_NAMES).to_string(),
            format!(
                "{} {}",
                rng.gen_range(1..120),
                pick(&mut rng, names::STREETS)
            ),
        )
    } else {
        (
            rng.gen_range(1..240).to_string(),
            pick(&mut rng, names::STREETS).to_string(),
        )
    };
    let phone = if role == Role::Resident && rng.gen_bool(0.35) {
        format!(
            "01{}{:02} {:06}",
            rng.gen_range(1..10),
            rng.gen_range(0..100),
            rng.gen_range(0..1_000_000)
        )
        .replace(' ', "")
    } else {
        format!(
            "07{}{:08}",
            rng.gen_range(4..10),
            rng.gen_range(0..100_000_000)
        )
    };
    PersonTruth {
        number: n,
        role,
        sex,
        title: title.to_string(),
        first_name: first.to_string(),
        nicknames: nicks.iter().map(|s| s.to_string()).collect(),
        last_name: last.to_string(),
        dob,
        email: String::new(),
        phone,
        nhs_number: nhs_number(&mut rng),
        ni_number: ni_number(&mut rng),
        address_1,
        address_2,
        town: town.to_string(),
        county: county.to_string(),
        postcode,
        home: rng.gen_range(0..names::CARE_HOMES.len()),
        twin_of: None,
        namesake_of: None,
    }
}

/// The first draw of a person's stream: their role (persons 0 and 1 fixed, so every API has data).
fn draw_role(rng: &mut ChaCha8Rng, n: u64) -> Role {
    let resident = rng.gen_bool(0.65);
    match n {
        0 => Role::Resident,
        1 => Role::Staff,
        _ if resident => Role::Resident,
        _ => Role::Staff,
    }
}

const POSTCODE_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

/// Generates person `n` of the population of `seed`: a pure function.
pub fn person(seed: u64, n: u64) -> PersonTruth {
    let mut p = core(seed, n);
    let mut rng = stream(seed, 2, n);
    if n % 2 == 1 && rng.gen_bool(0.01) {
        // Twin of n-1 (never itself a twin, being even): same surname, dob, address, role.
        let sib = core(seed, n - 1);
        let sib_landline = !sib.phone_is_mobile();
        let list = if p.sex == Sex::Female {
            names::FEMALE
        } else {
            names::MALE
        };
        let mut i = skewed(&mut rng, list.len());
        if list[i].0 == sib.first_name {
            i = (i + 1) % list.len();
        }
        p.first_name = list[i].0.to_string();
        p.nicknames = list[i].1.iter().map(|s| s.to_string()).collect();
        p.role = sib.role;
        p.last_name = sib.last_name;
        p.dob = sib.dob;
        p.address_1 = sib.address_1;
        p.address_2 = sib.address_2;
        p.town = sib.town;
        p.county = sib.county;
        p.postcode = sib.postcode;
        p.home = sib.home;
        if !p.phone_is_mobile() && sib_landline {
            p.phone = sib.phone;
        }
        p.twin_of = Some(n - 1);
    } else if n >= 2 && rng.gen_bool(0.02) {
        // Same name as someone else, otherwise a different human.
        let other = core(seed, n - 2);
        if other.sex != p.sex {
            p.title = other.title;
        }
        p.sex = other.sex;
        p.first_name = other.first_name;
        p.nicknames = other.nicknames;
        p.last_name = other.last_name;
        p.namesake_of = Some(n - 2);
    }
    p.email = email_for(&p, &mut rng);
    p
}

fn ascii_fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let m = match c {
            'á' | 'à' | 'â' | 'ä' | 'ą' => 'a',
            'é' | 'è' | 'ê' | 'ë' | 'ę' => 'e',
            'í' | 'ï' => 'i',
            'ó' | 'ö' | 'ô' => 'o',
            'ú' | 'ü' => 'u',
            'ç' | 'ć' => 'c',
            'ł' => 'l',
            'Ł' => 'L',
            'ń' => 'n',
            'ś' => 's',
            'ż' | 'ź' => 'z',
            'Á' => 'A',
            'É' => 'E',
            other => other,
        };
        out.push(m);
    }
    out
}

fn email_local(s: &str) -> String {
    ascii_fold(s)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// Unique per person: the local part carries the person number.
fn email_for(p: &PersonTruth, rng: &mut ChaCha8Rng) -> String {
    let first = email_local(&p.first_name);
    let last = email_local(&p.last_name);
    if p.role == Role::Staff {
        return format!("{first}.{last}{}@{}", p.number, names::STAFF_DOMAIN);
    }
    let domain = pick(rng, names::EMAIL_DOMAINS);
    match rng.gen_range(0..4) {
        0 => format!("{first}.{last}{}@{domain}", p.number),
        1 => format!(
            "{}{last}{}@{domain}",
            &first[..1.min(first.len())],
            p.number
        ),
        2 => format!("{first}{last}{}@{domain}", p.number),
        _ => format!("{last}.{first}{}@{domain}", p.number),
    }
}

fn nhs_check_digit(d: &[u32; 9]) -> Option<u32> {
    let sum: u32 = d.iter().enumerate().map(|(i, v)| v * (10 - i as u32)).sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        c => Some(c),
    }
}

fn nhs_number(rng: &mut ChaCha8Rng) -> String {
    loop {
        let mut d = [0u32; 9];
        d[0] = rng.gen_range(4..=6);
        for v in d.iter_mut().skip(1) {
            *v = rng.gen_range(0..10);
        }
        if let Some(c) = nhs_check_digit(&d) {
            let mut s: String = d.iter().map(|v| char::from(b'0' + *v as u8)).collect();
            s.push(char::from(b'0' + c as u8));
            return s;
        }
    }
}

/// True when a 10-digit NHS number (spaces ignored) has a valid modulus-11 check digit.
pub fn nhs_is_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 10 || s.chars().any(|c| !c.is_ascii_digit() && c != ' ') {
        return false;
    }
    let mut d = [0u32; 9];
    d.copy_from_slice(&digits[..9]);
    nhs_check_digit(&d) == Some(digits[9])
}

fn ni_number(rng: &mut ChaCha8Rng) -> String {
    const FIRST: &[u8] = b"ABCEGHJKLMNOPRSTWXYZ";
    const SECOND: &[u8] = b"ABCEGHJKLMNPRSTWXYZ";
    format!(
        "{}{}{:06}{}",
        *pick(rng, FIRST) as char,
        *pick(rng, SECOND) as char,
        rng.gen_range(0..1_000_000),
        *pick(rng, b"ABCD") as char
    )
}

// ---------------------------------------------------------------------------------------------
// Noise applied to one copy of a person.

fn typo(rng: &mut ChaCha8Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 4 {
        return s.to_string();
    }
    let i = rng.gen_range(1..chars.len() - 1);
    match rng.gen_range(0..3) {
        0 => chars.swap(i, i + 1),
        1 => {
            chars.remove(i);
        }
        _ => {
            let c = *pick(rng, b"aeiourstnl") as char;
            chars[i] = c;
        }
    }
    chars.into_iter().collect()
}

/// A copy's first name: sometimes the nickname, folded accents or a typo.
fn copy_first(rng: &mut ChaCha8Rng, p: &PersonTruth) -> String {
    let r: f64 = rng.r#gen();
    if r < 0.06 && !p.nicknames.is_empty() {
        pick(rng, &p.nicknames).clone()
    } else if r < 0.10 {
        ascii_fold(&p.first_name)
    } else if r < 0.115 {
        typo(rng, &p.first_name)
    } else if r < 0.125 {
        p.first_name.to_uppercase()
    } else {
        p.first_name.clone()
    }
}

fn copy_last(rng: &mut ChaCha8Rng, p: &PersonTruth) -> String {
    let r: f64 = rng.r#gen();
    let l = &p.last_name;
    if r < 0.05 && l.contains('\'') {
        match rng.gen_range(0..3) {
            0 => l.replace('\'', ""),
            1 => l.replace('\'', "\u{2019}"),
            _ => l.replace('\'', " "),
        }
    } else if r < 0.08 && l.contains('-') {
        l.replace('-', " ")
    } else if r < 0.11 {
        ascii_fold(l)
    } else if r < 0.125 {
        typo(rng, l)
    } else if r < 0.135 {
        l.to_uppercase()
    } else {
        l.clone()
    }
}

fn copy_preferred(rng: &mut ChaCha8Rng, p: &PersonTruth) -> Option<String> {
    let r: f64 = rng.r#gen();
    if r < 0.25 && !p.nicknames.is_empty() {
        Some(pick(rng, &p.nicknames).clone())
    } else if r < 0.35 {
        Some(String::new())
    } else {
        None
    }
}

fn copy_email(rng: &mut ChaCha8Rng, email: &str, whitespace: bool) -> String {
    let r: f64 = rng.r#gen();
    let mut e = if r < 0.10 {
        // Capitalised local part: Margaret.Thompson12@...
        let mut out = String::with_capacity(email.len());
        let mut up = true;
        for c in email.chars() {
            out.push(if up { c.to_ascii_uppercase() } else { c });
            up = c == '.' && !out.contains('@');
        }
        out
    } else if r < 0.14 {
        email.to_uppercase()
    } else {
        email.to_string()
    };
    if whitespace && rng.gen_bool(0.05) {
        e = match rng.gen_range(0..3) {
            0 => format!(" {e}"),
            1 => format!("{e} "),
            _ => format!(" {e}  "),
        };
    }
    e
}

/// A UK phone number in one of the formats people type.
fn copy_phone(rng: &mut ChaCha8Rng, national: &str) -> String {
    let rest = &national[1..];
    let mobile = national.starts_with("07");
    match rng.gen_range(0..6) {
        0 | 1 => national.to_string(),
        2 if mobile => format!("{} {}", &national[..5], &national[5..]),
        2 => format!("{} {}", &national[..4], &national[4..]),
        3 => format!("+44{rest}"),
        4 if mobile => format!("+44 {} {}", &rest[..4], &rest[4..]),
        4 => format!("+44 {} {}", &rest[..3], &rest[3..]),
        _ if mobile => format!("{} {} {}", &national[..5], &national[5..8], &national[8..]),
        _ => format!("({}) {}", &national[..4], &national[4..]),
    }
}

fn e164(national: &str) -> String {
    format!("+44{}", &national[1..])
}

fn copy_nhs(rng: &mut ChaCha8Rng, nhs: &str) -> String {
    let mut digits: Vec<char> = nhs.chars().collect();
    if rng.gen_bool(0.01) {
        // A mistyped digit: the check digit no longer matches.
        let i = rng.gen_range(0..9);
        let d = digits[i].to_digit(10).unwrap_or(0);
        digits[i] = char::from(b'0' + ((d + 1) % 10) as u8);
    }
    let s: String = digits.into_iter().collect();
    if rng.gen_bool(0.5) {
        format!("{} {} {}", &s[..3], &s[3..6], &s[6..])
    } else {
        s
    }
}

fn copy_ni(rng: &mut ChaCha8Rng, ni: &str) -> String {
    if rng.gen_bool(0.3) {
        format!(
            "{} {} {} {} {}",
            &ni[..2],
            &ni[2..4],
            &ni[4..6],
            &ni[6..8],
            &ni[8..]
        )
    } else if rng.gen_bool(0.1) {
        ni.to_lowercase()
    } else {
        ni.to_string()
    }
}

fn copy_postcode(rng: &mut ChaCha8Rng, pc: &str) -> String {
    match rng.gen_range(0..10) {
        0 => pc.replace(' ', ""),
        1 => pc.to_lowercase(),
        _ => pc.to_string(),
    }
}

fn ob(rng: &mut ChaCha8Rng, p_null: f64, p_true: f64) -> Option<bool> {
    if rng.gen_bool(p_null) {
        None
    } else {
        Some(rng.gen_bool(p_true))
    }
}

fn hex_id(rng: &mut ChaCha8Rng, secs: i64, seq: u64) -> String {
    format!(
        "{:08x}{:010x}{:06x}",
        secs as u32,
        rng.r#gen::<u64>() & 0xff_ffff_ffff,
        seq & 0xff_ffff
    )
}

fn uuid_v4(rng: &mut ChaCha8Rng) -> String {
    let a: u128 = rng.r#gen();
    let a = (a & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn firebase_uid(rng: &mut ChaCha8Rng) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..28).map(|_| *pick(rng, ALPHA) as char).collect()
}

/// The CareHQ location ids (one per care home), fixed per seed.
pub fn location_ids(seed: u64) -> Vec<String> {
    let mut rng = stream(seed, 3, 0);
    (0..names::CARE_HOMES.len())
        .map(|i| hex_id(&mut rng, 1_514_764_800 + i as i64 * 1000, i as u64))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Which APIs hold whom.

/// One record to render: person `person`, copy number `copy` (1 for an in-source duplicate).
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub person: u64,
    pub copy: u8,
    pub created_ms: i64,
}

/// The kinds that hold a copy of person `n`, with the number of copies (1, or 2 for a duplicate).
pub fn membership(seed: u64, n: u64) -> Vec<(SourceKind, u8)> {
    let mut rng = stream(seed, 4, n);
    let resident = core_role(seed, n) == Role::Resident;
    let candidates: &[(SourceKind, f64)] = if resident {
        &[
            (SourceKind::CarehqServiceUsers, 0.95),
            (SourceKind::MarketplaceUsers, 0.45),
            (SourceKind::CarevalidateUsers, 0.50),
        ]
    } else {
        &[
            (SourceKind::CarehqUsers, 0.90),
            (SourceKind::PaceUsers, 0.85),
        ]
    };
    let mut out = Vec::with_capacity(3);
    for (kind, p) in candidates {
        let held = n < 2 || rng.gen_bool(*p);
        let dup = rng.gen_bool(0.005);
        if held {
            out.push((*kind, if dup { 2 } else { 1 }));
        }
    }
    out
}

/// The role of person `n` (twins share their sibling's role).
fn core_role(seed: u64, n: u64) -> Role {
    let mut rng = stream(seed, 2, n);
    let m = if n % 2 == 1 && rng.gen_bool(0.01) {
        n - 1
    } else {
        n
    };
    draw_role(&mut stream(seed, 1, m), m)
}

pub fn created_for(seed: u64, kind: SourceKind, person: u64, copy: u8) -> i64 {
    let h = mix(mix(seed ^ kind_tag(kind)) ^ person.wrapping_mul(7) ^ copy as u64);
    EPOCH_START_MS + (h % (EPOCH_END_MS - EPOCH_START_MS) as u64) as i64
}

/// Entries of every kind for persons `0..people`, each kind sorted by creation time.
pub fn plan(seed: u64, people: u64) -> Vec<(SourceKind, Vec<Entry>)> {
    let mut per_kind: Vec<(SourceKind, Vec<Entry>)> =
        SourceKind::ALL.iter().map(|k| (*k, Vec::new())).collect();
    for n in 0..people {
        for (kind, copies) in membership(seed, n) {
            let slot = SourceKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
            for copy in 0..copies {
                per_kind[slot].1.push(Entry {
                    person: n,
                    copy,
                    created_ms: created_for(seed, kind, n, copy),
                });
            }
        }
    }
    for (kind, entries) in per_kind.iter_mut() {
        if *kind != SourceKind::PaceUsers {
            entries.sort_by_key(|e| (e.created_ms, e.person, e.copy));
        }
    }
    per_kind
}

/// Renders records for `entries` (sequence numbers from `first_seq`), on up to two threads.
pub fn render_all(
    seed: u64,
    kind: SourceKind,
    entries: &[Entry],
    first_seq: u64,
    locations: &[String],
) -> Vec<Record> {
    let threads = if entries.len() > 5_000 { 2 } else { 1 };
    let chunk = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .enumerate()
            .map(|(ci, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, e)| {
                            let seq = first_seq + (ci * chunk + i) as u64;
                            let p = person(seed, e.person);
                            render(seed, kind, &p, e.copy, seq, e.created_ms, locations)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// One API's record for one copy of a person.
pub fn render(
    seed: u64,
    kind: SourceKind,
    p: &PersonTruth,
    copy: u8,
    seq: u64,
    created_ms: i64,
    locations: &[String],
) -> Record {
    let mut rng = stream(
        seed,
        kind_tag(kind) * 1000 + copy as u64,
        p.number ^ (seq << 40),
    );
    // Modified some time after creation, never past the end of the generated span.
    let room = (EPOCH_END_MS - created_ms).clamp(1, 400 * DAY_MS);
    let modified_ms = created_ms + rng.gen_range(0..room);
    match kind {
        SourceKind::CarehqServiceUsers => {
            carehq_service_user(&mut rng, p, seq, created_ms, modified_ms, locations)
        }
        SourceKind::CarehqUsers => {
            carehq_user(&mut rng, p, seq, created_ms, modified_ms, locations)
        }
        SourceKind::MarketplaceUsers => {
            marketplace_user(&mut rng, p, copy, created_ms, modified_ms)
        }
        SourceKind::CarevalidateUsers => carevalidate_user(&mut rng, p, copy, created_ms),
        SourceKind::PaceUsers => pace_user(&mut rng, p, copy),
    }
}

/// CareHQ's address hash (keys in the API's order); all empty strings when unknown.
#[derive(Serialize)]
struct Address<'a> {
    address_1: &'a str,
    address_2: &'a str,
    country: &'a str,
    county: &'a str,
    postcode: &'a str,
    town: &'a str,
}

const EMPTY_ADDRESS: Address<'static> = Address {
    address_1: "",
    address_2: "",
    country: "",
    county: "",
    postcode: "",
    town: "",
};

fn address_obj<'a>(
    a1: &'a str,
    a2: &'a str,
    town: &'a str,
    county: &'a str,
    postcode: &'a str,
    country: &'a str,
) -> Address<'a> {
    Address {
        address_1: a1,
        address_2: a2,
        country,
        county,
        postcode,
        town,
    }
}

fn carehq_service_user(
    rng: &mut ChaCha8Rng,
    p: &PersonTruth,
    seq: u64,
    created_ms: i64,
    modified_ms: i64,
    locations: &[String],
) -> Record {
    let id = hex_id(rng, created_ms / 1000, seq);
    let first = copy_first(rng, p);
    let last = copy_last(rng, p);
    let reference = (seq + 1).to_string();
    let initials: String = [&first, &last]
        .iter()
        .filter_map(|s| ascii_fold(s).chars().find(|c| c.is_ascii_alphabetic()))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let service = *pick(
        rng,
        &[
            "residential_home",
            "residential_home",
            "nursing_home",
            "nursing_home",
            "home_care",
            "live_in_care",
            "assisted_living",
            "specialist_care",
        ],
    );
    let community = matches!(service, "home_care" | "live_in_care");
    let status = *pick(
        rng,
        &[
            "active", "active", "active", "active", "pending", "inactive",
        ],
    );
    let inactive = status == "inactive";
    let missing_dob = rng.gen_bool(0.08);
    // The API reports the age as of today, as CareHQ would; birth dates stay tied to the seed.
    let age = p.age_on(chrono::Utc::now().date_naive());
    let dementia = rng.gen_bool(0.35);
    let nursing = service == "nursing_home";
    let fnc_status = if nursing {
        Some(*pick(
            rng,
            &["not_applicable", "applied_for", "granted", "declined"],
        ))
    } else {
        None
    };
    let dt = |ms: i64| carehq_time(ms);
    let left_ms = modified_ms;
    let street_known = community || rng.gen_bool(0.2);
    let street_no_county = rng.gen_bool(0.3);
    let street_postcode = copy_postcode(rng, &p.postcode);
    let street_country = *pick(rng, &["United Kingdom", "UK", "", "England"]);
    let mut w = ObjWriter::with_capacity(2200, 80);
    w.field("_id", &id)
        .field("account_code", &format!("{initials}{:04}", seq + 1))
        .field("anonymized", &None::<String>)
        .field("assistance_with_dressing", &ob(rng, 0.1, 0.6))
        .field("assistance_with_eating", &ob(rng, 0.1, 0.4))
        .field("assistance_with_medication", &ob(rng, 0.1, 0.7))
        .field("assistance_with_personal_care", &ob(rng, 0.1, 0.6))
        .field("bill_self_for_expenses", &ob(rng, 0.3, 0.5))
        .field(
            "billing_comms_preference",
            &if rng.gen_bool(0.6) {
                None
            } else {
                Some(vec![*pick(rng, &["email", "post", "do_not_send"])])
            },
        )
        .field("billing_enabled", &rng.gen_bool(0.8))
        .field(
            "broadcare_number",
            &if rng.gen_bool(0.85) {
                None
            } else {
                Some(format!("{:08}", rng.gen_range(0..100_000_000)))
            },
        )
        .field("created", &dt(created_ms))
        .field("day_care_deactivated", &None::<String>)
        .field("day_care_leaving_notes", &None::<String>)
        .field("day_care_reason_for_leaving", &None::<String>)
        .field("day_care_status", "inactive")
        .field(
            "day_care_use",
            *pick(rng, &["not_used", "not_used", "not_used", "inclusive"]),
        )
        .field("deactivated", &inactive.then(|| dt(left_ms)))
        .field("dementia", &dementia)
        .field(
            "dementia_challenging_behaviour",
            &(dementia && rng.gen_bool(0.5)).then_some(rng.gen_bool(0.3)),
        )
        .field(
            "dementia_prone_to_wander",
            &(dementia && rng.gen_bool(0.5)).then_some(rng.gen_bool(0.3)),
        )
        .field("dob", &(!missing_dob).then(|| ymd(p.dob)))
        .field(
            "email_invoices_to",
            &if rng.gen_bool(0.7) {
                None
            } else {
                Some(vec![format!(
                    "{}.family{}@{}",
                    email_local(&p.last_name),
                    p.number,
                    pick(rng, names::EMAIL_DOMAINS)
                )])
            },
        )
        .field("end_of_life_care", &rng.gen_bool(0.05))
        .field("first_name", &first)
        .field(
            "fnc_application_date",
            &(fnc_status == Some("applied_for"))
                .then(|| carehq_time(created_ms).chars().take(10).collect::<String>()),
        )
        .field("fnc_application_status", &fnc_status)
        .field(
            "funding_at_risk",
            &rng.gen_bool(0.03).then(|| dt(modified_ms)),
        )
        .field(
            "funding_type",
            *pick(
                rng,
                &[
                    "private",
                    "private",
                    "local_authority",
                    "local_authority_top_up",
                    "chc",
                    "chc_lifestyle",
                    "block_bed",
                    "dta_spot",
                    "not_sure",
                ],
            ),
        )
        .field("future_billing_disabled", &ob(rng, 0.7, 0.1))
        .field(
            "genders",
            &if rng.gen_bool(0.03) {
                None
            } else {
                Some(vec![if p.sex == Sex::Female {
                    "female"
                } else {
                    "male"
                }])
            },
        )
        .field(
            "genders_other",
            &if rng.gen_bool(0.5) { None } else { Some("") },
        )
        .field("given_age", &missing_dob.then_some(age))
        .field("has_direct_debit_mandate", &ob(rng, 0.6, 0.3))
        .field(
            "invoices_service_user_id_fields",
            &if rng.gen_bool(0.8) {
                None
            } else {
                Some(vec!["full_name", "ref"])
            },
        )
        .field("large_print_requested_for_billing", &ob(rng, 0.8, 0.2))
        .field("last_name", &last)
        .field(
            "leaving_notes",
            &if inactive {
                Some("Moved to family.")
            } else if rng.gen_bool(0.5) {
                Some("")
            } else {
                None
            },
        )
        .field(
            "location",
            &locations.get(p.home).cloned().unwrap_or_default(),
        )
        .field("location_contact_for_expenses", &None::<String>)
        .field(
            "lon_lat",
            &if community && rng.gen_bool(0.6) {
                Some([rng.gen_range(-3.5..0.5f64), rng.gen_range(50.5..55.5f64)])
            } else {
                None
            },
        )
        .field(
            "min_ledger_balance",
            &rng.gen_bool(0.1).then(|| rng.gen_range(1..50) * 1000),
        )
        .field(
            "mobile",
            &if p.phone_is_mobile() && rng.gen_bool(0.5) {
                Some(copy_phone(rng, &p.phone))
            } else {
                None
            },
        )
        .field("mobility_bed_bound", &ob(rng, 0.6, 0.1))
        .field("mobility_can_walk_unaided", &ob(rng, 0.3, 0.5))
        .field("mobility_requires_aid_or_hoist", &ob(rng, 0.6, 0.3))
        .field("mobility_uses_stick", &ob(rng, 0.6, 0.3))
        .field("mobility_uses_wheelchair", &ob(rng, 0.6, 0.3))
        .field("modified", &dt(modified_ms))
        .field(
            "national_insurance_number",
            &rng.gen_bool(0.4).then(|| copy_ni(rng, &p.ni_number)),
        )
        .field(
            "nhs_number",
            &match rng.gen_range(0..10) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(copy_nhs(rng, &p.nhs_number)),
            },
        )
        .field("notes", &{
            let shown = p.nicknames.first().unwrap_or(&first);
            pick(rng, names::NOTES).replace("{n}", if rng.gen_bool(0.5) { shown } else { &first })
        })
        .field("partner_in_care_home", &None::<String>)
        .field(
            "patient_id",
            &match rng.gen_range(0..3) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!("P{:06}", rng.gen_range(0..1_000_000))),
            },
        )
        .field(
            "payment_method",
            &if rng.gen_bool(0.3) {
                None
            } else {
                Some(*pick(
                    rng,
                    &[
                        "card",
                        "cash",
                        "cheque",
                        "standing_order",
                        "direct_debit",
                        "bac",
                    ],
                ))
            },
        )
        .field(
            "postal_address",
            &rng.gen_bool(0.1).then(|| {
                address_obj(
                    &p.address_1,
                    &p.address_2,
                    &p.town,
                    &p.county,
                    &p.postcode,
                    "United Kingdom",
                )
            }),
        )
        .field("preferred_name", &copy_preferred(rng, p))
        .field(
            "reason_for_leaving",
            &inactive.then(|| *pick(rng, &["deceased", "moved", "hospital"])),
        )
        .field("ref", &reference)
        .field("registered_blind", &ob(rng, 0.6, 0.05))
        .field(
            "religions",
            &if rng.gen_bool(0.3) {
                None
            } else {
                Some(vec![*pick(
                    rng,
                    &[
                        "christian",
                        "christian",
                        "no_religion",
                        "muslim",
                        "jewish",
                        "hindu",
                        "sikh",
                        "buddhist",
                    ],
                )])
            },
        )
        .field(
            "religions_other",
            &if rng.gen_bool(0.5) { None } else { Some("") },
        )
        .field("send_balance_alert", &ob(rng, 0.7, 0.3))
        .field("service", service)
        .field("service_user_contact_for_expenses", &None::<String>)
        .field(
            "source_care_enquiry",
            &rng.gen_bool(0.2)
                .then(|| hex_id(rng, created_ms / 1000 - 86_400 * 14, seq)),
        )
        .field("statement_ref", &None::<String>)
        .field("status", status)
        .field("street_address", &{
            if street_known {
                address_obj(
                    &p.address_1,
                    &p.address_2,
                    &p.town,
                    if street_no_county { "" } else { &p.county },
                    &street_postcode,
                    street_country,
                )
            } else {
                EMPTY_ADDRESS
            }
        })
        .field(
            "title",
            &if rng.gen_bool(0.3) {
                String::new()
            } else {
                p.title.clone()
            },
        )
        .field("transferred_from", &None::<String>)
        .field("visually_impaired", &rng.gen_bool(0.1));
    let (body, members) = w.finish();
    Record {
        key: id.into(),
        person: p.number,
        body,
        members,
        meta: Meta {
            created_ms,
            modified_ms,
            name_lc: Some(format!("{first} {last}").to_lowercase().into()),
            ..Meta::default()
        },
    }
}

const LOCATION_ROLES: &[(&str, &str)] = &[
    ("carer", "Carer"),
    ("carer", "Carer"),
    ("carer", "Carer"),
    ("senior_carer", "Senior carer"),
    ("nurse", "Nurse"),
    ("manager", "Manager"),
    ("deputy_manager", "Deputy manager"),
    ("administrator", "Administrator"),
    ("receptionist", "Receptionist"),
    ("customer_relations_adviser", "Customer relations adviser"),
    ("other", "Other"),
];

fn carehq_user(
    rng: &mut ChaCha8Rng,
    p: &PersonTruth,
    seq: u64,
    created_ms: i64,
    modified_ms: i64,
    locations: &[String],
) -> Record {
    let id = hex_id(rng, created_ms / 1000, seq);
    let first = copy_first(rng, p);
    let last = copy_last(rng, p);
    let email = copy_email(rng, &p.email, true);
    let role = match rng.gen_range(0..100) {
        0..=1 => "account_owner",
        2..=7 => "regional_manager",
        8..=13 => "care_advisor",
        _ => "location_user",
    };
    let loc = locations.get(p.home).cloned().unwrap_or_default();
    let (lrole, llabel) = if role == "location_user" {
        let (r, l) = *pick(rng, LOCATION_ROLES);
        (Some(r), Some(l))
    } else {
        (None, None)
    };
    let suspended = rng.gen_bool(0.06);
    let invited = rng.gen_bool(0.8);
    let dt = |ms: i64| carehq_time(ms);
    let list_empty: Option<Vec<String>> = if rng.gen_bool(0.5) {
        None
    } else {
        Some(vec![])
    };
    let mut w = ObjWriter::with_capacity(1200, 32);
    w.field("_id", &id)
        .field("created", &dt(created_ms))
        .field("email", &email)
        .field("first_name", &first)
        .field(
            "invite_accepted",
            &(invited && rng.gen_bool(0.9)).then(|| dt(created_ms + DAY_MS)),
        )
        .field("invited", &invited.then(|| dt(created_ms + 60_000)))
        .field("last_name", &last)
        .field(
            "location_groups",
            &if role == "regional_manager" {
                Some(vec![hex_id(rng, 1_514_764_800, 1)])
            } else {
                list_empty.clone()
            },
        )
        .field("location_role", &lrole)
        .field("location_role_label", &llabel)
        .field(
            "location_role_other",
            &(lrole == Some("other")).then_some("Activities coordinator"),
        )
        .field(
            "locations",
            &match role {
                "location_user" => Some(vec![loc.clone()]),
                "regional_manager" => Some(locations.iter().take(3).cloned().collect()),
                _ => list_empty,
            },
        )
        .field("mfa_enabled", &ob(rng, 0.5, 0.4))
        .field(
            "mobile",
            &if rng.gen_bool(0.7) {
                Some(copy_phone(rng, &p.phone))
            } else {
                None
            },
        )
        .field("modified", &dt(modified_ms))
        .field("notify_on_admission_or_discharge", &ob(rng, 0.6, 0.5))
        .field("notify_on_care_fund_depleted", &ob(rng, 0.6, 0.5))
        .field("notify_on_data_export", &ob(rng, 0.6, 0.5))
        .field("notify_on_ledger_balance_low", &ob(rng, 0.6, 0.5))
        .field("notify_on_reply_received", &ob(rng, 0.6, 0.5))
        .field("notify_on_service_user_funding_at_risk", &ob(rng, 0.6, 0.5))
        .field("owner_operator", &(role == "account_owner").then_some(true))
        .field(
            "owner_operator_location",
            &(role == "account_owner").then_some(loc),
        )
        .field(
            "picture",
            &rng.gen_bool(0.2)
                .then(|| format!("https://assets.carehq.co.uk/users/{id}.jpg")),
        )
        .field(
            "reason_for_suspension",
            &suspended.then(|| *pick(rng, &["Left the company", "Long term sick", ""])),
        )
        .field(
            "regional_operator",
            &(role == "regional_manager").then(|| rng.gen_bool(0.5)),
        )
        .field("role", role)
        .field("show_finance_inbox", &ob(rng, 0.7, 0.3))
        .field("suspended", &suspended.then(|| dt(modified_ms)));
    let (body, members) = w.finish();
    Record {
        key: id.into(),
        person: p.number,
        body,
        members,
        meta: Meta {
            created_ms,
            modified_ms,
            name_lc: Some(format!("{first} {last}").to_lowercase().into()),
            email_lc: Some(email.trim().to_lowercase().into()),
            suspended,
            ..Meta::default()
        },
    }
}

/// A number that is sometimes a string and sometimes an integer.
#[derive(Serialize)]
#[serde(untagged)]
enum StrOrInt {
    S(String),
    I(u32),
}

fn marketplace_user(
    rng: &mut ChaCha8Rng,
    p: &PersonTruth,
    copy: u8,
    created_ms: i64,
    updated_ms: i64,
) -> Record {
    let id = uuid_v4(rng);
    let first = copy_first(rng, p);
    let last = copy_last(rng, p);
    let mut email = copy_email(rng, &p.email, true);
    if copy > 0 {
        email = email.replacen('@', "+care@", 1);
    }
    let dob_ms = p
        .dob
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0);
    let dob = match rng.gen_range(0..10) {
        0 => None,
        1 => Some(format!("{}T00:00:00+00:00", ymd(p.dob))),
        _ => Some(iso_z(dob_ms)),
    };
    let married = rng.gen_bool(0.35);
    let children = rng.gen_range(0..5u32);
    let smoker = rng.gen_bool(0.12);
    let drinker = rng.gen_bool(0.5);
    let (num, street) = if p.address_1.chars().all(|c| c.is_ascii_digit()) {
        (Some(p.address_1.clone()), p.address_2.clone())
    } else {
        (None, format!("{}, {}", p.address_1, p.address_2))
    };
    let mut w = ObjWriter::with_capacity(1400, 42);
    w.field(
        "meta",
        &if rng.gen_bool(0.7) {
            json!({})
        } else {
            json!({"source": "care-portal", "consent": "2024"})
        },
    )
    .field("first_name", &first)
    .field("surname", &last)
    .field("preferred_name", &copy_preferred(rng, p))
    .field("dob", &dob)
    .field(
        "title",
        &if rng.gen_bool(0.2) {
            None
        } else {
            Some(p.title.clone())
        },
    )
    .field("postcode", &copy_postcode(rng, &p.postcode))
    .field("building_number", &num)
    .field("address_1", &street)
    .field(
        "address_2",
        &if rng.gen_bool(0.5) { None } else { Some("") },
    )
    .field("address_3", &None::<String>)
    .field("town_city", &p.town)
    .field(
        "county",
        &if rng.gen_bool(0.3) {
            None
        } else {
            Some(p.county.clone())
        },
    )
    .field(
        "country_of_residence",
        *pick(
            rng,
            &["United Kingdom", "United Kingdom", "GB", "UK", "England"],
        ),
    )
    .field(
        "nationality",
        &if rng.gen_bool(0.2) {
            None
        } else {
            Some(*pick(
                rng,
                &["British", "British", "Irish", "Polish", "Indian"],
            ))
        },
    )
    .field(
        "gender",
        *pick(
            rng,
            if p.sex == Sex::Female {
                &["female", "Female", "F"]
            } else {
                &["male", "Male", "M"]
            },
        ),
    )
    .field(
        "relationship_status",
        *pick(
            rng,
            if married {
                &["married"][..]
            } else {
                &["widowed", "single", "divorced", "widowed"][..]
            },
        ),
    )
    .field(
        "number_of_children",
        &if rng.gen_bool(0.5) {
            StrOrInt::S(children.to_string())
        } else {
            StrOrInt::I(children)
        },
    )
    .field(
        "ages_of_children",
        &if children == 0 {
            String::new()
        } else {
            (0..children)
                .map(|i| (p.age_on(reference_day()) - 24 - i as i32 * 3).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    )
    .field(
        "partner_first_name",
        &married.then(|| {
            pick(
                rng,
                if p.sex == Sex::Female {
                    names::MALE
                } else {
                    names::FEMALE
                },
            )
            .0
        }),
    )
    .field(
        "partner_dob",
        &married.then(|| iso_z(dob_ms - rng.gen_range(-800..800) * DAY_MS)),
    )
    .field("partner_surname", &married.then(|| p.last_name.clone()))
    .field(
        "partner_sex",
        &married.then_some(if p.sex == Sex::Female {
            "male"
        } else {
            "female"
        }),
    )
    .field("relationship_to_partner", &married.then_some("spouse"))
    .field("smoker", if smoker { "yes" } else { "no" })
    .field(
        "number_of_cigarettes_per_week",
        &if smoker {
            Some(rng.gen_range(5..140))
        } else if rng.gen_bool(0.5) {
            Some(0)
        } else {
            None
        },
    )
    .field("drinker", if drinker { "yes" } else { "no" })
    .field(
        "number_of_units_per_week",
        &if drinker {
            Some(rng.gen_range(1..30))
        } else {
            None
        },
    )
    .field(
        "national_insurance_number",
        &rng.gen_bool(0.5).then(|| copy_ni(rng, &p.ni_number)),
    )
    .field(
        "passport_number",
        &rng.gen_bool(0.3)
            .then(|| format!("{:09}", rng.gen_range(100_000_000..999_999_999u32))),
    )
    .field(
        "phone_number",
        &(!p.phone_is_mobile()).then(|| copy_phone(rng, &p.phone)),
    )
    .field(
        "mobile_number",
        &p.phone_is_mobile().then(|| copy_phone(rng, &p.phone)),
    )
    .field("last_visited", &iso_z(updated_ms))
    .field("visits", &rng.gen_range(1..60))
    .field("terms_conditions", &rng.gen_bool(0.95))
    .field(
        "associated_cp_user",
        &rng.gen_bool(0.4).then(|| uuid_v4(rng)),
    )
    .field("email", &email)
    .field("id", &id)
    .field("created", &iso_z(created_ms))
    .field("updated", &iso_z(updated_ms));
    let (body, members) = w.finish();
    Record {
        key: id.into(),
        person: p.number,
        body,
        members,
        meta: Meta {
            created_ms,
            modified_ms: updated_ms,
            email_lc: Some(email.trim().to_lowercase().into()),
            ..Meta::default()
        },
    }
}

fn carevalidate_user(rng: &mut ChaCha8Rng, p: &PersonTruth, copy: u8, created_ms: i64) -> Record {
    let first = copy_first(rng, p);
    let last = copy_last(rng, p);
    let mut email = copy_email(rng, &p.email, false);
    if copy > 0 {
        email = email.replacen('@', ".old@", 1);
    }
    let langs: Vec<&str> = if p.first_name.contains(['ł', 'Ł']) || p.last_name.ends_with("ski") {
        vec!["en", "pl"]
    } else if rng.gen_bool(0.05) {
        vec!["en", "cy"]
    } else {
        vec!["en"]
    };
    let (address2, address) = if p.address_1.chars().all(|c| c.is_ascii_digit()) {
        (String::new(), format!("{} {}", p.address_1, p.address_2))
    } else {
        (p.address_1.clone(), p.address_2.clone())
    };
    let mut w = ObjWriter::with_capacity(700, 18);
    w.field("email", &email)
        .field("firstName", &first)
        .field("lastName", &last)
        .field("dob", &ymd(p.dob))
        .field("phoneNumber", &if rng.gen_bool(0.1) { None } else { Some(e164(&p.phone)) })
        .field("gender", if rng.gen_bool(0.01) { "OTHER" } else if p.sex == Sex::Female { "FEMALE" } else { "MALE" })
        .field("address", &address)
        .field("address2", &address2)
        .field("city", &p.town)
        .field("state", &p.county)
        .field("country", "GB")
        .field("postalCode", &copy_postcode(rng, &p.postcode))
        .field("allergies", *pick(rng, names::ALLERGIES))
        .field("currentMedications", *pick(rng, names::MEDICATIONS))
        .field("healthConditions", *pick(rng, names::CONDITIONS))
        .field("languagePreferences", &langs)
        .field(
            "communication",
            &json!({"smsNotificationsDisabled": rng.gen_bool(0.3), "notificationsDisabled": rng.gen_bool(0.1)}),
        );
    let (body, members) = w.finish();
    Record {
        key: email.clone().into(),
        person: p.number,
        body,
        members,
        meta: Meta {
            created_ms,
            modified_ms: created_ms,
            uid: Some(firebase_uid(rng).into()),
            email_lc: Some(email.trim().to_lowercase().into()),
            case_assigned: rng.gen_bool(0.3),
            ..Meta::default()
        },
    }
}

fn pace_user(rng: &mut ChaCha8Rng, p: &PersonTruth, copy: u8) -> Record {
    let mut guid = uuid_v4(rng);
    if rng.gen_bool(0.1) {
        guid = guid.to_uppercase();
    }
    let first = copy_first(rng, p);
    let last = copy_last(rng, p);
    let spaced = rng.gen_bool(0.2);
    let preferred = copy_preferred(rng, p).filter(|s| !s.is_empty());
    let phone = rng.gen_bool(0.6).then(|| copy_phone(rng, &p.phone));
    let email = copy_email(rng, &p.email, true);
    let user_id = match rng.gen_range(0..3) {
        0 => format!(
            "{}{}",
            email_local(&p.first_name).chars().next().unwrap_or('x'),
            email_local(&p.last_name)
        ),
        1 => email.trim().to_lowercase(),
        _ => format!("EMP{:05}", p.number % 100_000),
    };
    let user_id = if copy > 0 {
        format!("{user_id}2")
    } else {
        user_id
    };
    let home = names::CARE_HOMES
        .get(p.home)
        .copied()
        .unwrap_or("Head Office");
    let start_ms = EPOCH_START_MS + rng.gen_range(0..3000) * DAY_MS;
    let dob_ms = p
        .dob
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0);
    let mut w = ObjWriter::with_capacity(700, 14);
    w.field("UserGuid", &guid)
        .field("IsLocked", &rng.gen_bool(0.02))
        .field(
            "UserStatus",
            *pick(
                rng,
                &[
                    "Active",
                    "Active",
                    "Active",
                    "Active",
                    "Active",
                    "Active",
                    "Archived",
                    "Suspended",
                    "Long term absent",
                ],
            ),
        );
    if rng.gen_bool(0.9) {
        w.field("Organisation", home);
    }
    if rng.gen_bool(0.85) {
        w.field(
            "ParentOrganisation",
            &if rng.gen_bool(0.2) {
                None
            } else {
                Some("Northern Care Group")
            },
        );
    }
    w.field("UserId", &user_id)
        .field("FirstName", &first)
        .field("LastName", &last);
    if spaced {
        w.field("Preferred Name", &preferred)
            .field("Telephone Number", &phone);
    } else {
        w.field("PreferredName", &preferred)
            .field("TelephoneNumber", &phone);
    }
    w.field("EmailAddress", &email);
    if rng.gen_bool(0.9) {
        let mut details = serde_json::Map::new();
        details.insert("Height of the employee".into(), json!(""));
        details.insert("Previous known medical issues".into(), json!(""));
        details.insert("US Version".into(), json!("False"));
        details.insert(
            "Pregnant".into(),
            json!(if p.sex == Sex::Female && rng.gen_bool(0.03) {
                "True"
            } else {
                "False"
            }),
        );
        details.insert("Job Title".into(), json!(pick(rng, names::JOB_TITLES)));
        details.insert("Start Date".into(), json!(iso_no_zone(start_ms)));
        if rng.gen_bool(0.6) {
            details.insert("Date of Birth".into(), json!(iso_no_zone(dob_ms)));
        }
        w.field("AdditionalDetails", &details);
    }
    let (body, members) = w.finish();
    Record {
        key: guid.into(),
        person: p.number,
        body,
        members,
        meta: Meta {
            email_lc: Some(email.trim().to_lowercase().into()),
            ..Meta::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_valid() {
        let mut rng = stream(1, 1, 1);
        for _ in 0..1000 {
            let n = nhs_number(&mut rng);
            assert!(nhs_is_valid(&n), "{n}");
        }
        assert!(nhs_is_valid("943 476 5919"));
        // The docs' example number fails the modulus-11 check.
        assert!(!nhs_is_valid("485 777 3456"));
    }

    #[test]
    fn people_are_reproducible_and_varied() {
        let a: Vec<_> = (0..200).map(|n| person(7, n)).collect();
        let b: Vec<_> = (0..200).map(|n| person(7, n)).collect();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.email, y.email);
            assert_eq!(x.dob, y.dob);
        }
        let c = person(8, 5);
        assert!(a[5].email != c.email || a[5].dob != c.dob);
        let residents = a.iter().filter(|p| p.role == Role::Resident).count();
        assert!((100..170).contains(&residents), "{residents}");
        let emails: std::collections::HashSet<_> = a.iter().map(|p| p.email.clone()).collect();
        assert_eq!(emails.len(), a.len());
    }

    #[test]
    fn twins_and_namesakes_exist() {
        let ps: Vec<_> = (0..5000).map(|n| person(3, n)).collect();
        let twins: Vec<_> = ps.iter().filter(|p| p.twin_of.is_some()).collect();
        assert!(!twins.is_empty());
        for t in twins {
            let sib = &ps[t.twin_of.unwrap_or(0) as usize];
            assert_eq!(t.last_name, sib.last_name);
            assert_eq!(t.dob, sib.dob);
            assert_eq!(t.postcode, sib.postcode);
            assert_ne!(t.first_name, sib.first_name);
        }
        assert!(ps.iter().any(|p| p.namesake_of.is_some()));
    }

    #[test]
    fn small_populations_fill_every_source() {
        let plan = plan(42, 2);
        for (kind, entries) in plan {
            assert!(!entries.is_empty(), "{kind} empty");
        }
    }
}

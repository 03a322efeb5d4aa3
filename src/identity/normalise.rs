//! Name and email normalisation, nicknames and string similarity for matching.
//!
//! Everything here works on folded names: lower case, accents removed (`Siobhán` → `siobhan`,
//! `Zoë` → `zoe`, `Łukasz` → `lukasz`), apostrophes dropped (`O'Brien` → `obrien`), split into
//! tokens on white space, hyphens and other punctuation.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The ASCII letters a character folds to, if it is a letter we know.
fn fold_char(c: char) -> Option<&'static str> {
    let s = match c {
        'a'..='z' | 'A'..='Z' => return None,
        'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' | 'ā' | 'ą' | 'ă' => "a",
        'Á' | 'À' | 'Â' | 'Ä' | 'Ã' | 'Å' | 'Ā' | 'Ą' | 'Ă' => "a",
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => "c",
        'ď' | 'đ' | 'Ď' | 'Đ' => "d",
        'é' | 'è' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' | 'É' | 'È' | 'Ê' | 'Ë' | 'Ē' | 'Ę' | 'Ě' => {
            "e"
        }
        'í' | 'ì' | 'î' | 'ï' | 'ī' | 'Í' | 'Ì' | 'Î' | 'Ï' | 'Ī' => "i",
        'ł' | 'Ł' | 'ľ' | 'Ľ' | 'ĺ' | 'Ĺ' => "l",
        'ñ' | 'ń' | 'ň' | 'Ñ' | 'Ń' | 'Ň' => "n",
        'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' | 'ō' | 'ő' | 'Ó' | 'Ò' | 'Ô' | 'Ö' | 'Õ' | 'Ø' | 'Ō'
        | 'Ő' => "o",
        'ř' | 'Ř' => "r",
        'ś' | 'š' | 'ş' | 'Ś' | 'Š' | 'Ş' => "s",
        'ť' | 'ţ' | 'Ť' | 'Ţ' => "t",
        'ú' | 'ù' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'Ú' | 'Ù' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' => {
            "u"
        }
        'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "y",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        'ß' => "ss",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        _ => return Some(""),
    };
    Some(s)
}

/// Folded name tokens: `"Mary-Jane  O'Brien"` → `["mary", "jane", "obrien"]`.
pub fn name_tokens(name: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in name.chars() {
        if c.is_ascii_alphabetic() {
            current.push(c.to_ascii_lowercase());
        } else if matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '.') {
            // Apostrophes and initials' dots join: O'Brien, J.
        } else if let Some(folded) = fold_char(c).filter(|f| !f.is_empty()) {
            current.push_str(folded);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Common English (and a few Irish, Welsh and Polish) given-name variants and diminutives
/// found in UK records. A name may belong to several groups (`chris`, `pat`, `jo`).
const NICKNAME_GROUPS: &[&[&str]] = &[
    &[
        "margaret", "maggie", "peggy", "meg", "maggy", "marge", "madge",
    ],
    &["william", "bill", "billy", "will", "willie", "willy"],
    &["robert", "bob", "bobby", "rob", "robbie", "bert", "bertie"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "bette",
        "bess",
        "bessie",
        "eliza",
        "libby",
        "elisabeth",
    ],
    &["mary", "molly", "polly", "mae", "may", "mamie"],
    &["patricia", "pat", "patsy", "trish", "tricia", "patty"],
    &["patrick", "pat", "paddy"],
    &["susan", "sue", "susie"],
    &["barbara", "babs", "barb"],
    &["dorothy", "dot", "dotty", "dolly"],
    &["christine", "chris", "chrissie"],
    &["christopher", "chris", "kit"],
    &["jennifer", "jenny", "jen", "jenni"],
    &[
        "catherine",
        "katherine",
        "kathryn",
        "cathy",
        "kathy",
        "kate",
        "katie",
        "kath",
        "kay",
        "cath",
        "kitty",
    ],
    &["kathleen", "kath", "kathy", "kay"],
    &["ann", "anne", "annie", "nancy"],
    &["janet", "jan"],
    &["sandra", "sandy"],
    &["alexander", "alex", "alec", "sandy"],
    &["valerie", "val"],
    &["marjorie", "marj", "margery", "marge"],
    &["gwendoline", "gwendolen", "gwen"],
    &["winifred", "winnie", "win"],
    &["edith", "edie", "edy"],
    &["florence", "flo", "florrie", "flossie"],
    &["rosemary", "rose", "rosie"],
    &["deborah", "debbie", "deb", "debra"],
    &["rebecca", "becky", "becca"],
    &["victoria", "vicky", "vicki", "tori"],
    &["nicola", "nicky", "nikki"],
    &["nicholas", "nick", "nicky"],
    &["charlotte", "lottie", "charlie"],
    &["jessica", "jess", "jessie"],
    &["emily", "em", "emmy"],
    &["olivia", "liv", "livvy"],
    &["joanne", "jo"],
    &["josephine", "jo", "josie"],
    &["angela", "angie"],
    &["alison", "ali", "allison"],
    &["maureen", "mo"],
    &["agnes", "nessie", "nessa"],
    &["siobhan"],
    &["malgorzata", "gosia", "margaret"],
    &["agnieszka", "aga"],
    &["john", "jack", "johnny", "jon"],
    &["jonathan", "jon", "jonny"],
    &["james", "jim", "jimmy", "jamie"],
    &["richard", "dick", "rick", "ricky", "rich", "richie"],
    &["thomas", "tom", "tommy"],
    &["charles", "charlie", "chas", "chuck"],
    &["edward", "ed", "eddie", "ted", "teddy", "ned"],
    &["edwin", "ed", "eddie"],
    &["henry", "harry", "hal", "hank"],
    &["frederick", "fred", "freddie", "freddy"],
    &["alfred", "alf", "alfie", "fred"],
    &["albert", "bert", "bertie", "al"],
    &["herbert", "herb", "bert"],
    &["arthur", "art", "artie"],
    &["george", "geordie"],
    &["joseph", "joe", "joey"],
    &["michael", "mike", "mick", "micky", "mickey"],
    &["david", "dave", "davy"],
    &["anthony", "tony", "antony"],
    &["kenneth", "ken", "kenny"],
    &["leonard", "len", "lenny", "leo"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["raymond", "ray"],
    &["stanley", "stan"],
    &["walter", "walt", "wally"],
    &["harold", "harry", "hal"],
    &["ernest", "ernie"],
    &["francis", "frank", "frankie"],
    &["frances", "fran", "frankie", "fanny"],
    &["peter", "pete"],
    &["stephen", "steven", "steve", "stevie"],
    &["andrew", "andy", "drew"],
    &["daniel", "dan", "danny"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammie"],
    &["matthew", "matt"],
    &["benjamin", "ben", "benny"],
    &["timothy", "tim", "timmy"],
    &["gerald", "gerry", "jerry"],
    &["geraldine", "gerry", "geri"],
    &["douglas", "doug", "dougie"],
    &["gordon", "gordie"],
    &["norman", "norm"],
    &["philip", "phillip", "phil"],
    &["terence", "terry"],
    &["lawrence", "laurence", "larry", "laurie"],
    &["vincent", "vince", "vinny"],
    &["wojciech", "wojtek"],
    &["lukasz"],
    &["sean", "shaun", "shawn"],
    &["eileen", "aileen"],
    &["tracey", "tracy"],
    &["lesley", "leslie", "les"],
    &["zoe"],
    &["chloe"],
    &["renee"],
    &["abigail", "abby", "abbie"],
    &["gillian", "gill", "jill"],
    &["theresa", "teresa", "tess", "tessa", "terri"],
    &["veronica", "ronnie"],
    &["evelyn", "eve", "evie"],
    &["beatrice", "bea", "beattie", "trixie"],
    &["harriet", "hattie"],
    &["louise", "lou"],
    &["louis", "lou"],
    &["oliver", "ollie", "olly"],
    &["geoffrey", "jeffrey", "geoff", "jeff"],
    &["mohammed", "muhammad", "mohammad", "mohamed", "mo"],
];

/// Name → the nickname groups it belongs to.
fn nickname_index() -> &'static HashMap<&'static str, Vec<u16>> {
    static INDEX: OnceLock<HashMap<&'static str, Vec<u16>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<u16>> = HashMap::new();
        for (i, group) in NICKNAME_GROUPS.iter().enumerate() {
            let id = u16::try_from(i).unwrap_or(u16::MAX);
            for name in group.iter() {
                let entry = map.entry(name).or_default();
                if !entry.contains(&id) {
                    entry.push(id);
                }
            }
        }
        map
    })
}

/// The nickname groups of a folded token (empty when it is in none).
pub fn nickname_groups(token: &str) -> &'static [u16] {
    nickname_index().get(token).map_or(&[], Vec::as_slice)
}

/// True when two folded tokens are variants of one name (`margaret`/`peggy`).
pub fn same_name_group(a: &str, b: &str) -> bool {
    let ga = nickname_groups(a);
    let gb = nickname_groups(b);
    ga.iter().any(|g| gb.contains(g))
}

/// Jaro–Winkler similarity in `[0, 1]` of two byte strings (prefix scale 0.1, up to 4).
pub fn jaro_winkler(a: &[u8], b: &[u8]) -> f64 {
    let jaro = jaro(a, b);
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
    jaro + prefix as f64 * 0.1 * (1.0 - jaro)
}

fn jaro(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut a_match = [false; 64];
    let mut b_match = [false; 64];
    let (a, b) = (&a[..a.len().min(64)], &b[..b.len().min(64)]);
    let mut matches = 0usize;
    for (i, ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        for j in lo..hi {
            if !b_match[j] && b[j] == *ca {
                a_match[i] = true;
                b_match[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0usize;
    for (i, ca) in a.iter().enumerate() {
        if !a_match[i] {
            continue;
        }
        while !b_match[j] {
            j += 1;
        }
        if *ca != b[j] {
            transpositions += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - (transpositions / 2) as f64) / m) / 3.0
}

/// The single edit that turns `a` into `b`, if they are at most one edit apart (optimal string
/// alignment distance ≤ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneEdit {
    None,
    Substitution,
    /// Two adjacent letters swapped.
    Transposition,
    /// A letter inserted or deleted.
    Indel,
}

pub fn one_edit(a: &[u8], b: &[u8]) -> Option<OneEdit> {
    if a == b {
        return Some(OneEdit::None);
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => {
            let diffs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            match diffs.as_slice() {
                [_] => Some(OneEdit::Substitution),
                [i, j] if *j == i + 1 && a[*i] == b[*j] && a[*j] == b[*i] => {
                    Some(OneEdit::Transposition)
                }
                _ => None,
            }
        }
        1 => {
            let first_diff = (0..short.len())
                .find(|&i| short[i] != long[i])
                .unwrap_or(short.len());
            (short[first_diff..] == long[first_diff + 1..]).then_some(OneEdit::Indel)
        }
        _ => None,
    }
}

/// True when `a` and `b` are at most one edit apart.
pub fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    one_edit(a, b).is_some()
}

/// A four-character Soundex code of a folded name (`robert` → `r163`), used for blocking.
pub fn soundex(name: &str) -> Option<[u8; 4]> {
    let bytes = name.as_bytes();
    let first = *bytes.first()?;
    let code = |c: u8| match c {
        b'b' | b'f' | b'p' | b'v' => b'1',
        b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
        b'd' | b't' => b'3',
        b'l' => b'4',
        b'm' | b'n' => b'5',
        b'r' => b'6',
        b'h' | b'w' => b'h',
        _ => b'0',
    };
    let mut out = [first, b'0', b'0', b'0'];
    let mut n = 1;
    let mut last = code(first);
    for &c in &bytes[1..] {
        let k = code(c);
        if k == b'h' {
            continue;
        }
        if k != b'0' && k != last {
            out[n] = k;
            n += 1;
            if n == 4 {
                break;
            }
        }
        last = k;
    }
    Some(out)
}

/// Local parts that name a role or a placeholder, not a person: an address like `info@` or
/// `reception@` is shared by many people, so it is never evidence of identity.
const GENERIC_LOCAL_PARTS: &[&str] = &[
    "info",
    "admin",
    "office",
    "reception",
    "enquiries",
    "enquiry",
    "contact",
    "hello",
    "care",
    "carehome",
    "manager",
    "management",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "test",
    "none",
    "nomail",
    "noemail",
    "no-email",
    "na",
    "n/a",
    "unknown",
    "family",
    "accounts",
    "finance",
    "billing",
    "hr",
    "support",
    "mail",
    "email",
    "staff",
    "nurses",
    "nursing",
    "home",
    "residents",
    "team",
    "general",
    "sales",
    "post",
    "example",
    "user",
    "null",
];

/// True when an email (already canonical: trimmed, lower case) names a role or placeholder.
pub fn is_generic_email(email: &str) -> bool {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let base = local.split('+').next().unwrap_or(local);
    GENERIC_LOCAL_PARTS.contains(&base)
        || base.contains("noreply")
        || base.contains("noemail")
        || matches!(
            domain,
            "example.com" | "example.org" | "example.net" | "test.com"
        )
}

/// The mailbox an address most likely delivers to: the `+tag` removed from the local part, and
/// dots too for Gmail, which ignores them. `Anna.Smith+care@gmail.com` → `annasmith@gmail.com`.
pub fn email_mailbox(email: &str) -> String {
    let Some((local, domain)) = email.split_once('@') else {
        return email.to_owned();
    };
    let base = local.split('+').next().unwrap_or(local);
    let base = if matches!(domain, "gmail.com" | "googlemail.com") {
        base.replace('.', "")
    } else {
        base.to_owned()
    };
    format!("{base}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_names() {
        assert_eq!(name_tokens("Siobhán"), ["siobhan"]);
        assert_eq!(name_tokens("ZOË"), ["zoe"]);
        assert_eq!(name_tokens("Małgorzata"), ["malgorzata"]);
        assert_eq!(name_tokens(" O\u{2019}Brien "), ["obrien"]);
        assert_eq!(name_tokens("Smith-Jones"), ["smith", "jones"]);
        assert_eq!(name_tokens("Mary  Ann"), ["mary", "ann"]);
        assert_eq!(name_tokens("J."), ["j"]);
        assert_eq!(name_tokens("—"), Vec::<String>::new());
    }

    #[test]
    fn nicknames() {
        assert!(same_name_group("margaret", "peggy"));
        assert!(same_name_group("bill", "william"));
        assert!(same_name_group("chris", "christine"));
        assert!(same_name_group("chris", "christopher"));
        assert!(!same_name_group("christine", "christopher"));
        assert!(!same_name_group("margaret", "mary"));
        assert!(!same_name_group("zzz", "zzz"));
    }

    #[test]
    fn jaro_winkler_known_values() {
        let jw = |a: &str, b: &str| (jaro_winkler(a.as_bytes(), b.as_bytes()) * 1000.0).round();
        assert_eq!(jw("martha", "marhta"), 961.0);
        assert_eq!(jw("dwayne", "duane"), 840.0);
        assert_eq!(jw("dixon", "dicksonx"), 813.0);
        assert_eq!(jw("same", "same"), 1000.0);
        assert_eq!(jw("abc", "xyz"), 0.0);
        assert_eq!(jw("", ""), 1000.0);
    }

    #[test]
    fn edits() {
        let e = |a: &str, b: &str| within_one_edit(a.as_bytes(), b.as_bytes());
        assert!(e("margaret", "margeret"));
        assert!(e("margaret", "margret"));
        assert!(e("margaret", "magraret"));
        assert!(e("ann", "anne"));
        assert!(!e("joan", "joanne"));
        assert!(
            e("jean", "joan"),
            "one substitution: see compare::token_level"
        );
        assert!(!e("stephen", "steven"));
        assert_eq!(one_edit(b"jona", b"joan"), Some(OneEdit::Transposition));
        assert_eq!(one_edit(b"ema", b"emma"), Some(OneEdit::Indel));
        assert_eq!(one_edit(b"ella", b"elsa"), Some(OneEdit::Substitution));
        assert_eq!(one_edit(b"ella", b"emma"), None);
    }

    #[test]
    fn soundex_codes() {
        let s = |n: &str| soundex(n).map(|c| String::from_utf8_lossy(&c).into_owned());
        assert_eq!(s("robert").as_deref(), Some("r163"));
        assert_eq!(s("rupert").as_deref(), Some("r163"));
        assert_eq!(s("ashcraft").as_deref(), Some("a261"));
        assert_eq!(s("tymczak").as_deref(), Some("t522"));
        assert_eq!(s(""), None);
    }

    #[test]
    fn emails() {
        assert!(is_generic_email("info@home.co.uk"));
        assert!(is_generic_email("reception+x@home.co.uk"));
        assert!(!is_generic_email("anna.smith@home.co.uk"));
        assert_eq!(email_mailbox("a.b+care@gmail.com"), "ab@gmail.com");
        assert_eq!(email_mailbox("a.b+care@nhs.net"), "a.b@nhs.net");
    }
}

//! E-mail address: trimmed, lower-cased, basic shape checked.

use std::fmt;

use super::InvalidValue;

/// A plausibly deliverable e-mail address, trimmed and lower-cased (`anna.murphy@example.org`).
///
/// The check is deliberately basic: one `@`, a non-empty local part of printable ASCII without
/// spaces or the RFC 5322 specials, and a domain of at least two dot-separated labels of letters,
/// digits and inner hyphens. Lower-casing the local part is a choice: every source we read treats
/// addresses case-insensitively, and CareValidate keys users by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

const MAX_LEN: usize = 254;

impl Email {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let text = input.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(InvalidValue::WrongLength);
        }
        if !text.is_ascii() {
            return Err(InvalidValue::BadCharacters);
        }
        let (local, domain) = text.split_once('@').ok_or(InvalidValue::BadFormat)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(InvalidValue::BadFormat);
        }
        if !local.bytes().all(is_local_byte) {
            return Err(InvalidValue::BadCharacters);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(InvalidValue::BadFormat);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || !labels.iter().all(|l| is_domain_label(l)) {
            return Err(InvalidValue::BadFormat);
        }
        Ok(Email(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !br#"()<>[]:;@\,""#.contains(&b)
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = Email::parse(input).map(|e| e.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn normalises_and_checks_shape() {
        check("anna.murphy@example.org", Ok("anna.murphy@example.org"));
        check("  Anna.Murphy@Example.ORG ", Ok("anna.murphy@example.org"));
        check("o'brien+care@nhs.net", Ok("o'brien+care@nhs.net"));
        check("a@b-c.co.uk", Ok("a@b-c.co.uk"));
        check("", Err(InvalidValue::Empty));
        check("anna", Err(InvalidValue::BadFormat));
        check("anna@", Err(InvalidValue::BadFormat));
        check("@example.org", Err(InvalidValue::BadFormat));
        check("anna@localhost", Err(InvalidValue::BadFormat));
        check("anna@@example.org", Err(InvalidValue::BadFormat));
        check("anna@exa_mple.org", Err(InvalidValue::BadFormat));
        check("anna@-example.org", Err(InvalidValue::BadFormat));
        check("anna@example..org", Err(InvalidValue::BadFormat));
        check("an na@example.org", Err(InvalidValue::BadCharacters));
        check("anna.@example.org", Err(InvalidValue::BadFormat));
        check("ånna@example.org", Err(InvalidValue::BadCharacters));
        // PACE's docs show addresses mangled by an e-mail obfuscator.
        check("[email protected]", Err(InvalidValue::BadFormat));
    }

    #[test]
    fn domain_is_after_the_at() {
        let e = Email::parse("x@care.example").expect("valid");
        assert_eq!(e.domain(), "care.example");
    }
}

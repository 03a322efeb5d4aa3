//! Telephone numbers, normalised to E.164 (`+447700900123`).
//!
//! UK numbers are accepted in every common spelling: `07700 900123`, `+44 7700 900123`,
//! `0044 7700 900123`, `+44 (0)7700 900123`, `(01632) 960-001`. Numbers of other countries are
//! accepted only with an international prefix (`+1 202 555 0100`, `001 202 555 0100`).
//! Digits without a trunk or international prefix (`7700900123`, `447700900123`) are rejected
//! rather than guessed.

use std::fmt;

use super::InvalidValue;

/// What kind of number this is. The rule of the product: a UK mobile is a person's canonical
/// `mobile`; any other number is their `phone`, whatever the source calls the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneKind {
    /// UK number whose national part starts with 7 (`07…`, `+447…`).
    UkMobile,
    /// Any other UK number: geographic (01, 02), non-geographic (03, 08, 09), ...
    UkOther,
    /// A number outside the UK.
    International,
}

/// A telephone number in E.164 form: `+`, country code, national number, digits only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " \t-.()+/".contains(c))
        {
            return Err(InvalidValue::BadCharacters);
        }
        let compact: String = trimmed.chars().filter(|c| !" \t-./".contains(*c)).collect();
        // `+44 (0)20…`: the bracketed trunk zero is dropped after an international prefix.
        let international = compact.starts_with('+') || compact.starts_with("00");
        let compact = if international {
            compact.replacen("(0)", "", 1)
        } else {
            compact
        };
        if (compact.contains('(') || compact.contains(')')) && !brackets_balanced(&compact) {
            return Err(InvalidValue::BadFormat);
        }
        let compact: String = compact.chars().filter(|c| *c != '(' && *c != ')').collect();
        if compact.rfind('+').is_some_and(|i| i > 0) {
            return Err(InvalidValue::BadFormat);
        }
        let digits = if let Some(rest) = compact.strip_prefix('+') {
            rest.to_owned()
        } else if let Some(rest) = compact.strip_prefix("00") {
            rest.to_owned()
        } else if let Some(national) = compact.strip_prefix('0') {
            format!("44{national}")
        } else {
            return Err(InvalidValue::BadFormat);
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue::BadFormat);
        }
        match digits.strip_prefix("44") {
            Some(national) => uk_from_national(national),
            None => international_from_digits(&digits),
        }
    }

    /// Parses and requires a UK mobile.
    pub fn parse_uk_mobile(input: &str) -> Result<Self, InvalidValue> {
        let number = PhoneNumber::parse(input)?;
        match number.kind() {
            PhoneKind::UkMobile => Ok(number),
            _ => Err(InvalidValue::NotUkMobile),
        }
    }

    /// Parses and requires anything but a UK mobile.
    pub fn parse_not_uk_mobile(input: &str) -> Result<Self, InvalidValue> {
        let number = PhoneNumber::parse(input)?;
        match number.kind() {
            PhoneKind::UkMobile => Err(InvalidValue::IsUkMobile),
            _ => Ok(number),
        }
    }

    /// The E.164 text, e.g. `+447700900123`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> PhoneKind {
        match self.0.strip_prefix("+44") {
            Some(national) if national.starts_with('7') => PhoneKind::UkMobile,
            Some(_) => PhoneKind::UkOther,
            None => PhoneKind::International,
        }
    }

    pub fn is_uk_mobile(&self) -> bool {
        self.kind() == PhoneKind::UkMobile
    }

    /// UK numbers in national form with a trunk zero (`07700900123`); others in E.164.
    pub fn national(&self) -> String {
        match self.0.strip_prefix("+44") {
            Some(national) => format!("0{national}"),
            None => self.0.clone(),
        }
    }
}

fn brackets_balanced(s: &str) -> bool {
    let mut open = false;
    for c in s.chars() {
        match c {
            '(' if open => return false,
            '(' => open = true,
            ')' if !open => return false,
            ')' => open = false,
            _ => {}
        }
    }
    !open
}

/// `national` is what follows `44`. A stray trunk zero (`+44 07700…`) is forgiven.
fn uk_from_national(national: &str) -> Result<PhoneNumber, InvalidValue> {
    let national = national.strip_prefix('0').unwrap_or(national);
    if !(9..=10).contains(&national.len()) {
        return Err(InvalidValue::WrongLength);
    }
    match national.as_bytes()[0] {
        b'1' | b'2' | b'3' | b'5' | b'8' | b'9' => {}
        // Mobiles (and the 070/076 ranges the product rule counts as mobile) have ten digits.
        b'7' if national.len() == 10 => {}
        b'7' => return Err(InvalidValue::WrongLength),
        _ => return Err(InvalidValue::PrefixNotAllocated),
    }
    Ok(PhoneNumber(format!("+44{national}")))
}

fn international_from_digits(digits: &str) -> Result<PhoneNumber, InvalidValue> {
    if digits.starts_with('0') {
        return Err(InvalidValue::BadFormat);
    }
    // E.164 allows at most 15 digits; fewer than 8 is no real subscriber number.
    if !(8..=15).contains(&digits.len()) {
        return Err(InvalidValue::WrongLength);
    }
    Ok(PhoneNumber(format!("+{digits}")))
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, PhoneKind), InvalidValue>) {
        let got = PhoneNumber::parse(input).map(|p| {
            let kind = p.kind();
            (p.0, kind)
        });
        let expected = expected.map(|(s, k)| (s.to_owned(), k));
        assert_eq!(got, expected, "input {input:?}");
    }

    use PhoneKind::{International, UkMobile, UkOther};

    #[test]
    fn uk_spellings() {
        check("07969813976", Ok(("+447969813976", UkMobile)));
        check("07832 963 114", Ok(("+447832963114", UkMobile)));
        check("+44 7832 963114", Ok(("+447832963114", UkMobile)));
        check("+447832963114", Ok(("+447832963114", UkMobile)));
        check("0044 7832 963114", Ok(("+447832963114", UkMobile)));
        check("+44 (0)7832 963114", Ok(("+447832963114", UkMobile)));
        check("+44 07832 963114", Ok(("+447832963114", UkMobile)));
        check("07832-963-114", Ok(("+447832963114", UkMobile)));
        check("01234567890", Ok(("+441234567890", UkOther)));
        check("(01632) 960-001", Ok(("+441632960001", UkOther)));
        check("+44 (0)20 7946 0000", Ok(("+442079460000", UkOther)));
        check("020 7946 0000", Ok(("+442079460000", UkOther)));
        check("0300 123 4567", Ok(("+443001234567", UkOther)));
        check("016977 3456", Ok(("+44169773456", UkOther)));
    }

    #[test]
    fn international() {
        check("+1 202 555 0100", Ok(("+12025550100", International)));
        check("+11111111111", Ok(("+11111111111", International)));
        check("00353 1 234 5678", Ok(("+35312345678", International)));
        check("+1234567", Err(InvalidValue::WrongLength));
        check("+1234567890123456", Err(InvalidValue::WrongLength));
    }

    #[test]
    fn rejects() {
        check("", Err(InvalidValue::Empty));
        check("7832963114", Err(InvalidValue::BadFormat));
        check("447832963114", Err(InvalidValue::BadFormat));
        check("0783296311", Err(InvalidValue::WrongLength));
        check("078329631145", Err(InvalidValue::WrongLength));
        check("0783296311 ext 2", Err(InvalidValue::BadCharacters));
        check("06123456789", Err(InvalidValue::PrefixNotAllocated));
        check("+44 12+34", Err(InvalidValue::BadFormat));
        check("(0783) (2963114", Err(InvalidValue::BadFormat));
        check("+", Err(InvalidValue::BadFormat));
        check("00", Err(InvalidValue::BadFormat));
    }

    #[test]
    fn mobile_or_not() {
        assert!(PhoneNumber::parse_uk_mobile("07832963114").is_ok());
        assert_eq!(
            PhoneNumber::parse_uk_mobile("01234567890"),
            Err(InvalidValue::NotUkMobile)
        );
        assert_eq!(
            PhoneNumber::parse_not_uk_mobile("07832963114"),
            Err(InvalidValue::IsUkMobile)
        );
        let n = PhoneNumber::parse("+447832963114").expect("valid");
        assert_eq!(n.national(), "07832963114");
    }
}

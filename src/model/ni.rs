//! National Insurance number (`AB123456C`), validated against HMRC's allocation rules.

use std::fmt;

use super::InvalidValue;

/// A National Insurance number in compact upper case: two prefix letters, six digits, a suffix
/// letter A–D (`AB123456C`).
///
/// HMRC rules: the first letter is not D, F, I, Q, U or V; the second not D, F, I, O, Q, U or V;
/// the prefixes BG, GB, KN, NK, NT, TN and ZZ are not allocated. `QQ123456C`, the number used in
/// examples everywhere (CareHQ's docs included), is therefore rejected as not allocated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NiNumber(String);

impl NiNumber {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            return Err(InvalidValue::BadCharacters);
        }
        let compact: String = trimmed
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if compact.len() != 9 {
            return Err(InvalidValue::WrongLength);
        }
        let b = compact.as_bytes();
        let shape = b[0].is_ascii_uppercase()
            && b[1].is_ascii_uppercase()
            && b[2..8].iter().all(u8::is_ascii_digit)
            && (b'A'..=b'D').contains(&b[8]);
        if !shape {
            return Err(InvalidValue::BadFormat);
        }
        let prefix = &compact[..2];
        let bad_first = b"DFIQUV".contains(&b[0]);
        let bad_second = b"DFIOQUV".contains(&b[1]);
        let unallocated = ["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"].contains(&prefix);
        if bad_first || bad_second || unallocated {
            return Err(InvalidValue::PrefixNotAllocated);
        }
        Ok(NiNumber(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NiNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = NiNumber::parse(input).map(|n| n.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn accepts_common_spellings() {
        check("AB123456C", Ok("AB123456C"));
        check("ab 12 34 56 c", Ok("AB123456C"));
        check(" JG-10-37-95-A ", Ok("JG103795A"));
    }

    #[test]
    fn rejects() {
        check("", Err(InvalidValue::Empty));
        check("QQ123456B", Err(InvalidValue::PrefixNotAllocated));
        check("GB123456A", Err(InvalidValue::PrefixNotAllocated));
        check("AO123456A", Err(InvalidValue::PrefixNotAllocated));
        check("DA123456A", Err(InvalidValue::PrefixNotAllocated));
        check("AB123456E", Err(InvalidValue::BadFormat));
        check("AB12345CC", Err(InvalidValue::BadFormat));
        check("AB123456", Err(InvalidValue::WrongLength));
        check("AB1234567C", Err(InvalidValue::WrongLength));
        check("AB123456/C", Err(InvalidValue::BadCharacters));
    }
}

//! NHS number: ten digits whose last digit is a modulus-11 check digit.

use std::fmt;

use super::InvalidValue;

/// A valid NHS number, held as exactly ten ASCII digits (`4857773457`).
///
/// Accepts spaces and dashes between digits (`485 777 3457`, `485-777-3457`). Rejects a wrong
/// check digit, digits whose check digit would be 10, and placeholders that pass the check
/// (`0000000000`, `1111111111`, ..., `0123456789`): two residents both holding a placeholder
/// must never be linked by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

impl NhsNumber {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        let mut digits = Vec::with_capacity(10);
        for c in trimmed.chars() {
            match c {
                '0'..='9' => digits.push(c as u8 - b'0'),
                ' ' | '-' => {}
                _ => return Err(InvalidValue::BadCharacters),
            }
        }
        if digits.len() != 10 {
            return Err(InvalidValue::WrongLength);
        }
        let check = check_digit(&digits[..9]).ok_or(InvalidValue::CheckDigitTen)?;
        if check != digits[9] {
            return Err(InvalidValue::CheckDigitMismatch);
        }
        let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        if is_placeholder(&text) {
            return Err(InvalidValue::Placeholder);
        }
        Ok(NhsNumber(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `3 3 4` grouping people read aloud: `485 777 3457`.
    pub fn spaced(&self) -> String {
        format!("{} {} {}", &self.0[..3], &self.0[3..6], &self.0[6..])
    }
}

/// Modulus 11 over the first nine digits, weights 10 down to 2. `None` when it comes to 10.
fn check_digit(first_nine: &[u8]) -> Option<u8> {
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        n => u8::try_from(n).ok(),
    }
}

fn is_placeholder(digits: &str) -> bool {
    let first = digits.as_bytes()[0];
    digits.bytes().all(|b| b == first) || digits == "0123456789"
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = NhsNumber::parse(input).map(|n| n.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn parses_and_validates() {
        check("4857773457", Ok("4857773457"));
        check("485 777 3457", Ok("4857773457"));
        check(" 485-777-3457 ", Ok("4857773457"));
        check("9434765919", Ok("9434765919"));
        // The example in CareHQ's own docs fails the check.
        check("485 777 3456", Err(InvalidValue::CheckDigitMismatch));
        check("485777345", Err(InvalidValue::WrongLength));
        check("48577734566", Err(InvalidValue::WrongLength));
        check("485/777/3456", Err(InvalidValue::BadCharacters));
        check("NHS4857773456", Err(InvalidValue::BadCharacters));
        check("", Err(InvalidValue::Empty));
        check("   ", Err(InvalidValue::Empty));
        // 1,2,3,4,5,6,7,8,9 weighted sum 210, 210 % 11 = 1, check 10: no such number.
        check("1234567890", Err(InvalidValue::CheckDigitTen));
        check("0000000000", Err(InvalidValue::Placeholder));
        check("1111111111", Err(InvalidValue::Placeholder));
        check("0123456789", Err(InvalidValue::Placeholder));
        check("４857773457", Err(InvalidValue::BadCharacters));
    }

    #[test]
    fn spaced_groups_three_three_four() {
        let n = NhsNumber::parse("4857773457").expect("valid");
        assert_eq!(n.spaced(), "485 777 3457");
    }
}

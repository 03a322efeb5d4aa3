//! Passport number: upper-case letters and digits, no separators.

use std::fmt;

use super::InvalidValue;

/// A passport number of any issuing country: 5 to 20 letters and digits, upper case, spaces
/// removed (UK passports are nine digits; others mix letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassportNumber(String);

impl PassportNumber {
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ')
        {
            return Err(InvalidValue::BadCharacters);
        }
        let compact: String = trimmed
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !(5..=20).contains(&compact.len()) {
            return Err(InvalidValue::WrongLength);
        }
        if compact.bytes().all(|b| b == compact.as_bytes()[0]) {
            return Err(InvalidValue::Placeholder);
        }
        Ok(PassportNumber(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PassportNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = PassportNumber::parse(input).map(|p| p.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn passport_numbers() {
        check("123456789", Ok("123456789"));
        check(" ab 123 4567 ", Ok("AB1234567"));
        check("", Err(InvalidValue::Empty));
        check("1234", Err(InvalidValue::WrongLength));
        check("000000000", Err(InvalidValue::Placeholder));
        check("12-34-56", Err(InvalidValue::BadCharacters));
    }
}

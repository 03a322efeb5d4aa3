//! UK postcode: upper case, one space before the three-character inward code (`NE2 1PA`).

use std::fmt;

use super::InvalidValue;

/// A UK postcode of a valid shape, e.g. `NE2 1PA`, `SW1A 1AA`, `W1A 0AX`, `GIR 0AA`.
///
/// Shape only: outward code `A9`, `A99`, `AA9`, `AA99`, `A9A` or `AA9A`; inward code `9AA`.
/// Whether the postcode exists is not checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Postcode(String);

impl Postcode {
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
        if !(5..=7).contains(&compact.len()) {
            return Err(InvalidValue::WrongLength);
        }
        let (outward, inward) = compact.split_at(compact.len() - 3);
        if !(is_outward(outward) || outward == "GIR") || !is_inward(inward) {
            return Err(InvalidValue::BadFormat);
        }
        Ok(Postcode(format!("{outward} {inward}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the space (`NE2`), a useful blocking key for matching.
    pub fn outward(&self) -> &str {
        self.0.split_once(' ').map_or(self.0.as_str(), |(o, _)| o)
    }
}

fn is_outward(s: &str) -> bool {
    let b = s.as_bytes();
    let alpha = |i: usize| b.get(i).is_some_and(u8::is_ascii_uppercase);
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    match b.len() {
        2 => alpha(0) && digit(1),
        3 => (alpha(0) && digit(1) && (digit(2) || alpha(2))) || (alpha(0) && alpha(1) && digit(2)),
        4 => alpha(0) && alpha(1) && digit(2) && (digit(3) || alpha(3)),
        _ => false,
    }
}

fn is_inward(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && b[0].is_ascii_digit() && b[1].is_ascii_uppercase() && b[2].is_ascii_uppercase()
}

impl fmt::Display for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = Postcode::parse(input).map(|p| p.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn shapes() {
        check("NE2 1PA", Ok("NE2 1PA"));
        check("ne21pa", Ok("NE2 1PA"));
        check("  ne2   1pa ", Ok("NE2 1PA"));
        check("M1 1AE", Ok("M1 1AE"));
        check("B33 8TH", Ok("B33 8TH"));
        check("CR2 6XH", Ok("CR2 6XH"));
        check("DN55 1PT", Ok("DN55 1PT"));
        check("W1A 0AX", Ok("W1A 0AX"));
        check("EC1A 1BB", Ok("EC1A 1BB"));
        check("sw1a1aa", Ok("SW1A 1AA"));
        check("GIR 0AA", Ok("GIR 0AA"));
    }

    #[test]
    fn rejects() {
        check("", Err(InvalidValue::Empty));
        check("01010", Err(InvalidValue::BadFormat));
        check("NE2-1PA", Err(InvalidValue::BadCharacters));
        check("NE2 1P", Err(InvalidValue::BadFormat));
        check("N 1PA", Err(InvalidValue::WrongLength));
        check("NEE21PAA", Err(InvalidValue::WrongLength));
        check("1E2 1PA", Err(InvalidValue::BadFormat));
        check("NE2 11A", Err(InvalidValue::BadFormat));
        check("ABC 1PA", Err(InvalidValue::BadFormat));
        check("ÑE2 1PA", Err(InvalidValue::BadCharacters));
    }

    #[test]
    fn outward_code() {
        let p = Postcode::parse("ne2 1pa").expect("valid");
        assert_eq!(p.outward(), "NE2");
    }
}

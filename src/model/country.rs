//! Country as an ISO 3166-1 alpha-2 code (`GB`).

use std::fmt;

use super::InvalidValue;

/// Names and codes we recognise, with the name written back to free-text sources. The first
/// entry for a code is its canonical name. Sources hold mostly UK addresses; other countries
/// can be added here as data shows them.
const COUNTRIES: &[(&str, &str)] = &[
    ("GB", "United Kingdom"),
    ("GB", "UK"),
    ("GB", "U.K."),
    ("GB", "Great Britain"),
    ("GB", "Britain"),
    ("GB", "England"),
    ("GB", "Scotland"),
    ("GB", "Wales"),
    ("GB", "Northern Ireland"),
    ("GB", "United Kingdom of Great Britain and Northern Ireland"),
    ("IE", "Ireland"),
    ("IE", "Republic of Ireland"),
    ("IM", "Isle of Man"),
    ("JE", "Jersey"),
    ("GG", "Guernsey"),
    ("US", "United States"),
    ("US", "USA"),
    ("US", "United States of America"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("ES", "Spain"),
    ("PT", "Portugal"),
    ("IT", "Italy"),
    ("NL", "Netherlands"),
    ("BE", "Belgium"),
    ("PL", "Poland"),
    ("RO", "Romania"),
    ("LT", "Lithuania"),
    ("IN", "India"),
    ("PK", "Pakistan"),
    ("BD", "Bangladesh"),
    ("NG", "Nigeria"),
    ("GH", "Ghana"),
    ("ZW", "Zimbabwe"),
    ("ZA", "South Africa"),
    ("PH", "Philippines"),
    ("JM", "Jamaica"),
    ("AU", "Australia"),
    ("NZ", "New Zealand"),
    ("CA", "Canada"),
];

/// A country code: two upper-case ASCII letters. `UK` is read as `GB`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(String);

impl CountryCode {
    /// Accepts a two-letter code (any case) or one of the names in the table (any case).
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if let Some((code, _)) = COUNTRIES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(trimmed))
        {
            return Ok(CountryCode((*code).to_owned()));
        }
        if trimmed.len() == 2 && trimmed.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Ok(CountryCode(trimmed.to_ascii_uppercase()));
        }
        Err(InvalidValue::UnknownCountry)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The English name for free-text fields, when the table knows it.
    pub fn name(&self) -> Option<&'static str> {
        COUNTRIES
            .iter()
            .find(|(code, _)| *code == self.0)
            .map(|(_, name)| *name)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, InvalidValue>) {
        let got = CountryCode::parse(input).map(|c| c.0);
        assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
    }

    #[test]
    fn names_and_codes() {
        check("GB", Ok("GB"));
        check("gb", Ok("GB"));
        check("UK", Ok("GB"));
        check(" united kingdom ", Ok("GB"));
        check("England", Ok("GB"));
        check("US", Ok("US"));
        check("Ireland", Ok("IE"));
        check("", Err(InvalidValue::Empty));
        check("Narnia", Err(InvalidValue::UnknownCountry));
        check("G1", Err(InvalidValue::UnknownCountry));
    }

    #[test]
    fn every_code_has_a_name() {
        for (code, _) in COUNTRIES {
            let c = CountryCode::parse(code).expect("code");
            assert!(c.name().is_some());
        }
        assert_eq!(
            CountryCode::parse("GB").ok().and_then(|c| c.name()),
            Some("United Kingdom")
        );
    }
}

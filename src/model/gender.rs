//! Gender: one canonical vocabulary for every source.

use std::fmt;

use super::InvalidValue;

/// The canonical gender vocabulary, stored as its snake_case token:
///
/// | token        | meaning                                                               |
/// |--------------|-----------------------------------------------------------------------|
/// | `female`     | the source says female / woman                                        |
/// | `male`       | the source says male / man                                            |
/// | `non_binary` | the source says non-binary                                            |
/// | `other`      | the source records a gender outside these three (CareHQ `transgender` or `intersex` alone, CareValidate `OTHER`, marketplace "other") |
/// | `unknown`    | the source explicitly says it is not known or not stated              |
///
/// A source that says nothing (null, empty list, empty string) gives no value at all, not
/// `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gender {
    Female,
    Male,
    NonBinary,
    Other,
    Unknown,
}

impl Gender {
    pub const ALL: [Gender; 5] = [
        Gender::Female,
        Gender::Male,
        Gender::NonBinary,
        Gender::Other,
        Gender::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Female => "female",
            Gender::Male => "male",
            Gender::NonBinary => "non_binary",
            Gender::Other => "other",
            Gender::Unknown => "unknown",
        }
    }

    /// The canonical token exactly (`non_binary`), as stored.
    pub fn from_token(token: &str) -> Result<Self, InvalidValue> {
        Gender::ALL
            .into_iter()
            .find(|g| g.as_str() == token)
            .ok_or(InvalidValue::NotInVocabulary)
    }

    /// Free text as people type it: `F`, `Female`, `woman`, `Non-binary`, `prefer not to say`.
    pub fn from_free_text(input: &str) -> Result<Self, InvalidValue> {
        let words: Vec<String> = input
            .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let key = words.join("_");
        let gender = match key.as_str() {
            "" => return Err(InvalidValue::Empty),
            "f" | "female" | "woman" => Gender::Female,
            "m" | "male" | "man" => Gender::Male,
            "non_binary" | "nonbinary" | "nb" | "enby" => Gender::NonBinary,
            "other" | "o" => Gender::Other,
            "unknown" | "u" | "not_known" | "not_stated" | "not_specified"
            | "prefer_not_to_say" | "undisclosed" => Gender::Unknown,
            _ => return Err(InvalidValue::NotInVocabulary),
        };
        Ok(gender)
    }
}

impl fmt::Display for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<Gender, InvalidValue>) {
        assert_eq!(Gender::from_free_text(input), expected, "input {input:?}");
    }

    #[test]
    fn free_text() {
        check("Female", Ok(Gender::Female));
        check(" f ", Ok(Gender::Female));
        check("MAN", Ok(Gender::Male));
        check("Non-binary", Ok(Gender::NonBinary));
        check("non binary", Ok(Gender::NonBinary));
        check("non_binary", Ok(Gender::NonBinary));
        check("Prefer not to say", Ok(Gender::Unknown));
        check("other", Ok(Gender::Other));
        check("", Err(InvalidValue::Empty));
        check("femal", Err(InvalidValue::NotInVocabulary));
    }

    #[test]
    fn tokens_round_trip() {
        for g in Gender::ALL {
            assert_eq!(Gender::from_token(g.as_str()), Ok(g));
            assert_eq!(Gender::from_free_text(g.as_str()), Ok(g));
        }
        assert_eq!(
            Gender::from_token("Female"),
            Err(InvalidValue::NotInVocabulary)
        );
    }
}

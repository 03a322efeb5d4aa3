//! Why a value is not valid for a canonical type.
//!
//! A bounded set of reasons, so that problems can be counted and grouped. The text never
//! contains the offending value: it may be personal data.

/// The reason a value was rejected by a canonical constructor or a converter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidValue {
    #[error("empty")]
    Empty,
    #[error("wrong type: expected {0}")]
    WrongType(&'static str),
    #[error("contains characters that are not allowed")]
    BadCharacters,
    #[error("wrong length")]
    WrongLength,
    #[error("not in the expected format")]
    BadFormat,
    #[error("check digit does not match")]
    CheckDigitMismatch,
    #[error("check digit computes to 10, so no valid number has these digits")]
    CheckDigitTen,
    #[error("a known placeholder, not a real identifier")]
    Placeholder,
    #[error("prefix is not allocated")]
    PrefixNotAllocated,
    #[error("out of range")]
    OutOfRange,
    #[error("not a UK mobile number")]
    NotUkMobile,
    #[error("a UK mobile number, which belongs in `mobile`")]
    IsUkMobile,
    #[error("not one of the allowed values")]
    NotInVocabulary,
    #[error("several conflicting values where one was expected")]
    Ambiguous,
    #[error("unknown country")]
    UnknownCountry,
    #[error("cannot be represented in this source")]
    NotRepresentable,
}

impl InvalidValue {
    /// A stable snake_case code, for tables, metrics and mapping-file examples.
    pub fn code(self) -> &'static str {
        match self {
            InvalidValue::Empty => "empty",
            InvalidValue::WrongType(_) => "wrong_type",
            InvalidValue::BadCharacters => "bad_characters",
            InvalidValue::WrongLength => "wrong_length",
            InvalidValue::BadFormat => "bad_format",
            InvalidValue::CheckDigitMismatch => "check_digit_mismatch",
            InvalidValue::CheckDigitTen => "check_digit_ten",
            InvalidValue::Placeholder => "placeholder",
            InvalidValue::PrefixNotAllocated => "prefix_not_allocated",
            InvalidValue::OutOfRange => "out_of_range",
            InvalidValue::NotUkMobile => "not_uk_mobile",
            InvalidValue::IsUkMobile => "is_uk_mobile",
            InvalidValue::NotInVocabulary => "not_in_vocabulary",
            InvalidValue::Ambiguous => "ambiguous",
            InvalidValue::UnknownCountry => "unknown_country",
            InvalidValue::NotRepresentable => "not_representable",
        }
    }
}

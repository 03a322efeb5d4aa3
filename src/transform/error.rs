//! Errors of loading a mapping file, and of mapping one record.

use std::fmt;
use std::path::PathBuf;

use crate::model::InvalidValue;

/// One problem in a mapping file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; `None` when the problem is with the file as a whole (unreadable, ...).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while compiling mapping files: they are all collected before failing,
/// so one run shows everything to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{n} problem{} in mapping files:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingError {}

/// Why one source field did not give a canonical value. Holds names and a reason, never the
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The source path, e.g. `street_address.postcode`.
    pub source_path: String,
    /// The canonical field name, or `mobile_or_phone`.
    pub target: &'static str,
    pub reason: ProblemReason,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}: {}", self.source_path, self.target, self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProblemReason {
    #[error("{0}")]
    Invalid(InvalidValue),
    /// Another source field already gave this canonical field a different value; the first
    /// (in mapping-file order) is kept, this one stays in the raw payload only.
    #[error("conflicts with the value another source field gave this canonical field")]
    Conflict,
}

impl ProblemReason {
    pub fn code(self) -> &'static str {
        match self {
            ProblemReason::Invalid(reason) => reason.code(),
            ProblemReason::Conflict => "conflict",
        }
    }
}

/// A record that cannot be mapped at all. It is kept raw and listed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record is not a JSON object")]
    NotAnObject,
    #[error("required field `{source_path}` is missing or empty")]
    RequiredFieldMissing { source_path: String },
    #[error("required field `{source_path}` is invalid: {reason}")]
    RequiredFieldInvalid {
        source_path: String,
        reason: InvalidValue,
    },
    #[error("no field of the record could be mapped")]
    NothingMapped,
}

impl RecordError {
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::NotAnObject => "not_an_object",
            RecordError::RequiredFieldMissing { .. } => "required_field_missing",
            RecordError::RequiredFieldInvalid { .. } => "required_field_invalid",
            RecordError::NothingMapped => "nothing_mapped",
        }
    }

    pub const CODES: [&'static str; 4] = [
        "not_an_object",
        "required_field_missing",
        "required_field_invalid",
        "nothing_mapped",
    ];
}

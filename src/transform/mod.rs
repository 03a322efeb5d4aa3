//! Declarative mappings from each source's records to the canonical model, and back.
//!
//! One TOML file per source in `mappings/` says, for every documented source field, which
//! canonical field it fills and through which named converter, whether the value is written
//! back (and with which encoder), or that the field is deliberately kept in the raw payload
//! only. [`compile`] checks a file completely on load; [`CompiledMapping::apply`] and
//! [`CompiledMapping::reverse`] are pure and never panic.
//!
//! ```toml
//! source = "carehq_service_users"
//! keep_raw = ["lon_lat"]          # every documented field is mapped or listed here
//!
//! [[field]]
//! from = "first_name"             # dotted for nested: "street_address.postcode"
//! to = "given_name"               # a canonical field (`crate::model::Field::name`)
//! convert = "name"                # a converter name, or { enum = {..}, write = {..} }
//! write = true                    # written back to `first_name` with the same converter
//!
//! [[field]]
//! from = "mobile"
//! to = "mobile_or_phone"          # UK mobile → `mobile`, any other number → `phone`
//! convert = "phone"
//! write = ["mobile"]
//!
//! [[example]]
//! name = "a resident"
//! input = '''{"first_name": "Anna"}'''
//! expected = '''{"given_name": "Anna"}'''
//! problems = []                   # "source_path: reason_code"
//! ```
//!
//! **Architecture Invariant:** problems and errors name fields and give reasons, never values.

mod apply;
mod catalogue;
mod convert;
mod error;
mod examples;
mod mapping;

pub use apply::{MappedRecord, ParsedRecord, WriteEntry, WritePayload};
pub use catalogue::SourceSchema;
pub use convert::{Converter, EnumMap, EnumMapError};
pub use error::{Diagnostic, FieldProblem, MappingError, ProblemReason, RecordError};
pub use examples::ExampleFailure;
pub use mapping::{
    CompiledMapping, Example, MOBILE_OR_PHONE, SourcePath, Target, compile, compile_dir,
    compile_str,
};

#[cfg(test)]
mod tests;

//! The canonical person model: validated newtypes, the list of canonical fields, and typed
//! values. No I/O and no wire formats: converters from each API's spelling live in
//! `crate::transform`.
//!
//! **Architecture Invariant:** a value of a newtype (`NhsNumber`, `Email`, `PhoneNumber`,
//! `Postcode`, `NiNumber`, `PassportNumber`, `CountryCode`, `Gender`) is always valid and in its
//! canonical form; parsing a canonical value gives it back unchanged.

mod country;
mod email;
mod error;
mod field;
mod gender;
mod nhs;
mod ni;
mod passport;
mod phone;
mod postcode;
mod value;

pub use country::CountryCode;
pub use email::Email;
pub use error::InvalidValue;
pub use field::{
    DAY_CARE_STATUSES, DAY_CARE_USES, FNC_APPLICATION_STATUSES, FUNDING_TYPES, Field, FieldKind,
    LOCATION_ROLES, SERVICE_USER_STATUSES, SERVICES, STAFF_ROLES, STAFF_STATUSES, Table,
};
pub use gender::Gender;
pub use nhs::NhsNumber;
pub use ni::NiNumber;
pub use passport::PassportNumber;
pub use phone::{PhoneKind, PhoneNumber};
pub use postcode::Postcode;
pub use value::{
    CanonicalValues, DATE_YEARS, Value, ValueType, check_date_range, format_date, format_datetime,
    parse_iso_date,
};

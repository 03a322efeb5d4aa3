//! The canonical person: linking source records into persons, choosing each field's value
//! (survivorship), operator overrides, and writing the person tables.

pub mod link;
pub mod link_state;
pub mod materialize;
pub mod scan;
pub mod survivorship;

//! The one integration-test binary: everything here runs against the built-in simulators
//! on loopback.

mod canonical;
mod extraction;
mod reliability;
mod support;

//! The one integration-test binary: everything here runs against the built-in simulators
//! on loopback.

mod canonical;
mod extraction;
mod operations;
mod reliability;
mod support;
mod writeback;

//! caresync: pulls the person records of a care provider's SaaS systems into one SQLite
//! store, links the copies of each person, and pushes corrections back.
//!
//! # Layout
//! - [`cli`]: one file per subcommand.
//! - [`config`]: `sync.toml`, raw → validated in one step; secrets from the environment.
//! - [`source`]: one `ListApi` per API over a shared HTTP core (auth, pacing, retries).
//! - [`sync`]: the one pipeline (backfill, sync, daemon, bench) and its pagination driver.
//! - [`store`]: SQLite, migrations from `schema/`, the single batched writer thread.
//! - [`sim`]: the built-in simulators of the five APIs, for the demo and the tests.
//! - [`daemon`]: `caresync daemon` (schedules, health, metrics) and erasure (`forget`).
//! - [`privacy`]: keeps personal data out of logs and stored messages.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod identity;
pub mod model;
pub mod person;
pub mod privacy;
pub mod sim;
pub mod sink;
pub mod source;
pub mod store;
pub mod sync;
pub mod transform;

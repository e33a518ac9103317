//! Operators: the vectorized transformations between a job's sources and sinks.
//!
//! Each module is one operator kind and implements [`Operator`](crate::operator_api::Operator); the ones
//! with keyed state keep it in the job's state backend and restore through
//! `operator_api::restore`. Stateless: `select`, `filter`, `flat_map`. Keyed: `aggregate` (running
//! aggregates, sharing the accumulators of `accumulate` with `window`), `dedup`, `join/`, `window/`. User
//! code: [`native`] (Rust functions with keyed state and timers, and their registry).
//! Sources and sinks are in [`crate::connectors`]; [`crate::factory`] builds all of them from a job.
pub(crate) mod accumulate;
pub(crate) mod aggregate;
pub(crate) mod dedup;
pub(crate) mod filter;
pub(crate) mod flat_map;
pub(crate) mod join;
pub mod native;
pub(crate) mod select;
pub(crate) mod window;

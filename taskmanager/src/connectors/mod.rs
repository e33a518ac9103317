//! Connectors: where a job's records come from and where they go.
//!
//! A connector is a [`Source`](crate::operator_api::Source) (datagen, files, Kafka) or a sink, which is an
//! [`Operator`](crate::operator_api::Operator) that emits nothing (files, Kafka, print, blackhole). They
//! implement the same traits as the transformations in [`crate::operators`] but touch the world outside
//! the job (files, brokers, the log), so they live in a room of their own: what a connector promises about
//! checkpoints (its position, its two-phase commit) is in its module doc.
pub(crate) mod blackhole;
pub(crate) mod datagen;
pub(crate) mod file;
pub mod kafka;
pub(crate) mod nexmark;
pub(crate) mod print;

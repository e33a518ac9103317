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
pub(crate) mod print;

/// Rows per batch a source produces when its spec sets no `batch_size`. Larger batches amortize the per-batch
/// cost (one pass through the chain, one network buffer fill) but delay the first record and hold more
/// memory per subtask; 1024 rows is Arrow's and DataFusion's usual batch size. The JobManager's validation
/// (`common/src/job/validate.rs`) has its own private copy of this default and must agree with it.
pub(crate) const BATCH_SIZE_DEFAULT: u32 = 1024;

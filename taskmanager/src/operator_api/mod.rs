//! The contract between a task and what it runs: the traits every connector and operator implements.
//!
//! This module sits below both [`crate::connectors`] and [`crate::operators`] and above the state backends;
//! the factory that builds implementations from a job ([`crate::factory`]) sits above all of them, so no
//! operator module needs the factory and no import goes both ways.
//!
//! Two traits, because sources and the rest are driven differently:
//! - a [`Source`] is polled by its task for the next batch, and may ask the task to wait (rate limits) or
//!   say it has ended (bounded input);
//! - an [`Operator`] is handed each input batch and pushes what it produces into an output `Vec`. The
//!   operators of a chain call each other through that `Vec` directly: no queue, no serialization.
//!
//! Both are synchronous: the task around them owns all awaiting (network credit, timers, cancellation), so
//! an operator never holds a network buffer across a suspension point. Sinks are operators that emit
//! nothing.
//!
//! What implementors promise about checkpoints: [`Source::position`], [`Operator::snapshot_state`] and the
//! keyed backend's snapshot are taken between batches, after every record before the barrier was handled
//! and before any record after it; a restore ([`Source::seek_all`], [`Operator::restore_state`]) happens
//! once, before any input, and given the same snapshots yields the same state. `restore` holds the
//! helpers most operators restore with.
pub(crate) mod restore;

use std::ops::RangeInclusive;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::OperatorSnapshot;

use sluice_common::lifecycle::FailureKind;

use crate::state::StateError;

/// An operator failed; the task fails with this message, naming the vertex, and reports its [`FailureKind`]
/// (which decides whether a restart can help: `sluice_common::lifecycle::failure`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    kind: FailureKind,
    message: String,
}

impl OperatorError {
    /// A failure of the given kind.
    pub fn of(kind: FailureKind, message: impl Into<String>) -> Self {
        OperatorError { kind, message: message.into() }
    }

    /// Data the operator was given cannot be processed (a record, or stored state that does not read back).
    pub fn input(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Input, message)
    }

    /// The job asks for something that cannot work (it is not restarted).
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Configuration, message)
    }

    /// Something outside the operator failed (a file, Kafka, storage).
    pub fn io(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Io, message)
    }

    /// A broken invariant: a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::of(FailureKind::Internal, message)
    }

    /// An error of a native (user-written) operator that does not say its kind: counted as input, the
    /// usual reason user code refuses a record. Use [`OperatorError::configuration`] for a misfit that a
    /// restart would meet again.
    pub fn new(message: impl Into<String>) -> Self {
        Self::input(message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure, its message prefixed with `context` ("vertex 'v': ...").
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        OperatorError { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

/// Decodes rows of stored state (keys or values an operator wrote with `converter`'s layout) into columns.
/// Stored bytes come back from snapshots, whose CRC catches damage in storage but not a bug or bytes of
/// another layout; Arrow's row decoder panics on bytes that are not a row of its layout (it does not check
/// them first), so that panic is this error, naming the state as undecodable, rather than a task panic.
pub fn decode_stored_rows<'a>(
    converter: &datafusion::arrow::row::RowConverter,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<datafusion::arrow::array::ArrayRef>, OperatorError> {
    let parser = converter.parser();
    sluice_common::untrusted::catch_panic(|| converter.convert_rows(rows.into_iter().map(|r| parser.parse(r))))
        .map_err(|panic| {
            OperatorError::input(format!("stored state cannot be decoded (damaged, or of another layout): {panic}"))
        })?
        .map_err(|e| OperatorError::input(format!("stored state cannot be decoded: {e}")))
}

/// Arrow's errors inside an operator: a computation on the data (a cast, an overflow, a parse) that the
/// data did not allow, or a batch that does not fit its schema. The first is by far the common one; the
/// second is caught when the job is validated.
impl From<datafusion::arrow::error::ArrowError> for OperatorError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::input(e.to_string())
    }
}

/// The state backend failed to read or write (RocksDB, the local disk).
impl From<StateError> for OperatorError {
    fn from(e: StateError) -> Self {
        Self::io(e.to_string())
    }
}

/// An expression (compiled at validation) could not be evaluated on the data.
impl From<sluice_common::expr::ExprError> for OperatorError {
    fn from(e: sluice_common::expr::ExprError) -> Self {
        Self::input(e.to_string())
    }
}

/// What a source has next.
pub enum SourcePoll {
    /// A batch of records.
    Batch(RecordBatch),
    /// Nothing yet: poll again after this long (a rate limit, or an input not ready).
    Wait(Duration),
    /// The input is exhausted; the task finishes once everything downstream has flushed.
    End,
}

/// Produces the records of one source subtask.
pub trait Source: Send {
    /// The next batch, a request to wait, or the end of input.
    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError>;

    /// Checkpoint `checkpoint`: where this source stands (what it reads next), in its own encoding. Called
    /// between polls; everything before it has been emitted. A source that must make something durable
    /// first (dead letters) does it here; an error declines the checkpoint.
    fn position(&mut self, _checkpoint: u64) -> Result<Vec<u8>, OperatorError> {
        Ok(Vec::new())
    }

    /// Restore: continue from `position` (what [`Source::position`] returned at the checkpoint).
    fn seek(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        if position.is_empty() {
            Ok(())
        } else {
            Err(OperatorError::internal("this source cannot resume from a position"))
        }
    }

    /// Restore, given this subtask's position (`own`, absent when the job had fewer subtasks) and the
    /// positions of every subtask of the checkpointed job. Sources whose splits may change owner at another
    /// parallelism (Kafka partitions) look at all; the others continue from their own.
    fn seek_all(&mut self, own: Option<&[u8]>, _all: &[&[u8]]) -> Result<(), OperatorError> {
        match own {
            Some(position) => self.seek(position),
            None => Ok(()),
        }
    }

    /// Checkpoint `checkpoint` completed.
    fn notify_checkpoint_complete(&mut self, _checkpoint: u64) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The split (e.g. Kafka partition, numbered by the source) the last batch came from, for watermarks
    /// per split: each split's watermark advances on its own, and the source's is their minimum over the
    /// splits that are not idle. `None`: the source is one split.
    fn split_of_last_batch(&self) -> Option<usize> {
        None
    }

    /// How many splits the source has now (0: it has none).
    fn split_count(&self) -> usize {
        0
    }
}

/// A vectorized transformation or sink in a chain.
pub trait Operator: Send {
    /// Processes one input batch, pushing output batches into `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError>;

    /// Processes a batch from input `input` of a two-input operator (0: the first, left or stream input; 1:
    /// the second, right or table input). Single-input operators receive everything through `process`.
    fn process_input(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        self.process(batch, out)
    }

    /// Event time reached `watermark` (`time::END_OF_TIME` at the end of a bounded input): emit what it
    /// completes (windows that close). The task forwards the watermark downstream afterwards.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The wall-clock time (ms since the epoch) of this operator's earliest processing-time timer.
    fn next_timer(&self) -> Option<i64> {
        None
    }

    /// The wall clock reached `now` (ms since the epoch): fire the processing-time timers that are due.
    fn on_processing_time(&mut self, _now: i64, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Moves what was produced for side outputs since the last call into `out`, as (side output, batch).
    fn drain_side_output(&mut self, _out: &mut Vec<(&'static str, RecordBatch)>) {}

    /// Records that arrived later than allowed, in total (each went to a side output, or was dropped).
    fn late_records(&self) -> u64 {
        0
    }

    /// Called once when the input has ended, to emit what is held back and release resources (close files).
    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// After processing, how long the task should pause before feeding the next batch (throttled sinks).
    fn pause(&mut self) -> Option<Duration> {
        None
    }

    /// Checkpoint: the backend holding this operator's keyed state, if it has one. The task takes the
    /// backend's deferred snapshot (the synchronous part) and writes it out after the barrier went on.
    fn keyed_backend(&mut self) -> Option<&mut dyn crate::state::KeyedStateBackend> {
        None
    }

    /// Checkpoint: adds this operator's state that is not keyed (records it holds back, its watermark) to
    /// `snapshot`. Called between batches, once every record before the barrier has been processed. An
    /// operator that cannot snapshot its state returns an error, and the task declines the checkpoint.
    fn snapshot_state(&mut self, _snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Restore, once before any input: this operator's state from `snapshots` (this vertex's snapshots from
    /// every subtask of the checkpointed job), keeping the key groups in `key_groups`.
    fn restore_state(
        &mut self,
        _snapshots: &[&OperatorSnapshot],
        _key_groups: RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Checkpoint `id` completed: what was pre-committed for it may be committed.
    fn notify_checkpoint_complete(&mut self, _id: u64) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Where a subtask stands in its vertex.
#[derive(Clone, Copy, Debug)]
pub struct SubtaskInfo {
    /// This subtask's index.
    pub index: u32,
    /// The vertex's parallelism.
    pub parallelism: u32,
}

#[cfg(test)]
mod stored_rows_tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::row::{RowConverter, SortField};

    use super::decode_stored_rows;

    #[test]
    fn stored_rows_decode_and_bytes_of_another_layout_are_an_error_not_a_panic() {
        let converter = RowConverter::new(vec![SortField::new(DataType::Utf8), SortField::new(DataType::Int64)])
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = converter
            .convert_columns(&[Arc::new(StringArray::from(vec!["apple"])), Arc::new(Int64Array::from(vec![7]))])
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = rows.row(0).as_ref().to_vec();
        let columns = decode_stored_rows(&converter, [stored.as_slice()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(columns[1].len(), 1);
        // Cut short: Arrow's decoder indexes past the end of the bytes.
        for damaged in [&stored[..3], &[1u8, 0xff][..]] {
            let error = decode_stored_rows(&converter, [damaged]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.starts_with("stored state cannot be decoded"), "{damaged:?}: {error}");
        }
    }
}

#[cfg(test)]
mod failure_kind_tests {
    use sluice_common::lifecycle::FailureKind;

    use super::OperatorError;
    use crate::state::StateError;

    /// Goal: an error keeps its kind through the conversions and the context a task adds, since the kind
    /// decides whether the job is restarted. Method: each constructor and conversion, then a context.
    #[test]
    fn an_error_keeps_its_kind_through_conversions_and_context() {
        let arrow = datafusion::arrow::error::ArrowError::CastError("'x' is not a number".into());
        let cases = [
            (OperatorError::input("a"), FailureKind::Input),
            (OperatorError::configuration("b"), FailureKind::Configuration),
            (OperatorError::io("c"), FailureKind::Io),
            (OperatorError::internal("d"), FailureKind::Internal),
            (OperatorError::new("a native operator's refusal"), FailureKind::Input),
            (arrow.into(), FailureKind::Input),
            (StateError("RocksDB: no space left on device".into()).into(), FailureKind::Io),
        ];
        for (error, kind) in cases {
            let message = error.message().to_string();
            let named = error.context("vertex 'v'");
            assert_eq!(named.kind(), kind, "{named}");
            assert_eq!(named.to_string(), format!("vertex 'v': {message}"));
        }
    }
}

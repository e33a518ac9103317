//! Operators: vectorized steps that take Arrow batches and emit Arrow batches.
//!
//! Two traits, because sources and the rest are driven differently:
//! - a [`Source`] is polled by its task for the next batch, and may ask the task to wait (rate limits) or
//!   say it has ended (bounded input);
//! - an [`Operator`] is handed each input batch and pushes what it produces into an output `Vec`. The
//!   operators of a chain call each other through that `Vec` directly: no queue, no serialization.
//!
//! Both are synchronous: the task around them owns all awaiting (network credit, timers, cancellation), so
//! an operator never holds a network buffer across a suspension point. Sinks are operators that emit
//! nothing. [`build_source`] and [`build_operator`] turn a validated vertex into its implementation.
mod accumulate;
mod aggregate;
mod datagen;
mod dedup;
mod file_sink;
mod file_source;
mod flat_map;
mod join;
pub mod kafka;
mod print;
mod simple;
mod window;

use std::ops::RangeInclusive;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{vertex::Operator as Spec, OperatorSnapshot, Vertex};

use crate::metrics::TaskCounters;
use crate::process::{OperatorRegistry, ProcessOperator};
use crate::state::StateSettings;

/// An operator failed; the task fails with this message, naming the vertex.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OperatorError(pub String);

impl OperatorError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<datafusion::arrow::error::ArrowError> for OperatorError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self(e.to_string())
    }
}

impl From<sluice_common::expr::ExprError> for OperatorError {
    fn from(e: sluice_common::expr::ExprError) -> Self {
        Self(e.to_string())
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
            Err(OperatorError::new("this source cannot resume from a position"))
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

/// Loads the keyed state of `snapshots` (merged) into a backend, keeping `key_groups`.
pub(crate) fn restore_keyed(
    backend: &mut dyn crate::state::KeyedStateBackend,
    snapshots: &[&OperatorSnapshot],
    key_groups: RangeInclusive<u16>,
) -> Result<(), OperatorError> {
    let merged = crate::checkpoint::merge_keyed(snapshots).map_err(OperatorError::new)?;
    backend.restore(&merged, key_groups).map_err(|e| OperatorError::new(e.to_string()))
}

/// Every key stored in `state`.
pub(crate) fn stored_keys(
    backend: &mut dyn crate::state::KeyedStateBackend,
    state: crate::state::StateId,
) -> Result<Vec<Vec<u8>>, OperatorError> {
    let mut keys = Vec::new();
    backend
        .scan_prefix(state, &[], &mut |key, _| {
            keys.push(key.to_vec());
            true
        })
        .map_err(|e| OperatorError::new(e.to_string()))?;
    Ok(keys)
}

/// The buffered records of `snapshots` whose key (the `key_columns`) falls into `key_groups`.
pub(crate) fn restore_buffered(
    snapshots: &[&OperatorSnapshot],
    key_columns: &[usize],
    max_parallelism: u32,
    key_groups: &RangeInclusive<u16>,
) -> Result<Vec<RecordBatch>, OperatorError> {
    use datafusion::arrow::array::{ArrayRef, BooleanArray};
    let mut kept = Vec::new();
    let mut hashes = Vec::new();
    for snapshot in snapshots {
        for batch in crate::checkpoint::decode_batches(&snapshot.operator_state).map_err(OperatorError::new)? {
            let keys: Vec<ArrayRef> = key_columns.iter().map(|&i| batch.column(i).clone()).collect();
            sluice_common::keygroup::hash_key_columns(&keys, &mut hashes)
                .map_err(|e| OperatorError::new(e.to_string()))?;
            let mine: BooleanArray = hashes
                .iter()
                .map(|&h| {
                    Some(key_groups.contains(&(sluice_common::keygroup::key_group_of(h, max_parallelism).0 as u16)))
                })
                .collect();
            let batch = datafusion::arrow::compute::filter_record_batch(&batch, &mine)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
    }
    Ok(kept)
}

/// Where a subtask stands in its vertex.
#[derive(Clone, Copy, Debug)]
pub struct SubtaskInfo {
    /// This subtask's index.
    pub index: u32,
    /// The vertex's parallelism.
    pub parallelism: u32,
}

/// Builds the source of a source vertex.
pub fn build_source(
    vertex: &Vertex,
    job: &ValidatedJob,
    subtask: SubtaskInfo,
    counters: &TaskCounters,
) -> Result<Box<dyn Source>, OperatorError> {
    let schema = output_schema(job, &vertex.id)?;
    match &vertex.operator {
        Some(Spec::Datagen(spec)) => Ok(Box::new(datagen::Datagen::new(spec, schema, subtask))),
        Some(Spec::FileSource(spec)) => Ok(Box::new(file_source::FileSourceReader::open(spec, schema, subtask)?)),
        Some(Spec::KafkaSource(spec)) => {
            Ok(Box::new(kafka::KafkaSourceReader::open(spec, &vertex.id, schema, subtask, counters.kafka())?))
        }
        _ => Err(OperatorError::new(format!("vertex '{}' is not a source", vertex.id))),
    }
}

/// What building a task's operators draws on besides the vertex itself.
pub struct BuildContext<'a> {
    pub job: &'a ValidatedJob,
    pub subtask: SubtaskInfo,
    pub state: &'a StateSettings,
    /// The native operators this TaskManager binary offers (`custom` vertices).
    pub registry: &'a OperatorRegistry,
    /// The task's metrics (operators with metrics of their own resolve them here).
    pub counters: &'a TaskCounters,
    /// The job checkpoints periodically: file sinks commit on checkpoint completion (exactly once).
    pub exactly_once_sinks: bool,
}

/// Builds the operator of a non-source vertex.
pub fn build_operator(vertex: &Vertex, ctx: &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> {
    let BuildContext { job, subtask, state, registry, counters, exactly_once_sinks } = *ctx;
    let input = job
        .input_schema(&vertex.id)
        .ok_or_else(|| OperatorError::new(format!("vertex '{}' has no input schema", vertex.id)))?;
    let output = output_schema(job, &vertex.id)?;
    let event_time = job.input_event_time_column(&vertex.id);
    let backend = || {
        let chosen = job.state_backend(state.default_backend);
        state.open_for_job(chosen, &counters.task.job_id, &vertex.id, subtask.index)
    };
    Ok(match &vertex.operator {
        Some(Spec::Select(spec)) => Box::new(simple::SelectOp::new(spec, &input, output)?),
        Some(Spec::Filter(spec)) => Box::new(simple::FilterOp::new(spec, &input)?),
        Some(Spec::FlatMap(spec)) => Box::new(flat_map::FlatMapOp::new(spec, &input, output)?),
        Some(Spec::Aggregate(spec)) => {
            Box::new(aggregate::RunningAggregate::new(spec, &input, output, job.max_parallelism())?)
        }
        Some(Spec::FileSink(spec)) => Box::new(file_sink::FileSinkWriter::open(spec, subtask, exactly_once_sinks)?),
        Some(Spec::KafkaSink(spec)) => {
            if spec.delivery() == sluice_common::proto::KafkaDelivery::ExactlyOnce && !exactly_once_sinks {
                return Err(OperatorError::new(
                    "a kafka_sink with delivery EXACTLY_ONCE commits on checkpoints: turn checkpointing on \
                     (config.checkpointing.interval_ms or CHECKPOINT_INTERVAL)",
                ));
            }
            Box::new(kafka::KafkaSinkWriter::open(spec, &vertex.id, &input, subtask, counters.kafka())?)
        }
        Some(Spec::PrintSink(spec)) => Box::new(print::PrintSinkOp::new(spec, &vertex.id, subtask)),
        Some(Spec::BlackholeSink(spec)) => Box::new(simple::BlackholeOp::new(spec)),
        Some(Spec::Window(spec)) => Box::new(
            window::WindowOp::new(spec, &input, output, event_time, job.max_parallelism(), backend()?)?
                .with_emit_latency(counters.window_emit_latency(&vertex.id)),
        ),
        Some(Spec::IntervalJoin(spec)) => {
            let (left, left_time) = join_input(job, &vertex.id, &spec.left)?;
            let (right, right_time) = join_input(job, &vertex.id, &spec.right)?;
            Box::new(join::IntervalJoinOp::new(
                spec,
                &left,
                left_time,
                &right,
                right_time,
                output,
                job.max_parallelism(),
                backend()?,
            )?)
        }
        Some(Spec::TemporalJoin(spec)) => {
            let (stream, stream_time) = join_input(job, &vertex.id, &spec.stream)?;
            let (table, table_time) = join_input(job, &vertex.id, &spec.table)?;
            Box::new(join::TemporalJoinOp::new(
                spec,
                &stream,
                stream_time,
                &table,
                table_time,
                output,
                job.max_parallelism(),
                backend()?,
            )?)
        }
        Some(Spec::Deduplicate(spec)) => {
            Box::new(dedup::DedupOp::new(spec, &input, event_time, job.max_parallelism(), backend()?)?)
        }
        Some(Spec::Custom(spec)) => Box::new(ProcessOperator::new(
            spec,
            registry,
            &input,
            output,
            event_time,
            subtask,
            job.max_parallelism(),
            backend()?,
        )?),
        Some(Spec::Datagen(_) | Spec::FileSource(_) | Spec::KafkaSource(_)) | None => {
            return Err(OperatorError::new(format!("vertex '{}' is not a transformation or sink", vertex.id)))
        }
    })
}

/// The schema and event-time column of a join's input from vertex `from`.
fn join_input<'a>(
    job: &'a ValidatedJob,
    vertex: &str,
    from: &str,
) -> Result<(SchemaRef, Option<&'a str>), OperatorError> {
    let edge = job
        .edge_between(from, vertex)
        .ok_or_else(|| OperatorError::new(format!("vertex '{vertex}' has no input from '{from}'")))?;
    let schema = job.edge_schema(edge).ok_or_else(|| OperatorError::new(format!("vertex '{from}' has no schema")))?;
    Ok((schema, job.edge_event_time_column(edge)))
}

fn output_schema(job: &ValidatedJob, vertex: &str) -> Result<SchemaRef, OperatorError> {
    job.schemas.get(vertex).cloned().ok_or_else(|| OperatorError::new(format!("vertex '{vertex}' has no schema")))
}

//! A task: one subtask of one chain, running on the data runtime.
//!
//! The task owns everything it touches (operators, input gate, result partitions, counters), so the hot
//! path takes no locks. Its body is one loop:
//! 1. take the next input — a source poll, or the next event of the input gate;
//! 2. push a batch through the chain: each operator's output `Vec` is the next one's input, a direct call;
//! 3. route the tail's output to the result partitions, awaiting credit when the consumer is slow
//!    (backpressure, measured), and flush partial buffers when the buffer timeout expires.
//!
//! At the end of input the operators are finished in chain order (each one's final output flows through
//! the rest), end-of-partition goes to every consumer, and the task reports FINISHED. Cancellation is
//! checked at every wait; a cancelled task drops its channels without sending end-of-partition, so
//! consumers cannot mistake a cancelled producer for a finished one. A panic anywhere in the body (operator
//! code, Arrow on unexpected data) is caught ([`panics`]) and ends the task as FAILED with the panic's message
//! and location, cleaned up as any failed task: unwinding drops the chain, its gates and partitions.
//!
//! Layout: `run` the loop; `build` setting a task up; [`alignment`] when a checkpoint's barriers are
//! aligned (pure: no I/O, unit-tested); `snapshot` taking the task's part of a checkpoint; `restore` loading
//! it back; `timers` watermarks and processing-time timers; `accounting` busy, back-pressured and idle time;
//! [`output`] routing to result partitions; [`plan`] the channels of a subtask; [`panics`] catching a
//! panic of the body.
mod accounting;
pub mod alignment;
mod build;
pub mod output;
pub mod panics;
pub mod plan;
mod restore;
mod run;
mod snapshot;
mod timers;

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::ValidatedJob;
use sluice_common::lifecycle::FailureKind;
use sluice_common::proto::{RestoreSpec, TaskRef};
use sluice_common::storage::Storage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointCommand, CheckpointReporter};
use crate::metrics::TaskCounters;
use crate::network::{InputGate, NetworkEnvironment, NetworkError};
use crate::operator_api::{Operator, OperatorError, Source};
use crate::operators::native::OperatorRegistry;
use crate::state::StateSettings;
use crate::time::{InputWatermarks, WatermarkGenerator};
use accounting::Clock;
use output::Output;
use plan::SubtaskPlan;
use snapshot::Checkpointing;

/// Why a task stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// An operator, connector or the task's own set-up failed (its message names the vertex where known).
    #[error("{0}")]
    Operator(OperatorError),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("cancelled")]
    Cancelled,
    /// The task's body panicked: a bug (in an operator, or data it did not expect), reported as a failure.
    #[error("{0}")]
    Panicked(panics::Panic),
}

impl From<OperatorError> for TaskError {
    fn from(e: OperatorError) -> Self {
        Self::Operator(e)
    }
}

impl From<datafusion::arrow::error::ArrowError> for TaskError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Operator(e.into())
    }
}

impl TaskError {
    /// A failure of the task's own machinery (a plan that does not fit the job, a key that does not hash).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Operator(OperatorError::internal(message))
    }

    /// What kind of failure this is, for the report to the JobManager (which decides whether a restart can
    /// help). A cancelled task reports no failure; its kind is never sent.
    pub fn kind(&self) -> FailureKind {
        match self {
            TaskError::Operator(e) => e.kind(),
            TaskError::Network(e) => e.kind(),
            TaskError::Cancelled | TaskError::Panicked(_) => FailureKind::Internal,
        }
    }
}

/// Where a task's records come from: a source it polls, or the input gate of its channels.
enum Head {
    Source(Box<dyn Source>),
    Gate(InputGate),
}

/// One running subtask.
pub struct Task {
    job: Arc<ValidatedJob>,
    plan: SubtaskPlan,
    counters: Arc<TaskCounters>,
    cancel: CancellationToken,
    state: StateSettings,
    registry: Arc<OperatorRegistry>,
    checkpoints: TaskCheckpoints,
}

/// How a task takes part in checkpoints.
pub struct TaskCheckpoints {
    /// The task, as acknowledgements name it.
    pub task: TaskRef,
    /// The job's checkpoint location (checkpoint N goes to `chk-N/` under it); None: no checkpoints.
    pub dir: Option<Storage>,
    /// Triggers (source tasks) and completions from the TaskManager.
    pub commands: mpsc::Receiver<CheckpointCommand>,
    /// Where acknowledgements and declines go.
    pub reporter: CheckpointReporter,
    /// The checkpoint the task's state starts from.
    pub restore: Option<Arc<RestoreSpec>>,
    /// The job checkpoints periodically: sinks commit on checkpoint completion (exactly once).
    pub periodic: bool,
}

impl Task {
    pub fn new(
        job: Arc<ValidatedJob>,
        plan: SubtaskPlan,
        counters: Arc<TaskCounters>,
        cancel: CancellationToken,
        state: StateSettings,
        registry: Arc<OperatorRegistry>,
        checkpoints: TaskCheckpoints,
    ) -> Self {
        Self { job, plan, counters, cancel, state, registry, checkpoints }
    }

    /// Runs the task to its end. `on_running` is called once its channels are set up. A task that finishes
    /// returns the newest checkpoint it took part in (0: none), for the JobManager to tell whether a checkpoint
    /// in flight waits for its acknowledgement or records it as finished.
    pub async fn run(self, network: Arc<NetworkEnvironment>, on_running: impl FnOnce()) -> Result<u64, TaskError> {
        let Task { job, plan, counters, cancel, state, registry, checkpoints } = self;
        let token = cancel.clone();
        let (writers, mut writers_done) = snapshot::WriterGuard::new();
        let work = panics::catch(async {
            let mut runner =
                Runner::build(&job, &plan, &network, &counters, cancel, &state, &registry, checkpoints, writers)
                    .await?;
            on_running();
            runner.run(&counters).await
        });
        // Cancellation wins wherever the task waits (a full output queue, a peer connection): dropping the
        // work future drops its partitions and gates, which is all the cleanup a cancelled task needs...
        let result = tokio::select! {
            biased;
            _ = token.cancelled() => Err(TaskError::Cancelled),
            result = work => result.unwrap_or_else(|panic| Err(TaskError::Panicked(panic))),
        };
        // ...except a snapshot write under way: the task's end is reported once its writers are done.
        if tokio::time::timeout(snapshot::SNAPSHOT_WRITERS_DRAIN_MAX, writers_done.recv()).await.is_err() {
            let task = &plan;
            tracing::warn!(
                chain = task.chain,
                subtask = task.subtask,
                timeout_s = snapshot::SNAPSHOT_WRITERS_DRAIN_MAX.as_secs(),
                "a snapshot write of the ended task is still under way; reporting its end anyway"
            );
        }
        result
    }
}

/// A task once built: its chain and everything the loop touches. Its methods are spread over this
/// module's files by concern; the fields are visible to all of them.
struct Runner {
    head: Head,
    operators: Vec<Box<dyn Operator>>,
    outputs: Vec<Output>,
    cancel: CancellationToken,
    clock: Clock,
    /// 1 when the head is a source (which has vertex counters but no operator), else 0.
    offset: usize,
    /// A source head with event time: its watermarks.
    generator: Option<WatermarkGenerator>,
    /// A gate head: the watermark over its channels.
    input_watermarks: InputWatermarks,
    /// A source head: when it sends its next latency marker.
    next_latency_marker: std::time::Instant,
    /// Side-output batches of the tail operator, waiting to be routed.
    side: Vec<(&'static str, RecordBatch)>,
    /// A gate head: which input of the head operator each channel feeds (joins have two).
    channel_inputs: Vec<usize>,
    /// A gate head: the schema the plan says each channel carries; a batch that arrives with another is
    /// refused before an operator reads it ([`batch_fits`]).
    channel_schemas: Vec<Option<datafusion::arrow::datatypes::SchemaRef>>,
    checkpointing: Checkpointing,
    /// The chain's vertex ids, head first.
    vertex_ids: Vec<String>,
    parallelism: u32,
}

/// Whether `batch` has the columns `expected` names, of the same types, in order: what operators assume when
/// they read a column by position and type. Nullability and metadata may differ. Err says what differs.
pub(super) fn batch_fits(batch: &RecordBatch, expected: &datafusion::arrow::datatypes::Schema) -> Result<(), String> {
    let actual = batch.schema();
    if actual.fields().len() != expected.fields().len() {
        return Err(format!(
            "a batch of {} columns arrived where the plan has {}",
            actual.fields().len(),
            expected.fields().len()
        ));
    }
    for (got, want) in actual.fields().iter().zip(expected.fields().iter()) {
        if got.data_type() != want.data_type() {
            return Err(format!(
                "column '{}' arrived as {} where the plan has '{}' as {}",
                got.name(),
                got.data_type(),
                want.name(),
                want.data_type()
            ));
        }
    }
    Ok(())
}

/// An operator's error, naming its vertex.
pub(super) fn operator_error(counters: &TaskCounters, vertex: usize, error: OperatorError) -> TaskError {
    let id = counters.vertices.get(vertex).map_or("?", |v| v.id.as_str());
    TaskError::Operator(error.context(format_args!("vertex '{id}'")))
}

/// An error building or restoring `vertex`, naming it.
fn named(vertex: &sluice_common::proto::Vertex, error: OperatorError) -> TaskError {
    TaskError::Operator(error.context(format_args!("vertex '{}'", vertex.id)))
}

#[cfg(test)]
mod batch_schema_tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::batch_fits;

    fn batch(fields: Vec<Field>, columns: Vec<datafusion::arrow::array::ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_batch_is_checked_against_the_plans_schema_by_column_count_and_type() {
        let plan =
            Schema::new(vec![Field::new("word", DataType::Utf8, false), Field::new("n", DataType::Int64, false)]);
        let words = Arc::new(StringArray::from(vec!["a"]));
        let numbers = Arc::new(Int64Array::from(vec![1]));
        // Nullability and names may differ (a projection renames nothing an operator reads by position).
        let fits = batch(
            vec![Field::new("word", DataType::Utf8, true), Field::new("count", DataType::Int64, true)],
            vec![words.clone(), numbers.clone()],
        );
        assert_eq!(batch_fits(&fits, &plan), Ok(()));
        let swapped = batch(
            vec![Field::new("n", DataType::Int64, false), Field::new("word", DataType::Utf8, false)],
            vec![numbers.clone(), words.clone()],
        );
        let error = batch_fits(&swapped, &plan).err().unwrap_or_default();
        assert!(error.contains("column 'n' arrived as Int64 where the plan has 'word' as Utf8"), "{error}");
        let short = batch(vec![Field::new("word", DataType::Utf8, false)], vec![words]);
        let error = batch_fits(&short, &plan).err().unwrap_or_default();
        assert!(error.contains("a batch of 1 columns arrived where the plan has 2"), "{error}");
    }
}

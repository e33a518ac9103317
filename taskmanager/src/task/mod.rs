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
//! consumers cannot mistake a cancelled producer for a finished one.
pub mod output;
pub mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, DeclineCheckpointRequest, OperatorSnapshot, RestoreSpec, TaskRef, TaskSnapshot,
};
use sluice_common::storage::Storage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    read_snapshot_keeping, snapshot_file_name, store_snapshot, CheckpointCommand, CheckpointOutcome,
    CheckpointReporter, SharedFiles, SnapshotParts,
};

use crate::factory::{build_operator, build_source, BuildContext};
use crate::metrics::TaskCounters;
use crate::network::{InputGate, NetworkEnvironment, NetworkError, StreamEvent};
use crate::operator_api::{Operator, OperatorError, Source, SourcePoll, SubtaskInfo};
use crate::operators::native::OperatorRegistry;
use crate::state::StateSettings;
use crate::time::{now_millis, InputWatermarks, WatermarkGenerator, END_OF_TIME, IDLE};
use output::Output;
use plan::SubtaskPlan;

/// Why a task stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Operator(String),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("cancelled")]
    Cancelled,
}

impl From<OperatorError> for TaskError {
    fn from(e: OperatorError) -> Self {
        Self::Operator(e.0)
    }
}

impl From<datafusion::arrow::error::ArrowError> for TaskError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Operator(e.to_string())
    }
}

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

/// The checkpoint state of a running task.
struct Checkpointing {
    task: TaskRef,
    dir: Option<Storage>,
    /// Where a snapshot bound for an object store is written before it is uploaded.
    spool: PathBuf,
    /// The shared files of this task's incremental snapshots.
    shared: Arc<std::sync::Mutex<SharedFiles>>,
    /// None once the TaskManager dropped its sender (the task is being torn down).
    commands: Option<mpsc::Receiver<CheckpointCommand>>,
    reporter: CheckpointReporter,
    /// A gate head waiting for the barrier of `id` on its other channels.
    aligning: Option<Alignment>,
    /// A gate head: channels that delivered end-of-partition (they take part in no further alignment).
    ended: Vec<bool>,
    /// The newest checkpoint this task took or abandoned: older barriers are stale.
    last_id: u64,
}

struct Alignment {
    id: u64,
    started: Instant,
    /// Channels that delivered this barrier (or ended).
    done: Vec<bool>,
}

/// Time accounting for the busy / back-pressured / idle split (Flink's model).
struct Clock {
    last: Instant,
    backpressured_seen: Duration,
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

    /// Runs the task to its end. `on_running` is called once its channels are set up.
    pub async fn run(self, network: Arc<NetworkEnvironment>, on_running: impl FnOnce()) -> Result<(), TaskError> {
        let Task { job, plan, counters, cancel, state, registry, checkpoints } = self;
        let token = cancel.clone();
        let work = async {
            let mut runner =
                Runner::build(&job, &plan, &network, &counters, cancel, &state, &registry, checkpoints).await?;
            on_running();
            runner.run(&counters).await
        };
        // Cancellation wins wherever the task waits (a full output queue, a peer connection): dropping the
        // work future drops its partitions and gates, which is all the cleanup a cancelled task needs.
        tokio::select! {
            biased;
            _ = token.cancelled() => Err(TaskError::Cancelled),
            result = work => result,
        }
    }
}

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
    /// Side-output batches of the tail operator, waiting to be routed.
    side: Vec<(&'static str, RecordBatch)>,
    /// A gate head: which input of the head operator each channel feeds (joins have two).
    channel_inputs: Vec<usize>,
    checkpointing: Checkpointing,
    /// The chain's vertex ids, head first.
    vertex_ids: Vec<String>,
    parallelism: u32,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    async fn build(
        job: &ValidatedJob,
        plan: &SubtaskPlan,
        network: &NetworkEnvironment,
        counters: &TaskCounters,
        cancel: CancellationToken,
        state: &StateSettings,
        registry: &OperatorRegistry,
        checkpoints: TaskCheckpoints,
    ) -> Result<Self, TaskError> {
        let chain = job
            .chains
            .get(plan.chain as usize)
            .ok_or_else(|| TaskError::Operator(format!("unknown chain {}", plan.chain)))?;
        let subtask = SubtaskInfo { index: plan.subtask, parallelism: chain.parallelism };
        let exactly_once_sinks = checkpoints.periodic;
        let context = BuildContext { job, subtask, state, registry, counters, exactly_once_sinks };
        let mut vertices = Vec::with_capacity(chain.vertex_ids.len());
        for id in &chain.vertex_ids {
            vertices.push(job.vertex(id).ok_or_else(|| TaskError::Operator(format!("unknown vertex '{id}'")))?);
        }
        let Some((head_vertex, rest)) = vertices.split_first() else {
            return Err(TaskError::Operator(format!("chain {} is empty", plan.chain)));
        };
        let mut operators = Vec::with_capacity(vertices.len());
        let mut generator = None;
        let head = if plan.inputs.is_empty() {
            if let Some(event_time) = &head_vertex.event_time {
                let schema = job
                    .schemas
                    .get(&head_vertex.id)
                    .ok_or_else(|| TaskError::Operator(format!("vertex '{}' has no schema", head_vertex.id)))?;
                generator = Some(WatermarkGenerator::new(event_time, schema).map_err(|e| named(head_vertex, e))?);
            }
            Head::Source(build_source(head_vertex, job, subtask, counters).map_err(|e| named(head_vertex, e))?)
        } else {
            operators.push(build_operator(head_vertex, &context).map_err(|e| named(head_vertex, e))?);
            let gate = network.create_input_gate(plan.inputs.clone()).await?;
            counters.in_flight_bytes_max.set(gate.in_flight_bytes_max() as i64);
            Head::Gate(gate)
        };
        for vertex in rest {
            operators.push(build_operator(vertex, &context).map_err(|e| named(vertex, e))?);
        }
        let mut outputs = Vec::with_capacity(plan.outputs.len());
        for output in &plan.outputs {
            let partition = network.create_result_partition(output.subpartitions.clone(), job.buffer_timeout()).await?;
            outputs.push(Output::new(output.clone(), partition));
        }
        let mut head = head;
        if let Some(restore) = &checkpoints.restore {
            restore_chain(restore, job, plan, &vertices, state, &mut head, &mut operators).await?;
        }
        let offset = usize::from(matches!(head, Head::Source(_)));
        let channel_inputs = plan
            .inputs
            .iter()
            .map(|(channel, _)| job.input_index_of_edge(&head_vertex.id, channel.edge as usize))
            .collect();
        Ok(Self {
            head,
            operators,
            outputs,
            cancel,
            clock: Clock { last: Instant::now(), backpressured_seen: Duration::ZERO },
            offset,
            generator,
            input_watermarks: InputWatermarks::new(plan.inputs.len()),
            side: Vec::new(),
            channel_inputs,
            checkpointing: Checkpointing {
                task: checkpoints.task,
                dir: checkpoints.dir,
                spool: state.spool_dir(),
                shared: Arc::default(),
                commands: Some(checkpoints.commands),
                reporter: checkpoints.reporter,
                aligning: None,
                ended: vec![false; plan.inputs.len()],
                last_id: 0,
            },
            vertex_ids: chain.vertex_ids.clone(),
            parallelism: chain.parallelism,
        })
    }

    async fn run(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        loop {
            if matches!(self.head, Head::Source(_)) {
                while let Some(command) = self.checkpointing.commands.as_mut().and_then(|c| c.try_recv().ok()) {
                    self.on_command(command, counters).await?;
                }
            }
            match &mut self.head {
                Head::Source(source) => match source.poll_next()? {
                    SourcePoll::Batch(batch) => {
                        if let Some(generator) = &mut self.generator {
                            generator.ensure_splits(source.split_count());
                            generator.observe_split(&batch, source.split_of_last_batch())?;
                        }
                        self.push(vec![batch], 0, 0, counters).await?;
                        self.account_busy(counters);
                    }
                    SourcePoll::Wait(wait) => {
                        self.account_busy(counters);
                        self.flush_outputs().await?;
                        let wait = match self.timer_deadline() {
                            Some(deadline) => wait.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                            None => wait,
                        };
                        let command = tokio::select! {
                            biased;
                            _ = self.cancel.cancelled() => return Err(TaskError::Cancelled),
                            command = next_command(&mut self.checkpointing.commands) => command,
                            _ = tokio::time::sleep(wait) => None,
                        };
                        self.account_idle(counters);
                        if let Some(command) = command {
                            self.on_command(command, counters).await?;
                        }
                    }
                    SourcePoll::End => break,
                },
                Head::Gate(_) => match self.next_from_gate(counters).await? {
                    Some((input, batch)) => self.push(vec![batch], 0, input, counters).await?,
                    None => break,
                },
            };
            if let Some(watermark) = self.generator.as_mut().and_then(|g| g.poll(Instant::now())) {
                self.advance_watermark(watermark, counters).await?;
            }
            self.fire_due_timers(counters).await?;
            let now = tokio::time::Instant::now();
            if self.outputs.iter().any(|o| o.partition.next_flush_deadline().is_some_and(|d| d <= now)) {
                self.flush_outputs().await?;
            }
        }
        if matches!(self.head, Head::Source(_)) {
            // A bounded source ended: all of event time has passed.
            self.advance_watermark(END_OF_TIME, counters).await?;
        }
        self.finish(counters).await
    }

    /// The next batch from the input gate. Meanwhile: flushes output buffers whose timeout expires, forwards
    /// watermarks, and fires processing-time timers.
    async fn next_from_gate(&mut self, counters: &TaskCounters) -> Result<Option<(usize, RecordBatch)>, TaskError> {
        loop {
            self.account_busy(counters);
            let deadline = self.outputs.iter().filter_map(|o| o.partition.next_flush_deadline()).min();
            let timer = self.timer_deadline();
            let Head::Gate(gate) = &mut self.head else { return Ok(None) };
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(TaskError::Cancelled),
                command = next_command(&mut self.checkpointing.commands) => match command {
                    Some(command) => Wake::Command(command),
                    None => continue,
                },
                _ = sleep_until_opt(timer) => Wake::Timer,
                _ = sleep_until_opt(deadline) => Wake::Flush,
                event = gate.next() => Wake::Event(event),
            };
            counters.in_flight_bytes.set(gate.in_flight_bytes() as i64);
            counters.floating_credits.set(i64::from(gate.available_floating_credits()));
            counters.remote_bytes_in.inc_by(gate.remote_bytes_in().saturating_sub(counters.remote_bytes_in.get()));
            self.account_idle(counters);
            match event {
                Wake::Command(command) => self.on_command(command, counters).await?,
                Wake::Timer => self.fire_due_timers(counters).await?,
                Wake::Flush => self.flush_outputs().await?,
                Wake::Event(None) => return Ok(None),
                Wake::Event(Some(Err(e))) => return Err(e.into()),
                Wake::Event(Some(Ok((channel, StreamEvent::Batch(batch))))) => {
                    for watermark in self.input_watermarks.on_record(channel) {
                        self.advance_watermark(watermark, counters).await?;
                    }
                    return Ok(Some((self.channel_inputs.get(channel).copied().unwrap_or(0), batch)));
                }
                Wake::Event(Some(Ok((channel, StreamEvent::Watermark(watermark))))) => {
                    for watermark in self.input_watermarks.on_watermark(channel, watermark) {
                        self.advance_watermark(watermark, counters).await?;
                    }
                }
                Wake::Event(Some(Ok((channel, StreamEvent::Barrier(id))))) => {
                    self.on_barrier(channel, id, counters).await?
                }
                Wake::Event(Some(Ok((channel, StreamEvent::EndOfPartition)))) => {
                    self.on_channel_ended(channel, counters).await?
                }
            }
        }
    }

    /// A checkpoint command from the TaskManager.
    async fn on_command(&mut self, command: CheckpointCommand, counters: &TaskCounters) -> Result<(), TaskError> {
        match command {
            CheckpointCommand::Trigger { id, timestamp_ms: _, stop } => {
                if matches!(self.head, Head::Source(_)) && id > self.checkpointing.last_id {
                    self.checkpointing.last_id = id;
                    self.take_checkpoint(id, Duration::ZERO, counters).await?;
                    if stop {
                        self.suspend(counters).await?;
                    }
                }
            }
            CheckpointCommand::Complete { id, done } => {
                self.checkpointing.shared.lock().unwrap_or_else(|p| p.into_inner()).completed(id);
                if let Head::Source(source) = &mut self.head {
                    source.notify_checkpoint_complete(id).map_err(|e| operator_error(counters, 0, e))?;
                }
                for index in 0..self.operators.len() {
                    self.operators[index]
                        .notify_checkpoint_complete(id)
                        .map_err(|e| operator_error(counters, index + self.offset, e))?;
                }
                if let Some(done) = done {
                    // The TaskManager may have stopped waiting; the commit happened regardless.
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }

    /// Stop with savepoint: the source emits nothing more and waits to be cancelled, still passing on
    /// checkpoint completions (so sinks commit what the savepoint covers).
    async fn suspend(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        self.flush_outputs().await?;
        loop {
            let command = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(TaskError::Cancelled),
                command = next_command(&mut self.checkpointing.commands) => command,
            };
            match command {
                Some(complete @ CheckpointCommand::Complete { .. }) => {
                    Box::pin(self.on_command(complete, counters)).await?
                }
                Some(CheckpointCommand::Trigger { .. }) => {}
                None => self.cancel.cancelled().await,
            }
        }
    }

    /// The barrier of checkpoint `id` arrived on `channel`: the channel is held back until every other
    /// channel delivered it too (aligned checkpoint), then the task takes its snapshot.
    async fn on_barrier(&mut self, channel: usize, id: u64, counters: &TaskCounters) -> Result<(), TaskError> {
        let cp = &mut self.checkpointing;
        if id <= cp.last_id {
            return Ok(()); // A checkpoint this task already took or abandoned.
        }
        let Head::Gate(gate) = &mut self.head else { return Ok(()) };
        match &cp.aligning {
            Some(alignment) if alignment.id > id => return Ok(()),
            Some(alignment) if alignment.id == id => {}
            _ => {
                // A newer checkpoint overtakes an unfinished alignment: the older one was aborted upstream.
                gate.unblock_all();
                cp.aligning = Some(Alignment { id, started: Instant::now(), done: cp.ended.clone() });
            }
        }
        if let Some(alignment) = cp.aligning.as_mut() {
            if let Some(done) = alignment.done.get_mut(channel) {
                *done = true;
            }
            gate.block(channel);
        }
        self.complete_alignment(counters).await
    }

    /// A channel delivered end-of-partition: it no longer holds back an alignment.
    async fn on_channel_ended(&mut self, channel: usize, counters: &TaskCounters) -> Result<(), TaskError> {
        let cp = &mut self.checkpointing;
        if let Some(ended) = cp.ended.get_mut(channel) {
            *ended = true;
        }
        if let Some(done) = cp.aligning.as_mut().and_then(|a| a.done.get_mut(channel)) {
            *done = true;
        }
        self.complete_alignment(counters).await
    }

    /// Takes the checkpoint being aligned if every channel has delivered its barrier.
    async fn complete_alignment(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        let cp = &mut self.checkpointing;
        if !cp.aligning.as_ref().is_some_and(|a| a.done.iter().all(|&d| d)) {
            return Ok(());
        }
        let Some(alignment) = cp.aligning.take() else { return Ok(()) };
        cp.last_id = alignment.id;
        if let Head::Gate(gate) = &mut self.head {
            gate.unblock_all();
        }
        self.take_checkpoint(alignment.id, alignment.started.elapsed(), counters).await
    }

    /// Takes this task's part of checkpoint `id`: snapshots the source position and every operator's state
    /// (synchronously, between batches), sends the barrier on, then writes the snapshot file on a blocking
    /// thread and acknowledges (or declines) to the JobManager.
    async fn take_checkpoint(
        &mut self,
        id: u64,
        alignment: Duration,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        let started = Instant::now();
        let snapshot = self.snapshot(id);
        let sync = started.elapsed();
        // Downstream aligns on this barrier whether or not this task's part succeeded: a declined checkpoint
        // is aborted by the coordinator, and the next barrier supersedes it.
        self.flush_outputs().await?;
        for output in &mut self.outputs {
            output.partition.broadcast_event(StreamEvent::Barrier(id)).await?;
        }
        let cp = &self.checkpointing;
        let (task, reporter) = (cp.task.clone(), cp.reporter.clone());
        let snapshot = match (snapshot, &cp.dir) {
            (Ok(snapshot), Some(dir)) => (snapshot, dir.clone()),
            (Err(reason), _) => {
                reporter(decline(&task, id, reason));
                return Ok(());
            }
            (Ok(_), None) => {
                reporter(decline(&task, id, "the deployment has no checkpoint directory".into()));
                return Ok(());
            }
        };
        // Per operator: its non-keyed state now, its keyed state once written.
        let gauges: Vec<(prometheus::IntGauge, i64)> = snapshot
            .0
            .header
            .operators
            .iter()
            .zip(&counters.vertices)
            .map(|(operator, vertex)| (vertex.state_size_bytes.clone(), operator.operator_state.len() as i64))
            .collect();
        let name = snapshot_file_name(task.chain, task.subtask);
        let cancel = self.cancel.clone();
        let (spool, shared) = (cp.spool.clone(), cp.shared.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let (parts, dir) = snapshot;
            if cancel.is_cancelled() {
                // The task was cancelled while the write waited: the checkpoint is gone, write nothing.
                return;
            }
            let written = Instant::now();
            let outcome = match store_snapshot(&dir, id, &spool, &name, parts, &shared, &runtime) {
                Ok(stored) => {
                    let file = &stored.written;
                    for (index, (gauge, bytes)) in gauges.iter().enumerate() {
                        let keyed =
                            file.keyed_bytes.iter().filter(|(i, _)| *i as usize == index).map(|(_, b)| *b).sum::<u64>();
                        gauge.set(bytes.saturating_add(i64::try_from(keyed).unwrap_or(i64::MAX)));
                    }
                    CheckpointOutcome::Acknowledge(AcknowledgeCheckpointRequest {
                        task: Some(task.clone()),
                        checkpoint_id: id,
                        state_file: name,
                        state_size_bytes: stored.uploaded_bytes,
                        shared_files: stored.shared,
                        uploaded_shared_files: stored.uploaded_shared,
                        alignment_ms: alignment.as_millis() as u64,
                        sync_ms: sync.as_millis() as u64,
                        async_ms: written.elapsed().as_millis() as u64,
                    })
                }
                Err(e) => decline(&task, id, format!("cannot write the snapshot: {e}")),
            };
            reporter(outcome);
        });
        Ok(())
    }

    /// The synchronous part of the task's snapshot for checkpoint `id`: one entry per vertex of the chain
    /// (head first) and the deferred keyed state of each operator that has some; the reason when an operator
    /// cannot snapshot its state.
    fn snapshot(&mut self, id: u64) -> Result<SnapshotParts, String> {
        let task = &self.checkpointing.task;
        let mut snapshot = TaskSnapshot {
            job_id: task.job_id.clone(),
            checkpoint_id: id,
            chain: task.chain,
            subtask: task.subtask,
            parallelism: self.parallelism,
            operators: Vec::with_capacity(self.vertex_ids.len()),
        };
        if let Head::Source(source) = &mut self.head {
            let head = self.vertex_ids.first().cloned().unwrap_or_default();
            let position = source.position(id).map_err(|e| format!("vertex '{head}': {}", e.0))?;
            snapshot.operators.push(OperatorSnapshot {
                vertex_id: head,
                source_position: position,
                checkpoint_id: id,
                ..Default::default()
            });
        }
        let mut keyed = Vec::new();
        for (index, operator) in self.operators.iter_mut().enumerate() {
            let vertex_id = self.vertex_ids.get(index + self.offset).cloned().unwrap_or_default();
            let named = |e: String| format!("vertex '{vertex_id}': {e}");
            let mut state = OperatorSnapshot { vertex_id: vertex_id.clone(), checkpoint_id: id, ..Default::default() };
            operator.snapshot_state(&mut state).map_err(|e| named(e.0))?;
            if let Some(backend) = operator.keyed_backend() {
                let deferred = backend.deferred_snapshot().map_err(|e| named(e.to_string()))?;
                keyed.push(((index + self.offset) as u32, deferred));
            }
            snapshot.operators.push(state);
        }
        Ok(SnapshotParts { header: snapshot, keyed })
    }

    /// Event time reached `watermark` (or the task went idle): each operator in chain order fires what it
    /// completes, its output flowing through the rest, then the watermark goes to every consumer.
    async fn advance_watermark(&mut self, watermark: i64, counters: &TaskCounters) -> Result<(), TaskError> {
        if watermark != IDLE {
            for index in 0..self.operators.len() {
                let mut out = Vec::new();
                self.operators[index]
                    .on_watermark(watermark, &mut out)
                    .map_err(|e| operator_error(counters, index + self.offset, e))?;
                self.produced(index, out, counters).await?;
            }
        }
        for output in &mut self.outputs {
            output.partition.broadcast_event(StreamEvent::Watermark(watermark)).await?;
        }
        Ok(())
    }

    /// The earliest processing-time timer of the chain, as a runtime instant.
    fn timer_deadline(&self) -> Option<tokio::time::Instant> {
        let at = self.operators.iter().filter_map(|o| o.next_timer()).min()?;
        let wait = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0);
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    /// Fires the processing-time timers that are due, in chain order.
    async fn fire_due_timers(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        let now = now_millis();
        for index in 0..self.operators.len() {
            if self.operators[index].next_timer().is_none_or(|at| at > now) {
                continue;
            }
            let mut out = Vec::new();
            self.operators[index]
                .on_processing_time(now, &mut out)
                .map_err(|e| operator_error(counters, index + self.offset, e))?;
            self.produced(index, out, counters).await?;
        }
        Ok(())
    }

    /// Operator `index` produced `out` outside of processing a batch (timers, watermarks, the end of input):
    /// counts it and sends it on through the rest of the chain.
    async fn produced(
        &mut self,
        index: usize,
        out: Vec<RecordBatch>,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        let vertex = &counters.vertices[index + self.offset];
        for batch in &out {
            vertex.records_out.inc_by(batch.num_rows() as u64);
            vertex.bytes_out.inc_by(batch.get_array_memory_size() as u64);
        }
        self.collect_side_output(index, counters);
        self.push(out, index + 1, 0, counters).await
    }

    /// Takes operator `index`'s side output: routed when it is the chain's tail (side-output edges always
    /// leave a chain), dropped otherwise (no edge consumes it; the operator counted the records).
    fn collect_side_output(&mut self, index: usize, counters: &TaskCounters) {
        let is_tail = index + 1 == self.operators.len();
        let operator = &mut self.operators[index];
        let vertex = &counters.vertices[index + self.offset];
        vertex.late_records.inc_by(operator.late_records().saturating_sub(vertex.late_records.get()));
        if is_tail {
            operator.drain_side_output(&mut self.side);
        } else {
            operator.drain_side_output(&mut Vec::new());
        }
    }

    /// Pushes `batches` into operator `first` (as its input `input`) and on through the chain, then to the
    /// outputs. With `first` past the last operator, the batches go straight to the outputs.
    async fn push(
        &mut self,
        batches: Vec<RecordBatch>,
        first: usize,
        input: usize,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        if self.offset == 1 && first == 0 {
            let head = &counters.vertices[0];
            for batch in &batches {
                head.records_out.inc_by(batch.num_rows() as u64);
                head.bytes_out.inc_by(batch.get_array_memory_size() as u64);
            }
        }
        let mut current = batches;
        let mut pause = None;
        for index in first..self.operators.len() {
            if current.is_empty() {
                break;
            }
            let vertex = &counters.vertices[index + self.offset];
            let operator = &mut self.operators[index];
            let mut next = Vec::new();
            for batch in current {
                vertex.records_in.inc_by(batch.num_rows() as u64);
                vertex.bytes_in.inc_by(batch.get_array_memory_size() as u64);
                let processed = if index == first {
                    operator.process_input(input, batch, &mut next)
                } else {
                    operator.process(batch, &mut next)
                };
                processed.map_err(|e| operator_error(counters, index + self.offset, e))?;
            }
            for batch in &next {
                vertex.records_out.inc_by(batch.num_rows() as u64);
                vertex.bytes_out.inc_by(batch.get_array_memory_size() as u64);
            }
            pause = pause.max(operator.pause());
            self.collect_side_output(index, counters);
            current = next;
        }
        self.emit(current, counters).await?;
        if let Some(pause) = pause {
            self.account_busy(counters);
            self.flush_outputs().await?;
            // A throttled operator (a slow sink) is busy while it waits, as a slow user function is in
            // Flink: it is the cause of backpressure, not its victim.
            cancellable_sleep(&self.cancel, pause).await?;
            self.account_busy(counters);
        }
        Ok(())
    }

    /// Sends the tail's main output to the main outputs, and its side output to the edges that carry it.
    async fn emit(&mut self, batches: Vec<RecordBatch>, counters: &TaskCounters) -> Result<(), TaskError> {
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            for output in self.outputs.iter_mut().filter(|o| o.plan.side_output.is_none()) {
                output.emit(batch.clone()).await?;
            }
        }
        for (name, batch) in std::mem::take(&mut self.side) {
            for output in self.outputs.iter_mut().filter(|o| o.plan.side_output.as_deref() == Some(name)) {
                output.emit(batch.clone()).await?;
            }
        }
        self.sync_remote_bytes_out(counters);
        Ok(())
    }

    async fn flush_outputs(&mut self) -> Result<(), TaskError> {
        for output in &mut self.outputs {
            output.partition.flush().await?;
        }
        Ok(())
    }

    /// Finishes operators in chain order, each one's final output flowing through the rest, then closes
    /// every output with end-of-partition.
    async fn finish(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        for index in 0..self.operators.len() {
            let mut out = Vec::new();
            self.operators[index].finish(&mut out).map_err(|e| operator_error(counters, index + self.offset, e))?;
            self.produced(index, out, counters).await?;
        }
        for output in &mut self.outputs {
            output.partition.broadcast_event(StreamEvent::EndOfPartition).await?;
            output.partition.flush().await?;
        }
        self.account_busy(counters);
        self.sync_remote_bytes_out(counters);
        Ok(())
    }

    /// Brings the task's remote-bytes-out counter up to what its partitions queued for other TaskManagers.
    fn sync_remote_bytes_out(&self, counters: &TaskCounters) {
        let total: u64 = self.outputs.iter().map(|o| o.partition.remote_bytes_queued()).sum();
        counters.remote_bytes_out.inc_by(total.saturating_sub(counters.remote_bytes_out.get()));
    }

    /// Books the time since the last accounting as busy, minus what the partitions spent back-pressured.
    fn account_busy(&mut self, counters: &TaskCounters) {
        let elapsed = self.clock.last.elapsed();
        self.clock.last = Instant::now();
        let backpressured: Duration = self.outputs.iter().map(|o| o.partition.backpressured_time()).sum();
        let new_backpressure = backpressured.saturating_sub(self.clock.backpressured_seen);
        self.clock.backpressured_seen = backpressured;
        let new_backpressure = new_backpressure.min(elapsed);
        counters.backpressured.inc_by(new_backpressure.as_secs_f64());
        counters.busy.inc_by((elapsed - new_backpressure).as_secs_f64());
    }

    fn account_idle(&mut self, counters: &TaskCounters) {
        counters.idle.inc_by(self.clock.last.elapsed().as_secs_f64());
        self.clock.last = Instant::now();
    }
}

/// Restores a chain's state: the source continues from its subtask's position, every other operator loads
/// its vertex's snapshots from all subtasks of the checkpointed job, keeping this subtask's key groups.
async fn restore_chain(
    restore: &RestoreSpec,
    job: &ValidatedJob,
    plan: &SubtaskPlan,
    vertices: &[&sluice_common::proto::Vertex],
    state: &StateSettings,
    head: &mut Head,
    operators: &mut [Box<dyn Operator>],
) -> Result<(), TaskError> {
    let ids: Vec<&str> = vertices.iter().map(|v| v.id.as_str()).collect();
    let is_source = matches!(head, Head::Source(_));
    // The files that hold any vertex of this chain; a source only needs its own subtask's.
    let files: Vec<(String, bool)> = restore
        .files
        .iter()
        .filter(|f| f.vertex_ids.iter().any(|v| ids.contains(&v.as_str())))
        .map(|f| (f.file.clone(), f.subtask == plan.subtask))
        .collect();
    let checkpoint = restore.checkpoint_id;
    let failed = |e: String| TaskError::Operator(format!("cannot restore checkpoint {checkpoint}: {e}"));
    let storage = Storage::open(&restore.dir).map_err(|e| failed(e.to_string()))?;
    let spool = state.spool_dir();
    let spool = spool.as_path();
    // Local copies (the files themselves in a local directory; downloads from an object store).
    let mut copies = Vec::with_capacity(files.len());
    for (file, own) in files {
        let copy = storage.fetch(&file, spool).await.map_err(|e| failed(e.to_string()))?;
        copies.push((copy, storage.describe(&file), own));
    }
    let chain = job.chains.get(plan.chain as usize).map_or(1, |c| c.parallelism);
    let range = sluice_common::keygroup::key_group_range(plan.subtask, chain, job.max_parallelism());
    let key_groups = range.start as u16..=range.end.saturating_sub(1) as u16;
    let mine = key_groups.clone();
    let keep_groups = key_groups.clone();
    let mut snapshots = tokio::task::spawn_blocking(move || {
        // Only this subtask's key groups are kept while reading: memory holds its share, not every file.
        let keep = |key: &[u8]| crate::state::key_group_of_state_key(key).is_some_and(|g| mine.contains(&g));
        copies
            .into_iter()
            .map(|(copy, shown, own)| {
                // Errors name the file where it is stored, not the temporary download.
                let local = copy.path().display().to_string();
                read_snapshot_keeping(copy.path(), &keep)
                    .map(|s| (s, own))
                    .map_err(|e| e.to_string().replace(&local, &shown))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| TaskError::Operator(format!("restoring checkpoint {checkpoint}: {e}")))?
    .map_err(failed)?;
    for (snapshot, _) in &mut snapshots {
        for operator in &mut snapshot.operators {
            if let Some(native) = operator.rocksdb.take() {
                let keyed = restore_native(&storage, &restore.shared_dir, native, state, keep_groups.clone())
                    .await
                    .map_err(|e| failed(format!("vertex '{}': {e}", operator.vertex_id)))?;
                operator.keyed.extend(keyed);
            }
        }
    }
    let of_vertex = |id: &str, own_only: bool| -> Vec<&OperatorSnapshot> {
        snapshots
            .iter()
            .filter(|(_, own)| *own || !own_only)
            .flat_map(|(s, _)| s.operators.iter().filter(|o| o.vertex_id == id))
            .collect()
    };
    let named = |id: &str, e: OperatorError| {
        TaskError::Operator(format!("vertex '{id}': cannot restore checkpoint {checkpoint}: {}", e.0))
    };
    let (first_operator, head_id) = if is_source { (1, ids.first().copied()) } else { (0, None) };
    if let (Head::Source(source), Some(id)) = (head, head_id) {
        let all: Vec<&[u8]> = of_vertex(id, false).iter().map(|s| s.source_position.as_slice()).collect();
        let own = of_vertex(id, true).first().map(|s| s.source_position.as_slice());
        if own.is_some() || !all.is_empty() {
            source.seek_all(own, &all).map_err(|e| named(id, e))?;
        }
    }
    for (operator, id) in operators.iter_mut().zip(ids.iter().skip(first_operator)) {
        let states = of_vertex(id, false);
        if !states.is_empty() {
            operator.restore_state(&states, key_groups.clone()).map_err(|e| named(id, e))?;
        }
    }
    Ok(())
}

/// The entries of an incremental RocksDB snapshot whose key group is in `key_groups`: its files are
/// downloaded into a directory of their own (SST files from `shared_dir`), which is opened read-only, read
/// and removed.
async fn restore_native(
    storage: &Storage,
    shared_dir: &str,
    native: sluice_common::proto::RocksDbCheckpoint,
    state: &StateSettings,
    key_groups: std::ops::RangeInclusive<u16>,
) -> Result<Vec<sluice_common::proto::KeyedStateSnapshot>, String> {
    if native.state_names.len() != native.column_families.len() {
        return Err("a RocksDB snapshot with unequal state names and column families".into());
    }
    let shared = match shared_dir {
        "" => None,
        location => Some(Storage::open(location).map_err(|e| e.to_string())?),
    };
    let dir = state.spool_dir().join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
    let downloaded = async {
        for file in &native.files {
            if file.name.is_empty() || file.name.contains('/') || file.name.contains("..") {
                return Err(format!("a RocksDB snapshot names the file {:?}", file.name));
            }
            let target = dir.join(&file.name);
            match (&shared, file.shared.is_empty()) {
                (_, true) => storage.download_to(&file.private, &target).await,
                (Some(shared), false) => shared.download_to(&file.shared, &target).await,
                (None, false) => {
                    return Err(format!("{} is shared, and the checkpoint names no shared folder", file.name))
                }
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = downloaded {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let states: Vec<(String, String)> = native.state_names.into_iter().zip(native.column_families).collect();
    let settings = state.rocksdb.clone();
    tokio::task::spawn_blocking(move || {
        let mut out: Vec<sluice_common::proto::KeyedStateSnapshot> = states
            .iter()
            .map(|(name, _)| sluice_common::proto::KeyedStateSnapshot { name: name.clone(), ..Default::default() })
            .collect();
        let mut visit = |name: &str, key: &[u8], value: &[u8]| {
            let mine = crate::state::key_group_of_state_key(key).is_some_and(|g| key_groups.contains(&g));
            if let (true, Some(state)) = (mine, out.iter_mut().find(|s| s.name == name)) {
                state.keys.push(key.to_vec());
                state.values.push(value.to_vec());
            }
            Ok(())
        };
        crate::state::read_native_checkpoint(dir, states, &settings, &mut visit).map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What woke a task waiting on its input gate.
enum Wake {
    Command(CheckpointCommand),
    Timer,
    Flush,
    Event(Option<Result<(usize, StreamEvent), NetworkError>>),
}

/// An operator's error, naming its vertex.
fn operator_error(counters: &TaskCounters, vertex: usize, error: OperatorError) -> TaskError {
    let id = counters.vertices.get(vertex).map_or("?", |v| v.id.as_str());
    TaskError::Operator(format!("vertex '{id}': {}", error.0))
}

fn named(vertex: &sluice_common::proto::Vertex, error: OperatorError) -> TaskError {
    TaskError::Operator(format!("vertex '{}': {}", vertex.id, error.0))
}

fn decline(task: &TaskRef, id: u64, reason: String) -> CheckpointOutcome {
    CheckpointOutcome::Decline(DeclineCheckpointRequest { task: Some(task.clone()), checkpoint_id: id, reason })
}

/// The next checkpoint command; pending forever once the sender is gone (the receiver is then dropped).
async fn next_command(commands: &mut Option<mpsc::Receiver<CheckpointCommand>>) -> Option<CheckpointCommand> {
    let receiver = commands.as_mut()?;
    match receiver.recv().await {
        Some(command) => Some(command),
        None => {
            *commands = None;
            None
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `duration` unless the task is cancelled first.
async fn cancellable_sleep(cancel: &CancellationToken, duration: Duration) -> Result<(), TaskError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(TaskError::Cancelled),
        _ = tokio::time::sleep(duration) => Ok(()),
    }
}

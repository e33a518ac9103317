//! A task's part of a checkpoint: serve the TaskManager's commands (trigger, complete), apply the barrier
//! aligner's answers to the input gate, take the synchronous snapshot between batches, send the barrier on,
//! and write the snapshot file off the loop before acknowledging (or declining) to the JobManager.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_common::proto::{
    AcknowledgeCheckpointRequest, DeclineCheckpointRequest, OperatorSnapshot, TaskRef, TaskSnapshot,
};
use sluice_common::storage::Storage;
use tokio::sync::mpsc;

use super::alignment::{BarrierAligner, BarrierStep};
use super::{operator_error, Head, Runner, TaskError};
use crate::checkpoint::{
    snapshot_file_name, store_snapshot, CheckpointCommand, CheckpointOutcome, CheckpointReporter, SharedFiles,
    SnapshotParts,
};
use crate::metrics::TaskCounters;
use crate::network::StreamEvent;

/// How long a task that ended waits for its snapshot writers before it reports its end. A write under way
/// when the task was cancelled (an upload retrying through a storage outage, say) would otherwise land after
/// the JobManager, told the task is CANCELED, deleted the job's checkpoints, and stay there for good. Below
/// the JobManager's default cancel timeout (30 s), so the JobManager still hears the end.
pub(super) const SNAPSHOT_WRITERS_DRAIN_MAX: Duration = Duration::from_secs(15);

/// Held by every snapshot writer of a task (and by the task): when the last one is dropped, the receiver
/// the task waits on closes, so the task knows no write of its own is still under way.
#[derive(Clone)]
pub(super) struct WriterGuard {
    _alive: mpsc::Sender<()>,
}

impl WriterGuard {
    /// A guard, and the receiver that closes once every clone of it is gone.
    pub(super) fn new() -> (Self, mpsc::Receiver<()>) {
        let (alive, done) = mpsc::channel(1);
        (WriterGuard { _alive: alive }, done)
    }
}

/// The checkpoint state of a running task.
pub(super) struct Checkpointing {
    pub(super) task: TaskRef,
    pub(super) dir: Option<Storage>,
    /// Where a snapshot bound for an object store is written before it is uploaded.
    pub(super) spool: PathBuf,
    /// The shared files of this task's incremental snapshots.
    pub(super) shared: Arc<std::sync::Mutex<SharedFiles>>,
    /// None once the TaskManager dropped its sender (the task is being torn down).
    pub(super) commands: Option<mpsc::Receiver<CheckpointCommand>>,
    pub(super) reporter: CheckpointReporter,
    /// Which barriers the task has seen, which channels it holds back, and the newest checkpoint it took.
    pub(super) aligner: BarrierAligner,
    /// Cloned into every snapshot writer, so that the task's end can wait for them.
    pub(super) writers: WriterGuard,
}

impl Runner {
    /// A checkpoint command from the TaskManager.
    pub(super) async fn on_command(
        &mut self,
        command: CheckpointCommand,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        match command {
            CheckpointCommand::Trigger { id, timestamp_ms: _, stop } => {
                if !matches!(self.head, Head::Source(_)) {
                    return Ok(()); // Other tasks take a checkpoint when its barriers are aligned.
                }
                // A trigger at or below the last checkpoint taken is stale: nothing to do.
                if let Ok(aligned) = self.checkpointing.aligner.trigger(id, Instant::now()) {
                    self.take_checkpoint(aligned.checkpoint, Duration::ZERO, counters).await?;
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
    pub(super) async fn on_barrier(
        &mut self,
        channel: usize,
        id: u64,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        let Head::Gate(gate) = &mut self.head else { return Ok(()) };
        match self.checkpointing.aligner.on_barrier(channel, id, Instant::now()) {
            // A checkpoint this task already took, or one a newer checkpoint superseded.
            BarrierStep::Refused(_) => Ok(()),
            BarrierStep::Block { channel, release_all_first } => {
                if release_all_first {
                    gate.unblock_all();
                }
                gate.block(channel);
                Ok(())
            }
            BarrierStep::Aligned(aligned) => {
                gate.unblock_all();
                self.take_checkpoint(aligned.checkpoint, aligned.started.elapsed(), counters).await
            }
        }
    }

    /// A channel delivered end-of-partition: it no longer holds back an alignment.
    pub(super) async fn on_channel_ended(&mut self, channel: usize, counters: &TaskCounters) -> Result<(), TaskError> {
        let Some(aligned) = self.checkpointing.aligner.on_end_of_input(channel) else { return Ok(()) };
        if let Head::Gate(gate) = &mut self.head {
            gate.unblock_all();
        }
        self.take_checkpoint(aligned.checkpoint, aligned.started.elapsed(), counters).await
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
        let writer = cp.writers.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = writer;
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
            let position = source.position(id).map_err(|e| format!("vertex '{head}': {e}"))?;
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
            operator.snapshot_state(&mut state).map_err(|e| named(e.to_string()))?;
            if let Some(backend) = operator.keyed_backend() {
                let deferred = backend.deferred_snapshot().map_err(|e| named(e.to_string()))?;
                keyed.push(((index + self.offset) as u32, deferred));
            }
            snapshot.operators.push(state);
        }
        Ok(SnapshotParts { header: snapshot, keyed })
    }
}

fn decline(task: &TaskRef, id: u64, reason: String) -> CheckpointOutcome {
    CheckpointOutcome::Decline(DeclineCheckpointRequest { task: Some(task.clone()), checkpoint_id: id, reason })
}

/// The next checkpoint command; pending forever once the sender is gone (the receiver is then dropped).
pub(super) async fn next_command(
    commands: &mut Option<mpsc::Receiver<CheckpointCommand>>,
) -> Option<CheckpointCommand> {
    let receiver = commands.as_mut()?;
    match receiver.recv().await {
        Some(command) => Some(command),
        None => {
            *commands = None;
            None
        }
    }
}

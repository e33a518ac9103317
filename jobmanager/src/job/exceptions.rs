//! The failure and recovery timeline: each failure of a job is recorded when noticed (its cause, task and
//! TaskManager), and its recovery as it goes, phase by phase:
//!
//! ```text
//!  last sign of life ── noticed ──────── cancelled ─────── deploying ─────── running ──────── checkpoint
//!         detection          cancel           scheduling          restore          catch_up
//! ```
//!
//! *detection*: a lost TaskManager's silence (its last heartbeat to the loss being declared; 0 when a task
//! reported its own failure); *cancel*: FAILING, until the old attempt's tasks are gone; *scheduling*: the restart
//! delay and the wait for slots; *restore*: deployment to every task running (each restores its state first);
//! *catch_up*: every task running to the first checkpoint of the new attempt completed (a barrier went from
//! every source through every sink: the backlog the failure left no longer holds the pipeline).
//!
//! The records are history for people, written to the store best-effort: a write that fails is logged and the
//! recovery itself goes on.
use std::time::Duration;

use sluice_common::lifecycle::job::JobStatus;
use sluice_common::lifecycle::FailureKind;
use tokio::time::Instant;

use crate::cluster::now_ms;
use crate::job::actor::JobActor;
use crate::store::{ExceptionRecord, RecoveryRecord};

/// A phase of a recovery: the `phase` label of `job_recovery_phase_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryPhase {
    Detection,
    Cancel,
    Scheduling,
    Restore,
    CatchUp,
}

impl RecoveryPhase {
    pub const ALL: [RecoveryPhase; 5] = [
        RecoveryPhase::Detection,
        RecoveryPhase::Cancel,
        RecoveryPhase::Scheduling,
        RecoveryPhase::Restore,
        RecoveryPhase::CatchUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPhase::Detection => "detection",
            RecoveryPhase::Cancel => "cancel",
            RecoveryPhase::Scheduling => "scheduling",
            RecoveryPhase::Restore => "restore",
            RecoveryPhase::CatchUp => "catch_up",
        }
    }
}

/// Where a failure came from, noted with its cause and taken when the job leaves RUNNING.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailureOrigin {
    /// The task that failed: "vertex -> vertex (chain c, subtask s)".
    pub task: Option<String>,
    pub task_manager: Option<String>,
    /// How long what failed had been silent when the failure was noticed.
    pub silent_for: Duration,
    /// What kind of failure the task reported (None: no task reported one, or it did not say).
    pub kind: Option<FailureKind>,
}

/// One failure and how far its recovery got.
pub(in crate::job) struct RecoveryClock {
    record: ExceptionRecord,
    noticed: Instant,
    detection: Duration,
    cancelled: Option<Instant>,
    deploying: Option<Instant>,
    running: Option<Instant>,
    /// The newest retained checkpoint when every task ran again: catch-up ends when a newer one completes.
    checkpoint_when_running: Option<u64>,
}

impl RecoveryClock {
    /// What kind of failure started this recovery, when a task said.
    pub(in crate::job) fn failure_kind(&self) -> Option<FailureKind> {
        self.record.failure_kind
    }

    fn phases(&self) -> Option<RecoveryRecord> {
        let running = self.running?;
        let cancelled = self.cancelled.unwrap_or(self.noticed);
        let deploying = self.deploying.unwrap_or(cancelled);
        let ms = |d: Duration| d.as_millis() as u64;
        Some(RecoveryRecord {
            detection_ms: ms(self.detection),
            cancel_ms: ms(cancelled.saturating_duration_since(self.noticed)),
            scheduling_ms: ms(deploying.saturating_duration_since(cancelled)),
            restore_ms: ms(running.saturating_duration_since(deploying)),
            catch_up_ms: self.record.recovery.and_then(|r| r.catch_up_ms),
            total_ms: ms(self.detection + running.saturating_duration_since(self.noticed)),
        })
    }
}

impl JobActor {
    /// A transition to FAILING or FAILED with a cause: records the failure of the current attempt (FAILING
    /// starts its recovery clock; a FAILED that follows replaces the cause with the final one).
    pub(in crate::job) async fn note_failure(&mut self, to: JobStatus, cause: &str) {
        let origin = self.failure_origin.take().unwrap_or_default();
        let record = ExceptionRecord {
            attempt: self.attempt.0,
            time_ms: now_ms(),
            cause: cause.to_string(),
            failure_kind: origin.kind,
            task: origin.task,
            task_manager_id: origin.task_manager,
            restarted: false,
            recovery: None,
        };
        let record = match self.recovery.take() {
            // FAILING, then FAILED (the restart strategy gave up, or no checkpoint was usable): one failure.
            Some(clock) if clock.record.attempt == record.attempt => {
                ExceptionRecord { cause: record.cause, ..clock.record }
            }
            _ => record,
        };
        self.persist_exception(&record).await;
        if to == JobStatus::Failing {
            self.recovery = Some(RecoveryClock {
                record,
                noticed: Instant::now(),
                detection: origin.silent_for,
                cancelled: None,
                deploying: None,
                running: None,
                checkpoint_when_running: None,
            });
        }
    }

    /// RESTARTING begins: the failed attempt's tasks are gone.
    pub(in crate::job) async fn note_restart(&mut self) {
        let Some(clock) = self.recovery.as_mut() else { return };
        clock.cancelled = Some(Instant::now());
        clock.record.restarted = true;
        let record = clock.record.clone();
        self.persist_exception(&record).await;
    }

    /// The next attempt is about to be deployed (its slots are held).
    pub(in crate::job) fn note_deploying(&mut self) {
        if let Some(clock) = self.recovery.as_mut() {
            clock.deploying = Some(Instant::now());
        }
    }

    /// Every task of the new attempt runs: the recovery's phases up to the restore are known.
    pub(in crate::job) async fn note_running_again(&mut self) {
        let newest = self.checkpoints.as_ref().and_then(|c| c.newest_retained_id());
        let periodic = self.checkpoints.as_ref().is_some_and(|c| c.is_periodic());
        let Some(clock) = self.recovery.as_mut() else { return };
        if clock.running.is_some() {
            return;
        }
        clock.running = Some(Instant::now());
        clock.checkpoint_when_running = newest;
        clock.record.recovery = clock.phases();
        let record = clock.record.clone();
        let job = self.shared.job_id.0.clone();
        if let Some(phases) = record.recovery {
            let observe = |phase: RecoveryPhase, ms: u64| {
                self.ctx
                    .metrics
                    .recovery_phase
                    .with_label_values(&[job.as_str(), phase.as_str()])
                    .observe(ms as f64 / 1000.0);
            };
            observe(RecoveryPhase::Detection, phases.detection_ms);
            observe(RecoveryPhase::Cancel, phases.cancel_ms);
            observe(RecoveryPhase::Scheduling, phases.scheduling_ms);
            observe(RecoveryPhase::Restore, phases.restore_ms);
        }
        if !periodic {
            // No checkpoint will end the catch-up: the recovery is complete as it stands.
            self.recovery = None;
        }
        self.persist_exception(&record).await;
    }

    /// While catching up: ends the catch-up once a checkpoint newer than the one retained when every task ran
    /// again completed.
    pub(in crate::job) async fn note_checkpoint_progress(&mut self) {
        let newest = self.checkpoints.as_ref().and_then(|c| c.newest_retained_id());
        let Some(clock) = self.recovery.as_mut() else { return };
        let (Some(running), Some(newest)) = (clock.running, newest) else { return };
        if clock.checkpoint_when_running.is_some_and(|before| newest <= before) {
            return;
        }
        let catch_up = running.elapsed();
        if let Some(phases) = clock.record.recovery.as_mut() {
            phases.catch_up_ms = Some(catch_up.as_millis() as u64);
        }
        let record = clock.record.clone();
        self.recovery = None;
        self.ctx
            .metrics
            .recovery_phase
            .with_label_values(&[self.shared.job_id.0.as_str(), RecoveryPhase::CatchUp.as_str()])
            .observe(catch_up.as_secs_f64());
        self.persist_exception(&record).await;
    }

    async fn persist_exception(&self, record: &ExceptionRecord) {
        if let Err(e) = self.ctx.store.record_exception(&self.shared.job_id, record).await {
            tracing::warn!(job_id = %self.shared.job_id, attempt = record.attempt, error = %e,
                "cannot record a failure in the job's exception history");
        }
    }
}

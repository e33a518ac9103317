//! RESTARTING: release the slots, wait the restart strategy's delay, take slots again (a TaskManager that
//! restarted offers fresh ones), and deploy the next attempt from the latest completed checkpoint (falling
//! back to an older retained one whose files are all there; waiting while the store does not answer, see
//! [`crate::job::restore_point`]) → RUNNING, or FAILING (FAILED when no retained checkpoint is usable).

use sluice_common::lifecycle::job::JobStatus;
use tokio::time::Instant;

use crate::cluster::HeldSlot;
use crate::job::actor::{JobActor, Next};
use crate::job::restart::RestartDecision;
use crate::job::restore_point::{Choice, Interrupted};

impl JobActor {
    /// Waits the restart delay, takes slots again and deploys the next attempt from the latest checkpoint.
    pub(in crate::job) async fn restarting(&mut self) -> Option<Next> {
        let job_id = self.shared.job_id.clone();
        // The old attempt's tasks are gone or cancelled; its slots go back so that the new attempt can take
        // the best ones, on whichever TaskManagers are alive now.
        self.ctx.cluster.release(&job_id);
        self.slots.clear();
        self.tasks.clear();
        self.running_since = None;
        let moving = self.moving_since.is_some();
        if moving {
            self.ctx.metrics.relocations.with_label_values(&[&job_id.0]).inc();
        } else {
            self.ctx.metrics.restarts.with_label_values(&[&job_id.0]).inc();
        }
        {
            let mut live = self.shared.live();
            if moving {
                live.relocations += 1;
                // Measured anew when every task runs again (`all_tasks_running`).
                live.last_relocation_ms = None;
            } else {
                live.restarts += 1;
            }
            live.tasks.clear();
            live.metrics.clear();
        }
        if std::mem::take(&mut self.redeploying) {
            // No failure: no restart strategy, no delay.
            self.restart_delay = std::time::Duration::ZERO;
        }
        // The restore point first: a wait for checkpoint storage must not hold slots other jobs could use.
        match self.latest_restore_point().await {
            Err(Interrupted::Shutdown) => return None,
            Err(Interrupted::Cancel) => return Some(Next::to(JobStatus::Cancelling)),
            Ok(Choice::Checkpoint(restore)) => {
                self.shared.live().restored_from = Some((restore.checkpoint_id, restore.dir.clone()));
                self.restore = Some(restore);
            }
            // What the job was submitted from (a savepoint, or the beginning) stays the starting point.
            Ok(Choice::NoCheckpoint) => {}
            Ok(Choice::NoneUsable(why)) => return Some(Next::failed(JobStatus::Failed, why)),
        }
        let mut delay = self.restart_delay;
        loop {
            self.set_reason(format!("restarting in {} ms", delay.as_millis()));
            let wake = Instant::now() + delay;
            loop {
                if self.cancel_requested().await {
                    return Some(Next::to(JobStatus::Cancelling));
                }
                tokio::select! {
                    _ = self.stop.cancelled() => return None,
                    _ = self.shared.desired_changed.notified() => {}
                    _ = tokio::time::sleep_until(wake) => break,
                }
            }
            match self.wait_for_slots().await? {
                Ok(slots) => {
                    self.slots = slots;
                    break;
                }
                Err(_) if self.cancel_requested().await => return Some(Next::to(JobStatus::Cancelling)),
                Err(cause) => match self.restarts.on_failure(Instant::now(), None) {
                    RestartDecision::Restart { delay: next } => {
                        tracing::warn!(job_id = %job_id, %cause, delay_ms = next.as_millis() as u64, "restart postponed");
                        self.shared.live().failure_cause = Some(cause);
                        delay = next;
                    }
                    RestartDecision::Fail(why) => {
                        return Some(Next::failed(JobStatus::Failed, format!("{cause} (not restarted: {why})")));
                    }
                },
            }
        }
        self.shared.live().reason = None;
        self.note_deploying();
        if let Some(coordinator) = self.checkpoints.as_mut() {
            coordinator.on_restart();
        }
        Some(self.deploy().await)
    }

    /// Waits (bounded by the job's slot wait timeout) until the job's slots can be allocated. None on
    /// shutdown; Err with the cause when the slots did not come, or a cancel was requested meanwhile.
    pub(in crate::job) async fn wait_for_slots(&mut self) -> Option<Result<Vec<HeldSlot>, String>> {
        let job = self.shared.job.clone();
        let needed = job.slots_needed();
        let timeout = job.slot_wait_timeout();
        let deadline = Instant::now() + timeout;
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            match self.ctx.cluster.allocate(&self.shared.job_id, needed, job.placement()) {
                Ok(slots) => return Some(Ok(slots)),
                Err(not_enough) => self.set_reason(not_enough.to_string()),
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = self.shared.desired_changed.notified() => {
                    if self.cancel_requested().await {
                        return Some(Err("cancelled while waiting for slots".to_string()));
                    }
                }
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => {
                    let (available, _) = self.ctx.cluster.slot_counts();
                    return Some(Err(format!(
                        "could not get {needed} slots within {} s ({available} available)", timeout.as_secs_f64()
                    )));
                }
            }
        }
    }
}

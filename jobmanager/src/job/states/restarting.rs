//! RESTARTING: release the slots, wait the restart strategy's delay, take slots again (a TaskManager that
//! restarted offers fresh ones), and deploy the next attempt from the latest completed checkpoint (falling
//! back to an older retained one whose files are all there) → RUNNING, or FAILING.

use sluice_common::lifecycle::job::JobStatus;
use sluice_common::proto::RestoreSpec;
use tokio::time::Instant;

use crate::checkpoint::{plan_restore, Coordinator};
use crate::cluster::HeldSlot;
use crate::job::actor::{JobActor, Next};
use crate::job::restart::RestartDecision;

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
        self.ctx.metrics.restarts.with_label_values(&[&job_id.0]).inc();
        {
            let mut live = self.shared.live();
            live.restarts += 1;
            live.tasks.clear();
            live.metrics.clear();
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
                    _ = self.ctx.shutdown.cancelled() => return None,
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
        if let Some(coordinator) = self.checkpoints.as_mut() {
            coordinator.on_restart();
        }
        if let Some(restore) = self.latest_restore_point().await {
            self.shared.live().restored_from = Some((restore.checkpoint_id, restore.dir.clone()));
            self.restore = Some(restore);
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
                _ = self.ctx.shutdown.cancelled() => return None,
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

    /// The newest retained checkpoint whose files are all there. A newer one that cannot be used is
    /// skipped with a warning naming what is wrong; None keeps what the job restored from before.
    pub(in crate::job) async fn latest_restore_point(&mut self) -> Option<RestoreSpec> {
        let job = self.shared.job.clone();
        let candidates = self.checkpoints.as_ref().map(Coordinator::restore_candidates).unwrap_or_default();
        for (id, location) in candidates {
            match plan_restore(&location, &job).await {
                Ok(spec) => {
                    tracing::info!(job_id = %self.shared.job_id, checkpoint = id, %location, "restoring from checkpoint");
                    return Some(spec);
                }
                Err(e) => {
                    tracing::warn!(job_id = %self.shared.job_id, checkpoint = id, error = %e,
                        "cannot restore from this checkpoint; trying the previous retained one");
                }
            }
        }
        None
    }
}

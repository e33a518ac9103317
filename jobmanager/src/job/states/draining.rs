//! FAILING and CANCELLING: cancel every task and wait (bounded by the cancel timeout) until every task is
//! terminal or its TaskManager is gone; then CANCELED, or ask the restart strategy: RESTARTING or FAILED.

use sluice_common::lifecycle::job::JobStatus;
use tokio::time::Instant;

use crate::job::actor::{JobActor, Next};
use crate::job::restart::RestartDecision;
use crate::job::JobEvent;

impl JobActor {
    /// Cancels every task and waits (bounded) until all are terminal or their TaskManager is gone.
    pub(in crate::job) async fn draining(&mut self, target: JobStatus) -> Option<Next> {
        self.send_cancels().await;
        let deadline = Instant::now() + self.ctx.settings.cancel_timeout;
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            let pending = self.pending_tasks();
            if pending == 0 {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                event = self.inbox.recv() => {
                    let event = event?;
                    // Failures while draining add nothing: the job is already failing or cancelling. Checkpoint
                    // requests get their answer; acknowledgements are for an aborted checkpoint.
                    for other in self.apply_events(event).1 {
                        if let JobEvent::CheckpointRequest(_, reply) = other {
                            let _ = reply.send(Err(format!("the job is {}", self.status)));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(job_id = %self.shared.job_id, pending, timeout_ms = self.ctx.settings.cancel_timeout.as_millis() as u64,
                        "tasks did not confirm cancellation in time; giving up on them");
                    break;
                }
            }
        }
        if target == JobStatus::Failed {
            return Some(self.after_failure());
        }
        Some(Next::to(target))
    }

    /// Asks the restart strategy what follows the failure that took the job to FAILING; a failure whose kind
    /// no restart can get past (a configuration error) fails the job without asking.
    pub(in crate::job) fn after_failure(&mut self) -> Next {
        let cause = self.shared.live().failure_cause.clone().unwrap_or_default();
        let kind = self.recovery.as_ref().and_then(|clock| clock.failure_kind());
        if let Some(kind) = kind.filter(|kind| !kind.restart_can_help()) {
            tracing::warn!(job_id = %self.shared.job_id, attempt = %self.attempt, %kind, %cause,
                "not restarting: the same job would fail the same way");
            return Next::failed(
                JobStatus::Failed,
                format!("{cause} (not restarted: a {} error, which the same job meets again)", kind.as_str()),
            );
        }
        match self.restarts.on_failure(Instant::now(), self.running_since) {
            RestartDecision::Restart { delay } => {
                tracing::warn!(job_id = %self.shared.job_id, attempt = %self.attempt, strategy = self.restarts.name(),
                    delay_ms = delay.as_millis() as u64, %cause, "restarting the job");
                self.restart_delay = delay;
                Next::to(JobStatus::Restarting)
            }
            RestartDecision::Fail(why) => Next::failed(JobStatus::Failed, format!("{cause} (not restarted: {why})")),
        }
    }
}

//! FINISHED, FAILED, CANCELED: end the deployment on every TaskManager, release the slots, let the
//! checkpoint coordinator delete or keep the job's checkpoints, store the final metrics, leave the registry.

use sluice_common::lifecycle::job::JobStatus;

use crate::job::actor::JobActor;

impl JobActor {
    pub(in crate::job) async fn finish(&mut self) {
        let job_id = self.shared.job_id.clone();
        // Ends the deployment on every TaskManager: for a FINISHED job this releases its network channels
        // (every consumer has received everything), for the others it repeats the cancel.
        self.send_cancels().await;
        self.ctx.cluster.release(&job_id);
        if let Some(mut coordinator) = self.checkpoints.take() {
            coordinator.on_job_end(self.status == JobStatus::Failed).await;
        }
        self.ctx.metrics.remove_job(&job_id.0);
        let metrics: Vec<_> = self.shared.live().metrics.values().cloned().collect();
        match serde_json::to_string(&metrics) {
            Ok(json) => {
                if let Err(e) = self.ctx.store.save_final_metrics(&job_id, &json).await {
                    tracing::warn!(job_id = %job_id, error = %e, "cannot store the final metrics");
                }
            }
            Err(e) => tracing::warn!(job_id = %job_id, error = %e, "cannot encode the final metrics"),
        }
        self.ctx.jobs.remove(&job_id);
        tracing::info!(job_id = %job_id, status = %self.status, "job ended");
    }
}

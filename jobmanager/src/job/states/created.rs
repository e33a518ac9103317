//! CREATED: take the job's slots (waiting, bounded by its slot wait timeout), then deploy the first attempt
//! to every TaskManager involved → RUNNING, or FAILING if a deploy failed (CANCELED if a cancel came first).
//! Deployment itself is shared with RESTARTING, which deploys the next attempt the same way.

use futures::future::join_all;
use sluice_common::ids::{Attempt, ChainIndex, ExecutionId, SubtaskIndex};
use sluice_common::lifecycle::job::JobStatus;
use sluice_common::proto::{DeployTasksRequest, SubtaskPlacement, TaskManagerAddress, TaskState};

use crate::checkpoint::{CheckpointServices, Coordinator};
use crate::cluster::{now_ms, HeldSlot, TaskManagerId};
use crate::job::actor::{checkpoint_policy, JobActor, Next};
use crate::job::{TaskEntry, TaskKey};
use crate::scheduler::subtask_placements;

impl JobActor {
    pub(in crate::job) async fn created(&mut self) -> Option<Next> {
        if self.cancel_requested().await {
            return Some(Next::to(JobStatus::Canceled));
        }
        if let Some(completed) = self.taken_over.take() {
            if let Err(next) = self.take_over_checkpoints(completed).await? {
                return Some(next);
            }
        }
        match self.wait_for_slots().await? {
            Ok(slots) => self.slots = slots,
            Err(_) if self.cancel_requested().await => return Some(Next::to(JobStatus::Canceled)),
            Err(cause) => return Some(Next::failed(JobStatus::Failed, cause)),
        }
        self.shared.live().reason = None;
        Some(self.deploy().await)
    }

    /// Deploys the next attempt on the allocated slots.
    pub(in crate::job) async fn deploy(&mut self) -> Next {
        let job = self.shared.job.clone();
        let job_id = self.shared.job_id.clone();
        if let Err(cause) = self.make_coordinator().await {
            return Next::failed(JobStatus::Failing, cause);
        }
        self.attempt = Attempt(self.attempt.0 + 1);
        let moved = self.moving_since.is_some();
        let execution_id = ExecutionId(rand::random::<u64>());
        let slot_task_managers: Vec<TaskManagerId> = self.slots.iter().map(|s| s.task_manager.clone()).collect();
        let placements = subtask_placements(&job.chains, &slot_task_managers);
        let placements_json = serde_json::to_string(&placements).unwrap_or_else(|_| "[]".to_string());
        if let Err(e) =
            self.ctx.store.record_attempt(&job_id, self.attempt, execution_id, &placements_json, now_ms(), moved).await
        {
            // A database blip: the restart strategy decides, as for any failure of an attempt.
            return Next::failed(JobStatus::Failing, format!("cannot record attempt {}: {e}", self.attempt));
        }
        let incarnations: std::collections::HashMap<&TaskManagerId, u64> =
            self.slots.iter().map(|slot| (&slot.task_manager, slot.incarnation)).collect();
        self.tasks = placements
            .iter()
            .map(|p| {
                let key = TaskKey { chain: ChainIndex(p.chain), subtask: SubtaskIndex(p.subtask) };
                let task_manager = TaskManagerId(p.task_manager_id.clone());
                let incarnation = incarnations.get(&task_manager).copied().unwrap_or_default();
                (key, TaskEntry::deployed(task_manager, incarnation))
            })
            .collect();
        {
            let mut live = self.shared.live();
            live.attempt = self.attempt;
            live.tasks = self.tasks.clone();
            live.metrics.clear();
        }
        let requests = self.deploy_requests(execution_id, &placements);
        tracing::info!(job_id = %job_id, attempt = %self.attempt, execution_id = execution_id.0,
            task_managers = requests.len(), tasks = placements.len(), "deploying");
        let client = &self.ctx.task_managers;
        let results = join_all(requests.into_iter().map(|(slot, request)| async move {
            let result = client.deploy_tasks(&slot.rpc_address, request).await;
            (slot, result)
        }))
        .await;
        let mut first_error = None;
        for (slot, result) in results {
            let task_manager = slot.task_manager.clone();
            if let Err(e) = result {
                if e.is_unreachable() {
                    self.lose_unreachable(&slot, &e);
                }
                tracing::warn!(job_id = %job_id, %task_manager, error = %e, "deploy failed");
                // Its tasks never started: count them as terminal so FAILING does not wait for them.
                self.mark_tasks_of(&task_manager, TaskState::TaskFailed);
                first_error.get_or_insert(format!("deploying to TaskManager {task_manager} failed: {e}"));
            }
        }
        match first_error {
            Some(cause) => Next::failed(JobStatus::Failing, cause),
            None => Next::to(JobStatus::Running),
        }
    }

    /// Makes the job's checkpoint coordinator, once: its ids go on after the last one the store has.
    pub(in crate::job) async fn make_coordinator(&mut self) -> Result<(), String> {
        if self.checkpoints.is_some() {
            return Ok(());
        }
        let job = self.shared.job.clone();
        let job_id = self.shared.job_id.clone();
        // Ids only grow (retention and the orphan sweep depend on it): without the last one, no attempt.
        let last_id = self
            .ctx
            .store
            .max_checkpoint_id(&job_id)
            .await
            .map_err(|e| format!("cannot read the job's last checkpoint id: {e}"))?;
        let policy = checkpoint_policy(&self.ctx, &job);
        let dir = self.ctx.checkpoint_storage.child(&job_id.0);
        let services = CheckpointServices {
            store: self.ctx.store.clone(),
            metrics: self.ctx.metrics.checkpoint_metrics(),
            client: self.ctx.task_managers.clone(),
        };
        let mut coordinator = Coordinator::new(job_id, job, policy, dir, last_id, services);
        coordinator.adopt(std::mem::take(&mut self.adopted));
        self.checkpoints = Some(coordinator);
        Ok(())
    }

    /// One request per TaskManager involved, each carrying the whole execution graph.
    pub(in crate::job) fn deploy_requests(
        &self,
        execution_id: ExecutionId,
        placements: &[SubtaskPlacement],
    ) -> Vec<(HeldSlot, DeployTasksRequest)> {
        let job = &self.shared.job;
        let mut distinct: Vec<HeldSlot> = Vec::new();
        for slot in &self.slots {
            if !distinct.iter().any(|d| d.task_manager == slot.task_manager) {
                distinct.push(slot.clone());
            }
        }
        let task_managers: Vec<TaskManagerAddress> = distinct
            .iter()
            .map(|s| TaskManagerAddress {
                task_manager_id: s.task_manager.0.clone(),
                data_address: s.data_address.clone(),
            })
            .collect();
        distinct
            .into_iter()
            .map(|slot| {
                let request = DeployTasksRequest {
                    job_id: self.shared.job_id.0.clone(),
                    attempt: self.attempt.0,
                    execution_id: execution_id.0,
                    graph: Some(job.graph.clone()),
                    chains: job.chains.clone(),
                    chain_edges: job.chain_edges.clone(),
                    placements: placements.to_vec(),
                    task_managers: task_managers.clone(),
                    checkpoint_dir: self.checkpoints.as_ref().map(|c| c.job_dir.location()).unwrap_or_default(),
                    restore: self.restore.clone(),
                    checkpointing: self.checkpoints.as_ref().is_some_and(Coordinator::is_periodic),
                };
                (slot, request)
            })
            .collect()
    }
}

//! Adoption: a new leader keeps an attempt an earlier leader deployed, without restarting it.
//!
//! After a failover the TaskManagers keep their tasks running and register with the new leader, reporting them
//! (`RegisterTaskManagerRequest.running`). For each job that was RUNNING, the new leader's actor opens an
//! [`Adoption`] of the attempt the store records; the registration handler adds the reported tasks of that
//! attempt (and its execution) to it and tells the TaskManager to keep them. The actor adopts the attempt once
//! every task of the job is found, and gives up (cancels what was found and restarts from the latest
//! checkpoint) when the wait runs out, when a task of the attempt ended or failed meanwhile, or when a
//! TaskManager that reported some of them is lost. See `states::adopting`.
use std::collections::BTreeMap;

use sluice_common::ids::{Attempt, ExecutionId, TaskManagerId};

use super::{JobShared, TaskKey};

/// Where a reported task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FoundTask {
    /// The TaskManager that reported it.
    pub task_manager: TaskManagerId,
    /// The registration (incarnation) it reported it with.
    pub incarnation: u64,
}

/// An attempt a new leader may adopt, and what the TaskManagers reported of it so far.
#[derive(Debug)]
pub(crate) struct Adoption {
    /// The attempt the store records as the job's current one.
    pub attempt: Attempt,
    /// Its execution (a reported task of another execution of the same attempt number is not adopted).
    pub execution_id: ExecutionId,
    /// The tasks found running, by key.
    pub found: BTreeMap<TaskKey, FoundTask>,
    /// Why the attempt cannot be adopted, once that is known (a task of it ended or failed meanwhile).
    pub spoiled: Option<String>,
}

impl JobShared {
    fn adoption_lock(&self) -> std::sync::MutexGuard<'_, Option<Adoption>> {
        self.adoption.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tasks found so far, and why the adoption cannot succeed if that is known (also when it is closed).
    pub fn adoption_so_far(&self) -> (BTreeMap<TaskKey, FoundTask>, Option<String>) {
        match self.adoption_lock().as_ref() {
            Some(open) => (open.found.clone(), open.spoiled.clone()),
            None => (BTreeMap::new(), Some("the adoption was closed".to_string())),
        }
    }

    /// Opens an adoption of `attempt` (execution `execution_id`).
    pub fn open_adoption(&self, attempt: Attempt, execution_id: ExecutionId) {
        *self.adoption_lock() = Some(Adoption { attempt, execution_id, found: BTreeMap::new(), spoiled: None });
        self.adoption_changed.notify_one();
    }

    /// Closes the adoption and returns what was found. Registrations after this keep nothing of the job.
    pub fn close_adoption(&self) -> Option<Adoption> {
        self.adoption_lock().take()
    }

    /// A TaskManager (`task_manager`, registered as `incarnation`) reports running `tasks` of the job's
    /// `attempt` in `execution_id`. Returns whether it keeps them: the attempt is being adopted.
    pub fn offer(
        &self,
        task_manager: &TaskManagerId,
        incarnation: u64,
        attempt: u32,
        execution_id: u64,
        tasks: &[TaskKey],
    ) -> bool {
        let kept = {
            let mut adoption = self.adoption_lock();
            match adoption.as_mut() {
                Some(open) if open.attempt.0 == attempt && open.execution_id.0 == execution_id => {
                    for key in tasks {
                        let found = FoundTask { task_manager: task_manager.clone(), incarnation };
                        open.found.insert(*key, found);
                    }
                    true
                }
                _ => false,
            }
        };
        if kept {
            self.adoption_changed.notify_one();
        }
        kept
    }

    /// Whether the job has this task (its chain exists and the subtask is below its parallelism).
    pub fn has_task(&self, key: &TaskKey) -> bool {
        self.job.chains.iter().any(|c| c.index == key.chain.0 && key.subtask.0 < c.parallelism)
    }

    /// Whether an adoption of `attempt` is open.
    pub fn adopting(&self, attempt: u32) -> bool {
        self.adoption_lock().as_ref().is_some_and(|open| open.attempt.0 == attempt)
    }

    /// A task of `attempt` reported that it ended or failed while its adoption was open: the attempt is not
    /// adopted (the report has no actor to go to yet). Returns whether an adoption of that attempt was open.
    pub fn spoil_adoption(&self, attempt: u32, why: String) -> bool {
        let spoiled = {
            let mut adoption = self.adoption_lock();
            match adoption.as_mut() {
                Some(open) if open.attempt.0 == attempt => {
                    open.spoiled.get_or_insert(why);
                    true
                }
                _ => false,
            }
        };
        if spoiled {
            self.adoption_changed.notify_one();
        }
        spoiled
    }
}

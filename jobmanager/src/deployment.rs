//! What runs where: the tasks of a job's current attempt, the TaskManager each runs on, and the
//! TaskManagers a checkpoint of that attempt is sent to.
//!
//! The job actor owns these facts (it deploys and follows the tasks); the checkpoint coordinator reads them
//! when it triggers and completes a checkpoint. They live here, below both, so that neither imports the
//! other's module for them.
use std::collections::{BTreeMap, BTreeSet};

use sluice_common::ids::{ChainIndex, SubtaskIndex, TaskManagerId};
use sluice_common::proto::{TaskRef, TaskState};

/// One subtask of one chain: the unit the TaskManagers run and report on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The chain.
    pub chain: ChainIndex,
    /// The subtask.
    pub subtask: SubtaskIndex,
}

impl TaskKey {
    /// The key of a task reference from the wire.
    pub fn of(task: &TaskRef) -> Self {
        TaskKey { chain: ChainIndex(task.chain), subtask: SubtaskIndex(task.subtask) }
    }
}

/// Where a task runs and what it last reported.
#[derive(Clone, Debug)]
pub struct TaskEntry {
    /// Its TaskManager.
    pub task_manager: TaskManagerId,
    /// The registration (incarnation) of that TaskManager it was deployed to: only that incarnation may
    /// report on it.
    pub incarnation: u64,
    /// Its last reported state (DEPLOYING until it reports).
    pub state: TaskState,
    /// FINISHED: the newest checkpoint it took part in before it ended (0: none).
    pub last_checkpoint: u64,
}

impl TaskEntry {
    /// A task just deployed to `task_manager` (DEPLOYING until it reports).
    pub fn deployed(task_manager: TaskManagerId, incarnation: u64) -> Self {
        Self { task_manager, incarnation, state: TaskState::Deploying, last_checkpoint: 0 }
    }
}

/// Where a checkpoint of the current attempt goes: its tasks and TaskManagers.
#[derive(Clone, Debug)]
pub(crate) struct Deployment {
    pub attempt: u32,
    /// Every running task of the attempt (each must acknowledge).
    pub tasks: Vec<TaskKey>,
    /// The tasks of the attempt that have finished, with the newest checkpoint each took part in: a checkpoint
    /// above that counts them as finished (Flink's FLIP-147).
    pub finished: Vec<(TaskKey, u64)>,
    /// The TaskManagers running source tasks that still run: id and RPC address.
    pub source_task_managers: Vec<(TaskManagerId, String)>,
    /// RPC addresses of every TaskManager of the attempt.
    pub all_task_managers: Vec<String>,
}

impl Deployment {
    /// Whether a source task still runs: a checkpoint's barriers start there.
    pub(crate) fn has_running_source(&self) -> bool {
        !self.source_task_managers.is_empty()
    }
}

/// The TaskManagers of the running source tasks (id and RPC address) and all TaskManagers of a placement (RPC
/// addresses).
pub(crate) fn task_manager_addresses(
    tasks: &BTreeMap<TaskKey, TaskEntry>,
    source_chains: &BTreeSet<u32>,
    rpc_address: impl Fn(&TaskManagerId) -> Option<String>,
) -> (Vec<(TaskManagerId, String)>, Vec<String>) {
    let mut sources = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (key, entry) in tasks {
        if let Some(address) = rpc_address(&entry.task_manager) {
            if source_chains.contains(&key.chain.0) && entry.state == TaskState::TaskRunning {
                sources.insert((entry.task_manager.clone(), address.clone()));
            }
            all.insert(address);
        }
    }
    (sources.into_iter().collect(), all.into_iter().collect())
}

//! From a deployment to each subtask's channels.
//!
//! A chain edge with FORWARD partitioning connects subtask `i` upstream to subtask `i` downstream only;
//! every other partitioning connects every upstream subtask to every downstream one. A channel is named
//! by a [`ChannelKey`] (execution, graph edge, upstream subtask, downstream subtask), which both ends derive
//! independently from the same deployment, so no channel ids need to be handed out.
use std::collections::HashMap;

use sluice_common::job::ValidatedJob;
use sluice_common::proto::{DeployTasksRequest, Partitioning};

use crate::network::{ChannelKey, PeerAddress};

/// A subtask's output along one chain edge.
#[derive(Clone, Debug)]
pub struct OutputPlan {
    pub partitioning: Partitioning,
    /// Indices of the key columns in the tail's output schema (HASH only).
    pub key_columns: Vec<usize>,
    pub max_parallelism: u32,
    /// Subpartition `j` feeds the downstream subtask listed at `j` (for FORWARD, a single one).
    pub subpartitions: Vec<(ChannelKey, PeerAddress)>,
    /// The side output this edge carries, or None for the main output.
    pub side_output: Option<String>,
}

/// Everything one subtask needs to connect to its neighbours.
#[derive(Clone, Debug)]
pub struct SubtaskPlan {
    pub chain: u32,
    pub subtask: u32,
    pub inputs: Vec<(ChannelKey, PeerAddress)>,
    pub outputs: Vec<OutputPlan>,
}

/// A deployment that does not hang together (the JobManager sent placements it did not fill in).
#[derive(Debug, thiserror::Error)]
#[error("invalid deployment: {0}")]
pub struct PlanError(pub String);

/// Plans every subtask of the deployment that runs on `local_task_manager`.
pub fn plan_subtasks(
    request: &DeployTasksRequest,
    job: &ValidatedJob,
    local_task_manager: &str,
) -> Result<Vec<SubtaskPlan>, PlanError> {
    let addresses: HashMap<&str, &str> =
        request.task_managers.iter().map(|t| (t.task_manager_id.as_str(), t.data_address.as_str())).collect();
    let placement: HashMap<(u32, u32), &str> =
        request.placements.iter().map(|p| ((p.chain, p.subtask), p.task_manager_id.as_str())).collect();
    let peer = |chain: u32, subtask: u32| -> Result<PeerAddress, PlanError> {
        let tm = placement
            .get(&(chain, subtask))
            .ok_or_else(|| PlanError(format!("no placement for chain {chain} subtask {subtask}")))?;
        let address = addresses.get(tm).ok_or_else(|| PlanError(format!("no data address for TaskManager {tm}")))?;
        Ok(PeerAddress { task_manager_id: tm.to_string(), data_address: address.to_string() })
    };
    let parallelism = |chain: u32| {
        job.chains.get(chain as usize).map(|c| c.parallelism).ok_or_else(|| PlanError(format!("unknown chain {chain}")))
    };

    let mut plans = Vec::new();
    for p in request.placements.iter().filter(|p| p.task_manager_id == local_task_manager) {
        let mut plan = SubtaskPlan { chain: p.chain, subtask: p.subtask, inputs: Vec::new(), outputs: Vec::new() };
        for chain_edge in &job.chain_edges {
            let edge = job
                .graph
                .edges
                .get(chain_edge.edge as usize)
                .ok_or_else(|| PlanError(format!("unknown edge {}", chain_edge.edge)))?;
            let forward = edge.partitioning() == Partitioning::Forward;
            let key = |from: u32, to: u32| ChannelKey {
                execution_id: request.execution_id,
                edge: chain_edge.edge,
                from_subtask: from,
                to_subtask: to,
            };
            if chain_edge.to_chain == p.chain {
                let upstream: Vec<u32> =
                    if forward { vec![p.subtask] } else { (0..parallelism(chain_edge.from_chain)?).collect() };
                for i in upstream {
                    plan.inputs.push((key(i, p.subtask), peer(chain_edge.from_chain, i)?));
                }
            }
            if chain_edge.from_chain == p.chain {
                let downstream: Vec<u32> =
                    if forward { vec![p.subtask] } else { (0..parallelism(chain_edge.to_chain)?).collect() };
                let subpartitions = downstream
                    .into_iter()
                    .map(|j| Ok((key(p.subtask, j), peer(chain_edge.to_chain, j)?)))
                    .collect::<Result<_, PlanError>>()?;
                let schema =
                    job.edge_schema(edge).ok_or_else(|| PlanError(format!("no schema for '{}'", edge.from)))?;
                let key_columns = edge
                    .key
                    .iter()
                    .map(|k| {
                        schema.index_of(k).map_err(|_| {
                            PlanError(format!("edge {} -> {}: unknown key column '{k}'", edge.from, edge.to))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                plan.outputs.push(OutputPlan {
                    partitioning: edge.partitioning(),
                    key_columns,
                    max_parallelism: job.max_parallelism(),
                    subpartitions,
                    side_output: (!edge.side_output.is_empty()).then(|| edge.side_output.clone()),
                });
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

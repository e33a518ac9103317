//! Setting a task up: its chain of operators (through [`crate::factory`]), its input gate or source, its
//! result partitions, and the state it restores, before the first record.
use std::sync::Arc;

use sluice_common::job::ValidatedJob;
use tokio_util::sync::CancellationToken;

use super::alignment::BarrierAligner;
use super::plan::SubtaskPlan;
use super::snapshot::WriterGuard;
use super::{named, restore, Checkpointing, Clock, Head, Output, Runner, TaskCheckpoints, TaskError};
use crate::factory::{build_operator, build_source, BuildContext};
use crate::metrics::TaskCounters;
use crate::network::NetworkEnvironment;
use crate::operator_api::OperatorError;
use crate::operator_api::SubtaskInfo;
use crate::operators::native::OperatorRegistry;
use crate::state::StateSettings;
use crate::time::{InputWatermarks, WatermarkGenerator};

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build(
        job: &ValidatedJob,
        plan: &SubtaskPlan,
        network: &NetworkEnvironment,
        counters: &TaskCounters,
        cancel: CancellationToken,
        state: &StateSettings,
        registry: &OperatorRegistry,
        checkpoints: TaskCheckpoints,
        writers: WriterGuard,
    ) -> Result<Self, TaskError> {
        let chain = job
            .chains
            .get(plan.chain as usize)
            .ok_or_else(|| TaskError::internal(format!("unknown chain {}", plan.chain)))?;
        let subtask = SubtaskInfo { index: plan.subtask, parallelism: chain.parallelism };
        let exactly_once_sinks = checkpoints.periodic;
        let context = BuildContext { job, subtask, state, registry, counters, exactly_once_sinks };
        let mut vertices = Vec::with_capacity(chain.vertex_ids.len());
        for id in &chain.vertex_ids {
            vertices.push(job.vertex(id).ok_or_else(|| TaskError::internal(format!("unknown vertex '{id}'")))?);
        }
        let Some((head_vertex, rest)) = vertices.split_first() else {
            return Err(TaskError::internal(format!("chain {} is empty", plan.chain)));
        };
        // Before any source or sink opens anything: the JobManager checked with its settings, this
        // TaskManager checks with its own.
        let refused: Vec<String> =
            vertices.iter().flat_map(|v| state.confinement.check_vertex(v)).map(|r| r.problem).collect();
        if !refused.is_empty() {
            return Err(TaskError::Operator(OperatorError::configuration(format!(
                "this TaskManager does not allow what the job reaches: {}",
                refused.join("; ")
            ))));
        }
        let mut operators = Vec::with_capacity(vertices.len());
        let mut generator = None;
        let head = if plan.inputs.is_empty() {
            if let Some(event_time) = &head_vertex.event_time {
                let schema = job
                    .schemas
                    .get(&head_vertex.id)
                    .ok_or_else(|| TaskError::internal(format!("vertex '{}' has no schema", head_vertex.id)))?;
                generator = Some(WatermarkGenerator::new(event_time, schema).map_err(|e| named(head_vertex, e))?);
            }
            Head::Source(
                build_source(head_vertex, job, subtask, counters, &state.confinement)
                    .map_err(|e| named(head_vertex, e))?,
            )
        } else {
            operators.push(build_operator(head_vertex, &context).map_err(|e| named(head_vertex, e))?);
            let gate = network.create_input_gate(plan.inputs.clone()).await?;
            counters.in_flight_bytes_max.set(gate.in_flight_bytes_max() as i64);
            Head::Gate(gate)
        };
        for vertex in rest {
            operators.push(build_operator(vertex, &context).map_err(|e| named(vertex, e))?);
        }
        let mut outputs = Vec::with_capacity(plan.outputs.len());
        for output in &plan.outputs {
            let partition = network.create_result_partition(output.subpartitions.clone(), job.buffer_timeout()).await?;
            counters.watch_output(partition.waiting_since());
            outputs.push(Output::new(output.clone(), partition));
        }
        let mut head = head;
        if let Some(restore) = &checkpoints.restore {
            restore::restore_chain(restore, job, plan, &vertices, state, &mut head, &mut operators).await?;
        }
        let offset = usize::from(matches!(head, Head::Source(_)));
        let channel_inputs = plan
            .inputs
            .iter()
            .map(|(channel, _)| job.input_index_of_edge(&head_vertex.id, channel.edge as usize))
            .collect();
        let channel_schemas = plan
            .inputs
            .iter()
            .map(|(channel, _)| job.graph.edges.get(channel.edge as usize).and_then(|edge| job.edge_schema(edge)))
            .collect();
        Ok(Self {
            head,
            operators,
            outputs,
            cancel,
            clock: Clock::start(),
            offset,
            generator,
            input_watermarks: InputWatermarks::new(plan.inputs.len()),
            next_latency_marker: std::time::Instant::now() + super::timers::LATENCY_MARKER_INTERVAL,
            side: Vec::new(),
            channel_inputs,
            channel_schemas,
            checkpointing: Checkpointing {
                task: checkpoints.task,
                dir: checkpoints.dir,
                spool: state.spool_dir(),
                shared: Arc::default(),
                commands: Some(checkpoints.commands),
                reporter: checkpoints.reporter,
                aligner: BarrierAligner::new(plan.inputs.len()),
                writers,
            },
            vertex_ids: chain.vertex_ids.clone(),
            parallelism: chain.parallelism,
        })
    }
}

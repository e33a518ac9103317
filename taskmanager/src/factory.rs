//! The factory: turns a validated vertex into the connector or operator that runs it.
//!
//! It is the one module that knows every implementation, so it sits above [`crate::connectors`] and
//! [`crate::operators`] (and the native-operator registry); the task builds its chain through it, and no
//! implementation imports it back.
use datafusion::arrow::datatypes::SchemaRef;
use sluice_common::confine::Confinement;
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{vertex::Operator as Spec, Vertex};

use crate::connectors::{blackhole, datagen, file, kafka, nexmark, print};
use crate::metrics::TaskCounters;
use crate::operator_api::{Operator, OperatorError, Source, SubtaskInfo};
use crate::operators::native::{OperatorRegistry, ProcessOperator};
use crate::operators::{aggregate, dedup, filter, flat_map, join, select, window};
use crate::state::StateSettings;

/// Builds the source of a source vertex. A file source reads its path as `confinement` resolves it, so what
/// it opens is what was checked.
pub fn build_source(
    vertex: &Vertex,
    job: &ValidatedJob,
    subtask: SubtaskInfo,
    counters: &TaskCounters,
    confinement: &Confinement,
) -> Result<Box<dyn Source>, OperatorError> {
    let schema = output_schema(job, &vertex.id)?;
    match &vertex.operator {
        Some(Spec::Datagen(spec)) => Ok(Box::new(datagen::Datagen::new(spec, schema, subtask))),
        Some(Spec::Nexmark(spec)) => Ok(Box::new(nexmark::Nexmark::new(spec, schema, subtask)?)),
        Some(Spec::FileSource(spec)) => {
            let path =
                confinement.input_path(&spec.path).map_err(|e| OperatorError::configuration(format!("path {e}")))?;
            Ok(Box::new(file::FileSourceReader::open(spec, &path, schema, subtask)?))
        }
        Some(Spec::KafkaSource(spec)) => kafka::open_source(spec, &vertex.id, schema, subtask, counters.kafka()),
        _ => Err(OperatorError::internal(format!("vertex '{}' is not a source", vertex.id))),
    }
}

/// What building a task's operators draws on besides the vertex itself.
pub struct BuildContext<'a> {
    pub job: &'a ValidatedJob,
    pub subtask: SubtaskInfo,
    pub state: &'a StateSettings,
    /// The native operators this TaskManager binary offers (`custom` vertices).
    pub registry: &'a OperatorRegistry,
    /// The task's metrics (operators with metrics of their own resolve them here).
    pub counters: &'a TaskCounters,
    /// The job checkpoints periodically: file sinks commit on checkpoint completion (exactly once).
    pub exactly_once_sinks: bool,
}

/// Builds the operator of a non-source vertex.
pub fn build_operator(vertex: &Vertex, ctx: &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> {
    let BuildContext { job, subtask, state, registry, counters, exactly_once_sinks } = *ctx;
    let input = job
        .input_schema(&vertex.id)
        .ok_or_else(|| OperatorError::internal(format!("vertex '{}' has no input schema", vertex.id)))?;
    let output = output_schema(job, &vertex.id)?;
    let event_time = job.input_event_time_column(&vertex.id);
    let backend = || {
        let chosen = job.state_backend(state.default_backend);
        state.open_for_job(chosen, &counters.task.job_id, &vertex.id, subtask.index)
    };
    Ok(match &vertex.operator {
        Some(Spec::Select(spec)) => Box::new(select::SelectOp::new(spec, &input, output)?),
        Some(Spec::Filter(spec)) => Box::new(filter::FilterOp::new(spec, &input)?),
        Some(Spec::FlatMap(spec)) => Box::new(flat_map::FlatMapOp::new(spec, &input, output)?),
        Some(Spec::Aggregate(spec)) => {
            Box::new(aggregate::RunningAggregate::new(spec, &input, output, job.max_parallelism())?)
        }
        Some(Spec::FileSink(spec)) => {
            let dir = state
                .confinement
                .output_path(&spec.path)
                .map_err(|e| OperatorError::configuration(format!("path {e}")))?;
            Box::new(file::FileSinkWriter::open(&dir, subtask, exactly_once_sinks)?)
        }
        Some(Spec::KafkaSink(spec)) => {
            if spec.delivery() == sluice_common::proto::KafkaDelivery::ExactlyOnce && !exactly_once_sinks {
                return Err(OperatorError::configuration(
                    "a kafka_sink with delivery EXACTLY_ONCE commits on checkpoints: turn checkpointing on \
                     (config.checkpointing.interval_ms or CHECKPOINT_INTERVAL)",
                ));
            }
            kafka::open_sink(spec, &vertex.id, &input, subtask, counters.kafka())?
        }
        Some(Spec::PrintSink(spec)) => Box::new(print::PrintSinkOp::new(spec, &vertex.id, subtask)),
        Some(Spec::BlackholeSink(spec)) => Box::new(blackhole::BlackholeOp::new(spec)),
        Some(Spec::Window(spec)) => Box::new(
            window::WindowOp::new(spec, &input, output, event_time, job.max_parallelism(), backend()?)?
                .with_emit_latency(counters.window_emit_latency(&vertex.id)),
        ),
        Some(Spec::Join(spec)) => {
            let (left, _) = join_input(job, &vertex.id, &spec.left)?;
            let (right, _) = join_input(job, &vertex.id, &spec.right)?;
            Box::new(join::IntervalJoinOp::regular(spec, &left, &right, output, job.max_parallelism(), backend()?)?)
        }
        Some(Spec::IntervalJoin(spec)) => {
            let (left, left_time) = join_input(job, &vertex.id, &spec.left)?;
            let (right, right_time) = join_input(job, &vertex.id, &spec.right)?;
            Box::new(join::IntervalJoinOp::new(
                spec,
                &left,
                left_time,
                &right,
                right_time,
                output,
                job.max_parallelism(),
                backend()?,
            )?)
        }
        Some(Spec::TemporalJoin(spec)) => {
            let (stream, stream_time) = join_input(job, &vertex.id, &spec.stream)?;
            let (table, table_time) = join_input(job, &vertex.id, &spec.table)?;
            Box::new(join::TemporalJoinOp::new(
                spec,
                &stream,
                stream_time,
                &table,
                table_time,
                output,
                job.max_parallelism(),
                backend()?,
            )?)
        }
        Some(Spec::Deduplicate(spec)) => {
            Box::new(dedup::DedupOp::new(spec, &input, event_time, job.max_parallelism(), backend()?)?)
        }
        Some(Spec::Custom(spec)) => Box::new(ProcessOperator::new(
            spec,
            registry,
            &input,
            output,
            event_time,
            subtask,
            job.max_parallelism(),
            backend()?,
        )?),
        Some(Spec::Datagen(_) | Spec::FileSource(_) | Spec::KafkaSource(_) | Spec::Nexmark(_)) | None => {
            return Err(OperatorError::internal(format!("vertex '{}' is not a transformation or sink", vertex.id)))
        }
    })
}

/// The schema and event-time column of a join's input from vertex `from`.
fn join_input<'a>(
    job: &'a ValidatedJob,
    vertex: &str,
    from: &str,
) -> Result<(SchemaRef, Option<&'a str>), OperatorError> {
    let edge = job
        .edge_between(from, vertex)
        .ok_or_else(|| OperatorError::internal(format!("vertex '{vertex}' has no input from '{from}'")))?;
    let schema =
        job.edge_schema(edge).ok_or_else(|| OperatorError::internal(format!("vertex '{from}' has no schema")))?;
    Ok((schema, job.edge_event_time_column(edge)))
}

fn output_schema(job: &ValidatedJob, vertex: &str) -> Result<SchemaRef, OperatorError> {
    job.schemas.get(vertex).cloned().ok_or_else(|| OperatorError::internal(format!("vertex '{vertex}' has no schema")))
}

//! What a job is made of and what happened to it, in Flink's spirit: its chained execution plan, one
//! vertex's subtasks, its failures and recoveries, and one checkpoint's per-task acknowledgements.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sluice_common::ids::JobId;
use sluice_common::job::operator_kind;

use super::handlers::{checkpoint_json, facts, Ctx};
use super::views::{chain_of, ChainView, SubtaskView};
use super::ApiError;
use crate::store::ExceptionRecord;

/// `GET /jobs/{id}/plan`.
#[derive(Serialize)]
pub(super) struct Plan {
    job_id: String,
    name: String,
    vertices: Vec<PlanVertex>,
    edges: Vec<PlanEdge>,
    chains: Vec<ChainView>,
}

#[derive(Serialize)]
struct PlanVertex {
    id: String,
    operator: &'static str,
    parallelism: u32,
    chain: Option<u32>,
    /// The vertices with an edge into this one.
    inputs: Vec<String>,
}

#[derive(Serialize)]
struct PlanEdge {
    from: String,
    to: String,
    partitioning: &'static str,
    key: Vec<String>,
    side_output: Option<String>,
    /// Both ends run in one task (a direct call, no network).
    chained: bool,
}

/// `GET /jobs/{id}/plan`: the vertices, edges and chains (tasks) the job runs as.
pub(super) async fn plan(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<Plan>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let graph = facts.graph()?;
    let chains = facts.chains()?;
    let vertices = graph
        .vertices
        .iter()
        .map(|v| PlanVertex {
            id: v.id.clone(),
            operator: v.operator.as_ref().map(operator_kind).unwrap_or("unknown"),
            parallelism: v.parallelism,
            chain: chain_of(&chains, &v.id),
            inputs: graph.edges.iter().filter(|e| e.to == v.id).map(|e| e.from.clone()).collect(),
        })
        .collect();
    let edges = graph
        .edges
        .iter()
        .map(|e| {
            let (from, to) = (chain_of(&chains, &e.from), chain_of(&chains, &e.to));
            PlanEdge {
                from: e.from.clone(),
                to: e.to.clone(),
                partitioning: e.partitioning().as_str_name(),
                key: e.key.clone(),
                side_output: (!e.side_output.is_empty()).then(|| e.side_output.clone()),
                chained: from.is_some() && from == to,
            }
        })
        .collect();
    Ok(Json(Plan {
        job_id: facts.job_id.clone(),
        name: facts.name.clone(),
        vertices,
        edges,
        chains: chains.iter().map(Into::into).collect(),
    }))
}

/// `GET /jobs/{id}/vertices/{vertex}`.
#[derive(Serialize)]
pub(super) struct VertexDetails {
    job_id: String,
    vertex_id: String,
    operator: &'static str,
    parallelism: u32,
    chain: Option<u32>,
    /// The lowest watermark over its subtasks, while the job runs.
    watermark_ms: Option<i64>,
    subtasks: Vec<SubtaskView>,
}

/// `GET /jobs/{id}/vertices/{vertex}`: each subtask's placement, state, counters, rates, shares and watermark.
pub(super) async fn vertex(
    State(ctx): Ctx,
    Path((job_id, vertex_id)): Path<(String, String)>,
) -> Result<Json<VertexDetails>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let graph = facts.graph()?;
    let chains = facts.chains()?;
    let Some(vertex) = graph.vertices.iter().find(|v| v.id == vertex_id) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("job {job_id} has no vertex {vertex_id:?}")));
    };
    let chain = chain_of(&chains, &vertex.id);
    let subtasks = match chain {
        Some(chain) => facts.subtask_views(&vertex.id, chain, vertex.parallelism),
        None => Vec::new(),
    };
    let watermark_ms = subtasks.iter().filter_map(|s| s.watermark_ms).min();
    Ok(Json(VertexDetails {
        job_id: facts.job_id.clone(),
        vertex_id: vertex.id.clone(),
        operator: vertex.operator.as_ref().map(operator_kind).unwrap_or("unknown"),
        parallelism: vertex.parallelism,
        chain,
        watermark_ms,
        subtasks,
    }))
}

/// `GET /jobs/{id}/exceptions`: the job's failures, newest first, each with the recovery that followed.
pub(super) async fn exceptions(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let exceptions: Vec<ExceptionRecord> = ctx.store.exceptions(&JobId(facts.job_id.clone())).await?;
    Ok(Json(json!({ "job_id": facts.job_id, "exceptions": exceptions })))
}

/// `GET /jobs/{id}/checkpoints/{checkpoint}`: one checkpoint, with each task's acknowledgement once completed.
pub(super) async fn checkpoint(
    State(ctx): Ctx,
    Path((job_id, checkpoint_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let id: u64 = checkpoint_id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("{checkpoint_id:?} is not a checkpoint id (a number)"))
    })?;
    let job = JobId(facts.job_id.clone());
    let (Some(record), tasks_json) = ctx.store.checkpoint_with_tasks(&job, id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("job {job_id} has no checkpoint {id}")));
    };
    let tasks: Vec<Value> = match tasks_json {
        Some(json) => serde_json::from_str::<Vec<Value>>(&json)
            .map_err(|e| ApiError::internal(format!("checkpoint {id} of job {job_id}: its task list is corrupt: {e}")))?
            .into_iter()
            .map(task_ack)
            .collect(),
        None => Vec::new(),
    };
    let mut value = checkpoint_json(&record);
    if let Some(object) = value.as_object_mut() {
        object.insert("tasks".into(), Value::Array(tasks));
    }
    Ok(Json(value))
}

/// A task's acknowledgement as shown: the stored entry, with the number of shared files it references in
/// place of their names.
fn task_ack(mut task: Value) -> Value {
    if let Some(object) = task.as_object_mut() {
        let shared = object.remove("shared").and_then(|s| s.as_array().map(Vec::len)).unwrap_or(0);
        object.insert("shared_files".into(), json!(shared));
    }
    task
}

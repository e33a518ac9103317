//! The REST handlers. They read the store and the live job views and write desired state only.
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sluice_common::confine::{redact_graph, RefusalReason};
use sluice_common::ids::JobId;
use sluice_common::job::JOB_FILE_FIELD;
use sluice_common::job::{parse_job_file, validate, ValidatedJob};
use sluice_common::lifecycle::{CheckpointKind, CheckpointStatus, JobStatus};

use super::views::{ClusterMetrics, JobDetails, JobFacts, JobMetricsView, JobSummary, TaskManagerJson};
use super::ApiError;
use crate::checkpoint::{plan_requested_restore, Kind, RestoreRequestError};
use crate::cluster::TaskManagerState;
use crate::job::{JobEvent, REPORT_FORWARD_TIMEOUT};
use crate::store::{CheckpointRecord, CHECKPOINTS_LISTED_MAX};
use crate::Context;
use sluice_common::storage::Storage;

pub(super) type Ctx = State<Arc<Context>>;

/// Answered by the process alone (no database, no TaskManager): Kubernetes probes it for liveness, on the leader
/// and on standbys alike. The version tells which image a pod runs; `role` and `leader` who leads.
pub(super) async fn health(State(ctx): Ctx) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "role": role(&ctx),
        "leader": leader_json(&ctx),
    }))
}

/// 200 on the leader, 503 on a standby: Kubernetes sends traffic only to a ready pod, so its Services reach the
/// leader.
pub(super) async fn ready(State(ctx): Ctx) -> Response {
    let body = json!({ "ready": ctx.leadership.is_leader(), "role": role(&ctx), "leader": leader_json(&ctx) });
    let status = if ctx.leadership.is_leader() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

fn role(ctx: &Context) -> &'static str {
    if ctx.leadership.is_leader() {
        "leader"
    } else {
        "standby"
    }
}

/// Who leads, since when (ms since the epoch) and where; null while no JobManager is known to lead.
pub(super) fn leader_json(ctx: &Context) -> Value {
    let state = ctx.leadership.state();
    if state.leading {
        return json!({
            "epoch": state.epoch,
            "since_ms": state.since_ms,
            "rest_address": ctx.leadership.rest_address,
            "rpc_address": ctx.leadership.rpc_address,
            "this_jobmanager": true,
        });
    }
    match state.lease.filter(|lease| lease.is_held()) {
        Some(lease) => json!({
            "epoch": lease.epoch,
            "since_ms": lease.acquired_ms,
            "rest_address": lease.rest_address,
            "rpc_address": lease.rpc_address,
            "this_jobmanager": false,
        }),
        None => Value::Null,
    }
}

/// On a standby, every request that would change something is refused with 503 and the leader's address:
/// only the leader drives jobs. Reads are answered from the store.
pub(super) async fn standby_writes(State(ctx): Ctx, request: Request, next: axum::middleware::Next) -> Response {
    let reads = request.method() == axum::http::Method::GET || request.method() == axum::http::Method::HEAD;
    if reads || ctx.leadership.is_leader() {
        return next.run(request).await;
    }
    let leader = leader_json(&ctx);
    let message = match leader["rest_address"].as_str() {
        Some(address) => format!("this JobManager is a standby; send this request to the leader at {address}"),
        None => "this JobManager is a standby and no leader is known yet; retry shortly".to_string(),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see the README for the REST API")
}

pub(super) async fn prometheus_metrics(State(ctx): Ctx) -> Result<Response, ApiError> {
    let job_counts = ctx.store.count_by_status().await?;
    let text = ctx
        .metrics
        .render(&job_counts, &ctx.cluster.snapshot(), &up_since(&ctx))
        .map_err(|e| ApiError::internal(format!("cannot render the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// When each running job last had every task up (None: it has not, now).
fn up_since(ctx: &crate::Context) -> Vec<(String, Option<u64>)> {
    ctx.jobs.all().iter().map(|job| (job.job_id.0.clone(), job.live().up_since_ms)).collect()
}

/// The query of `POST /jobs/submit`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitParams {
    /// A completed checkpoint or savepoint (its directory, or its `_metadata` file) to start from.
    savepoint_path: Option<String>,
}

/// `POST /jobs/submit`: a job file as the multipart field `job_file`, or as the JSON body itself;
/// `?savepoint_path=DIR` starts it from a savepoint or retained checkpoint.
pub(super) async fn submit_job(
    State(ctx): Ctx,
    Query(params): Query<SubmitParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let bytes = if is_multipart {
        job_file_from_multipart(request).await?
    } else {
        axum::body::to_bytes(request.into_body(), super::SUBMIT_BODY_BYTES_MAX)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the request body: {e}")))?
            .to_vec()
    };
    let rejected = |problems: &[String]| {
        ctx.metrics.submissions.with_label_values(&["rejected"]).inc();
        ApiError::invalid_job(problems)
    };
    // A soft cap: two submissions racing for the last place may both be taken.
    let unfinished = ctx.jobs.all().len();
    if unfinished >= ctx.settings.max_running_jobs {
        ctx.metrics.submissions.with_label_values(&["rejected"]).inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{unfinished} jobs are unfinished, the most this JobManager takes (--max-running-jobs / \
                 MAX_RUNNING_JOBS); submit again when one has ended"
            ),
        ));
    }
    let job = match check_job_file(&ctx, bytes).await? {
        Checked::Valid(job) => *job,
        Checked::Invalid { problems, refusals } => {
            ctx.metrics.refused(refusals);
            return Err(rejected(&problems));
        }
    };
    let restore = match params.savepoint_path {
        Some(path) => match plan_requested_restore(&path, &job, &ctx.confinement).await {
            Ok(planned) => Some(planned),
            Err(RestoreRequestError::Refused(refusal)) => {
                ctx.metrics.refused([refusal.reason]);
                return Err(rejected(&[format!("savepoint_path {}", refusal.problem)]));
            }
            Err(RestoreRequestError::Invalid(problem)) => return Err(rejected(&[problem])),
            Err(RestoreRequestError::Unavailable(why)) => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("savepoint_path: {why}; retry")))
            }
        },
        None => None,
    };
    let job_id = ctx.start_job(job, restore).await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    ctx.metrics.submissions.with_label_values(&["accepted"]).inc();
    Ok((StatusCode::OK, Json(json!({ "job_id": job_id.0, "status": JobStatus::Created.as_str() }))).into_response())
}

/// How long parsing and validating one job file may take before the submission is answered 400. The
/// bounds of `sluice_common::job::bounds` keep any job file's validation to well under a second; this
/// deadline is the backstop should a cost have been missed.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How many job files may be validated at once. Validation is CPU work (DataFusion plans every expression)
/// on the blocking pool; a few at a time keep the cores for the rest of the JobManager. A submission that
/// finds every permit taken waits for one within [`VALIDATION_TIMEOUT`].
const VALIDATIONS_IN_FLIGHT_MAX: usize = 4;

/// The permits for [`VALIDATIONS_IN_FLIGHT_MAX`]. A permit moves into the blocking thread and is released
/// when that thread ends, not when the request gives up on it: a validation that overran its deadline
/// still holds its permit, so overrunning validations can never pile up more than this many threads.
static VALIDATIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(VALIDATIONS_IN_FLIGHT_MAX);

/// What [`check_job_file`] concluded.
enum Checked {
    /// The job validated.
    Valid(Box<ValidatedJob>),
    /// Every problem found, and the reasons of the confinement refusals among them (for the metrics).
    Invalid { problems: Vec<String>, refusals: Vec<RefusalReason> },
}

/// Parses, confines and validates a job file off the async workers (on the blocking pool, whose threads
/// have 2 MiB stacks like the workers; the bounds on expressions keep DataFusion's recursion far from that)
/// and within [`VALIDATION_TIMEOUT`]. What the job reaches outside itself is reported with every validation
/// problem, so one answer lists all there is to fix.
///
/// On timeout the thread is left to finish on its own (a thread cannot be stopped); it holds one of the
/// [`VALIDATIONS_IN_FLIGHT_MAX`] permits until it does, and its result is dropped.
async fn check_job_file(ctx: &Arc<Context>, bytes: Vec<u8>) -> Result<Checked, ApiError> {
    let timed_out = || {
        ApiError::invalid_job(&[format!(
            "the job file took longer than {} s to validate; make it smaller",
            VALIDATION_TIMEOUT.as_secs()
        )])
    };
    let deadline = tokio::time::Instant::now() + VALIDATION_TIMEOUT;
    let permit = tokio::time::timeout_at(deadline, VALIDATIONS.acquire())
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many job files are being validated; retry shortly")
        })?
        .map_err(|e| ApiError::internal(format!("the validation semaphore is closed: {e}")))?;
    let ctx = ctx.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let graph = match parse_job_file(&bytes) {
            Ok(graph) => graph,
            Err(e) => return Checked::Invalid { problems: e.problems().to_vec(), refusals: Vec::new() },
        };
        let confined = ctx.confinement.check_graph(&graph);
        match (validate(graph), confined.is_empty()) {
            (Ok(job), true) => Checked::Valid(Box::new(job)),
            (validated, _) => {
                let refusals = confined.iter().map(|r| r.reason).collect();
                let mut problems: Vec<String> = confined.into_iter().map(|r| r.problem).collect();
                if let Err(e) = validated {
                    problems.extend(e.problems().iter().cloned());
                }
                Checked::Invalid { problems, refusals }
            }
        }
    });
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(checked)) => Ok(checked),
        Ok(Err(e)) => Err(ApiError::internal(format!("validating the job file failed: {e}"))),
        Err(_) => Err(timed_out()),
    }
}

async fn job_file_from_multipart(request: Request) -> Result<Vec<u8>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let mut multipart =
        Multipart::from_request(request, &()).await.map_err(|e| bad(format!("bad multipart body: {e}")))?;
    while let Some(field) = multipart.next_field().await.map_err(|e| bad(format!("bad multipart body: {e}")))? {
        if field.name() == Some(JOB_FILE_FIELD) {
            let bytes = field.bytes().await.map_err(|e| bad(format!("cannot read the field {JOB_FILE_FIELD}: {e}")))?;
            return Ok(bytes.to_vec());
        }
    }
    Err(bad(format!("the multipart body has no field named {JOB_FILE_FIELD:?}")))
}

pub(super) async fn list_jobs(State(ctx): Ctx) -> Result<Json<Value>, ApiError> {
    let jobs: Vec<JobSummary> = ctx
        .store
        .jobs()
        .await?
        .into_iter()
        .map(|record| {
            let facts = JobFacts::from_record(&ctx, record);
            // A graph that does not parse has no sources to count: the rate is unknown, the rest stands.
            let records_per_second = facts.graph().ok().and_then(|graph| facts.records_per_second(&graph));
            let end = facts.end_time.unwrap_or_else(crate::cluster::now_ms);
            JobSummary {
                duration_ms: end.saturating_sub(facts.start_time),
                records_per_second,
                job_id: facts.job_id,
                name: facts.name,
                status: facts.status,
                start_time: facts.start_time,
                end_time: facts.end_time,
            }
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

pub(super) async fn facts(ctx: &Context, job_id: &str) -> Result<JobFacts, ApiError> {
    JobFacts::load(ctx, &JobId(job_id.to_string())).await?.ok_or_else(|| ApiError::job_not_found(job_id))
}

pub(super) async fn job_details(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<JobDetails>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let graph = facts.graph()?;
    let chains = facts.chains()?;
    let (remote_bytes_out, remote_bytes_in) = facts.remote_bytes();
    // The graph as submitted, but never the secrets in it (Kafka passwords): those are for TaskManagers only.
    let shown = redact_graph(graph.clone());
    let graph_value = serde_json::to_value(&shown).map_err(|e| ApiError::internal(format!("job {job_id}: {e}")))?;
    let bottleneck = super::bottleneck::bottleneck(&facts.chain_loads(&graph, &chains));
    Ok(Json(JobDetails {
        vertices: facts.vertex_views(&graph, &chains),
        bottleneck,
        chains: chains.iter().map(Into::into).collect(),
        status_reason: facts.status_reason(),
        job_id: facts.job_id,
        name: facts.name,
        status: facts.status,
        attempt: facts.attempt,
        start_time: facts.start_time,
        end_time: facts.end_time,
        failure_cause: facts.failure_cause,
        restarts: facts.restarts,
        last_recovery_ms: facts.last_recovery_ms,
        relocations: facts.relocations,
        last_relocation_ms: facts.last_relocation_ms,
        restored_checkpoint: facts.restored_from.as_ref().map(|(id, _)| *id),
        restored_from: facts.restored_from.map(|(_, location)| location),
        remote_bytes_out,
        remote_bytes_in,
        graph: graph_value,
    }))
}

pub(super) async fn job_status(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    Ok(Json(json!({ "job_id": facts.job_id, "status": facts.status, "reason": facts.status_reason() })))
}

/// `POST /jobs/{id}/cancel`: records the wish and wakes the actor; 202, the cancel completes asynchronously.
pub(super) async fn cancel_job(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let before = facts(&ctx, &job_id).await?;
    if before.status.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {job_id} has already ended ({}); there is nothing to cancel", before.status),
        ));
    }
    let id = JobId(job_id.clone());
    if !ctx.store.request_cancel(&id).await? {
        return Err(ApiError::job_not_found(&job_id));
    }
    if let Some(shared) = ctx.jobs.get(&id) {
        shared.desired_changed.notify_one();
    }
    let after = facts(&ctx, &job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id, "status": after.status }))).into_response())
}

pub(super) async fn job_metrics(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<JobMetricsView>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let graph = facts.graph()?;
    let chains = facts.chains()?;
    let (remote_bytes_out, remote_bytes_in) = facts.remote_bytes();
    Ok(Json(JobMetricsView {
        vertices: facts.vertex_views(&graph, &chains),
        tasks: facts.task_views(&chains),
        job_id: facts.job_id,
        status: facts.status,
        attempt: facts.attempt,
        remote_bytes_out,
        remote_bytes_in,
    }))
}

pub(super) async fn task_managers(State(ctx): Ctx) -> Json<Value> {
    let now = crate::cluster::now_ms();
    let mut tasks_on: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for shared in ctx.jobs.all() {
        for entry in shared.snapshot().tasks.values() {
            *tasks_on.entry(entry.task_manager.0.clone()).or_default() += 1;
        }
    }
    let task_managers: Vec<TaskManagerJson> = ctx
        .cluster
        .snapshot()
        .into_iter()
        .map(|tm| TaskManagerJson {
            heartbeat_age_ms: now.saturating_sub(tm.last_heartbeat_ms),
            tasks: tasks_on.get(&tm.id.0).copied().unwrap_or(0),
            memory_rss_bytes: tm.memory_rss_bytes,
            id: tm.id.0,
            rpc_address: tm.rpc_address,
            data_address: tm.data_address,
            metrics_address: tm.metrics_address,
            slots_total: tm.slots_total,
            slots_free: tm.slots_free,
            last_heartbeat: tm.last_heartbeat_ms,
            state: match tm.state {
                TaskManagerState::Active if tm.leaving => "LEAVING",
                TaskManagerState::Active => "ACTIVE",
                TaskManagerState::Lost(_) => "LOST",
            },
        })
        .collect();
    Json(json!({ "taskmanagers": task_managers }))
}

pub(super) async fn cluster_metrics(State(ctx): Ctx) -> Json<ClusterMetrics> {
    let snapshot = ctx.cluster.snapshot();
    let active: Vec<_> = snapshot.iter().filter(|tm| tm.state == TaskManagerState::Active).collect();
    // A leaving TaskManager offers no slot: neither its slots nor its free ones count.
    let offering = || active.iter().filter(|tm| !tm.leaving);
    let total_slots: u32 = offering().map(|tm| tm.slots_total).sum();
    let available_slots: u32 = offering().map(|tm| tm.slots_free).sum();
    let utilization =
        if total_slots == 0 { 0.0 } else { f64::from(total_slots - available_slots) / f64::from(total_slots) };
    Json(ClusterMetrics {
        total_task_managers: snapshot.len(),
        active_task_managers: active.len(),
        total_slots,
        available_slots,
        utilization,
        leader: leader_json(&ctx),
    })
}

/// `GET /jobs/{id}/checkpoints`: counts, the latest completed and failed checkpoints, summaries of the
/// completed ones listed, and the history (newest first, at most [`CHECKPOINTS_LISTED_MAX`]).
pub(super) async fn job_checkpoints(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let id = JobId(facts.job_id.clone());
    let counts = ctx.store.checkpoint_counts(&id).await?;
    let history = ctx.store.checkpoints(&id, CHECKPOINTS_LISTED_MAX).await?;
    let count = |status| counts.iter().filter(|(s, _)| *s == status).map(|(_, n)| *n).sum::<u64>();
    let completed: Vec<&CheckpointRecord> =
        history.iter().filter(|c| c.status == CheckpointStatus::Completed).collect();
    let summary = |f: fn(&CheckpointRecord) -> u64| {
        let values: Vec<u64> = completed.iter().map(|c| f(c)).collect();
        super::views::Summary::of(values)
    };
    let latest = |status| history.iter().find(|c| c.status == status).map(checkpoint_json);
    Ok(Json(json!({
        "job_id": facts.job_id,
        "counts": {
            "completed": count(CheckpointStatus::Completed),
            "failed": count(CheckpointStatus::Failed),
            "in_progress": count(CheckpointStatus::InProgress),
            "total": counts.iter().map(|(_, n)| n).sum::<u64>(),
        },
        "latest": {
            "completed": latest(CheckpointStatus::Completed),
            "failed": latest(CheckpointStatus::Failed),
        },
        "summary": {
            "end_to_end_duration_ms": summary(|c| c.duration_ms().unwrap_or(0)),
            "alignment_ms": summary(|c| c.alignment_ms),
            "sync_ms": summary(|c| c.sync_ms),
            "async_ms": summary(|c| c.async_ms),
            "state_size_bytes": summary(|c| c.state_size_bytes),
        },
        "history": history.iter().map(checkpoint_json).collect::<Vec<_>>(),
    })))
}

pub(super) fn checkpoint_json(c: &CheckpointRecord) -> Value {
    json!({
        "id": c.id,
        "attempt": c.attempt,
        "kind": c.kind,
        "status": c.status,
        "trigger_time": c.trigger_ms,
        "end_time": c.end_ms,
        "duration_ms": c.duration_ms(),
        "alignment_ms": c.alignment_ms,
        "sync_ms": c.sync_ms,
        "async_ms": c.async_ms,
        "state_size_bytes": c.state_size_bytes,
        "location": c.location,
        "failure": c.failure,
        "discarded": c.discarded,
    })
}

/// `POST /jobs/{id}/checkpoints`: starts a checkpoint (after the one in flight, if any); 202 with its id
/// once it started (follow it in the history), 409 when the job is not running.
pub(super) async fn trigger_checkpoint(State(ctx): Ctx, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let id = request_checkpoint(&ctx, &job_id, Kind::Checkpoint).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "checkpoint_id": id, "status": CheckpointStatus::InProgress })),
    )
        .into_response())
}

/// The optional body of `POST /jobs/{id}/savepoint` and `POST /jobs/{id}/stop`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavepointRequest {
    /// Where the savepoint goes; default `<SAVEPOINT_DIR>/savepoint-<job>-<random>`.
    target_directory: Option<String>,
}

/// `POST /jobs/{id}/savepoint`: 202 with the trigger id; `GET /jobs/{id}/savepoints/{trigger}` follows it.
pub(super) async fn trigger_savepoint(
    State(ctx): Ctx,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    savepoint(&ctx, &job_id, &body, false).await
}

/// `POST /jobs/{id}/stop`: a savepoint, after which the job stops (FINISHED). 202 with the trigger id.
pub(super) async fn stop_job(State(ctx): Ctx, Path(job_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    savepoint(&ctx, &job_id, &body, true).await
}

async fn savepoint(ctx: &Context, job_id: &str, body: &[u8], stop: bool) -> Result<Response, ApiError> {
    let request: SavepointRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SavepointRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad savepoint request: {e}")))?
    };
    let dir = match request.target_directory {
        Some(dir) if dir.trim().is_empty() => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "target_directory is empty"));
        }
        Some(dir) => {
            if let Err(refusal) = ctx.confinement.check_savepoint_target(&dir) {
                ctx.metrics.refused([refusal.reason]);
                let message = format!("target_directory {}", refusal.problem);
                return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
            }
            Storage::open(&dir)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("target_directory: {e}")))?
                .child(&savepoint_name(job_id))
        }
        None => ctx.savepoint_storage.child(&savepoint_name(job_id)),
    };
    let id = request_checkpoint(ctx, job_id, Kind::Savepoint { dir, stop }).await?;
    let body = json!({ "job_id": job_id, "trigger_id": id.to_string(), "status": CheckpointStatus::InProgress });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `savepoint-<first 6 characters of the job id>-<12 random hex digits>`, as Flink names them.
fn savepoint_name(job_id: &str) -> String {
    let short: String = job_id.chars().take(6).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("savepoint-{short}-{}", &random[..12])
}

/// `GET /jobs/{id}/savepoints/{trigger}`: the savepoint's status, location (once COMPLETED) or failure.
pub(super) async fn savepoint_status(
    State(ctx): Ctx,
    Path((job_id, trigger)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let facts = facts(&ctx, &job_id).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("job {job_id} has no savepoint {trigger}"));
    let id: u64 = trigger.parse().map_err(|_| not_found())?;
    let record = ctx.store.checkpoint(&JobId(facts.job_id.clone()), id).await?.ok_or_else(not_found)?;
    if record.kind != CheckpointKind::Savepoint {
        return Err(not_found());
    }
    Ok(Json(json!({
        "job_id": facts.job_id,
        "trigger_id": trigger,
        "status": record.status,
        "location": (record.status == CheckpointStatus::Completed).then_some(record.location.as_str()),
        "failure": record.failure,
        "trigger_time": record.trigger_ms,
        "end_time": record.end_ms,
        "state_size_bytes": record.state_size_bytes,
    })))
}

/// Hands a checkpoint or savepoint request to the job's actor and waits until it started.
async fn request_checkpoint(ctx: &Context, job_id: &str, kind: Kind) -> Result<u64, ApiError> {
    let facts = facts(ctx, job_id).await?;
    let conflict = |why: String| ApiError::new(StatusCode::CONFLICT, format!("job {job_id}: {why}"));
    let Some(shared) = ctx.jobs.get(&JobId(facts.job_id.clone())) else {
        return Err(conflict(format!("the job has ended ({})", facts.status)));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    shared
        .inbox
        .send_timeout(JobEvent::CheckpointRequest(kind, reply), REPORT_FORWARD_TIMEOUT)
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("job {job_id} is busy; retry")))?;
    match tokio::time::timeout(CHECKPOINT_TRIGGER_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(id))) => Ok(id),
        Ok(Ok(Err(why))) => Err(conflict(why)),
        Ok(Err(_)) => Err(conflict("the job ended before the checkpoint started".into())),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "job {job_id} did not start the checkpoint within {} s",
                CHECKPOINT_TRIGGER_ANSWER_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// How long a checkpoint or savepoint request waits for the job to start it (not to complete it): the one
/// in flight may have to end first.
pub(super) const CHECKPOINT_TRIGGER_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

//! The JSON shapes of the REST API, and how a job's view is assembled from the store and the live state.
//!
//! The store has the record of every job; a job whose actor runs also has a live view (status, reason,
//! tasks, latest metrics), which is newer and wins. Numbers are JSON numbers here (unlike the proto3 JSON
//! mapping, which writes 64-bit integers as strings), because these shapes are for people and dashboards.
use std::collections::BTreeMap;

use serde::Serialize;
use sluice_common::ids::{ChainIndex, JobId, SubtaskIndex};
use sluice_common::job::operator_kind;
use sluice_common::proto::{Chain, JobGraph, TaskMetrics};

use super::bottleneck::{level, Bottleneck, ChainLoad};
use super::ApiError;
use sluice_common::lifecycle::JobStatus;

use crate::job::{TaskEntry, TaskKey};
use crate::store::JobRecord;
use crate::Context;

/// Everything known about one job, merged from the store and the live view.
pub(super) struct JobFacts {
    pub job_id: String,
    pub name: String,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub attempt: u32,
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub failure_cause: Option<String>,
    pub restarts: u32,
    pub last_recovery_ms: Option<u64>,
    pub relocations: u32,
    pub last_relocation_ms: Option<u64>,
    pub restored_from: Option<(u64, String)>,
    pub graph_json: String,
    pub chains_json: String,
    pub tasks: BTreeMap<TaskKey, TaskEntry>,
    pub metrics: Vec<TaskMetrics>,
}

impl JobFacts {
    /// The facts of a job, or None if no such job exists.
    pub async fn load(ctx: &Context, job_id: &JobId) -> Result<Option<JobFacts>, ApiError> {
        let Some(record) = ctx.store.job(job_id).await? else { return Ok(None) };
        Ok(Some(JobFacts::from_record(ctx, record)))
    }

    /// Merges a stored record with the live view, if the job's actor runs.
    pub fn from_record(ctx: &Context, record: JobRecord) -> JobFacts {
        let (status, reason) = match &record.status {
            Ok(status) => (*status, None),
            Err(unknown) => (JobStatus::Failed, Some(unknown.to_string())),
        };
        let final_metrics: Vec<TaskMetrics> =
            record.final_metrics_json.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default();
        let mut facts = JobFacts {
            job_id: record.job_id.0,
            name: record.name,
            status,
            reason,
            attempt: record.attempt.0,
            start_time: record.start_time_ms,
            end_time: record.end_time_ms,
            failure_cause: record.failure_cause,
            // Every attempt after the first is a restart or a move.
            restarts: record.attempt.0.saturating_sub(1).saturating_sub(record.relocations),
            last_recovery_ms: None,
            relocations: record.relocations,
            last_relocation_ms: None,
            restored_from: None,
            graph_json: record.graph_json,
            chains_json: record.chains_json,
            tasks: BTreeMap::new(),
            metrics: final_metrics,
        };
        if let Some(shared) = ctx.jobs.get(&JobId(facts.job_id.clone())) {
            let live = shared.snapshot();
            facts.status = live.status;
            facts.end_time = facts.end_time.or(live.end_time_ms);
            facts.reason = live.reason;
            facts.attempt = live.attempt.0;
            facts.failure_cause = live.failure_cause.or(facts.failure_cause);
            facts.restarts = live.restarts;
            facts.last_recovery_ms = live.last_recovery_ms;
            facts.relocations = live.relocations;
            facts.last_relocation_ms = live.last_relocation_ms;
            facts.restored_from = live.restored_from;
            facts.tasks = live.tasks;
            facts.metrics = live.metrics.into_values().collect();
        }
        facts
    }

    /// The reason shown next to the status: why it waits, or why it failed (not the cause of an earlier
    /// failure the job recovered from).
    pub fn status_reason(&self) -> Option<String> {
        let failed = matches!(self.status, JobStatus::Failed | JobStatus::Failing | JobStatus::Restarting);
        self.reason.clone().or_else(|| if failed { self.failure_cause.clone() } else { None })
    }

    pub fn graph(&self) -> Result<JobGraph, ApiError> {
        serde_json::from_str(&self.graph_json)
            .map_err(|e| ApiError::internal(format!("job {}: the stored job graph is corrupt: {e}", self.job_id)))
    }

    pub fn chains(&self) -> Result<Vec<Chain>, ApiError> {
        serde_json::from_str(&self.chains_json)
            .map_err(|e| ApiError::internal(format!("job {}: the stored chains are corrupt: {e}", self.job_id)))
    }

    /// Whether rates, shares and watermarks describe now: only while the job runs (a job that ended keeps
    /// its totals, but its last rates are history).
    fn is_live(&self) -> bool {
        self.status == JobStatus::Running
    }

    /// Per-vertex totals over every task's metrics, with rates, shares and watermarks while the job runs, in
    /// the graph's vertex order.
    pub fn vertex_views(&self, graph: &JobGraph, chains: &[Chain]) -> Vec<VertexView> {
        let live = self.is_live();
        let now = crate::cluster::now_ms() as i64;
        graph
            .vertices
            .iter()
            .map(|vertex| {
                let chain = chain_of(chains, &vertex.id);
                let mut view = VertexView {
                    id: vertex.id.clone(),
                    operator: vertex.operator.as_ref().map(operator_kind).unwrap_or("unknown"),
                    parallelism: vertex.parallelism,
                    chain,
                    records_in: 0,
                    records_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    late_records: 0,
                    records_in_per_second: 0.0,
                    records_out_per_second: 0.0,
                    bytes_in_per_second: 0.0,
                    bytes_out_per_second: 0.0,
                    busy_ratio: 0.0,
                    backpressured_ratio: 0.0,
                    busy_level: "OK",
                    backpressure_level: "OK",
                    watermark_ms: None,
                    watermark_lag_ms: None,
                };
                for task in &self.metrics {
                    let Some(m) = task.vertices.iter().find(|m| m.vertex_id == vertex.id) else { continue };
                    view.records_in += m.records_in;
                    view.records_out += m.records_out;
                    view.bytes_in += m.bytes_in;
                    view.bytes_out += m.bytes_out;
                    view.late_records += m.late_records;
                    if live {
                        view.records_in_per_second += m.records_in_per_second;
                        view.records_out_per_second += m.records_out_per_second;
                        view.bytes_in_per_second += m.bytes_in_per_second;
                        view.bytes_out_per_second += m.bytes_out_per_second;
                        view.busy_ratio = view.busy_ratio.max(task.busy_ratio);
                        view.backpressured_ratio = view.backpressured_ratio.max(task.backpressured_ratio);
                        if let Some(watermark) = task.watermark_ms {
                            view.watermark_ms = Some(view.watermark_ms.map_or(watermark, |w: i64| w.min(watermark)));
                        }
                    }
                }
                view.busy_level = level(view.busy_ratio);
                view.backpressure_level = level(view.backpressured_ratio);
                view.watermark_lag_ms = view.watermark_ms.map(|w| now.saturating_sub(w).max(0));
                view
            })
            .collect()
    }

    /// Each chain's load, for the bottleneck verdict (empty unless the job runs).
    pub fn chain_loads(&self, graph: &JobGraph, chains: &[Chain]) -> Vec<ChainLoad> {
        if !self.is_live() {
            return Vec::new();
        }
        chains
            .iter()
            .map(|chain| {
                let mut load = ChainLoad {
                    index: chain.index,
                    vertex_ids: chain.vertex_ids.clone(),
                    subtask_rates: vec![0.0; chain.parallelism as usize],
                    ..ChainLoad::default()
                };
                let head = chain.vertex_ids.first();
                for task in self.metrics.iter().filter(|t| t.task.as_ref().is_some_and(|t| t.chain == chain.index)) {
                    load.busy = load.busy.max(task.busy_ratio);
                    load.backpressured = load.backpressured.max(task.backpressured_ratio);
                    let subtask = task.task.as_ref().map_or(0, |t| t.subtask) as usize;
                    let rate =
                        task.vertices.iter().find(|v| Some(&v.vertex_id) == head).map(|v| v.records_in_per_second);
                    if let (Some(slot), Some(rate)) = (load.subtask_rates.get_mut(subtask), rate) {
                        *slot = rate;
                    }
                }
                for edge in &graph.edges {
                    let (Some(from), Some(to)) = (chain_of(chains, &edge.from), chain_of(chains, &edge.to)) else {
                        continue;
                    };
                    if to == chain.index && from != chain.index && !load.upstream.contains(&from) {
                        load.upstream.push(from);
                    }
                }
                load
            })
            .collect()
    }

    /// Records a second the job's sources read (their output), while it runs.
    pub fn records_per_second(&self, graph: &JobGraph) -> Option<f64> {
        if !self.is_live() {
            return None;
        }
        let sources: Vec<&str> = graph
            .vertices
            .iter()
            .map(|v| v.id.as_str())
            .filter(|id| !graph.edges.iter().any(|e| e.to == *id))
            .collect();
        Some(
            self.metrics
                .iter()
                .flat_map(|t| t.vertices.iter())
                .filter(|v| sources.contains(&v.vertex_id.as_str()))
                .map(|v| v.records_out_per_second)
                .sum(),
        )
    }

    /// Every subtask of `vertex_id` (of chain `chain` with `parallelism` subtasks): placement, state, counters,
    /// rates and shares.
    pub fn subtask_views(&self, vertex_id: &str, chain: u32, parallelism: u32) -> Vec<SubtaskView> {
        let live = self.is_live();
        (0..parallelism)
            .map(|subtask| {
                let key = TaskKey { chain: ChainIndex(chain), subtask: SubtaskIndex(subtask) };
                let entry = self.tasks.get(&key);
                let task = self
                    .metrics
                    .iter()
                    .find(|m| m.task.as_ref().is_some_and(|t| t.chain == chain && t.subtask == subtask));
                let vertex = task.and_then(|t| t.vertices.iter().find(|v| v.vertex_id == vertex_id));
                let live_value = |v: f64| if live { v } else { 0.0 };
                SubtaskView {
                    subtask,
                    task_manager_id: entry.map(|e| e.task_manager.0.clone()),
                    state: entry.map(|e| e.state.as_str_name()),
                    records_in: vertex.map_or(0, |v| v.records_in),
                    records_out: vertex.map_or(0, |v| v.records_out),
                    bytes_in: vertex.map_or(0, |v| v.bytes_in),
                    bytes_out: vertex.map_or(0, |v| v.bytes_out),
                    records_in_per_second: live_value(vertex.map_or(0.0, |v| v.records_in_per_second)),
                    records_out_per_second: live_value(vertex.map_or(0.0, |v| v.records_out_per_second)),
                    busy_ratio: live_value(task.map_or(0.0, |t| t.busy_ratio)),
                    backpressured_ratio: live_value(task.map_or(0.0, |t| t.backpressured_ratio)),
                    idle_ratio: live_value(task.map_or(0.0, |t| t.idle_ratio)),
                    watermark_ms: task.and_then(|t| t.watermark_ms).filter(|_| live),
                }
            })
            .collect()
    }

    pub fn remote_bytes(&self) -> (u64, u64) {
        self.metrics.iter().fold((0, 0), |(out, inn), m| (out + m.remote_bytes_out, inn + m.remote_bytes_in))
    }

    /// Every task with its placement, last state and latest metrics.
    pub fn task_views(&self, chains: &[Chain]) -> Vec<TaskView> {
        let mut views: BTreeMap<(u32, u32), TaskView> = BTreeMap::new();
        for (key, entry) in &self.tasks {
            let view = TaskView::new(key.chain.0, key.subtask.0, chains);
            let view = views.entry((key.chain.0, key.subtask.0)).or_insert(view);
            view.task_manager_id = Some(entry.task_manager.0.clone());
            view.state = Some(entry.state.as_str_name());
        }
        for metrics in &self.metrics {
            let Some(task) = metrics.task.as_ref() else { continue };
            let view = views
                .entry((task.chain, task.subtask))
                .or_insert_with(|| TaskView::new(task.chain, task.subtask, chains));
            view.vertices = metrics
                .vertices
                .iter()
                .map(|m| TaskVertexView {
                    vertex_id: m.vertex_id.clone(),
                    records_in: m.records_in,
                    records_out: m.records_out,
                    bytes_in: m.bytes_in,
                    bytes_out: m.bytes_out,
                    late_records: m.late_records,
                })
                .collect();
            view.remote_bytes_out = metrics.remote_bytes_out;
            view.remote_bytes_in = metrics.remote_bytes_in;
            view.busy_ms = metrics.busy_ms;
            view.backpressured_ms = metrics.backpressured_ms;
            view.idle_ms = metrics.idle_ms;
        }
        views.into_values().collect()
    }
}

/// The chain a vertex runs in.
pub(super) fn chain_of(chains: &[Chain], vertex_id: &str) -> Option<u32> {
    chains.iter().find(|c| c.vertex_ids.iter().any(|v| v == vertex_id)).map(|c| c.index)
}

/// A job in `GET /jobs`.
#[derive(Serialize)]
pub(super) struct JobSummary {
    pub job_id: String,
    pub name: String,
    pub status: JobStatus,
    pub start_time: u64,
    pub end_time: Option<u64>,
    /// Start to end, or to now.
    pub duration_ms: u64,
    /// Records a second its sources read, while it runs.
    pub records_per_second: Option<f64>,
}

/// One subtask of a vertex, in `GET /jobs/{id}/vertices/{vertex}`.
#[derive(Serialize)]
pub(super) struct SubtaskView {
    pub subtask: u32,
    pub task_manager_id: Option<String>,
    pub state: Option<&'static str>,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    pub busy_ratio: f64,
    pub backpressured_ratio: f64,
    pub idle_ratio: f64,
    pub watermark_ms: Option<i64>,
}

/// `GET /jobs/{id}`.
#[derive(Serialize)]
pub(super) struct JobDetails {
    pub job_id: String,
    pub name: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub start_time: u64,
    pub end_time: Option<u64>,
    /// For a job that restarted, the cause of its last failure.
    pub failure_cause: Option<String>,
    pub status_reason: Option<String>,
    /// Restarts after failures so far.
    pub restarts: u32,
    /// Failure detected → every task of the next attempt RUNNING, for the last recovery (while the job runs).
    pub last_recovery_ms: Option<u64>,
    /// Moves off TaskManagers that were leaving (drained), which are not failures and not in `restarts`
    /// (while the job runs).
    pub relocations: u32,
    /// The stall of the last move: the TaskManager's notice → every task running elsewhere (while the job runs).
    pub last_relocation_ms: Option<u64>,
    /// The checkpoint or savepoint the running attempt's state started from (while the job runs).
    pub restored_checkpoint: Option<u64>,
    pub restored_from: Option<String>,
    pub vertices: Vec<VertexView>,
    pub remote_bytes_out: u64,
    pub remote_bytes_in: u64,
    pub chains: Vec<ChainView>,
    /// Which chain limits the job, while it runs and one is clear (`super::bottleneck`).
    pub bottleneck: Option<Bottleneck>,
    /// The validated job graph in its job-file (proto3 JSON) form.
    pub graph: serde_json::Value,
}

/// One vertex with totals over its subtasks, and (while the job runs) rates, shares and its watermark.
#[derive(Serialize)]
pub(super) struct VertexView {
    pub id: String,
    pub operator: &'static str,
    pub parallelism: u32,
    /// The chain (task) it runs in.
    pub chain: Option<u32>,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Records that came later than a window's allowed lateness (see the "late" side output).
    pub late_records: u64,
    /// Sums over its subtasks, over their last reporting interval.
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    pub bytes_in_per_second: f64,
    pub bytes_out_per_second: f64,
    /// The highest share over its subtasks (a chain's vertices share their task's).
    pub busy_ratio: f64,
    pub backpressured_ratio: f64,
    /// OK, LOW or HIGH (`super::bottleneck::level`).
    pub busy_level: &'static str,
    pub backpressure_level: &'static str,
    /// The lowest event-time watermark over its subtasks, and how far it is behind the wall clock.
    pub watermark_ms: Option<i64>,
    pub watermark_lag_ms: Option<i64>,
}

/// One chain (a task's operators).
#[derive(Serialize)]
pub(super) struct ChainView {
    pub index: u32,
    pub vertex_ids: Vec<String>,
    pub parallelism: u32,
}

impl From<&Chain> for ChainView {
    fn from(chain: &Chain) -> Self {
        ChainView { index: chain.index, vertex_ids: chain.vertex_ids.clone(), parallelism: chain.parallelism }
    }
}

/// One subtask in `GET /jobs/{id}/metrics`.
#[derive(Serialize)]
pub(super) struct TaskView {
    pub chain: u32,
    pub subtask: u32,
    pub vertex_ids: Vec<String>,
    pub task_manager_id: Option<String>,
    pub state: Option<&'static str>,
    pub vertices: Vec<TaskVertexView>,
    pub remote_bytes_out: u64,
    pub remote_bytes_in: u64,
    pub busy_ms: u64,
    pub backpressured_ms: u64,
    pub idle_ms: u64,
}

impl TaskView {
    fn new(chain: u32, subtask: u32, chains: &[Chain]) -> Self {
        let vertex_ids = chains.iter().find(|c| c.index == chain).map(|c| c.vertex_ids.clone()).unwrap_or_default();
        TaskView {
            chain,
            subtask,
            vertex_ids,
            task_manager_id: None,
            state: None,
            vertices: Vec::new(),
            remote_bytes_out: 0,
            remote_bytes_in: 0,
            busy_ms: 0,
            backpressured_ms: 0,
            idle_ms: 0,
        }
    }
}

/// One vertex's counters within one subtask.
#[derive(Serialize)]
pub(super) struct TaskVertexView {
    pub vertex_id: String,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub late_records: u64,
}

/// `GET /jobs/{id}/metrics`.
#[derive(Serialize)]
pub(super) struct JobMetricsView {
    pub job_id: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub vertices: Vec<VertexView>,
    pub remote_bytes_out: u64,
    pub remote_bytes_in: u64,
    pub tasks: Vec<TaskView>,
}

/// One TaskManager in `GET /taskmanagers`.
#[derive(Serialize)]
pub(super) struct TaskManagerJson {
    pub id: String,
    pub rpc_address: String,
    pub data_address: String,
    pub metrics_address: String,
    pub slots_total: u32,
    pub slots_free: u32,
    pub last_heartbeat: u64,
    pub heartbeat_age_ms: u64,
    /// Tasks of running jobs placed on it.
    pub tasks: usize,
    /// Its resident memory, as its last heartbeat said.
    pub memory_rss_bytes: Option<u64>,
    pub state: &'static str,
}

/// `GET /cluster/metrics`: exactly these six keys.
#[derive(Serialize)]
pub(super) struct ClusterMetrics {
    pub total_task_managers: usize,
    pub active_task_managers: usize,
    pub total_slots: u32,
    pub available_slots: u32,
    pub utilization: f64,
    /// Who leads: epoch, since_ms, rest_address, rpc_address, this_jobmanager; null while nobody is known to.
    pub leader: serde_json::Value,
}

/// min, p50, p99 and max of some values (nearest rank), all 0 when there are none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(mut values: Vec<u64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Self { min: values[0], p50: rank(0.5), p99: rank(0.99), max: values[values.len() - 1] }
    }
}

#[cfg(test)]
mod summary_tests {
    use super::Summary;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![7]), Summary { min: 7, p50: 7, p99: 7, max: 7 });
        let values: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(Summary::of(values), Summary { min: 1, p50: 50, p99: 99, max: 100 });
    }
}

//! The JSON answers of the JobManager's REST API that the CLI reads, as typed views.
//!
//! They mirror `jobmanager/src/rest/views.rs` but are lenient on purpose: unknown fields are ignored and
//! missing ones take defaults, so a CLI of one version keeps working against a JobManager that added
//! fields. Times are milliseconds since the Unix epoch.
//!
//! Statuses stay text here (a newer JobManager may name one this CLI does not know) and are interpreted
//! only through `sluice_common::lifecycle`: an unknown status is shown as is and counts as not ended.
use serde::Deserialize;
use sluice_common::lifecycle;

/// `POST /jobs/submit`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Submitted {
    pub job_id: String,
    pub status: String,
}

/// `GET /jobs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
}

/// One job in `GET /jobs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobSummary {
    pub job_id: String,
    pub name: String,
    pub status: String,
    pub start_time: u64,
    pub end_time: Option<u64>,
}

/// `GET /jobs/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobDetails {
    pub job_id: String,
    pub name: String,
    pub status: String,
    pub attempt: u32,
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub failure_cause: Option<String>,
    pub status_reason: Option<String>,
    pub restarts: u32,
    pub last_recovery_ms: Option<u64>,
    pub vertices: Vec<VertexView>,
    pub remote_bytes_out: u64,
    pub remote_bytes_in: u64,
}

/// One vertex of `GET /jobs/{id}`, totalled over its subtasks.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VertexView {
    pub id: String,
    pub operator: String,
    pub parallelism: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(default)]
    pub late_records: u64,
}

/// `GET /jobs/{id}/status` and `POST /jobs/{id}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobStatus {
    pub job_id: String,
    pub status: String,
    /// Why it waits, or why it failed.
    pub reason: Option<String>,
}

impl JobStatus {
    /// The status, if this CLI knows its name.
    pub fn known(&self) -> Option<lifecycle::JobStatus> {
        self.status.parse().ok()
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(&self) -> bool {
        self.known().is_some_and(lifecycle::JobStatus::is_terminal)
    }

    /// Whether the job completed successfully.
    pub fn is_finished(&self) -> bool {
        self.known() == Some(lifecycle::JobStatus::Finished)
    }
}

/// `GET /taskmanagers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskManagerList {
    pub taskmanagers: Vec<TaskManager>,
}

/// One TaskManager in `GET /taskmanagers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskManager {
    pub id: String,
    pub rpc_address: String,
    pub data_address: String,
    pub metrics_address: String,
    pub slots_total: u32,
    pub slots_free: u32,
    pub last_heartbeat: u64,
    pub state: String,
}

/// `GET /cluster/metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClusterMetrics {
    pub total_task_managers: u64,
    pub active_task_managers: u64,
    pub total_slots: u64,
    pub available_slots: u64,
    pub utilization: f64,
}

//! The JobManager's Prometheus metrics, in a registry of its own (not the process-global default, so tests
//! that start several JobManagers in one process do not collide).
//!
//! Gauges that mirror state (jobs by status, TaskManagers, slots) are refreshed from the store and the
//! cluster registry when `/metrics` is scraped, so they can never drift from what the REST API shows.
//! Counters count events where they happen.
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::cluster::{TaskManagerState, TaskManagerView};
use sluice_common::confine::RefusalReason;
use sluice_common::lifecycle::JobStatus;

/// The JobManager's metrics.
pub struct Metrics {
    registry: Registry,
    jobs: IntGaugeVec,
    task_managers: IntGaugeVec,
    slots_total: IntGauge,
    slots_available: IntGauge,
    /// Job submissions by result (`accepted`, `rejected`).
    pub submissions: IntCounterVec,
    /// Submissions and savepoint requests refused by confinement, by reason (`sluice_common::confine`).
    jobs_refused: IntCounterVec,
    /// Job transitions by target status.
    pub transitions: IntCounterVec,
    /// Task reports refused (stale attempt or unknown job).
    pub task_reports_refused: IntCounter,
    /// TaskManagers marked LOST.
    pub task_managers_lost: IntCounter,
    /// Requests refused before any handler saw them, by transport (`rest`, `rpc`) and reason.
    pub requests_refused: IntCounterVec,
    /// Trigger to completion of each completed checkpoint, by job.
    pub checkpoint_duration: HistogramVec,
    /// Bytes of the job's last completed checkpoint.
    pub checkpoint_size: IntGaugeVec,
    /// Checkpoints by job and result (`completed`, `failed`).
    pub checkpoints: IntCounterVec,
    /// Restarts by job.
    pub restarts: IntCounterVec,
    /// Failure detected → every task of the next attempt RUNNING, by job.
    pub recovery_duration: HistogramVec,
    /// Each phase of a recovery, by job and phase (`RecoveryPhase`).
    pub recovery_phase: HistogramVec,
    /// Moves of a job off a TaskManager that is leaving (redeployments that are no failure), by job.
    pub relocations: IntCounterVec,
    /// A TaskManager said it is leaving → every task of the job's next attempt RUNNING elsewhere, by job.
    pub relocation_duration: HistogramVec,
    /// 1 while this JobManager leads, 0 while it is a standby.
    pub is_leader: IntGauge,
    /// The epoch this JobManager leads under (0 on a standby).
    pub leader_epoch: IntGauge,
    /// Times this JobManager took the lead.
    pub leader_changes: IntCounter,
    /// From taking the lead to every unfinished job adopted or redeployed.
    pub takeover_duration: prometheus::Histogram,
    /// How long each running job has had every task up since its last (re)start.
    uptime: GaugeVec,
}

/// The checkpoint series, cloned into each job's checkpoint coordinator (a prometheus handle shares its
/// series with every clone, so nothing is registered twice).
#[derive(Clone)]
pub struct CheckpointMetrics {
    duration: HistogramVec,
    size: IntGaugeVec,
    count: IntCounterVec,
}

/// The `result` label of `checkpoints_total`, one per way a checkpoint ends.
const CHECKPOINT_RESULT_COMPLETED: &str = "completed";
const CHECKPOINT_RESULT_FAILED: &str = "failed";

impl CheckpointMetrics {
    /// A checkpoint of `job` completed after `duration_s`, with `size_bytes` of state.
    pub fn completed(&self, job: &str, duration_s: f64, size_bytes: u64) {
        self.duration.with_label_values(&[job]).observe(duration_s);
        self.size.with_label_values(&[job]).set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
        self.count.with_label_values(&[job, CHECKPOINT_RESULT_COMPLETED]).inc();
    }

    /// A checkpoint of `job` failed in a way that counts against its tolerance.
    pub fn failed(&self, job: &str) {
        self.count.with_label_values(&[job, CHECKPOINT_RESULT_FAILED]).inc();
    }
}

/// Buckets of `job_recovery_duration_seconds`: the goal is under 3 s for small state.
const RECOVERY_DURATION_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Buckets of `checkpoint_duration_seconds`: from a few milliseconds (small heap state on local disk) to
/// ten minutes (large state to object storage).
const CHECKPOINT_DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let jobs = IntGaugeVec::new(Opts::new("sluice_jobs", "Jobs by status"), &["status"])?;
        let task_managers =
            IntGaugeVec::new(Opts::new("sluice_task_managers", "Registered TaskManagers by state"), &["state"])?;
        let slots_total = IntGauge::new("sluice_slots", "Slots offered by active TaskManagers")?;
        let slots_available = IntGauge::new("sluice_slots_available", "Slots no job holds")?;
        let submissions =
            IntCounterVec::new(Opts::new("sluice_job_submissions_total", "Job submissions by result"), &["result"])?;
        let jobs_refused = IntCounterVec::new(
            Opts::new(
                "sluice_jobs_refused_total",
                "Job submissions and savepoint requests refused because they reach outside what the operator allows",
            ),
            &["reason"],
        )?;
        for reason in RefusalReason::ALL {
            // Every reason's series exists from the start, at 0, so that a rate over it is defined.
            jobs_refused.with_label_values(&[reason.as_str()]);
        }
        let transitions =
            IntCounterVec::new(Opts::new("sluice_job_transitions_total", "Job transitions by target status"), &["to"])?;
        let task_reports_refused = IntCounter::new(
            "sluice_task_reports_refused_total",
            "Task state reports refused because of a stale attempt or an unknown job",
        )?;
        let task_managers_lost = IntCounter::new("sluice_task_managers_lost_total", "TaskManagers marked LOST")?;
        let requests_refused = IntCounterVec::new(
            Opts::new("sluice_requests_refused_total", "Requests refused by authentication or policy, by reason"),
            &["transport", "reason"],
        )?;
        let checkpoint_duration = HistogramVec::new(
            HistogramOpts::new("checkpoint_duration_seconds", "Time from trigger to completion of a checkpoint")
                .buckets(CHECKPOINT_DURATION_BUCKETS.to_vec()),
            &["job"],
        )?;
        let checkpoint_size = IntGaugeVec::new(
            Opts::new("checkpoint_size_bytes", "Bytes of a job's last completed checkpoint"),
            &["job"],
        )?;
        let checkpoints =
            IntCounterVec::new(Opts::new("checkpoints_total", "Checkpoints by job and result"), &["job", "result"])?;
        let restarts = IntCounterVec::new(Opts::new("job_restarts_total", "Restarts of a job"), &["job"])?;
        let recovery_duration = HistogramVec::new(
            HistogramOpts::new(
                "job_recovery_duration_seconds",
                "Time from a job's failure to every task of its next attempt running",
            )
            .buckets(RECOVERY_DURATION_BUCKETS.to_vec()),
            &["job"],
        )?;
        let recovery_phase = HistogramVec::new(
            HistogramOpts::new(
                "job_recovery_phase_seconds",
                "Each phase of a job's recovery from a failure: detection (last sign of life of what failed to the \
                 failure noticed), cancel, scheduling (the restart delay and the wait for slots), restore \
                 (deployment to every task running) and catch_up (running to the first checkpoint completed)",
            )
            .buckets(RECOVERY_DURATION_BUCKETS.to_vec()),
            &["job", "phase"],
        )?;
        let relocations = IntCounterVec::new(
            Opts::new("job_relocations_total", "Moves of a job off a TaskManager that is leaving (not failures)"),
            &["job"],
        )?;
        let relocation_duration = HistogramVec::new(
            HistogramOpts::new(
                "job_relocation_duration_seconds",
                "Time from a TaskManager's notice that it is leaving to every task of the job running elsewhere \
                 (the job's stall: the drain checkpoint, the cancel, the redeployment and the restore)",
            )
            .buckets(RECOVERY_DURATION_BUCKETS.to_vec()),
            &["job"],
        )?;
        let uptime = GaugeVec::new(
            Opts::new("job_uptime_seconds", "Time since every task of the job's current attempt was running"),
            &["job"],
        )?;
        let is_leader = IntGauge::new("jobmanager_is_leader", "1 while this JobManager leads, 0 on a standby")?;
        let leader_epoch =
            IntGauge::new("jobmanager_leader_epoch", "The lease epoch this JobManager leads under (0 on a standby)")?;
        let leader_changes =
            IntCounter::new("jobmanager_leader_changes_total", "Times this JobManager took the leader lease")?;
        let takeover_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "jobmanager_takeover_duration_seconds",
                "Time from taking the leader lease to every unfinished job adopted (its running tasks kept) or \
                 redeployed",
            )
            .buckets(RECOVERY_DURATION_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(is_leader.clone()))?;
        registry.register(Box::new(leader_epoch.clone()))?;
        registry.register(Box::new(leader_changes.clone()))?;
        registry.register(Box::new(takeover_duration.clone()))?;
        registry.register(Box::new(uptime.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(recovery_duration.clone()))?;
        registry.register(Box::new(recovery_phase.clone()))?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        registry.register(Box::new(relocations.clone()))?;
        registry.register(Box::new(relocation_duration.clone()))?;
        registry.register(Box::new(checkpoint_duration.clone()))?;
        registry.register(Box::new(checkpoint_size.clone()))?;
        registry.register(Box::new(checkpoints.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(task_managers.clone()))?;
        registry.register(Box::new(slots_total.clone()))?;
        registry.register(Box::new(slots_available.clone()))?;
        registry.register(Box::new(submissions.clone()))?;
        registry.register(Box::new(jobs_refused.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(task_reports_refused.clone()))?;
        registry.register(Box::new(task_managers_lost.clone()))?;
        registry.register(Box::new(requests_refused.clone()))?;
        Ok(Metrics {
            registry,
            jobs,
            task_managers,
            slots_total,
            slots_available,
            submissions,
            jobs_refused,
            transitions,
            task_reports_refused,
            task_managers_lost,
            requests_refused,
            checkpoint_duration,
            checkpoint_size,
            checkpoints,
            restarts,
            recovery_duration,
            recovery_phase,
            relocations,
            relocation_duration,
            is_leader,
            leader_epoch,
            leader_changes,
            takeover_duration,
            uptime,
        })
    }

    /// Counts a request refused by confinement, once per reason it was refused for.
    pub fn refused(&self, reasons: impl IntoIterator<Item = RefusalReason>) {
        let reasons: std::collections::BTreeSet<RefusalReason> = reasons.into_iter().collect();
        for reason in reasons {
            self.jobs_refused.with_label_values(&[reason.as_str()]).inc();
        }
    }

    /// The checkpoint series, for a job's coordinator.
    pub fn checkpoint_metrics(&self) -> CheckpointMetrics {
        CheckpointMetrics {
            duration: self.checkpoint_duration.clone(),
            size: self.checkpoint_size.clone(),
            count: self.checkpoints.clone(),
        }
    }

    /// Forgets an ended job's series.
    pub fn remove_job(&self, job_id: &str) {
        // A series never created needs no removal: the errors say only that.
        let _ = self.checkpoint_duration.remove_label_values(&[job_id]);
        let _ = self.checkpoint_size.remove_label_values(&[job_id]);
        let _ = self.restarts.remove_label_values(&[job_id]);
        let _ = self.recovery_duration.remove_label_values(&[job_id]);
        for phase in crate::job::RecoveryPhase::ALL {
            let _ = self.recovery_phase.remove_label_values(&[job_id, phase.as_str()]);
        }
        let _ = self.uptime.remove_label_values(&[job_id]);
        for result in [CHECKPOINT_RESULT_COMPLETED, CHECKPOINT_RESULT_FAILED] {
            let _ = self.checkpoints.remove_label_values(&[job_id, result]);
        }
    }

    /// Refreshes the state gauges and renders every metric in the Prometheus text format.
    pub fn render(
        &self,
        job_counts: &[(String, i64)],
        task_managers: &[TaskManagerView],
        up_since_ms: &[(String, Option<u64>)],
    ) -> Result<String, prometheus::Error> {
        let now = crate::cluster::now_ms();
        for (job, since) in up_since_ms {
            let seconds = since.map_or(0.0, |since| now.saturating_sub(since) as f64 / 1000.0);
            self.uptime.with_label_values(&[job]).set(seconds);
        }
        for status in JobStatus::ALL {
            let count =
                job_counts.iter().filter(|(text, _)| text.parse::<JobStatus>() == Ok(status)).map(|(_, n)| *n).sum();
            self.jobs.with_label_values(&[status.as_str()]).set(count);
        }
        let active: Vec<&TaskManagerView> =
            task_managers.iter().filter(|tm| tm.state == TaskManagerState::Active).collect();
        let leaving = active.iter().filter(|tm| tm.leaving).count();
        self.task_managers.with_label_values(&["ACTIVE"]).set((active.len() - leaving) as i64);
        self.task_managers.with_label_values(&["LEAVING"]).set(leaving as i64);
        self.task_managers.with_label_values(&["LOST"]).set((task_managers.len() - active.len()) as i64);
        let offering = || active.iter().filter(|tm| !tm.leaving);
        self.slots_total.set(offering().map(|tm| i64::from(tm.slots_total)).sum());
        self.slots_available.set(offering().map(|tm| i64::from(tm.slots_free)).sum());
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

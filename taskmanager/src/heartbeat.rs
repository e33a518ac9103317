//! What a heartbeat carries, and what its answer (or its failure) means for the TaskManager's tasks.
//!
//! Two decisions, both pure and unit-tested here; `control` does the I/O:
//! - [`MetricsRotation`]: a heartbeat carries at most [`HEARTBEAT_TASK_METRICS_MAX`] task metrics and
//!   [`HEARTBEAT_METRICS_BYTES_MAX`] bytes of them, whatever the number of tasks, so it can never grow past
//!   what the JobManager decodes. With more tasks than fit, heartbeats take turns over the tasks (in task key
//!   order, each one starting after the last task the previous one carried), so every task's metrics
//!   arrive within a few heartbeats.
//! - [`Liveness`]: only the JobManager saying it does not know this TaskManager (`registered = false`) ends
//!   the registration at once, and with it the tasks. A heartbeat that fails (a transport error, a timeout,
//!   a refusal) keeps the tasks: it is retried with a back-off that grows up to the heartbeat interval, and
//!   the TaskManager registers anew (cancelling its tasks) only once no heartbeat has been answered for the
//!   heartbeat timeout the JobManager gave at registration. By then the JobManager has declared this
//!   TaskManager lost and moved its jobs, so its tasks must stop writing anyway.
use std::time::Duration;

use prost::Message as _;
pub use sluice_common::bounds::{HEARTBEAT_METRICS_BYTES_MAX, HEARTBEAT_TASK_METRICS_MAX};
use sluice_common::proto::TaskMetrics;
use tokio::time::Instant;

/// The first pause before retrying a failed heartbeat; it doubles on each failure up to the heartbeat
/// interval, so a JobManager that refuses or cannot take heartbeats is not hammered, and one that comes back
/// hears from the TaskManager within an interval.
pub const HEARTBEAT_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Picks each heartbeat's share of task metrics, in turns over the tasks.
#[derive(Debug, Default)]
pub struct MetricsRotation {
    /// The key of the last task the previous heartbeat carried; the next one starts after it.
    last: Option<String>,
}

impl MetricsRotation {
    /// The next heartbeat's task metrics, from `tasks` (key and metrics of every running task, in any order).
    /// At most `count_max` of them and (but for one oversized task, see [`HEARTBEAT_METRICS_BYTES_MAX`])
    /// `bytes_max` encoded bytes.
    pub fn next_share(
        &mut self,
        mut tasks: Vec<(String, TaskMetrics)>,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<TaskMetrics> {
        tasks.sort_by(|a, b| a.0.cmp(&b.0));
        // Start after the last task sent, wrapping around.
        let start = match &self.last {
            Some(last) => tasks.partition_point(|(key, _)| key <= last),
            None => 0,
        };
        tasks.rotate_left(start);
        let mut share = Vec::new();
        let mut bytes = 0;
        for (key, mut metrics) in tasks.into_iter().take(count_max) {
            let mut size = metrics.encoded_len();
            if size > bytes_max && share.is_empty() {
                // Alone it would not fit: its totals go, its per-vertex counters do not.
                metrics.vertices.clear();
                size = metrics.encoded_len();
            }
            if bytes + size > bytes_max {
                break;
            }
            bytes += size;
            share.push(metrics);
            self.last = Some(key);
        }
        debug_assert!(share.len() <= count_max, "a share of {} task metrics, over {count_max}", share.len());
        share
    }
}

/// What the heartbeat loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Send the next heartbeat after this pause.
    Beat(Duration),
    /// Register anew: the JobManager does not know this TaskManager, or has not heard from it for the
    /// heartbeat timeout. The caller cancels every task first.
    Register,
}

/// Whether this TaskManager is still registered, as far as its heartbeats tell.
#[derive(Debug)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    /// When the JobManager last answered a heartbeat with `registered = true` (or accepted the registration).
    last_answered: Instant,
    /// The pause before the next retry of a failed heartbeat.
    backoff: Duration,
}

impl Liveness {
    /// Right after a registration the JobManager accepted at `now`, with its heartbeat interval and timeout.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        Self { interval, timeout, last_answered: now, backoff: HEARTBEAT_RETRY_BACKOFF_MIN.min(interval) }
    }

    /// The JobManager answered a heartbeat.
    pub fn answered(&mut self, registered: bool, now: Instant) -> NextStep {
        if !registered {
            return NextStep::Register;
        }
        self.last_answered = now;
        self.backoff = HEARTBEAT_RETRY_BACKOFF_MIN.min(self.interval);
        NextStep::Beat(self.interval)
    }

    /// A heartbeat failed (not sent, not answered in time, or refused): retried unless the JobManager has
    /// not answered one for the whole timeout.
    pub fn failed(&mut self, now: Instant) -> NextStep {
        let silent = now.saturating_duration_since(self.last_answered);
        if silent >= self.timeout {
            return NextStep::Register;
        }
        let pause = self.backoff.min(self.timeout - silent);
        self.backoff = (self.backoff * 2).min(self.interval);
        NextStep::Beat(pause)
    }

    /// How long one heartbeat call may take: a share of the timeout, so the loop gets several tries within
    /// it, and never more than `rpc_timeout`.
    pub fn call_timeout(&self, rpc_timeout: Duration) -> Duration {
        (self.timeout / sluice_common::bounds::HEARTBEATS_PER_TIMEOUT_MIN).min(rpc_timeout)
    }
}

#[cfg(test)]
mod tests {
    use sluice_common::proto::{TaskRef, VertexMetrics};

    use super::*;

    const INTERVAL: Duration = Duration::from_millis(1000);
    const TIMEOUT: Duration = Duration::from_millis(5000);

    fn task(subtask: u32, vertex_id_bytes: usize) -> (String, TaskMetrics) {
        let task = TaskRef { job_id: "job".into(), attempt: 1, chain: 0, subtask };
        let metrics = TaskMetrics {
            task: Some(task),
            vertices: vec![VertexMetrics { vertex_id: "v".repeat(vertex_id_bytes), ..Default::default() }],
            ..Default::default()
        };
        (format!("job/1/0/{subtask:05}"), metrics)
    }

    fn subtasks(share: &[TaskMetrics]) -> Vec<u32> {
        share.iter().filter_map(|m| m.task.as_ref()).map(|t| t.subtask).collect()
    }

    #[test]
    fn a_heartbeat_carries_at_most_the_bound_and_every_task_arrives_within_a_few_heartbeats() {
        let tasks: Vec<_> = (0..10).map(|i| task(i, 4)).collect();
        let mut rotation = MetricsRotation::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let share = rotation.next_share(tasks.clone(), 4, HEARTBEAT_METRICS_BYTES_MAX);
            assert!(share.len() <= 4, "{} task metrics in one heartbeat", share.len());
            seen.extend(subtasks(&share));
        }
        assert_eq!(seen, (0..10).collect(), "ten tasks, four per heartbeat: all seen in three heartbeats");
        // The turns go on around: the fourth heartbeat starts where the third stopped (after task 1).
        assert_eq!(subtasks(&rotation.next_share(tasks, 4, HEARTBEAT_METRICS_BYTES_MAX)), vec![2, 3, 4, 5]);
    }

    #[test]
    fn a_heartbeat_stays_under_its_byte_bound_however_large_the_vertex_ids() {
        let tasks: Vec<_> = (0..8).map(|i| task(i, 300)).collect();
        let bytes_max = 1000;
        let mut rotation = MetricsRotation::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let share = rotation.next_share(tasks.clone(), HEARTBEAT_TASK_METRICS_MAX, bytes_max);
            let bytes: usize = share.iter().map(|m| m.encoded_len()).sum();
            assert!(bytes <= bytes_max, "{bytes} bytes of metrics in one heartbeat");
            assert!(!share.is_empty(), "each heartbeat carries something");
            seen.extend(subtasks(&share));
        }
        assert_eq!(seen, (0..8).collect());
    }

    #[test]
    fn a_task_too_large_for_a_heartbeat_is_sent_without_its_vertex_counters() {
        let tasks = vec![task(0, 5000), task(1, 4)];
        let mut rotation = MetricsRotation::default();
        let share = rotation.next_share(tasks, HEARTBEAT_TASK_METRICS_MAX, 1000);
        assert_eq!(subtasks(&share), vec![0, 1], "the oversized task is not skipped");
        assert!(share[0].vertices.is_empty(), "the oversized task's vertex counters stay home");
        assert_eq!(share[1].vertices.len(), 1, "a task that fits keeps its vertex counters");
        assert!(share.iter().map(|m| m.encoded_len()).sum::<usize>() <= 1000);
    }

    #[test]
    fn tasks_that_ended_or_started_between_heartbeats_do_not_stall_the_turns() {
        let mut rotation = MetricsRotation::default();
        let all: Vec<_> = (0..6).map(|i| task(i, 4)).collect();
        assert_eq!(subtasks(&rotation.next_share(all.clone(), 2, HEARTBEAT_METRICS_BYTES_MAX)), vec![0, 1]);
        // Task 1 (the last one sent) ended: the next heartbeat starts after where it was.
        let without_1: Vec<_> = all.iter().filter(|(k, _)| !k.ends_with("00001")).cloned().collect();
        assert_eq!(subtasks(&rotation.next_share(without_1, 2, HEARTBEAT_METRICS_BYTES_MAX)), vec![2, 3]);
        assert!(rotation.next_share(Vec::new(), 2, HEARTBEAT_METRICS_BYTES_MAX).is_empty());
    }

    #[test]
    fn a_failed_heartbeat_keeps_the_registration_until_the_timeout_passes() {
        let start = Instant::now();
        let mut liveness = Liveness::new(INTERVAL, TIMEOUT, start);
        let mut now = start;
        let mut pauses = Vec::new();
        while let NextStep::Beat(pause) = liveness.failed(now) {
            assert!(now.duration_since(start) < TIMEOUT, "still retrying after the timeout");
            assert!(pause > Duration::ZERO && pause <= INTERVAL, "pause {pause:?}");
            pauses.push(pause);
            now += pause;
            assert!(pauses.len() < 100, "the retries must end");
        }
        assert!(now.duration_since(start) >= TIMEOUT, "registered again after {:?}", now.duration_since(start));
        assert_eq!(&pauses[..4], &[50, 100, 200, 400].map(Duration::from_millis), "the back-off doubles");
        assert!(pauses.iter().all(|p| *p <= INTERVAL), "and stops growing at the interval: {pauses:?}");
    }

    #[test]
    fn an_answered_heartbeat_restarts_the_timeout_and_the_back_off() {
        let start = Instant::now();
        let mut liveness = Liveness::new(INTERVAL, TIMEOUT, start);
        assert_eq!(liveness.failed(start + Duration::from_millis(4000)), NextStep::Beat(Duration::from_millis(50)));
        assert_eq!(liveness.failed(start + Duration::from_millis(4050)), NextStep::Beat(Duration::from_millis(100)));
        let answered_at = start + Duration::from_millis(4200);
        assert_eq!(liveness.answered(true, answered_at), NextStep::Beat(INTERVAL));
        // Nine seconds after registering, but under five since the last answer: still retried.
        let later = answered_at + Duration::from_millis(4900);
        assert_eq!(liveness.failed(later), NextStep::Beat(Duration::from_millis(50)));
        assert_eq!(liveness.failed(answered_at + TIMEOUT), NextStep::Register);
    }

    #[test]
    fn a_job_manager_that_does_not_know_this_task_manager_ends_the_registration_at_once() {
        let start = Instant::now();
        let mut liveness = Liveness::new(INTERVAL, TIMEOUT, start);
        assert_eq!(liveness.answered(false, start + Duration::from_millis(10)), NextStep::Register);
    }

    #[test]
    fn a_heartbeat_call_leaves_room_for_another_within_the_timeout() {
        let liveness = Liveness::new(INTERVAL, TIMEOUT, Instant::now());
        assert_eq!(liveness.call_timeout(Duration::from_secs(5)), Duration::from_millis(2500));
        assert_eq!(liveness.call_timeout(Duration::from_secs(1)), Duration::from_secs(1));
    }
}

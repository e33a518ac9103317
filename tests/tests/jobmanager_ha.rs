//! JobManager high availability (issue 21): three JobManagers on one PostgreSQL database; one leads, the others
//! stand by; the leader's running jobs survive its death without a restart.
//!
//! Method, common to every test: a fresh database on the suite's PostgreSQL server; three JobManagers (the
//! first starts first and takes the lease); two TaskManagers that know all three RPC addresses; a short lease
//! (`LEASE_TIMEOUT_MS`) and heartbeat timeout so that a takeover fits a test's time. The job is the
//! exactly-once windowed job of `sluice_tests::windows`, long enough (30 s) to be mid-stream when the leader
//! goes; its committed output must equal the naive computation exactly.
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::prometheus::samples;
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::windows::{assert_exactly, committed, expected_of, job_of, Shape};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(120);
/// The lease's life after a renewal, and the renew interval, as the JobManagers are configured here.
const LEASE_TIMEOUT: Duration = Duration::from_millis(2000);
const LEASE_RENEW: Duration = Duration::from_millis(500);
/// The TaskManagers' heartbeat timeout: they look for a new leader after this long without an answer.
const HEARTBEAT_TIMEOUT_MS: u64 = 2000;
/// Rows of the job: 30 s at its 3000 rows/s, so a takeover (a few seconds) happens mid-stream.
const ROWS: i64 = 90_000;
/// What a standby may take beyond the lease timeout to lead once the leader is killed (the bound).
const TAKEOVER_SLACK: Duration = Duration::from_secs(1);

fn ha_cluster(lease_timeout: Duration) -> Cluster {
    let url = sluice_tests::postgres::fresh_database("sluice_ha");
    let spec = ClusterSpec::default()
        .job_managers(3)
        .env("DATABASE_URL", &url)
        .env("LEASE_TIMEOUT_MS", lease_timeout.as_millis())
        .env("LEASE_RENEW_INTERVAL_MS", LEASE_RENEW.as_millis())
        .env("HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_MS);
    let mut cluster = Cluster::start(spec);
    let (leader, _) = cluster.wait_for_leader(&[], TIMEOUT);
    assert_eq!(leader, 0, "the JobManager started first leads");
    cluster
}

fn shape() -> Shape {
    Shape { rows: ROWS, rows_per_second: 3_000.0, source_parallelism: 2, window_parallelism: 2 }
}

/// Submits the job (a checkpoint every 200 ms) and waits until it has completed two checkpoints and committed
/// some output.
fn start_job(cluster: &mut Cluster, sink: &std::path::Path) -> JobId {
    let mut job = job_of(&shape(), "HEAP", sink);
    job["config"]["checkpointing"] = serde_json::json!({"interval_ms": 200, "retained": 3});
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    poll_until("two completed checkpoints and some committed output", TIMEOUT, || {
        let completed = latest_completed(cluster, &id);
        let (windows, _) = committed(sink);
        Ok(if completed >= 2 && !windows.is_empty() {
            Progress::Ready(())
        } else {
            Progress::Pending(format!("checkpoint {completed}, {} windows", windows.len()))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    id
}

/// The id of the job's latest completed checkpoint (0 before the first).
fn latest_completed(cluster: &Cluster, id: &JobId) -> u64 {
    let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
    answer["latest"]["completed"]["id"].as_u64().unwrap_or(0)
}

/// Waits until the job has completed a checkpoint after `after` under the current leader, with every task
/// of its first attempt still running and no restart.
fn wait_for_checkpoints_after(cluster: &Cluster, id: &JobId, after: u64) -> Value {
    poll_until("a checkpoint completed by the new leader", TIMEOUT, || {
        let details = cluster.job(id);
        anyhow::ensure!(details["restarts"] == 0, "the job restarted: {details}");
        let latest = latest_completed(cluster, id);
        Ok(if latest > after { Progress::Ready(details) } else { Progress::Pending(format!("latest {latest}")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The sum of a metric's samples on the current JobManager.
fn metric(cluster: &Cluster, name: &str) -> f64 {
    let text = cluster.job_manager_metrics();
    samples(&text, name).unwrap_or_else(|e| panic!("{e:#}")).iter().map(|sample| sample.value).sum()
}

/// Checkpoint ids of the job, as its history lists them, are each listed once and only grow with time.
fn assert_checkpoint_ids_unique(cluster: &Cluster, id: &JobId) {
    let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
    let history = answer["history"].as_array().cloned().unwrap_or_default();
    let ids: Vec<u64> = history.iter().filter_map(|c| c["id"].as_u64()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a checkpoint id was reused: {ids:?}");
}

/// Waits for the job to finish; it did in its first attempt (0 restarts), no checkpoint id was used twice, and
/// its committed output is exactly the uninterrupted run's.
fn assert_finished_exactly_without_a_restart(cluster: &mut Cluster, id: &JobId, sink: &std::path::Path) {
    cluster.wait_for_status(id, JobStatus::Finished, TIMEOUT);
    let done = cluster.job(id);
    assert_eq!((done["restarts"].clone(), done["attempt"].clone()), (0.into(), 1.into()), "{done}");
    assert_checkpoint_ids_unique(cluster, id);
    let (all, _) = committed(sink);
    assert_exactly(&all, &expected_of(ROWS));
}

/// Goal: a killed leader is replaced within the lease timeout + 1 s, and its running exactly-once job is
/// adopted: 0 restarts, still attempt 1, checkpoints go on after the last id, output exact.
#[test]
fn a_killed_leader_is_replaced_within_the_lease_and_its_job_keeps_running() {
    let mut cluster = ha_cluster(LEASE_TIMEOUT);
    let sink = cluster.dir().join("exactly-once");
    let id = start_job(&mut cluster, &sink);
    let before = latest_completed(&cluster, &id);

    let killed = Instant::now();
    cluster.kill_job_manager_at(0);
    let (leader, health) = cluster.wait_for_leader(&[0], TIMEOUT);
    let took = killed.elapsed();
    assert!(took <= LEASE_TIMEOUT + TAKEOVER_SLACK, "JobManager {leader} led {took:?} after the kill: {health}");
    assert!(health["leader"]["epoch"].as_u64() > Some(1), "a new epoch: {health}");

    let details = wait_for_checkpoints_after(&cluster, &id, before);
    assert_eq!(details["attempt"], 1, "the attempt was adopted, not redeployed: {details}");
    assert_eq!(metric(&cluster, "jobmanager_is_leader"), 1.0);
    assert_eq!(metric(&cluster, "jobmanager_takeover_duration_seconds_count"), 1.0);

    assert_finished_exactly_without_a_restart(&mut cluster, &id, &sink);
    // The other standby still stands by.
    let other = (1..3).find(|&i| i != leader).unwrap_or(1);
    let health = cluster.job_manager_health(other).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(health["role"], "standby", "{health}");
    assert_eq!(health["leader"]["rest_address"], cluster.rest_url_of(leader).trim_start_matches("http://"));
}

/// Goal: fencing. A leader frozen (SIGSTOP) past its lease is replaced; when it is thawed (SIGCONT) it steps
/// down to standby, writes nothing (the job's rows are as the new leader has them), and the job, adopted by
/// the new leader, finishes exactly once with 0 restarts.
#[test]
fn a_frozen_leader_is_fenced_off_and_steps_down_when_it_wakes() {
    let mut cluster = ha_cluster(LEASE_TIMEOUT);
    let sink = cluster.dir().join("exactly-once");
    let id = start_job(&mut cluster, &sink);
    let before = latest_completed(&cluster, &id);

    cluster.signal_job_manager_at(0, "STOP");
    let (leader, _) = cluster.wait_for_leader(&[0], TIMEOUT);
    wait_for_checkpoints_after(&cluster, &id, before);
    cluster.signal_job_manager_at(0, "CONT");

    poll_until("the old leader to step down", TIMEOUT, || {
        let health = cluster.job_manager_health(0)?;
        Ok(if health["role"] == "standby" { Progress::Ready(()) } else { Progress::Pending(health.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    poll_until("the old leader to log that it stepped down", TIMEOUT, || {
        let log = std::fs::read_to_string(cluster.dir().join("jobmanager.log"))?;
        Ok(if log.contains("stepped down: the term's work has stopped") {
            Progress::Ready(())
        } else {
            Progress::Pending(String::new())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // It refuses writes it is asked for, and names the leader.
    cluster.use_job_manager(0);
    let refused = cluster.request(reqwest::Method::POST, &format!("/jobs/{}/cancel", id.0), None);
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    cluster.use_job_manager(leader);

    assert_finished_exactly_without_a_restart(&mut cluster, &id, &sink);
}

/// Goal: a rolling replacement. The leader stopped gracefully (SIGTERM) releases the lease, so a standby leads
/// at once, long before the lease (here 30 s) would have expired; the job goes on with 0 restarts.
#[test]
fn a_leader_stopped_gracefully_hands_over_at_once() {
    let long_lease = Duration::from_secs(30);
    let mut cluster = ha_cluster(long_lease);
    let sink = cluster.dir().join("exactly-once");
    let id = start_job(&mut cluster, &sink);
    let before = latest_completed(&cluster, &id);

    let stopped = Instant::now();
    cluster.signal_job_manager_at(0, "TERM");
    let status = cluster.wait_for_job_manager_exit_at(0, TIMEOUT);
    assert!(status.success(), "the old leader exits 0: {status:?}");
    let (_, health) = cluster.wait_for_leader(&[0], TIMEOUT);
    let took = stopped.elapsed();
    assert!(took < long_lease / 2, "a standby led {took:?} after the SIGTERM, as if the lease had to expire: {health}");

    wait_for_checkpoints_after(&cluster, &id, before);
    assert_finished_exactly_without_a_restart(&mut cluster, &id, &sink);
}

/// Goal: the leader killed while a savepoint is being taken. The savepoint request's status, asked of the new
/// leader, is either COMPLETED (with its `_metadata` in place) or FAILED with the reason, never left in progress;
/// the job is adopted (0 restarts), no checkpoint id is used twice, and its output is exact.
#[test]
fn a_leader_killed_during_a_savepoint_leaves_it_completed_or_clearly_failed() {
    let mut cluster = ha_cluster(LEASE_TIMEOUT);
    let sink = cluster.dir().join("exactly-once");
    let id = start_job(&mut cluster, &sink);

    let answer = cluster.request(reqwest::Method::POST, &format!("/jobs/{}/savepoint", id.0), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    let trigger = answer.body["trigger_id"].as_str().unwrap_or_default().to_string();
    cluster.kill_job_manager_at(0);
    cluster.wait_for_leader(&[0], TIMEOUT);

    let savepoint = poll_until("the savepoint to be settled by the new leader", TIMEOUT, || {
        let status = cluster.get(&format!("/jobs/{}/savepoints/{trigger}", id.0));
        Ok(if status["status"] == "IN_PROGRESS" {
            Progress::Pending(status.to_string())
        } else {
            Progress::Ready(status)
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    match savepoint["status"].as_str() {
        Some("COMPLETED") => {
            let location = savepoint["location"].as_str().unwrap_or_default();
            let metadata = std::path::Path::new(location).join("_metadata");
            assert!(metadata.exists(), "a completed savepoint has its _metadata: {savepoint}");
        }
        Some("FAILED") => {
            let failure = savepoint["failure"].as_str().unwrap_or_default();
            assert!(failure.contains("leading changed"), "the failure says why: {savepoint}");
        }
        _ => panic!("the savepoint is neither completed nor failed: {savepoint}"),
    }
    assert_finished_exactly_without_a_restart(&mut cluster, &id, &sink);
}

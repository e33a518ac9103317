//! Issue 19: a checkpoint store that does not answer is waited for, never taken as a reason to start a job
//! from an older state or from the beginning.
//!
//! Before, a restart (or a JobManager restart) while S3 was down found no usable checkpoint and deployed the
//! job from its original start: the sources rewound and the output was duplicated; a restarted JobManager
//! failed every checkpointed job for good.
//!
//! Method: the exactly-once windowed job of [`sluice_tests::windows`] checkpoints into an s3s-fs server of
//! the test's own. Mid-run the server is stopped, then a TaskManager is killed (or the JobManager
//! restarted). The job must wait, saying why in its status, until the server is back, then restore from the
//! latest checkpoint that completed before the outage (not the beginning) and commit every window exactly
//! once.
use std::time::Duration;

use serde_json::Value;
use sluice_tests::s3::{S3Server, BUCKET};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::windows::{assert_exactly, checkpointed_job_on, committed, expected};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The words the job's status reason starts with while it waits for the store.
const WAITING: &str = "waiting for checkpoint storage";

fn cluster_on(s3: &S3Server) -> Cluster {
    let prefix = format!("s3://{BUCKET}/sluice");
    Cluster::start(ClusterSpec::default().env("S3_CHECKPOINT_PATH", prefix).envs(s3.env()))
}

/// Submits the job and waits until two checkpoints completed and some output is committed; returns the job
/// and the id of its latest completed checkpoint.
fn start_job(cluster: &mut Cluster, sink: &std::path::Path) -> (JobId, u64) {
    let id = cluster.submit_json(&checkpointed_job_on("HEAP", sink));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    let latest = poll_until("two completed checkpoints and some committed output", TIMEOUT, || {
        let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
        let completed = answer["counts"]["completed"].as_u64().unwrap_or(0);
        let (windows, _) = committed(sink);
        Ok(match answer["latest"]["completed"]["id"].as_u64() {
            Some(latest) if completed >= 2 && !windows.is_empty() => Progress::Ready(latest),
            _ => Progress::Pending(format!("{completed} checkpoints, {} windows", windows.len())),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    (id, latest)
}

/// Waits until the JobManager's log has a line containing `text`, and returns the line.
fn wait_for_log(cluster: &Cluster, text: &str) -> String {
    let log = cluster.dir().join("jobmanager.log");
    poll_until(&format!("the JobManager to log '{text}'"), TIMEOUT, || {
        let all = std::fs::read_to_string(&log)?;
        Ok(match all.lines().rev().find(|l| l.contains(text)) {
            Some(line) => Progress::Ready(line.to_string()),
            None => Progress::Pending(format!("{} lines", all.lines().count())),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits until the job says it waits for the store, and returns its details then.
fn wait_for_waiting(cluster: &Cluster, id: &JobId) -> Value {
    poll_until("the job to wait for checkpoint storage", TIMEOUT, || {
        let details = cluster.job(id);
        anyhow::ensure!(details["status"] != "FAILED", "the job failed instead of waiting: {details}");
        let reason = details["status_reason"].as_str().unwrap_or_default();
        Ok(if reason.starts_with(WAITING) { Progress::Ready(details) } else { Progress::Pending(details.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// After the store is back: the job runs again from a checkpoint at least as new as `latest` (which
/// completed before the outage; the job's remaining input lasts seconds, so its RUNNING view is seen),
/// finishes, and committed every window exactly once.
fn assert_resumed_exactly(cluster: &mut Cluster, id: &JobId, latest: u64, sink: &std::path::Path) {
    let details = poll_until("the job to run again from a checkpoint", TIMEOUT, || {
        let details = cluster.job(id);
        anyhow::ensure!(details["status"] != "FAILED", "the job failed: {details}");
        anyhow::ensure!(details["status"] != "FINISHED", "the job finished before its restore was seen: {details}");
        Ok(if details["status"] == "RUNNING" && details["restored_checkpoint"].is_u64() {
            Progress::Ready(details)
        } else {
            Progress::Pending(details.to_string())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let restored = details["restored_checkpoint"].as_u64().unwrap_or_default();
    assert!(restored >= latest, "restored checkpoint {restored}, but {latest} had completed before: {details}");
    cluster.wait_for_status(id, JobStatus::Finished, TIMEOUT);
    let (all, hidden) = committed(sink);
    assert!(!hidden, "uncommitted files are left in {}", sink.display());
    assert_exactly(&all, &expected());
}

/// A TaskManager dies while S3 is down: the restart waits for S3 (RESTARTING, the reason shown), and once S3
/// is back the job goes on from its latest checkpoint; the output is exact.
#[test]
fn a_restart_during_an_s3_outage_waits_for_s3_and_resumes_from_the_latest_checkpoint() {
    let mut s3 = S3Server::start_in_temp_dir().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster = cluster_on(&s3);
    wait_for_log(&cluster, "checkpoint storage works");
    let sink = cluster.dir().join("exactly-once");
    let (id, latest) = start_job(&mut cluster, &sink);

    s3.stop();
    cluster.restart_task_manager(0);
    let details = wait_for_waiting(&cluster, &id);
    assert_eq!(details["status"], "RESTARTING", "{details}");
    let reason = details["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("s3://{BUCKET}/sluice")), "the reason names the store: {reason}");

    s3.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    assert_resumed_exactly(&mut cluster, &id, latest, &sink);
}

/// The JobManager restarts while S3 is down: the job it takes over (its tasks kept running) waits for S3 to read
/// its retained checkpoints back (RUNNING, the reason shown), is neither failed nor started from the beginning,
/// and goes on from its latest checkpoint once S3 is back.
#[test]
fn a_jobmanager_restarted_during_an_s3_outage_waits_for_s3_and_resumes_its_job() {
    let mut s3 = S3Server::start_in_temp_dir().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster = cluster_on(&s3);
    let sink = cluster.dir().join("exactly-once");
    let (id, latest) = start_job(&mut cluster, &sink);

    s3.stop();
    cluster.restart_job_manager();
    let details = wait_for_waiting(&cluster, &id);
    assert_eq!(details["status"], "RUNNING", "adopted, its tasks still running: {details}");
    // The start-up probe said so, naming the credentials, and did not keep the JobManager from starting.
    let line = wait_for_log(&cluster, "checkpoint storage probe failed");
    assert!(line.contains("static keys (AWS_ACCESS_KEY_ID)"), "{line}");

    s3.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    assert_resumed_exactly(&mut cluster, &id, latest, &sink);
}

//! A job that cannot get its slots waits, says why, starts when slots come, and fails with a clear cause
//! after its `slot_wait_timeout_ms`.
//!
//! Method: one TaskManager with 2 slots. A job at parallelism 3 waits with the reason "waiting for 3 slots, 2
//! available" until a second TaskManager registers, then runs. A job at parallelism 9 with a short slot wait
//! fails with "could not get 9 slots".
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(60);

fn job(parallelism: u32, slot_wait_timeout_ms: u64) -> Value {
    json!({
        "name": format!("needs_{parallelism}_slots"),
        "config": {"slot_wait_timeout_ms": slot_wait_timeout_ms},
        "vertices": [
            {"id": "gen", "parallelism": parallelism, "datagen": {"seed": 1, "rows_per_second": 100.0,
                "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": parallelism, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink"}]
    })
}

#[test]
fn a_job_waits_for_slots_with_a_reason_and_fails_after_its_timeout() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 1, slots: 2, ..ClusterSpec::default() });

    let waiting = cluster.submit_json(&job(3, 120_000));
    let status = poll_until("the waiting reason", TIMEOUT, || {
        let status = cluster.get(&format!("/jobs/{waiting}/status"));
        Ok(if status["reason"].as_str().is_some_and(|r| r.contains("waiting for 3 slots, 2 available")) {
            Progress::Ready(status)
        } else {
            Progress::Pending(status.to_string())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status["status"], "CREATED", "{status}");

    cluster.add_task_manager();
    cluster.wait_for_status(&waiting, JobStatus::Running, TIMEOUT);
    let details = cluster.job(&waiting);
    assert!(details["status_reason"].is_null(), "a running job has no waiting reason: {details}");

    let hopeless = cluster.submit_json(&job(9, 500));
    let failed = cluster.wait_for_status(&hopeless, JobStatus::Failed, TIMEOUT);
    let cause = cluster.job(&hopeless)["failure_cause"].as_str().unwrap_or_default().to_string();
    assert!(cause.contains("could not get 9 slots within 0.5 s"), "cause: {cause:?} ({failed})");

    cluster.cancel(&waiting);
    cluster.wait_for_status(&waiting, JobStatus::Canceled, TIMEOUT);
}

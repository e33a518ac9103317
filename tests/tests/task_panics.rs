//! Issue 19: a panic inside a task is a task failure, never a silent death.
//!
//! Goal: a task whose operator panics ends FAILED with the panic's message and location, the job's
//! `failure_cause` shows both, the job restarts per its strategy (and ends FAILED when the strategy gives
//! up), and the TaskManager that ran the task lives on. Before the fix the tokio task vanished with no report,
//! heartbeats went on showing it RUNNING and the job hung.
//!
//! Method: TaskManagers built with a native operator that panics on a chosen row
//! (`tests/src/bin/sluice-panicking-taskmanager.rs`) run a generator → `panic_at_row` → blackhole job; every
//! wait is a poll with a deadline.
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

/// The TaskManager binary with the panicking operator.
const PANICKING_TASK_MANAGER: &str = "sluice-panicking-taskmanager";
/// The text the operator's panic starts with.
const PANIC_TEXT: &str = "panic_at_row: reached the row it panics at";
/// Where the operator panics: its location must be in the cause.
const PANIC_FILE: &str = "sluice-panicking-taskmanager.rs:";
/// How long a job may take to fail once submitted: the panic comes 250 ms into the input; the rest is
/// deployment and, for the restart test, two restarts 50 ms apart. Generous for a loaded CI machine.
const FAILURE_BOUND: Duration = Duration::from_secs(60);

/// Generates `n = 0, 1, ...` (2000 a second, unbounded) → `panic_at_row` panicking at n = 500 → blackhole.
fn panicking_job(restart_strategy: Value) -> Value {
    json!({
        "name": "panics at row 500",
        "config": {"restart_strategy": restart_strategy},
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "rows_per_second": 2000.0,
                "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "explode", "parallelism": 1, "custom": {"name": "panic_at_row", "keys": ["n"],
                "config": {"column": "n", "row": "500"}, "output": [{"name": "n", "type": "INT64"}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [
            {"from": "gen", "to": "explode", "partitioning": "HASH", "key": ["n"]},
            {"from": "explode", "to": "sink"}
        ]
    })
}

fn start_cluster() -> Cluster {
    Cluster::start(ClusterSpec::default().task_manager_binary(PANICKING_TASK_MANAGER))
}

/// The job's details once it is FAILED (fails the test if it is not within [`FAILURE_BOUND`]).
fn wait_for_failure(cluster: &mut Cluster, job: &JobId) -> Value {
    cluster.wait_for_status(job, JobStatus::Failed, FAILURE_BOUND);
    cluster.job(job)
}

fn assert_cause_names_the_panic(details: &Value) {
    let cause = details["failure_cause"].as_str().unwrap_or_default();
    assert!(cause.contains(PANIC_TEXT), "the panic's message is the cause: {details}");
    assert!(cause.contains("(n = 500)"), "the whole message, with its values: {details}");
    assert!(cause.contains("panicked at") && cause.contains(PANIC_FILE), "and where it panicked: {details}");
}

/// Every TaskManager is still registered and ACTIVE: a panic ends a task, not its process.
fn assert_task_managers_alive(cluster: &Cluster) {
    let list = cluster.get("/taskmanagers");
    let states: Vec<&str> = list["taskmanagers"]
        .as_array()
        .map(|tms| tms.iter().filter_map(|tm| tm["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states.len(), 2, "{list}");
    assert!(states.iter().all(|state| *state == "ACTIVE"), "{list}");
}

#[test]
fn a_panicking_task_fails_the_job_with_the_panic_message_and_location() {
    let mut cluster = start_cluster();
    let job = cluster.submit_json(&panicking_job(json!({"strategy": "NO_RESTART"})));
    let details = wait_for_failure(&mut cluster, &job);
    assert_cause_names_the_panic(&details);
    assert_eq!(details["restarts"], 0, "{details}");
    assert_task_managers_alive(&cluster);
}

#[test]
fn a_job_whose_task_panics_is_restarted_per_its_strategy_until_it_gives_up() {
    let mut cluster = start_cluster();
    let strategy = json!({"strategy": "FIXED_DELAY", "attempts": 2, "delay_ms": 50});
    let job = cluster.submit_json(&panicking_job(strategy));
    // The restarts are seen while they happen (the job does not hang in between) ...
    poll_until("the job to restart after the panic", FAILURE_BOUND, || {
        let details = cluster.job(&job);
        let restarts = details["restarts"].as_u64().unwrap_or(0);
        Ok(if restarts >= 1 { Progress::Ready(()) } else { Progress::Pending(details.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // ... and once both are used, the job fails with the panic as its cause and the strategy's reason.
    let details = wait_for_failure(&mut cluster, &job);
    assert_eq!(details["restarts"], 2, "{details}");
    assert_cause_names_the_panic(&details);
    let cause = details["failure_cause"].as_str().unwrap_or_default();
    assert!(cause.contains("all 2 restarts used"), "{details}");
    assert_task_managers_alive(&cluster);
}

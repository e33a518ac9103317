//! The REST API's shapes and slot accounting, as dashboards and scripts read them.
//!
//! Goal: `/cluster/metrics` has exactly its six keys and tracks slots as jobs come and go; `/taskmanagers`,
//! `/jobs`, `/jobs/{id}`, `/jobs/{id}/status` and `/jobs/{id}/metrics` carry the fields the README promises;
//! unknown jobs and routes are 404 with `{"error"}`.
//!
//! Method: a JobManager with two TaskManagers of three slots each runs a long, throttled job at parallelism
//! 2 (slot sharing: 2 slots), then cancels it; the slot counts are read before, during and after.
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const SLOTS_PER_TASK_MANAGER: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(60);

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

fn two_slot_job() -> Value {
    json!({
        "name": "rest_shapes",
        "vertices": [
            {"id": "gen", "parallelism": 2, "datagen": {"seed": 5, "rows_per_second": 200.0, "columns": [
                {"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 2, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink", "partitioning": "REBALANCE"}]
    })
}

/// Waits until `/cluster/metrics` shows `available` free slots, and returns it.
fn wait_for_available_slots(cluster: &Cluster, available: u64) -> Value {
    let result = poll_until(&format!("{available} available slots"), TIMEOUT, || {
        let metrics = cluster.get("/cluster/metrics");
        Ok(if metrics["available_slots"] == available {
            Progress::Ready(metrics)
        } else {
            Progress::Pending(metrics.to_string())
        })
    });
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn cluster_metrics_track_slots_and_every_endpoint_has_its_documented_shape() {
    let mut cluster =
        Cluster::start(ClusterSpec { task_managers: 2, slots: SLOTS_PER_TASK_MANAGER, ..ClusterSpec::default() });
    let total = u64::from(2 * SLOTS_PER_TASK_MANAGER);

    assert_eq!(cluster.get("/health")["status"], "ok");
    assert_eq!(cluster.get("/health")["version"], env!("CARGO_PKG_VERSION"), "the version is baked in");
    let idle = cluster.get("/cluster/metrics");
    let expected_keys = BTreeSet::from([
        "total_task_managers",
        "active_task_managers",
        "total_slots",
        "available_slots",
        "utilization",
        "leader",
    ]);
    assert_eq!(keys(&idle), expected_keys, "{idle}");
    assert_eq!(idle["leader"]["this_jobmanager"], true, "a lone JobManager leads: {idle}");
    assert_eq!(cluster.get("/health")["role"], "leader");
    assert_eq!(idle["total_task_managers"], 2);
    assert_eq!(idle["active_task_managers"], 2);
    assert_eq!(idle["total_slots"], total);
    assert_eq!(idle["available_slots"], total);
    assert_eq!(idle["utilization"].as_f64(), Some(0.0));

    let task_managers = cluster.get("/taskmanagers");
    for tm in task_managers["taskmanagers"].as_array().cloned().unwrap_or_default() {
        for key in [
            "id",
            "rpc_address",
            "data_address",
            "metrics_address",
            "slots_total",
            "slots_free",
            "last_heartbeat",
            "state",
        ] {
            assert!(tm.get(key).is_some(), "a TaskManager lacks '{key}': {tm}");
        }
        assert_eq!(tm["slots_total"], SLOTS_PER_TASK_MANAGER);
        assert_eq!(tm["state"], "ACTIVE");
    }

    // A job at parallelism 2 holds 2 slots (slot sharing) while it runs.
    let job = cluster.submit_json(&two_slot_job());
    cluster.wait_for_status(&job, JobStatus::Running, TIMEOUT);
    let busy = wait_for_available_slots(&cluster, total - 2);
    let utilization = busy["utilization"].as_f64().unwrap_or(-1.0);
    assert!((utilization - 2.0 / total as f64).abs() < 1e-9, "utilization: {busy}");

    let listed = cluster.get("/jobs");
    let summary = &listed["jobs"][0];
    for key in ["job_id", "name", "status", "start_time", "end_time"] {
        assert!(summary.get(key).is_some(), "a job summary lacks '{key}': {listed}");
    }
    assert_eq!(summary["job_id"], job.0.as_str());
    let details = cluster.job(&job);
    for key in [
        "job_id",
        "name",
        "status",
        "attempt",
        "start_time",
        "end_time",
        "failure_cause",
        "status_reason",
        "vertices",
        "remote_bytes_out",
        "remote_bytes_in",
    ] {
        assert!(details.get(key).is_some(), "job details lack '{key}': {details}");
    }
    let vertex_ids: Vec<&str> = details["vertices"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(vertex_ids, ["gen", "sink"]);
    let status = cluster.get(&format!("/jobs/{job}/status"));
    assert_eq!(keys(&status), BTreeSet::from(["job_id", "status", "reason"]), "{status}");

    // Per-task metrics arrive with the heartbeats: wait for the sink tasks to have received something.
    let metrics = poll_until("per-task metrics of the sinks", TIMEOUT, || {
        let metrics = cluster.job_metrics(&job);
        let received = metrics["tasks"].as_array().is_some_and(|tasks| {
            tasks.iter().filter(|t| t["vertex_ids"][0] == "sink").count() == 2
                && tasks
                    .iter()
                    .filter(|t| t["vertex_ids"][0] == "sink")
                    .all(|t| t["vertices"][0]["records_in"].as_u64().unwrap_or(0) > 0)
        });
        Ok(if received { Progress::Ready(metrics) } else { Progress::Pending(metrics.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    for task in metrics["tasks"].as_array().cloned().unwrap_or_default() {
        for key in ["busy_ms", "backpressured_ms", "idle_ms", "task_manager_id"] {
            assert!(task.get(key).is_some(), "a task lacks '{key}': {task}");
        }
    }

    // Cancelling gives the slots back.
    cluster.cancel(&job);
    cluster.wait_for_status(&job, JobStatus::Canceled, TIMEOUT);
    wait_for_available_slots(&cluster, total);

    // Unknown things are 404 with an error message.
    for path in ["/jobs/no-such-job", "/jobs/no-such-job/status", "/no/such/route"] {
        let answer = cluster.request(reqwest::Method::GET, path, None);
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.body);
        assert!(answer.body["error"].is_string(), "GET {path}: {}", answer.body);
    }
}

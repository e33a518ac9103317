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
use sluice_tests::prometheus;
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

/// A job whose sink is the bottleneck: an unthrottled generator feeding, across the network, a sink that
/// takes at most 20,000 rows a second, with a checkpoint every second.
fn slow_sink_job() -> Value {
    json!({
        "name": "slow_sink",
        "vertices": [
            {"id": "gen", "parallelism": 2, "datagen": {"seed": 7, "columns": [
                {"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {"rows_per_second": 20000.0}}
        ],
        "edges": [{"from": "gen", "to": "sink", "partitioning": "REBALANCE"}],
        "config": {"checkpointing": {"interval_ms": "1000", "retained": 2}}
    })
}

/// Fails with every way `answer` (to `method` on the templated `path`) departs from openapi.json.
fn assert_documented(document: &Value, method: &str, path: &str, answer: &sluice_tests::cluster::HttpResponse) {
    let Some(schema) = sluice_tests::openapi::response_schema(document, method, path, answer.status) else {
        panic!("openapi.json documents no JSON answer {} to {method} {path}: {}", answer.status, answer.body);
    };
    let violations = sluice_tests::openapi::violations(document, schema, &answer.body);
    assert!(violations.is_empty(), "{method} {path} ({}) departs from openapi.json: {violations:#?}", answer.status);
}

/// Goal: what the web UI shows is right, and every answer is what openapi.json says. A slow sink is named
/// the bottleneck with its upstream back-pressured HIGH; the plan, a vertex's subtasks, a checkpoint's
/// acknowledgements and a savepoint answer; a killed TaskManager shows in the exception history with the
/// recovery's phases; every documented GET answers in its documented shape, and so do errors.
///
/// Method: the slow-sink job on two TaskManagers (a 2 s heartbeat timeout); the routes are read while it
/// runs, after a savepoint, and after the TaskManager running the sink was killed and the job recovered.
#[test]
fn introspection_names_the_bottleneck_records_failures_and_matches_the_openapi_document() {
    let spec = ClusterSpec::default().env("HEARTBEAT_TIMEOUT", 2000).env("LOG_FORMAT", "json");
    let mut cluster = Cluster::start(spec);
    let document = sluice_tests::openapi::document();
    assert_eq!(cluster.get("/openapi.json"), document, "the served document is the file");
    let job = cluster.submit_json(&slow_sink_job());
    cluster.wait_for_status(&job, JobStatus::Running, TIMEOUT);

    // Rates are over the last heartbeat interval: the first ones include the burst that filled the buffers, so
    // the poll waits for the sink's steady rate too.
    let vertex = |details: &Value, id: &str| {
        details["vertices"].as_array().and_then(|v| v.iter().find(|v| v["id"] == id)).cloned().unwrap_or_default()
    };
    let details = poll_until("the sink named the bottleneck at its steady rate", TIMEOUT, || {
        let details = cluster.job(&job);
        let (gen, sink) = (vertex(&details, "gen"), vertex(&details, "sink"));
        let rate = sink["records_in_per_second"].as_f64().unwrap_or(0.0);
        let named = details["bottleneck"]["vertex_id"] == "sink";
        Ok(if named && gen["backpressure_level"] == "HIGH" && (10_000.0..=30_000.0).contains(&rate) {
            Progress::Ready(details)
        } else {
            Progress::Pending(format!("vertices {} bottleneck {}", details["vertices"], details["bottleneck"]))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let sink = vertex(&details, "sink");
    assert_eq!(sink["busy_level"], "HIGH", "the throttled sink is busy: {sink}");
    assert!(details["bottleneck"]["reason"].as_str().is_some_and(|r| r.contains("gen")), "{}", details["bottleneck"]);

    let plan = cluster.get(&format!("/jobs/{job}/plan"));
    assert_eq!(plan["vertices"].as_array().map(Vec::len), Some(2), "{plan}");
    assert_eq!(plan["chains"].as_array().map(Vec::len), Some(2), "a rebalance splits the chain: {plan}");
    assert_eq!(plan["edges"][0]["chained"], false, "{plan}");
    assert_eq!(plan["vertices"][1]["inputs"], json!(["gen"]), "{plan}");

    let vertex = cluster.get(&format!("/jobs/{job}/vertices/gen"));
    let subtasks = vertex["subtasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(subtasks.len(), 2, "{vertex}");
    assert!(subtasks.iter().all(|s| s["task_manager_id"].is_string() && s["state"] == "TASK_RUNNING"), "{vertex}");
    let unknown = cluster.request(reqwest::Method::GET, &format!("/jobs/{job}/vertices/nope"), None);
    assert_eq!(unknown.status, 404);
    assert_documented(&document, "GET", "/jobs/{job_id}/vertices/{vertex_id}", &unknown);

    // A completed checkpoint lists its three tasks' acknowledgements.
    let checkpoint_id = poll_until("a completed checkpoint", TIMEOUT, || {
        let checkpoints = cluster.get(&format!("/jobs/{job}/checkpoints"));
        Ok(match checkpoints["latest"]["completed"]["id"].as_u64() {
            Some(id) => Progress::Ready(id),
            None => Progress::Pending(checkpoints["counts"].to_string()),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let checkpoint = cluster.get(&format!("/jobs/{job}/checkpoints/{checkpoint_id}"));
    assert_eq!(checkpoint["tasks"].as_array().map(Vec::len), Some(3), "{checkpoint}");
    let savepoint = cluster.request(reqwest::Method::POST, &format!("/jobs/{job}/savepoint"), None);
    assert_documented(&document, "POST", "/jobs/{job_id}/savepoint", &savepoint);
    let trigger = savepoint.body["trigger_id"].as_str().unwrap_or_default().to_string();
    poll_until("the savepoint completed", TIMEOUT, || {
        let status = cluster.get(&format!("/jobs/{job}/savepoints/{trigger}"));
        Ok(if status["status"] == "COMPLETED" { Progress::Ready(()) } else { Progress::Pending(status.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let sink_tm = cluster.get(&format!("/jobs/{job}/vertices/sink"))["subtasks"][0]["task_manager_id"].clone();
    let index = (0..cluster.task_manager_count()).find(|&i| sink_tm == cluster.task_manager_id(i));
    let index = index.unwrap_or_else(|| panic!("the sink runs on no known TaskManager: {sink_tm}"));

    // The seed's metric names, on the TaskManager running the sink: latency markers reached it, and its
    // back-pressure and busy shares are there (0-1).
    let job_label = job.to_string();
    poll_until("latency markers measured at the sink", TIMEOUT, || {
        let text = cluster.task_manager_metrics(index);
        let markers =
            prometheus::sum(&text, "processing_latency_seconds_count", &[("job", &job_label), ("operator", "sink")])?;
        Ok(if markers > 0.0 { Progress::Ready(()) } else { Progress::Pending(format!("{markers} markers")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let text = cluster.task_manager_metrics(index);
    let busy = prometheus::sum(&text, "busy_ratio", &[("job", &job_label)]).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(busy > 0.5, "the sink's task is busy: busy_ratio {busy}");
    for name in ["backpressure_ratio", "records_processed_total", "state_size_bytes"] {
        assert!(prometheus::samples(&text, name).is_ok_and(|s| !s.is_empty()), "no {name} series:\n{text}");
    }

    // Kill the TaskManager running the sink: the failure and its recovery are recorded, phase by phase.
    cluster.kill_task_manager(index);
    let exception = poll_until("the failure recorded with its recovery", TIMEOUT, || {
        let exceptions = cluster.get(&format!("/jobs/{job}/exceptions"));
        let first = exceptions["exceptions"][0].clone();
        Ok(if first["recovery"]["catch_up_ms"].is_u64() {
            Progress::Ready(first)
        } else {
            Progress::Pending(exceptions.to_string())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(exception["attempt"], 1, "{exception}");
    assert_eq!(exception["restarted"], true, "{exception}");
    assert!(exception["task_manager_id"].is_string(), "where it came from: {exception}");
    let recovery = &exception["recovery"];
    let phases: u64 = ["cancel_ms", "scheduling_ms", "restore_ms"].iter().filter_map(|p| recovery[p].as_u64()).sum();
    assert!(phases <= recovery["total_ms"].as_u64().unwrap_or(0), "the phases add up to at most the total: {recovery}");
    assert_eq!(cluster.job(&job)["status"], "RUNNING");

    // Every documented GET, with this job's ids, answers in its documented shape.
    let concrete = |template: &str| {
        template
            .replace("{job_id}", &job.to_string())
            .replace("{vertex_id}", "sink")
            .replace("{checkpoint_id}", &checkpoint_id.to_string())
            .replace("{trigger_id}", &trigger)
            .replace("{file}", "app.js")
    };
    let paths: Vec<String> = document["paths"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    let mut checked = 0;
    for template in paths.iter().filter(|p| document["paths"][p.as_str()].get("get").is_some()) {
        let answer = cluster.request(reqwest::Method::GET, &concrete(template), None);
        assert!((200..300).contains(&answer.status), "GET {template}: {} {}", answer.status, answer.body);
        if sluice_tests::openapi::response_schema(&document, "GET", template, answer.status).is_some() {
            assert_documented(&document, "GET", template, &answer);
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} JSON routes were checked");
    let missing = cluster.request(reqwest::Method::GET, "/jobs/00000000000000000000000000000000", None);
    assert_eq!(missing.status, 404);
    assert_documented(&document, "GET", "/jobs/{job_id}", &missing);
    let cancelled = cluster.request(reqwest::Method::POST, &format!("/jobs/{job}/cancel"), None);
    assert_documented(&document, "POST", "/jobs/{job_id}/cancel", &cancelled);
    cluster.wait_for_status(&job, JobStatus::Canceled, TIMEOUT);

    // JSON logs: a task's lines carry its job, attempt, vertex and subtask.
    let survivor = 1 - index;
    let log = cluster.task_manager_log(survivor);
    let ended: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "task ended")
        .collect();
    assert!(!ended.is_empty(), "no JSON 'task ended' line in the log of TaskManager {survivor}:\n{log}");
    for line in &ended {
        let span = &line["span"];
        assert_eq!(span["job"], job.to_string(), "{line}");
        assert!(span["attempt"].is_u64() && span["subtask"].is_u64() && span["vertex"].is_string(), "{line}");
    }
}

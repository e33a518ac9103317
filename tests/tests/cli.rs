//! The `sluice` command-line client drives a real cluster: submit, status, list, taskmanagers, cancel, wait.
//!
//! Goal: every command a user types in the README works against a running JobManager, prints what a person
//! needs (the job id, its status, the TaskManagers), and reports the server's own message with exit code 1
//! when the server refuses.
//!
//! Method: a JobManager and two TaskManagers; a long-running job (unbounded, throttled datagen into a
//! blackhole) is submitted with `sluice submit -q`, inspected with `status` (table and `--json`), `list` and
//! `taskmanagers`, cancelled with `cancel` and followed with `wait`. Every claim is cross-checked against
//! the REST API. Then the error paths: an unknown job, a malformed job file, cancelling an ended job.
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::{CliOutput, Cluster, ClusterSpec, JobId, JobStatus};

const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);

fn long_running_job() -> Value {
    json!({
        "name": "cli_smoke",
        "vertices": [
            {"id": "gen", "parallelism": 2, "datagen": {"seed": 3, "rows_per_second": 500.0, "columns": [
                {"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 2, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink", "partitioning": "REBALANCE"}]
    })
}

/// Asserts a command succeeded and returns its stdout.
fn succeeded(what: &str, output: CliOutput) -> String {
    assert!(
        output.status.success(),
        "`sluice {what}` failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        output.stdout,
        output.stderr
    );
    output.stdout
}

/// Asserts a command failed with exit code 1 and a message on stderr containing `piece`.
fn failed_with(what: &str, output: CliOutput, piece: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "`sluice {what}` should exit 1:\nstdout: {}\nstderr: {}",
        output.stdout,
        output.stderr
    );
    assert!(output.stderr.contains(piece), "`sluice {what}` should say '{piece}' on stderr, said: {}", output.stderr);
}

#[test]
fn the_cli_submits_inspects_lists_and_cancels_a_job_and_relays_server_errors() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let job_file = cluster.dir().join("cli_smoke.json");
    std::fs::write(&job_file, long_running_job().to_string())
        .unwrap_or_else(|e| panic!("cannot write the job file: {e}"));
    let job_path = job_file.display().to_string();

    // submit -q prints exactly the id of a job the JobManager knows.
    let id = succeeded("submit -q", cluster.cli(&["submit", "-q", &job_path])).trim().to_string();
    assert!(id.len() >= 8 && !id.contains(char::is_whitespace), "not a job id: {id:?}");
    let job = JobId(id.clone());
    assert_eq!(cluster.job(&job)["name"], "cli_smoke");
    cluster.wait_for_status(&job, JobStatus::Running, RUNNING_TIMEOUT);

    // status: the table names the job, its status and its vertices; --json is the server's JSON.
    let table = succeeded("status", cluster.cli(&["status", &id]));
    for piece in [id.as_str(), "cli_smoke", "RUNNING", "gen", "sink"] {
        assert!(table.contains(piece), "`sluice status` should show '{piece}':\n{table}");
    }
    let raw = succeeded("--json status", cluster.cli(&["--json", "status", &id]));
    let parsed: Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("`sluice --json status` is not JSON ({e}):\n{raw}"));
    assert_eq!(parsed["job_id"], id.as_str());
    assert_eq!(parsed["status"], "RUNNING");

    // list and taskmanagers show what the REST API shows.
    let list = succeeded("list", cluster.cli(&["list"]));
    assert!(list.contains(&id) && list.contains("cli_smoke"), "`sluice list` should show the job:\n{list}");
    let task_managers = succeeded("taskmanagers", cluster.cli(&["taskmanagers"]));
    for index in 0..cluster.task_manager_count() {
        let tm = cluster.task_manager_id(index).to_string();
        assert!(task_managers.contains(&tm), "`sluice taskmanagers` should list {tm}:\n{task_managers}");
    }

    // cancel, then wait follows the job to CANCELED and exits non-zero (it did not FINISH).
    succeeded("cancel", cluster.cli(&["cancel", &id]));
    cluster.wait_for_status(&job, JobStatus::Canceled, RUNNING_TIMEOUT);
    let waited = cluster.cli(&["wait", &id, "--timeout", "30"]);
    assert_eq!(waited.status.code(), Some(1), "`sluice wait` on a CANCELED job exits 1: {waited:?}");
    let after = succeeded("status", cluster.cli(&["status", &id]));
    assert!(after.contains("CANCELED"), "`sluice status` after cancel:\n{after}");

    // The server's refusals come through with its message and exit code 1.
    failed_with("status <unknown>", cluster.cli(&["status", "no-such-job"]), "not found");
    failed_with("cancel <ended>", cluster.cli(&["cancel", &id]), "already ended");
    let broken = cluster.dir().join("broken.json");
    let broken_job = json!({"name": "b", "vertices": [{"id": "lonely", "parallelism": 1}]});
    std::fs::write(&broken, broken_job.to_string()).unwrap_or_else(|e| panic!("cannot write the job file: {e}"));
    failed_with("submit <malformed>", cluster.cli(&["submit", &broken.display().to_string()]), "vertex 'lonely'");

    // Nothing but the one job was created.
    let jobs = cluster.get("/jobs");
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "{jobs}");
}

/// `savepoint`, `checkpoints`, `stop` and `submit --from-savepoint` round-trip a job through a savepoint.
#[test]
fn the_cli_takes_savepoints_stops_and_resumes_a_job() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let job_file = cluster.dir().join("cli_smoke.json");
    std::fs::write(&job_file, long_running_job().to_string())
        .unwrap_or_else(|e| panic!("cannot write the job file: {e}"));
    let job_path = job_file.display().to_string();
    let id = succeeded("submit -q", cluster.cli(&["submit", "-q", &job_path])).trim().to_string();
    let job = JobId(id.clone());
    cluster.wait_for_status(&job, JobStatus::Running, RUNNING_TIMEOUT);

    let target = cluster.dir().join("my-savepoints");
    let target_arg = target.display().to_string();
    let printed = succeeded("savepoint", cluster.cli(&["savepoint", &id, "--target-directory", &target_arg]));
    let location = printed.trim().strip_prefix("Savepoint completed: ").unwrap_or_else(|| panic!("{printed}"));
    assert!(location.starts_with(&target_arg), "{location} is not under {target_arg}");
    assert!(std::path::Path::new(location).join("_metadata").is_file(), "{location} has no _metadata");

    let listed = succeeded("checkpoints", cluster.cli(&["checkpoints", &id]));
    assert!(listed.contains("SAVEPOINT") && listed.contains("COMPLETED"), "{listed}");

    let stopped = succeeded("stop", cluster.cli(&["stop", &id]));
    let stop_location = stopped
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed: "))
        .unwrap_or_else(|| panic!("{stopped}"))
        .to_string();
    cluster.wait_for_status(&job, JobStatus::Finished, RUNNING_TIMEOUT);

    let resumed = succeeded(
        "submit --from-savepoint",
        cluster.cli(&["submit", "-q", "--from-savepoint", &stop_location, &job_path]),
    );
    let resumed = JobId(resumed.trim().to_string());
    cluster.wait_for_status(&resumed, JobStatus::Running, RUNNING_TIMEOUT);
    succeeded("cancel", cluster.cli(&["cancel", &resumed.0]));

    let nowhere = cluster.dir().join("nowhere").display().to_string();
    failed_with(
        "submit --from-savepoint <missing>",
        cluster.cli(&["submit", "--from-savepoint", &nowhere, &job_path]),
        "nowhere",
    );
}

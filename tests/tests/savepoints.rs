//! Savepoints: stop a job mid-stream with a savepoint, start it again from the savepoint (at the same
//! parallelism and at another one, on heap and on RocksDB), and get exactly the output of an uninterrupted
//! run; broken savepoints are refused, or fail the job, naming the checkpoint and the file.
//!
//! Method: a rate-limited generator of `n = 0..ROWS` with event time `START + n` ms feeds a tumbling
//! one-second window keyed by `n % 7` (count and sum of `n`) into a file sink. The expected windows are
//! computed naively in the test. Run 1 is stopped with a savepoint (`POST /jobs/{id}/stop`) once its sink
//! has written something; run 2 starts from the savepoint with its own sink directory. Every window must
//! appear exactly once over both runs' output, with the right count and sum; run 1 alone must have written
//! some but not all of them (so the stop really was mid-stream).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::s3::{S3Server, BUCKET};
use sluice_tests::sink::{as_u64, part_files, read_rows};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::windows::{
    assert_exactly, assert_subset, checkpointed_job_on, committed, expected, job, windows_in, Windows, ROWS,
    ROWS_PER_SECOND,
};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(90);
fn sink_records(cluster: &Cluster, id: &JobId) -> u64 {
    let metrics = cluster.job_metrics(id);
    let vertices = metrics["vertices"].as_array().cloned().unwrap_or_default();
    vertices.iter().filter(|v| v["id"] == "sink").filter_map(|v| v["records_in"].as_u64()).sum()
}

/// Waits until the job's sink has received records (so a stop comes mid-stream, after some output).
fn wait_for_sink_output(cluster: &Cluster, id: &JobId) {
    poll_until("the sink to receive records", TIMEOUT, || {
        let written = sink_records(cluster, id);
        if written > 0 {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("{written} records at the sink")))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

fn submit_from(cluster: &Cluster, job: &Value, savepoint: &str) -> sluice_tests::cluster::HttpResponse {
    let query = format!("/jobs/submit?savepoint_path={savepoint}");
    cluster.request(reqwest::Method::POST, &query, Some(job))
}

/// A location in a local directory, as a path.
fn local(location: &str) -> PathBuf {
    PathBuf::from(location)
}

/// Run 1 at window parallelism 2 until its sink wrote something, stop with a savepoint, run 2 from it at
/// `parallelism_after`; returns the savepoint.
fn stop_and_resume(backend: &str, parallelism_after: u32) -> (Cluster, PathBuf) {
    stop_and_resume_on(ClusterSpec::default(), backend, parallelism_after, &local)
}

/// [`stop_and_resume`] on a cluster of `spec`, whose storage keeps a location's files at `path_of(location)`.
fn stop_and_resume_on(
    spec: ClusterSpec,
    backend: &str,
    parallelism_after: u32,
    path_of: &dyn Fn(&str) -> PathBuf,
) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::start(spec);
    let (first_sink, second_sink) = (cluster.dir().join("run-1"), cluster.dir().join("run-2"));
    let id = cluster.submit_json(&job(backend, 2, &first_sink));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    wait_for_sink_output(&cluster, &id);
    let location = cluster.stop_with_savepoint(&id, TIMEOUT);
    let savepoint = path_of(&location);
    assert!(savepoint.join("_metadata").is_file(), "{} has no _metadata", savepoint.display());

    let answer = submit_from(&cluster, &job(backend, parallelism_after, &second_sink), &location);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let resumed = JobId(answer.body["job_id"].as_str().unwrap_or_default().to_string());
    cluster.wait_for_status(&resumed, JobStatus::Finished, TIMEOUT);

    let expected = expected();
    let mut first = Windows::new();
    windows_in(&first_sink, &mut first);
    assert!(
        !first.is_empty() && first.len() < expected.len(),
        "run 1 emitted {} of {} windows",
        first.len(),
        expected.len()
    );
    let mut both = first.clone();
    let mut second = Windows::new();
    windows_in(&second_sink, &mut second);
    for (window, value) in second {
        if let Some(earlier) = both.insert(window, value) {
            panic!("window {window:?} emitted by both runs: {earlier:?} then {value:?}");
        }
    }
    assert_eq!(both.len(), expected.len(), "windows over both runs");
    for (window, value) in &expected {
        assert_eq!(both.get(window), Some(value), "window {window:?}");
    }
    (cluster, savepoint)
}

#[test]
fn stop_and_resume_at_the_same_parallelism_on_heap_and_refuse_broken_savepoints() {
    let (cluster, savepoint) = stop_and_resume("HEAP", 2);
    let sink = cluster.dir().join("unused");

    // Not a savepoint at all.
    let nowhere = cluster.dir().join("nowhere").display().to_string();
    let answer = submit_from(&cluster, &job("HEAP", 2, &sink), &nowhere);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap_or_default().contains("nowhere"), "{}", answer.body);

    // A vertex of the savepoint missing from the job.
    let mut renamed = job("HEAP", 2, &sink);
    renamed["vertices"][2]["id"] = json!("windows");
    renamed["edges"][1]["to"] = json!("windows");
    renamed["edges"][2]["from"] = json!("windows");
    let answer = submit_from(&cluster, &renamed, &savepoint.display().to_string());
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap_or_default().contains("vertex 'count'"), "{}", answer.body);

    // A missing snapshot file is refused at submission, naming it; nothing is stored.
    let jobs_before = cluster.get("/jobs")["jobs"].as_array().map_or(0, Vec::len);
    let missing = copy_dir(&savepoint, &cluster.dir().join("missing-file"));
    let victim = first_snapshot(&missing);
    std::fs::remove_file(&victim).unwrap_or_else(|e| panic!("{e}"));
    let answer = submit_from(&cluster, &job("HEAP", 2, &sink), &missing.display().to_string());
    assert_eq!(answer.status, 400, "{}", answer.body);
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(message.contains(&*victim.to_string_lossy()) && message.contains("missing"), "{message}");
    assert_eq!(cluster.get("/jobs")["jobs"].as_array().map_or(0, Vec::len), jobs_before);

    // A damaged snapshot file fails the job, naming the checkpoint and the file; nothing panics.
    let damaged = copy_dir(&savepoint, &cluster.dir().join("damaged-file"));
    let victim = first_snapshot(&damaged);
    let mut bytes = std::fs::read(&victim).unwrap_or_else(|e| panic!("{e}"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&victim, bytes).unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = cluster;
    let answer = submit_from(&cluster, &job("HEAP", 2, &sink), &damaged.display().to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = JobId(answer.body["job_id"].as_str().unwrap_or_default().to_string());
    cluster.wait_for_status(&id, JobStatus::Failed, TIMEOUT);
    let cause = cluster.job(&id)["failure_cause"].as_str().unwrap_or_default().to_string();
    assert!(cause.contains("checksum") && cause.contains(&*victim.to_string_lossy()), "{cause}");
    assert!(cause.contains("checkpoint"), "{cause}");
}

#[test]
fn stop_and_resume_at_a_higher_parallelism_on_heap() {
    stop_and_resume("HEAP", 3);
}

#[test]
fn stop_and_resume_at_a_lower_parallelism_on_rocksdb() {
    stop_and_resume("ROCKSDB", 1);
}

/// The same with the metadata in PostgreSQL (the suite's server, a database of this test's own).
#[test]
fn stop_and_resume_with_the_metadata_in_postgresql() {
    let url = sluice_tests::postgres::fresh_database("sluice_savepoints");
    let (cluster, _) = stop_and_resume_on(ClusterSpec::default().env("DATABASE_URL", &url), "ROCKSDB", 3, &local);
    let sqlite = cluster.dir().join("jobmanager").join("sluice.db");
    assert!(!sqlite.exists(), "{} exists although DATABASE_URL is PostgreSQL", sqlite.display());
}

/// A cluster spec with the metadata in a fresh PostgreSQL database (the suite's server) and checkpoints and
/// savepoints in an S3 server of the test's own.
fn postgres_and_s3(database: &str) -> (S3Server, ClusterSpec) {
    let url = sluice_tests::postgres::fresh_database(database);
    let s3 = S3Server::start_in_temp_dir().unwrap_or_else(|e| panic!("{e:#}"));
    let spec = ClusterSpec::default()
        .env("DATABASE_URL", &url)
        .env("S3_CHECKPOINT_PATH", format!("s3://{BUCKET}/checkpoints"))
        .env("SAVEPOINT_DIR", format!("s3://{BUCKET}/savepoints"))
        .envs(s3.env());
    (s3, spec)
}

/// The same on PostgreSQL + S3: savepoint and restore go through the S3 API, nothing through the local disk.
#[test]
fn stop_and_resume_with_postgresql_and_s3() {
    let (s3, spec) = postgres_and_s3("sluice_s3_savepoints");
    let (cluster, savepoint) = stop_and_resume_on(spec, "ROCKSDB", 3, &|l| s3.local_path(l));
    assert!(savepoint.starts_with(s3.root()), "the savepoint is in S3: {}", savepoint.display());
    let local = cluster.dir().join("jobmanager").join("savepoints");
    assert!(!local.exists(), "{} exists although savepoints go to S3", local.display());
}

/// Checkpoints in S3, incremental on RocksDB: a TaskManager killed with SIGKILL, the job restarted from its
/// latest checkpoint there (its SST files under the job's `shared/`).
#[test]
fn after_kill_9_the_job_restarts_from_the_latest_incremental_checkpoint_in_s3_losing_and_repeating_nothing() {
    let (s3, spec) = postgres_and_s3("sluice_s3_kill");
    kill_9_and_recover_from_the_latest_checkpoint(spec, "ROCKSDB", &|l| s3.local_path(l));
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())).flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap_or_else(|e| panic!("{e}"));
    }
    to.to_path_buf()
}

/// A snapshot file of a window task (the ones with keyed state).
fn first_snapshot(dir: &Path) -> PathBuf {
    let metadata: Value =
        serde_json::from_slice(&std::fs::read(dir.join("_metadata")).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let file = metadata["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["vertex_ids"].as_array().is_some_and(|v| v.iter().any(|id| id == "count")))
        .and_then(|f| f["file"].as_str())
        .unwrap_or_else(|| panic!("no window snapshot in {metadata}"));
    dir.join(file)
}

/// The same job with a checkpoint every 200 ms: its file sink commits on checkpoint completion.
fn checkpointed_job(sink: &Path) -> Value {
    checkpointed_job_on("HEAP", sink)
}

/// With checkpointing, the file sink commits per checkpoint: readers see only committed windows, never a
/// window twice, and after stop-with-savepoint and a restart into the same directory, every window once.
#[test]
fn the_exactly_once_file_sink_commits_per_checkpoint_across_stop_and_resume() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let sink = cluster.dir().join("exactly-once");
    let expected = expected();
    let id = cluster.submit_json(&checkpointed_job(&sink));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    poll_until("committed output and uncommitted files side by side", TIMEOUT, || {
        let (windows, hidden) = committed(&sink);
        assert_subset(&windows, &expected);
        if !windows.is_empty() && hidden {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("{} committed windows, hidden files: {hidden}", windows.len())))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let savepoint = cluster.stop_with_savepoint(&id, TIMEOUT);
    let (stopped, _) = committed(&sink);
    assert!(stopped.len() < expected.len(), "the stop came mid-stream");

    resume_and_check_everything_committed_once(&mut cluster, &checkpointed_job(&sink), &sink, &savepoint, &expected);
}

/// Runs the checkpointed job from `savepoint` into `sink` to its end; then every expected window is
/// committed exactly once, and no uncommitted file is left.
fn resume_and_check_everything_committed_once(
    cluster: &mut Cluster,
    job: &Value,
    sink: &Path,
    savepoint: &str,
    expected: &Windows,
) {
    let answer = submit_from(cluster, job, savepoint);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let resumed = JobId(answer.body["job_id"].as_str().unwrap_or_default().to_string());
    cluster.wait_for_status(&resumed, JobStatus::Finished, TIMEOUT);
    let (all, hidden) = committed(sink);
    assert_exactly(&all, expected);
    assert!(!hidden, "uncommitted files left in {}", sink.display());
}

/// A TaskManager killed with SIGKILL fails the job's attempt; the job restarts by itself from its latest
/// completed checkpoint, into the same directory, and neither loses nor repeats a window: what was
/// pre-committed for that checkpoint is committed, and what was written after it is discarded and written
/// again.
#[test]
fn after_kill_9_the_job_restarts_from_the_latest_checkpoint_and_loses_and_repeats_nothing() {
    kill_9_and_recover_from_the_latest_checkpoint(ClusterSpec::default(), "HEAP", &local);
}

fn kill_9_and_recover_from_the_latest_checkpoint(spec: ClusterSpec, backend: &str, path_of: &dyn Fn(&str) -> PathBuf) {
    let mut cluster = Cluster::start(spec);
    let sink = cluster.dir().join("exactly-once");
    let expected = expected();
    let id = cluster.submit_json(&checkpointed_job_on(backend, &sink));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    poll_until("two completed checkpoints and some committed output", TIMEOUT, || {
        let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
        let completed = answer["counts"]["completed"].as_u64().unwrap_or(0);
        let (windows, _) = committed(&sink);
        if completed >= 2 && !windows.is_empty() {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("{completed} checkpoints, {} windows", windows.len())))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
    let latest = answer["latest"]["completed"]["location"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string();
    let latest_id = answer["latest"]["completed"]["id"].as_u64().unwrap_or_else(|| panic!("{answer}"));
    cluster.kill_task_manager(0);
    let (before, _) = committed(&sink);
    assert_subset(&before, &expected);
    assert!(before.len() < expected.len(), "the kill came mid-stream");

    if backend == "ROCKSDB" {
        // Incremental: the windows' SST files are in the job's shared folder, referenced from the metadata.
        let bytes = std::fs::read(path_of(&latest).join("_metadata")).unwrap_or_else(|e| panic!("{e}"));
        let metadata: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let shared_dir = metadata["shared_dir"].as_str().unwrap_or_else(|| panic!("no shared_dir: {metadata}"));
        let shared: Vec<&str> = metadata["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["shared"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(!shared.is_empty(), "the checkpoint references shared files: {metadata}");
        for file in shared {
            assert!(path_of(shared_dir).join(file).is_file(), "{shared_dir}/{file} is stored");
        }
    }

    // The restart really happened, every task runs again, and the state came from a checkpoint no older
    // than the one completed before the kill (a newer one may have completed between the two reads).
    let details = poll_until("the job to restart and run every task again", TIMEOUT, || {
        let details = cluster.job(&id);
        anyhow::ensure!(details["status"] != "FAILED", "the job failed instead of restarting: {details}");
        let restarted = details["restarts"].as_u64().unwrap_or(0) >= 1;
        Ok(if restarted && details["last_recovery_ms"].is_u64() {
            Progress::Ready(details)
        } else {
            Progress::Pending(details["status"].to_string())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let restored =
        details["restored_checkpoint"].as_u64().unwrap_or_else(|| panic!("no restored checkpoint: {details}"));
    assert!(restored >= latest_id, "restored checkpoint {restored}, but {latest_id} had completed: {details}");
    let cause = details["failure_cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains(cluster.task_manager_id(0)) || cause.contains("failed"),
        "the cause names the loss: {details}"
    );

    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
    let (all, hidden) = committed(&sink);
    assert_exactly(&all, &expected);
    assert!(!hidden, "uncommitted files left in {}", sink.display());
}

/// The running (non-windowed) aggregate checkpoints its groups too: a count and sum per key, stopped with
/// a savepoint mid-stream and resumed at parallelism 3, ends with every key's true totals (the last row of
/// a key over both runs, the second run's rows coming after the first's).
#[test]
fn a_running_aggregate_resumes_from_a_savepoint_at_another_parallelism() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let running = |p: u32, sink: &Path| {
        json!({
            "name": "running totals",
            "vertices": [
                {"id": "numbers", "parallelism": 2, "datagen": {"seed": 1, "rows": ROWS,
                    "rows_per_second": ROWS_PER_SECOND, "batch_size": 50,
                    "columns": [{"name": "n", "sequence": {"start": 0}}]}},
                {"id": "keyed", "parallelism": 2, "select": {"columns": [
                    {"name": "k", "expr": "n % 50"}, {"name": "n", "expr": "n"}]}},
                {"id": "totals", "parallelism": p, "aggregate": {"keys": ["k"], "aggregates": [
                    {"function": "count", "name": "rows"}, {"function": "sum", "argument": "n", "name": "total"}]}},
                {"id": "sink", "parallelism": p, "file_sink": {"path": sink.display().to_string()}}
            ],
            "edges": [
                {"from": "numbers", "to": "keyed"},
                {"from": "keyed", "to": "totals", "partitioning": "HASH", "key": ["k"]},
                {"from": "totals", "to": "sink"}
            ]
        })
    };
    let (first_sink, second_sink) = (cluster.dir().join("run-1"), cluster.dir().join("run-2"));
    let id = cluster.submit_json(&running(2, &first_sink));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    wait_for_sink_output(&cluster, &id);
    let savepoint = cluster.stop_with_savepoint(&id, TIMEOUT);
    let answer = submit_from(&cluster, &running(3, &second_sink), &savepoint);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let resumed = JobId(answer.body["job_id"].as_str().unwrap_or_default().to_string());
    cluster.wait_for_status(&resumed, JobStatus::Finished, TIMEOUT);

    let mut latest: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
    let mut first_run_rows = 0;
    for (run, dir) in [(1, &first_sink), (2, &second_sink)] {
        for file in part_files(dir).unwrap_or_else(|e| panic!("{e:#}")) {
            for row in read_rows(&file).unwrap_or_else(|e| panic!("{e:#}")) {
                let key = row["k"].as_i64().unwrap_or_else(|| panic!("no k in {row:?}"));
                let rows = as_u64(&row, "rows").unwrap_or_else(|e| panic!("{e:#}"));
                let total = row["total"].as_i64().unwrap_or_else(|| panic!("no total in {row:?}"));
                latest.insert(key, (rows, total));
                first_run_rows += usize::from(run == 1);
            }
        }
    }
    assert!(first_run_rows > 0, "run 1 emitted before the stop");
    let mut expected: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
    for n in 0..ROWS {
        let entry = expected.entry(n % 50).or_default();
        entry.0 += 1;
        entry.1 += n;
    }
    assert_eq!(latest, expected, "final totals per key over both runs");
}

//! The `sluice` binary against a real JobManager and TaskManager.
//!
//! Goal: every command does what its help says, prints the server's own message when the server refuses,
//! and `wait` exits with the code scripts rely on (0 FINISHED, 1 ended otherwise, 124 timed out).
//! Method: each test starts a JobManager (and, where a job must run, a TaskManager) in this process on
//! port 0, finds their addresses through the address files they write, and runs the compiled `sluice`
//! binary as a child process against them. No mocks: the REST API answering is the real one.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// How long a server may take to write its address file, and a TaskManager to register.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a condition is checked while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long the servers get to stop when a test ends.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A JobManager, and optionally a TaskManager, running in this process until dropped.
struct Cluster {
    /// `http://127.0.0.1:PORT` of the REST API.
    rest_url: String,
    shutdown: CancellationToken,
    control_runtime: Option<tokio::runtime::Runtime>,
    data_runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a JobManager and `task_manager_slots.len()` TaskManagers with those slot counts, and waits
    /// until all of them registered.
    fn start(task_manager_slots: &[u32]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let control_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the control runtime");
        let data_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the data runtime");
        let shutdown = CancellationToken::new();

        let jm_dir = dir.path().join("jobmanager");
        let config = sluice_jobmanager::JobManagerConfig::parse_from([
            "sluice-jobmanager",
            "--rest-addr",
            "127.0.0.1:0",
            "--rpc-addr",
            "127.0.0.1:0",
            "--heartbeat-interval-ms",
            "100",
            "--data-dir",
            path_str(&jm_dir),
            // Jobs read and write in the test's directory (see docs/security.md, "Jobs are confined").
            "--allowed-input-dirs",
            path_str(dir.path()),
            "--allowed-output-dirs",
            path_str(dir.path()),
        ]);
        let jm_shutdown = shutdown.clone();
        control_runtime.spawn(async move {
            if let Err(e) = sluice_jobmanager::run(config, jm_shutdown).await {
                panic!("the JobManager failed: {e:#}");
            }
        });
        let addresses = read_address_file(&jm_dir.join("jobmanager.addr"));
        let rest = addresses["rest"].as_str().expect("a REST address").to_string();
        let rpc = addresses["rpc"].as_str().expect("an RPC address").to_string();

        for (i, slots) in task_manager_slots.iter().enumerate() {
            let config = sluice_taskmanager::TaskManagerConfig::parse_from([
                "sluice-taskmanager".to_string(),
                "--jobmanager".to_string(),
                rpc.clone(),
                "--slots".to_string(),
                slots.to_string(),
                "--cluster-secret-file".to_string(),
                path_str(&jm_dir.join("cluster.secret")).to_string(),
                "--id".to_string(),
                format!("tm-{i}"),
                "--data-dir".to_string(),
                path_str(&dir.path().join(format!("tm-{i}"))).to_string(),
                "--allowed-input-dirs".to_string(),
                path_str(dir.path()).to_string(),
                "--allowed-output-dirs".to_string(),
                path_str(dir.path()).to_string(),
            ]);
            let (handle, tm_shutdown) = (data_runtime.handle().clone(), shutdown.clone());
            control_runtime.spawn(async move {
                if let Err(e) = sluice_taskmanager::run(config, handle, tm_shutdown).await {
                    panic!("the TaskManager failed: {e:#}");
                }
            });
        }
        let cluster = Cluster {
            rest_url: format!("http://{rest}"),
            shutdown,
            control_runtime: Some(control_runtime),
            data_runtime: Some(data_runtime),
            dir,
        };
        let expected = task_manager_slots.len();
        poll_until("every TaskManager registered", || {
            let answer = cluster.sluice(&["--json", "cluster"]);
            let metrics: serde_json::Value = serde_json::from_slice(&answer.stdout).ok()?;
            (metrics["active_task_managers"].as_u64()? == expected as u64).then_some(())
        });
        cluster
    }

    /// Runs `sluice ARGS` against this cluster, with the admin token the JobManager generated.
    fn sluice(&self, args: &[&str]) -> Output {
        self.sluice_without_token(args)
            .env("SLUICE_TOKEN_FILE", self.dir.path().join("jobmanager").join("admin.token"))
            .output()
            .expect("the sluice binary runs")
    }

    /// `sluice ARGS` against this cluster, with no token given.
    fn sluice_without_token(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .env("SLUICE_JOBMANAGER", &self.rest_url)
            .env_remove("SLUICE_TOKEN_FILE")
            .env_remove("SLUICE_TOKEN");
        command
    }

    /// Writes a job file into the cluster's directory.
    fn job_file(&self, name: &str, json: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, json).expect("the job file is written");
        path
    }

    /// Submits a job file with `sluice submit --quiet` and returns the job id it printed.
    fn submit(&self, path: &Path) -> String {
        let output = self.sluice(&["submit", "--quiet", path_str(path)]);
        assert_success(&output, "submit");
        let job_id = stdout(&output).trim().to_string();
        assert!(!job_id.is_empty() && !job_id.contains(char::is_whitespace), "submit -q printed {job_id:?}");
        job_id
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.control_runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
        if let Some(runtime) = self.data_runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "`sluice {what}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Calls `check` every [`POLL_INTERVAL`] until it answers, or panics after [`STARTUP_TIMEOUT`].
fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {STARTUP_TIMEOUT:?} waiting until {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn read_address_file(path: &Path) -> serde_json::Value {
    poll_until(&format!("{} is written", path.display()), || {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    })
}

/// Word count over a small file: each word's last line in the sink holds its count.
fn word_count_job(input: &Path, output: &Path) -> String {
    serde_json::json!({
        "name": "cli_word_count",
        "vertices": [
            {"id": "lines", "parallelism": 1, "file_source": {
                "path": path_str(input), "format": "LINES", "schema": [{"name": "line", "type": "STRING"}]}},
            {"id": "split", "parallelism": 1, "flat_map": {"column": "line", "output_column": "word"}},
            {"id": "count", "parallelism": 1, "aggregate": {
                "keys": ["word"], "aggregates": [{"function": "count", "name": "count"}]}},
            {"id": "sink", "parallelism": 1, "file_sink": {"path": path_str(output)}}
        ],
        "edges": [
            {"from": "lines", "to": "split"},
            {"from": "split", "to": "count", "partitioning": "HASH", "key": ["word"]},
            {"from": "count", "to": "sink"}
        ]
    })
    .to_string()
}

/// A job that needs `parallelism` slots and, with none offered, waits for them (for a minute).
fn job_needing_slots(parallelism: u32) -> String {
    serde_json::json!({
        "name": "waits_for_slots",
        "vertices": [
            {"id": "gen", "parallelism": parallelism, "datagen": {
                "seed": 1, "rows": 10, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": parallelism, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink"}],
        "config": {"slot_wait_timeout_ms": 60000}
    })
    .to_string()
}

#[test]
fn a_submitted_job_is_listed_followed_to_finished_and_shown_per_vertex() {
    let cluster = Cluster::start(&[2]);
    let input = cluster.dir.path().join("input.txt");
    std::fs::write(&input, "to be or not to be\nthat is the question\n").expect("the input is written");
    let output_dir = cluster.dir.path().join("out");
    let job = cluster.job_file("word_count.json", &word_count_job(&input, &output_dir));

    let job_id = cluster.submit(&job);
    let waited = cluster.sluice(&["wait", &job_id, "--timeout", "120"]);
    assert_success(&waited, "wait");
    assert!(stderr(&waited).contains("FINISHED"), "wait reports the final status: {}", stderr(&waited));

    let listed = cluster.sluice(&["list"]);
    assert_success(&listed, "list");
    let row = stdout(&listed).lines().find(|line| line.starts_with(&job_id)).map(str::to_string);
    let row = row.unwrap_or_else(|| panic!("the job is listed:\n{}", stdout(&listed)));
    assert!(row.contains("cli_word_count") && row.contains("FINISHED"), "the row names the job and its status: {row}");

    let status = cluster.sluice(&["status", &job_id]);
    assert_success(&status, "status");
    let text = stdout(&status);
    assert!(text.contains("Status    FINISHED"), "{text}");
    let split = text.lines().find(|l| l.starts_with("split")).unwrap_or_else(|| panic!("a row per vertex:\n{text}"));
    let cells: Vec<&str> = split.split_whitespace().collect();
    assert_eq!(&cells[..5], ["split", "flat_map", "1", "2", "10"], "2 lines in, 10 words out: {split}");

    let json = cluster.sluice(&["status", "--json", &job_id]);
    assert_success(&json, "status --json");
    let details: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(details["job_id"], job_id.as_str());
    assert_eq!(details["status"], "FINISHED");

    let part = std::fs::read_to_string(output_dir.join("part-0.jsonl")).expect("the sink wrote its part file");
    let last_be = part.lines().rfind(|l| l.contains(r#""word":"be""#)).expect("'be' was counted");
    assert!(last_be.contains(r#""count":2"#), "the final count of 'be' is 2: {last_be}");
}

#[test]
fn taskmanagers_and_cluster_show_the_registered_slots() {
    let cluster = Cluster::start(&[3]);
    let listed = cluster.sluice(&["taskmanagers"]);
    assert_success(&listed, "taskmanagers");
    let text = stdout(&listed);
    let row = text.lines().find(|l| l.starts_with("tm-0")).unwrap_or_else(|| panic!("tm-0 is listed:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["tm-0", "ACTIVE", "3", "3"], "{row}");

    let summary = cluster.sluice(&["cluster"]);
    assert_success(&summary, "cluster");
    assert!(stdout(&summary).contains("Slots         3 free of 3"), "{}", stdout(&summary));
}

#[test]
fn a_rejected_job_file_fails_with_every_problem_the_server_found() {
    let cluster = Cluster::start(&[]);
    let bad = cluster.job_file(
        "bad.json",
        r#"{"name": "bad", "vertices": [
              {"id": "gen", "parallelism": 1, "datagen": {"rows": 1, "columns": [{"name": "n", "sequence": {}}]}},
              {"id": "sink", "parallelism": 1, "blackhole_sink": {}}],
            "edges": [{"from": "gen", "to": "sinc"}]}"#,
    );
    let output = cluster.sluice(&["submit", path_str(&bad)]);
    assert_eq!(output.status.code(), Some(1), "a rejected job exits 1; stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("rejected the job file"), "{message}");
    assert!(message.contains("did you mean 'sink'"), "the server's own message is shown: {message}");

    let listed = cluster.sluice(&["list", "--json"]);
    assert_success(&listed, "list --json");
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("--json prints JSON");
    assert_eq!(jobs["jobs"], serde_json::json!([]), "nothing was created");
}

#[test]
fn cancelling_a_waiting_job_makes_wait_exit_1_with_canceled() {
    let cluster = Cluster::start(&[]);
    let job = cluster.job_file("waits.json", &job_needing_slots(1));
    let job_id = cluster.submit(&job);

    let timed_out = cluster.sluice(&["wait", &job_id, "--timeout", "1"]);
    assert_eq!(timed_out.status.code(), Some(124), "wait gives up with 124: {}", stderr(&timed_out));
    assert!(stderr(&timed_out).contains("giving up"), "{}", stderr(&timed_out));

    let cancelled = cluster.sluice(&["cancel", &job_id]);
    assert_success(&cancelled, "cancel");
    let waited = cluster.sluice(&["wait", &job_id, "--timeout", "60"]);
    assert_eq!(waited.status.code(), Some(1), "a CANCELED job is not a success: {}", stderr(&waited));
    assert!(stderr(&waited).contains("CANCELED"), "{}", stderr(&waited));

    let again = cluster.sluice(&["cancel", &job_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already ended"), "the server's 409 message: {}", stderr(&again));
}

#[test]
fn an_unknown_job_is_an_error_naming_it() {
    let cluster = Cluster::start(&[]);
    let output = cluster.sluice(&["status", "no-such-job"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("job no-such-job not found"), "{}", stderr(&output));
}

#[test]
fn without_a_token_the_cli_says_how_to_give_one_and_a_wrong_one_is_refused() {
    let cluster = Cluster::start(&[]);
    let output = cluster.sluice_without_token(&["list"]).output().expect("the sluice binary runs");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("401") && message.contains("SLUICE_TOKEN_FILE"), "{message}");

    let wrong = cluster.sluice_without_token(&["list"]).env("SLUICE_TOKEN", "x".repeat(64)).output().expect("runs");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("not one this JobManager accepts"), "{}", stderr(&wrong));

    let token = std::fs::read_to_string(cluster.dir.path().join("jobmanager").join("admin.token")).expect("the token");
    let right = cluster.sluice_without_token(&["list"]).env("SLUICE_TOKEN", token.trim()).output().expect("runs");
    assert_success(&right, "list with SLUICE_TOKEN");
}

#[test]
fn an_unreachable_jobmanager_is_an_error_with_a_hint() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--jobmanager", &format!("127.0.0.1:{port}"), "list"])
        .output()
        .expect("the sluice binary runs");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains(&format!("cannot reach the JobManager at http://127.0.0.1:{port}/jobs")), "{message}");
    assert!(message.contains("SLUICE_JOBMANAGER"), "{message}");
}

#[test]
fn validate_checks_a_job_file_without_a_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let good = dir.path().join("good.json");
    std::fs::write(&good, job_needing_slots(2)).expect("written");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["validate", path_str(&good)]).output().expect("runs");
    assert_success(&output, "validate");
    assert!(stdout(&output).contains("needs 2 slots"), "{}", stdout(&output));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "x", "vertices": [{"id": "a", "parallelism": 1, "datagenn": {}}]}"#)
        .expect("written");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["validate", path_str(&bad)]).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("did you mean 'datagen'"), "{}", stderr(&output));
}

//! Hostile job files cost the JobManager a bounded amount of work and get a clear 400 (issue 19).
//!
//! Goal: no job file, however built, can pin a JobManager core, overflow its stack, or be accepted only to
//! kill the TaskManagers it lands on. Each input the issue found harmful is answered at submission with a
//! 400 that names the field and the bound, quickly, and the JobManager goes on serving.
//!
//! Method: one real cluster (a JobManager and one TaskManager, as processes). Each hostile body is
//! submitted the way `curl -F job_file=@...` does; the answer's status and `error` text are checked, the
//! time to answer is measured with `Instant` and printed (asserted under a generous bound so a loaded CI
//! machine does not flake, while a quadratic or crashing path, which took minutes or killed the process,
//! still fails), and `/health` is asked after each to prove the JobManager survived. A 6 MiB graph, over
//! tonic's default 4 MiB message size but under the 8 MiB REST limit, must either run to the end or be
//! refused at submission: never accepted and then stuck.
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

/// The most a refusal may take here. The bounded paths answer in milliseconds; this is loose on purpose.
const ANSWER_TIME_MAX: Duration = Duration::from_secs(5);
/// How long the 6 MiB job may take to deploy and finish.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A valid job around `middle`, a transform vertex with id "mid" (datagen → mid → blackhole).
fn job_with(middle: Value, datagen_columns: Value) -> Value {
    json!({
        "name": "hostile",
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "rows": 10, "columns": datagen_columns}},
            middle,
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "mid"}, {"from": "mid", "to": "sink"}]
    })
}

fn word_columns() -> Value {
    json!([{"name": "word", "words": {"min_words": 1, "max_words": 3}}])
}

/// `word || word || ...` with `terms` terms.
fn concatenation(terms: usize) -> String {
    vec!["word"; terms].join(" || ")
}

/// Submits `bytes`, prints and bounds the time to answer, checks the JobManager is still healthy, and
/// returns the status, the `error` text and the whole answer.
fn submit_timed(cluster: &Cluster, what: &str, bytes: &[u8]) -> (u16, String, Value) {
    let started = Instant::now();
    let answer = cluster.submit_file(bytes);
    let took = started.elapsed();
    println!("{what}: {} bytes answered HTTP {} in {took:?}", bytes.len(), answer.status);
    assert!(took < ANSWER_TIME_MAX, "{what}: the answer took {took:?}");
    let health = cluster.get("/health");
    assert_eq!(health["status"], "ok", "{what}: the JobManager is not healthy after it: {health}");
    let error = answer.body["error"].as_str().unwrap_or_default().to_string();
    (answer.status, error, answer.body)
}

/// Asserts a 400 whose error contains every piece of `expected`, and an answer short enough that nothing
/// huge was echoed back.
fn assert_refused(cluster: &Cluster, what: &str, bytes: &[u8], expected: &[&str]) {
    let (status, error, _) = submit_timed(cluster, what, bytes);
    assert_eq!(status, 400, "{what}: {error}");
    for piece in expected {
        assert!(error.contains(piece), "{what}: the error lacks '{piece}':\n{}", shorten(&error));
    }
    assert!(error.len() < 256 * 1024, "{what}: a {} byte error echoes the input", error.len());
}

fn shorten(text: &str) -> String {
    text.chars().take(2_000).collect()
}

fn start() -> Cluster {
    Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() })
}

#[test]
fn a_slow_did_you_mean_body_is_refused_in_well_under_a_second() {
    let cluster = start();
    // The body: a 3 MB vertex id and a 3 MB unknown edge endpoint one letter away from it.
    let id = "v".repeat(3_000_000);
    let job = json!({
        "vertices": [
            {"id": id, "parallelism": 1, "datagen": {"columns": [{"name": "x", "sequence": {}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}],
        "edges": [{"from": format!("{id}w"), "to": "sink"}]
    });
    assert_refused(
        &cluster,
        "3 MB id and endpoint",
        job.to_string().as_bytes(),
        &["vertices[0].id 'vvvv", "is 3000000 bytes long; the most allowed is 256", "edges[0].from"],
    );

    // Within every size bound: 1,000 vertices with 63-character ids and 4,000 edges whose ends are near
    // misses of them, so each unknown endpoint would ask for a suggestion among 1,000 candidates.
    let ids: Vec<String> = (0..1_000).map(|i| format!("{i:063}")).collect();
    let mut vertices: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "parallelism": 1, "filter": {"predicate": "x > 0"}})).collect();
    vertices[0] = json!({"id": ids[0], "parallelism": 1, "datagen": {"columns": [{"name": "x", "sequence": {}}]}});
    let edges: Vec<Value> =
        (0..4_000).map(|i| json!({"from": format!("{}x", ids[i % 1_000]), "to": ids[(i + 1) % 1_000]})).collect();
    let job = json!({"vertices": vertices, "edges": edges});
    assert_refused(&cluster, "4,000 near-miss endpoints", job.to_string().as_bytes(), &["names unknown vertex"]);
}

#[test]
fn huge_expressions_are_refused_by_name_and_the_job_manager_lives_on() {
    let cluster = start();
    for terms in [5_000, 200_000] {
        let select = json!({"id": "mid", "parallelism": 1, "select": {"columns": [
            {"name": "long", "expr": concatenation(terms)}]}});
        assert_refused(
            &cluster,
            &format!("select of {terms} terms"),
            job_with(select, word_columns()).to_string().as_bytes(),
            &["vertex 'mid' (select): column 'long'", "bytes long; the most allowed is 16384"],
        );
    }
    // Under the byte bound but over the token bound: the count of terms is what is named.
    let filter =
        json!({"id": "mid", "parallelism": 1, "filter": {"predicate": format!("{} <> ''", concatenation(600))}});
    assert_refused(
        &cluster,
        "filter of 600 terms",
        job_with(filter, word_columns()).to_string().as_bytes(),
        &["vertex 'mid' (filter): predicate", "terms", "the most allowed is 400"],
    );
    // A job at the bound is accepted and runs: the bound does not refuse what it promises to allow.
    let select = json!({"id": "mid", "parallelism": 1, "select": {"columns": [
        {"name": "long", "expr": concatenation(200)}]}});
    let answer = cluster.submit_file(job_with(select, word_columns()).to_string().as_bytes());
    assert_eq!(answer.status, 200, "an expression of 200 terms (399 tokens) must be accepted: {}", answer.body);
}

#[test]
fn window_and_datagen_bombs_are_refused_at_submission() {
    let cluster = start();
    let columns = json!([{"name": "word", "words": {"max_words": 3}}, {"name": "ts", "event_time": {"step_ms": 1}}]);
    let window = json!({"id": "mid", "parallelism": 1, "window": {"keys": ["word"],
        "sliding": {"size_ms": 1_000_000_000_000u64, "slide_ms": 1},
        "aggregates": [{"function": "count", "name": "n"}]}});
    let mut job = job_with(window, columns);
    job["vertices"][0]["event_time"] = json!({"column": "ts", "monotonous": {}});
    job["edges"][0] = json!({"from": "gen", "to": "mid", "partitioning": "HASH", "key": ["word"]});
    assert_refused(
        &cluster,
        "sliding window bomb",
        job.to_string().as_bytes(),
        &["vertex 'mid' (window)", "1000000000000 windows; the most allowed is 1000"],
    );

    let bomb = json!([{"name": "word", "words": {"min_words": 1, "max_words": 4_000_000_000u32}}]);
    let filter = json!({"id": "mid", "parallelism": 1, "filter": {"predicate": "word <> ''"}});
    assert_refused(
        &cluster,
        "datagen words bomb",
        job_with(filter, bomb).to_string().as_bytes(),
        &["vertex 'gen' (datagen): column 'word': words max_words is 4000000000; the most allowed is 1000"],
    );
    let jobs = cluster.get("/jobs");
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "a refused job left something: {jobs}");
}

#[test]
fn a_six_mib_graph_deploys_or_is_refused_at_submission() {
    let mut cluster = start();
    // A valid job whose file is 6 MiB: a datagen vocabulary of 600,000 ten-letter words.
    let vocabulary: Vec<String> = (0..600_000).map(|i| format!("w{i:09}")).collect();
    let columns = json!([{"name": "word", "words": {"vocabulary": vocabulary, "min_words": 1, "max_words": 3}}]);
    let filter = json!({"id": "mid", "parallelism": 1, "filter": {"predicate": "word <> ''"}});
    let bytes = job_with(filter, columns).to_string().into_bytes();
    assert!(bytes.len() > 6 * 1024 * 1024 && bytes.len() < 8 * 1024 * 1024, "{} bytes", bytes.len());
    let (status, error, answer) = submit_timed(&cluster, "6 MiB graph", &bytes);
    match status {
        200 => {
            let id = answer["job_id"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "an accepted job has an id: {answer}");
            cluster.wait_for_status(&sluice_tests::JobId(id), JobStatus::Finished, RUN_TIMEOUT);
        }
        400 | 413 => assert!(error.contains("bytes"), "a refusal must say which size is too large: {error}"),
        other => panic!("HTTP {other}: {error}"),
    }
}

/// Submissions beyond `MAX_RUNNING_JOBS` unfinished jobs are answered 429, store nothing, and are taken again
/// once a job has ended.
#[test]
fn submissions_beyond_the_cap_on_unfinished_jobs_are_refused_until_one_ends() {
    let mut cluster =
        Cluster::start(ClusterSpec { task_managers: 1, slots: 2, ..ClusterSpec::default() }.env("MAX_RUNNING_JOBS", 1));
    let endless = json!({
        "name": "endless",
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "rows_per_second": 100.0,
                "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink"}]
    });
    let first = cluster.submit_json(&endless);
    let answer = cluster.request(reqwest::Method::POST, "/jobs/submit", Some(&endless));
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(answer.body["error"].as_str().is_some_and(|e| e.contains("MAX_RUNNING_JOBS")), "{}", answer.body);
    assert_eq!(cluster.get("/jobs")["jobs"].as_array().map(Vec::len), Some(1), "the refused job was not stored");
    cluster.cancel(&first);
    cluster.wait_for_status(&first, JobStatus::Canceled, RUN_TIMEOUT);
    // The actor leaves the registry a moment after the status is recorded: poll, bounded.
    let second = poll_until("a submission to be taken again", RUN_TIMEOUT, || {
        let answer = cluster.request(reqwest::Method::POST, "/jobs/submit", Some(&endless));
        match answer.status {
            200 => Ok(Progress::Ready(answer.body["job_id"].as_str().unwrap_or_default().to_string())),
            429 => Ok(Progress::Pending(answer.body.to_string())),
            other => anyhow::bail!("a submission after the first job ended was refused: {other} {}", answer.body),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!second.is_empty());
}

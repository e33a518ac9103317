//! Jobs are confined (issue 18): a job file or request that reaches outside what the operator allows is
//! refused, and nothing is created there; the TaskManager enforces its own settings even when the
//! JobManager's are wider; secrets in job files never come back from the REST API.
//!
//! Goal: each hostile job file of the list — reading `/etc/passwd`, writing `../../x`, a symlink in
//! an allowed directory pointing out of it, a savepoint into `/`, `plugin.library.paths` — gets a 400 that
//! names the vertex and the field (or the request's field), the target does not exist afterwards, and the
//! refusal is counted by reason.
//!
//! Method: a cluster whose processes allow reading `inputs/` and writing `outputs/` of their working
//! directory (the cluster's own), and no extra savepoint location. Each case is submitted as a user would
//! (`curl -F job_file=@...`), its answer and the file system are checked, then `GET /jobs` must still be
//! empty. For the TaskManager's own check, the allowed directory is a symlink that is turned to another
//! directory between the JobManager's start and the TaskManager's restart: each process resolved its roots
//! at its start, so the JobManager allows what the TaskManager does not.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster of one TaskManager allowing `inputs/` to be read and `outputs/` to be written, nothing else.
fn confined_cluster() -> Cluster {
    let spec = ClusterSpec { task_managers: 1, ..ClusterSpec::default() }
        .env("ALLOWED_INPUT_DIRS", "inputs")
        .env("ALLOWED_OUTPUT_DIRS", "outputs")
        .env("ALLOWED_SAVEPOINT_PREFIXES", "");
    Cluster::start(spec)
}

fn lines_source(path: &str) -> Value {
    json!({"id": "src", "parallelism": 1,
           "file_source": {"path": path, "format": "LINES", "schema": [{"name": "line", "type": "STRING"}]}})
}

fn words(rows_per_second: Option<f64>) -> Value {
    let mut datagen = json!({"seed": 1, "columns": [{"name": "line", "words": {"min_words": 1, "max_words": 2}}]});
    match rows_per_second {
        Some(rate) => datagen["rows_per_second"] = json!(rate),
        None => datagen["rows"] = json!(10),
    }
    json!({"id": "src", "parallelism": 1, "datagen": datagen})
}

fn file_sink(path: &str) -> Value {
    json!({"id": "sink", "parallelism": 1, "file_sink": {"path": path}})
}

fn job(source: Value, sink: Value) -> Value {
    json!({"name": "confined", "vertices": [source, sink], "edges": [{"from": "src", "to": "sink"}]})
}

/// Submits `job` as a job file and returns the 400's message, failing unless it is a 400.
fn refused(cluster: &Cluster, job: &Value) -> String {
    let answer = cluster.submit_file(job.to_string().as_bytes());
    assert_eq!(answer.status, 400, "expected a refusal of {job}: {}", answer.body);
    answer.body["error"].as_str().unwrap_or_default().to_string()
}

fn assert_mentions(message: &str, pieces: &[&str]) {
    for piece in pieces {
        assert!(message.contains(piece), "'{piece}' is missing from: {message}");
    }
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("cannot link {} → {}: {e}", link.display(), target.display()));
}

/// The value of the series `name{reason="..."}` in Prometheus text, 0 when absent.
fn refused_count(metrics: &str, reason: &str) -> f64 {
    let series = format!("sluice_jobs_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn job_files_reaching_outside_the_allowed_directories_are_refused_and_create_nothing() {
    let cluster = confined_cluster();
    let dir = cluster.dir().to_path_buf();
    mkdir(&dir.join("inputs"));
    mkdir(&dir.join("outputs"));
    mkdir(&dir.join("elsewhere"));
    write(&dir.join("elsewhere").join("secret.txt"), "not for jobs\n");
    symlink(&dir.join("elsewhere"), &dir.join("inputs").join("link"));
    symlink(&dir.join("elsewhere"), &dir.join("outputs").join("link"));
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sibling = format!("../{dir_name}-escaped");

    let message = refused(
        &cluster,
        &job(lines_source("/etc/passwd"), json!({"id": "sink", "parallelism": 1, "blackhole_sink": {}})),
    );
    assert_mentions(&message, &["vertex 'src' (file_source): path '/etc/passwd'", "outside the allowed input"]);

    let message = refused(&cluster, &job(words(None), file_sink(&sibling)));
    assert_mentions(&message, &["vertex 'sink' (file_sink): path", "-escaped", "outside the allowed output"]);
    assert!(!dir.join(&sibling).exists(), "{sibling} was created");

    let message = refused(&cluster, &job(words(None), file_sink("outputs/../escaped")));
    assert_mentions(&message, &["vertex 'sink' (file_sink): path 'outputs/../escaped'"]);
    assert!(!dir.join("escaped").exists(), "the sink escaped outputs/ through '..'");

    let message = refused(&cluster, &job(lines_source("inputs/link/secret.txt"), file_sink("outputs/link/stolen")));
    assert_mentions(&message, &["vertex 'src' (file_source): path 'inputs/link/secret.txt' (= ", "elsewhere"]);
    assert_mentions(&message, &["vertex 'sink' (file_sink): path 'outputs/link/stolen' (= "]);
    assert!(!dir.join("elsewhere").join("stolen").exists(), "the sink followed the symlink out of outputs/");

    let kafka = json!({"id": "src", "parallelism": 1, "kafka_source": {
        "bootstrap_servers": "127.0.0.1:9", "topics": ["in"], "schema": [{"name": "line", "type": "STRING"}],
        "format": "LINES", "properties": {"plugin.library.paths": "inputs/evil.so", "ssl.key.location": "/root/.ssh/id_rsa"}}});
    let message = refused(&cluster, &job(kafka, file_sink("outputs/k")));
    assert_mentions(&message, &["vertex 'src' (kafka_source): properties: 'plugin.library.paths' is refused"]);
    assert_mentions(&message, &["'ssl.key.location' '/root/.ssh/id_rsa' is outside the allowed input"]);

    let answer = cluster.request(
        reqwest::Method::POST,
        "/jobs/submit?savepoint_path=/etc",
        Some(&job(words(None), file_sink("outputs/ok"))),
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_mentions(answer.body["error"].as_str().unwrap_or_default(), &["savepoint_path '/etc' is outside"]);

    assert_eq!(cluster.get("/jobs")["jobs"].as_array().map_or(usize::MAX, Vec::len), 0, "a refused job was stored");
    assert!(!dir.join("outputs").join("k").exists() && !dir.join("outputs").join("ok").exists());
    let metrics = cluster.job_manager_metrics();
    assert!(refused_count(&metrics, "path_outside_roots") >= 4.0, "{metrics}");
    assert!(refused_count(&metrics, "kafka_property") >= 1.0, "{metrics}");
    assert!(refused_count(&metrics, "savepoint_target") >= 1.0, "{metrics}");
}

#[test]
fn the_shipped_layout_still_runs_inside_the_allowed_directories() {
    let mut cluster = confined_cluster();
    let dir = cluster.dir().to_path_buf();
    mkdir(&dir.join("inputs"));
    write(&dir.join("inputs").join("lines.txt"), "a b\nc\n");
    let id = cluster.submit_json(&job(lines_source("inputs/lines.txt"), file_sink("outputs/not/there/yet")));
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
    let out = dir.join("outputs").join("not").join("there").join("yet").join("part-0.jsonl");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn a_savepoint_into_the_root_directory_is_refused_and_nothing_is_written_there() {
    let mut cluster = confined_cluster();
    let id =
        cluster.submit_json(&job(words(Some(50.0)), json!({"id": "sink", "parallelism": 1, "blackhole_sink": {}})));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    let before = root_entries();
    for route in ["savepoint", "stop"] {
        let answer = cluster.request(
            reqwest::Method::POST,
            &format!("/jobs/{id}/{route}"),
            Some(&json!({"target_directory": "/"})),
        );
        assert_eq!(answer.status, 400, "{route}: {}", answer.body);
        assert_mentions(answer.body["error"].as_str().unwrap_or_default(), &["target_directory '/' is outside"]);
    }
    assert_eq!(root_entries(), before, "something was created in /");
    let status = cluster.get(&format!("/jobs/{id}/status"));
    assert_eq!(status["status"], "RUNNING", "a refused stop must not stop the job: {status}");
    let metrics = cluster.job_manager_metrics();
    assert!(refused_count(&metrics, "savepoint_target") >= 2.0, "{metrics}");
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
}

fn root_entries() -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir("/")
        .unwrap_or_else(|e| panic!("cannot list /: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
}

#[test]
fn kafka_passwords_are_shown_as_stars_and_never_logged() {
    let cluster = confined_cluster();
    let password = "hunter2-do-not-show";
    let source = json!({"id": "src", "parallelism": 1, "kafka_source": {
        "bootstrap_servers": "127.0.0.1:9", "topics": ["in"], "schema": [{"name": "line", "type": "STRING"}],
        "format": "LINES", "properties": {"sasl.username": "alice", "sasl.password": password, "fetch.wait.max.ms": "100"}}});
    let id = cluster.submit_json(&job(source, json!({"id": "sink", "parallelism": 1, "blackhole_sink": {}})));
    let details = cluster.job(&id);
    let properties = &details["graph"]["vertices"][0]["kafka_source"]["properties"];
    assert_eq!(properties["sasl.password"], "***", "{details}");
    assert_eq!(properties["sasl.username"], "alice", "only secrets are hidden: {details}");
    // Deployed (the TaskManagers have the password), then ended: nothing the job did may show it.
    let what = format!("job {id} to be deployed");
    poll_until(&what, TIMEOUT, || {
        let status = cluster.get(&format!("/jobs/{id}/status"));
        let text = status["status"].as_str().unwrap_or_default();
        let deployed = text.parse::<JobStatus>().is_ok_and(|s| s == JobStatus::Running || s.is_terminal());
        Ok(if deployed { Progress::Ready(()) } else { Progress::Pending(status.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    if !cluster.job(&id)["status"]
        .as_str()
        .and_then(|s| s.parse::<JobStatus>().ok())
        .is_some_and(JobStatus::is_terminal)
    {
        cluster.cancel(&id);
    }
    for path in [format!("/jobs/{id}"), format!("/jobs/{id}/metrics"), "/jobs".to_string()] {
        let body = cluster.get(&path).to_string();
        assert!(!body.contains(password), "GET {path} shows the password: {body}");
    }
    for log in ["jobmanager.log", "tm-0.log"] {
        let path = cluster.dir().join(log);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.contains(password), "{log} shows the password");
    }
}

#[test]
fn a_task_manager_refuses_what_its_own_settings_forbid_even_when_the_job_manager_accepted_it() {
    let roots = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = std::fs::canonicalize(roots.path()).unwrap_or_else(|e| panic!("{e}"));
    let (wide, narrow, allowed) = (base.join("wide"), base.join("narrow"), base.join("allowed"));
    mkdir(&wide);
    mkdir(&narrow);
    write(&wide.join("in.txt"), "a\n");
    symlink(&wide, &allowed);
    let allowed_text = allowed.display().to_string();
    let spec = ClusterSpec { task_managers: 1, ..ClusterSpec::default() }
        .env("ALLOWED_INPUT_DIRS", &allowed_text)
        .env("ALLOWED_OUTPUT_DIRS", &allowed_text);
    let mut cluster = Cluster::start(spec);
    // The JobManager resolved `allowed` to `wide` at its start; the restarted TaskManager resolves it to
    // `narrow`.
    let turned = base.join("allowed.new");
    symlink(&narrow, &turned);
    std::fs::rename(&turned, &allowed).unwrap_or_else(|e| panic!("cannot turn the symlink: {e}"));
    cluster.restart_task_manager(0);

    let (input, output) = (wide.join("in.txt"), wide.join("out"));
    let id =
        cluster.submit_json(&job(lines_source(&input.display().to_string()), file_sink(&output.display().to_string())));
    let what = format!("job {id} to fail");
    let cause = poll_until(&what, TIMEOUT, || {
        let details = cluster.job(&id);
        Ok(match details["status"].as_str() {
            Some("FAILED") => Progress::Ready(details["failure_cause"].as_str().unwrap_or_default().to_string()),
            Some(other) if other.parse::<JobStatus>().is_ok_and(JobStatus::is_terminal) => {
                panic!("the job ended {other} instead of failing: {details}")
            }
            _ => Progress::Pending(details.to_string()),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_mentions(&cause, &["this TaskManager does not allow", "file_source", "file_sink", "narrow"]);
    assert!(!output.exists(), "the sink created {} although the TaskManager refused it", output.display());
}

#[test]
fn the_cluster_s_own_secrets_and_metadata_are_out_of_reach_even_inside_an_allowed_root() {
    // The test clusters allow their whole directory ("."), which holds the JobManager's data directory, as the
    // default roots (examples, data) hold the default data directories.
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    for path in ["jobmanager/cluster.secret", "jobmanager/admin.token", "jobmanager/sluice.db", "jobmanager", "."] {
        let message = refused(&cluster, &job(lines_source(path), file_sink("out")));
        assert_mentions(&message, &["vertex 'src'", "keeps its own data"]);
    }
    let message = refused(&cluster, &job(words(None), file_sink("jobmanager/out")));
    assert_mentions(&message, &["vertex 'sink'", "keeps its own data"]);
    assert!(!cluster.dir().join("jobmanager").join("out").exists(), "nothing was written there");
}

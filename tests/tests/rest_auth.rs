//! The REST gate: tokens, scopes, cross-site requests, rotation, and the refusal to serve open on a network.
//!
//! Goal: every route but `/health` and the page itself answers 401 without a token; a `read` token reads but
//! cannot change anything (403); a request another site's page could send (a `text/plain` body, a foreign
//! `Origin`) is refused and creates nothing; a token added to the token file works at once and a removed one
//! stops working; refusals are counted by reason; a JobManager asked to serve REST on a non-loopback address
//! without authentication refuses to start unless told `--insecure`.
//!
//! Method: real JobManager processes on loopback (the harness reads the admin token the JobManager
//! generated); a read-token file written before start; raw HTTP requests with chosen headers.
use std::path::Path;
use std::time::Duration;

use reqwest::header;
use reqwest::Method;
use serde_json::{json, Value};
use sluice_tests::binaries;
use sluice_tests::process::{Launch, Process};
use sluice_tests::prometheus::sum;
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A token of `read` scope, long enough to be accepted.
const READ_TOKEN: &str = "read-token-for-the-rest-auth-test-0123456789";

fn job() -> Value {
    json!({
        "name": "auth",
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "rows_per_second": 50.0, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink"}]
    })
}

/// Every route of the REST API, as (method, path) with `{job}` for a job id.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/jobs"),
    ("POST", "/jobs/submit"),
    ("GET", "/jobs/{job}"),
    ("GET", "/jobs/{job}/status"),
    ("POST", "/jobs/{job}/cancel"),
    ("GET", "/jobs/{job}/metrics"),
    ("GET", "/jobs/{job}/checkpoints"),
    ("POST", "/jobs/{job}/checkpoints"),
    ("POST", "/jobs/{job}/savepoint"),
    ("GET", "/jobs/{job}/savepoints/some-trigger"),
    ("POST", "/jobs/{job}/stop"),
    ("GET", "/taskmanagers"),
    ("GET", "/cluster/metrics"),
    ("GET", "/no/such/route"),
];

fn send(cluster: &Cluster, method: &str, path: &str, token: Option<&str>) -> u16 {
    let method: Method = method.parse().unwrap_or_else(|e| panic!("{method}: {e}"));
    let mut request = cluster.http().request(method.clone(), format!("{}{path}", cluster.rest_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    cluster.send_raw(request).status
}

fn refused(cluster: &Cluster, reason: &str) -> f64 {
    let text = cluster.job_manager_metrics();
    let labels = [("transport", "rest"), ("reason", reason)];
    sum(&text, "sluice_requests_refused_total", &labels).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn every_route_needs_a_token_and_a_read_token_cannot_change_anything() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let read_tokens = dir.path().join("read.tokens");
    std::fs::write(&read_tokens, format!("# read-only dashboards\n{READ_TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = Cluster::start(
        ClusterSpec { task_managers: 1, ..ClusterSpec::default() }.env("READ_TOKEN_FILE", read_tokens.display()),
    );
    let job_id = cluster.submit_json(&job()).0;
    cluster.wait_for_status(&sluice_tests::JobId(job_id.clone()), sluice_tests::JobStatus::Running, TIMEOUT);

    assert_eq!(send(&cluster, "GET", "/health", None), 200, "the health check stays open");
    assert_eq!(send(&cluster, "GET", "/", None), 200, "the page itself holds no data; it asks for a token");
    for (method, path) in ROUTES {
        let path = path.replace("{job}", &job_id);
        assert_eq!(send(&cluster, method, &path, None), 401, "{method} {path} without a token");
        assert_eq!(send(&cluster, method, &path, Some(&"f".repeat(64))), 401, "{method} {path}, unknown token");
        if *method == "POST" {
            assert_eq!(send(&cluster, method, &path, Some(READ_TOKEN)), 403, "{method} {path} with a read token");
        }
    }
    let admin = cluster.admin_token().unwrap_or_else(|| panic!("the JobManager generated no admin token")).to_string();
    for path in ["/jobs", "/metrics", "/taskmanagers", &format!("/jobs/{job_id}")] {
        assert_eq!(send(&cluster, "GET", path, Some(READ_TOKEN)), 200, "GET {path} with a read token");
        assert_eq!(send(&cluster, "GET", path, Some(&admin)), 200, "GET {path} with the admin token");
    }
    let status = cluster.get(&format!("/jobs/{job_id}/status"));
    assert_eq!(status["status"], "RUNNING", "the read token's POSTs changed nothing");

    assert!(refused(&cluster, "no_token") >= ROUTES.len() as f64);
    assert!(refused(&cluster, "unknown_token") >= ROUTES.len() as f64);
    assert!(refused(&cluster, "scope") >= 1.0);

    // The 401 says how to get in.
    let answer = cluster.send_raw(cluster.http().get(format!("{}/jobs", cluster.rest_url())));
    assert!(answer.body["error"].as_str().is_some_and(|e| e.contains("Authorization: Bearer")), "{}", answer.body);
}

#[test]
fn a_request_another_site_could_send_is_refused_and_creates_nothing() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let admin = cluster.admin_token().unwrap_or_else(|| panic!("no admin token")).to_string();
    let url = format!("{}/jobs/submit", cluster.rest_url());
    let body = job().to_string();

    // What a form or a "simple" fetch can send: a text/plain body.
    let plain = cluster.http().post(&url).bearer_auth(&admin).header(header::CONTENT_TYPE, "text/plain");
    let answer = cluster.send_raw(plain.body(body.clone()));
    assert_eq!(answer.status, 415, "{}", answer.body);
    // A JSON body from a page of another origin.
    let foreign = cluster.http().post(&url).bearer_auth(&admin).header(header::ORIGIN, "https://evil.example");
    let answer = cluster.send_raw(foreign.header(header::CONTENT_TYPE, "application/json").body(body.clone()));
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(cluster.get("/jobs")["jobs"].as_array().map(Vec::len), Some(0), "nothing was submitted");
    assert_eq!(refused(&cluster, "content_type"), 1.0);
    assert_eq!(refused(&cluster, "cross_origin"), 1.0);

    // The same request from its own origin is accepted.
    let own = cluster.http().post(&url).bearer_auth(&admin).header(header::ORIGIN, cluster.rest_url());
    let answer = cluster.send_raw(own.header(header::CONTENT_TYPE, "application/json").body(body));
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn a_token_added_to_the_file_works_at_once_and_a_removed_one_stops() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 0, ..ClusterSpec::default() });
    let old = cluster.admin_token().unwrap_or_else(|| panic!("no admin token")).to_string();
    let new = "a-new-admin-token-after-rotation-0123456789abcdef";
    let path = cluster.token_path();
    std::fs::write(&path, format!("{old}\n{new}\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&cluster, "GET", "/jobs", Some(new)), 200, "the new token works without a restart");
    assert_eq!(send(&cluster, "GET", "/jobs", Some(&old)), 200, "the old one too, until it is removed");
    std::fs::write(&path, format!("{new}\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&cluster, "GET", "/jobs", Some(&old)), 401, "a removed token is refused");
    assert_eq!(send(&cluster, "POST", "/jobs/submit", Some(new)), 400, "the new one is admin (an empty job is a 400)");
}

/// Starts a JobManager alone with `args` (and `env`) in `dir` and returns its process.
fn job_manager(dir: &Path, args: &[&str], env: &[(String, String)]) -> Process {
    let program = binaries::binary(binaries::JOB_MANAGER).unwrap_or_else(|e| panic!("{e:#}"));
    let data_dir = dir.join("jobmanager").display().to_string();
    let mut all = vec!["--rpc-addr", "127.0.0.1:0", "--data-dir", &data_dir];
    all.extend_from_slice(args);
    let launch = Launch {
        name: "jobmanager",
        program: &program,
        args: all.iter().map(ToString::to_string).collect(),
        env,
        cwd: dir,
        log_dir: dir,
    };
    Process::spawn(launch).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn serving_rest_without_authentication_beyond_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let open = [("REST_AUTH".to_string(), "none".to_string()), ("RUST_LOG".into(), "info".into())];
    let mut refused = job_manager(dir.path(), &["--rest-addr", "0.0.0.0:0"], &open);
    let status = poll_until("the JobManager to refuse to start", TIMEOUT, || {
        Ok(refused.exit_status()?.map_or(Progress::Pending("still running".into()), Progress::Ready))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!status.success());
    let log = std::fs::read_to_string(refused.log_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(log.contains("refusing to serve REST on 0.0.0.0") && log.contains("--insecure"), "{log}");

    let insecure_dir = dir.path().join("insecure");
    std::fs::create_dir_all(&insecure_dir).unwrap_or_else(|e| panic!("{e}"));
    let mut allowed = job_manager(&insecure_dir, &["--rest-addr", "0.0.0.0:0", "--insecure"], &open);
    let address_file = insecure_dir.join("jobmanager").join("jobmanager.addr");
    poll_until("the JobManager to start with --insecure", TIMEOUT, || {
        allowed.ensure_running()?;
        Ok(if address_file.exists() { Progress::Ready(()) } else { Progress::Pending("no address file".into()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!insecure_dir.join("jobmanager").join("admin.token").exists(), "no token without authentication");
}

#[test]
fn with_authentication_off_on_loopback_requests_need_no_token() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 0, ..ClusterSpec::default() }.env("REST_AUTH", "none"));
    assert!(cluster.admin_token().is_none());
    assert_eq!(send(&cluster, "GET", "/jobs", None), 200);
    // Cross-site protection holds without tokens too.
    let url = format!("{}/jobs/submit", cluster.rest_url());
    let plain = cluster.http().post(&url).header(header::CONTENT_TYPE, "text/plain").body(job().to_string());
    assert_eq!(cluster.send_raw(plain).status, 415);
    // DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 sends its own name as Host.
    let rebound = cluster.http().get(format!("{}/jobs", cluster.rest_url())).header(header::HOST, "evil.example:8081");
    assert_eq!(cluster.send_raw(rebound).status, 403);
}

#[test]
fn tokens_given_in_the_environment_work_and_no_token_file_is_generated() {
    let (admin, read) = ("an-admin-token-from-a-kubernetes-secret-0123", "a-read-token-from-a-kubernetes-secret-0123");
    let cluster = Cluster::start(
        ClusterSpec { task_managers: 0, ..ClusterSpec::default() }.env("ADMIN_TOKENS", admin).env("READ_TOKENS", read),
    );
    assert!(!cluster.token_path().exists(), "tokens from the environment: nothing generated");
    assert_eq!(send(&cluster, "GET", "/jobs", None), 401);
    assert_eq!(send(&cluster, "GET", "/jobs", Some(read)), 200);
    assert_eq!(send(&cluster, "POST", "/jobs/submit", Some(read)), 403);
    assert_eq!(send(&cluster, "POST", "/jobs/submit", Some(admin)), 400, "admin: the empty job itself is refused");
}

//! A local Sluice cluster for one test: a JobManager and N TaskManagers as real processes, in a temporary
//! directory of their own, with helpers for the REST API, the CLI and the TaskManagers' metrics.
//!
//! ```text
//!   <tmp>/sluice-test-XXXX/
//!     jobmanager/            --data-dir of the JobManager (SQLite file, jobmanager.addr)
//!     jobmanager-1/ ...      --data-dir of each further JobManager (`ClusterSpec::job_managers`, on PostgreSQL)
//!     tm-0/ tm-1/ ...        --data-dir of each TaskManager (taskmanager.addr)
//!     jobmanager.log tm-0.log ...   every process's stdout and stderr
//! ```
//!
//! Every process runs with this directory as its working directory, so relative paths in job files land
//! inside it too. Dropping the [`Cluster`] kills every process; if the test is failing (panicking), it first
//! prints the tail of every log and keeps the directory.
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use sluice_common::ids::JobId;
use sluice_common::lifecycle::{CheckpointStatus, JobStatus};

use crate::binaries;
use crate::process::{fresh_file, Launch, Process};
use crate::wait::{poll_until, Progress};

/// Lines of each log printed when a test fails: enough for the error and what led to it.
pub const LOG_TAIL_LINES: usize = 80;

/// How long processes may take to bind, write their address files and register. Debug builds start in
/// well under a second; the margin covers a 2-core machine busy compiling.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a single HTTP request to the JobManager or a TaskManager may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one CLI invocation may run before it is killed and the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings every cluster starts with, before [`ClusterSpec::env`] (which wins). Heartbeats carry the
/// task metrics the REST API shows, so a short interval lets tests see fresh numbers sooner; the timeout
/// stays generous so that a CPU-starved TaskManager on a busy machine is not declared lost.
/// `NO_COLOR` keeps terminal colour codes out of the log files. Jobs may read, write and keep savepoints
/// anywhere in the cluster's own directory (every process's working directory), where tests put their files.
pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("HEARTBEAT_INTERVAL", "200"),
    ("HEARTBEAT_TIMEOUT", "10000"),
    ("RUST_LOG", "info"),
    ("NO_COLOR", "1"),
    ("ALLOWED_INPUT_DIRS", "."),
    ("ALLOWED_OUTPUT_DIRS", "."),
    ("ALLOWED_SAVEPOINT_PREFIXES", "."),
];

/// Whether `text` (a status as REST shows it) names a status after which a job never changes again.
pub fn is_terminal_status(text: &str) -> bool {
    text.parse::<JobStatus>().is_ok_and(JobStatus::is_terminal)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// How many TaskManagers.
    pub task_managers: usize,
    /// Slots of each TaskManager.
    pub slots: u32,
    /// Environment variables for every process (e.g. `("BUFFER_SIZE", "4096")`), over [`DEFAULT_ENV`].
    pub env: Vec<(String, String)>,
    /// The TaskManager binary's name (another one than `sluice-taskmanager` when it registers native
    /// operators).
    pub task_manager_binary: String,
    /// TLS on every transport, with a CA and certificate made by `scripts/gen-certs.sh` in the cluster's
    /// directory (`certs/`).
    pub tls: bool,
    /// How many JobManagers (more than one needs a shared PostgreSQL `DATABASE_URL` in `env`): the first is
    /// started first and leads; the others share its cluster secret and admin token, and TaskManagers get all
    /// their RPC addresses.
    pub job_managers: usize,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            task_managers: 2,
            slots: 2,
            env: Vec::new(),
            task_manager_binary: binaries::TASK_MANAGER.into(),
            tls: false,
            job_managers: 1,
        }
    }
}

impl ClusterSpec {
    /// Adds environment variables for every process.
    pub fn envs(mut self, variables: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(variables);
        self
    }

    /// Adds an environment variable for every process.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs `count` JobManagers (on the PostgreSQL database the spec's `DATABASE_URL` names).
    pub fn job_managers(mut self, count: usize) -> Self {
        self.job_managers = count;
        self
    }

    /// Runs the TaskManagers from the binary `name` (looked up like every binary under test).
    pub fn task_manager_binary(mut self, name: &str) -> Self {
        self.task_manager_binary = name.to_string();
        self
    }
}

/// One JobManager of the cluster.
struct JobManager {
    process: Process,
    /// Its data directory's name in the cluster's directory (`jobmanager`, `jobmanager-1`, ...), also its
    /// process name.
    name: String,
    rest_address: String,
    rpc_address: String,
}

/// One TaskManager of the cluster.
struct TaskManager {
    id: String,
    dir: PathBuf,
    process: Process,
    /// The addresses from its address file (of its current incarnation).
    rpc_address: String,
    metrics_address: String,
}

/// An HTTP answer: the status code and the body (JSON, or the raw text as a JSON string if it is not JSON).
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// What a CLI invocation printed and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// A running JobManager with its TaskManagers. See the module doc.
pub struct Cluster {
    spec: ClusterSpec,
    dir: tempfile::TempDir,
    job_managers: Vec<JobManager>,
    /// The JobManager REST requests go to (see [`Cluster::use_job_manager`]).
    current: usize,
    task_managers: Vec<TaskManager>,
    http: reqwest::blocking::Client,
    /// The admin token the JobManager generated (none when REST authentication is off).
    token: Option<String>,
    /// Counts CLI invocations, to give each its own output files.
    cli_calls: usize,
}

impl Cluster {
    /// Starts a JobManager and `spec.task_managers` TaskManagers, and returns once the (first) JobManager
    /// leads and every TaskManager is registered and ACTIVE. Panics (printing the logs) if that does not happen within [`STARTUP_TIMEOUT`].
    pub fn start(mut spec: ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the test directory: {e}"));
        let mut http = reqwest::blocking::Client::builder().timeout(HTTP_TIMEOUT);
        if spec.tls {
            let certs = make_certificates(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
            let pem = std::fs::read(certs.join("ca.pem")).unwrap_or_else(|e| panic!("the CA: {e}"));
            let ca = reqwest::Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("the CA: {e}"));
            http = http.add_root_certificate(ca);
            for (key, file) in [("TLS_CERT_FILE", "node.pem"), ("TLS_KEY_FILE", "node.key"), ("TLS_CA_FILE", "ca.pem")]
            {
                spec.env.push((key.to_string(), certs.join(file).display().to_string()));
            }
            spec.env.push(("TLS".to_string(), "on".to_string()));
        }
        let http = http.build().unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"));
        if spec.job_managers > 1 {
            // JobManagers that take over each other's jobs share their checkpoint and savepoint storage (the
            // defaults are under each one's own data directory).
            for (key, sub) in [("CHECKPOINT_DIR", "checkpoints"), ("SAVEPOINT_DIR", "savepoints")] {
                if !spec.env.iter().any(|(k, _)| k == key) {
                    spec.env.push((key.to_string(), dir.path().join(sub).display().to_string()));
                }
            }
        }
        let ports = ("127.0.0.1:0", "127.0.0.1:0");
        let process = spawn_job_manager(dir.path(), &spec, "jobmanager", ports).unwrap_or_else(|e| panic!("{e:#}"));
        let first =
            JobManager { process, name: "jobmanager".into(), rest_address: String::new(), rpc_address: String::new() };
        let mut cluster = Cluster {
            spec,
            dir,
            job_managers: vec![first],
            current: 0,
            task_managers: Vec::new(),
            http,
            token: None,
            cli_calls: 0,
        };
        // From here on a panic drops `cluster`, which prints the logs.
        cluster.await_job_manager_address().unwrap_or_else(|e| panic!("{e:#}"));
        // A JobManager answers REST once it listens, but refuses submissions (503, "a standby") until it holds
        // the leader lease, which its election takes a moment later: a test's first request must not race it
        // (seen on a loaded machine). The standbys start after it, so it is the leader.
        cluster.wait_for_leader(&[], STARTUP_TIMEOUT);
        for index in 1..cluster.spec.job_managers {
            let name = format!("jobmanager-{index}");
            let process =
                spawn_job_manager(cluster.dir(), &cluster.spec, &name, ports).unwrap_or_else(|e| panic!("{e:#}"));
            let standby = JobManager { process, name, rest_address: String::new(), rpc_address: String::new() };
            cluster.job_managers.push(standby);
            cluster.await_job_manager_address_of(index).unwrap_or_else(|e| panic!("{e:#}"));
        }
        for _ in 0..cluster.spec.task_managers {
            cluster.add_task_manager();
        }
        cluster.wait_for_active_task_managers(cluster.spec.task_managers, STARTUP_TIMEOUT);
        cluster
    }

    /// The cluster's directory (every process's working directory; logs and data dirs live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<port>` of the REST API (`https://` with TLS).
    pub fn rest_url(&self) -> String {
        self.rest_url_of(self.current)
    }

    /// `http(s)://127.0.0.1:<port>` of JobManager `index`'s REST API.
    pub fn rest_url_of(&self, index: usize) -> String {
        let scheme = if self.spec.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.job_managers[index].rest_address)
    }

    /// The JobManager's gRPC address (`127.0.0.1:<port>`).
    pub fn rpc_address(&self) -> &str {
        &self.job_managers[self.current].rpc_address
    }

    /// Kills the JobManager (SIGKILL) and starts a new one with the same data directory and environment on
    /// the same ports (so the TaskManagers find it again), and returns once it has written its address file.
    pub fn restart_job_manager(&mut self) {
        self.kill_job_manager_at(self.current);
        self.start_job_manager_at(self.current);
    }

    /// The JobManager's process id.
    pub fn job_manager_pid(&self) -> u32 {
        self.job_manager_pid_at(self.current)
    }

    /// How many JobManagers the cluster has (running or not).
    pub fn job_manager_count(&self) -> usize {
        self.job_managers.len()
    }

    /// Sends REST requests to JobManager `index` from now on.
    pub fn use_job_manager(&mut self, index: usize) {
        assert!(index < self.job_managers.len(), "no JobManager {index}");
        self.current = index;
    }

    /// JobManager `index`'s process id.
    pub fn job_manager_pid_at(&self, index: usize) -> u32 {
        self.job_managers[index].process.pid()
    }

    /// Kills JobManager `index` (SIGKILL).
    pub fn kill_job_manager_at(&mut self, index: usize) {
        self.job_managers[index].process.kill();
    }

    /// Sends JobManager `index` a signal (`STOP`, `CONT`, `TERM`).
    pub fn signal_job_manager_at(&mut self, index: usize, name: &str) {
        signal(self.job_manager_pid_at(index), name);
    }

    /// Waits until JobManager `index` has exited, at most `timeout`; its exit status.
    pub fn wait_for_job_manager_exit_at(&mut self, index: usize, timeout: Duration) -> ExitStatus {
        let process = &mut self.job_managers[index].process;
        poll_until(&format!("JobManager {index} to exit"), timeout, || {
            Ok(process.exit_status()?.map_or_else(|| Progress::Pending("running".into()), Progress::Ready))
        })
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts JobManager `index` again (after it was killed or exited) with the same data directory and
    /// environment on the same ports, and returns once it has written its address file.
    pub fn start_job_manager_at(&mut self, index: usize) {
        let name = self.job_managers[index].name.clone();
        let address_file = self.dir().join(&name).join("jobmanager.addr");
        if let Err(e) = std::fs::remove_file(&address_file) {
            assert!(e.kind() == std::io::ErrorKind::NotFound, "cannot remove {}: {e}", address_file.display());
        }
        let (rest, rpc) = (self.job_managers[index].rest_address.clone(), self.job_managers[index].rpc_address.clone());
        let process =
            spawn_job_manager(self.dir(), &self.spec, &name, (&rest, &rpc)).unwrap_or_else(|e| panic!("{e:#}"));
        self.job_managers[index].process = process;
        self.await_job_manager_address_of(index).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// JobManager `index`'s `GET /health` (no token needed), or why it did not answer.
    pub fn job_manager_health(&self, index: usize) -> anyhow::Result<Value> {
        let url = format!("{}/health", self.rest_url_of(index));
        let response = self.http.get(&url).send().with_context(|| format!("GET {url}"))?;
        let answer = into_http_response(response);
        anyhow::ensure!(answer.status == 200, "GET {url} answered {}: {}", answer.status, answer.body);
        Ok(answer.body)
    }

    /// Waits until exactly one of the JobManagers whose index is not in `excluded` says it leads, and sends
    /// REST requests to it from then on; returns its index and its `/health`.
    pub fn wait_for_leader(&mut self, excluded: &[usize], timeout: Duration) -> (usize, Value) {
        let found = poll_until("one JobManager to lead", timeout, || {
            let mut leaders = Vec::new();
            let mut seen = Vec::new();
            for index in (0..self.job_managers.len()).filter(|i| !excluded.contains(i)) {
                match self.job_manager_health(index) {
                    Ok(health) if health["role"] == "leader" => leaders.push((index, health)),
                    Ok(health) => seen.push(format!("{index}: {}", health["role"])),
                    Err(e) => seen.push(format!("{index}: {e:#}")),
                }
            }
            Ok(match leaders.len() {
                1 => Progress::Ready(leaders.remove(0)),
                n => Progress::Pending(format!("{n} leaders; {}", seen.join("; "))),
            })
        });
        let (index, health) = found.unwrap_or_else(|e| panic!("{e:#}"));
        self.current = index;
        (index, health)
    }

    /// Freezes the JobManager with SIGSTOP: its sockets stay open but nothing answers, as in a long pause.
    pub fn freeze_job_manager(&mut self) {
        signal(self.job_manager_pid(), "STOP");
    }

    /// Lets a frozen JobManager go on with SIGCONT.
    pub fn thaw_job_manager(&mut self) {
        signal(self.job_manager_pid(), "CONT");
    }

    /// The text of TaskManager `index`'s log so far.
    pub fn task_manager_log(&self, index: usize) -> String {
        let path = self.task_manager(index).process.log_path();
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// How many TaskManagers were started (killed ones included).
    pub fn task_manager_count(&self) -> usize {
        self.task_managers.len()
    }

    /// TaskManager `index`'s id (`tm-<index>`).
    pub fn task_manager_id(&self, index: usize) -> &str {
        &self.task_manager(index).id
    }

    /// TaskManager `index`'s process id.
    pub fn task_manager_pid(&self, index: usize) -> u32 {
        self.task_manager(index).process.pid()
    }

    /// TaskManager `index`'s RPC address, as its current incarnation announced it.
    pub fn task_manager_rpc_address(&self, index: usize) -> &str {
        &self.task_manager(index).rpc_address
    }

    /// Starts one more TaskManager (`tm-<n>`) and waits for its address file (not for its registration).
    /// Returns its index.
    pub fn add_task_manager(&mut self) -> usize {
        let index = self.task_managers.len();
        let id = format!("tm-{index}");
        let dir = self.dir().join(&id);
        let (process, addresses) = self.launch_task_manager(&id, &dir).unwrap_or_else(|e| panic!("{e:#}"));
        let (rpc_address, metrics_address) = addresses;
        self.task_managers.push(TaskManager { id, dir, process, rpc_address, metrics_address });
        index
    }

    /// Kills TaskManager `index` with SIGKILL (as a crash would) and reaps it.
    pub fn kill_task_manager(&mut self, index: usize) {
        self.task_manager_mut(index).process.kill();
    }

    /// Sends TaskManager `index` SIGTERM (what Kubernetes sends a pod it deletes): it leaves the cluster
    /// gracefully, its jobs moving elsewhere.
    pub fn terminate_task_manager(&mut self, index: usize) {
        self.signal_task_manager(index, "TERM");
    }

    /// Waits (at most `timeout`) until TaskManager `index`'s process has exited, and returns its exit status.
    pub fn wait_for_task_manager_exit(&mut self, index: usize, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("TaskManager {index} to exit");
        let result = poll_until(&what, timeout, || {
            let tm = self.task_manager_mut(index);
            Ok(match tm.process.exit_status()? {
                Some(status) => Progress::Ready(status),
                None => Progress::Pending(tm.process.log_tail(5)),
            })
        });
        result.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Keeps the cluster's directory (logs, data, output) when the cluster is dropped, and says where.
    pub fn keep_directory(&mut self) {
        self.dir.disable_cleanup(true);
        eprintln!("the cluster's directory is kept: {}", self.dir().display());
    }

    /// Freezes TaskManager `index` with SIGSTOP: alive but silent, as a process stuck in a long pause.
    pub fn freeze_task_manager(&mut self, index: usize) {
        self.signal_task_manager(index, "STOP");
    }

    /// Lets a frozen TaskManager `index` go on with SIGCONT.
    pub fn thaw_task_manager(&mut self, index: usize) {
        self.signal_task_manager(index, "CONT");
    }

    fn signal_task_manager(&mut self, index: usize, name: &str) {
        signal(self.task_manager_pid(index), name);
    }

    /// Starts TaskManager `index` again with the same id and directory (killing it first if it still runs),
    /// and returns once the JobManager lists this new incarnation as ACTIVE.
    pub fn restart_task_manager(&mut self, index: usize) {
        let (id, dir) = {
            let tm = self.task_manager_mut(index);
            tm.process.kill();
            (tm.id.clone(), tm.dir.clone())
        };
        let (process, (rpc_address, metrics_address)) =
            self.launch_task_manager(&id, &dir).unwrap_or_else(|e| panic!("{e:#}"));
        let tm = self.task_manager_mut(index);
        tm.process = process;
        tm.metrics_address = metrics_address;
        tm.rpc_address = rpc_address.clone();
        let what = format!("{id} to register again from {rpc_address}");
        let result = poll_until(&what, STARTUP_TIMEOUT, || {
            self.ensure_job_manager_running()?;
            self.task_manager_mut(index).process.ensure_running()?;
            let answer = self.try_request(reqwest::Method::GET, "/taskmanagers", None)?;
            let registered = answer.body["taskmanagers"].as_array().is_some_and(|list| {
                list.iter().any(|tm| {
                    tm["id"] == id.as_str() && tm["rpc_address"] == rpc_address.as_str() && tm["state"] == "ACTIVE"
                })
            });
            Ok(if registered { Progress::Ready(()) } else { Progress::Pending(answer.body.to_string()) })
        });
        result.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits until `GET /taskmanagers` lists at least `count` ACTIVE TaskManagers.
    pub fn wait_for_active_task_managers(&mut self, count: usize, timeout: Duration) {
        let what = format!("{count} ACTIVE TaskManagers");
        let result = poll_until(&what, timeout, || {
            self.ensure_job_manager_running()?;
            let answer = self.try_request(reqwest::Method::GET, "/taskmanagers", None)?;
            let active = answer.body["taskmanagers"]
                .as_array()
                .map(|list| list.iter().filter(|tm| tm["state"] == "ACTIVE").count())
                .unwrap_or(0);
            Ok(if active >= count { Progress::Ready(()) } else { Progress::Pending(answer.body.to_string()) })
        });
        result.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// `GET path` on the REST API; panics unless the answer is 2xx.
    pub fn get(&self, path: &str) -> Value {
        self.expect_success(reqwest::Method::GET, path, None)
    }

    /// `POST path` with a JSON body; panics unless the answer is 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.expect_success(reqwest::Method::POST, path, Some(body))
    }

    /// Any request on the REST API, whatever its status (for tests of errors).
    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> HttpResponse {
        self.try_request(method, path, body).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The admin token the JobManager generated in `<data-dir>/admin.token` (none with `REST_AUTH=none`).
    pub fn admin_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request built by the caller (any token, header or body), sent as is: for tests of the REST gate.
    pub fn send_raw(&self, request: reqwest::blocking::RequestBuilder) -> HttpResponse {
        into_http_response(request.send().unwrap_or_else(|e| panic!("the request failed: {e}")))
    }

    /// The HTTP client the cluster uses, for [`Cluster::send_raw`]; it sends no token by itself.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// `request` with the admin token, if there is one.
    fn authorized(&self, request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Submits a job graph as a JSON body and returns its id; panics unless the JobManager accepts it.
    pub fn submit_json(&self, job: &Value) -> JobId {
        let answer = self.request(reqwest::Method::POST, "/jobs/submit", Some(job));
        match (answer.status, answer.body["job_id"].as_str()) {
            (200, Some(id)) => JobId(id.to_string()),
            _ => panic!("the job was not accepted: HTTP {} {}", answer.status, answer.body),
        }
    }

    /// Submits raw bytes as a job file, the way `curl -F job_file=@FILE` does (multipart field `job_file`).
    pub fn submit_file(&self, bytes: &[u8]) -> HttpResponse {
        let part = reqwest::blocking::multipart::Part::bytes(bytes.to_vec()).file_name("job.json");
        let form = reqwest::blocking::multipart::Form::new().part("job_file", part);
        let url = format!("{}/jobs/submit", self.rest_url());
        let result =
            self.authorized(self.http.post(&url)).multipart(form).send().with_context(|| format!("POST {url}"));
        into_http_response(result.unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// `GET /jobs/{id}`.
    pub fn job(&self, job: &JobId) -> Value {
        self.get(&format!("/jobs/{job}"))
    }

    /// `GET /jobs/{id}/metrics`.
    pub fn job_metrics(&self, job: &JobId) -> Value {
        self.get(&format!("/jobs/{job}/metrics"))
    }

    /// `POST /jobs/{id}/cancel`; panics unless it is accepted.
    pub fn cancel(&self, job: &JobId) -> Value {
        self.expect_success(reqwest::Method::POST, &format!("/jobs/{job}/cancel"), None)
    }

    /// Stops a running job with a savepoint (`POST /jobs/{id}/stop`), waits until the savepoint completed and
    /// the job FINISHED, and returns the savepoint's location.
    pub fn stop_with_savepoint(&mut self, job: &JobId, timeout: Duration) -> String {
        let answer = self.post(&format!("/jobs/{}/stop", job.0), &serde_json::json!({}));
        let trigger = answer["trigger_id"].as_str().unwrap_or_else(|| panic!("no trigger_id: {answer}")).to_string();
        let location = poll_until("the savepoint to complete", timeout, || {
            let status = self.get(&format!("/jobs/{}/savepoints/{trigger}", job.0));
            match status["status"].as_str().and_then(|text| text.parse::<CheckpointStatus>().ok()) {
                Some(CheckpointStatus::Completed) => {
                    Ok(Progress::Ready(status["location"].as_str().unwrap_or_default().to_string()))
                }
                Some(CheckpointStatus::Failed) => anyhow::bail!("the savepoint failed: {status}"),
                _ => Ok(Progress::Pending(status.to_string())),
            }
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        self.wait_for_status(job, JobStatus::Finished, timeout);
        location
    }

    /// Waits until the job's status is `status` and returns `GET /jobs/{id}/status`. Fails at once if the job
    /// reaches another terminal status (with its reason), or if the JobManager dies.
    pub fn wait_for_status(&mut self, job: &JobId, status: JobStatus, timeout: Duration) -> Value {
        let what = format!("job {job} to be {status}");
        let result = poll_until(&what, timeout, || {
            self.ensure_job_manager_running()?;
            let answer = self.try_request(reqwest::Method::GET, &format!("/jobs/{job}/status"), None)?;
            let current = answer.body["status"].as_str().unwrap_or("");
            if current.parse() == Ok(status) {
                return Ok(Progress::Ready(answer.body));
            }
            if is_terminal_status(current) {
                anyhow::bail!("job {job} ended {current} while waiting for {status}: {}", answer.body);
            }
            Ok(Progress::Pending(answer.body.to_string()))
        });
        result.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The Prometheus text of the JobManager's `GET /metrics`.
    pub fn job_manager_metrics(&self) -> String {
        let url = format!("{}/metrics", self.rest_url());
        let result =
            self.authorized(self.http.get(&url)).send().and_then(|r| r.error_for_status()).and_then(|r| r.text());
        result.unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The Prometheus text of TaskManager `index`'s `GET /metrics`.
    pub fn task_manager_metrics(&self, index: usize) -> String {
        let url = format!("http://{}/metrics", self.task_manager(index).metrics_address);
        let result = self.http.get(&url).send().and_then(|r| r.error_for_status()).and_then(|r| r.text());
        result.unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Runs the `sluice` CLI against this cluster (`sluice --jobmanager <rest url> ARGS`), bounded by
    /// [`CLI_TIMEOUT`]. Its output goes through files in the cluster directory, so a chatty command cannot
    /// block on a full pipe.
    pub fn cli(&mut self, args: &[&str]) -> CliOutput {
        self.cli_calls += 1;
        self.try_cli(args).unwrap_or_else(|e| panic!("sluice {}: {e:#}", args.join(" ")))
    }

    fn try_cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let program = binaries::binary(binaries::CLI)?;
        let stdout_path = self.dir().join(format!("cli-{}.stdout", self.cli_calls));
        let stderr_path = self.dir().join(format!("cli-{}.stderr", self.cli_calls));
        let mut command = std::process::Command::new(&program);
        command
            .arg("--jobmanager")
            .arg(self.rest_url())
            .args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(fresh_file(&stdout_path)?)
            .stderr(fresh_file(&stderr_path)?);
        for name in crate::process::SCRUBBED_ENV {
            command.env_remove(name);
        }
        if self.token.is_some() {
            command.env("SLUICE_TOKEN_FILE", self.token_path());
        }
        if self.spec.tls {
            command.env("SLUICE_CA_FILE", self.dir().join("certs").join("ca.pem"));
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("cannot poll the CLI")? {
                break status;
            }
            if started.elapsed() > CLI_TIMEOUT {
                // Ignoring the kill error: it can only mean the process has just exited, which wait() reaps.
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("did not finish within {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(crate::wait::POLL_INTERVAL);
        };
        let read =
            |path: &Path| std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()));
        Ok(CliOutput { status, stdout: read(&stdout_path)?, stderr: read(&stderr_path)? })
    }

    fn task_manager(&self, index: usize) -> &TaskManager {
        self.task_managers
            .get(index)
            .unwrap_or_else(|| panic!("no TaskManager {index}; the cluster has {}", self.task_managers.len()))
    }

    fn task_manager_mut(&mut self, index: usize) -> &mut TaskManager {
        let count = self.task_managers.len();
        self.task_managers.get_mut(index).unwrap_or_else(|| panic!("no TaskManager {index}; the cluster has {count}"))
    }

    fn expect_success(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let answer = self.request(method.clone(), path, body);
        if !(200..300).contains(&answer.status) {
            panic!("{method} {path} answered HTTP {}: {}", answer.status, answer.body);
        }
        answer.body
    }

    fn try_request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<HttpResponse> {
        let url = format!("{}{path}", self.rest_url());
        let mut request = self.authorized(self.http.request(method.clone(), &url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().with_context(|| format!("{method} {url}"))?;
        Ok(into_http_response(response))
    }

    /// Where the JobManager generates its admin token.
    pub fn token_path(&self) -> PathBuf {
        self.dir().join("jobmanager").join("admin.token")
    }

    fn ensure_job_manager_running(&mut self) -> anyhow::Result<()> {
        self.job_managers[self.current].process.ensure_running()
    }

    fn await_job_manager_address(&mut self) -> anyhow::Result<()> {
        self.await_job_manager_address_of(0)
    }

    fn await_job_manager_address_of(&mut self, index: usize) -> anyhow::Result<()> {
        let path = self.dir().join(&self.job_managers[index].name).join("jobmanager.addr");
        let job_manager = &mut self.job_managers[index].process;
        let address = poll_until("the JobManager's address file", STARTUP_TIMEOUT, || {
            job_manager.ensure_running()?;
            Ok(read_address_file(&path).map_or_else(Progress::Pending, Progress::Ready))
        })?;
        self.job_managers[index].rest_address = string_field(&address, "rest", &path)?;
        self.job_managers[index].rpc_address = string_field(&address, "rpc", &path)?;
        if index > 0 {
            return Ok(()); // The others share the first one's token.
        }
        // The JobManager writes its token before it binds, so it is there once the address file is.
        let token_path = self.token_path();
        self.token = match std::fs::read_to_string(&token_path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", token_path.display())),
        };
        Ok(())
    }

    /// Starts a TaskManager process and waits for its address file; returns it and its (RPC, metrics)
    /// addresses.
    fn launch_task_manager(&self, id: &str, dir: &Path) -> anyhow::Result<(Process, (String, String))> {
        let address_path = dir.join("taskmanager.addr");
        // A file left by an earlier incarnation would announce ports nobody serves any more.
        match std::fs::remove_file(&address_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", address_path.display())),
        }
        let program = binaries::binary(&self.spec.task_manager_binary)?;
        let job_managers: Vec<&str> = self.job_managers.iter().map(|jm| jm.rpc_address.as_str()).collect();
        let args = [
            "--jobmanager",
            &job_managers.join(","),
            "--rpc-addr",
            "127.0.0.1:0",
            "--data-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--slots",
            &self.spec.slots.to_string(),
            "--data-dir",
            &dir.display().to_string(),
            "--id",
            id,
        ];
        let mut env = environment(&self.spec);
        let secret = self.dir().join("jobmanager").join("cluster.secret");
        if secret.exists() && !env.iter().any(|(key, _)| key == "CLUSTER_SECRET_FILE") {
            // The secret the JobManager generated (a spec's own CLUSTER_SECRET_FILE wins, for tests of it).
            env.push(("CLUSTER_SECRET_FILE".to_string(), secret.display().to_string()));
        }
        let mut process = Process::spawn(Launch {
            name: id,
            program: &program,
            args: args.iter().map(ToString::to_string).collect(),
            env: &env,
            cwd: self.dir(),
            log_dir: self.dir(),
        })?;
        // The TaskManager writes this file in one call, not atomically: a half-written file fails to
        // parse and is simply read again at the next poll.
        let address = poll_until(&format!("{id}'s address file"), STARTUP_TIMEOUT, || {
            process.ensure_running()?;
            Ok(read_address_file(&address_path).map_or_else(Progress::Pending, Progress::Ready))
        })?;
        let rpc = string_field(&address, "rpc", &address_path)?;
        let metrics = string_field(&address, "metrics", &address_path)?;
        Ok((process, (rpc, metrics)))
    }

    /// Prints the tail of every process's log to stderr.
    pub fn print_logs(&self) {
        let processes =
            self.job_managers.iter().map(|jm| &jm.process).chain(self.task_managers.iter().map(|tm| &tm.process));
        for process in processes {
            eprintln!(
                "\n===== {} (pid {}): last {LOG_TAIL_LINES} lines of {} =====\n{}",
                process.name(),
                process.pid(),
                process.log_path().display(),
                process.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // TaskManagers first, so they do not log a storm of reconnection attempts to a dead JobManager.
        for tm in &mut self.task_managers {
            tm.process.kill();
        }
        for jm in &mut self.job_managers {
            jm.process.kill();
        }
        if std::thread::panicking() {
            self.print_logs();
            self.dir.disable_cleanup(true);
            eprintln!("\nthe test failed; its directory is kept for a post-mortem: {}", self.dir().display());
        }
    }
}

/// Makes a CA and a certificate for 127.0.0.1 in `<dir>/certs` with `scripts/gen-certs.sh` (the way the
/// README tells users to), and returns that directory.
pub fn make_certificates(dir: &Path) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join("gen-certs.sh");
    let certs = dir.join("certs");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(&certs)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(certs)
}

/// Starts a JobManager on `data_dir` with `env` (and loopback ports of its own) that is expected to refuse to
/// start, and returns its exit status and whole log once it has exited. Panics if it still runs after `timeout`.
/// Its log goes to `<log_dir>/<name>.log`; it is killed by PID if the wait fails.
pub fn job_manager_that_refuses_to_start(
    name: &str,
    data_dir: &Path,
    env: &[(String, String)],
    log_dir: &Path,
    timeout: Duration,
) -> (ExitStatus, String) {
    let program = binaries::binary(binaries::JOB_MANAGER).unwrap_or_else(|e| panic!("{e:#}"));
    let args =
        ["--rest-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0", "--data-dir", &data_dir.display().to_string()]
            .map(String::from)
            .to_vec();
    let launch = Launch { name, program: &program, args, env, cwd: log_dir, log_dir };
    let mut process = Process::spawn(launch).unwrap_or_else(|e| panic!("{e:#}"));
    let exited = poll_until(&format!("{name} to exit"), timeout, || {
        Ok(match process.exit_status()? {
            Some(status) => Progress::Ready(status),
            None => Progress::Pending(process.log_tail(5)),
        })
    });
    let status = exited.unwrap_or_else(|e| panic!("{e:#}"));
    (status, process.log_tail(usize::MAX))
}

/// Starts a JobManager binding `(rest, rpc)` (port 0: any free port).
/// Starts the JobManager `name` (its data directory and process name). Any but the first (`jobmanager`) uses
/// the first one's cluster secret and admin token, unless the spec names its own.
fn spawn_job_manager(dir: &Path, spec: &ClusterSpec, name: &str, (rest, rpc): (&str, &str)) -> anyhow::Result<Process> {
    let program = binaries::binary(binaries::JOB_MANAGER)?;
    let data_dir = dir.join(name);
    let args = ["--rest-addr", rest, "--rpc-addr", rpc, "--data-dir", &data_dir.display().to_string()]
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut env = environment(spec);
    if name != "jobmanager" {
        let first = dir.join("jobmanager");
        for (key, file) in [("CLUSTER_SECRET_FILE", "cluster.secret"), ("ADMIN_TOKEN_FILE", "admin.token")] {
            if !env.iter().any(|(k, _)| k == key) && first.join(file).exists() {
                env.push((key.to_string(), first.join(file).display().to_string()));
            }
        }
    }
    Process::spawn(Launch { name, program: &program, args, env: &env, cwd: dir, log_dir: dir })
}

/// [`DEFAULT_ENV`] then the spec's variables (later entries win).
fn environment(spec: &ClusterSpec) -> Vec<(String, String)> {
    DEFAULT_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(spec.env.iter().cloned()).collect()
}

/// The parsed address file, or a description of why it is not there yet.
fn read_address_file(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not complete JSON yet ({e}): {text}", path.display()))
}

fn string_field(value: &Value, key: &str, path: &Path) -> anyhow::Result<String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} has no string field '{key}': {value}", path.display()))
}

fn into_http_response(response: reqwest::blocking::Response) -> HttpResponse {
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_else(|e| format!("(cannot read the body: {e})"));
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    HttpResponse { status, body }
}

/// Sends the signal `name` (`STOP`, `CONT`) to the process `pid`, one the cluster started.
fn signal(pid: u32, name: &str) {
    let pid = pid.to_string();
    let status = std::process::Command::new("kill")
        .args([format!("-{name}").as_str(), pid.as_str()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill -{name} {pid}: {e}"));
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

//! Replays the Kubernetes manifests against containers of the built image: proof of the manifests'
//! configuration, not just of their syntax (scripts/validate-deploy.sh checks that).
//!
//! Each overlay is rendered (`kubectl kustomize`), and `scripts/deploy/check_settings.py replay` lists each
//! Sluice pod's command, args, environment, mounts and user. Each pod becomes a podman container of the image
//! (host network; each pod a distinct 127.0.0.x, which stands in for its pod IP and for the `0.0.0.0` it binds
//! in its own network namespace; each Service name resolves to its pod's address), run as the manifests' user
//! with a read-only root, its volumes host directories. PostgreSQL (the Secret's database URL) and an S3
//! server holding the overlay's bucket run on the host. A checkpointed exactly-once job runs; one TaskManager
//! gets SIGTERM mid-run (a drain: it must exit 0 and the job move without a restart) and is started again, as
//! the StatefulSet would; another gets SIGKILL (a crash: the job restarts from its latest checkpoint). The
//! committed output must be exactly an uninterrupted run's.
//!
//! The EKS overlay runs as rendered (its `s3://` bucket is served by the S3 server, with static keys standing in
//! for IRSA). No GCS server runs here, so the GKE overlay's `gs://` locations are replayed as `s3://` locations of
//! the same bucket: everything else (command, settings, mounts, user) is the overlay's.
//!
//! Ignored by default: it needs podman and the image, which `scripts/image.sh` builds (about 40 minutes the
//! first time). `scripts/test.sh` runs it when the image `localhost/sluice:dev` (or `$SLUICE_IMAGE`) exists.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::windows::{every_window_row, expected_of, job_of, Shape};

/// The image, unless `$SLUICE_IMAGE` names another.
const IMAGE_DEFAULT: &str = "localhost/sluice:dev";
/// The user and group the manifests run Sluice as (`runAsUser`/`runAsGroup`), who must own the volumes.
const SLUICE_UID: u32 = 10001;
/// How long a cluster may take to come up, a job to finish, a drained TaskManager to exit.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The job: rows at a rate, so that it runs long enough for a drain and a kill mid-stream.
const ROWS: i64 = 60_000;
const ROWS_PER_SECOND: f64 = 2_000.0;

fn podman(args: &[&str]) -> std::process::Output {
    let mut command = Command::new("podman");
    // scripts/image.sh writes the settings podman needs on these machines (no setrlimit in containers).
    let conf = Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/sluice/containers.conf");
    if conf.exists() {
        command.env("CONTAINERS_CONF", conf);
    }
    command.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]).args(args);
    command.output().unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"))
}

fn podman_ok(args: &[&str]) -> String {
    let output = podman(args);
    assert!(
        output.status.success(),
        "podman {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The containers of one replay, removed (`podman rm -f`, by their ids) when the test ends, pass or fail.
#[derive(Default)]
struct Containers {
    /// Pod name → container id.
    ids: BTreeMap<String, String>,
}

impl Containers {
    fn id(&self, pod: &str) -> &str {
        self.ids.get(pod).unwrap_or_else(|| panic!("no container for pod {pod}"))
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (pod, id) in &self.ids {
            let output = podman(&["logs", "--tail", "40", id]);
            all.push_str(&format!(
                "--- {pod}\n{}{}\n",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        all
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for id in self.ids.values() {
            let _ = podman(&["rm", "--force", "--time", "0", id]);
        }
    }
}

/// A host directory owned by the Sluice user (a volume of the pod).
fn volume(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    std::os::unix::fs::chown(&dir, Some(SLUICE_UID), Some(SLUICE_UID))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
    dir
}

fn write_secret(dir: &Path, name: &str, value: &str) {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::chown(&path, Some(SLUICE_UID), Some(SLUICE_UID)).unwrap_or_else(|e| panic!("{e}"));
}

/// The rendered overlay's pods, as `check_settings.py replay` lists them.
fn rendered_pods(overlay: &str, dir: &Path, first_ip: &str) -> Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rendered = Command::new("kubectl")
        .args(["kustomize", &repo.join(overlay).display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    assert!(rendered.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&rendered.stderr));
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, &rendered.stdout).unwrap_or_else(|e| panic!("{e}"));
    check_settings(&["replay", &path.display().to_string(), first_ip])
}

/// What `scripts/deploy/check_settings.py ARGS` prints, as JSON; run with `$SLUICE_DEPLOY_PYTHON`, else the
/// virtual environment scripts/validate-deploy.sh makes (PyYAML).
fn check_settings(args: &[&str]) -> Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("SLUICE_DEPLOY_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/sluice/venv-deploy/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    let listed = Command::new(&python)
        .arg(repo.join("scripts/deploy/check_settings.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(listed.status.success(), "check_settings.py {args:?}: {}", String::from_utf8_lossy(&listed.stderr));
    serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| panic!("check_settings.py printed no JSON: {e}"))
}

/// One container to start: a pod of the manifests or a service of the compose file, as `check_settings.py`
/// lists it (`ip`, `env`, `command`, `args`).
struct ContainerSpec<'a> {
    /// Its name, unique to this test process.
    name: String,
    pod: &'a Value,
    /// Each Service (or compose service) name and the address it resolves to.
    services: &'a Value,
    /// `UID:GID`, when the pod sets one (else the image's user).
    user: Option<String>,
    read_only_root: bool,
    /// Host directory, path in the container, read-only.
    volumes: Vec<(PathBuf, String, bool)>,
    /// What the test gives instead of the pod's own value (the database and object store standing in).
    stand_ins: &'a [(String, String)],
}

/// Starts a container of `image` on the host network; returns its id.
fn run_container(spec: &ContainerSpec<'_>, image: &str) -> String {
    let ip = spec.pod["ip"].as_str().unwrap_or_default();
    let mut args: Vec<String> = ["run", "--detach", "--network", "host"].map(String::from).to_vec();
    args.push(format!("--name={}", spec.name));
    for (service, address) in spec.services.as_object().into_iter().flatten() {
        args.push(format!("--add-host={service}:{}", address.as_str().unwrap_or_default()));
    }
    args.extend(spec.user.as_ref().map(|user| format!("--user={user}")));
    if spec.read_only_root {
        args.push("--read-only".into());
    }
    for (host, path, read_only) in &spec.volumes {
        let options = if *read_only { ":ro" } else { "" };
        args.push(format!("--volume={}:{path}{options}", host.display()));
    }
    let replaced = |key: &str| spec.stand_ins.iter().any(|(k, _)| k == key);
    for (key, value) in spec.pod["env"].as_object().into_iter().flatten().filter(|(key, _)| !replaced(key)) {
        // Binding 0.0.0.0 in the pod's own network namespace is binding its pod IP.
        let value = value.as_str().unwrap_or_default().replace("0.0.0.0:", &format!("{ip}:"));
        args.push(format!("--env={key}={value}"));
    }
    args.extend(spec.stand_ins.iter().map(|(key, value)| format!("--env={key}={value}")));
    args.push(image.to_string());
    for part in ["command", "args"] {
        args.extend(spec.pod[part].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args)
}

/// Starts one pod of the manifests as a container; returns its id.
fn start_pod(pod: &Value, services: &Value, root: &Path, stand_ins: &[(String, String)], image: &str) -> String {
    let name = pod["pod"].as_str().unwrap_or_default();
    let pod_dir = root.join(name);
    let mut volumes: Vec<(PathBuf, String, bool)> = pod["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|mount| {
            let path = mount["path"].as_str().unwrap_or_default();
            let host = if path == "/etc/sluice/secrets" {
                root.join("secrets")
            } else {
                volume(&pod_dir, &path.trim_start_matches('/').replace('/', "_"))
            };
            (host, path.to_string(), mount["read_only"] == true)
        })
        .collect();
    // What jobs read and write: one directory every pod shares (on Kubernetes, a ReadWriteMany volume).
    volumes.push((root.join("output"), "/srv/sluice/output".into(), false));
    let user = match (pod["user"].as_u64(), pod["group"].as_u64()) {
        (Some(user), Some(group)) => Some(format!("{user}:{group}")),
        _ => None,
    };
    let spec = ContainerSpec {
        name: format!("sluice-replay-{}-{name}", std::process::id()),
        pod,
        services,
        user,
        read_only_root: pod["read_only_root"] == true,
        volumes,
        stand_ins,
    };
    run_container(&spec, image)
}

struct Rest {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Rest {
    fn try_get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send()?;
        Ok(response.json()?)
    }

    fn get(&self, path: &str) -> Value {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// Waits until `check` holds for the job.
    fn wait_for_job(&self, id: &str, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let result = poll_until(what, timeout, || {
            let job = self.try_get(&format!("/jobs/{id}"))?;
            Ok(if check(&job) { Progress::Ready(job) } else { Progress::Pending(job.to_string()) })
        });
        result.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The pods (TaskManager ids) that run a task of the job now.
    fn task_hosts(&self, id: &str) -> Vec<String> {
        let metrics = self.get(&format!("/jobs/{id}/metrics"));
        let mut hosts: Vec<String> = metrics["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["task_manager_id"].as_str().map(String::from))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

impl Rest {
    /// Whether the job (`job`, its `GET /jobs/{id}`) is RUNNING in an attempt after `attempt_after`, every task
    /// of it running.
    fn all_running(&self, job: &Value, attempt_after: u64) -> bool {
        if job["status"] != "RUNNING" || job["attempt"].as_u64().unwrap_or(0) <= attempt_after {
            return false;
        }
        let Some(id) = job["job_id"].as_str() else { return false };
        let Ok(metrics) = self.try_get(&format!("/jobs/{id}/metrics")) else { return false };
        let tasks = metrics["tasks"].as_array().cloned().unwrap_or_default();
        metrics["attempt"] == job["attempt"] && !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
    }
}

#[test]
#[ignore = "needs podman and the image: scripts/image.sh builds it, and scripts/test.sh then runs this test"]
fn the_eks_manifests_run_an_exactly_once_job_through_a_drain_and_a_kill() {
    // Each replay its own addresses: nextest runs the two at once.
    replay("deploy/k8s/overlays/eks", "127.0.0.2");
}

#[test]
#[ignore = "needs podman and the image: scripts/image.sh builds it, and scripts/test.sh then runs this test"]
fn the_gke_manifests_run_an_exactly_once_job_through_a_drain_and_a_kill() {
    replay("deploy/k8s/overlays/gke", "127.0.1.2");
}

/// `gs://bucket/path` as `s3://bucket/path` (no GCS server runs here); other locations unchanged.
fn served_here(location: &str) -> String {
    location.strip_prefix("gs://").map_or_else(|| location.to_string(), |rest| format!("s3://{rest}"))
}

/// Replays `overlay`, its pods at `first_ip` and the addresses after it.
fn replay(overlay: &str, first_ip: &str) {
    let image = std::env::var("SLUICE_IMAGE").unwrap_or_else(|_| IMAGE_DEFAULT.to_string());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let mut rendered = rendered_pods(overlay, root, first_ip);
    for pod in rendered["pods"].as_array_mut().into_iter().flatten() {
        for key in ["CHECKPOINT_DIR", "SAVEPOINT_DIR"] {
            if let Some(location) = pod["env"][key].as_str().map(served_here) {
                pod["env"][key] = json!(location);
            }
        }
    }
    let pods = rendered["pods"].as_array().cloned().unwrap_or_default();
    let job_manager = pods.iter().find(|p| p["binary"] == "sluice-jobmanager").cloned();
    let job_manager = job_manager.unwrap_or_else(|| panic!("no JobManager pod in {rendered}"));
    let task_managers: Vec<&Value> = pods.iter().filter(|p| p["binary"] == "sluice-taskmanager").collect();
    assert_eq!(task_managers.len(), 3, "the base runs 3 TaskManagers: {rendered}");

    // The host services the Secret and the overlay point at: PostgreSQL, and S3 with the overlay's bucket.
    let database_url = sluice_tests::postgres::fresh_database("replay");
    let s3 = sluice_tests::s3::S3Server::start(&root.join("s3")).unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = job_manager["env"]["CHECKPOINT_DIR"].as_str().unwrap_or_default();
    let bucket = bucket.strip_prefix("s3://").and_then(|rest| rest.split('/').next()).unwrap_or_default();
    assert!(!bucket.is_empty(), "{overlay} checkpoints to an object store: {job_manager}");
    std::fs::create_dir_all(s3.root().join(bucket)).unwrap_or_else(|e| panic!("{e}"));
    // Credentials as IRSA or Pod Identity would give them, and the S3 server's endpoint.
    let s3_env = s3.env();

    // The Secret's files (mounted read-only at /etc/sluice/secrets), and the jobs' shared output directory.
    let secrets = volume(root, "secrets");
    let token = sluice_common::secret::generate();
    write_secret(&secrets, "admin.token", &token);
    write_secret(&secrets, "cluster.secret", &sluice_common::secret::generate());
    volume(root, "output");

    let mut containers = Containers::default();
    let services = &rendered["services"];
    let mut jm_env = s3_env.clone();
    jm_env.push(("DATABASE_URL".into(), database_url.replace("localhost", "127.0.0.1")));
    let jm_name = job_manager["pod"].as_str().unwrap_or_default().to_string();
    containers.ids.insert(jm_name.clone(), start_pod(&job_manager, services, root, &jm_env, &image));
    for tm in &task_managers {
        let name = tm["pod"].as_str().unwrap_or_default().to_string();
        containers.ids.insert(name, start_pod(tm, services, root, &s3_env, &image));
    }

    let rest_address = services["sluice-jobmanager-rest"].as_str().unwrap_or_default();
    let rest = Rest { base: format!("http://{rest_address}:8081"), token, http: reqwest::blocking::Client::new() };
    let registered = poll_until("3 ACTIVE TaskManagers", STARTUP_TIMEOUT, || {
        let Ok(list) = rest.try_get("/taskmanagers") else { return Ok(Progress::Pending("no answer".into())) };
        let active = list["taskmanagers"].as_array().into_iter().flatten().filter(|t| t["state"] == "ACTIVE").count();
        Ok(if active == 3 { Progress::Ready(()) } else { Progress::Pending(list.to_string()) })
    });
    if let Err(e) = registered {
        panic!("{e:#}\n{}", containers.logs());
    }
    let health = rest.get("/health");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "the image runs this version: {health}");

    let shape = Shape { rows: ROWS, rows_per_second: ROWS_PER_SECOND, source_parallelism: 4, window_parallelism: 4 };
    let mut job = job_of(&shape, "ROCKSDB", Path::new("/srv/sluice/output/replay"));
    job["config"]["checkpointing"] = json!({"interval_ms": 500, "retained": 2});
    job["config"]["restart_strategy"] =
        json!({"strategy": "EXPONENTIAL_DELAY", "initial_delay_ms": 0, "max_delay_ms": 1000});
    let answer = rest.http.post(format!("{}/jobs/submit", rest.base)).bearer_auth(&rest.token).json(&job).send();
    let answer: Value = answer.and_then(|r| r.json()).unwrap_or_else(|e| panic!("submit: {e}"));
    let id = answer["job_id"].as_str().unwrap_or_else(|| panic!("the job was not accepted: {answer}")).to_string();
    let running = rest.wait_for_job(&id, "the job RUNNING", STARTUP_TIMEOUT, |j| rest.all_running(j, 0));
    // Mid-stream: a few checkpoints in (into the S3 server, through the overlay's s3:// location).
    rest.wait_for_job(&id, "3 completed checkpoints", Duration::from_secs(20), |_| {
        rest.get(&format!("/jobs/{id}/checkpoints"))["counts"]["completed"].as_u64() >= Some(3)
    });

    // A drain: SIGTERM to a TaskManager running tasks of the job (what Kubernetes sends a pod it deletes).
    let drained = rest.task_hosts(&id).first().cloned().unwrap_or_else(|| panic!("no task hosts"));
    let attempt = running["attempt"].as_u64().unwrap_or(0);
    podman_ok(&["kill", "--signal", "TERM", containers.id(&drained)]);
    let moved = rest.wait_for_job(&id, "the job moved off the drained TaskManager", DRAIN_TIMEOUT, |j| {
        rest.all_running(j, attempt) && j["relocations"].as_u64() == Some(1)
    });
    assert_eq!(moved["restarts"], 0, "a drain is no failure: {moved}");
    let exit = podman_ok(&["wait", containers.id(&drained)]);
    assert_eq!(exit, "0", "the drained TaskManager exited by itself with status 0");
    assert!(!rest.task_hosts(&id).contains(&drained), "no task runs on {drained} any more");
    println!("drain of {drained}: the job stalled {} ms", moved["last_relocation_ms"]);
    // The StatefulSet starts the pod again.
    podman_ok(&["start", containers.id(&drained)]);

    // A crash: SIGKILL to another TaskManager running tasks.
    let attempt = moved["attempt"].as_u64().unwrap_or(0);
    let killed = rest.task_hosts(&id).into_iter().find(|h| h != &drained).unwrap_or_else(|| panic!("no host left"));
    podman_ok(&["kill", "--signal", "KILL", containers.id(&killed)]);
    let recovered =
        rest.wait_for_job(&id, "the job restarted after the kill", STARTUP_TIMEOUT, |j| rest.all_running(j, attempt));
    assert!(recovered["restarts"].as_u64() >= Some(1), "the kill restarted the job: {recovered}");
    assert!(recovered["restored_checkpoint"].is_u64(), "from a checkpoint: {recovered}");
    println!("kill of {killed}: restarts {}, recovery {} ms", recovered["restarts"], recovered["last_recovery_ms"]);

    let finished = rest.wait_for_job(&id, "the job FINISHED", JOB_TIMEOUT, |j| {
        matches!(j["status"].as_str(), Some("FINISHED" | "FAILED" | "CANCELED"))
    });
    assert_eq!(finished["status"], "FINISHED", "{finished}");
    let expected = expected_of(ROWS);
    let committed = every_window_row(&root.join("output").join("replay")).unwrap_or_else(|e| panic!("{e:#}"));
    let mut lost = 0;
    let mut repeated_or_wrong = 0;
    for (window, value) in &expected {
        match committed.get(window).map(Vec::as_slice) {
            None | Some([]) => lost += 1,
            Some([only]) if only == value => {}
            Some(_) => repeated_or_wrong += 1,
        }
    }
    let unexpected = committed.keys().filter(|w| !expected.contains_key(w)).count();
    assert_eq!(
        (lost, repeated_or_wrong, unexpected),
        (0, 0, 0),
        "windows lost, repeated or wrong, unexpected, of {}",
        expected.len()
    );
    println!(
        "replayed {overlay} in containers of {image}: {} windows exact through a drain and a kill",
        expected.len()
    );
}

/// The compose file's laptop cluster: its 2 JobManagers and 3 TaskManagers as containers of the image, with their
/// settings, volumes (named ones as host directories, the examples bind-mounted) and service names as given;
/// PostgreSQL and the S3 server on the host stand in for the `postgres` and `minio` services (their URL and
/// credentials replaced). `GET /cluster/metrics` must show 3 TaskManagers and 12 slots, as the file's header
/// promises, and the word count example must run to FINISHED with its output in the `output` volume.
#[test]
#[ignore = "needs podman and the image: scripts/image.sh builds it, and scripts/test.sh then runs this test"]
fn the_compose_file_runs_a_cluster_of_3_task_managers_and_12_slots_that_runs_an_example() {
    let image = std::env::var("SLUICE_IMAGE").unwrap_or_else(|_| IMAGE_DEFAULT.to_string());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let compose_dir = repo.join("deploy/compose");
    let compose_file = compose_dir.join("docker-compose.yml").display().to_string();
    let rendered = check_settings(&["replay-compose", &compose_file, "127.0.2.2"]);
    let pods = rendered["pods"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 5, "2 JobManagers (a leader and a standby) and 3 TaskManagers: {rendered}");

    let database_url = sluice_tests::postgres::fresh_database("compose");
    let s3 = sluice_tests::s3::S3Server::start(&root.join("s3")).unwrap_or_else(|e| panic!("{e:#}"));
    let job_manager = pods.iter().find(|p| p["binary"] == "sluice-jobmanager").cloned().unwrap_or_default();
    let location = job_manager["env"]["CHECKPOINT_DIR"].as_str().unwrap_or_default();
    let bucket = location.strip_prefix("s3://").and_then(|rest| rest.split('/').next()).unwrap_or_default();
    assert!(!bucket.is_empty(), "the compose file checkpoints to S3 (MinIO): {job_manager}");
    std::fs::create_dir_all(s3.root().join(bucket)).unwrap_or_else(|e| panic!("{e}"));
    // What stands in for the `postgres` and `minio` services.
    let mut stand_ins = s3.env();
    stand_ins.push(("DATABASE_URL".into(), database_url));

    let mut containers = Containers::default();
    let mut start = |pod: &Value| {
        let name = pod["pod"].as_str().unwrap_or_default();
        let volumes = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|volume| {
                let source = volume["source"].as_str().unwrap_or_default();
                let host = if volume["named"] == true { volume_dir(root, source) } else { compose_dir.join(source) };
                (host, volume["target"].as_str().unwrap_or_default().to_string(), volume["read_only"] == true)
            })
            .collect();
        let spec = ContainerSpec {
            name: format!("sluice-compose-{}-{name}", std::process::id()),
            pod,
            services: &rendered["services"],
            user: None,
            read_only_root: false,
            volumes,
            stand_ins: &stand_ins,
        };
        containers.ids.insert(name.to_string(), run_container(&spec, &image));
    };
    start(&job_manager);
    // The TaskManagers read the cluster secret the JobManager generates into its volume (compose restarts them
    // until it is there; here they start once it is).
    let secret = volume_dir(root, "jobmanager-data").join("cluster.secret");
    poll_until("the JobManager's cluster secret", STARTUP_TIMEOUT, || {
        Ok(if secret.exists() { Progress::Ready(()) } else { Progress::Pending(String::new()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The standby JobManager shares the first one's secret and token (read from its volume).
    for pod in pods.iter().filter(|p| p["binary"] == "sluice-jobmanager" && p["pod"] != job_manager["pod"]) {
        start(pod);
    }
    for pod in pods.iter().filter(|p| p["binary"] == "sluice-taskmanager") {
        start(pod);
    }

    let token = std::fs::read_to_string(volume_dir(root, "jobmanager-data").join("admin.token"))
        .unwrap_or_else(|e| panic!("the admin token: {e}"));
    let rest_ip = rendered["services"]["jobmanager"].as_str().unwrap_or_default();
    let rest = Rest {
        base: format!("http://{rest_ip}:8081"),
        token: token.trim().to_string(),
        http: reqwest::blocking::Client::new(),
    };
    let cluster = poll_until("3 TaskManagers and 12 slots", STARTUP_TIMEOUT, || {
        let Ok(metrics) = rest.try_get("/cluster/metrics") else { return Ok(Progress::Pending("no answer".into())) };
        let ready = metrics["active_task_managers"] == 3 && metrics["total_slots"] == 12;
        Ok(if ready { Progress::Ready(metrics) } else { Progress::Pending(metrics.to_string()) })
    });
    let cluster = cluster.unwrap_or_else(|e| panic!("{e:#}\n{}", containers.logs()));
    assert_eq!(cluster["available_slots"], 12, "{cluster}");

    let job: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("examples/jobs/word_count.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let answer = rest.http.post(format!("{}/jobs/submit", rest.base)).bearer_auth(&rest.token).json(&job).send();
    let answer: Value = answer.and_then(|r| r.json()).unwrap_or_else(|e| panic!("submit: {e}"));
    let id = answer["job_id"].as_str().unwrap_or_else(|| panic!("the example was not accepted: {answer}")).to_string();
    let finished = rest.wait_for_job(&id, "the example to end", JOB_TIMEOUT, |j| {
        matches!(j["status"].as_str(), Some("FINISHED" | "FAILED" | "CANCELED"))
    });
    assert_eq!(finished["status"], "FINISHED", "{finished}\n{}", containers.logs());
    let output = volume_dir(root, "output").join("word_count");
    let written: usize = std::fs::read_dir(&output)
        .unwrap_or_else(|e| panic!("no output in {}: {e}", output.display()))
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .map(|text| text.lines().count())
        .sum();
    assert!(written > 0, "the example wrote its counts into the output volume");
    println!("compose: {cluster}; the word count example wrote {written} rows");
}

/// The host directory standing in for a compose named volume (owned by the image's user).
fn volume_dir(root: &Path, name: &str) -> PathBuf {
    volume(&root.join("volumes"), name)
}

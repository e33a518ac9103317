//! A child process owned by a test: started with its output in a log file, killed by its PID and reaped
//! when the guard is dropped, so that no test leaves a process behind, whether it passes or fails.
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context as _;

/// Settings of the Sluice binaries that the test's own environment must not leak into a child: a test
/// decides them through flags or [`crate::ClusterSpec::env`], never by accident of the shell it runs in.
pub const SCRUBBED_ENV: &[&str] = &[
    "SLUICE_CONFIG",
    "SLUICE_TOKEN",
    "SLUICE_TOKEN_FILE",
    "REST_AUTH",
    "ADMIN_TOKEN_FILE",
    "READ_TOKEN_FILE",
    "ADMIN_TOKENS",
    "READ_TOKENS",
    "METRICS_AUTH",
    "INSECURE",
    "CLUSTER_AUTH",
    "CLUSTER_SECRET_FILE",
    "TLS",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_CA_FILE",
    "SLUICE_CA_FILE",
    "DATABASE_URL",
    "REST_ADDR",
    "RPC_ADDR",
    "DATA_DIR",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TIMEOUT",
    "CANCEL_TIMEOUT",
    "JOBMANAGER",
    "TASK_SLOTS",
    "TASK_MANAGER_ID",
    "TM_RPC_ADDR",
    "TM_DATA_ADDR",
    "TM_METRICS_ADDR",
    "TM_DATA_DIR",
    "TM_ADVERTISE_HOST",
    "TM_DATA_THREADS",
    "BUFFER_SIZE",
    "BUFFER_POOL_SIZE",
    "CREDIT_INITIAL",
    "OUTPUT_QUEUE_BUFFERS",
    "MAX_FRAME_BYTES",
    "LOG_FORMAT",
    "SLUICE_JOBMANAGER",
    "CHECKPOINT_DIR",
    "S3_CHECKPOINT_PATH",
    "SAVEPOINT_DIR",
    "CHECKPOINT_INTERVAL",
    "ALLOWED_INPUT_DIRS",
    "ALLOWED_OUTPUT_DIRS",
    "ALLOWED_SAVEPOINT_PREFIXES",
    "ALLOWED_KAFKA_BROKERS",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
];

/// A running child process and its log file. Dropping it kills the process (SIGKILL, by PID) and waits for
/// it, so it never outlives its test.
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Set once the process was reaped: its PID may then belong to someone else and must not be signalled.
    exited: Option<ExitStatus>,
}

/// What to start.
pub struct Launch<'a> {
    /// A short name for logs and messages (`jobmanager`, `tm-1`); also names the log file.
    pub name: &'a str,
    /// The binary.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set on top of the scrubbed inherited environment.
    pub env: &'a [(String, String)],
    /// The working directory (relative paths in job files resolve against it).
    pub cwd: &'a Path,
    /// Where `<name>.log` is written (appended to, so a restarted process continues the same log).
    pub log_dir: &'a Path,
}

impl Process {
    /// Starts the process with stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(launch: Launch<'_>) -> anyhow::Result<Process> {
        let log_path = launch.log_dir.join(format!("{}.log", launch.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
        let stderr_log =
            log.try_clone().with_context(|| format!("cannot share the log file {}", log_path.display()))?;
        let mut command = Command::new(launch.program);
        command.args(&launch.args).current_dir(launch.cwd).stdin(Stdio::null()).stdout(log).stderr(stderr_log);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        let child =
            command.spawn().with_context(|| format!("cannot start {} ({})", launch.name, launch.program.display()))?;
        Ok(Process { name: launch.name.to_string(), child, log_path, exited: None })
    }

    /// The name given at launch.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has ended (it is then reaped), or None while it runs.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().with_context(|| format!("cannot poll {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// Fails if the process has ended; for waits on something only a live process can do.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.exit_status()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} (pid {}) exited with {status}; last lines of its log:\n{}",
                self.name,
                self.pid(),
                self.log_tail(crate::cluster::LOG_TAIL_LINES)
            ),
        }
    }

    /// Kills the process with SIGKILL (by its PID) and reaps it. Does nothing if it already ended.
    pub fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // An error means the process already exited (and `wait` below reaps it): nothing to kill.
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.exited = Some(status),
            Err(e) => eprintln!("cannot reap {} (pid {}): {e}", self.name, self.pid()),
        }
    }

    /// The last `lines` lines of the log (the whole log if shorter).
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log_path.display()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates an empty file, or truncates it (for per-run outputs such as a CLI call's stdout).
pub(crate) fn fresh_file(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

//! JobManager settings: flags, environment variables, and the config file (see `sluice_common::config`).
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sluice_common::bounds::{
    heartbeat_bounds_fit, HEARTBEATS_PER_TIMEOUT_MIN, HEARTBEAT_INTERVAL_DEFAULT, HEARTBEAT_TIMEOUT_DEFAULT,
};
use sluice_common::confine::ConfinementArgs;
use sluice_common::job::checkpoint::CHECKPOINT_INTERVAL_MS_MIN;

use crate::rest::SUBMISSIONS_PER_SECOND_DEFAULT;
use crate::store::{RetentionPolicy, CHECKPOINT_HISTORY_ROWS_DEFAULT, FINISHED_JOB_RETENTION_DEFAULT};

/// A Sluice JobManager: the REST API, the TaskManagers' gRPC service, the scheduler and the job actors.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-jobmanager", version)]
pub struct JobManagerConfig {
    /// A TOML file with any of these settings, keyed by flag name (`rest-addr = "127.0.0.1:8081"`).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (flags > environment > file > defaults; secrets masked) and exit:
    /// 0 when it is valid, 1 naming each invalid value. Reads no secret file and opens nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Where to serve the REST API and the web UI (port 0: pick a free one). Loopback by default: serving
    /// other hosts is a choice (`0.0.0.0:8081`), and needs authentication or --insecure.
    #[arg(long, env = "REST_ADDR", default_value = "127.0.0.1:8081")]
    pub rest_addr: String,

    /// Where to serve the gRPC service TaskManagers call (port 0: pick a free one). Loopback by default;
    /// TaskManagers on other hosts need an address they can reach (`0.0.0.0:6123`).
    #[arg(long, env = "RPC_ADDR", default_value = "127.0.0.1:6123")]
    pub rpc_addr: String,

    /// Working directory: the SQLite metadata file and the address file live here.
    #[arg(long, env = "DATA_DIR", default_value = "data/jobmanager")]
    pub data_dir: PathBuf,

    /// The metadata database; by default a SQLite file `<data-dir>/sluice.db`, created when missing.
    /// (`--help` does not show the variable's value: it may hold a password.)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The host name or IP other processes reach this JobManager at (in Kubernetes, the pod IP). It goes into
    /// the leader lease, so that standbys can say where the leader is. Default: the bound address (loopback
    /// for an unspecified one).
    #[arg(long, env = "ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// How often the leader renews its lease in the metadata store, and a standby tries to take it (ms).
    #[arg(long, env = "LEASE_RENEW_INTERVAL_MS", default_value_t = millis(crate::leader::LEASE_RENEW_INTERVAL_DEFAULT), value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub lease_renew_interval_ms: u64,

    /// How long the lease lasts after a renewal (ms): a leader that renews nothing for this long (dead, stalled,
    /// or cut off from the database) is replaced by a standby, and its writes are refused from then on. At least
    /// 3 × the renew interval.
    #[arg(long, env = "LEASE_TIMEOUT_MS", default_value_t = millis(crate::leader::LEASE_TIMEOUT_DEFAULT), value_parser = clap::value_parser!(u64).range(30..=600_000))]
    pub lease_timeout_ms: u64,

    /// How often TaskManagers send heartbeats, in milliseconds.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value_t = millis(HEARTBEAT_INTERVAL_DEFAULT), value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub heartbeat_interval_ms: u64,

    /// A TaskManager silent for this long (milliseconds) is LOST and its jobs fail. At least twice the
    /// heartbeat interval.
    #[arg(long, env = "HEARTBEAT_TIMEOUT", default_value_t = millis(HEARTBEAT_TIMEOUT_DEFAULT), value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub heartbeat_timeout_ms: u64,

    /// How long a cancelling or failing job waits for its tasks to stop before it is closed anyway (ms).
    #[arg(long, env = "CANCEL_TIMEOUT", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub cancel_timeout_ms: u64,

    /// Where checkpoints go: a directory every TaskManager can write and the JobManager can delete in, or
    /// `s3://bucket/prefix` / `gs://bucket/prefix` (each job gets `<location>/<job id>/chk-N/`). Default
    /// `<data-dir>/checkpoints`.
    #[arg(long, env = "CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<String>,

    /// Checkpoints in S3 (`s3://bucket/prefix`); when set, it takes the place of CHECKPOINT_DIR. Endpoint and
    /// credentials come from the usual AWS variables (AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...).
    #[arg(long, env = "S3_CHECKPOINT_PATH")]
    pub s3_checkpoint_path: Option<String>,

    /// Where savepoints go unless a request names a location (a directory, `s3://` or `gs://`). Default
    /// `<data-dir>/savepoints`.
    #[arg(long, env = "SAVEPOINT_DIR")]
    pub savepoint_dir: Option<String>,

    /// Checkpoint interval (ms) for jobs whose config sets none; 0 leaves them without periodic checkpoints.
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub checkpoint_interval_ms: u64,

    /// The most jobs that may be unfinished at once (running, waiting for slots, restarting); a submission beyond
    /// it is answered 429 until one ends.
    #[arg(long, env = "MAX_RUNNING_JOBS", default_value_t = MAX_RUNNING_JOBS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_running_jobs: u64,

    /// The most job submissions a second (a token bucket holding 3 s worth); one beyond it is answered 429
    /// with Retry-After.
    #[arg(long, env = "SUBMISSIONS_PER_SECOND", default_value_t = SUBMISSIONS_PER_SECOND_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub submissions_per_second: u32,

    /// Checkpoint rows kept per job whose files are gone (failed, or discarded by retention), newest first;
    /// older ones are deleted from the metadata store. The retained checkpoints are always kept.
    #[arg(long, env = "CHECKPOINT_HISTORY_ROWS", default_value_t = CHECKPOINT_HISTORY_ROWS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub checkpoint_history_rows: u32,

    /// Finished jobs (FINISHED, FAILED, CANCELED) that ended longer ago than this (ms) are deleted from the
    /// metadata store with their attempts and checkpoint rows; 0 keeps them for good. Default: 7 days.
    #[arg(long, env = "FINISHED_JOB_RETENTION", default_value_t = millis(FINISHED_JOB_RETENTION_DEFAULT), value_parser = clap::value_parser!(u64).range(0..=3_153_600_000_000))]
    pub finished_job_retention_ms: u64,

    /// REST authentication.
    #[command(flatten)]
    pub rest_auth: crate::security::RestAuthArgs,

    /// Cluster authentication (the secret TaskManagers share with the JobManager).
    #[command(flatten)]
    pub cluster_auth: sluice_common::cluster_auth::ClusterAuthArgs,

    /// TLS on REST, the RPC port, and calls to TaskManagers.
    #[command(flatten)]
    pub tls: sluice_common::tls::TlsArgs,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// What jobs may read, write and reach (see `sluice_common::confine`).
    #[command(flatten)]
    pub confinement: ConfinementArgs,
}

impl JobManagerConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("sluice.db").display()),
        }
    }

    /// The timing settings the job actors and the gRPC service use; an error names settings that contradict
    /// each other.
    pub fn settings(&self) -> Result<Settings, String> {
        let (interval, timeout) =
            (Duration::from_millis(self.heartbeat_interval_ms), Duration::from_millis(self.heartbeat_timeout_ms));
        if !heartbeat_bounds_fit(interval, timeout) {
            return Err(format!(
                "HEARTBEAT_TIMEOUT ({} ms) must be at least {HEARTBEATS_PER_TIMEOUT_MIN} × HEARTBEAT_INTERVAL ({} ms): \
                 one late heartbeat would lose a TaskManager",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        let renewals = u64::from(crate::leader::RENEWALS_PER_LEASE_MIN);
        if self.lease_renew_interval_ms.saturating_mul(renewals) > self.lease_timeout_ms {
            return Err(format!(
                "LEASE_TIMEOUT_MS ({} ms) must be at least {renewals} × LEASE_RENEW_INTERVAL_MS ({} ms): one slow \
                 renewal would cost the lead",
                self.lease_timeout_ms, self.lease_renew_interval_ms
            ));
        }
        Ok(Settings {
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            cancel_timeout: Duration::from_millis(self.cancel_timeout_ms),
            max_running_jobs: usize::try_from(self.max_running_jobs).unwrap_or(usize::MAX),
            checkpoint_interval: (self.checkpoint_interval_ms > 0)
                .then(|| Duration::from_millis(self.checkpoint_interval_ms.max(CHECKPOINT_INTERVAL_MS_MIN))),
            submissions_per_second: self.submissions_per_second,
            retention: RetentionPolicy {
                checkpoint_history_rows: self.checkpoint_history_rows.max(1),
                finished_job_age: (self.finished_job_retention_ms > 0)
                    .then(|| Duration::from_millis(self.finished_job_retention_ms)),
            },
        })
    }

    /// The leader lease's settings.
    pub fn lease_settings(&self) -> crate::leader::LeaseSettings {
        crate::leader::LeaseSettings {
            renew_interval: Duration::from_millis(self.lease_renew_interval_ms),
            timeout: Duration::from_millis(self.lease_timeout_ms),
        }
    }

    /// What `--check-config` finds wrong beyond what clap checks value by value (ranges, choices): settings
    /// that contradict each other, addresses and locations that cannot work. Every problem, not just the first.
    /// Nothing is opened, resolved or read.
    pub fn problems(&self) -> Vec<String> {
        use sluice_common::config::{host_port_problem, storage_location_problem};
        let mut problems: Vec<String> = self.settings().err().into_iter().collect();
        problems.extend(host_port_problem("REST_ADDR", &self.rest_addr));
        problems.extend(host_port_problem("RPC_ADDR", &self.rpc_addr));
        problems.extend(storage_location_problem("CHECKPOINT_DIR / S3_CHECKPOINT_PATH", &self.checkpoint_location()));
        problems.extend(storage_location_problem("SAVEPOINT_DIR", &self.savepoint_location()));
        if let Some(path) = self.s3_checkpoint_path.as_deref().filter(|p| !p.trim().is_empty()) {
            if !(path.starts_with("s3://") || path.starts_with("s3a://")) {
                problems.push(format!("S3_CHECKPOINT_PATH '{path}' is not an s3:// location (use CHECKPOINT_DIR)"));
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let shown = self.database_url.as_ref().map_or(String::new(), |_| {
                let masked = sluice_common::config::mask_url_password(&url);
                format!(" '{masked}'")
            });
            problems.push(format!("DATABASE_URL{shown} is neither sqlite:... nor postgres://..."));
        }
        if let Ok(rest) = self.rest_addr.parse::<std::net::SocketAddr>() {
            problems.extend(crate::security::check_bind_policy(&self.rest_auth, rest).err().map(|e| e.to_string()));
        }
        problems.extend(self.tls.problems());
        problems
    }

    /// The savepoint location in effect.
    pub fn savepoint_location(&self) -> String {
        let default = || self.data_dir.join("savepoints").display().to_string();
        self.savepoint_dir.clone().filter(|l| !l.trim().is_empty()).unwrap_or_else(default)
    }

    /// The checkpoint location in effect: S3_CHECKPOINT_PATH, else CHECKPOINT_DIR, else
    /// `<data-dir>/checkpoints` (a directory is made absolute when opened: TaskManagers may run elsewhere).
    pub fn checkpoint_location(&self) -> String {
        let default = || self.data_dir.join("checkpoints").display().to_string();
        let set = |l: &Option<String>| l.clone().filter(|l| !l.trim().is_empty());
        set(&self.s3_checkpoint_path).or_else(|| set(&self.checkpoint_dir)).unwrap_or_else(default)
    }
}

/// Timing settings shared by the control plane.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Told to TaskManagers at registration.
    pub heartbeat_interval: Duration,
    /// Silence after which a TaskManager is LOST.
    pub heartbeat_timeout: Duration,
    /// Bound on waiting for tasks to stop when cancelling or failing a job.
    pub cancel_timeout: Duration,
    /// Periodic checkpoints for jobs that configure none (CHECKPOINT_INTERVAL).
    pub checkpoint_interval: Option<Duration>,
    /// The most unfinished jobs at once (MAX_RUNNING_JOBS).
    pub max_running_jobs: usize,
    /// Job submissions a second (SUBMISSIONS_PER_SECOND).
    pub submissions_per_second: u32,
    /// What the metadata retention task keeps (CHECKPOINT_HISTORY_ROWS, FINISHED_JOB_RETENTION).
    pub retention: RetentionPolicy,
}

/// The default of `--max-running-jobs`: far above what a cluster's slots run, low enough that a script submitting
/// in a loop is stopped before the JobManager holds an actor and a store row per submission without end.
pub const MAX_RUNNING_JOBS_DEFAULT: u64 = 1_000;

/// A default duration as the whole milliseconds a flag takes.
const fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<JobManagerConfig, clap::Error> {
        JobManagerConfig::try_parse_from(std::iter::once("sluice-jobmanager").chain(args.iter().copied()))
    }

    /// Goal: the settings the Kubernetes manifests give the JobManager pass `--check-config`. Method: the
    /// JobManager container's flags of `deploy/k8s/base`, with PostgreSQL and an object-store checkpoint location.
    #[test]
    fn the_kubernetes_settings_have_no_problems() -> Result<(), clap::Error> {
        let config = config(&[
            "--check-config",
            "--rest-addr=0.0.0.0:8081",
            "--rpc-addr=0.0.0.0:6123",
            "--data-dir=/var/lib/sluice",
            "--database-url=postgres://sluice:pw@postgres:5432/sluice",
            "--checkpoint-dir=gs://bucket/checkpoints",
            "--savepoint-dir=gs://bucket/savepoints",
            "--admin-token-file=/etc/sluice/secret/admin.token",
            "--cluster-secret-file=/etc/sluice/secret/cluster.secret",
            "--metrics-auth=open",
        ])?;
        assert!(config.check_config);
        assert_eq!(config.problems(), Vec::<String>::new());
        Ok(())
    }

    /// Goal: every problem is reported at once, each naming its setting. Method: six at the same time.
    #[test]
    fn every_problem_is_reported_naming_its_setting() -> Result<(), clap::Error> {
        let config = config(&[
            "--heartbeat-interval-ms=1000",
            "--heartbeat-timeout-ms=1500",
            "--rpc-addr=jobmanager",
            "--checkpoint-dir=hdfs://nn/checkpoints",
            "--database-url=mysql://u:hunter2@db/sluice",
            "--rest-addr=0.0.0.0:8081",
            "--rest-auth=none",
            "--tls=on",
        ])?;
        let problems = config.problems();
        let joined = problems.join("\n");
        for expected in
            ["HEARTBEAT_TIMEOUT", "RPC_ADDR", "hdfs", "DATABASE_URL", "without authentication", "--tls-key-file"]
        {
            assert!(joined.contains(expected), "{expected} missing from:\n{joined}");
        }
        assert!(!joined.contains("hunter2"), "a password in a problem: {joined}");
        Ok(())
    }

    #[test]
    fn a_value_out_of_range_is_refused_by_the_parser() {
        let refused = config(&["--heartbeat-interval-ms=1"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("heartbeat-interval-ms"), "{refused}");
    }
}

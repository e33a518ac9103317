//! TaskManager settings: flags, environment variables, and the config file (see `sluice_common::config`).
use std::path::PathBuf;

use clap::Parser;
use sluice_common::confine::ConfinementArgs;

use crate::network::{
    BUFFER_SIZE_BYTES_DEFAULT, CREDIT_INITIAL_DEFAULT, FLOATING_BUFFERS_DEFAULT, MAX_FRAME_BYTES_DEFAULT,
    OUTPUT_QUEUE_BUFFERS_DEFAULT,
};

/// The default of `--drain-timeout-ms`: a minute covers a checkpoint of moderate state to object storage and
/// the redeployment; Kubernetes' default grace period (30 s) is raised above it by the manifests.
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// A Sluice TaskManager: runs the tasks the JobManager deploys into its slots.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-taskmanager", version)]
pub struct TaskManagerConfig {
    /// A TOML file with any of these settings, keyed by flag name (`slots = 4`).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (flags > environment > file > defaults; secrets masked) and exit:
    /// 0 when it is valid, 1 naming each invalid value. Reads no secret file and opens nothing.
    #[arg(long)]
    pub check_config: bool,

    /// The JobManager's RPC address; with several JobManagers (a leader and standbys), each of them,
    /// comma-separated (`jm-a:6123,jm-b:6123`): the TaskManager finds the leader among them.
    #[arg(long, env = "JOBMANAGER", default_value = "127.0.0.1:6123")]
    pub jobmanager: String,

    /// Where to serve the control RPCs (port 0: pick a free one).
    #[arg(long, env = "TM_RPC_ADDR", default_value = "127.0.0.1:0")]
    pub rpc_addr: String,

    /// Where to serve the data port that other TaskManagers connect to (port 0: pick a free one).
    #[arg(long, env = "TM_DATA_ADDR", default_value = "127.0.0.1:0")]
    pub data_addr: String,

    /// Where to serve `GET /metrics` (Prometheus) and `GET /health` (port 0: pick a free one).
    #[arg(long, env = "TM_METRICS_ADDR", default_value = "127.0.0.1:0")]
    pub metrics_addr: String,

    /// The host name or IP others use to reach this TaskManager when it binds a wildcard address
    /// (0.0.0.0); by default the bound IP, or 127.0.0.1 for a wildcard.
    #[arg(long, env = "TM_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// Task slots offered to the JobManager.
    #[arg(long, env = "TASK_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub slots: u32,

    /// Working directory for this TaskManager's files (its address file, later local state).
    #[arg(long, env = "TM_DATA_DIR", default_value = "data/taskmanager")]
    pub data_dir: PathBuf,

    /// This TaskManager's id; a restarted TaskManager with the same id replaces the old registration.
    #[arg(long, env = "TASK_MANAGER_ID")]
    pub id: Option<String>,

    /// Size of one network buffer in bytes: the unit of credit. Bigger batches are split.
    #[arg(long, env = "BUFFER_SIZE", default_value_t = BUFFER_SIZE_BYTES_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub buffer_size: u64,

    /// Floating buffers per input gate, granted to the channels that announce a backlog.
    #[arg(long, env = "BUFFER_POOL_SIZE", default_value_t = FLOATING_BUFFERS_DEFAULT)]
    pub buffer_pool_size: u32,

    /// Exclusive credits (buffers) per input channel.
    #[arg(long, env = "CREDIT_INITIAL", default_value_t = CREDIT_INITIAL_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub credit_initial: u32,

    /// Buffers a subpartition may queue before the producing task waits.
    #[arg(long, env = "OUTPUT_QUEUE_BUFFERS", default_value_t = OUTPUT_QUEUE_BUFFERS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub output_queue_buffers: u32,

    /// The largest frame accepted on the data port, in bytes; a larger length prefix closes the connection.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = MAX_FRAME_BYTES_DEFAULT as u64)]
    pub max_frame_bytes: u64,

    /// Worker threads of the data runtime that runs tasks (default: one per core).
    #[arg(long, env = "TM_DATA_THREADS")]
    pub data_threads: Option<usize>,

    /// Where keyed state lives for jobs that do not choose: heap (memory) or rocksdb (local disk under
    /// the data dir).
    #[arg(long, env = "STATE_BACKEND", default_value = "heap", value_parser = ["heap", "rocksdb"])]
    pub state_backend: String,

    /// RocksDB state: bytes of one memtable (write buffer) per state; also the unit in which the
    /// memtables of one subtask's instance are bounded (this times --rocksdb-max-write-buffers, over all
    /// its states).
    #[arg(long, env = "ROCKSDB_WRITE_BUFFER_SIZE", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..=4 * 1024 * 1024 * 1024))]
    pub rocksdb_write_buffer_size: u64,

    /// RocksDB state: memtables per state kept in memory (the active one plus those being flushed).
    #[arg(long, env = "ROCKSDB_MAX_WRITE_BUFFERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub rocksdb_max_write_buffers: u32,

    /// RocksDB state: bytes of the LRU block cache (data, index and filter blocks) that every RocksDB
    /// instance of this TaskManager shares.
    #[arg(long, env = "ROCKSDB_BLOCK_CACHE_SIZE", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024 * 1024..))]
    pub rocksdb_block_cache_size: u64,

    /// Cluster authentication: the secret shared with the JobManager.
    #[command(flatten)]
    pub cluster_auth: sluice_common::cluster_auth::ClusterAuthArgs,

    /// TLS on the RPC and data ports and on calls to the JobManager.
    #[command(flatten)]
    pub tls: sluice_common::tls::TlsArgs,

    /// On SIGTERM, how long (ms) the TaskManager waits for the JobManager to checkpoint its jobs and move their
    /// tasks elsewhere before it cancels what still runs and exits (a second SIGTERM or Ctrl-C exits at once).
    /// Keep it below the pod's `terminationGracePeriodSeconds`.
    #[arg(long, env = "TM_DRAIN_TIMEOUT_MS", default_value_t = DRAIN_TIMEOUT_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub drain_timeout_ms: u64,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// What jobs may read, write and reach (see `sluice_common::confine`).
    #[command(flatten)]
    pub confinement: ConfinementArgs,
}

impl TaskManagerConfig {
    /// What `--check-config` finds wrong beyond what clap checks value by value: addresses that cannot work, a
    /// missing cluster secret or TLS file. Every problem, not just the first. Nothing is opened, resolved or read.
    pub fn problems(&self) -> Vec<String> {
        use sluice_common::config::host_port_problem;
        let mut problems = Vec::new();
        let addresses: Vec<&str> = crate::control::jobmanager_addresses(&self.jobmanager).collect();
        if addresses.is_empty() {
            problems.push("JOBMANAGER names no address".to_string());
        }
        for address in addresses {
            problems.extend(host_port_problem("JOBMANAGER", address));
        }
        problems.extend(host_port_problem("TM_RPC_ADDR", &self.rpc_addr));
        problems.extend(host_port_problem("TM_DATA_ADDR", &self.data_addr));
        problems.extend(host_port_problem("TM_METRICS_ADDR", &self.metrics_addr));
        if let Some(host) = &self.advertise_host {
            if let Some(problem) = host_port_problem("TM_ADVERTISE_HOST", &format!("{host}:0")) {
                problems.push(format!("{problem} (give a host or IP without a port)"));
            }
        }
        if self.cluster_auth.cluster_auth == "secret" && self.cluster_auth.cluster_secret_file.is_none() {
            problems.push(
                "--cluster-auth secret needs --cluster-secret-file (CLUSTER_SECRET_FILE), the JobManager's secret"
                    .to_string(),
            );
        }
        if self.data_threads == Some(0) {
            problems.push("TM_DATA_THREADS must be at least 1".to_string());
        }
        problems.extend(self.tls.problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<TaskManagerConfig, clap::Error> {
        TaskManagerConfig::try_parse_from(std::iter::once("sluice-taskmanager").chain(args.iter().copied()))
    }

    /// Goal: the settings the Kubernetes manifests give a TaskManager pass `--check-config`. Method: the
    /// TaskManager container's flags of `deploy/k8s/base`, the pod IP as the advertised host.
    #[test]
    fn the_kubernetes_settings_have_no_problems() -> Result<(), clap::Error> {
        let config = config(&[
            "--check-config",
            "--jobmanager=sluice-jobmanager-rpc:6123",
            "--rpc-addr=0.0.0.0:6124",
            "--data-addr=0.0.0.0:6125",
            "--metrics-addr=0.0.0.0:9249",
            "--advertise-host=10.4.2.17",
            "--slots=4",
            "--data-dir=/var/lib/sluice",
            "--cluster-secret-file=/etc/sluice/secret/cluster.secret",
            "--state-backend=rocksdb",
        ])?;
        assert!(config.check_config);
        assert_eq!(config.problems(), Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_naming_its_setting() -> Result<(), clap::Error> {
        let config =
            config(&["--jobmanager=jobmanager", "--advertise-host=10.0.0.1:6124", "--data-threads=0", "--tls=on"])?;
        let joined = config.problems().join("\n");
        for expected in ["JOBMANAGER", "TM_ADVERTISE_HOST", "CLUSTER_SECRET_FILE", "TM_DATA_THREADS", "--tls-ca-file"] {
            assert!(joined.contains(expected), "{expected} missing from:\n{joined}");
        }
        Ok(())
    }

    #[test]
    fn an_unknown_choice_is_refused_by_the_parser_with_the_valid_ones() {
        let refused = config(&["--state-backend=disk"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("heap") && refused.contains("rocksdb"), "{refused}");
    }
}

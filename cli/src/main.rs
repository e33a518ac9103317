//! `sluice`: the command-line client of a Sluice cluster.
//!
//! It speaks only the JobManager's REST API (the same one `curl` and the web UI use), so it needs no
//! gRPC, no cluster credentials and no knowledge of TaskManagers beyond what the API shows. Commands print
//! human-readable tables; `--json` prints the server's JSON instead, for scripts.
//!
//! Layout:
//! - [`client`]: one HTTP client with bounded timeouts; turns the server's `{"error": ...}` bodies into
//!   errors that carry the server's message;
//! - [`api`]: the JSON shapes of the REST answers the CLI reads (lenient: unknown fields are ignored);
//! - [`commands`]: one function per command: call the API, then print;
//! - [`wait`]: `sluice wait`, which polls a job until it ends, with a bounded wait;
//! - [`render`]: tables, timestamps, durations and byte counts for people.
//!
//! Exit codes: 0 success; 1 any error (the server's message is printed), and for `wait` a job that ended
//! in any state but FINISHED; 2 bad usage (clap); [`wait::EXIT_TIMED_OUT`] when `wait` gives up.
mod api;
mod client;
mod commands;
mod render;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_common::ids::JobId;

use client::Client;

/// The JobManager's REST address when neither `--jobmanager` nor `SLUICE_JOBMANAGER` names one.
const JOBMANAGER_URL_DEFAULT: &str = "http://127.0.0.1:8081";

/// Talk to a Sluice cluster through its JobManager's REST API.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// The JobManager's REST address (`http://host:port`; `host:port` works too).
    #[arg(long, global = true, env = "SLUICE_JOBMANAGER", default_value = JOBMANAGER_URL_DEFAULT)]
    jobmanager: String,

    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// A file whose first line is the token to send (a local cluster writes its admin token to
    /// `<data-dir>/admin.token`). Without it: the variable SLUICE_TOKEN, else `data/jobmanager/admin.token` if
    /// there is one (the JobManager's default data directory, run from the same directory).
    #[arg(long, global = true, env = "SLUICE_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// A CA certificate (PEM) to trust for an `https://` JobManager (one whose certificate your system does
    /// not already trust, like the CA of `scripts/gen-certs.sh`).
    #[arg(long, global = true, env = "SLUICE_CA_FILE")]
    ca_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a job file (JSON); prints the new job's id.
    Submit {
        /// The job file.
        file: PathBuf,
        /// Print only the job id (for scripts: `id=$(sluice submit -q job.json)`).
        #[arg(short, long)]
        quiet: bool,
        /// Start from this savepoint or retained checkpoint (its directory, as `sluice savepoint` prints).
        #[arg(long, short = 's', value_name = "PATH")]
        from_savepoint: Option<String>,
    },
    /// Check a job file locally, without a cluster: the same checks the JobManager makes at submission.
    Validate {
        /// The job file.
        file: PathBuf,
    },
    /// List every job.
    List,
    /// Show one job: status, timing, and per-vertex records and bytes.
    Status {
        /// The job id.
        job_id: String,
    },
    /// Ask the JobManager to cancel a job (returns at once; `sluice wait` follows it to CANCELED).
    Cancel {
        /// The job id.
        job_id: String,
    },
    /// Wait until a job ends. Exits 0 only if it FINISHED.
    Wait {
        /// The job id.
        job_id: String,
        /// Give up after this many seconds (exit code 124).
        #[arg(long, default_value_t = wait::TIMEOUT_SECONDS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Take a savepoint of a running job and wait for it; prints where it is.
    Savepoint {
        /// The job id.
        job_id: String,
        /// The directory to put it in (default: the JobManager's SAVEPOINT_DIR).
        #[arg(long, value_name = "DIR")]
        target_directory: Option<String>,
        /// Give up waiting after this many seconds (exit code 124; the savepoint goes on).
        #[arg(long, default_value_t = wait::TIMEOUT_SECONDS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Stop a job with a savepoint: the job ends FINISHED once the savepoint is complete; prints where it is.
    Stop {
        /// The job id.
        job_id: String,
        /// The directory to put the savepoint in (default: the JobManager's SAVEPOINT_DIR).
        #[arg(long, value_name = "DIR")]
        target_directory: Option<String>,
        /// Give up waiting after this many seconds (exit code 124).
        #[arg(long, default_value_t = wait::TIMEOUT_SECONDS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Show a job's checkpoints: counts, the latest, and the history.
    Checkpoints {
        /// The job id.
        job_id: String,
    },
    /// List the registered TaskManagers and their slots.
    Taskmanagers,
    /// Show the cluster's TaskManager and slot totals.
    Cluster,
}

/// The variable that holds a token itself (a file is better: a variable is inherited by every child process).
const TOKEN_VARIABLE: &str = "SLUICE_TOKEN";

/// The admin token of a JobManager started with its default data directory, from the same directory.
const LOCAL_TOKEN_FILE: &str = "data/jobmanager/admin.token";

/// The token to send: from `--token-file`, else `SLUICE_TOKEN`, else [`LOCAL_TOKEN_FILE`] when it exists; none
/// otherwise (the JobManager then answers 401 with what to do).
fn token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        return Ok(Some(sluice_common::secret::read_first(file)?));
    }
    if let Some(token) = std::env::var(TOKEN_VARIABLE).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    let local = std::path::Path::new(LOCAL_TOKEN_FILE);
    Ok(if local.exists() { Some(sluice_common::secret::read_first(local)?) } else { None })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli { jobmanager, json, token_file, ca_file, command } = cli;
    let client = || Client::new(&jobmanager, token(token_file.as_deref())?.as_deref(), ca_file.as_deref());
    match command {
        Command::Validate { file } => return commands::validate(&file),
        Command::Submit { file, quiet, from_savepoint } => {
            commands::submit(&client()?, &file, from_savepoint.as_deref(), quiet, json).await?
        }
        Command::Savepoint { job_id, target_directory, timeout } => {
            let target = target_directory.as_deref();
            let timeout = Duration::from_secs(timeout);
            return commands::savepoint(&client()?, &JobId(job_id), target, false, timeout, json).await;
        }
        Command::Stop { job_id, target_directory, timeout } => {
            let target = target_directory.as_deref();
            let timeout = Duration::from_secs(timeout);
            return commands::savepoint(&client()?, &JobId(job_id), target, true, timeout, json).await;
        }
        Command::Checkpoints { job_id } => commands::checkpoints(&client()?, &JobId(job_id), json).await?,
        Command::List => commands::list(&client()?, json).await?,
        Command::Status { job_id } => commands::status(&client()?, &JobId(job_id), json).await?,
        Command::Cancel { job_id } => commands::cancel(&client()?, &JobId(job_id), json).await?,
        Command::Wait { job_id, timeout } => {
            return wait::wait(&client()?, &JobId(job_id), Duration::from_secs(timeout), json).await;
        }
        Command::Taskmanagers => commands::taskmanagers(&client()?, json).await?,
        Command::Cluster => commands::cluster(&client()?, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

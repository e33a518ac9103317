//! `sluice-chaos`: runs an exactly-once job on a local cluster (1 JobManager, or `--jobmanagers K` on PostgreSQL;
//! 3 TaskManagers × 4 slots) while
//! killing TaskManagers (and optionally the JobManager) with SIGKILL, or with `--drain` sending them SIGTERM
//! (a graceful leave, as a Kubernetes drain does), then checks the output against an uninterrupted run's,
//! computed independently. Exits 1 if a record was lost, duplicated or wrong.
//! `scripts/chaos_test.sh` builds and runs it; see docs/failures.md.
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_tests::chaos::{parse_range, run, ChaosOptions};

#[derive(Parser, Debug)]
#[command(name = "sluice-chaos", about = "Kill TaskManagers while an exactly-once job runs; check its output")]
struct Args {
    /// How long the job's input lasts, in seconds (the run takes about this long, plus recoveries).
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Pause between TaskManager kills, `MIN-MAX` seconds, drawn uniformly.
    #[arg(long, default_value = "10-20")]
    kill_every: String,
    /// How long a killed TaskManager stays down, in seconds.
    #[arg(long, default_value_t = 2.0)]
    restart_after: f64,
    /// How many times to kill the JobManager, spread evenly over the run: with one, it is restarted at once; with
    /// standbys (`--jobmanagers`), the leader is killed, a standby takes over, and the killed one comes back as a
    /// standby after --restart-after.
    #[arg(long, default_value_t = 0)]
    kill_jobmanager: u32,
    /// JobManagers to run; more than one runs them on PostgreSQL (the server at SLUICE_TEST_POSTGRES_URL, which
    /// scripts/chaos_test.sh starts), one leading and the others standing by.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    jobmanagers: u64,
    /// Send TaskManagers SIGTERM instead of SIGKILL: each leaves gracefully and the job moves off it.
    #[arg(long)]
    drain: bool,
    /// Seeds the kill schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generator rows per second in all.
    #[arg(long, default_value_t = 2000.0)]
    rows_per_second: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("sluice-chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!(
        "chaos: {} s of input at {} rows/s, a TaskManager {} every {} s (down {} s), {} JobManager kill(s) of {}, seed {}",
        args.duration,
        args.rows_per_second,
        if args.drain { "drained (SIGTERM)" } else { "killed (SIGKILL)" },
        args.kill_every,
        args.restart_after,
        args.kill_jobmanager,
        args.jobmanagers,
        args.seed
    );
    match run(&options) {
        Ok(report) => {
            println!("{report}");
            if report.exact() {
                ExitCode::SUCCESS
            } else {
                println!("logs and output: {}", report.dir);
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sluice-chaos: the run failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn options(args: &Args) -> anyhow::Result<ChaosOptions> {
    anyhow::ensure!(args.duration > 0, "--duration must be positive");
    anyhow::ensure!(
        args.restart_after.is_finite() && args.restart_after >= 0.0,
        "--restart-after must be a number of seconds"
    );
    anyhow::ensure!(
        args.rows_per_second.is_finite() && args.rows_per_second >= 1.0,
        "--rows-per-second must be at least 1"
    );
    Ok(ChaosOptions {
        duration: Duration::from_secs(args.duration),
        kill_every: parse_range(&args.kill_every)?,
        restart_after: Duration::from_secs_f64(args.restart_after),
        kill_jobmanager: args.kill_jobmanager,
        job_managers: usize::try_from(args.jobmanagers).unwrap_or(1),
        drain: args.drain,
        seed: args.seed,
        rows_per_second: args.rows_per_second,
        ..ChaosOptions::default()
    })
}

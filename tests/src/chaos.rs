//! Chaos runs: an exactly-once job on a local cluster while TaskManagers (and optionally the JobManager)
//! are killed with SIGKILL at random moments (or, with [`ChaosOptions::drain`], sent SIGTERM so that they
//! leave gracefully), then its output checked against what an uninterrupted run emits, computed
//! independently ([`crate::windows::expected_of`]).
//!
//! Used by `scripts/chaos_test.sh` (through the `sluice-chaos` binary) and by a short run in the test suite.
//! Every process is started here and killed by PID when the run ends ([`Cluster`]'s guard). The schedule
//! (which TaskManager, when) comes from a seeded random generator, so a run can be repeated with `--seed`.
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cluster::{is_terminal_status, Cluster, ClusterSpec};
use crate::windows::{every_window_row, expected_of, job_of, Shape};
use crate::{JobId, JobStatus};

/// How a chaos run goes.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// How long the job's input lasts (the generator is rate-limited), and so roughly the run.
    pub duration: Duration,
    /// A TaskManager is killed after a pause drawn uniformly from this range.
    pub kill_every: (Duration, Duration),
    /// How long a killed TaskManager stays down before it is started again.
    pub restart_after: Duration,
    /// JobManager kills, spread evenly over the run. With one JobManager, it is started again at once on the
    /// same store and ports; with several ([`ChaosOptions::job_managers`]) the **leader** is killed, a standby
    /// takes over, and the killed one is started again (as a standby) after `restart_after`.
    pub kill_jobmanager: u32,
    /// JobManagers: more than one runs them on a fresh PostgreSQL database of the server at
    /// `SLUICE_TEST_POSTGRES_URL` (which `scripts/chaos_test.sh` starts), one leading, the others standing by.
    pub job_managers: usize,
    /// TaskManagers get SIGTERM instead of SIGKILL: each leaves gracefully (the JobManager checkpoints the job
    /// and moves it elsewhere) and must exit by itself, with status 0, within the recovery timeout.
    pub drain: bool,
    /// Seeds the schedule.
    pub seed: u64,
    /// TaskManagers, and slots each.
    pub task_managers: usize,
    /// Slots per TaskManager.
    pub slots: u32,
    /// Generator rows per second in all.
    pub rows_per_second: f64,
    /// Parallelism of every vertex of the job.
    pub parallelism: u32,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// One recovery may take at most this long before the run is declared failed.
    pub recovery_timeout: Duration,
    /// A recovery slower than this keeps the cluster's directory and prints its logs, for a post-mortem.
    pub slow_recovery: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            duration: Duration::from_secs(120),
            kill_every: (Duration::from_secs(10), Duration::from_secs(20)),
            restart_after: Duration::from_secs(2),
            kill_jobmanager: 0,
            job_managers: 1,
            drain: false,
            seed: 1,
            task_managers: 3,
            slots: 4,
            rows_per_second: 2_000.0,
            parallelism: 4,
            checkpoint_interval: Duration::from_millis(500),
            recovery_timeout: Duration::from_secs(60),
            slow_recovery: Duration::from_secs(10),
        }
    }
}

/// One kill and what followed.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// What was killed (a TaskManager id, or "jobmanager").
    pub killed: String,
    /// Seconds into the run.
    pub at: Duration,
    /// Kill → job RUNNING with every task of a new attempt running; None if the kill hit no task of the job.
    pub took: Option<Duration>,
    /// The checkpoint the new attempt restored, if any.
    pub restored_checkpoint: Option<u64>,
    /// A drain (SIGTERM), not a kill: how the TaskManager exited.
    pub drained: Option<std::process::ExitStatus>,
    /// For a drain: the stall the JobManager measured (notice → every task running elsewhere).
    pub reported_stall: Option<Duration>,
    /// For a drain: whether the checkpoint restored was triggered after the SIGTERM (the drain's own), not an
    /// earlier periodic one the job fell back to.
    pub fresh_checkpoint: Option<bool>,
    /// For a JobManager kill: kill → another JobManager leads (with one JobManager: its restart).
    pub takeover: Option<Duration>,
    /// For a JobManager kill: the restarts it caused (0 when the new leader adopted the running attempt).
    pub restarts_caused: Option<u64>,
}

/// What a chaos run saw and found.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    /// Every kill, in order.
    pub recoveries: Vec<Recovery>,
    /// Restarts of the job, as the JobManager counts them (a JobManager restart counts too).
    pub restarts: u64,
    /// Moves of the job off a leaving TaskManager, as the JobManager counts them (not restarts).
    pub relocations: u64,
    /// The job's final status.
    pub final_status: String,
    /// The run from submission to the job's end.
    pub elapsed: Duration,
    /// Time the job was RUNNING with every task running, by sampling.
    pub running: Duration,
    /// Windows expected, and the input records they cover.
    pub windows_expected: usize,
    /// Input records the expected windows count.
    pub records_expected: u64,
    /// Input records in committed windows that matched.
    pub records_verified: u64,
    /// Expected windows never committed.
    pub lost: usize,
    /// Windows committed more than once.
    pub duplicated: usize,
    /// Windows committed with another count or sum, or that no uninterrupted run emits.
    pub wrong: usize,
    /// Where the cluster's logs and output are (kept when the run found a problem).
    pub dir: String,
}

impl ChaosReport {
    /// Whether the output is exactly the uninterrupted run's.
    pub fn exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.wrong == 0
            && self.final_status.parse::<JobStatus>() == Ok(JobStatus::Finished)
    }

    /// The kills that hit the job, with their recovery times.
    pub fn recovery_times(&self) -> Vec<Duration> {
        self.recoveries.iter().filter_map(|r| r.took).collect()
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = self.took.map_or("no restart (no task there)".to_string(), |d| format!("{} ms", d.as_millis()));
        let restored = self.restored_checkpoint.map_or(String::new(), |c| format!(", restored checkpoint {c}"));
        let (what, how) = match self.drained {
            Some(exit) => {
                let checkpoint = match self.fresh_checkpoint {
                    Some(true) => "",
                    Some(false) => " (an EARLIER checkpoint than the drain's)",
                    None => " (its trigger time is not in the history)",
                };
                ("drained", format!("{checkpoint}, exited {exit}"))
            }
            None => ("killed", String::new()),
        };
        let reported = self.reported_stall.map_or(String::new(), |d| format!(" (JobManager: {} ms)", d.as_millis()));
        let how = match (self.takeover, self.restarts_caused) {
            (Some(takeover), Some(restarts)) => {
                format!("{how}; new leader in {} ms, restarts caused: {restarts}", takeover.as_millis())
            }
            _ => how,
        };
        write!(
            f,
            "  {:>6.1} s  {what} {:<14} running again in {took}{reported}{restored}{how}",
            self.at.as_secs_f64(),
            self.killed
        )
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tm_kills = self.recoveries.iter().filter(|r| !r.killed.starts_with("jobmanager")).count();
        let jm_kills = self.recoveries.len() - tm_kills;
        writeln!(f, "chaos run: {:.0} s, job {}", self.elapsed.as_secs_f64(), self.final_status)?;
        writeln!(
            f,
            "  kills: {tm_kills} TaskManager, {jm_kills} JobManager; job restarts: {}, moves: {}",
            self.restarts, self.relocations
        )?;
        for recovery in &self.recoveries {
            writeln!(f, "{recovery}")?;
        }
        let mut times = self.recovery_times();
        times.sort();
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            let median = times[times.len() / 2];
            writeln!(
                f,
                "  recovery: min {} ms, p50 {} ms, max {} ms",
                first.as_millis(),
                median.as_millis(),
                last.as_millis()
            )?;
        }
        let share = if self.elapsed.is_zero() { 0.0 } else { self.running.as_secs_f64() / self.elapsed.as_secs_f64() };
        writeln!(f, "  RUNNING (every task up): {:.1}% of the time", share * 100.0)?;
        writeln!(
            f,
            "  verified: {} of {} records in {} windows; lost {} windows, duplicated {}, wrong {}",
            self.records_verified, self.records_expected, self.windows_expected, self.lost, self.duplicated, self.wrong
        )?;
        write!(f, "  result: {}", if self.exact() { "EXACT" } else { "MISMATCH" })
    }
}

/// Runs the job under the options' schedule and checks its output.
pub fn run(options: &ChaosOptions) -> anyhow::Result<ChaosReport> {
    let mut spec = ClusterSpec { task_managers: options.task_managers, slots: options.slots, ..ClusterSpec::default() };
    if options.job_managers > 1 {
        spec = spec
            .job_managers(options.job_managers)
            .env("DATABASE_URL", crate::postgres::fresh_database("sluice_chaos"))
            .env("LEASE_TIMEOUT_MS", LEASE_TIMEOUT.as_millis())
            .env("LEASE_RENEW_INTERVAL_MS", LEASE_RENEW.as_millis())
            .env("HEARTBEAT_TIMEOUT", LEADER_LOSS_HEARTBEAT_TIMEOUT.as_millis());
    }
    let mut cluster = Cluster::start(spec);
    if options.job_managers > 1 {
        cluster.wait_for_leader(&[], options.recovery_timeout);
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    let rows = (options.duration.as_secs_f64() * options.rows_per_second) as i64;
    let shape = Shape {
        rows,
        rows_per_second: options.rows_per_second,
        source_parallelism: options.parallelism,
        window_parallelism: options.parallelism,
    };
    let sink = cluster.dir().join("output");
    let mut job = job_of(&shape, "HEAP", &sink);
    job["name"] = json!("chaos");
    job["config"]["checkpointing"] =
        json!({"interval_ms": options.checkpoint_interval.as_millis() as u64, "retained": 2});
    // Restarts as soon as possible: the point is to measure recovery, not to back off.
    job["config"]["restart_strategy"] =
        json!({"strategy": "EXPONENTIAL_DELAY", "initial_delay_ms": 0, "max_delay_ms": 1000});
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, options.recovery_timeout);
    let start = Instant::now();
    let mut report = ChaosReport { dir: cluster.dir().display().to_string(), ..ChaosReport::default() };

    let jm_kills_at: Vec<Duration> = (1..=options.kill_jobmanager)
        .map(|i| options.duration.mul_f64(f64::from(i) / f64::from(options.kill_jobmanager + 1)))
        .collect();
    let mut next_jm = 0;
    let mut down: Option<(usize, Instant)> = None;
    // A JobManager killed (with standbys) and when, to be started again after `restart_after`.
    let mut jm_down: Option<(usize, Instant)> = None;
    let mut next_kill = start + draw(&mut rng, options.kill_every);
    let mut sampler = Sampler::new();
    loop {
        let status = sampler.sample(&cluster, &id)?;
        if is_terminal_status(&status) {
            break;
        }
        let now = Instant::now();
        if now.duration_since(start) > options.duration * 3 + options.recovery_timeout {
            anyhow::bail!("the job did not end within {:?} (status {status})", options.duration * 3);
        }
        if let Some((index, since)) = down {
            if now.duration_since(since) >= options.restart_after {
                cluster.restart_task_manager(index);
                down = None;
            }
        }
        if let Some((index, since)) = jm_down {
            if now.duration_since(since) >= options.restart_after {
                cluster.start_job_manager_at(index);
                jm_down = None;
            }
        }
        // No kill in the input's last seconds: the job may finish before it notices, and the kill proves nothing.
        let in_input = now.duration_since(start) + QUIET_BEFORE_END < options.duration;
        if in_input
            && jm_down.is_none()
            && next_jm < jm_kills_at.len()
            && now.duration_since(start) >= jm_kills_at[next_jm]
        {
            next_jm += 1;
            let before = attempt(&cluster, &id);
            let at = now.duration_since(start);
            let (killed, takeover) = if options.job_managers > 1 {
                let (leader, _) = cluster.wait_for_leader(&[], options.recovery_timeout);
                cluster.kill_job_manager_at(leader);
                cluster.wait_for_leader(&[leader], options.recovery_timeout);
                jm_down = Some((leader, Instant::now()));
                (format!("jobmanager-{leader}"), now.elapsed())
            } else {
                cluster.restart_job_manager();
                ("jobmanager".to_string(), now.elapsed())
            };
            let mut recovery = await_recovery(&cluster, &id, &killed, at, now, None, options, &mut sampler)?;
            recovery.takeover = Some(takeover);
            recovery.restarts_caused = Some(attempt(&cluster, &id).saturating_sub(before));
            eprintln!("{recovery}");
            report.recoveries.push(recovery);
        } else if in_input && down.is_none() && now >= next_kill {
            let hosts = task_hosts(&cluster, &id);
            let candidates: Vec<usize> = (0..cluster.task_manager_count())
                .filter(|i| hosts.iter().any(|h| h == cluster.task_manager_id(*i)))
                .collect();
            if let Some(&index) = candidates.get(rng.random_range(0..candidates.len().max(1))) {
                let killed = cluster.task_manager_id(index).to_string();
                let before = attempt(&cluster, &id);
                let at = now.duration_since(start);
                let killed_at = Instant::now();
                let signalled_ms = chrono::Utc::now().timestamp_millis();
                let moves_before = cluster.job(&id)["relocations"].as_u64().unwrap_or(0);
                if options.drain {
                    cluster.terminate_task_manager(index);
                } else {
                    cluster.kill_task_manager(index);
                }
                let mut recovery =
                    await_recovery(&cluster, &id, &killed, at, killed_at, Some(before), options, &mut sampler)?;
                if options.drain {
                    recovery.reported_stall = reported_stall(&cluster, &id, moves_before);
                    recovery.fresh_checkpoint =
                        recovery.restored_checkpoint.map(|c| triggered_ms(&cluster, &id, c) >= Some(signalled_ms));
                    recovery.drained = Some(cluster.wait_for_task_manager_exit(index, options.recovery_timeout));
                }
                down = Some((index, Instant::now()));
                eprintln!("{recovery}");
                report.recoveries.push(recovery);
            }
            next_kill = Instant::now() + draw(&mut rng, options.kill_every);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    if let Some((index, _)) = down {
        cluster.restart_task_manager(index);
    }
    if let Some((index, _)) = jm_down {
        cluster.start_job_manager_at(index);
    }
    report.elapsed = start.elapsed();
    report.running = sampler.running;
    let details = cluster.job(&id);
    report.final_status = details["status"].as_str().unwrap_or_default().to_string();
    report.restarts = details["restarts"].as_u64().unwrap_or(0);
    report.relocations = details["relocations"].as_u64().unwrap_or(0);
    verify(&sink, rows, &mut report)?;
    let slow = report.recovery_times().iter().any(|took| *took > options.slow_recovery);
    let stale_move = report.recoveries.iter().any(|r| r.fresh_checkpoint == Some(false));
    if !report.exact() || slow || stale_move {
        cluster.print_logs();
        cluster.keep_directory();
    }
    Ok(report)
}

/// How long after REST shows a moved job running the JobManager may take to record the move's stall.
const STALL_RECORDED_WITHIN: Duration = Duration::from_secs(1);

/// The lease of the JobManagers of a run with standbys (a takeover comes within it after a leader's death).
const LEASE_TIMEOUT: Duration = Duration::from_millis(2000);
/// Their lease's renew interval.
const LEASE_RENEW: Duration = Duration::from_millis(500);
/// The TaskManagers' heartbeat timeout in a run with standbys: how long they wait for a dead leader before
/// looking for the next one (and reporting their tasks to it). The default 10 s of the test clusters would
/// make every takeover wait that long.
const LEADER_LOSS_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(3000);

/// How long before the end of the input no kill (or drain) starts.
const QUIET_BEFORE_END: Duration = Duration::from_secs(3);

/// How often the job's status is sampled (for the share of time RUNNING and recovery times).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn draw(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    Duration::from_secs_f64(rng.random_range(low.as_secs_f64()..high.as_secs_f64()))
}

fn attempt(cluster: &Cluster, id: &JobId) -> u64 {
    cluster.job(id)["attempt"].as_u64().unwrap_or(0)
}

/// The TaskManagers that run a task of the job now.
fn task_hosts(cluster: &Cluster, id: &JobId) -> Vec<String> {
    let metrics = cluster.job_metrics(id);
    let tasks = metrics["tasks"].as_array().cloned().unwrap_or_default();
    tasks.iter().filter_map(|t| t["task_manager_id"].as_str().map(str::to_string)).collect()
}

/// Waits until a new attempt (after `before`; any attempt when None, as after a JobManager kill, whose attempt
/// may be adopted) runs every task, and measures from `since`.
#[allow(clippy::too_many_arguments)]
fn await_recovery(
    cluster: &Cluster,
    id: &JobId,
    killed: &str,
    at: Duration,
    since: Instant,
    before: Option<u64>,
    options: &ChaosOptions,
    sampler: &mut Sampler,
) -> anyhow::Result<Recovery> {
    let deadline = since + options.recovery_timeout;
    loop {
        let details = cluster.job(id);
        // During a recovery the job is not up, whatever its status says.
        sampler.record(false);
        let status = details["status"].as_str().unwrap_or_default();
        let attempt = details["attempt"].as_u64().unwrap_or(0);
        if before.is_none_or(|before| attempt > before)
            && status == JobStatus::Running.as_str()
            && all_tasks_running(cluster, id)
        {
            let took = since.elapsed();
            let restored_checkpoint = details["restored_checkpoint"].as_u64();
            return Ok(Recovery {
                killed: killed.to_string(),
                at,
                took: Some(took),
                restored_checkpoint,
                drained: None,
                reported_stall: None,
                fresh_checkpoint: None,
                takeover: None,
                restarts_caused: None,
            });
        }
        if is_terminal_status(status) {
            anyhow::ensure!(
                status == JobStatus::Finished.as_str(),
                "the job ended {status} after killing {killed}: {details}"
            );
            return Ok(Recovery {
                killed: killed.to_string(),
                at,
                took: None,
                restored_checkpoint: None,
                drained: None,
                reported_stall: None,
                fresh_checkpoint: None,
                takeover: None,
                restarts_caused: None,
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no recovery within {:?} after killing {killed}: {details}",
            options.recovery_timeout
        );
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// The stall of the move that just ended, as the JobManager measured it: its `last_relocation_ms` once the
/// job counts more moves than `moves_before` and the stall is recorded (the actor records it just after REST shows
/// every task running). None if that does not happen within a second.
fn reported_stall(cluster: &Cluster, id: &JobId, moves_before: u64) -> Option<Duration> {
    let deadline = Instant::now() + STALL_RECORDED_WITHIN;
    loop {
        let details = cluster.job(id);
        let stall = details["last_relocation_ms"].as_u64();
        // The count goes up when the move starts redeploying, and clears the stall until every task runs again.
        if details["relocations"].as_u64().unwrap_or(0) > moves_before && stall.is_some() {
            return stall.map(Duration::from_millis);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// When checkpoint `checkpoint` of the job was triggered (ms since the epoch), from its history.
fn triggered_ms(cluster: &Cluster, id: &JobId, checkpoint: u64) -> Option<i64> {
    let history = cluster.get(&format!("/jobs/{}/checkpoints", id.0))["history"].clone();
    history.as_array()?.iter().find(|c| c["id"].as_u64() == Some(checkpoint))?["trigger_time"].as_i64()
}

fn all_tasks_running(cluster: &Cluster, id: &JobId) -> bool {
    let metrics = cluster.job_metrics(id);
    let tasks = metrics["tasks"].as_array().cloned().unwrap_or_default();
    !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
}

/// Adds up the time between samples in which the job was RUNNING with every task up.
struct Sampler {
    last: Option<(Instant, bool)>,
    running: Duration,
}

impl Sampler {
    fn new() -> Self {
        Sampler { last: None, running: Duration::ZERO }
    }

    fn sample(&mut self, cluster: &Cluster, id: &JobId) -> anyhow::Result<String> {
        let details = cluster.job(id);
        let up = details["status"] == JobStatus::Running.as_str() && all_tasks_running(cluster, id);
        self.record(up);
        Ok(details["status"].as_str().unwrap_or_default().to_string())
    }

    fn record(&mut self, up: bool) {
        let now = Instant::now();
        if let Some((then, was_up)) = self.last {
            if was_up {
                self.running += now.duration_since(then);
            }
        }
        self.last = Some((now, up));
    }
}

/// Compares the committed output with the uninterrupted run's windows.
fn verify(sink: &std::path::Path, rows: i64, report: &mut ChaosReport) -> anyhow::Result<()> {
    let expected = expected_of(rows);
    let committed = if sink.exists() { every_window_row(sink)? } else { BTreeMap::new() };
    report.windows_expected = expected.len();
    report.records_expected = expected.values().map(|(count, _)| count).sum();
    for (window, value) in &expected {
        match committed.get(window).map(Vec::as_slice) {
            None | Some([]) => report.lost += 1,
            Some([only]) if only == value => report.records_verified += value.0,
            Some([_]) => report.wrong += 1,
            Some(_) => report.duplicated += 1,
        }
    }
    report.wrong += committed.keys().filter(|w| !expected.contains_key(w)).count();
    Ok(())
}

/// Parses `MIN-MAX` seconds (`10-20`) or one number of seconds.
pub fn parse_range(text: &str) -> anyhow::Result<(Duration, Duration)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let seconds = |s: &str| -> anyhow::Result<Duration> {
        let value: f64 = s.trim().parse().with_context(|| format!("'{s}' is not a number of seconds"))?;
        anyhow::ensure!(value.is_finite() && value > 0.0, "'{s}' must be a positive number of seconds");
        Ok(Duration::from_secs_f64(value))
    };
    let (low, high) = (seconds(low)?, seconds(high)?);
    anyhow::ensure!(low <= high, "in '{text}', the minimum is above the maximum");
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_intervals_parse_as_seconds() {
        let range = parse_range("10-20").ok();
        assert_eq!(range, Some((Duration::from_secs(10), Duration::from_secs(20))));
        assert_eq!(parse_range("5").ok(), Some((Duration::from_secs(5), Duration::from_secs(5))));
        assert!(parse_range("20-10").is_err());
        assert!(parse_range("-3").is_err());
        assert!(parse_range("x-2").is_err());
    }
}

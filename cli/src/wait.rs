//! `sluice wait ID`: polls a job's status until it ends, so scripts can chain on its outcome.
//!
//! The REST API has no push channel, so this polls `GET /jobs/{id}/status` every [`POLL_INTERVAL`]; a job
//! takes seconds to change state, so a quarter second adds no visible delay. Every wait is bounded: by
//! `--timeout` (exit code [`EXIT_TIMED_OUT`], as `timeout(1)` uses), and a JobManager that stops
//! answering is tolerated for [`UNREACHABLE_POLLS_MAX`] polls in a row (a restart takes a few seconds)
//! before the wait fails. The exit code is 0 only when the job FINISHED: a FAILED or CANCELED job exits
//! 1, so `sluice wait $id && next-step` does the right thing.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use sluice_common::ids::JobId;

use crate::api::JobStatus;
use crate::client::{decode, Client, RequestError};
use crate::commands::print_json;

/// How long `wait` waits when `--timeout` is not given, in seconds. At the limit it exits
/// [`EXIT_TIMED_OUT`] and the job goes on.
pub const TIMEOUT_SECONDS_DEFAULT: u64 = 600;

/// The exit code when the timeout passes before the job ends.
pub const EXIT_TIMED_OUT: u8 = 124;

/// Time between two status polls.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Consecutive polls without an answer (connection refused, timeout, 503 from a busy store) that are
/// retried; one more fails the wait. 40 polls of 250 ms ride out a JobManager restart of about 10 s.
const UNREACHABLE_POLLS_MAX: u32 = 40;

/// Waits for `job_id` to end; exit 0 only for FINISHED.
pub async fn wait(client: &Client, job_id: &JobId, timeout: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    let path = format!("/jobs/{job_id}/status");
    let mut unreachable_polls = 0u32;
    let mut last_status = String::new();
    loop {
        match client.get(&path).await {
            Ok(answer) => {
                unreachable_polls = 0;
                let status: JobStatus = decode("GET /jobs/{id}/status", answer.clone())?;
                if status.status != last_status && !json {
                    eprintln!("job {job_id}: {}", describe(&status));
                    last_status.clone_from(&status.status);
                }
                if status.is_terminal() {
                    if json {
                        print_json(&answer)?;
                    }
                    return Ok(if status.is_finished() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
                }
            }
            Err(error) if is_transient(&error) && unreachable_polls < UNREACHABLE_POLLS_MAX => {
                unreachable_polls += 1;
                if unreachable_polls == 1 {
                    eprintln!("job {job_id}: no answer from the JobManager ({error}); retrying");
                }
            }
            Err(error) => return Err(error).with_context(|| format!("cannot follow job {job_id}")),
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
            eprintln!(
                "job {job_id}: still {} after {}s; giving up waiting (the job goes on)",
                if last_status.is_empty() { "unknown" } else { &last_status },
                timeout.as_secs()
            );
            return Ok(ExitCode::from(EXIT_TIMED_OUT));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `FAILED (TaskManager tm-1 lost)`, or just the status when there is no reason.
fn describe(status: &JobStatus) -> String {
    match status.reason.as_deref().filter(|r| !r.is_empty()) {
        Some(reason) => format!("{} ({reason})", status.status),
        None => status.status.clone(),
    }
}

/// Whether a failed poll may succeed if repeated: no answer, or the JobManager's store was busy.
fn is_transient(error: &RequestError) -> bool {
    match error {
        RequestError::Unreachable { .. } => true,
        RequestError::Server { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
        RequestError::BadAnswer { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_described_with_its_reason_when_it_has_one() {
        let failed =
            JobStatus { job_id: "j".into(), status: "FAILED".into(), reason: Some("no slots after 60s".into()) };
        assert_eq!(describe(&failed), "FAILED (no slots after 60s)");
        let running = JobStatus { job_id: "j".into(), status: "RUNNING".into(), reason: Some(String::new()) };
        assert_eq!(describe(&running), "RUNNING");
    }
}

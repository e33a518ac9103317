//! Waiting for a condition in another process: poll it, with a deadline, and say what was seen last.
//!
//! Tests never sleep for a fixed time hoping that something happened meanwhile. They name the condition
//! and the longest it may take; the poll interval only decides how soon after it holds the test notices.
use std::time::{Duration, Instant};

/// How often a condition is checked. Short enough that tests do not idle, long enough that polling a
/// REST endpoint costs the processes under test nothing noticeable.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One check of a condition.
pub enum Progress<T> {
    /// The condition holds; here is what the caller wanted.
    Ready(T),
    /// Not yet; this is what was observed (reported if the deadline passes).
    Pending(String),
}

/// Checks `probe` every [`POLL_INTERVAL`] until it is [`Progress::Ready`] or `timeout` has passed.
///
/// An `Err` from the probe ends the wait at once: it means the condition can no longer become true (for
/// example, a process died, or a job reached another terminal state).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Progress<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let observation = match probe()? {
            Progress::Ready(value) => return Ok(value),
            Progress::Pending(observation) => observation,
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {:.1?} waiting for {what}; last observed: {observation}", started.elapsed());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_becomes_true_returns_its_value() {
        let mut calls = 0;
        let got = poll_until("three calls", Duration::from_secs(5), || {
            calls += 1;
            Ok(if calls == 3 { Progress::Ready(calls) } else { Progress::Pending(format!("{calls} calls")) })
        });
        assert_eq!(got.ok(), Some(3));
    }

    #[test]
    fn a_timeout_reports_the_last_observation() {
        let got: anyhow::Result<()> =
            poll_until("never", Duration::from_millis(120), || Ok(Progress::Pending("still nothing".into())));
        let message = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("waiting for never") && message.contains("still nothing"), "{message}");
    }

    #[test]
    fn an_error_from_the_probe_ends_the_wait_at_once() {
        let started = Instant::now();
        let got: anyhow::Result<()> = poll_until("doomed", Duration::from_secs(30), || anyhow::bail!("gone"));
        assert!(got.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

//! Restart strategies (ARCHITECTURE.md §8): whether, and after how long, a failed job runs again.
//!
//! [`Restarts`] applies a job's [`RestartPolicy`] to its failures, one call per failure, keeping what the
//! policy needs (restarts so far, recent failure times, the current backoff). Time comes in as an
//! argument so that the policies are tested without waiting.
use std::collections::VecDeque;
use std::time::Duration;

use sluice_common::job::restart::RestartPolicy;
use tokio::time::Instant;

/// What to do after a failure.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartDecision {
    /// Give up: the job becomes FAILED; the text says why the strategy refused.
    Fail(String),
    /// Redeploy as the next attempt after `delay`.
    Restart {
        /// How long to wait first.
        delay: Duration,
    },
}

/// A job's restart strategy and its memory of earlier failures.
#[derive(Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    /// Restarts granted so far.
    granted: u32,
    /// Failure times within the failure-rate interval.
    recent: VecDeque<Instant>,
    /// Exponential-delay: the delay the next restart waits (before jitter).
    backoff: Duration,
}

impl Restarts {
    /// A job's strategy, before any failure.
    pub fn new(policy: RestartPolicy) -> Self {
        let backoff = match &policy {
            RestartPolicy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        Restarts { policy, granted: 0, recent: VecDeque::new(), backoff }
    }

    /// The strategy's name.
    pub fn name(&self) -> &'static str {
        self.policy.name()
    }

    /// The decision on a failure at `now`, the job having run since `running_since` (None if it never
    /// reached RUNNING in this attempt). Call once per failure.
    pub fn on_failure(&mut self, now: Instant, running_since: Option<Instant>) -> RestartDecision {
        let decision = match &self.policy {
            RestartPolicy::None => RestartDecision::Fail("the restart strategy is none".to_string()),
            RestartPolicy::FixedDelay { delay, attempts } => {
                if self.granted < *attempts {
                    RestartDecision::Restart { delay: *delay }
                } else {
                    RestartDecision::Fail(format!("fixed-delay restart strategy: all {attempts} restarts used"))
                }
            }
            RestartPolicy::FailureRate { delay, max_failures, interval } => {
                self.recent.push_back(now);
                while self.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > *interval) {
                    self.recent.pop_front();
                }
                if self.recent.len() > *max_failures as usize {
                    RestartDecision::Fail(format!(
                        "failure-rate restart strategy: {} failures within {} s, more than the {max_failures} allowed",
                        self.recent.len(),
                        interval.as_secs_f64()
                    ))
                } else {
                    RestartDecision::Restart { delay: *delay }
                }
            }
            RestartPolicy::ExponentialDelay { initial, max, multiplier, jitter, reset_after } => {
                if running_since.is_some_and(|since| now.saturating_duration_since(since) >= *reset_after) {
                    self.backoff = *initial;
                }
                let base = self.backoff.min(*max);
                self.backoff = base.mul_f64(*multiplier).min(*max);
                let spread = base.mul_f64(*jitter);
                let delay = if spread.is_zero() {
                    base
                } else {
                    // Uniform in [base - spread, base + spread], never negative.
                    let offset = spread.mul_f64(2.0 * rand::random::<f64>());
                    (base + offset).saturating_sub(spread)
                };
                RestartDecision::Restart { delay }
            }
        };
        if matches!(decision, RestartDecision::Restart { .. }) {
            self.granted += 1;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn none_fails_at_once_and_fixed_delay_counts_its_attempts() {
        let now = Instant::now();
        assert!(matches!(Restarts::new(RestartPolicy::None).on_failure(now, None), RestartDecision::Fail(_)));
        let mut fixed = Restarts::new(RestartPolicy::FixedDelay { delay: ms(250), attempts: 2 });
        assert_eq!(fixed.on_failure(now, None), RestartDecision::Restart { delay: ms(250) });
        assert_eq!(fixed.on_failure(now, None), RestartDecision::Restart { delay: ms(250) });
        match fixed.on_failure(now, None) {
            RestartDecision::Fail(why) => assert!(why.contains("all 2 restarts used"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn failure_rate_forgets_failures_older_than_its_interval() {
        let start = Instant::now();
        let mut rate = Restarts::new(RestartPolicy::FailureRate { delay: ms(10), max_failures: 2, interval: ms(1000) });
        assert!(matches!(rate.on_failure(start, None), RestartDecision::Restart { .. }));
        assert!(matches!(rate.on_failure(start + ms(100), None), RestartDecision::Restart { .. }));
        // The third within a second is one too many.
        match rate.on_failure(start + ms(200), None) {
            RestartDecision::Fail(why) => assert!(why.contains("3 failures within 1 s"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        // Past the interval the early ones no longer count.
        let mut rate = Restarts::new(RestartPolicy::FailureRate { delay: ms(10), max_failures: 2, interval: ms(1000) });
        for i in 0..10 {
            let at = start + ms(600 * i);
            assert!(matches!(rate.on_failure(at, None), RestartDecision::Restart { .. }), "failure {i}");
        }
    }

    #[test]
    fn exponential_delay_grows_to_its_cap_and_starts_over_after_a_long_run() {
        let start = Instant::now();
        let policy = RestartPolicy::ExponentialDelay {
            initial: ms(1000),
            max: ms(5000),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: ms(60_000),
        };
        let mut backoff = Restarts::new(policy);
        let delays: Vec<Duration> = (0..5)
            .map(|i| match backoff.on_failure(start + ms(i * 10), Some(start)) {
                RestartDecision::Restart { delay } => delay,
                other => panic!("expected a restart, got {other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]);
        let later = start + ms(200_000);
        assert_eq!(backoff.on_failure(later, Some(later - ms(60_000))), RestartDecision::Restart { delay: ms(1000) });
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let start = Instant::now();
        for _ in 0..100 {
            let policy = RestartPolicy::ExponentialDelay {
                initial: ms(1000),
                max: ms(1000),
                multiplier: 1.5,
                jitter: 0.1,
                reset_after: ms(1),
            };
            match Restarts::new(policy).on_failure(start, None) {
                RestartDecision::Restart { delay } => assert!(delay >= ms(900) && delay <= ms(1100), "{delay:?}"),
                other => panic!("expected a restart, got {other:?}"),
            }
        }
    }
}

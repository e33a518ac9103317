//! A job's restart strategy: validated at submission, resolved with its defaults for the JobManager.
//!
//! The strategies are Flink's: exponential-delay (the default for a job that checkpoints), fixed-delay,
//! failure-rate, and none (the default for a job that does not checkpoint, whose restart would replay its
//! sources from the start and repeat its output).
use std::time::Duration;

use crate::proto::{RestartStrategyConfig, RestartStrategyKind};

/// Exponential-delay: the first delay.
pub const INITIAL_DELAY_MS_DEFAULT: u64 = 1_000;
/// Exponential-delay: the largest delay.
pub const MAX_DELAY_MS_DEFAULT: u64 = 60_000;
/// Exponential-delay: the growth per restart.
pub const MULTIPLIER_DEFAULT: f64 = 1.5;
/// Exponential-delay: the random spread, as a fraction of the delay.
pub const JITTER_DEFAULT: f64 = 0.1;
/// Exponential-delay: after running this long without failure, the delay starts over.
pub const RESET_AFTER_MS_DEFAULT: u64 = 3_600_000;
/// Fixed-delay and failure-rate: the delay before each restart.
pub const DELAY_MS_DEFAULT: u64 = 1_000;
/// Fixed-delay: restarts allowed in the job's life.
pub const ATTEMPTS_DEFAULT: u32 = 3;
/// Failure-rate: failures allowed within the interval.
pub const MAX_FAILURES_DEFAULT: u32 = 3;
/// Failure-rate: the interval.
pub const FAILURE_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// The longest delay or interval accepted: a day. Anything longer is surely a unit mistake.
pub const DURATION_MS_MAX: u64 = 86_400_000;
/// The largest growth factor accepted.
pub const MULTIPLIER_MAX: f64 = 100.0;

/// A restart strategy with every setting resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum RestartPolicy {
    /// A failure fails the job.
    None,
    /// Restart after `delay`, at most `attempts` times in the job's life.
    FixedDelay {
        /// Before each restart.
        delay: Duration,
        /// Restarts allowed.
        attempts: u32,
    },
    /// Restart after `delay` unless more than `max_failures` failures happened within `interval`.
    FailureRate {
        /// Before each restart.
        delay: Duration,
        /// Failures allowed within the interval.
        max_failures: u32,
        /// The sliding window the failures are counted in.
        interval: Duration,
    },
    /// Restart after a delay that grows by `multiplier` per restart up to `max`, with `jitter`, and starts
    /// over at `initial` once the job ran `reset_after` without failing.
    ExponentialDelay {
        /// The first delay.
        initial: Duration,
        /// The largest delay.
        max: Duration,
        /// Growth per restart.
        multiplier: f64,
        /// Random spread, a fraction of the delay.
        jitter: f64,
        /// A failure-free run this long resets the delay.
        reset_after: Duration,
    },
}

impl RestartPolicy {
    /// The policy of a (validated) config; `checkpoints` says whether the job takes checkpoints, which
    /// decides the default.
    pub fn of(config: Option<&RestartStrategyConfig>, checkpoints: bool) -> Self {
        let default = RestartStrategyConfig::default();
        let config = config.unwrap_or(&default);
        let ms = |value: Option<u64>, default: u64| Duration::from_millis(value.unwrap_or(default));
        match config.strategy() {
            RestartStrategyKind::NoRestart => RestartPolicy::None,
            RestartStrategyKind::Unspecified if !checkpoints => RestartPolicy::None,
            RestartStrategyKind::FixedDelay => RestartPolicy::FixedDelay {
                delay: ms(config.delay_ms, DELAY_MS_DEFAULT),
                attempts: config.attempts.unwrap_or(ATTEMPTS_DEFAULT),
            },
            RestartStrategyKind::FailureRate => RestartPolicy::FailureRate {
                delay: ms(config.delay_ms, DELAY_MS_DEFAULT),
                max_failures: config.max_failures.unwrap_or(MAX_FAILURES_DEFAULT),
                interval: ms(config.failure_interval_ms, FAILURE_INTERVAL_MS_DEFAULT),
            },
            RestartStrategyKind::ExponentialDelay | RestartStrategyKind::Unspecified => {
                RestartPolicy::ExponentialDelay {
                    initial: ms(config.initial_delay_ms, INITIAL_DELAY_MS_DEFAULT),
                    max: ms(config.max_delay_ms, MAX_DELAY_MS_DEFAULT),
                    multiplier: config.multiplier.unwrap_or(MULTIPLIER_DEFAULT),
                    jitter: config.jitter.unwrap_or(JITTER_DEFAULT),
                    reset_after: ms(config.reset_after_ms, RESET_AFTER_MS_DEFAULT),
                }
            }
        }
    }

    /// The longest delay before a restart this policy can choose.
    pub fn longest_delay(&self) -> Duration {
        match self {
            RestartPolicy::None => Duration::ZERO,
            RestartPolicy::FixedDelay { delay, .. } | RestartPolicy::FailureRate { delay, .. } => *delay,
            RestartPolicy::ExponentialDelay { max, jitter, .. } => max.mul_f64(1.0 + jitter.max(0.0)),
        }
    }

    /// The name shown in logs, causes and the REST API.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::None => "none",
            RestartPolicy::FixedDelay { .. } => "fixed-delay",
            RestartPolicy::FailureRate { .. } => "failure-rate",
            RestartPolicy::ExponentialDelay { .. } => "exponential-delay",
        }
    }
}

/// Checks a job's restart strategy, pushing what is wrong into `problems`. Settings of another strategy
/// are refused rather than ignored, so a typo in the strategy's name cannot pass unnoticed.
pub(crate) fn check(config: &RestartStrategyConfig, problems: &mut Vec<String>) {
    let kind = config.strategy();
    let field = |name: &str| format!("config.restart_strategy.{name}");
    let mut duration = |name: &str, value: Option<u64>, min: u64| {
        if let Some(value) = value {
            if !(min..=DURATION_MS_MAX).contains(&value) {
                problems.push(format!("{} must be in {min}..={DURATION_MS_MAX} ms (got {value})", field(name)));
            }
        }
    };
    duration("initial_delay_ms", config.initial_delay_ms, 0);
    duration("max_delay_ms", config.max_delay_ms, 0);
    duration("reset_after_ms", config.reset_after_ms, 1);
    duration("delay_ms", config.delay_ms, 0);
    duration("failure_interval_ms", config.failure_interval_ms, 1);
    if let Some(multiplier) = config.multiplier {
        if !(1.0..=MULTIPLIER_MAX).contains(&multiplier) {
            problems.push(format!("{} must be in 1..={MULTIPLIER_MAX} (got {multiplier})", field("multiplier")));
        }
    }
    if let Some(jitter) = config.jitter {
        if !(0.0..=1.0).contains(&jitter) {
            problems.push(format!("{} must be in 0..=1 (got {jitter})", field("jitter")));
        }
    }
    if let (Some(initial), Some(max)) = (config.initial_delay_ms, config.max_delay_ms) {
        if initial > max {
            problems.push(format!(
                "{} ({initial}) must not exceed {} ({max})",
                field("initial_delay_ms"),
                field("max_delay_ms")
            ));
        }
    }
    if config.max_failures == Some(0) {
        problems.push(format!("{} must be at least 1", field("max_failures")));
    }
    let exponential = ["initial_delay_ms", "max_delay_ms", "multiplier", "jitter", "reset_after_ms"];
    let set: Vec<(&str, bool)> = vec![
        ("initial_delay_ms", config.initial_delay_ms.is_some()),
        ("max_delay_ms", config.max_delay_ms.is_some()),
        ("multiplier", config.multiplier.is_some()),
        ("jitter", config.jitter.is_some()),
        ("reset_after_ms", config.reset_after_ms.is_some()),
        ("delay_ms", config.delay_ms.is_some()),
        ("attempts", config.attempts.is_some()),
        ("max_failures", config.max_failures.is_some()),
        ("failure_interval_ms", config.failure_interval_ms.is_some()),
    ];
    let allowed: &[&str] = match kind {
        RestartStrategyKind::NoRestart => &[],
        RestartStrategyKind::FixedDelay => &["delay_ms", "attempts"],
        RestartStrategyKind::FailureRate => &["delay_ms", "max_failures", "failure_interval_ms"],
        RestartStrategyKind::ExponentialDelay | RestartStrategyKind::Unspecified => &exponential,
    };
    for (name, present) in set {
        if present && !allowed.contains(&name) {
            problems.push(format!(
                "{} does not apply to the strategy {}",
                field(name),
                RestartPolicy::of(Some(config), true).name()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_restarts_only_jobs_that_checkpoint() {
        assert_eq!(RestartPolicy::of(None, false), RestartPolicy::None);
        match RestartPolicy::of(None, true) {
            RestartPolicy::ExponentialDelay { initial, max, multiplier, .. } => {
                assert_eq!(initial, Duration::from_millis(INITIAL_DELAY_MS_DEFAULT));
                assert_eq!(max, Duration::from_millis(MAX_DELAY_MS_DEFAULT));
                assert!((multiplier - MULTIPLIER_DEFAULT).abs() < f64::EPSILON);
            }
            other => panic!("expected exponential-delay, got {other:?}"),
        }
        let fixed = RestartStrategyConfig {
            strategy: RestartStrategyKind::FixedDelay as i32,
            attempts: Some(5),
            ..Default::default()
        };
        assert_eq!(
            RestartPolicy::of(Some(&fixed), false),
            RestartPolicy::FixedDelay { delay: Duration::from_millis(DELAY_MS_DEFAULT), attempts: 5 }
        );
    }

    #[test]
    fn bad_or_foreign_settings_are_named() {
        let mut problems = Vec::new();
        let config = RestartStrategyConfig {
            strategy: RestartStrategyKind::FixedDelay as i32,
            multiplier: Some(0.5),
            jitter: Some(2.0),
            max_failures: Some(0),
            ..Default::default()
        };
        check(&config, &mut problems);
        let all = problems.join("\n");
        for needle in [
            "multiplier must be in",
            "jitter must be in",
            "max_failures must be at least 1",
            "multiplier does not apply to the strategy fixed-delay",
        ] {
            assert!(all.contains(needle), "'{needle}' not in {all}");
        }
        let mut none = Vec::new();
        check(&RestartStrategyConfig::default(), &mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}

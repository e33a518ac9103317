//! A job's checkpoint settings: validated at submission, resolved with their defaults for the coordinator.
use std::time::Duration;

use crate::proto::CheckpointConfig;

/// A checkpoint not complete after this long is aborted.
pub const CHECKPOINT_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Consecutive failed checkpoints a job tolerates before it fails.
pub const TOLERABLE_FAILURES_DEFAULT: u32 = 3;
/// Completed checkpoints kept.
pub const RETAINED_DEFAULT: u32 = 1;
/// Below this, an interval or timeout is surely a unit mistake (and would starve the job).
pub const CHECKPOINT_INTERVAL_MS_MIN: u64 = 10;
/// The most retained checkpoints a job may ask for.
pub const RETAINED_MAX: u32 = 100;

/// Checkpointing as the coordinator runs it: every setting resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Between the starts of two periodic checkpoints.
    pub interval: Duration,
    /// A checkpoint still incomplete after this long is aborted.
    pub timeout: Duration,
    /// The least time from the end of one checkpoint to the start of the next.
    pub min_pause: Duration,
    /// Consecutive failures tolerated; one more fails the job.
    pub tolerable_failures: u32,
    /// Completed checkpoints kept in storage.
    pub retained: u32,
    /// Whether a cancelled job keeps its retained checkpoints.
    pub retain_on_cancel: bool,
}

impl CheckpointPolicy {
    /// The policy of a (validated) config; None when checkpointing is off (interval 0).
    pub fn of(config: &CheckpointConfig) -> Option<Self> {
        (config.interval_ms > 0).then(|| Self {
            interval: Duration::from_millis(config.interval_ms),
            timeout: Duration::from_millis(config.timeout_ms.unwrap_or(CHECKPOINT_TIMEOUT_MS_DEFAULT)),
            min_pause: Duration::from_millis(config.min_pause_ms.unwrap_or(0)),
            tolerable_failures: config.tolerable_failures.unwrap_or(TOLERABLE_FAILURES_DEFAULT),
            retained: config.retained.unwrap_or(RETAINED_DEFAULT).max(1),
            retain_on_cancel: config.retain_on_cancel,
        })
    }

    /// The policy with every default and the given interval (the JobManager's CHECKPOINT_INTERVAL).
    pub fn with_interval(interval: Duration) -> Option<Self> {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self::of(&CheckpointConfig { interval_ms, ..Default::default() })
    }
}

/// Checks a job's checkpoint config, pushing what is wrong into `problems`, and fills in its defaults.
pub(crate) fn normalize(config: &mut CheckpointConfig, problems: &mut Vec<String>) {
    if config.interval_ms == 0 {
        return;
    }
    if config.interval_ms < CHECKPOINT_INTERVAL_MS_MIN {
        problems.push(format!(
            "config.checkpointing.interval_ms must be 0 (off) or at least {CHECKPOINT_INTERVAL_MS_MIN} (got {})",
            config.interval_ms
        ));
    }
    let timeout = *config.timeout_ms.get_or_insert(CHECKPOINT_TIMEOUT_MS_DEFAULT);
    if timeout < CHECKPOINT_INTERVAL_MS_MIN {
        problems.push(format!(
            "config.checkpointing.timeout_ms must be at least {CHECKPOINT_INTERVAL_MS_MIN} (got {timeout})"
        ));
    }
    config.min_pause_ms.get_or_insert(0);
    let concurrent = *config.max_concurrent.get_or_insert(1);
    if concurrent != 1 {
        problems
            .push(format!("config.checkpointing.max_concurrent must be 1, the only mode offered (got {concurrent})"));
    }
    config.tolerable_failures.get_or_insert(TOLERABLE_FAILURES_DEFAULT);
    let retained = *config.retained.get_or_insert(RETAINED_DEFAULT);
    if !(1..=RETAINED_MAX).contains(&retained) {
        problems.push(format!("config.checkpointing.retained must be in 1..={RETAINED_MAX} (got {retained})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_off_stays_off() {
        let mut problems = Vec::new();
        let mut config = CheckpointConfig { interval_ms: 1000, ..Default::default() };
        normalize(&mut config, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.timeout_ms, Some(CHECKPOINT_TIMEOUT_MS_DEFAULT));
        assert_eq!(config.retained, Some(RETAINED_DEFAULT));
        let policy = CheckpointPolicy::of(&config).expect("on");
        assert_eq!(policy.interval, Duration::from_millis(1000));
        assert_eq!(policy.tolerable_failures, TOLERABLE_FAILURES_DEFAULT);

        let mut off = CheckpointConfig::default();
        normalize(&mut off, &mut problems);
        assert_eq!(off, CheckpointConfig::default());
        assert!(CheckpointPolicy::of(&off).is_none());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut problems = Vec::new();
        let mut config = CheckpointConfig {
            interval_ms: 5,
            timeout_ms: Some(1),
            max_concurrent: Some(2),
            retained: Some(0),
            ..Default::default()
        };
        normalize(&mut config, &mut problems);
        let all = problems.join("\n");
        for field in ["interval_ms", "timeout_ms", "max_concurrent", "retained"] {
            assert!(all.contains(field), "{field} not named in {all}");
        }
    }
}

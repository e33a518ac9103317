//! Which part of a job limits it, from the busy and back-pressured shares of its tasks (Flink's model: a
//! task waiting for output credit is the victim of something downstream; the first task downstream that is
//! not waiting but busy is the cause).
//!
//! A chain is *the bottleneck* when it is busy (HIGH), not back-pressured itself (at most LOW), and every
//! chain feeding it is back-pressured (HIGH). A chain's vertices share its task's shares, so the verdict names
//! a chain, by its last vertex. Among its subtasks, one that receives far more than the mean is *key skew*:
//! the remedy then is another key, not more parallelism.
use serde::Serialize;

/// Up to this share of the time a task is OK (busy or back-pressured), up to [`LEVEL_HIGH_ABOVE`] LOW.
pub(super) const LEVEL_LOW_ABOVE: f64 = 0.10;
/// Above this share of the time a task is HIGH (Flink's thresholds).
pub(super) const LEVEL_HIGH_ABOVE: f64 = 0.50;
/// A subtask receiving at least this many times the mean rate of its vertex's subtasks is skew.
pub(super) const SKEW_RATIO_MIN: f64 = 1.5;

/// OK, LOW or HIGH, for a share of time (0-1).
pub(super) fn level(ratio: f64) -> &'static str {
    if ratio > LEVEL_HIGH_ABOVE {
        "HIGH"
    } else if ratio > LEVEL_LOW_ABOVE {
        "LOW"
    } else {
        "OK"
    }
}

/// One chain of a running job: its shares (the highest over its subtasks) and what feeds it.
#[derive(Clone, Debug, Default)]
pub(super) struct ChainLoad {
    pub index: u32,
    pub vertex_ids: Vec<String>,
    pub busy: f64,
    pub backpressured: f64,
    /// The chains with an edge into this one.
    pub upstream: Vec<u32>,
    /// Records per second into the chain's head, per subtask (index = subtask).
    pub subtask_rates: Vec<f64>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct Bottleneck {
    pub vertex_id: String,
    /// Every vertex of its chain (they share a task).
    pub vertex_ids: Vec<String>,
    pub busy_ratio: f64,
    pub reason: String,
    pub skew: Option<Skew>,
}

/// A subtask receiving far more than its siblings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct Skew {
    pub subtask: u32,
    pub records_in_per_second: f64,
    pub mean_records_in_per_second: f64,
    pub ratio: f64,
}

/// The bottleneck among `chains`, if one is clear: of the chains that qualify, the busiest.
pub(super) fn bottleneck(chains: &[ChainLoad]) -> Option<Bottleneck> {
    let by_index = |index: u32| chains.iter().find(|c| c.index == index);
    let qualifies = |chain: &&ChainLoad| {
        chain.busy > LEVEL_HIGH_ABOVE
            && chain.backpressured <= LEVEL_HIGH_ABOVE
            && !chain.upstream.is_empty()
            && chain.upstream.iter().all(|&u| by_index(u).is_some_and(|u| u.backpressured > LEVEL_HIGH_ABOVE))
    };
    let chain = chains.iter().filter(qualifies).max_by(|a, b| a.busy.total_cmp(&b.busy))?;
    let vertex_id = chain.vertex_ids.last().cloned().unwrap_or_default();
    let upstream: Vec<String> =
        chain.upstream.iter().filter_map(|&u| by_index(u)).filter_map(|u| u.vertex_ids.last().cloned()).collect();
    let mut reason = format!(
        "{} is busy {:.0} % of the time while everything feeding it ({}) waits for it (back-pressured)",
        chain.vertex_ids.join(" -> "),
        chain.busy * 100.0,
        upstream.join(", ")
    );
    let skew = skew(&chain.subtask_rates);
    match &skew {
        Some(skew) => reason.push_str(&format!(
            "; its subtask {} receives {:.1}x the mean: key skew, so more parallelism will not help much",
            skew.subtask, skew.ratio
        )),
        None => reason.push_str("; raise its parallelism or make it cheaper"),
    }
    Some(Bottleneck { vertex_id, vertex_ids: chain.vertex_ids.clone(), busy_ratio: chain.busy, reason, skew })
}

/// The subtask whose rate is at least [`SKEW_RATIO_MIN`] times the mean, if any (the highest).
fn skew(rates: &[f64]) -> Option<Skew> {
    if rates.len() < 2 {
        return None;
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let (subtask, &max) = rates.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    (mean > 0.0 && max / mean >= SKEW_RATIO_MIN).then(|| Skew {
        subtask: subtask as u32,
        records_in_per_second: max,
        mean_records_in_per_second: mean,
        ratio: max / mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(index: u32, id: &str, busy: f64, backpressured: f64, upstream: &[u32]) -> ChainLoad {
        ChainLoad {
            index,
            vertex_ids: vec![id.to_string()],
            busy,
            backpressured,
            upstream: upstream.to_vec(),
            subtask_rates: vec![100.0, 100.0],
        }
    }

    #[test]
    fn levels_follow_flinks_thresholds() {
        assert_eq!(level(0.0), "OK");
        assert_eq!(level(0.10), "OK");
        assert_eq!(level(0.11), "LOW");
        assert_eq!(level(0.50), "LOW");
        assert_eq!(level(0.51), "HIGH");
    }

    /// Goal: a slow sink behind back-pressured tasks is named. Method: source -> map -> sink, the first two
    /// waiting for credit, the sink busy.
    #[test]
    fn the_busy_task_behind_back_pressured_ones_is_the_bottleneck() {
        let chains =
            [chain(0, "source", 0.2, 0.8, &[]), chain(1, "map", 0.1, 0.9, &[0]), chain(2, "sink", 0.97, 0.0, &[1])];
        let verdict = bottleneck(&chains).expect("a bottleneck");
        assert_eq!(verdict.vertex_id, "sink");
        assert!(verdict.reason.contains("map"), "{}", verdict.reason);
        assert_eq!(verdict.skew, None);
    }

    /// Goal: no verdict without evidence. Method: a busy task whose upstream is not back-pressured (it is
    /// merely busy too), and a busy source (sources run flat out by design).
    #[test]
    fn busy_alone_is_no_bottleneck() {
        let chains = [chain(0, "source", 0.9, 0.0, &[]), chain(1, "map", 0.9, 0.05, &[0])];
        assert_eq!(bottleneck(&chains), None);
        let chains = [chain(0, "source", 0.9, 0.9, &[]), chain(1, "map", 0.9, 0.6, &[0])];
        assert_eq!(bottleneck(&chains), None, "a back-pressured task is a victim, not the cause");
    }

    /// Goal: one overloaded subtask is told apart from an evenly slow operator. Method: rates 10, 10, 100.
    #[test]
    fn one_hot_subtask_is_key_skew() {
        let mut sink = chain(1, "agg", 0.95, 0.0, &[0]);
        sink.subtask_rates = vec![10.0, 10.0, 100.0];
        let verdict = bottleneck(&[chain(0, "source", 0.1, 0.9, &[]), sink]).expect("a bottleneck");
        let skew = verdict.skew.expect("skew");
        assert_eq!(skew.subtask, 2);
        assert!((skew.ratio - 2.5).abs() < 1e-9, "{}", skew.ratio);
        assert!(verdict.reason.contains("key skew"));
    }
}

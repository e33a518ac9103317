//! Barrier alignment: when a task with several input channels may take its part of a checkpoint.
//!
//! A checkpoint's barrier flows down every channel. A task takes its snapshot once the barrier has arrived
//! on every channel that still runs, so the snapshot holds exactly the records before the barrier (aligned
//! checkpoints, Flink's default). Meanwhile a channel that delivered the barrier is held back: what it
//! sends next belongs after the snapshot.
//!
//! This module decides; it does no I/O and never waits. The task hands it each barrier, each end of
//! input and each checkpoint trigger, and applies the answer to its input gate (block a channel, release
//! them all) and its snapshot. The rules, in the order they are checked:
//! 1. A barrier of a checkpoint at or below the last one aligned is refused: that checkpoint was taken,
//!    or abandoned by the newer one (its barriers still arrive on channels that were behind).
//! 2. A barrier older than the alignment in progress is refused for the same reason.
//! 3. A barrier newer than the alignment in progress (or the first one) starts a new alignment: the
//!    older checkpoint was aborted upstream, so every channel it held back is released first. Channels
//!    that ended count as aligned from the start.
//! 4. The channel that delivered the barrier is held back, once however often its barrier arrives.
//! 5. When every channel delivered the barrier or ended, the checkpoint is aligned: every channel is
//!    released, and the checkpoint becomes the last aligned one.
//!
//! A source has no input channels: its checkpoint is aligned when it is triggered ([`BarrierAligner::trigger`]),
//! under rule 1 too.
//!
//! ```
//! # use std::time::Instant;
//! # use sluice_taskmanager::task::alignment::{BarrierAligner, BarrierStep, Refusal};
//! let mut aligner = BarrierAligner::new(2);
//! let now = Instant::now();
//! assert_eq!(aligner.on_barrier(0, 7, now), BarrierStep::Block { channel: 0, release_all_first: false });
//! assert!(matches!(aligner.on_barrier(1, 7, now), BarrierStep::Aligned(a) if a.checkpoint == 7));
//! assert_eq!(aligner.on_barrier(1, 6, now), BarrierStep::Refused(Refusal::AlreadyAligned { last_aligned: 7 }));
//! ```
use std::time::Instant;

/// Decides, for one task, which input channels to hold back and when a checkpoint is aligned.
///
/// Invariant: a channel is held back exactly when an alignment is in progress, the channel delivered its
/// barrier, and it has not ended ([`BarrierAligner::is_blocked`]); `last_aligned` never decreases.
#[derive(Debug)]
pub struct BarrierAligner {
    /// Channels that delivered end of input: they take part in no further alignment.
    ended: Vec<bool>,
    /// The alignment in progress, if any.
    aligning: Option<Alignment>,
    /// The newest checkpoint this task took: barriers at or below it are stale (that checkpoint, or an
    /// older one abandoned for a newer one). 0 before the first, as checkpoint ids start at 1.
    last_aligned: u64,
}

#[derive(Debug)]
struct Alignment {
    checkpoint: u64,
    started: Instant,
    /// Channels that delivered this barrier, or ended.
    done: Vec<bool>,
}

/// What the task does with a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum BarrierStep {
    /// Hold `channel` back until the alignment completes. With `release_all_first`, a newer checkpoint
    /// overtook the alignment in progress: release every channel held back for the older one first.
    Block { channel: usize, release_all_first: bool },
    /// The checkpoint is aligned: release every channel and take the snapshot.
    Aligned(Aligned),
    /// The barrier changes nothing.
    Refused(Refusal),
}

/// A checkpoint whose barrier every running channel delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aligned {
    pub checkpoint: u64,
    /// When the first barrier of this checkpoint arrived (the alignment time is measured from it).
    pub started: Instant,
}

/// Why a barrier (or trigger) changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The checkpoint is at or below the last one aligned: taken, or abandoned for a newer one.
    AlreadyAligned { last_aligned: u64 },
    /// A newer checkpoint is being aligned: this older one was aborted.
    OlderThanAligning { aligning: u64 },
}

impl BarrierAligner {
    /// An aligner for a task with `channels` input channels (0 for a source).
    pub fn new(channels: usize) -> Self {
        Self { ended: vec![false; channels], aligning: None, last_aligned: 0 }
    }

    /// The barrier of `checkpoint` arrived on `channel` at `now`.
    pub fn on_barrier(&mut self, channel: usize, checkpoint: u64, now: Instant) -> BarrierStep {
        debug_assert!(channel < self.ended.len(), "a barrier on channel {channel} of {}", self.ended.len());
        if checkpoint <= self.last_aligned {
            return BarrierStep::Refused(Refusal::AlreadyAligned { last_aligned: self.last_aligned });
        }
        let release_all_first = match &self.aligning {
            Some(alignment) if alignment.checkpoint > checkpoint => {
                return BarrierStep::Refused(Refusal::OlderThanAligning { aligning: alignment.checkpoint });
            }
            Some(alignment) if alignment.checkpoint == checkpoint => false,
            overtaken => {
                let release = overtaken.is_some();
                self.aligning = Some(Alignment { checkpoint, started: now, done: self.ended.clone() });
                release
            }
        };
        if let Some(done) = self.aligning.as_mut().and_then(|a| a.done.get_mut(channel)) {
            *done = true;
        }
        match self.complete() {
            Some(aligned) => BarrierStep::Aligned(aligned),
            None => BarrierStep::Block { channel, release_all_first },
        }
    }

    /// `channel` delivered end of input: it no longer holds an alignment back. Returns the checkpoint it
    /// completes, if it was the last channel missing.
    pub fn on_end_of_input(&mut self, channel: usize) -> Option<Aligned> {
        debug_assert!(channel < self.ended.len(), "end of input on channel {channel} of {}", self.ended.len());
        if let Some(ended) = self.ended.get_mut(channel) {
            *ended = true;
        }
        if let Some(done) = self.aligning.as_mut().and_then(|a| a.done.get_mut(channel)) {
            *done = true;
        }
        self.complete()
    }

    /// A source task was asked to take `checkpoint` at `now`: it has no channels to wait for.
    pub fn trigger(&mut self, checkpoint: u64, now: Instant) -> Result<Aligned, Refusal> {
        debug_assert!(self.ended.is_empty(), "a trigger for a task with {} input channels", self.ended.len());
        if checkpoint <= self.last_aligned {
            return Err(Refusal::AlreadyAligned { last_aligned: self.last_aligned });
        }
        self.last_aligned = checkpoint;
        Ok(Aligned { checkpoint, started: now })
    }

    /// Whether `channel` is held back now.
    pub fn is_blocked(&self, channel: usize) -> bool {
        let ended = self.ended.get(channel).copied().unwrap_or(false);
        let done = self.aligning.as_ref().and_then(|a| a.done.get(channel).copied()).unwrap_or(false);
        done && !ended
    }

    /// The checkpoint being aligned, if any.
    pub fn aligning(&self) -> Option<u64> {
        self.aligning.as_ref().map(|a| a.checkpoint)
    }

    /// The newest checkpoint aligned (0 before the first).
    pub fn last_aligned(&self) -> u64 {
        self.last_aligned
    }

    /// Ends the alignment in progress if every channel delivered its barrier or ended.
    fn complete(&mut self) -> Option<Aligned> {
        if !self.aligning.as_ref().is_some_and(|a| a.done.iter().all(|&done| done)) {
            return None;
        }
        let alignment = self.aligning.take()?;
        assert!(
            alignment.checkpoint > self.last_aligned,
            "checkpoint {} aligned after checkpoint {}",
            alignment.checkpoint,
            self.last_aligned
        );
        self.last_aligned = alignment.checkpoint;
        Some(Aligned { checkpoint: alignment.checkpoint, started: alignment.started })
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the aligner holds back exactly the channels the current task loop held back, and aligns at
    //! the same moments. Method: feed it barriers and ends of input as a gate would deliver them, and
    //! check each answer and which channels are blocked after it.
    use super::*;

    fn blocked(aligner: &BarrierAligner, channels: usize) -> Vec<usize> {
        (0..channels).filter(|&c| aligner.is_blocked(c)).collect()
    }

    fn aligned(step: BarrierStep) -> Option<u64> {
        match step {
            BarrierStep::Aligned(aligned) => Some(aligned.checkpoint),
            _ => None,
        }
    }

    #[test]
    fn a_barrier_aligns_once_it_arrived_on_every_channel() {
        let mut aligner = BarrierAligner::new(3);
        let now = Instant::now();
        assert_eq!(aligner.on_barrier(1, 1, now), BarrierStep::Block { channel: 1, release_all_first: false });
        assert_eq!(blocked(&aligner, 3), vec![1]);
        assert_eq!(aligner.on_barrier(0, 1, now), BarrierStep::Block { channel: 0, release_all_first: false });
        assert_eq!(blocked(&aligner, 3), vec![0, 1]);
        let step = aligner.on_barrier(2, 1, now);
        assert_eq!(step, BarrierStep::Aligned(Aligned { checkpoint: 1, started: now }), "started at the first");
        assert_eq!(blocked(&aligner, 3), Vec::<usize>::new(), "every channel released");
        assert_eq!((aligner.aligning(), aligner.last_aligned()), (None, 1));
        // The next checkpoint aligns the same way.
        assert!(matches!(aligner.on_barrier(2, 2, now), BarrierStep::Block { channel: 2, .. }));
        assert!(matches!(aligner.on_barrier(0, 2, now), BarrierStep::Block { channel: 0, .. }));
        assert_eq!(aligned(aligner.on_barrier(1, 2, now)), Some(2));
    }

    #[test]
    fn a_channel_ending_mid_alignment_completes_it_and_is_left_out_of_the_next() {
        let mut aligner = BarrierAligner::new(2);
        let now = Instant::now();
        assert!(matches!(aligner.on_barrier(0, 1, now), BarrierStep::Block { channel: 0, .. }));
        assert_eq!(aligner.on_end_of_input(1).map(|a| a.checkpoint), Some(1), "the missing channel ended");
        assert_eq!(blocked(&aligner, 2), Vec::<usize>::new());
        // Channel 1 ended: the next checkpoint needs channel 0 alone.
        assert_eq!(aligned(aligner.on_barrier(0, 2, now)), Some(2));
        assert_eq!(aligner.on_end_of_input(0), None, "no alignment in progress: nothing to complete");
    }

    #[test]
    fn a_channel_that_ended_before_the_barrier_counts_as_aligned() {
        let mut aligner = BarrierAligner::new(3);
        let now = Instant::now();
        assert_eq!(aligner.on_end_of_input(2), None);
        assert!(matches!(aligner.on_barrier(0, 4, now), BarrierStep::Block { channel: 0, .. }));
        assert_eq!(aligned(aligner.on_barrier(1, 4, now)), Some(4));
    }

    #[test]
    fn a_newer_barrier_overtakes_an_unfinished_alignment_and_the_older_is_refused_after() {
        let mut aligner = BarrierAligner::new(3);
        let now = Instant::now();
        assert!(matches!(aligner.on_barrier(0, 1, now), BarrierStep::Block { channel: 0, .. }));
        assert!(matches!(aligner.on_barrier(1, 1, now), BarrierStep::Block { channel: 1, .. }));
        // Checkpoint 2's barrier arrives on channel 2 before checkpoint 1's: checkpoint 1 was aborted.
        assert_eq!(aligner.on_barrier(2, 2, now), BarrierStep::Block { channel: 2, release_all_first: true });
        assert_eq!(blocked(&aligner, 3), vec![2], "channels held for checkpoint 1 are released");
        assert_eq!(aligner.aligning(), Some(2));
        // Checkpoint 1's barrier, late on channel 2's neighbours' path, changes nothing.
        assert_eq!(aligner.on_barrier(2, 1, now), BarrierStep::Refused(Refusal::OlderThanAligning { aligning: 2 }));
        assert!(matches!(aligner.on_barrier(0, 2, now), BarrierStep::Block { channel: 0, release_all_first: false }));
        assert_eq!(aligned(aligner.on_barrier(1, 2, now)), Some(2));
        assert_eq!(aligner.on_barrier(0, 1, now), BarrierStep::Refused(Refusal::AlreadyAligned { last_aligned: 2 }));
        assert_eq!(blocked(&aligner, 3), Vec::<usize>::new());
    }

    #[test]
    fn a_duplicate_barrier_blocks_its_channel_once_and_is_refused_once_aligned() {
        let mut aligner = BarrierAligner::new(2);
        let now = Instant::now();
        assert!(matches!(aligner.on_barrier(0, 3, now), BarrierStep::Block { channel: 0, .. }));
        assert_eq!(aligner.on_barrier(0, 3, now), BarrierStep::Block { channel: 0, release_all_first: false });
        assert_eq!(blocked(&aligner, 2), vec![0]);
        assert_eq!(aligner.aligning(), Some(3), "a repeated barrier does not complete the alignment");
        assert_eq!(aligned(aligner.on_barrier(1, 3, now)), Some(3));
        assert_eq!(aligner.on_barrier(1, 3, now), BarrierStep::Refused(Refusal::AlreadyAligned { last_aligned: 3 }));
    }

    #[test]
    fn a_single_input_aligns_on_its_barrier_at_once() {
        let mut aligner = BarrierAligner::new(1);
        let now = Instant::now();
        assert_eq!(aligner.on_barrier(0, 1, now), BarrierStep::Aligned(Aligned { checkpoint: 1, started: now }));
        assert!(!aligner.is_blocked(0));
        assert_eq!(aligner.on_barrier(0, 1, now), BarrierStep::Refused(Refusal::AlreadyAligned { last_aligned: 1 }));
        assert_eq!(aligned(aligner.on_barrier(0, 5, now)), Some(5), "checkpoints may skip ids");
    }

    #[test]
    fn a_source_takes_each_triggered_checkpoint_once_in_increasing_order() {
        let mut aligner = BarrierAligner::new(0);
        let now = Instant::now();
        assert_eq!(aligner.trigger(1, now), Ok(Aligned { checkpoint: 1, started: now }));
        assert_eq!(aligner.trigger(1, now), Err(Refusal::AlreadyAligned { last_aligned: 1 }));
        assert_eq!(aligner.trigger(3, now).map(|a| a.checkpoint), Ok(3));
        assert_eq!(aligner.trigger(2, now), Err(Refusal::AlreadyAligned { last_aligned: 3 }));
    }
}

//! Receiver-side credit accounting of one input gate, as in Flink's credit-based flow control.
//!
//! A *credit* is the receiver's promise of room for one network buffer (at most `buffer_size_bytes`). A
//! sender ships a data buffer only against a credit, so what is in flight towards a gate is bounded by the
//! credits the gate hands out, and a consumer that stops consuming stops its producers within a few
//! buffers. Events (barriers, watermarks, end-of-partition) need no credit.
//!
//! The gate owns `channels × exclusive + floating` *slots*. Each channel owns `exclusive` slots for good,
//! so it can always make progress; the `floating` slots sit in a pool and go to channels whose sender
//! reported a backlog bigger than the credit it holds (the backlog travels in every data frame). Every slot
//! of a channel is in exactly one of two places:
//!
//! - *announced*: granted to the sender and not used yet (held by the sender or travelling to it);
//! - *occupied*: holding a received buffer the consumer has not finished with.
//!
//! When the consumer finishes a buffer its slot becomes free, and the ledger decides where it goes: back to
//! the sender as a new credit, or, if it is a floating slot the channel's backlog no longer needs, back to
//! the pool (whence it may go to another channel). A slot leaves a channel only while free, never while the
//! sender might still use it, so the bound holds at every instant:
//!
//! *announced + occupied, summed over channels ≤ channels × exclusive + floating.*
//!
//! ```
//! use sluice_taskmanager::network::credit::{CreditLedger, Grant};
//!
//! // Two channels with 2 exclusive credits each, and a pool of 1 floating credit.
//! let mut ledger = CreditLedger::new(2, 2, 1);
//! assert_eq!(ledger.initial_grants(), vec![Grant { channel: 0, credits: 2 }, Grant { channel: 1, credits: 2 }]);
//! assert_eq!(ledger.slots_max(), 5);
//!
//! // Channel 0's sender uses a credit and reports 3 more buffers queued: it holds 1 credit, so the pool's
//! // only floating credit goes to it.
//! assert_eq!(ledger.on_buffer_received(0, 3), Ok(vec![Grant { channel: 0, credits: 1 }]));
//! assert_eq!(ledger.floating_available(), 0);
//!
//! // Consuming that buffer frees a slot; the backlog is still larger than the credits held, so the slot is
//! // announced again.
//! assert_eq!(ledger.on_buffer_consumed(0), vec![Grant { channel: 0, credits: 1 }]);
//!
//! // The sender uses its 3 credits, and its queue is empty now (backlog 0).
//! for _ in 0..3 {
//!     ledger.on_buffer_received(0, 0).unwrap();
//! }
//! // A sender without credit may not send: the ledger calls it a violation.
//! assert!(ledger.on_buffer_received(0, 0).is_err());
//!
//! // The first consumed buffer frees a floating slot nobody needs: back to the pool, no new credit.
//! assert_eq!(ledger.on_buffer_consumed(0), vec![]);
//! assert_eq!(ledger.floating_available(), 1);
//! // The next ones are exclusive: announced again.
//! assert_eq!(ledger.on_buffer_consumed(0), vec![Grant { channel: 0, credits: 1 }]);
//! ```

/// Credits granted to one channel's sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Index of the input channel in its gate.
    pub channel: usize,
    /// Number of new credits, at least 1.
    pub credits: u32,
}

/// A sender sent a data buffer without holding a credit for it (or after end-of-partition).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("input channel {channel}: {reason}")]
pub struct CreditViolation {
    /// Index of the input channel in its gate.
    pub channel: usize,
    /// What the sender did wrong.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
struct ChannelCredits {
    /// Slots granted to the sender and not used yet.
    announced: u32,
    /// Slots holding a received buffer the consumer has not finished.
    occupied: u32,
    /// Floating slots this channel holds (announced or occupied); the others are its exclusive ones.
    floating_held: u32,
    /// Data buffers the sender had queued after the last buffer it sent.
    backlog: u32,
    /// End-of-partition arrived: the sender sends no more data.
    ended: bool,
}

impl ChannelCredits {
    /// Credits the channel's backlog asks for beyond what it holds.
    fn deficit(&self) -> u32 {
        if self.ended {
            return 0;
        }
        self.backlog.saturating_sub(self.announced)
    }
}

/// The credit ledger of one input gate. See the module docs for the accounting.
#[derive(Clone, Debug)]
pub struct CreditLedger {
    channels: Vec<ChannelCredits>,
    exclusive_per_channel: u32,
    floating_total: u32,
    /// Floating slots in the pool. Invariant: `floating_available + Σ floating_held == floating_total`.
    floating_available: u32,
    /// Where the next search for a channel with a deficit starts, so floating credits rotate fairly.
    cursor: usize,
}

impl CreditLedger {
    /// A ledger for `channels` input channels with `exclusive` credits each and a pool of `floating`.
    pub fn new(channels: usize, exclusive: u32, floating: u32) -> Self {
        Self {
            channels: vec![ChannelCredits::default(); channels],
            exclusive_per_channel: exclusive,
            floating_total: floating,
            floating_available: floating,
            cursor: 0,
        }
    }

    /// The exclusive credits of every channel; called once, when the gate is created.
    pub fn initial_grants(&mut self) -> Vec<Grant> {
        assert!(self.channels.iter().all(|c| c.announced == 0 && c.occupied == 0), "initial grants were already made");
        if self.exclusive_per_channel == 0 {
            return Vec::new();
        }
        let mut grants = Vec::with_capacity(self.channels.len());
        for (channel, credits) in self.channels.iter_mut().enumerate() {
            credits.announced = self.exclusive_per_channel;
            grants.push(Grant { channel, credits: self.exclusive_per_channel });
        }
        grants
    }

    /// A data buffer arrived on `channel`, and its sender has `backlog` more queued. Returns the floating
    /// credits granted in response, or a violation if the sender held no credit.
    pub fn on_buffer_received(&mut self, channel: usize, backlog: u32) -> Result<Vec<Grant>, CreditViolation> {
        let credits = &mut self.channels[channel];
        if credits.ended {
            return Err(CreditViolation { channel, reason: "data after end-of-partition" });
        }
        if credits.announced == 0 {
            return Err(CreditViolation { channel, reason: "data buffer sent without a credit" });
        }
        credits.announced -= 1;
        credits.occupied += 1;
        credits.backlog = backlog;
        let grants = self.grant_floating();
        self.debug_check();
        Ok(grants)
    }

    /// The consumer finished a buffer of `channel`: its slot goes back to the sender or to the pool.
    pub fn on_buffer_consumed(&mut self, channel: usize) -> Vec<Grant> {
        let credits = &mut self.channels[channel];
        assert!(credits.occupied > 0, "input channel {channel}: a buffer was consumed but none is occupied");
        credits.occupied -= 1;
        let keep = credits.floating_held == 0 || (!credits.ended && credits.backlog > credits.announced);
        let grants = if keep {
            if credits.ended {
                // No sender will use it; an ended channel only keeps its exclusive slots, unannounced.
                Vec::new()
            } else {
                credits.announced += 1;
                vec![Grant { channel, credits: 1 }]
            }
        } else {
            credits.floating_held -= 1;
            self.floating_available += 1;
            self.grant_floating()
        };
        self.debug_check();
        grants
    }

    /// End-of-partition arrived on `channel`: floating credits its sender will never use go back to the pool.
    pub fn on_end_of_partition(&mut self, channel: usize) -> Vec<Grant> {
        let credits = &mut self.channels[channel];
        credits.ended = true;
        credits.backlog = 0;
        let unused_floating = credits.floating_held.min(credits.announced);
        credits.floating_held -= unused_floating;
        credits.announced -= unused_floating;
        self.floating_available += unused_floating;
        let grants = self.grant_floating();
        self.debug_check();
        grants
    }

    /// Floating credits in the pool right now.
    pub fn floating_available(&self) -> u32 {
        self.floating_available
    }

    /// The bound on slots: `channels × exclusive + floating`. In-flight buffers never exceed it.
    pub fn slots_max(&self) -> u64 {
        self.channels.len() as u64 * u64::from(self.exclusive_per_channel) + u64::from(self.floating_total)
    }

    /// Slots in use: announced plus occupied, over all channels.
    pub fn slots_in_use(&self) -> u64 {
        self.channels.iter().map(|c| u64::from(c.announced) + u64::from(c.occupied)).sum()
    }

    /// Hands pool credits, one at a time and round-robin, to channels whose backlog exceeds their credit.
    fn grant_floating(&mut self) -> Vec<Grant> {
        let mut grants: Vec<Grant> = Vec::new();
        let n = self.channels.len();
        // Each pass over the channels grants at least one credit or stops, and each grant takes one from the
        // finite pool, so this ends after at most `floating_available` passes.
        while self.floating_available > 0 {
            let Some(offset) = (0..n).find(|i| self.channels[(self.cursor + i) % n].deficit() > 0) else {
                break;
            };
            let channel = (self.cursor + offset) % n;
            self.cursor = (channel + 1) % n;
            let credits = &mut self.channels[channel];
            credits.announced += 1;
            credits.floating_held += 1;
            self.floating_available -= 1;
            match grants.iter_mut().find(|g| g.channel == channel) {
                Some(grant) => grant.credits += 1,
                None => grants.push(Grant { channel, credits: 1 }),
            }
        }
        grants
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        {
            let held: u32 = self.channels.iter().map(|c| c.floating_held).sum();
            assert_eq!(
                held + self.floating_available,
                self.floating_total,
                "floating credits leaked or were duplicated"
            );
            assert!(
                self.slots_in_use() <= self.slots_max(),
                "{} slots in use exceed the bound of {}",
                self.slots_in_use(),
                self.slots_max()
            );
            for (i, c) in self.channels.iter().enumerate() {
                assert!(
                    c.announced + c.occupied <= self.exclusive_per_channel + c.floating_held,
                    "channel {i} uses {} slots but owns {}",
                    c.announced + c.occupied,
                    self.exclusive_per_channel + c.floating_held
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a ledger with a simulated sender per channel (a queue length and the credits it holds) and a
    /// consumer, in a deterministic pseudo-random order, checking the bound after every step.
    #[test]
    fn random_traffic_never_exceeds_the_slot_bound_and_drains_completely() {
        let (channels, exclusive, floating) = (4usize, 2u32, 3u32);
        let mut ledger = CreditLedger::new(channels, exclusive, floating);
        let mut sender_credits = vec![0u32; channels];
        let mut sender_queue = vec![50u32; channels];
        let mut received: std::collections::VecDeque<usize> = Default::default();
        for g in ledger.initial_grants() {
            sender_credits[g.channel] += g.credits;
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut steps = 0;
        while sender_queue.iter().any(|&q| q > 0) || !received.is_empty() {
            steps += 1;
            assert!(steps < 100_000, "traffic did not drain: queues {sender_queue:?}, credits {sender_credits:?}");
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let channel = (state % channels as u64) as usize;
            if state.is_multiple_of(3) && sender_credits[channel] > 0 && sender_queue[channel] > 0 {
                sender_credits[channel] -= 1;
                sender_queue[channel] -= 1;
                received.push_back(channel);
                for g in ledger.on_buffer_received(channel, sender_queue[channel]).expect("sender held a credit") {
                    sender_credits[g.channel] += g.credits;
                }
            } else if let Some(consumed) = received.pop_front() {
                for g in ledger.on_buffer_consumed(consumed) {
                    sender_credits[g.channel] += g.credits;
                }
            }
            assert!(ledger.slots_in_use() <= ledger.slots_max());
        }
        assert_eq!(
            ledger.floating_available() as usize
                + ledger.channels.iter().map(|c| c.floating_held as usize).sum::<usize>(),
            3
        );
    }

    #[test]
    fn end_of_partition_returns_unused_floating_credits_to_the_pool() {
        let mut ledger = CreditLedger::new(2, 1, 2);
        ledger.initial_grants();
        assert_eq!(ledger.on_buffer_received(0, 5), Ok(vec![Grant { channel: 0, credits: 2 }]));
        assert_eq!(ledger.floating_available(), 0);
        assert_eq!(ledger.on_end_of_partition(0), vec![]);
        assert_eq!(ledger.floating_available(), 2, "the two announced floating credits will never be used");
        assert_eq!(ledger.on_buffer_consumed(0), vec![], "an ended channel announces nothing");
        assert_eq!(
            ledger.on_buffer_received(0, 0),
            Err(CreditViolation { channel: 0, reason: "data after end-of-partition" })
        );
    }

    #[test]
    fn floating_credits_go_to_the_channel_that_reports_a_backlog() {
        let mut ledger = CreditLedger::new(3, 1, 4);
        ledger.initial_grants();
        assert_eq!(ledger.on_buffer_received(1, 0), Ok(vec![]));
        assert_eq!(ledger.on_buffer_received(2, 3), Ok(vec![Grant { channel: 2, credits: 3 }]));
        assert_eq!(ledger.floating_available(), 1);
    }

    /// One step of the traffic the credit properties generate.
    #[derive(Clone, Debug)]
    enum Step {
        /// The sender of `channel` ships a buffer if it holds a credit, reporting its queue as the backlog.
        Send { channel: usize },
        /// A hostile or buggy sender ships a buffer whether or not it holds a credit.
        SendAnyway { channel: usize, backlog: u32 },
        /// The consumer finishes the oldest received buffer.
        Consume,
        /// The sender of `channel` queues `buffers` more.
        Produce { channel: usize, buffers: u32 },
        /// The sender of `channel` ends its partition.
        End { channel: usize },
    }

    /// Channels, exclusive credits per channel, floating credits, and the steps to run.
    fn traffic() -> impl proptest::strategy::Strategy<Value = (usize, u32, u32, Vec<Step>)> {
        use proptest::prelude::*;
        (1usize..6, 0u32..4, 0u32..6).prop_flat_map(|(channels, exclusive, floating)| {
            let channel = 0..channels;
            let step = prop_oneof![
                4 => channel.clone().prop_map(|channel| Step::Send { channel }),
                1 => (channel.clone(), 0u32..10).prop_map(|(channel, backlog)| Step::SendAnyway { channel, backlog }),
                3 => Just(Step::Consume),
                2 => (channel.clone(), 1u32..8).prop_map(|(channel, buffers)| Step::Produce { channel, buffers }),
                1 => channel.prop_map(|channel| Step::End { channel }),
            ];
            (Just(channels), Just(exclusive), Just(floating), proptest::collection::vec(step, 0..200))
        })
    }

    proptest::proptest! {
        /// Goal: whatever the interleaving of grants, sends (with and without credit), consumption and
        /// ends of partition, a sender's credits never go negative and never exceed what the ledger
        /// announced; in-flight buffers stay within `channels × exclusive + floating`; floating credits are
        /// neither lost nor duplicated. Method: a model sender per channel counts the credits it was granted
        /// and spent, and is compared with the ledger after every step.
        #[test]
        fn credits_stay_within_the_announced_bound_whatever_the_interleaving((channels, exclusive, floating, steps) in traffic()) {
            use proptest::prop_assert;
            use proptest::prop_assert_eq;
            let mut ledger = CreditLedger::new(channels, exclusive, floating);
            // What each sender holds: a credit count that a send must be able to decrement.
            let mut held = vec![0u32; channels];
            let mut queued = vec![0u32; channels];
            let mut ended = vec![false; channels];
            let mut received: std::collections::VecDeque<usize> = Default::default();
            let take = |grants: Vec<Grant>, held: &mut Vec<u32>| {
                for grant in grants {
                    assert!(grant.credits >= 1, "an empty grant to channel {}", grant.channel);
                    held[grant.channel] += grant.credits;
                }
            };
            take(ledger.initial_grants(), &mut held);
            for step in steps {
                match step {
                    Step::Send { channel } if held[channel] > 0 && !ended[channel] => {
                        held[channel] -= 1;
                        queued[channel] = queued[channel].saturating_sub(1);
                        let grants = ledger.on_buffer_received(channel, queued[channel]);
                        prop_assert!(grants.is_ok(), "a send against a held credit was refused: {grants:?}");
                        take(grants.unwrap_or_default(), &mut held);
                        received.push_back(channel);
                    }
                    Step::Send { .. } => {}
                    Step::SendAnyway { channel, backlog } => {
                        let in_use = ledger.slots_in_use();
                        match ledger.on_buffer_received(channel, backlog) {
                            Ok(grants) => {
                                prop_assert!(held[channel] > 0 && !ended[channel], "a send without credit was accepted");
                                held[channel] -= 1;
                                take(grants, &mut held);
                                received.push_back(channel);
                            }
                            Err(_) => {
                                prop_assert!(held[channel] == 0 || ended[channel], "a send with a credit was refused");
                                prop_assert_eq!(ledger.slots_in_use(), in_use, "a refused send changed the ledger");
                            }
                        }
                    }
                    Step::Consume => {
                        if let Some(channel) = received.pop_front() {
                            take(ledger.on_buffer_consumed(channel), &mut held);
                        }
                    }
                    Step::Produce { channel, buffers } => queued[channel] = queued[channel].saturating_add(buffers),
                    Step::End { channel } if !ended[channel] => {
                        ended[channel] = true;
                        // The sender drops what it held: an ended channel sends nothing more.
                        held[channel] = 0;
                        take(ledger.on_end_of_partition(channel), &mut held);
                    }
                    Step::End { .. } => {}
                }
                prop_assert!(ledger.slots_in_use() <= ledger.slots_max());
                let floating_held: u32 = ledger.channels.iter().map(|c| c.floating_held).sum();
                prop_assert_eq!(floating_held + ledger.floating_available(), floating, "floating credits leaked");
                for (channel, credits) in ledger.channels.iter().enumerate() {
                    if ended[channel] {
                        prop_assert_eq!(held[channel], 0, "credits granted to ended channel {}", channel);
                    } else {
                        prop_assert_eq!(held[channel], credits.announced, "channel {}: sender and ledger disagree", channel);
                    }
                    prop_assert!(credits.announced + credits.occupied <= exclusive + credits.floating_held);
                }
                let in_flight = held.iter().map(|&c| u64::from(c)).sum::<u64>() + received.len() as u64;
                prop_assert!(in_flight <= ledger.slots_max(), "{in_flight} buffers in flight over {}", ledger.slots_max());
            }
        }
    }
}

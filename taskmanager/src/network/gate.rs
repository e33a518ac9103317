//! The receiving side of one subtask: an input gate over all its input channels.
//!
//! Buffers arrive from the connection reader (remote channels) or straight from a sender's
//! [`pump`](super::channel::SenderChannel::pump) (local channels) into per-channel queues; a FIFO of channel
//! indices keeps arrival order across channels, so no channel starves another. The gate's
//! [`CreditLedger`] decides which credits go back to which sender.
//!
//! Memory budget: what is tracked is the bytes of data buffers received and not yet consumed (IPC bytes for
//! remote channels, row memory for local ones). Whoever holds a buffer's slot owns it: the gate while it is
//! queued, then the consumer, until its *next* call to [`InputGate::next`], which releases the slot and its
//! credit. Credits are the only way to get a buffer in, so the tracked bytes stay below
//! [`InputGate::in_flight_bytes_max`] `= (channels × credit_initial + floating_buffers) × buffer_size_bytes`,
//! except that a single row larger than a buffer travels in an oversized buffer of its own.
//!
//! Events need no credit. Consecutive watermarks of a channel collapse into the latest, and at most
//! [`MAX_QUEUED_EVENTS_PER_CHANNEL`] other events may wait per channel; more is a protocol violation.
use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::Notify;

use super::buffer::{decode_batch, DataBuffer, Payload};
use super::channel::{announce, Announcement, CreditTarget, Event};
use super::credit::{CreditLedger, Grant};
use super::environment::Shared;
use super::error::{Failure, NetworkError};
use super::{lock, ChannelKey, StreamEvent};

/// Events (barriers, end-of-partition, watermarks after collapsing) one input channel may queue. Events
/// need no credit, so this is their bound: a healthy sender produces one barrier per checkpoint and one
/// end-of-partition, far below it. Beyond it the sender is misbehaving and its channel fails.
pub const MAX_QUEUED_EVENTS_PER_CHANNEL: u32 = 1024;

/// An element delivered to an input channel.
#[derive(Debug)]
pub(crate) enum Incoming {
    Data(DataBuffer),
    Event(Event),
}

/// Why a delivery was not accepted.
#[derive(Debug)]
pub(crate) enum DeliverError {
    /// The gate was dropped or failed: the element is stale; drop it and count it.
    Closed,
    /// The sender broke the protocol (no credit, data after end-of-partition, wrong peer, event flood).
    Violation(String),
}

/// The state of a gate shared with the senders and connections that deliver into it.
pub(crate) struct GateShared {
    state: std::sync::Mutex<GateState>,
    /// Signalled on every delivery and failure; only the gate's owner waits on it.
    arrived: Notify,
}

struct GateState {
    ledger: CreditLedger,
    channels: Vec<InputChannel>,
    /// Indices of channels with a queued element, one entry per element, in arrival order.
    ready: VecDeque<usize>,
    /// Bytes of data buffers received and not yet released by the consumer.
    in_flight_bytes: u64,
    remote_bytes_in: u64,
    /// End-of-partition events handed to the consumer.
    ends_consumed: usize,
    failure: Option<Failure>,
    /// The gate was dropped: deliveries are stale.
    closed: bool,
    /// Channels currently blocked.
    blocked: usize,
}

struct InputChannel {
    key: ChannelKey,
    /// The TaskManager sending on this channel; deliveries from another peer are refused.
    peer_id: String,
    /// Where this channel's credits go; set once the connection (or local sender) is known.
    credit_target: Option<CreditTarget>,
    queue: VecDeque<Incoming>,
    events_queued: u32,
    end_received: bool,
    /// Held back by the consumer (checkpoint alignment): its elements stay queued, and its credits with them.
    blocked: bool,
}

enum Popped {
    Element(usize, Incoming),
    Failed(Failure),
    AllEnded,
    Empty,
}

impl GateShared {
    /// Delivers `item` to input channel `index`. `from_peer` is the connection's peer for remote deliveries.
    pub(crate) fn deliver(
        &self,
        index: usize,
        item: Incoming,
        backlog: u32,
        from_peer: Option<&str>,
        remote_bytes: u64,
    ) -> Result<Vec<Announcement>, DeliverError> {
        let mut state = lock(&self.state);
        if state.closed || state.failure.is_some() {
            return Err(DeliverError::Closed);
        }
        let state = &mut *state;
        let channel = state
            .channels
            .get_mut(index)
            .ok_or_else(|| DeliverError::Violation(format!("no input channel {index}")))?;
        if let Some(peer) = from_peer {
            if peer != channel.peer_id {
                return Err(DeliverError::Violation(format!(
                    "channel {} belongs to {}, not {peer}",
                    channel.key, channel.peer_id
                )));
            }
        }
        if channel.end_received {
            return Err(DeliverError::Violation(format!("channel {}: element after end-of-partition", channel.key)));
        }
        let grants = match item {
            Incoming::Data(buffer) => {
                let grants = state
                    .ledger
                    .on_buffer_received(index, backlog)
                    .map_err(|v| DeliverError::Violation(format!("channel {}: {}", channel.key, v.reason)))?;
                state.in_flight_bytes += buffer.bytes as u64;
                state.remote_bytes_in += remote_bytes;
                channel.queue.push_back(Incoming::Data(buffer));
                state.ready.push_back(index);
                grants
            }
            Incoming::Event(Event::Watermark(timestamp))
                if matches!(channel.queue.back(), Some(Incoming::Event(Event::Watermark(_)))) =>
            {
                channel.queue.pop_back();
                channel.queue.push_back(Incoming::Event(Event::Watermark(timestamp)));
                Vec::new()
            }
            Incoming::Event(event) => {
                if channel.events_queued >= MAX_QUEUED_EVENTS_PER_CHANNEL {
                    return Err(DeliverError::Violation(format!(
                        "channel {}: more than {MAX_QUEUED_EVENTS_PER_CHANNEL} events queued",
                        channel.key
                    )));
                }
                channel.events_queued += 1;
                channel.queue.push_back(Incoming::Event(event));
                state.ready.push_back(index);
                if event == Event::EndOfPartition {
                    channel.end_received = true;
                    state.ledger.on_end_of_partition(index)
                } else {
                    Vec::new()
                }
            }
        };
        let announcements = to_announcements(&state.channels, grants);
        self.arrived.notify_one();
        Ok(announcements)
    }

    /// Fails the gate: the consumer's next call returns the error. Idempotent; the first failure wins.
    pub(crate) fn fail(&self, failure: Failure) {
        let mut state = lock(&self.state);
        if state.failure.is_none() {
            state.failure = Some(failure);
        }
        drop(state);
        self.arrived.notify_one();
    }

    /// Whether an input channel of this gate still expects elements through the connection `connection_id`
    /// (it has not received end-of-partition yet).
    pub(crate) fn waits_on_connection(&self, connection_id: u64) -> bool {
        lock(&self.state).channels.iter().any(|c| {
            !c.end_received && matches!(&c.credit_target, Some(CreditTarget::Remote { connection, .. }) if connection.id == connection_id)
        })
    }

    fn pop(&self) -> Popped {
        let mut state = lock(&self.state);
        if let Some(failure) = &state.failure {
            return Popped::Failed(failure.clone());
        }
        let state = &mut *state;
        let next = if state.blocked == 0 {
            state.ready.pop_front()
        } else {
            // Alignment: the first element of a channel that is not blocked, keeping arrival order otherwise.
            let channels = &state.channels;
            state.ready.iter().position(|&i| !channels[i].blocked).and_then(|at| state.ready.remove(at))
        };
        let Some(index) = next else {
            return if state.ends_consumed == state.channels.len() { Popped::AllEnded } else { Popped::Empty };
        };
        let channel = &mut state.channels[index];
        let Some(item) = channel.queue.pop_front() else {
            unreachable!("input channel {index} was marked ready with an empty queue");
        };
        if let Incoming::Event(event) = &item {
            channel.events_queued -= 1;
            if *event == Event::EndOfPartition {
                state.ends_consumed += 1;
            }
        }
        Popped::Element(index, item)
    }

    /// The consumer is done with a data buffer of `bytes` from channel `index`: frees its slot.
    fn release(&self, index: usize, bytes: usize) -> Vec<Announcement> {
        let mut state = lock(&self.state);
        if state.closed || state.failure.is_some() {
            return Vec::new();
        }
        assert!(
            state.in_flight_bytes >= bytes as u64,
            "releasing {bytes} bytes with only {} in flight",
            state.in_flight_bytes
        );
        state.in_flight_bytes -= bytes as u64;
        let grants = state.ledger.on_buffer_consumed(index);
        to_announcements(&state.channels, grants)
    }
}

fn to_announcements(channels: &[InputChannel], grants: Vec<Grant>) -> Vec<Announcement> {
    grants
        .into_iter()
        .filter_map(|grant| {
            // Targets are set before the initial grants, so every granted channel has one.
            let target = channels[grant.channel].credit_target.clone()?;
            Some(Announcement { target, credits: grant.credits })
        })
        .collect()
}

/// The input gate of one subtask: every input channel, merged into one stream of events.
pub struct InputGate {
    env: Arc<Shared>,
    shared: Arc<GateShared>,
    keys: Vec<ChannelKey>,
    /// The data buffer last returned by `next`, whose slot is released at the start of the next call.
    to_release: Option<(usize, usize)>,
    in_flight_bytes_max: u64,
}

impl InputGate {
    /// Creates the gate's state (not yet announcing any credit) for channels sent by the given peers.
    pub(crate) fn new(env: Arc<Shared>, channels: &[(ChannelKey, String)]) -> Self {
        let config = env.config();
        // Credits are announced by `start`, once every channel has a target; nothing is granted before.
        let ledger = CreditLedger::new(channels.len(), config.credit_initial, config.floating_buffers);
        let in_flight_bytes_max = ledger.slots_max() * config.buffer_size_bytes as u64;
        let inputs: Vec<InputChannel> = channels
            .iter()
            .map(|(key, peer_id)| InputChannel {
                key: *key,
                peer_id: peer_id.clone(),
                credit_target: None,
                queue: VecDeque::new(),
                events_queued: 0,
                end_received: false,
                blocked: false,
            })
            .collect();
        let state = GateState {
            ledger,
            channels: inputs,
            ready: VecDeque::new(),
            in_flight_bytes: 0,
            remote_bytes_in: 0,
            ends_consumed: 0,
            failure: None,
            closed: false,
            blocked: 0,
        };
        let keys = channels.iter().map(|(key, _)| *key).collect();
        let shared = Arc::new(GateShared { state: std::sync::Mutex::new(state), arrived: Notify::new() });
        Self { env, shared, keys, to_release: None, in_flight_bytes_max }
    }

    pub(crate) fn shared(&self) -> &Arc<GateShared> {
        &self.shared
    }

    /// Sets where channel `index` sends its credits.
    pub(crate) fn set_credit_target(&self, index: usize, target: CreditTarget) {
        lock(&self.shared.state).channels[index].credit_target = Some(target);
    }

    /// Announces every channel's exclusive credits: from now on the senders may send.
    pub(crate) fn start(&self) {
        let announcements = {
            let mut state = lock(&self.shared.state);
            let grants = state.ledger.initial_grants();
            to_announcements(&state.channels, grants)
        };
        announce(announcements, self.env.counters());
    }

    /// The next element from any channel, with the channel's index. `None` once every channel has delivered
    /// end-of-partition and all of it was returned.
    ///
    /// End-of-partition is returned once per channel, in order with that channel's data. Calling `next`
    /// again releases the credit of the data buffer it returned last. Cancel-safe: an element is taken only
    /// when it is returned, so dropping the future (e.g. in `select!`) loses nothing.
    pub async fn next(&mut self) -> Option<Result<(usize, StreamEvent), NetworkError>> {
        if let Some((index, bytes)) = self.to_release.take() {
            announce(self.shared.release(index, bytes), self.env.counters());
        }
        loop {
            match self.shared.pop() {
                Popped::Element(index, Incoming::Data(buffer)) => {
                    self.to_release = Some((index, buffer.bytes));
                    let batch = match buffer.payload {
                        Payload::Batch(batch) => Ok(batch),
                        Payload::Ipc(ipc) => {
                            decode_batch(ipc).map_err(|source| NetworkError::Decode { key: self.keys[index], source })
                        }
                    };
                    return Some(batch.map(|batch| (index, StreamEvent::Batch(batch))));
                }
                Popped::Element(index, Incoming::Event(event)) => {
                    let event = match event {
                        Event::Watermark(timestamp_ms) => StreamEvent::Watermark(timestamp_ms),
                        Event::Barrier(checkpoint_id) => StreamEvent::Barrier(checkpoint_id),
                        Event::EndOfPartition => StreamEvent::EndOfPartition,
                        Event::LatencyMarker(emitted_ms) => StreamEvent::LatencyMarker(emitted_ms),
                    };
                    return Some(Ok((index, event)));
                }
                Popped::Failed(failure) => return Some(Err(failure.to_error())),
                Popped::AllEnded => return None,
                // A delivery between `pop` and here leaves a permit in `arrived`, so this wait cannot miss it.
                Popped::Empty => self.shared.arrived.notified().await,
            }
        }
    }

    /// Holds back channel `index`: [`Self::next`] returns nothing more from it until [`Self::unblock_all`].
    /// Its elements stay queued and keep their credits, so its sender is back-pressured meanwhile (aligned
    /// checkpoints: a channel that delivered a barrier waits for the others).
    pub fn block(&mut self, index: usize) {
        let mut state = lock(&self.shared.state);
        if let Some(channel) = state.channels.get_mut(index) {
            if !channel.blocked {
                channel.blocked = true;
                state.blocked += 1;
            }
        }
    }

    /// Releases every blocked channel.
    pub fn unblock_all(&mut self) {
        let mut state = lock(&self.shared.state);
        state.channels.iter_mut().for_each(|c| c.blocked = false);
        state.blocked = 0;
    }

    /// Number of input channels.
    pub fn num_channels(&self) -> usize {
        self.keys.len()
    }

    /// The channel keys, in input-channel order.
    pub fn channel_keys(&self) -> &[ChannelKey] {
        &self.keys
    }

    /// Bytes of data buffers received and not yet consumed: queued in the gate, plus the buffer returned by
    /// the last `next` (released by the following call). Granted but unused credits are not counted.
    pub fn in_flight_bytes(&self) -> u64 {
        lock(&self.shared.state).in_flight_bytes
    }

    /// The bound on [`Self::in_flight_bytes`]: `(channels × credit_initial + floating_buffers) ×
    /// buffer_size_bytes` (a single row bigger than a buffer can exceed it, alone in its buffer).
    pub fn in_flight_bytes_max(&self) -> u64 {
        self.in_flight_bytes_max
    }

    /// Floating credits in the gate's pool, not granted to any channel.
    pub fn available_floating_credits(&self) -> u32 {
        lock(&self.shared.state).ledger.floating_available()
    }

    /// Bytes of data frames received from other TaskManagers (frame bodies, IPC included).
    pub fn remote_bytes_in(&self) -> u64 {
        lock(&self.shared.state).remote_bytes_in
    }
}

impl Drop for InputGate {
    /// Unregisters the channels: later deliveries are stale and dropped.
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            state.ready.clear();
            // Dropping the credit targets breaks the reference cycle gate → sender → gate of local channels.
            state.channels.iter_mut().for_each(|c| {
                c.queue.clear();
                c.credit_target = None;
            });
            state.in_flight_bytes = 0;
        }
        self.env.unregister_gate(&self.keys, &self.shared);
    }
}

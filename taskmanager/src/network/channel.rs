//! The sending end of one channel: its bounded output queue and the credits its receiver granted.
//!
//! The state lives in the environment's registry, keyed by [`ChannelKey`], not inside the
//! [`ResultPartition`](super::ResultPartition): a credit may arrive before the partition exists (it is
//! created lazily here and waits), and buffers queued when the producing task finishes must still drain
//! after the partition is dropped. It goes away with [`release_execution`](super::NetworkEnvironment::release_execution).
//!
//! Sending rules, enforced by [`SenderState::pop_sendable`]:
//! - nothing leaves before the receiver's first credit announcement (so a receiver always exists);
//! - a data buffer leaves only against a credit; an event needs none but never overtakes queued data;
//! - each data buffer carries the backlog (data buffers still queued behind it).
//!
//! Who moves buffers out depends on the [`Transport`]: the connection's writer task for a remote receiver,
//! or [`SenderChannel::pump`] itself, synchronously into the receiving gate, for a receiver in this process.
//!
//! A remote channel is bound to a connection either when its partition is created (the side that dials
//! passes the connection it dialed) or by the first credit, which can only come over the connection to the
//! receiver. So a producer on the TaskManager that does not dial never waits for a connection: it queues,
//! may finish, and its queue drains once the consumer's TaskManager connects and grants credit.
//!
//! Lock order: a sender's lock may be held while taking a gate's lock (local delivery), never the reverse.
//! Credits a gate grants in response are therefore returned as [`Announcement`]s and delivered by
//! [`announce`] after every lock is released.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::buffer::DataBuffer;
use super::connection::Connection;
use super::environment::Counters;
use super::error::{Failure, NetworkError};
use super::gate::{DeliverError, GateShared, Incoming};
use super::{lock, ChannelKey};

/// A non-data element of a channel; it needs no credit but keeps its place in the channel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Watermark(i64),
    Barrier(u64),
    EndOfPartition,
    /// When a source emitted it (ms since the epoch).
    LatencyMarker(i64),
}

/// An element of an output queue.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Data(DataBuffer),
    Event(Event),
}

/// Where a result partition says a subpartition's receiver runs.
pub(crate) enum ReceiverSide {
    /// In this process: a gate here connects itself with [`SenderChannel::connect_local`].
    Local,
    /// On TaskManager `peer_id`, through `connection` if it is known already; otherwise the channel is bound
    /// to the connection that brings its first credit.
    Remote { peer_id: String, connection: Option<Arc<Connection>> },
}

/// How a channel's buffers reach its receiver.
pub(crate) enum Transport {
    /// Through the TCP connection to the receiver's TaskManager.
    Remote(Arc<Connection>),
    /// Straight into input channel `index` of a gate in this process.
    Local { gate: Arc<GateShared>, index: usize },
}

/// Where credits granted by a gate go.
#[derive(Clone)]
pub(crate) enum CreditTarget {
    Local(Arc<SenderChannel>),
    Remote { connection: Arc<Connection>, key: ChannelKey },
}

/// Credits to hand to a sender once no lock is held.
pub(crate) struct Announcement {
    pub target: CreditTarget,
    pub credits: u32,
}

/// The shared state of one channel's sending end.
pub(crate) struct SenderChannel {
    pub key: ChannelKey,
    state: std::sync::Mutex<SenderState>,
    /// Signalled when the queue shrinks or the channel fails; the producing task waits on it when the queue
    /// is full. There is one producer per channel, so `notify_one` (which keeps a permit) loses no wake-up.
    space: Notify,
}

struct SenderState {
    /// The output queue; its length (data and events) is bounded by `output_queue_buffers`.
    queue: VecDeque<Outgoing>,
    /// Data buffers in `queue`: the backlog reported to the receiver.
    data_queued: u32,
    /// Data buffers the receiver can accept now.
    credits: u32,
    /// The receiver has announced credits at least once.
    credit_received: bool,
    transport: Option<Transport>,
    /// The receiver's TaskManager, once a partition attached with a remote receiver: credits from another
    /// TaskManager are refused.
    remote_peer: Option<String>,
    /// A result partition owns this channel (a second one is refused).
    attached: bool,
    failure: Option<Failure>,
    /// The owning partition's remote byte counter, advanced by the connection writer.
    remote_bytes_out: Option<Arc<AtomicU64>>,
}

impl SenderState {
    fn pop_sendable(&mut self) -> Option<(Outgoing, u32)> {
        if !self.credit_received || self.failure.is_some() {
            return None;
        }
        match self.queue.front()? {
            Outgoing::Event(_) => {}
            Outgoing::Data(_) if self.credits > 0 => {}
            Outgoing::Data(_) => return None,
        }
        let item = self.queue.pop_front()?;
        if matches!(item, Outgoing::Data(_)) {
            self.credits -= 1;
            self.data_queued -= 1;
        }
        Some((item, self.data_queued))
    }

    fn is_sendable(&self) -> bool {
        self.credit_received
            && self.failure.is_none()
            && match self.queue.front() {
                Some(Outgoing::Event(_)) => true,
                Some(Outgoing::Data(_)) => self.credits > 0,
                None => false,
            }
    }
}

impl SenderChannel {
    pub(crate) fn new(key: ChannelKey) -> Arc<Self> {
        Arc::new(Self {
            key,
            state: std::sync::Mutex::new(SenderState {
                queue: VecDeque::new(),
                data_queued: 0,
                credits: 0,
                credit_received: false,
                transport: None,
                remote_peer: None,
                attached: false,
                failure: None,
                remote_bytes_out: None,
            }),
            space: Notify::new(),
        })
    }

    /// Makes a result partition the owner, with its receiver on `receiver`'s side.
    ///
    /// Credits may have arrived before (they bound the channel to their connection); they must then come
    /// from the receiver's TaskManager.
    pub(crate) fn attach(&self, receiver: ReceiverSide, remote_bytes_out: Arc<AtomicU64>) -> Result<(), NetworkError> {
        let mut state = lock(&self.state);
        if let Some(failure) = &state.failure {
            return Err(failure.to_error());
        }
        if state.attached {
            return Err(NetworkError::ChannelInUse { key: self.key });
        }
        match receiver {
            ReceiverSide::Local => {
                if let Some(Transport::Remote(connection)) = &state.transport {
                    let reason = format!(
                        "TaskManager {} granted credits for a channel whose receiver is local",
                        connection.peer_id
                    );
                    return Err(NetworkError::Protocol { key: self.key, reason });
                }
            }
            ReceiverSide::Remote { peer_id, connection } => {
                match &state.transport {
                    Some(Transport::Local { .. }) => return Err(NetworkError::ChannelInUse { key: self.key }),
                    Some(Transport::Remote(existing)) if existing.peer_id != peer_id => {
                        let reason = format!(
                            "TaskManager {} granted credits for a channel received by {peer_id}",
                            existing.peer_id
                        );
                        return Err(NetworkError::Protocol { key: self.key, reason });
                    }
                    // Bound by an early credit: keep the connection the receiver uses.
                    Some(Transport::Remote(_)) => {}
                    None => state.transport = connection.map(Transport::Remote),
                }
                state.remote_peer = Some(peer_id);
            }
        }
        state.attached = true;
        state.remote_bytes_out = Some(remote_bytes_out);
        Ok(())
    }

    /// Connects this channel to input channel `index` of a gate in this process.
    pub(crate) fn connect_local(&self, gate: Arc<GateShared>, index: usize) -> Result<(), NetworkError> {
        let mut state = lock(&self.state);
        if let Some(failure) = &state.failure {
            return Err(failure.to_error());
        }
        if state.transport.is_some() {
            return Err(NetworkError::ChannelInUse { key: self.key });
        }
        state.transport = Some(Transport::Local { gate, index });
        Ok(())
    }

    /// Queues `item` unless the queue holds `capacity` elements already; then `item` comes back.
    ///
    /// A watermark directly behind a queued watermark replaces it: only the later one matters, and a
    /// stalled receiver cannot make watermarks pile up.
    pub(crate) fn try_push(&self, item: Outgoing, capacity: usize) -> Result<Option<Outgoing>, NetworkError> {
        let mut state = lock(&self.state);
        if let Some(failure) = &state.failure {
            return Err(failure.to_error());
        }
        if let (Outgoing::Event(Event::Watermark(new)), Some(Outgoing::Event(Event::Watermark(queued)))) =
            (&item, state.queue.back_mut())
        {
            *queued = *new;
            return Ok(None);
        }
        if state.queue.len() >= capacity {
            return Ok(Some(item));
        }
        if matches!(item, Outgoing::Data(_)) {
            state.data_queued += 1;
        }
        state.queue.push_back(item);
        debug_assert!(
            state.queue.len() <= capacity,
            "output queue of {} holds {} > {capacity}",
            self.key,
            state.queue.len()
        );
        Ok(None)
    }

    /// Waits for a change that may have freed queue space (or failed the channel).
    pub(crate) async fn space_changed(&self) {
        self.space.notified().await;
    }

    /// Adds credits announced by the receiver. A peer connection passes itself: credits from a TaskManager
    /// that is not this channel's receiver are refused, and the first credit binds an unbound remote
    /// channel to the connection it came on.
    pub(crate) fn add_credits(&self, credits: u32, from: Option<&Arc<Connection>>) -> Result<(), String> {
        let mut state = lock(&self.state);
        if let Some(actual) = from {
            match &state.transport {
                Some(Transport::Local { .. }) => {
                    return Err(format!("credit from {} for local channel {}", actual.peer_id, self.key))
                }
                Some(Transport::Remote(expected)) if expected.peer_id != actual.peer_id => {
                    return Err(format!(
                        "credit for channel {} from {} instead of {}",
                        self.key, actual.peer_id, expected.peer_id
                    ));
                }
                Some(Transport::Remote(_)) => {}
                None => {
                    if let Some(expected) = state.remote_peer.as_ref().filter(|expected| **expected != actual.peer_id) {
                        return Err(format!(
                            "credit for channel {} from {} instead of {expected}",
                            self.key, actual.peer_id
                        ));
                    }
                    state.transport = Some(Transport::Remote(actual.clone()));
                }
            }
        }
        state.credit_received = true;
        state.credits =
            state.credits.checked_add(credits).ok_or_else(|| format!("credit overflow on channel {}", self.key))?;
        Ok(())
    }

    /// Fails the channel: queued buffers are dropped and the producer's next call returns the error.
    pub(crate) fn fail(&self, failure: Failure) {
        let mut state = lock(&self.state);
        if state.failure.is_none() {
            state.failure = Some(failure);
        }
        state.queue.clear();
        state.data_queued = 0;
        // A failed channel sends nothing more: drop the transport, which also breaks the reference cycle
        // sender → gate → sender of a local channel.
        state.transport = None;
        drop(state);
        self.space.notify_one();
    }

    /// Whether this channel sends through `connection`.
    pub(crate) fn uses_connection(&self, connection_id: u64) -> bool {
        matches!(&lock(&self.state).transport, Some(Transport::Remote(c)) if c.id == connection_id)
    }

    /// Takes up to `max` elements the credits allow, for the connection writer, with each data buffer's
    /// backlog and the byte counter of the owning partition.
    pub(crate) fn take_sendable(&self, max: usize) -> (Vec<(Outgoing, u32)>, Option<Arc<AtomicU64>>) {
        let mut state = lock(&self.state);
        let mut items = Vec::new();
        while items.len() < max {
            let Some(item) = state.pop_sendable() else {
                break;
            };
            items.push(item);
        }
        let counter = state.remote_bytes_out.clone();
        drop(state);
        if !items.is_empty() {
            self.space.notify_one();
        }
        (items, counter)
    }

    pub(crate) fn is_sendable(&self) -> bool {
        lock(&self.state).is_sendable()
    }

    /// Moves what can be sent towards the receiver: hands the channel to the connection writer (remote), or
    /// delivers into the gate right here (local). Returns the credits the gate granted in response.
    pub(crate) fn pump(self: &Arc<Self>, counters: &Counters) -> Vec<Announcement> {
        let mut state = lock(&self.state);
        let (gate, index) = match &state.transport {
            None => return Vec::new(),
            Some(Transport::Remote(connection)) => {
                if state.is_sendable() {
                    connection.schedule(self.clone());
                }
                return Vec::new();
            }
            Some(Transport::Local { gate, index }) => (gate.clone(), *index),
        };
        let mut announcements = Vec::new();
        let mut delivered = false;
        // Bounded by the queue: each turn removes one element.
        while let Some((item, backlog)) = state.pop_sendable() {
            delivered = true;
            let incoming = match item {
                Outgoing::Data(buffer) => Incoming::Data(buffer),
                Outgoing::Event(event) => Incoming::Event(event),
            };
            match gate.deliver(index, incoming, backlog, None, 0) {
                Ok(granted) => announcements.extend(granted),
                Err(DeliverError::Closed) => {
                    counters.stale_frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(DeliverError::Violation(reason)) => {
                    state.failure = Some(Failure::Protocol { key: self.key, reason });
                    break;
                }
            }
        }
        drop(state);
        if delivered {
            self.space.notify_one();
        }
        announcements
    }
}

/// Hands out credits, including those granted in response to the deliveries this causes.
///
/// Ends: every local delivery uses up a credit, and new grants come only from the gates' finite pools.
pub(crate) fn announce(mut work: Vec<Announcement>, counters: &Counters) {
    while let Some(Announcement { target, credits }) = work.pop() {
        match target {
            CreditTarget::Local(sender) => {
                if let Err(reason) = sender.add_credits(credits, None) {
                    sender.fail(Failure::Protocol { key: sender.key, reason });
                    continue;
                }
                work.extend(sender.pump(counters));
            }
            CreditTarget::Remote { connection, key } => connection.announce_credits(key, credits),
        }
    }
}

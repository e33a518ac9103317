//! The data plane between subtasks: one TCP connection per TaskManager pair, credit-based flow control,
//! and in-process channels with the same bounds.
//!
//! ```text
//!  producing task                                                         consuming task
//!  ResultPartition ──▶ output queue ──(credit)──▶ connection ══TCP══▶ reader ──▶ InputGate ──▶ next()
//!   (buffer timeout,    (≤ output_queue_buffers)   writer task         task       (≤ credits)     │
//!    split/concat)             ▲                                                                  │
//!                              └────────────── credit frames ◀═══════════ CreditLedger ◀──────────┘
//!                                                                          (exclusive + floating)
//!  same TaskManager: output queue ──(credit)──▶ InputGate directly (no IPC, same credits and queue bounds)
//! ```
//!
//! A *channel* connects one upstream subtask to one downstream subtask along one edge of one execution, and
//! is named by a [`ChannelKey`] both sides derive from the deployment. Every bound in this module is in
//! [`NetworkConfig`] or a documented `const`:
//!
//! - bytes in flight towards a gate: `(channels × credit_initial + floating_buffers) × buffer_size_bytes`
//!   ([`credit`] explains the accounting, [`InputGate::in_flight_bytes_max`] exposes it);
//! - buffers waiting at a sender: `output_queue_buffers` per subpartition, after which the producer waits
//!   (that wait is its backpressure time);
//! - frame length: `max_frame_bytes`, checked before allocating ([`frame`]); a few hundred bytes until the
//!   handshake is done;
//! - waits: `connect_timeout` for dialing, for a peer to dial us, and for a handshake we dialed; an accepted
//!   connection must finish its handshake within `ACCEPT_HANDSHAKE_TIMEOUT_MAX`;
//! - connections: `MAX_PENDING_HANDSHAKES` in their handshake, `MAX_ACCEPTED_CONNECTIONS` after it;
//! - sending state: `MAX_SENDER_CHANNELS` in all, of which `MAX_UNCLAIMED_SENDER_CHANNELS` created by an
//!   early credit, each dropped after `UNCLAIMED_SENDER_TTL` or when its connection closes unless claimed.
//!
//! Layout: [`frame`] (wire format), [`credit`] (receiver accounting), `buffer` (batches into buffers, IPC),
//! `channel` (sender state), `gate` ([`InputGate`]), `partition` ([`ResultPartition`]), `connection` (TCP,
//! handshake, reader and writer tasks), `environment` ([`NetworkEnvironment`], registry, accept loop).
use std::fmt;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

mod buffer;
mod channel;
mod connection;
pub mod credit;
mod environment;
mod error;
pub mod frame;
mod gate;
mod partition;
#[cfg(test)]
mod tests;

pub use connection::MAX_BUFFERS_PER_CHANNEL_TURN;
// For the fuzz targets' entry points (`crate::fuzzing`) only.
pub(crate) use buffer::decode_batch;
#[cfg(test)]
pub(crate) use buffer::encode_batch;
pub(crate) use connection::accept_hello;
pub use environment::{
    NetworkEnvironment, ACCEPT_HANDSHAKE_TIMEOUT_MAX, MAX_ACCEPTED_CONNECTIONS, MAX_PENDING_HANDSHAKES,
    MAX_RELEASED_EXECUTIONS, MAX_SENDER_CHANNELS, MAX_UNCLAIMED_SENDER_CHANNELS, UNCLAIMED_SENDER_TTL,
};
pub use error::NetworkError;
pub use gate::{InputGate, MAX_QUEUED_EVENTS_PER_CHANNEL};
pub use partition::ResultPartition;

/// The smallest `max_frame_bytes` accepted: room for a hello and for a data frame of a small buffer.
pub const MAX_FRAME_BYTES_MIN: usize = 4096;

/// Default size of one network buffer (the unit of credit): big enough that per-buffer costs vanish, small
/// enough that a few per channel stay cheap.
pub const BUFFER_SIZE_BYTES_DEFAULT: usize = 32 * 1024;
/// Default exclusive credits per input channel.
pub const CREDIT_INITIAL_DEFAULT: u32 = 2;
/// Default floating buffers per input gate.
pub const FLOATING_BUFFERS_DEFAULT: u32 = 8;
/// Default elements a subpartition may queue before the producing task waits.
pub const OUTPUT_QUEUE_BUFFERS_DEFAULT: u32 = 4;
/// Default largest frame on the data port. A buffer is far smaller, but a single row bigger than a buffer
/// travels alone in its own frame, so the bound is what one row may weigh.
pub const MAX_FRAME_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
const _: () =
    assert!(MAX_FRAME_BYTES_MIN <= BUFFER_SIZE_BYTES_DEFAULT && BUFFER_SIZE_BYTES_DEFAULT < MAX_FRAME_BYTES_DEFAULT);

/// Settings of the network stack; the TaskManager fills them from its flags and config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Size of one network buffer: the unit of credit. Small batches are concatenated up to it, bigger ones
    /// cut into row slices that fit (a single bigger row travels alone). [`BUFFER_SIZE_BYTES_DEFAULT`].
    pub buffer_size_bytes: usize,
    /// Exclusive credits per input channel: buffers a channel can always receive. At least 1, so every
    /// channel makes progress. [`CREDIT_INITIAL_DEFAULT`].
    pub credit_initial: u32,
    /// Floating buffers per input gate, granted to channels whose senders report a backlog.
    /// [`FLOATING_BUFFERS_DEFAULT`].
    pub floating_buffers: u32,
    /// Elements (buffers and events) a subpartition may queue before the producing task waits.
    /// [`OUTPUT_QUEUE_BUFFERS_DEFAULT`].
    pub output_queue_buffers: u32,
    /// The largest frame body accepted or sent on the data port; a bigger length prefix closes the
    /// connection. Must hold a full buffer with its header. [`MAX_FRAME_BYTES_DEFAULT`].
    pub max_frame_bytes: usize,
    /// Bound on dialing a peer, on waiting for a peer to dial us, and on a handshake. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            buffer_size_bytes: BUFFER_SIZE_BYTES_DEFAULT,
            credit_initial: CREDIT_INITIAL_DEFAULT,
            floating_buffers: FLOATING_BUFFERS_DEFAULT,
            output_queue_buffers: OUTPUT_QUEUE_BUFFERS_DEFAULT,
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl NetworkConfig {
    /// Checks the settings against each other; the error names every problem found.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let mut problems = Vec::new();
        if self.buffer_size_bytes == 0 {
            problems.push("buffer_size_bytes must be at least 1".to_string());
        }
        if self.credit_initial == 0 {
            problems.push("credit_initial must be at least 1, or a channel could never receive".to_string());
        }
        if self.output_queue_buffers == 0 {
            problems.push("output_queue_buffers must be at least 1".to_string());
        }
        if self.max_frame_bytes < MAX_FRAME_BYTES_MIN || self.max_frame_bytes > u32::MAX as usize {
            problems.push(format!(
                "max_frame_bytes must be within {MAX_FRAME_BYTES_MIN}..={}, got {}",
                u32::MAX,
                self.max_frame_bytes
            ));
        }
        if self.buffer_size_bytes.saturating_add(frame::DATA_FRAME_OVERHEAD_BYTES) > self.max_frame_bytes {
            problems.push(format!(
                "buffer_size_bytes ({}) plus the {}-byte data frame header must fit max_frame_bytes ({})",
                self.buffer_size_bytes,
                frame::DATA_FRAME_OVERHEAD_BYTES,
                self.max_frame_bytes
            ));
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout must be positive".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NetworkError::InvalidConfig(problems.join("; ")))
        }
    }
}

/// Names one channel: the execution (attempt) it belongs to, the job-graph edge, and the upstream and
/// downstream subtask. Both ends derive it from the deployment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ChannelKey {
    pub execution_id: u64,
    pub edge: u32,
    pub from_subtask: u32,
    pub to_subtask: u32,
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "execution {} edge {} subtask {}→{}",
            self.execution_id, self.edge, self.from_subtask, self.to_subtask
        )
    }
}

/// Where the other end of a channel runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub task_manager_id: String,
    /// `host:port` of its data port.
    pub data_address: String,
}

/// What flows through a channel, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Batch(RecordBatch),
    /// Event time in milliseconds.
    Watermark(i64),
    /// Checkpoint id.
    Barrier(u64),
    /// The upstream subtask will send nothing more on this channel.
    EndOfPartition,
    /// A latency marker: when a source emitted it (ms since the epoch). It travels behind the data a source
    /// emitted before it, on one channel of each partition it crosses.
    LatencyMarker(i64),
}

/// Counters of one [`NetworkEnvironment`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Connections to peers that are open now.
    pub connections: usize,
    /// Sending states held (one per output channel, including those created by an early credit and not
    /// yet claimed by their partition).
    pub sender_channels: usize,
    /// Connections established since start (dialed or accepted).
    pub connections_opened: u64,
    /// Incoming connections refused (bad handshake, too many pending handshakes).
    pub connections_refused: u64,
    /// Frames dropped because no receiver (or sender, for credits) is registered for their channel:
    /// released or unknown executions.
    pub stale_frames_dropped: u64,
    /// Connections closed because the peer broke the protocol (bad frame, data without credit, ...).
    pub protocol_errors: u64,
    /// Bytes of data frames received.
    pub remote_bytes_in: u64,
    /// Bytes of frames sent for data and events (credits excluded).
    pub remote_bytes_out: u64,
}

/// Locks a std mutex, ignoring poisoning: the state behind our mutexes is consistent after every
/// statement that can panic (only assertions), and a poisoned channel must still be releasable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

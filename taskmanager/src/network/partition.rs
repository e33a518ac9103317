//! The sending side of one subtask's output along one edge: a result partition of subpartitions.
//!
//! Each subpartition fills one network buffer at a time: small batches accumulate until they reach
//! `buffer_size_bytes` or until the buffer timeout passes (0 sends every batch at once); large batches are
//! cut into row slices that each fit a buffer. Finished buffers go into the channel's output queue, which
//! holds at most `output_queue_buffers` elements; when it is full the producing task waits, and that wait is
//! the task's backpressure ([`ResultPartition::backpressured_time`]).
//!
//! The buffer timeout is not a hidden timer: the executor asks [`ResultPartition::next_flush_deadline`] and
//! calls [`ResultPartition::flush`] when it passes, from the same loop that polls its input. That keeps the
//! partition a plain `&mut` object owned by one task, with no locking of partial buffers.
//!
//! Dropping the partition keeps what is already queued: it still drains as credits arrive, so
//! `broadcast_event(EndOfPartition)` followed by `flush()` and drop is a clean finish. A partial buffer not
//! flushed before the drop is lost.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::time::Instant;

use super::buffer::{batch_bytes, concat, split_local, split_remote};
use super::channel::{announce, Event, Outgoing, SenderChannel};
use super::environment::Shared;
use super::frame::DATA_FRAME_OVERHEAD_BYTES;
use super::{NetworkError, StreamEvent};

/// One output channel of a partition.
pub(crate) struct Subpartition {
    pub channel: Arc<SenderChannel>,
    /// The receiver is on another TaskManager: buffers are IPC-encoded.
    pub remote: bool,
    /// Batches accumulated for the next buffer.
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    /// When the pending batches must go out at the latest (set by the first one).
    deadline: Option<Instant>,
}

impl Subpartition {
    pub(crate) fn new(channel: Arc<SenderChannel>, remote: bool) -> Self {
        Self { channel, remote, pending: Vec::new(), pending_bytes: 0, deadline: None }
    }
}

/// The result partition of one subtask along one edge.
pub struct ResultPartition {
    env: Arc<Shared>,
    subpartitions: Vec<Subpartition>,
    buffer_timeout: Duration,
    backpressured: Duration,
    bytes_out: u64,
    /// IPC bytes of data buffers queued for receivers on other TaskManagers.
    remote_bytes_queued: u64,
    remote_bytes_out: Arc<AtomicU64>,
    /// The subpartition the next latency marker goes to.
    next_marker_subpartition: usize,
    /// While a send waits for room: since when ([`crate::time::monotonic_nanos`]); 0 otherwise. Read by the
    /// task's metrics, so a long wait counts as back-pressure while it lasts, not only once it ended.
    waiting_since: Arc<AtomicU64>,
}

impl ResultPartition {
    pub(crate) fn new(
        env: Arc<Shared>,
        subpartitions: Vec<Subpartition>,
        buffer_timeout: Duration,
        remote_bytes_out: Arc<AtomicU64>,
    ) -> Self {
        Self {
            env,
            subpartitions,
            buffer_timeout,
            backpressured: Duration::ZERO,
            bytes_out: 0,
            remote_bytes_queued: 0,
            remote_bytes_out,
            next_marker_subpartition: 0,
            waiting_since: Arc::default(),
        }
    }

    /// Number of subpartitions (output channels).
    pub fn num_subpartitions(&self) -> usize {
        self.subpartitions.len()
    }

    /// Adds `batch` to subpartition `subpartition`'s current buffer, and queues the buffer once it is full (or
    /// at once with a zero buffer timeout). Waits while the output queue is full.
    ///
    /// Not cancel-safe: dropping the future while it waits for queue space loses the buffers not yet queued.
    pub async fn send_batch(&mut self, subpartition: usize, batch: RecordBatch) -> Result<(), NetworkError> {
        let count = self.subpartitions.len();
        let sub = self
            .subpartitions
            .get_mut(subpartition)
            .ok_or(NetworkError::NoSuchSubpartition { index: subpartition, count })?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        sub.pending_bytes += batch_bytes(&batch);
        sub.pending.push(batch);
        if sub.deadline.is_none() {
            sub.deadline = Some(Instant::now() + self.buffer_timeout);
        }
        if self.buffer_timeout.is_zero() || sub.pending_bytes >= self.env.config().buffer_size_bytes {
            self.flush_subpartition(subpartition).await?;
        }
        Ok(())
    }

    /// The clock of this partition's wait under way (see the field).
    pub fn waiting_since(&self) -> Arc<AtomicU64> {
        self.waiting_since.clone()
    }

    /// Sends a latency marker on one subpartition, the next in turn, behind what is pending there: on one
    /// path only, so markers do not multiply at every shuffle.
    pub async fn send_latency_marker(&mut self, emitted_ms: i64) -> Result<(), NetworkError> {
        if self.subpartitions.is_empty() {
            return Ok(());
        }
        let subpartition = self.next_marker_subpartition % self.subpartitions.len();
        self.next_marker_subpartition = subpartition + 1;
        self.flush_subpartition(subpartition).await?;
        self.enqueue(subpartition, Outgoing::Event(Event::LatencyMarker(emitted_ms))).await
    }

    /// Sends `event` on every subpartition, behind what is pending there. A `Batch` is sent to every
    /// subpartition, like [`Self::send_batch`] on each.
    pub async fn broadcast_event(&mut self, event: StreamEvent) -> Result<(), NetworkError> {
        let event = match event {
            StreamEvent::Batch(batch) => {
                for subpartition in 0..self.subpartitions.len() {
                    self.send_batch(subpartition, batch.clone()).await?;
                }
                return Ok(());
            }
            StreamEvent::Watermark(timestamp_ms) => Event::Watermark(timestamp_ms),
            StreamEvent::Barrier(checkpoint_id) => Event::Barrier(checkpoint_id),
            StreamEvent::EndOfPartition => Event::EndOfPartition,
            StreamEvent::LatencyMarker(emitted_ms) => Event::LatencyMarker(emitted_ms),
        };
        for subpartition in 0..self.subpartitions.len() {
            self.flush_subpartition(subpartition).await?;
            self.enqueue(subpartition, Outgoing::Event(event)).await?;
        }
        Ok(())
    }

    /// The earliest instant at which a partial buffer must be flushed, if any is pending.
    pub fn next_flush_deadline(&self) -> Option<Instant> {
        self.subpartitions.iter().filter_map(|s| s.deadline).min()
    }

    /// Queues every partial buffer, waiting for queue space as needed.
    pub async fn flush(&mut self) -> Result<(), NetworkError> {
        for subpartition in 0..self.subpartitions.len() {
            self.flush_subpartition(subpartition).await?;
        }
        Ok(())
    }

    /// Cumulative time `send_batch`, `broadcast_event` and `flush` spent waiting for output queue space,
    /// which frees up only as the receivers grant credit: the backpressure this task is under.
    pub fn backpressured_time(&self) -> Duration {
        self.backpressured
    }

    /// IPC bytes of the data buffers this partition has queued for receivers on other TaskManagers. Unlike
    /// [`ResultPartition::remote_bytes_out`] it is complete when the producing task ends, so it is what the
    /// task reports.
    pub fn remote_bytes_queued(&self) -> u64 {
        self.remote_bytes_queued
    }

    /// Bytes of frames written to other TaskManagers for this partition (by the connection writers, so it
    /// lags the queue).
    pub fn remote_bytes_out(&self) -> u64 {
        self.remote_bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes of data buffers queued on all subpartitions (IPC bytes for remote ones, row memory for local).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    async fn flush_subpartition(&mut self, subpartition: usize) -> Result<(), NetworkError> {
        let buffer_size = self.env.config().buffer_size_bytes;
        let max_frame_bytes = self.env.config().max_frame_bytes;
        let sub = &mut self.subpartitions[subpartition];
        let key = sub.channel.key;
        sub.deadline = None;
        sub.pending_bytes = 0;
        let Some(batch) =
            concat(std::mem::take(&mut sub.pending)).map_err(|source| NetworkError::Arrow { key, source })?
        else {
            return Ok(());
        };
        let remote = sub.remote;
        let buffers = if remote {
            let buffers = split_remote(batch, buffer_size).map_err(|source| NetworkError::Arrow { key, source })?;
            if let Some(big) = buffers.iter().find(|b| b.bytes + DATA_FRAME_OVERHEAD_BYTES > max_frame_bytes) {
                return Err(NetworkError::FrameTooLarge {
                    key,
                    bytes: big.bytes + DATA_FRAME_OVERHEAD_BYTES,
                    max: max_frame_bytes,
                });
            }
            buffers
        } else {
            split_local(batch, buffer_size)
        };
        for buffer in buffers {
            self.bytes_out += buffer.bytes as u64;
            if remote {
                self.remote_bytes_queued += buffer.bytes as u64;
            }
            self.enqueue(subpartition, Outgoing::Data(buffer)).await?;
        }
        Ok(())
    }

    /// Puts `item` into the subpartition's output queue, waiting while it is full, then moves what credits
    /// allow towards the receiver.
    async fn enqueue(&mut self, subpartition: usize, item: Outgoing) -> Result<(), NetworkError> {
        let channel = self.subpartitions[subpartition].channel.clone();
        let capacity = self.env.config().output_queue_buffers as usize;
        let mut item = item;
        let mut waiting_since = None;
        // Ends when the queue has room or the channel fails; each wake-up follows a queue change or failure.
        let result = loop {
            match channel.try_push(item, capacity) {
                Ok(None) => break Ok(()),
                Ok(Some(returned)) => item = returned,
                Err(e) => break Err(e),
            }
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.waiting_since.store(crate::time::monotonic_nanos(), Ordering::Relaxed);
            }
            channel.space_changed().await;
        };
        if let Some(since) = waiting_since {
            self.backpressured += since.elapsed();
            self.waiting_since.store(0, Ordering::Relaxed);
        }
        result?;
        announce(channel.pump(self.env.counters()), self.env.counters());
        Ok(())
    }
}

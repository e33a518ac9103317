//! The task loop: take the next input, push it through the chain, route the output; and between inputs,
//! serve checkpoint commands, timers, watermarks and buffer flushes.
//!
//! The loop is the only place that waits. Each wait is one `select!` that cancellation wins (`biased`),
//! so a cancelled task stops at its next wait and drops its channels.
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use tokio_util::sync::CancellationToken;

use super::snapshot::next_command;
use super::{accounting, batch_fits, operator_error, timers, Head, Runner, TaskError};
use crate::checkpoint::CheckpointCommand;
use crate::metrics::TaskCounters;
use crate::network::{NetworkError, StreamEvent};
use crate::operator_api::SourcePoll;
use crate::time::END_OF_TIME;

impl Runner {
    /// Runs the chain until its input ends; the newest checkpoint it took part in.
    pub(super) async fn run(&mut self, counters: &TaskCounters) -> Result<u64, TaskError> {
        loop {
            if matches!(self.head, Head::Source(_)) {
                while let Some(command) = self.checkpointing.commands.as_mut().and_then(|c| c.try_recv().ok()) {
                    self.on_command(command, counters).await?;
                }
            }
            match &mut self.head {
                Head::Source(source) => match source.poll_next()? {
                    SourcePoll::Batch(batch) => {
                        if let Some(generator) = &mut self.generator {
                            generator.ensure_splits(source.split_count());
                            generator.observe_split(&batch, source.split_of_last_batch())?;
                        }
                        self.push(vec![batch], 0, 0, counters).await?;
                        self.account_busy(counters);
                    }
                    SourcePoll::Wait(wait) => {
                        self.account_busy(counters);
                        self.flush_outputs().await?;
                        let wait = match self.timer_deadline() {
                            Some(deadline) => wait.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                            None => wait,
                        };
                        counters.note_waiting_for_input(true);
                        let command = tokio::select! {
                            biased;
                            _ = self.cancel.cancelled() => return Err(TaskError::Cancelled),
                            command = next_command(&mut self.checkpointing.commands) => command,
                            _ = tokio::time::sleep(wait) => None,
                        };
                        self.account_idle(counters);
                        if let Some(command) = command {
                            self.on_command(command, counters).await?;
                        }
                    }
                    SourcePoll::End => break,
                },
                Head::Gate(_) => match self.next_from_gate(counters).await? {
                    Some((input, batch)) => self.push(vec![batch], 0, input, counters).await?,
                    None => break,
                },
            };
            if let Some(watermark) = self.generator.as_mut().and_then(|g| g.poll(Instant::now())) {
                self.advance_watermark(watermark, counters).await?;
            }
            if matches!(self.head, Head::Source(_)) && Instant::now() >= self.next_latency_marker {
                self.next_latency_marker = Instant::now() + timers::LATENCY_MARKER_INTERVAL;
                self.forward_latency_marker(crate::time::now_millis()).await?;
            }
            self.fire_due_timers(counters).await?;
            let now = tokio::time::Instant::now();
            if self.outputs.iter().any(|o| o.partition.next_flush_deadline().is_some_and(|d| d <= now)) {
                self.flush_outputs().await?;
            }
        }
        if matches!(self.head, Head::Source(_)) {
            // A bounded source ended: all of event time has passed.
            self.advance_watermark(END_OF_TIME, counters).await?;
        }
        self.finish(counters).await?;
        Ok(self.checkpointing.aligner.last_aligned())
    }

    /// The next batch from the input gate. Meanwhile: flushes output buffers whose timeout expires, forwards
    /// watermarks, and fires processing-time timers.
    async fn next_from_gate(&mut self, counters: &TaskCounters) -> Result<Option<(usize, RecordBatch)>, TaskError> {
        loop {
            self.account_busy(counters);
            let deadline = self.outputs.iter().filter_map(|o| o.partition.next_flush_deadline()).min();
            let timer = self.timer_deadline();
            let Head::Gate(gate) = &mut self.head else { return Ok(None) };
            counters.note_waiting_for_input(true);
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(TaskError::Cancelled),
                command = next_command(&mut self.checkpointing.commands) => match command {
                    Some(command) => Wake::Command(command),
                    None => continue,
                },
                _ = timers::sleep_until_opt(timer) => Wake::Timer,
                _ = timers::sleep_until_opt(deadline) => Wake::Flush,
                event = gate.next() => Wake::Event(event),
            };
            accounting::record_gate(gate, counters);
            self.account_idle(counters);
            match event {
                Wake::Command(command) => self.on_command(command, counters).await?,
                Wake::Timer => self.fire_due_timers(counters).await?,
                Wake::Flush => self.flush_outputs().await?,
                Wake::Event(None) => return Ok(None),
                Wake::Event(Some(Err(e))) => return Err(e.into()),
                Wake::Event(Some(Ok((channel, StreamEvent::Batch(batch))))) => {
                    if let Some(Some(expected)) = self.channel_schemas.get(channel) {
                        batch_fits(&batch, expected)
                            .map_err(|e| TaskError::internal(format!("input channel {channel}: {e}")))?;
                    }
                    for watermark in self.input_watermarks.on_record(channel) {
                        self.advance_watermark(watermark, counters).await?;
                    }
                    return Ok(Some((self.channel_inputs.get(channel).copied().unwrap_or(0), batch)));
                }
                Wake::Event(Some(Ok((channel, StreamEvent::Watermark(watermark))))) => {
                    for watermark in self.input_watermarks.on_watermark(channel, watermark) {
                        self.advance_watermark(watermark, counters).await?;
                    }
                }
                Wake::Event(Some(Ok((channel, StreamEvent::Barrier(id))))) => {
                    self.on_barrier(channel, id, counters).await?
                }
                Wake::Event(Some(Ok((channel, StreamEvent::EndOfPartition)))) => {
                    self.on_channel_ended(channel, counters).await?
                }
                Wake::Event(Some(Ok((_, StreamEvent::LatencyMarker(emitted_ms))))) => {
                    counters.observe_latency_marker(emitted_ms);
                    self.forward_latency_marker(emitted_ms).await?;
                }
            }
        }
    }

    /// Operator `index` produced `out` outside of processing a batch (timers, watermarks, the end of input):
    /// counts it and sends it on through the rest of the chain.
    pub(super) async fn produced(
        &mut self,
        index: usize,
        out: Vec<RecordBatch>,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        let vertex = &counters.vertices[index + self.offset];
        for batch in &out {
            vertex.records_out.inc_by(batch.num_rows() as u64);
            vertex.bytes_out.inc_by(batch.get_array_memory_size() as u64);
        }
        self.collect_side_output(index, counters);
        self.push(out, index + 1, 0, counters).await
    }

    /// Takes operator `index`'s side output: routed when it is the chain's tail (side-output edges always
    /// leave a chain), dropped otherwise (no edge consumes it; the operator counted the records).
    fn collect_side_output(&mut self, index: usize, counters: &TaskCounters) {
        let is_tail = index + 1 == self.operators.len();
        let operator = &mut self.operators[index];
        let vertex = &counters.vertices[index + self.offset];
        vertex.late_records.inc_by(operator.late_records().saturating_sub(vertex.late_records.get()));
        if is_tail {
            operator.drain_side_output(&mut self.side);
        } else {
            operator.drain_side_output(&mut Vec::new());
        }
    }

    /// Pushes `batches` into operator `first` (as its input `input`) and on through the chain, then to the
    /// outputs. With `first` past the last operator, the batches go straight to the outputs.
    pub(super) async fn push(
        &mut self,
        batches: Vec<RecordBatch>,
        first: usize,
        input: usize,
        counters: &TaskCounters,
    ) -> Result<(), TaskError> {
        if self.offset == 1 && first == 0 {
            let head = &counters.vertices[0];
            for batch in &batches {
                head.records_out.inc_by(batch.num_rows() as u64);
                head.bytes_out.inc_by(batch.get_array_memory_size() as u64);
            }
        }
        let mut current = batches;
        let mut pause = None;
        for index in first..self.operators.len() {
            if current.is_empty() {
                break;
            }
            let vertex = &counters.vertices[index + self.offset];
            let operator = &mut self.operators[index];
            let mut next = Vec::new();
            for batch in current {
                vertex.records_in.inc_by(batch.num_rows() as u64);
                vertex.bytes_in.inc_by(batch.get_array_memory_size() as u64);
                let processed = if index == first {
                    operator.process_input(input, batch, &mut next)
                } else {
                    operator.process(batch, &mut next)
                };
                processed.map_err(|e| operator_error(counters, index + self.offset, e))?;
            }
            for batch in &next {
                vertex.records_out.inc_by(batch.num_rows() as u64);
                vertex.bytes_out.inc_by(batch.get_array_memory_size() as u64);
            }
            pause = pause.max(operator.pause());
            self.collect_side_output(index, counters);
            current = next;
        }
        self.emit(current, counters).await?;
        if let Some(pause) = pause {
            self.account_busy(counters);
            self.flush_outputs().await?;
            // A throttled operator (a slow sink) is busy while it waits, as a slow user function is in
            // Flink: it is the cause of backpressure, not its victim.
            cancellable_sleep(&self.cancel, pause).await?;
            self.account_busy(counters);
        }
        Ok(())
    }

    /// Sends the tail's main output to the main outputs, and its side output to the edges that carry it.
    async fn emit(&mut self, batches: Vec<RecordBatch>, counters: &TaskCounters) -> Result<(), TaskError> {
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            for output in self.outputs.iter_mut().filter(|o| o.plan.side_output.is_none()) {
                output.emit(batch.clone()).await?;
            }
        }
        for (name, batch) in std::mem::take(&mut self.side) {
            for output in self.outputs.iter_mut().filter(|o| o.plan.side_output.as_deref() == Some(name)) {
                output.emit(batch.clone()).await?;
            }
        }
        self.sync_remote_bytes_out(counters);
        Ok(())
    }

    pub(super) async fn flush_outputs(&mut self) -> Result<(), TaskError> {
        for output in &mut self.outputs {
            output.partition.flush().await?;
        }
        Ok(())
    }

    /// Finishes operators in chain order, each one's final output flowing through the rest, then closes
    /// every output with end-of-partition.
    async fn finish(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        for index in 0..self.operators.len() {
            let mut out = Vec::new();
            self.operators[index].finish(&mut out).map_err(|e| operator_error(counters, index + self.offset, e))?;
            self.produced(index, out, counters).await?;
        }
        for output in &mut self.outputs {
            output.partition.broadcast_event(StreamEvent::EndOfPartition).await?;
            output.partition.flush().await?;
        }
        self.account_busy(counters);
        self.sync_remote_bytes_out(counters);
        Ok(())
    }
}

/// What woke a task waiting on its input gate.
enum Wake {
    Command(CheckpointCommand),
    Timer,
    Flush,
    Event(Option<Result<(usize, StreamEvent), NetworkError>>),
}

/// Sleeps for `duration` unless the task is cancelled first.
async fn cancellable_sleep(cancel: &CancellationToken, duration: Duration) -> Result<(), TaskError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(TaskError::Cancelled),
        _ = tokio::time::sleep(duration) => Ok(()),
    }
}

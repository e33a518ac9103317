//! Event time inside a task: generating watermarks at sources, combining them at input gates.
//!
//! A watermark `w` promises that no record with an event time `<= w` follows on that channel (Flink's
//! convention). A source subtask generates them from the largest timestamp it has produced
//! ([`WatermarkGenerator`]); every other task forwards the minimum over its input channels
//! ([`InputWatermarks`]), never moving backwards. Watermarks travel as events on the same channels as the
//! records, so they stay in order with them.
//!
//! Idleness: a source subtask that produced nothing for its idle timeout sends [`IDLE`] instead of a
//! watermark. Downstream, an idle channel does not hold the minimum back; it counts again as soon as a
//! record or a watermark arrives on it. When every input is idle the task forwards [`IDLE`] itself.
//!
//! At the end of a bounded input, sources send [`END_OF_TIME`]: every event-time window closes.
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::{
    cast, concat_batches, filter_record_batch, lexsort_to_indices, not, take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::WATERMARK_INTERVAL_MS_DEFAULT;
use sluice_common::proto::{event_time::Watermarks, EventTime};

use crate::operator_api::OperatorError;

/// The watermark value that marks a channel idle. No real watermark is ever this small.
pub const IDLE: i64 = i64::MIN;
/// The last watermark of a bounded input: all of event time has passed.
pub const END_OF_TIME: i64 = i64::MAX;

/// Nanoseconds since this process first asked (never 0, so 0 can mean "not set"): the clock a task and its
/// metrics share for waits under way.
pub fn monotonic_nanos() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX).saturating_add(1)
}

/// Milliseconds since the Unix epoch, for processing time.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An event-time column as milliseconds. Nulls stay nulls.
pub fn timestamps_of(column: &ArrayRef) -> Result<ArrayRef, OperatorError> {
    match column.data_type() {
        DataType::Int64 => Ok(column.clone()),
        _ => Ok(cast(column, &DataType::Int64)?),
    }
}

/// Records waiting until the watermark passes them: for operators whose answer must not depend on the order
/// records arrive in within the out-of-orderness bound (deduplication, the temporal join).
pub struct EventTimeBuffer {
    schema: SchemaRef,
    time_column: usize,
    pending: Vec<RecordBatch>,
}

impl EventTimeBuffer {
    pub fn new(schema: SchemaRef, time_column: usize) -> Self {
        Self { schema, time_column, pending: Vec::new() }
    }

    pub fn push(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.pending.push(batch);
        }
    }

    /// The buffered rows as an Arrow IPC stream, for a checkpoint; empty when nothing is buffered.
    pub fn to_ipc(&self) -> Result<Vec<u8>, OperatorError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)?;
        for batch in &self.pending {
            writer.write(batch)?;
        }
        Ok(writer.into_inner()?)
    }

    /// Removes the buffered rows at or before `up_to` (and those without a time) and returns them sorted by
    /// time, ties broken by the other columns in order, so equal inputs always come out in one order.
    pub fn take_due(&mut self, up_to: i64) -> Result<Option<RecordBatch>, OperatorError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let all = concat_batches(&self.schema, &std::mem::take(&mut self.pending))?;
        let times = timestamps_of(all.column(self.time_column))?;
        let due: BooleanArray =
            times.as_primitive::<Int64Type>().iter().map(|t| Some(t.is_none_or(|t| t <= up_to))).collect();
        let waiting = filter_record_batch(&all, &not(&due)?)?;
        self.push(waiting);
        let ready = filter_record_batch(&all, &due)?;
        if ready.num_rows() == 0 {
            return Ok(None);
        }
        let mut order = vec![SortColumn { values: ready.column(self.time_column).clone(), options: None }];
        order.extend(
            (0..ready.num_columns())
                .filter(|&c| c != self.time_column)
                .map(|c| SortColumn { values: ready.column(c).clone(), options: None }),
        );
        Ok(Some(take_record_batch(&ready, &lexsort_to_indices(&order, None)?)?))
    }
}

/// The watermarks of one source subtask.
///
/// A source made of splits (Kafka partitions) has a watermark per split: each advances with its own largest
/// timestamp, and the source's watermark is the minimum over the splits that produced within the idle
/// timeout. So a partition that lags holds event time back (its records are not made late by a faster
/// one), and an empty partition stops holding it back once idle. Without splits the source is one split.
pub struct WatermarkGenerator {
    column: usize,
    out_of_orderness: i64,
    interval: Duration,
    idle_timeout: Option<Duration>,
    splits: Vec<SplitTime>,
    emitted: i64,
    next_emit: Instant,
    idle: bool,
}

#[derive(Clone, Copy)]
struct SplitTime {
    max_timestamp: i64,
    last_record: Instant,
}

impl WatermarkGenerator {
    pub fn new(event_time: &EventTime, schema: &Schema) -> Result<Self, OperatorError> {
        let column = schema.index_of(&event_time.column)?;
        let out_of_orderness = match &event_time.watermarks {
            Some(Watermarks::BoundedOutOfOrdernessMs(ms)) => i64::try_from(*ms).unwrap_or(i64::MAX),
            Some(Watermarks::Monotonous(_)) | None => 0,
        };
        let now = Instant::now();
        Ok(Self {
            column,
            out_of_orderness,
            interval: Duration::from_millis(event_time.watermark_interval_ms.unwrap_or(WATERMARK_INTERVAL_MS_DEFAULT)),
            idle_timeout: event_time.idle_timeout_ms.map(Duration::from_millis),
            splits: vec![SplitTime { max_timestamp: i64::MIN, last_record: now }],
            emitted: i64::MIN,
            next_emit: now,
            idle: false,
        })
    }

    /// Takes note of a batch the source produced.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        self.observe_split(batch, None)
    }

    /// Takes note of a batch the source produced from split `split` (`None`: the source has no splits).
    pub fn observe_split(&mut self, batch: &RecordBatch, split: Option<usize>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let index = split.unwrap_or(0);
        if index >= self.splits.len() {
            // A split seen for the first time counts from now: it is not idle before its timeout.
            self.splits.resize(index + 1, SplitTime { max_timestamp: i64::MIN, last_record: now });
        }
        self.idle = false;
        let times = timestamps_of(batch.column(self.column))?;
        let split = &mut self.splits[index];
        split.last_record = now;
        if let Some(max) = datafusion::arrow::compute::max(times.as_primitive::<Int64Type>()) {
            split.max_timestamp = split.max_timestamp.max(max);
        }
        Ok(())
    }

    /// The source has `count` splits: those not seen yet hold the watermark back from now until they
    /// produce or their idle timeout passes.
    pub fn ensure_splits(&mut self, count: usize) {
        if count > self.splits.len() {
            self.splits.resize(count, SplitTime { max_timestamp: i64::MIN, last_record: Instant::now() });
        }
    }

    /// What to send downstream now, if anything: a new watermark, or [`IDLE`].
    pub fn poll(&mut self, now: Instant) -> Option<i64> {
        if now < self.next_emit {
            return None;
        }
        self.next_emit = now + self.interval;
        let active = |s: &&SplitTime| self.idle_timeout.is_none_or(|t| now.duration_since(s.last_record) < t);
        let Some(min) = self.splits.iter().filter(active).map(|s| s.max_timestamp).min() else {
            // Every split idle: the source is.
            if self.idle {
                return None;
            }
            self.idle = true;
            return Some(IDLE);
        };
        if self.idle || min == i64::MIN {
            return None;
        }
        let watermark = min.saturating_sub(self.out_of_orderness).saturating_sub(1);
        (watermark > self.emitted).then(|| {
            self.emitted = watermark;
            watermark
        })
    }
}

/// The watermark of a task with inputs: the minimum over its channels that are not idle.
pub struct InputWatermarks {
    channels: Vec<i64>,
    idle: Vec<bool>,
    current: i64,
    /// Whether the task last told its consumers it is idle.
    forwarded_idle: bool,
}

impl InputWatermarks {
    pub fn new(channels: usize) -> Self {
        Self {
            channels: vec![i64::MIN; channels],
            idle: vec![false; channels],
            current: i64::MIN,
            forwarded_idle: false,
        }
    }

    /// The task's current watermark (`i64::MIN` before the first).
    pub fn current(&self) -> i64 {
        self.current
    }

    /// A record arrived on `channel`: it is active again. Returns what to forward, in order.
    pub fn on_record(&mut self, channel: usize) -> Vec<i64> {
        if self.idle.get(channel).copied().unwrap_or(false) {
            self.idle[channel] = false;
            return self.combine();
        }
        Vec::new()
    }

    /// A watermark (or [`IDLE`]) arrived on `channel`. Returns what to forward, in order: a larger
    /// watermark, [`IDLE`] when every channel became idle, or the current watermark again when the task
    /// becomes active after being idle.
    ///
    /// When the last active channel goes idle, no channel will advance any more: the largest watermark of
    /// all channels is forwarded before [`IDLE`] (Flink's StatusWatermarkValve does the same), so a
    /// channel that went idle while another one still held the minimum back does not strand its
    /// watermark, and the windows it completes fire.
    pub fn on_watermark(&mut self, channel: usize, watermark: i64) -> Vec<i64> {
        if channel >= self.channels.len() {
            return Vec::new();
        }
        if watermark == IDLE {
            self.idle[channel] = true;
        } else {
            self.idle[channel] = false;
            self.channels[channel] = self.channels[channel].max(watermark);
        }
        self.combine()
    }

    fn combine(&mut self) -> Vec<i64> {
        let active = self.channels.iter().zip(&self.idle).filter(|(_, idle)| !**idle).map(|(w, _)| *w).min();
        match active {
            None if self.forwarded_idle => Vec::new(),
            None => {
                let mut out = Vec::with_capacity(2);
                let max = self.channels.iter().copied().max().unwrap_or(i64::MIN);
                if max > self.current {
                    self.current = max;
                    out.push(max);
                }
                self.forwarded_idle = true;
                out.push(IDLE);
                out
            }
            Some(min) if min > self.current => {
                self.current = min;
                self.forwarded_idle = false;
                vec![min]
            }
            Some(_) if self.forwarded_idle && self.current > i64::MIN => {
                self.forwarded_idle = false;
                vec![self.current]
            }
            Some(_) => {
                self.forwarded_idle = false;
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn the_minimum_over_active_channels_moves_forward_only() {
        let mut w = InputWatermarks::new(2);
        let none: Vec<i64> = Vec::new();
        assert_eq!(w.on_watermark(0, 100), none, "channel 1 has no watermark yet");
        assert_eq!(w.on_watermark(1, 50), vec![50]);
        assert_eq!(w.on_watermark(1, 40), none, "a channel's watermark never goes back");
        assert_eq!(w.on_watermark(1, 200), vec![100]);
        assert_eq!(w.on_watermark(0, IDLE), vec![200], "an idle channel stops holding the minimum back");
        assert_eq!(w.on_watermark(1, IDLE), vec![IDLE], "all idle: the task is idle");
        assert_eq!(w.on_watermark(1, IDLE), none, "idleness is forwarded once");
        assert_eq!(w.on_record(0), vec![200], "a record wakes channel 0; the task is active at its watermark");
        assert_eq!(w.current(), 200);
        assert_eq!(w.on_watermark(0, 150), none, "channel 0 is behind the task's watermark: no step back");
        assert_eq!(w.on_watermark(0, END_OF_TIME), vec![END_OF_TIME], "channel 1 is idle: channel 0 alone decides");
    }

    #[test]
    fn a_watermark_stranded_behind_a_channel_that_went_idle_last_is_flushed() {
        // Channel 0 got far ahead while channel 1 (never a record) held the minimum back; channel 0 goes idle
        // first, then channel 1: nothing will move any more, so channel 0's watermark is forwarded, then IDLE.
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.on_watermark(0, 90_000), Vec::<i64>::new());
        assert_eq!(w.on_watermark(0, IDLE), Vec::<i64>::new(), "channel 1 is active at no watermark yet");
        assert_eq!(w.on_watermark(1, IDLE), vec![90_000, IDLE]);
        assert_eq!(w.current(), 90_000);
    }

    #[test]
    fn a_source_trails_its_largest_timestamp_and_goes_idle() -> Result<(), OperatorError> {
        let schema =
            Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false)]));
        let spec = EventTime {
            column: "t".into(),
            watermarks: Some(Watermarks::BoundedOutOfOrdernessMs(1_000)),
            watermark_interval_ms: Some(10),
            idle_timeout_ms: Some(50),
        };
        let mut generator = WatermarkGenerator::new(&spec, &schema)?;
        let start = Instant::now();
        assert_eq!(generator.poll(start), None, "no record, no watermark");
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(TimestampMillisecondArray::from(vec![5_000, 9_000, 7_000]))])?;
        generator.observe(&batch)?;
        let now = Instant::now();
        assert_eq!(generator.poll(now + Duration::from_millis(10)), Some(7_999));
        assert_eq!(generator.poll(now + Duration::from_millis(11)), None, "not before the interval passes");
        assert_eq!(generator.poll(now + Duration::from_millis(20)), None, "no progress, nothing new to say");
        assert_eq!(generator.poll(now + Duration::from_millis(100)), Some(IDLE));
        Ok(())
    }
}

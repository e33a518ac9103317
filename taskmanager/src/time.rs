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

use crate::operators::OperatorError;

/// The watermark value that marks a channel idle. No real watermark is ever this small.
pub const IDLE: i64 = i64::MIN;
/// The last watermark of a bounded input: all of event time has passed.
pub const END_OF_TIME: i64 = i64::MAX;

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
pub struct WatermarkGenerator {
    column: usize,
    out_of_orderness: i64,
    interval: Duration,
    idle_timeout: Option<Duration>,
    max_timestamp: i64,
    emitted: i64,
    next_emit: Instant,
    last_record: Instant,
    idle: bool,
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
            max_timestamp: i64::MIN,
            emitted: i64::MIN,
            next_emit: now,
            last_record: now,
            idle: false,
        })
    }

    /// Takes note of a batch the source produced.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.last_record = Instant::now();
        self.idle = false;
        let times = timestamps_of(batch.column(self.column))?;
        if let Some(max) = datafusion::arrow::compute::max(times.as_primitive::<Int64Type>()) {
            self.max_timestamp = self.max_timestamp.max(max);
        }
        Ok(())
    }

    /// What to send downstream now, if anything: a new watermark, or [`IDLE`].
    pub fn poll(&mut self, now: Instant) -> Option<i64> {
        if now < self.next_emit {
            return None;
        }
        self.next_emit = now + self.interval;
        if let Some(timeout) = self.idle_timeout {
            if !self.idle && now.duration_since(self.last_record) >= timeout {
                self.idle = true;
                return Some(IDLE);
            }
        }
        if self.idle || self.max_timestamp == i64::MIN {
            return None;
        }
        let watermark = self.max_timestamp.saturating_sub(self.out_of_orderness).saturating_sub(1);
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

    /// A record arrived on `channel`: it is active again. Returns what to forward, if anything.
    pub fn on_record(&mut self, channel: usize) -> Option<i64> {
        if self.idle.get(channel).copied().unwrap_or(false) {
            self.idle[channel] = false;
            return self.combine();
        }
        None
    }

    /// A watermark (or [`IDLE`]) arrived on `channel`. Returns what to forward, if anything: a larger
    /// watermark, [`IDLE`] when every channel became idle, or the current watermark again when the task
    /// becomes active after being idle.
    pub fn on_watermark(&mut self, channel: usize, watermark: i64) -> Option<i64> {
        if channel >= self.channels.len() {
            return None;
        }
        if watermark == IDLE {
            self.idle[channel] = true;
        } else {
            self.idle[channel] = false;
            self.channels[channel] = self.channels[channel].max(watermark);
        }
        self.combine()
    }

    fn combine(&mut self) -> Option<i64> {
        let active = self.channels.iter().zip(&self.idle).filter(|(_, idle)| !**idle).map(|(w, _)| *w).min();
        match active {
            None if self.forwarded_idle => None,
            None => {
                self.forwarded_idle = true;
                Some(IDLE)
            }
            Some(min) if min > self.current => {
                self.current = min;
                self.forwarded_idle = false;
                Some(min)
            }
            Some(_) if self.forwarded_idle && self.current > i64::MIN => {
                self.forwarded_idle = false;
                Some(self.current)
            }
            Some(_) => {
                self.forwarded_idle = false;
                None
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
        assert_eq!(w.on_watermark(0, 100), None, "channel 1 has no watermark yet");
        assert_eq!(w.on_watermark(1, 50), Some(50));
        assert_eq!(w.on_watermark(1, 40), None, "a channel's watermark never goes back");
        assert_eq!(w.on_watermark(1, 200), Some(100));
        assert_eq!(w.on_watermark(0, IDLE), Some(200), "an idle channel stops holding the minimum back");
        assert_eq!(w.on_watermark(1, IDLE), Some(IDLE), "all idle: the task is idle");
        assert_eq!(w.on_watermark(1, IDLE), None, "idleness is forwarded once");
        assert_eq!(w.on_record(0), Some(200), "a record wakes channel 0; the task is active at its watermark");
        assert_eq!(w.current(), 200);
        assert_eq!(w.on_watermark(0, 150), None, "channel 0 is behind the task's watermark: no step back");
        assert_eq!(w.on_watermark(0, END_OF_TIME), Some(END_OF_TIME), "channel 1 is idle: channel 0 alone decides");
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

//! Keyed deduplication with a TTL: a record is emitted unless a record with the same key was emitted less
//! than `ttl_ms` before it.
//!
//! On event time the answer must not depend on arrival order, so records wait in a buffer until the
//! watermark passes them and are then decided in timestamp order (ties broken by the rows' values): the same
//! input shuffled within the out-of-orderness bound gives the same output. State is one value per key — the
//! time of the last emitted record — with a TTL, so a key unseen for longer than `ttl_ms` is forgotten on its
//! next read. Records arriving behind the watermark are decided at once. Without an event-time column the
//! wall clock is used and records are decided on arrival.
use datafusion::arrow::array::{ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::Deduplicate;

use std::ops::RangeInclusive;

use crate::operator_api::{restore, Operator, OperatorError};
use crate::state::{KeyedStateBackend, StateKey, Ttl, ValueState};
use crate::time::{now_millis, timestamps_of, EventTimeBuffer};
use sluice_common::proto::OperatorSnapshot;

pub struct DedupOp {
    key_columns: Vec<usize>,
    converter: RowConverter,
    time_column: Option<usize>,
    ttl: i64,
    max_parallelism: u32,
    backend: Box<dyn KeyedStateBackend>,
    last_emitted: ValueState,
    watermark: i64,
    /// Event time only: records waiting for the watermark.
    pending: Option<EventTimeBuffer>,
    hashes: Vec<u64>,
    key: StateKey,
}

impl DedupOp {
    pub fn new(
        spec: &Deduplicate,
        input: &SchemaRef,
        event_time_column: Option<&str>,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let key_columns = spec.keys.iter().map(|k| input.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let sort_fields = key_columns.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
        let time_column = event_time_column.map(|c| input.index_of(c)).transpose()?;
        let ttl = i64::try_from(spec.ttl_ms).unwrap_or(i64::MAX);
        let last_emitted = ValueState::new(backend.as_mut(), "last_emitted", Some(Ttl { millis: ttl }))?;
        Ok(Self {
            key_columns,
            converter: RowConverter::new(sort_fields)?,
            time_column,
            ttl,
            max_parallelism,
            backend,
            last_emitted,
            watermark: i64::MIN,
            pending: time_column.map(|column| EventTimeBuffer::new(input.clone(), column)),
            hashes: Vec::new(),
            key: StateKey::default(),
        })
    }

    /// Decides the rows of `batch` in the order given, emitting the first of each key within the TTL.
    fn decide(&mut self, batch: &RecordBatch, times: &[i64], out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let keys: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = self.converter.convert_columns(&keys)?;
        hash_key_columns(&keys, &mut self.hashes).map_err(|e| OperatorError::internal(e.to_string()))?;
        let mut keep = Vec::new();
        for (row, &t) in times.iter().enumerate() {
            let key_group = key_group_of(self.hashes[row], self.max_parallelism).0 as u16;
            self.key.set_key(key_group, rows.row(row).as_ref());
            let duplicate = match self.last_emitted.get(self.backend.as_mut(), self.key.as_bytes(), t)? {
                Some(last) => {
                    let last = i64::from_be_bytes(last.try_into().map_err(|_| {
                        OperatorError::input("corrupt deduplication state: a stored time is not 8 bytes")
                    })?);
                    t.saturating_sub(last) < self.ttl
                }
                None => false,
            };
            if !duplicate {
                self.last_emitted.put(self.backend.as_mut(), self.key.as_bytes(), &t.to_be_bytes(), t)?;
                keep.push(row as u32);
            }
        }
        if !keep.is_empty() {
            out.push(take_record_batch(batch, &UInt32Array::from(keep))?);
        }
        Ok(())
    }

    fn times(&self, batch: &RecordBatch, column: usize) -> Result<Vec<i64>, OperatorError> {
        let times = timestamps_of(batch.column(column))?;
        // A record without a time is decided as if it came at the watermark.
        Ok(times.as_primitive::<Int64Type>().iter().map(|t| t.unwrap_or(self.watermark)).collect())
    }

    /// Decides every buffered record at or before `up_to`, in timestamp order.
    fn release(&mut self, up_to: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let (Some(column), Some(buffer)) = (self.time_column, self.pending.as_mut()) else { return Ok(()) };
        let Some(due) = buffer.take_due(up_to)? else { return Ok(()) };
        let times = self.times(&due, column)?;
        self.decide(&due, &times, out)
    }
}

impl Operator for DedupOp {
    fn keyed_backend(&mut self) -> Option<&mut dyn crate::state::KeyedStateBackend> {
        Some(self.backend.as_mut())
    }

    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        if let Some(pending) = &self.pending {
            snapshot.operator_state = pending.to_ipc()?;
        }
        Ok(())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        restore::restore_keyed(self.backend.as_mut(), snapshots, key_groups.clone())?;
        let buffered = restore::restore_buffered(snapshots, &self.key_columns, self.max_parallelism, &key_groups)?;
        match self.pending.as_mut() {
            Some(pending) => buffered.into_iter().for_each(|batch| pending.push(batch)),
            None if buffered.is_empty() => {}
            None => {
                return Err(OperatorError::configuration(
                    "the snapshot holds buffered records, but this input has no event time",
                ))
            }
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(buffer) = self.pending.as_mut() else {
            let now = now_millis();
            return self.decide(&batch, &vec![now; batch.num_rows()], out);
        };
        buffer.push(batch);
        // Rows already behind the watermark are decided now; the rest wait for it.
        self.release(self.watermark, out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.release(watermark, out)
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.release(i64::MAX, out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::HeapBackend;
    use crate::time::END_OF_TIME;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn batch(rows: &[(&str, i64, i64)]) -> Result<RecordBatch, OperatorError> {
        Ok(RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )?)
    }

    fn emitted(out: &[RecordBatch]) -> Vec<(String, i64)> {
        let mut rows = Vec::new();
        for b in out {
            for r in 0..b.num_rows() {
                rows.push((
                    b.column(0).as_string::<i32>().value(r).to_string(),
                    b.column(2).as_primitive::<Int64Type>().value(r),
                ));
            }
        }
        rows
    }

    fn run(batches: &[&[(&str, i64, i64)]]) -> Result<Vec<(String, i64)>, OperatorError> {
        let spec = Deduplicate { keys: vec!["id".into()], ttl_ms: 100 };
        let mut op = DedupOp::new(&spec, &schema(), Some("t"), 128, Box::new(HeapBackend::default()))?;
        let mut out = Vec::new();
        for rows in batches {
            op.process(batch(rows)?, &mut out)?;
        }
        op.on_watermark(END_OF_TIME, &mut out)?;
        let mut rows = emitted(&out);
        rows.sort();
        Ok(rows)
    }

    #[test]
    fn repeats_within_the_ttl_are_dropped_whatever_the_arrival_order() -> Result<(), OperatorError> {
        let in_order = run(&[&[("x", 10, 1), ("y", 20, 2), ("x", 50, 3)], &[("x", 110, 4), ("x", 150, 5)]])?;
        assert_eq!(in_order, vec![("x".into(), 1), ("x".into(), 4), ("y".into(), 2)], "x@50 and x@150 repeat");
        let shuffled = run(&[&[("x", 150, 5), ("x", 50, 3)], &[("x", 110, 4), ("y", 20, 2), ("x", 10, 1)]])?;
        assert_eq!(shuffled, in_order);
        Ok(())
    }
}

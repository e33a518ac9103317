//! The event-time temporal join: a stream row at time `t` waits for the watermark to pass `t`, then joins
//! the table version valid at `t`. See [`super`].
use std::ops::RangeInclusive;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::{OperatorSnapshot, TemporalJoin};

use super::side::{scan_key, Joined, Side};
use crate::operator_api::restore::{restore_buffered, restore_keyed};
use crate::operator_api::{Operator, OperatorError};
use crate::state::{time_bytes, KeyedStateBackend, StateId, StateKey};
use crate::time::EventTimeBuffer;

/// The temporal join of one vertex; see the [module docs](super).
pub struct TemporalJoinOp {
    stream: Side,
    table: Side,
    versions: StateId,
    keep_unmatched: bool,
    max_parallelism: u32,
    backend: Box<dyn KeyedStateBackend>,
    watermark: i64,
    /// Stream rows waiting for the watermark.
    pending: EventTimeBuffer,
    joined: Joined,
    hashes: Vec<u64>,
    key: StateKey,
}

impl TemporalJoinOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &TemporalJoin,
        stream: &SchemaRef,
        stream_time: Option<&str>,
        table: &SchemaRef,
        table_time: Option<&str>,
        output: SchemaRef,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let stream_side = Side::new(stream, &spec.stream_keys, stream_time)?;
        let time = stream_side
            .time
            .ok_or_else(|| OperatorError::configuration("the stream input has no event-time column"))?;
        Ok(Self {
            pending: EventTimeBuffer::new(stream.clone(), time),
            stream: stream_side,
            table: Side::new(table, &spec.table_keys, table_time)?,
            versions: backend.register("versions")?,
            keep_unmatched: spec.keep_unmatched,
            max_parallelism,
            backend,
            watermark: i64::MIN,
            joined: Joined::new(output, table, &spec.table_keys),
            hashes: Vec::new(),
            key: StateKey::default(),
        })
    }

    fn store_versions(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        let decoded = self.table.decode(batch, self.max_parallelism, &mut self.hashes)?;
        for row in 0..batch.num_rows() {
            // A version without a time is valid from the beginning of time.
            let t = decoded.times[row].unwrap_or(i64::MIN);
            self.key.set_key(decoded.key_groups[row], decoded.keys.row(row).as_ref()).set_namespace(&time_bytes(t));
            self.backend.put(self.versions, self.key.as_bytes(), decoded.rows.row(row).as_ref())?;
        }
        Ok(())
    }

    /// Joins every row of `batch` with the version of its key valid at its time.
    fn join_rows(&mut self, batch: &RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let decoded = self.stream.decode(batch, self.max_parallelism, &mut self.hashes)?;
        let watermark = self.watermark;
        // Rows still to come are after the watermark, and this batch's are at or after its earliest time: a
        // version superseded by a newer one at or before both can no longer be chosen.
        let earliest = decoded.times.iter().map(|t| t.unwrap_or(watermark)).min().unwrap_or(watermark);
        let cutoff = earliest.min(watermark);
        for row in 0..batch.num_rows() {
            let t = decoded.times[row].unwrap_or(watermark);
            self.key.set_key(decoded.key_groups[row], decoded.keys.row(row).as_ref());
            let mut chosen: Option<Vec<u8>> = None;
            // Versions superseded by a newer one at or before the watermark: no later stream row can use them.
            let mut superseded: Vec<Vec<u8>> = Vec::new();
            let mut newest_passed: Option<Vec<u8>> = None;
            scan_key(self.backend.as_mut(), self.versions, self.key.key_prefix(), &mut |full, time, value| {
                if time <= t {
                    chosen = Some(value.to_vec());
                }
                if time <= cutoff {
                    if let Some(older) = newest_passed.replace(full.to_vec()) {
                        superseded.push(older);
                    }
                }
                time <= t || time <= cutoff
            })?;
            for full in superseded {
                self.backend.delete(self.versions, &full)?;
            }
            match chosen {
                Some(version) => self.joined.push(decoded.rows.row(row).as_ref(), Some(&version)),
                None if self.keep_unmatched => self.joined.push(decoded.rows.row(row).as_ref(), None),
                None => {}
            }
        }
        self.joined.emit(&self.stream, &self.table, out)
    }

    /// Joins the buffered stream rows at or before `up_to`.
    fn release(&mut self, up_to: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        match self.pending.take_due(up_to)? {
            Some(due) => self.join_rows(&due, out),
            None => Ok(()),
        }
    }
}

impl Operator for TemporalJoinOp {
    fn keyed_backend(&mut self) -> Option<&mut dyn crate::state::KeyedStateBackend> {
        Some(self.backend.as_mut())
    }

    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        snapshot.operator_state = self.pending.to_ipc()?;
        Ok(())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        restore_keyed(self.backend.as_mut(), snapshots, key_groups.clone())?;
        let key_columns = self.stream.keys.clone();
        for batch in restore_buffered(snapshots, &key_columns, self.max_parallelism, &key_groups)? {
            self.pending.push(batch);
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.process_input(0, batch, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if input == 1 {
            return self.store_versions(&batch);
        }
        self.pending.push(batch);
        // Rows already behind the watermark (late) are joined at once with what is known.
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

//! Two-input keyed joins on event time: the interval join and the event-time temporal (versioned-table) join.
//!
//! Both keep rows in the keyed state backend as Arrow row-format bytes of all their columns, under
//! `key group | key | time` (time sign-flipped big-endian, so a key's rows scan in time order), and both emit
//! the first input's columns followed by the second input's non-key columns.
//!
//! Interval join: a left row `l` and a right row `r` with equal keys join when
//! `l.ts + lower <= r.ts <= l.ts + upper`. Each arriving row probes the other side's rows of its key, then is
//! stored; so every pair is emitted exactly once, by whichever of the two arrives second. A left row is
//! dropped from state once the watermark reaches `l.ts + upper` (no right row it could match is still to
//! come), a right row once it reaches `r.ts - lower`. Rows at or behind the watermark on arrival are late:
//! counted and dropped, as Flink does. Without late rows, the pairs do not depend on arrival order.
//!
//! Temporal join: table rows are versions of the row for their key, valid from their time on. A stream row
//! at time `t` waits until the watermark passes `t`, then joins the version with the largest time `<= t`.
//! A version superseded by a newer one at or before both the watermark and the earliest row being joined can
//! no longer be chosen, and is dropped when a scan meets it.
use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use datafusion::arrow::array::{ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::{IntervalJoin, TemporalJoin};

use super::{Operator, OperatorError};
use crate::state::{
    list_elements, split_state_key, time_bytes, time_from_bytes, KeyedStateBackend, ListState, StateId, StateKey,
};
use crate::time::{timestamps_of, EventTimeBuffer};
use sluice_common::proto::OperatorSnapshot;

/// One input of a join: how to read its keys, times and whole rows.
struct Side {
    keys: Vec<usize>,
    time: usize,
    key_converter: RowConverter,
    row_converter: RowConverter,
}

/// What one input batch looks like once decoded: per row its key group, key bytes, time and row bytes.
struct Decoded {
    key_groups: Vec<u16>,
    keys: Rows,
    times: Vec<Option<i64>>,
    rows: Rows,
}

impl Side {
    fn new(schema: &SchemaRef, keys: &[String], time: Option<&str>) -> Result<Self, OperatorError> {
        let keys = keys.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let time = schema.index_of(time.ok_or_else(|| OperatorError::new("a join input has no event-time column"))?)?;
        let key_fields = keys.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
        let row_fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(Self {
            keys,
            time,
            key_converter: RowConverter::new(key_fields)?,
            row_converter: RowConverter::new(row_fields)?,
        })
    }

    fn decode(
        &self,
        batch: &RecordBatch,
        max_parallelism: u32,
        hashes: &mut Vec<u64>,
    ) -> Result<Decoded, OperatorError> {
        let keys: Vec<ArrayRef> = self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        hash_key_columns(&keys, hashes).map_err(|e| OperatorError::new(e.to_string()))?;
        let key_groups = hashes.iter().map(|&h| key_group_of(h, max_parallelism).0 as u16).collect();
        let times = timestamps_of(batch.column(self.time))?.as_primitive::<Int64Type>().iter().collect();
        Ok(Decoded {
            key_groups,
            keys: self.key_converter.convert_columns(&keys)?,
            times,
            rows: self.row_converter.convert_columns(batch.columns())?,
        })
    }
}

/// Builds output batches: the first side's columns, then the second side's kept columns (null where a
/// first-side row has no partner).
struct Joined {
    output: SchemaRef,
    second_kept: Vec<usize>,
    first: Vec<Vec<u8>>,
    second: Vec<Option<Vec<u8>>>,
}

impl Joined {
    fn new(output: SchemaRef, second: &SchemaRef, second_keys: &[String]) -> Self {
        let second_kept =
            (0..second.fields().len()).filter(|&i| !second_keys.contains(second.field(i).name())).collect();
        Self { output, second_kept, first: Vec::new(), second: Vec::new() }
    }

    fn push(&mut self, first: &[u8], second: Option<&[u8]>) {
        self.first.push(first.to_vec());
        self.second.push(second.map(<[u8]>::to_vec));
    }

    fn emit(&mut self, first: &Side, second: &Side, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if self.first.is_empty() {
            return Ok(());
        }
        let first_parser = first.row_converter.parser();
        let mut columns = first.row_converter.convert_rows(self.first.iter().map(|r| first_parser.parse(r)))?;
        let second_parser = second.row_converter.parser();
        let present: Vec<&Vec<u8>> = self.second.iter().flatten().collect();
        let second_columns = second.row_converter.convert_rows(present.iter().map(|r| second_parser.parse(r)))?;
        let mut next = 0u32;
        let indices: UInt32Array = self
            .second
            .iter()
            .map(|r| {
                r.as_ref().map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        for &i in &self.second_kept {
            columns.push(take(second_columns[i].as_ref(), &indices, None)?);
        }
        self.first.clear();
        self.second.clear();
        out.push(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

/// Called with (full state key, time, stored value) for each stored entry; returns false to stop.
type TimedVisitor<'a> = dyn FnMut(&[u8], i64, &[u8]) -> bool + 'a;

/// Visits the stored rows of one key with their times, in time order, until `visit` returns false.
fn scan_key(
    backend: &mut dyn KeyedStateBackend,
    state: StateId,
    prefix: &[u8],
    visit: &mut TimedVisitor<'_>,
) -> Result<(), OperatorError> {
    let mut failure = None;
    backend.scan_prefix(state, prefix, &mut |full, value| match split_state_key(full)
        .and_then(|(_, _, ns)| time_from_bytes(ns))
    {
        Some(t) => visit(full, t, value),
        None => {
            failure = Some(OperatorError::new("corrupt join state: a stored row has no time"));
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

pub struct IntervalJoinOp {
    sides: [Side; 2],
    /// Per side, the stored rows: list state under key group | key | time.
    stored: [ListState; 2],
    ids: [StateId; 2],
    lower: i64,
    upper: i64,
    max_parallelism: u32,
    backend: Box<dyn KeyedStateBackend>,
    /// (time after which the entry is useless, side, full key).
    cleanup: BTreeSet<(i64, u8, Vec<u8>)>,
    watermark: i64,
    late: u64,
    joined: Joined,
    hashes: Vec<u64>,
    key: StateKey,
}

impl IntervalJoinOp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &IntervalJoin,
        left: &SchemaRef,
        left_time: Option<&str>,
        right: &SchemaRef,
        right_time: Option<&str>,
        output: SchemaRef,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let sides = [Side::new(left, &spec.left_keys, left_time)?, Side::new(right, &spec.right_keys, right_time)?];
        let stored = [ListState::new(backend.as_mut(), "left")?, ListState::new(backend.as_mut(), "right")?];
        let ids = [backend.register("left")?, backend.register("right")?];
        Ok(Self {
            sides,
            stored,
            ids,
            lower: spec.lower_bound_ms,
            upper: spec.upper_bound_ms,
            max_parallelism,
            backend,
            cleanup: BTreeSet::new(),
            watermark: i64::MIN,
            late: 0,
            joined: Joined::new(output, right, &spec.right_keys),
            hashes: Vec::new(),
            key: StateKey::default(),
        })
    }

    fn process_side(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let decoded = self.sides[side].decode(batch, self.max_parallelism, &mut self.hashes)?;
        let other = 1 - side;
        for row in 0..batch.num_rows() {
            let Some(t) = decoded.times[row].filter(|&t| t > self.watermark) else {
                self.late += 1;
                continue;
            };
            // The other side's times that join with t.
            let (low, high) = if side == 0 {
                (t.saturating_add(self.lower), t.saturating_add(self.upper))
            } else {
                (t.saturating_sub(self.upper), t.saturating_sub(self.lower))
            };
            self.key.set_key(decoded.key_groups[row], decoded.keys.row(row).as_ref());
            let own = decoded.rows.row(row);
            let mut partners: Vec<Vec<u8>> = Vec::new();
            let mut failure = None;
            scan_key(self.backend.as_mut(), self.ids[other], self.key.key_prefix(), &mut |_, time, value| {
                if time > high {
                    return false;
                }
                if time >= low {
                    match list_elements(value) {
                        Ok(rows) => partners.extend(rows.into_iter().map(<[u8]>::to_vec)),
                        Err(e) => {
                            failure = Some(OperatorError::new(format!("corrupt join state: {e}")));
                            return false;
                        }
                    }
                }
                true
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            for partner in &partners {
                if side == 0 {
                    self.joined.push(own.as_ref(), Some(partner));
                } else {
                    self.joined.push(partner, Some(own.as_ref()));
                }
            }
            self.key.set_namespace(&time_bytes(t));
            self.stored[side].add(self.backend.as_mut(), self.key.as_bytes(), own.as_ref())?;
            let useless_from = if side == 0 { t.saturating_add(self.upper) } else { t.saturating_sub(self.lower) };
            self.cleanup.insert((useless_from, side as u8, self.key.as_bytes().to_vec()));
        }
        let [left, right] = &self.sides;
        self.joined.emit(left, right, out)
    }
}

impl Operator for IntervalJoinOp {
    fn keyed_backend(&mut self) -> Option<&mut dyn crate::state::KeyedStateBackend> {
        Some(self.backend.as_mut())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        super::restore_keyed(self.backend.as_mut(), snapshots, key_groups)?;
        // Each stored row list is under `key | time`: its cleanup time follows from the time and the bounds.
        self.cleanup.clear();
        for side in 0..2 {
            for full in super::stored_keys(self.backend.as_mut(), self.ids[side])? {
                let time = full.len().checked_sub(8).and_then(|at| time_from_bytes(&full[at..]));
                let Some(t) = time else {
                    return Err(OperatorError::new("a stored join key has no time; the snapshot is corrupt"));
                };
                let useless_from = if side == 0 { t.saturating_add(self.upper) } else { t.saturating_sub(self.lower) };
                self.cleanup.insert((useless_from, side as u8, full));
            }
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
        self.process_side(input.min(1), &batch, out)
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.watermark = self.watermark.max(watermark);
        while let Some((at, _, _)) = self.cleanup.first() {
            if *at > self.watermark {
                break;
            }
            let Some((_, side, full)) = self.cleanup.pop_first() else { break };
            self.stored[usize::from(side)].clear(self.backend.as_mut(), &full)?;
        }
        Ok(())
    }

    fn late_records(&self) -> u64 {
        self.late
    }
}

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
        Ok(Self {
            pending: EventTimeBuffer::new(stream.clone(), stream_side.time),
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
        super::restore_keyed(self.backend.as_mut(), snapshots, key_groups.clone())?;
        let key_columns = self.stream.keys.clone();
        for batch in super::restore_buffered(snapshots, &key_columns, self.max_parallelism, &key_groups)? {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::HeapBackend;
    use crate::time::END_OF_TIME;
    use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new(format!("{value}_ts"), DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new(value, DataType::Int64, false),
        ]))
    }

    fn batch(schema: &SchemaRef, rows: &[(&str, i64, i64)]) -> Result<RecordBatch, OperatorError> {
        Ok(RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )?)
    }

    fn output(left: &SchemaRef, right: &SchemaRef, nullable: bool) -> SchemaRef {
        let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(right.fields().iter().skip(1).map(|f| f.as_ref().clone().with_nullable(nullable)));
        Arc::new(Schema::new(fields))
    }

    /// "id left_value right_value" per output row, sorted (None as "-").
    fn pairs(out: &[RecordBatch]) -> Vec<String> {
        let mut rows = Vec::new();
        for b in out {
            for r in 0..b.num_rows() {
                let right = b.column(4).as_primitive::<Int64Type>();
                let right = if right.is_null(r) { "-".to_string() } else { right.value(r).to_string() };
                rows.push(format!(
                    "{} {} {right}",
                    b.column(0).as_string::<i32>().value(r),
                    b.column(2).as_primitive::<Int64Type>().value(r)
                ));
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn interval_join_pairs_rows_within_the_bounds_whatever_arrives_first() -> Result<(), OperatorError> {
        let (orders, payments) = (schema("order"), schema("payment"));
        let spec = IntervalJoin {
            left: "orders".into(),
            right: "payments".into(),
            left_keys: vec!["id".into()],
            right_keys: vec!["id".into()],
            lower_bound_ms: 0,
            upper_bound_ms: 100,
        };
        let run = |payments_first: bool| -> Result<Vec<String>, OperatorError> {
            let mut op = IntervalJoinOp::new(
                &spec,
                &orders,
                Some("order_ts"),
                &payments,
                Some("payment_ts"),
                output(&orders, &payments, false),
                128,
                Box::new(HeapBackend::default()),
            )?;
            let left = batch(&orders, &[("a", 1_000, 1), ("b", 1_000, 2), ("a", 1_050, 3)])?;
            let right = batch(&payments, &[("a", 1_080, 10), ("a", 1_200, 11), ("b", 999, 12), ("c", 1_000, 13)])?;
            let mut out = Vec::new();
            if payments_first {
                op.process_input(1, right, &mut out)?;
                op.process_input(0, left, &mut out)?;
            } else {
                op.process_input(0, left, &mut out)?;
                op.process_input(1, right, &mut out)?;
            }
            op.on_watermark(END_OF_TIME, &mut out)?;
            Ok(pairs(&out))
        };
        let expected = vec!["a 1 10", "a 3 10"];
        assert_eq!(run(false)?, expected, "a@1080 is within [1000, 1100] and [1050, 1150]; b@999 is before b's order");
        assert_eq!(run(true)?, expected);
        Ok(())
    }

    #[test]
    fn temporal_join_uses_the_version_valid_at_each_records_time() -> Result<(), OperatorError> {
        let (clicks, prices) = (schema("click"), schema("price"));
        let spec = TemporalJoin {
            stream: "clicks".into(),
            table: "prices".into(),
            stream_keys: vec!["id".into()],
            table_keys: vec!["id".into()],
            keep_unmatched: true,
        };
        let mut op = TemporalJoinOp::new(
            &spec,
            &clicks,
            Some("click_ts"),
            &prices,
            Some("price_ts"),
            output(&clicks, &prices, true),
            128,
            Box::new(HeapBackend::default()),
        )?;
        let mut out = Vec::new();
        // The later click first: joining it must not drop the version the earlier one needs.
        op.process_input(0, batch(&clicks, &[("a", 250, 2), ("a", 150, 1), ("a", 50, 3), ("z", 100, 4)])?, &mut out)?;
        op.process_input(1, batch(&prices, &[("a", 200, 20), ("a", 100, 10)])?, &mut out)?;
        assert!(out.is_empty(), "stream rows wait for the watermark");
        op.on_watermark(END_OF_TIME, &mut out)?;
        assert_eq!(pairs(&out), vec!["a 1 10", "a 2 20", "a 3 -", "z 4 -"]);
        Ok(())
    }
}

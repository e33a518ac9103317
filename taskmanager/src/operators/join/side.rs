//! What both joins share: an input [`Side`] (its key, time and whole-row encodings), the [`Joined`] output
//! builder, and [`scan_key`] over a key's stored rows in time order.
use datafusion::arrow::array::{ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use sluice_common::keygroup::{hash_key_columns, key_group_of};

use crate::operator_api::OperatorError;
use crate::state::{split_state_key, time_from_bytes, KeyedStateBackend, StateId};
use crate::time::timestamps_of;

/// One input of a join: how to read its keys, times and whole rows.
pub(super) struct Side {
    pub(super) keys: Vec<usize>,
    /// The event-time column (None: a regular join's input, read without times).
    pub(super) time: Option<usize>,
    pub(super) key_converter: RowConverter,
    pub(super) row_converter: RowConverter,
}

/// What one input batch looks like once decoded: per row its key group, key bytes, time and row bytes.
pub(super) struct Decoded {
    pub(super) key_groups: Vec<u16>,
    pub(super) keys: Rows,
    pub(super) times: Vec<Option<i64>>,
    pub(super) rows: Rows,
}

impl Side {
    /// An input read with its event time (`time`, which must be there).
    pub(super) fn new(schema: &SchemaRef, keys: &[String], time: Option<&str>) -> Result<Self, OperatorError> {
        let time = schema
            .index_of(time.ok_or_else(|| OperatorError::configuration("a join input has no event-time column"))?)?;
        Self::with_time(schema, keys, Some(time))
    }

    /// An input read without times (every decoded time is None).
    pub(super) fn untimed(schema: &SchemaRef, keys: &[String]) -> Result<Self, OperatorError> {
        Self::with_time(schema, keys, None)
    }

    fn with_time(schema: &SchemaRef, keys: &[String], time: Option<usize>) -> Result<Self, OperatorError> {
        let keys = keys.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let key_fields = keys.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
        let row_fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(Self {
            keys,
            time,
            key_converter: RowConverter::new(key_fields)?,
            row_converter: RowConverter::new(row_fields)?,
        })
    }

    pub(super) fn decode(
        &self,
        batch: &RecordBatch,
        max_parallelism: u32,
        hashes: &mut Vec<u64>,
    ) -> Result<Decoded, OperatorError> {
        let keys: Vec<ArrayRef> = self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        hash_key_columns(&keys, hashes).map_err(|e| OperatorError::internal(e.to_string()))?;
        let key_groups = hashes.iter().map(|&h| key_group_of(h, max_parallelism).0 as u16).collect();
        let times = match self.time {
            Some(time) => timestamps_of(batch.column(time))?.as_primitive::<Int64Type>().iter().collect(),
            None => vec![None; batch.num_rows()],
        };
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
pub(super) struct Joined {
    pub(super) output: SchemaRef,
    pub(super) second_kept: Vec<usize>,
    pub(super) first: Vec<Vec<u8>>,
    pub(super) second: Vec<Option<Vec<u8>>>,
}

impl Joined {
    pub(super) fn new(output: SchemaRef, second: &SchemaRef, second_keys: &[String]) -> Self {
        let second_kept =
            (0..second.fields().len()).filter(|&i| !second_keys.contains(second.field(i).name())).collect();
        Self { output, second_kept, first: Vec::new(), second: Vec::new() }
    }

    pub(super) fn push(&mut self, first: &[u8], second: Option<&[u8]>) {
        self.first.push(first.to_vec());
        self.second.push(second.map(<[u8]>::to_vec));
    }

    pub(super) fn emit(
        &mut self,
        first: &Side,
        second: &Side,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        if self.first.is_empty() {
            return Ok(());
        }
        let mut columns =
            crate::operator_api::decode_stored_rows(&first.row_converter, self.first.iter().map(Vec::as_slice))?;
        let present: Vec<&Vec<u8>> = self.second.iter().flatten().collect();
        let second_columns =
            crate::operator_api::decode_stored_rows(&second.row_converter, present.iter().map(|r| r.as_slice()))?;
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
pub(super) type TimedVisitor<'a> = dyn FnMut(&[u8], i64, &[u8]) -> bool + 'a;

/// Visits the stored rows of one key with their times, in time order, until `visit` returns false.
pub(super) fn scan_key(
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
            failure = Some(OperatorError::input("corrupt join state: a stored row has no time"));
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

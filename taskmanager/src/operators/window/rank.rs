//! Top-N windows: per key and window, the first n records in an order (Flink's window Top-N), kept in one
//! state value as entries of (order bytes, record bytes), best first.
//!
//! Order bytes are the Arrow row format of the order columns in their directions (nulls last), so byte
//! order is rank order; record bytes are the row format of the input's non-key columns. A batch's records
//! are first compared with the n-th kept entry (one byte comparison each): once a window holds n records,
//! few new ones enter, and a batch that brings none costs no write. Among equal order bytes the earlier
//! arrival ranks first, so without ties the result is the first n to arrive (Flink leaves that order open).
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{take, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use sluice_common::job::bounds::TOP_N_KEPT_MAX;
use sluice_common::proto::TopN;

use crate::operator_api::{decode_stored_rows, OperatorError};

/// A Top-N window's ranking: what it orders by, what it keeps and how it stores it.
pub(super) struct Ranker {
    /// The input's non-key columns: a kept record.
    columns: Vec<usize>,
    order_columns: Vec<usize>,
    order: RowConverter,
    records: RowConverter,
    n: usize,
    with_ties: bool,
    /// Whether the output has a rank column (last).
    rank: bool,
}

/// A kept record: its order bytes and its record bytes.
type Entry<'a> = (&'a [u8], &'a [u8]);

impl Ranker {
    pub(super) fn new(spec: &TopN, keys: &[usize], input: &SchemaRef) -> Result<Self, OperatorError> {
        let columns: Vec<usize> = (0..input.fields().len()).filter(|c| !keys.contains(c)).collect();
        let order_columns = spec.order_by.iter().map(|k| input.index_of(&k.column)).collect::<Result<Vec<_>, _>>()?;
        if order_columns.is_empty() || spec.n == 0 {
            return Err(OperatorError::configuration("a Top-N window needs order_by columns and n of at least 1"));
        }
        let order = RowConverter::new(
            spec.order_by
                .iter()
                .zip(&order_columns)
                .map(|(key, &c)| {
                    let options = SortOptions { descending: key.descending, nulls_first: false };
                    SortField::new_with_options(input.field(c).data_type().clone(), options)
                })
                .collect(),
        )?;
        let records =
            RowConverter::new(columns.iter().map(|&c| SortField::new(input.field(c).data_type().clone())).collect())?;
        Ok(Self {
            columns,
            order_columns,
            order,
            records,
            n: spec.n as usize,
            with_ties: spec.with_ties,
            rank: !spec.rank_column.is_empty(),
        })
    }

    /// Every row of `batch` as order bytes.
    pub(super) fn order_rows(&self, batch: &RecordBatch) -> Result<Rows, OperatorError> {
        let columns: Vec<ArrayRef> = self.order_columns.iter().map(|&c| batch.column(c).clone()).collect();
        Ok(self.order.convert_columns(&columns)?)
    }

    /// How many of `sorted` (order bytes, best first) are kept: n, and with ties every one equal to the n-th,
    /// up to [`TOP_N_KEPT_MAX`].
    fn kept(&self, sorted: &[&[u8]]) -> usize {
        if sorted.len() <= self.n {
            return sorted.len();
        }
        let mut kept = self.n;
        if self.with_ties {
            let last = sorted[self.n - 1];
            while kept < sorted.len() && sorted[kept] == last {
                kept += 1;
            }
            if kept > TOP_N_KEPT_MAX {
                tracing::warn!(
                    tied = kept,
                    kept = TOP_N_KEPT_MAX,
                    "a Top-N window has more records tied with its n-th than it keeps; the later ones are dropped"
                );
                kept = TOP_N_KEPT_MAX;
            }
        }
        kept
    }

    /// Folds `rows` of `batch` (one key and window; `order` is the batch's order bytes) into the stored
    /// entries `stored`. `None` when none of them enters.
    pub(super) fn fold(
        &self,
        stored: &[u8],
        rows: &[u32],
        order: &Rows,
        batch: &RecordBatch,
    ) -> Result<Option<Vec<u8>>, OperatorError> {
        let kept = decode(stored)?;
        let threshold = (kept.len() >= self.n).then(|| kept[self.n - 1].0);
        let mut entering: Vec<u32> = match threshold {
            None => rows.to_vec(),
            Some(last) => rows
                .iter()
                .copied()
                .filter(|&r| {
                    let bytes = order.row(r as usize).data();
                    bytes < last || (self.with_ties && bytes == last)
                })
                .collect(),
        };
        if entering.is_empty() {
            return Ok(None);
        }
        // The batch's own best first (a stable sort: arrival order among equals), cut to what can enter.
        entering.sort_by(|&a, &b| order.row(a as usize).cmp(&order.row(b as usize)));
        let sorted: Vec<&[u8]> = entering.iter().map(|&r| order.row(r as usize).data()).collect();
        entering.truncate(self.kept(&sorted));
        let indices = UInt32Array::from_iter_values(entering.iter().copied());
        let columns =
            self.columns.iter().map(|&c| take(batch.column(c), &indices, None)).collect::<Result<Vec<_>, _>>()?;
        let records = self.records.convert_columns(&columns)?;
        // Stored entries arrived first: after a stable sort they stay ahead of equal new ones.
        let mut all: Vec<Entry<'_>> = kept;
        all.extend(entering.iter().enumerate().map(|(i, &r)| (order.row(r as usize).data(), records.row(i).data())));
        all.sort_by(|a, b| a.0.cmp(b.0));
        let orders: Vec<&[u8]> = all.iter().map(|e| e.0).collect();
        all.truncate(self.kept(&orders));
        Ok(Some(encode(&all)))
    }

    /// The output rows of fired windows (each one's stored entries): the value columns (the input's
    /// non-key columns, then the rank when asked for), and for each output row the index of its window.
    pub(super) fn emit<'a>(
        &self,
        windows: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(Vec<ArrayRef>, Vec<u32>), OperatorError> {
        let mut records = Vec::new();
        let mut window_of = Vec::new();
        let mut ranks = Vec::new();
        for (window, stored) in windows.enumerate() {
            let entries = decode(stored)?;
            let mut rank = 0;
            for (position, (order, record)) in entries.iter().enumerate() {
                // With ties, equal records share the rank of the first of them (SQL's RANK()).
                if !self.with_ties || position == 0 || entries[position - 1].0 != *order {
                    rank = position as u64 + 1;
                }
                records.push(*record);
                window_of.push(u32::try_from(window).map_err(|_| OperatorError::internal("too many fired windows"))?);
                ranks.push(rank);
            }
        }
        let mut columns = decode_stored_rows(&self.records, records)?;
        if self.rank {
            columns.push(Arc::new(UInt64Array::from(ranks)));
        }
        Ok((columns, window_of))
    }
}

/// Entries as stored: each its order bytes and record bytes, each of those with its length (u32 BE).
fn encode(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|(o, r)| 8 + o.len() + r.len()).sum());
    for (order, record) in entries {
        for part in [order, record] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Reads what [`encode`] wrote; anything else is corrupt state.
fn decode(mut bytes: &[u8]) -> Result<Vec<Entry<'_>>, OperatorError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let order = next_part(&mut bytes)?;
        let record = next_part(&mut bytes)?;
        entries.push((order, record));
    }
    Ok(entries)
}

/// The next length-prefixed part of `bytes`, which move past it.
fn next_part<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], OperatorError> {
    let corrupt = || OperatorError::input("corrupt Top-N window state: an entry runs past its value");
    let (length, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let length = u32::from_be_bytes(*length) as usize;
    let part = rest.get(..length).ok_or_else(corrupt)?;
    *bytes = &rest[length..];
    Ok(part)
}

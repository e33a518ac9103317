//! The interval join: a left and a right row with equal keys join when `l.ts + lower <= r.ts <= l.ts +
//! upper`; each row is stored until the watermark says no partner can still come. See [`super`]. Without
//! times (a regular join) every row is stored at time 0 with unbounded bounds, is never late and is kept.
use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::{IntervalJoin, Join, OperatorSnapshot};

use super::side::{scan_key, Joined, Side};
use crate::operator_api::restore::{restore_keyed, stored_keys};
use crate::operator_api::{Operator, OperatorError};
use crate::state::{list_elements, time_bytes, time_from_bytes, KeyedStateBackend, ListState, StateId, StateKey};

/// The interval join of one vertex; see the [module docs](super).
pub struct IntervalJoinOp {
    sides: [Side; 2],
    /// Per side, the stored rows: list state under key group | key | time.
    stored: [ListState; 2],
    ids: [StateId; 2],
    lower: i64,
    upper: i64,
    /// False for a regular join: rows have no time, are never late, and stay.
    timed: bool,
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
        backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let sides = [Side::new(left, &spec.left_keys, left_time)?, Side::new(right, &spec.right_keys, right_time)?];
        let joined = Joined::new(output, right, &spec.right_keys);
        let bounds = (spec.lower_bound_ms, spec.upper_bound_ms);
        Self::with_sides(sides, bounds, true, joined, max_parallelism, backend)
    }

    /// A regular join (`proto::Join`): every pair of rows with equal keys, whenever each arrives.
    pub fn regular(
        spec: &Join,
        left: &SchemaRef,
        right: &SchemaRef,
        output: SchemaRef,
        max_parallelism: u32,
        backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let sides = [Side::untimed(left, &spec.left_keys)?, Side::untimed(right, &spec.right_keys)?];
        let joined = Joined::new(output, right, &spec.right_keys);
        Self::with_sides(sides, (i64::MIN, i64::MAX), false, joined, max_parallelism, backend)
    }

    fn with_sides(
        sides: [Side; 2],
        (lower, upper): (i64, i64),
        timed: bool,
        joined: Joined,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let stored = [ListState::new(backend.as_mut(), "left")?, ListState::new(backend.as_mut(), "right")?];
        let ids = [backend.register("left")?, backend.register("right")?];
        Ok(Self {
            sides,
            stored,
            ids,
            lower,
            upper,
            timed,
            max_parallelism,
            backend,
            cleanup: BTreeSet::new(),
            watermark: i64::MIN,
            late: 0,
            joined,
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
        if !self.timed {
            // A regular join stores each key's rows under one state key (time 0): a point read, which RocksDB
            // answers through its bloom filters, where a prefix scan would open an iterator and seek through
            // every level. A batch's rows of one key meet the same partners (this side's rows of the batch are
            // not among them), so each key of the batch is read once and appended to once, its rows in batch
            // order (the hot auction's bids of a Nexmark batch: one read, not hundreds). The partners are
            // borrowed from the read, not copied.
            let mut order: Vec<usize> = (0..batch.num_rows()).collect();
            order.sort_by(|&a, &b| decoded.keys.row(a).cmp(&decoded.keys.row(b)));
            let mut first = 0;
            while first < order.len() {
                let key = decoded.keys.row(order[first]);
                let end = first + order[first..].iter().take_while(|&&r| decoded.keys.row(r) == key).count();
                self.key.set_key(decoded.key_groups[order[first]], key.as_ref());
                self.key.set_namespace(&time_bytes(0));
                let partners = self.stored[other].elements(self.backend.as_mut(), self.key.as_bytes())?;
                for &row in &order[first..end] {
                    push_pairs(&mut self.joined, side, decoded.rows.row(row).as_ref(), &partners);
                }
                let own = order[first..end].iter().map(|&row| decoded.rows.row(row).data());
                self.stored[side].add_all(self.backend.as_mut(), self.key.as_bytes(), own)?;
                first = end;
            }
            let [left, right] = &self.sides;
            return self.joined.emit(left, right, out);
        }
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
            self.key.set_namespace(&time_bytes(t));
            let partners = {
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
                                failure = Some(OperatorError::input(format!("corrupt join state: {e}")));
                                return false;
                            }
                        }
                    }
                    true
                })?;
                if let Some(e) = failure {
                    return Err(e);
                }
                partners
            };
            let partners: Vec<&[u8]> = partners.iter().map(Vec::as_slice).collect();
            push_pairs(&mut self.joined, side, own.as_ref(), &partners);
            self.stored[side].add(self.backend.as_mut(), self.key.as_bytes(), own.as_ref())?;
            let useless_from = if side == 0 { t.saturating_add(self.upper) } else { t.saturating_sub(self.lower) };
            self.cleanup.insert((useless_from, side as u8, self.key.as_bytes().to_vec()));
        }
        let [left, right] = &self.sides;
        self.joined.emit(left, right, out)
    }
}

/// The joined pairs of a row of `side` with its partners from the other side (left first).
fn push_pairs(joined: &mut Joined, side: usize, own: &[u8], partners: &[&[u8]]) {
    for &partner in partners {
        if side == 0 {
            joined.push(own, Some(partner));
        } else {
            joined.push(partner, Some(own));
        }
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
        restore_keyed(self.backend.as_mut(), snapshots, key_groups)?;
        self.cleanup.clear();
        if !self.timed {
            return Ok(());
        }
        // Each stored row list is under `key | time`: its cleanup time follows from the time and the bounds.
        for side in 0..2 {
            for full in stored_keys(self.backend.as_mut(), self.ids[side])? {
                let time = full.len().checked_sub(8).and_then(|at| time_from_bytes(&full[at..]));
                let Some(t) = time else {
                    return Err(OperatorError::input("a stored join key has no time; the snapshot is corrupt"));
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

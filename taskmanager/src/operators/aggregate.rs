//! The keyed running aggregate: count, sum, min, max, avg per key, emitting updates or a changelog.
//!
//! State is held on the heap per *group* (one distinct key): keys are encoded with Arrow's row format
//! (comparable bytes), mapped to a dense group index, and each aggregate keeps a plain vector indexed by
//! group. A batch is processed column-at-a-time: find every row's group, update each aggregate's vector,
//! then emit the groups the batch touched. With `emit: UPDATES` that is one row per touched group with its
//! current values: downstream, the last update of a key is its current value (an upsert stream). With
//! `emit: CHANGELOG` a group whose values changed takes its previous row back (`_retract` true) before its
//! new one, so a downstream aggregate over another key can take the old values back out. The input edge is
//! HASH-partitioned, so each key lives in exactly one subtask and its updates stay in order.
//!
//! A changelog input (a `_retract` column) subtracts its retractions from count, sum and avg; min and max
//! cannot, and validation refuses them there.
//!
//! Checkpoints copy the groups out as keyed entries (`groups`: key group | key | nothing → 24 bytes per
//! aggregate, then the group's row count and whether a row of it is out), so a restore can redistribute
//! them by key group like any keyed state.
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use sluice_common::expr::CompiledExpr;
use sluice_common::job::operators::RETRACT_COLUMN;
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::KeyedStateSnapshot;
use sluice_common::proto::{Aggregate, AggregateEmit};

use crate::operators::accumulate::{AggregateFn, Kind};
use crate::state::{split_state_key, StateKey};

/// The keyed state a checkpoint holds the groups in.
const GROUPS_STATE: &str = "groups";
/// The bytes of one aggregate in a stored group: its value count, integer and float.
const STORED_AGGREGATE_BYTES: usize = 24;
/// The bytes after the aggregates in a stored group: its row count (i64) and whether a row of it is out (u8).
/// Groups stored before changelogs lack them.
const STORED_GROUP_TAIL_BYTES: usize = 9;
use crate::operator_api::{Operator, OperatorError};
use sluice_common::proto::OperatorSnapshot;

/// Per-group state of one aggregate. `values` counts the non-null inputs seen (less those retracted): a group
/// with none has a null sum/min/max/avg, as in SQL.
struct Accumulator {
    kind: Kind,
    argument: Option<CompiledExpr>,
    ints: Vec<i64>,
    floats: Vec<f64>,
    values: Vec<i64>,
    output_type: DataType,
}

pub struct RunningAggregate {
    key_columns: Vec<usize>,
    /// The input's `_retract` column, when the input is a changelog.
    retract_column: Option<usize>,
    /// Whether the output is a changelog (`emit: CHANGELOG`).
    changelog: bool,
    max_parallelism: u32,
    converter: RowConverter,
    groups: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    group_keys: Rows,
    accumulators: Vec<Accumulator>,
    /// Per group: its rows, added less retracted.
    rows: Vec<i64>,
    /// Per group: whether a row of it is out, emitted and not taken back (changelog output).
    emitted: Vec<bool>,
    output: SchemaRef,
    /// `touched[g] == epoch` when group g was already touched by the current batch.
    touched: Vec<u64>,
    epoch: u64,
    group_of_row: Vec<u32>,
    touched_groups: Vec<u32>,
    /// Per row of the current batch: 1, or -1 for a retraction (a changelog input).
    signs: Vec<i64>,
}

impl RunningAggregate {
    pub fn new(
        spec: &Aggregate,
        input: &SchemaRef,
        output: SchemaRef,
        max_parallelism: u32,
    ) -> Result<Self, OperatorError> {
        let key_columns = spec.keys.iter().map(|k| input.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let sort_fields = key_columns.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
        let converter = RowConverter::new(sort_fields)?;
        let group_keys = converter.empty_rows(1024, 16 * 1024);
        let retract_column = input.index_of(RETRACT_COLUMN).ok();
        let functions = AggregateFn::compile_all(&spec.aggregates, input, &output, key_columns.len())?;
        if functions.iter().any(|f| f.kind == Kind::Generic) {
            return Err(OperatorError::configuration(
                "the running aggregate computes count, sum, min, max and avg only",
            ));
        }
        if retract_column.is_some() && functions.iter().any(|f| !f.kind.retractable()) {
            return Err(OperatorError::configuration(format!(
                "min and max cannot take a retracted row back out, and the input is a changelog ('{RETRACT_COLUMN}')"
            )));
        }
        let accumulators = functions
            .into_iter()
            .map(|f| Accumulator {
                kind: f.kind,
                argument: f.argument,
                ints: Vec::new(),
                floats: Vec::new(),
                values: Vec::new(),
                output_type: f.output_type,
            })
            .collect();
        Ok(Self {
            key_columns,
            retract_column,
            changelog: spec.emit() == AggregateEmit::Changelog,
            max_parallelism,
            converter,
            groups: HashMap::with_hasher(ahash::RandomState::new()),
            group_keys,
            accumulators,
            rows: Vec::new(),
            emitted: Vec::new(),
            output,
            touched: Vec::new(),
            epoch: 0,
            group_of_row: Vec::new(),
            touched_groups: Vec::new(),
            signs: Vec::new(),
        })
    }

    /// Assigns every row its group, creating groups for new keys, and lists the touched groups in order.
    fn assign_groups(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        let keys: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = self.converter.convert_columns(&keys)?;
        self.epoch += 1;
        self.group_of_row.clear();
        self.touched_groups.clear();
        for row in rows.iter() {
            let group = match self.groups.get(row.as_ref()) {
                Some(&group) => group,
                None => {
                    let group = self.groups.len() as u32;
                    self.groups.insert(row.as_ref().into(), group);
                    self.group_keys.push(row);
                    self.touched.push(0);
                    group
                }
            };
            if self.touched[group as usize] != self.epoch {
                self.touched[group as usize] = self.epoch;
                self.touched_groups.push(group);
            }
            self.group_of_row.push(group);
        }
        self.grow(self.groups.len());
        Ok(())
    }

    fn grow(&mut self, groups: usize) {
        self.rows.resize(groups, 0);
        self.emitted.resize(groups, false);
        for accumulator in &mut self.accumulators {
            accumulator.grow(groups);
        }
    }

    /// Reads the batch's retractions into `signs` (empty for an input that is no changelog).
    fn read_signs(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        self.signs.clear();
        let Some(column) = self.retract_column else { return Ok(()) };
        let retract = batch
            .column(column)
            .as_boolean_opt()
            .ok_or_else(|| OperatorError::internal(format!("the input's '{RETRACT_COLUMN}' column is not BOOLEAN")))?;
        // A null says nothing was retracted: the row adds.
        self.signs
            .extend((0..batch.num_rows()).map(|row| if retract.is_valid(row) && retract.value(row) { -1 } else { 1 }));
        Ok(())
    }

    /// The aggregates' current values for the touched groups, a column each.
    fn evaluate_touched(&self) -> Result<Vec<ArrayRef>, OperatorError> {
        self.accumulators.iter().map(|a| a.evaluate(&self.touched_groups)).collect()
    }

    /// The changelog rows of the touched groups: for each whose values changed, its previous row taken back
    /// (if one is out) and its new row (if it still has rows). None when nothing changed.
    fn changes(
        &mut self,
        keys: &[ArrayRef],
        before: &[ArrayRef],
        after: &[ArrayRef],
    ) -> Result<Option<RecordBatch>, OperatorError> {
        let mut unchanged = vec![true; self.touched_groups.len()];
        for (old, new) in before.iter().zip(after) {
            let same = not_distinct(old, new)?;
            for (i, flag) in unchanged.iter_mut().enumerate() {
                *flag &= same.value(i);
            }
        }
        // (0, i): the i-th touched group's row before the batch; (1, i): after it.
        let mut picks = Vec::with_capacity(2 * self.touched_groups.len());
        let mut retract = Vec::with_capacity(picks.capacity());
        for (i, &g) in self.touched_groups.iter().enumerate() {
            let g = g as usize;
            let (was_out, has_rows) = (self.emitted[g], self.rows[g] > 0);
            if was_out && has_rows && unchanged[i] {
                continue;
            }
            if was_out {
                picks.push((0, i));
                retract.push(true);
            }
            if has_rows {
                picks.push((1, i));
                retract.push(false);
            }
            self.emitted[g] = has_rows;
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(keys.len() + after.len() + 1);
        for key in keys {
            columns.push(interleave(&[key.as_ref(), key.as_ref()], &picks)?);
        }
        for (old, new) in before.iter().zip(after) {
            columns.push(interleave(&[old.as_ref(), new.as_ref()], &picks)?);
        }
        columns.push(Arc::new(BooleanArray::from(retract)));
        Ok(Some(RecordBatch::try_new(self.output.clone(), columns)?))
    }
}

impl Operator for RunningAggregate {
    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        let count = self.groups.len();
        if count == 0 {
            return Ok(());
        }
        let columns = self.converter.convert_rows(self.group_keys.iter())?;
        let mut hashes = Vec::new();
        hash_key_columns(&columns, &mut hashes).map_err(|e| OperatorError::internal(e.to_string()))?;
        let mut state = KeyedStateSnapshot { name: GROUPS_STATE.into(), ..Default::default() };
        let mut key = StateKey::default();
        for (g, &hash) in hashes.iter().enumerate().take(count) {
            let key_group = key_group_of(hash, self.max_parallelism).0 as u16;
            state.keys.push(key.set_key(key_group, self.group_keys.row(g).as_ref()).as_bytes().to_vec());
            let mut value =
                Vec::with_capacity(STORED_AGGREGATE_BYTES * self.accumulators.len() + STORED_GROUP_TAIL_BYTES);
            for accumulator in &self.accumulators {
                value.extend_from_slice(&accumulator.values[g].to_be_bytes());
                value.extend_from_slice(&accumulator.ints.get(g).copied().unwrap_or(0).to_be_bytes());
                value.extend_from_slice(&accumulator.floats.get(g).copied().unwrap_or(0.0).to_bits().to_be_bytes());
            }
            value.extend_from_slice(&self.rows[g].to_be_bytes());
            value.push(u8::from(self.emitted[g]));
            state.values.push(value);
        }
        snapshot.keyed.push(state);
        Ok(())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: std::ops::RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        let corrupt = |what: &str| OperatorError::input(format!("a stored group is malformed ({what})"));
        let parser = self.converter.parser();
        let width = STORED_AGGREGATE_BYTES * self.accumulators.len();
        for state in snapshots.iter().flat_map(|s| &s.keyed).filter(|s| s.name == GROUPS_STATE) {
            for (full, value) in state.keys.iter().zip(&state.values) {
                let (key_group, key, _) = split_state_key(full).ok_or_else(|| corrupt("key"))?;
                if !key_groups.contains(&key_group) {
                    continue;
                }
                if value.len() != width && value.len() != width + STORED_GROUP_TAIL_BYTES {
                    return Err(corrupt("value length"));
                }
                if self.groups.contains_key(key) {
                    return Err(corrupt("a key twice"));
                }
                let g = self.groups.len();
                self.groups.insert(key.into(), g as u32);
                self.group_keys.push(parser.parse(key));
                self.touched.push(0);
                self.grow(g + 1);
                let word = |at: usize| {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&value[at..at + 8]);
                    bytes
                };
                // A group stored before changelogs has rows and a row out: it exists only after a row.
                (self.rows[g], self.emitted[g]) = match value.get(width..) {
                    Some(tail) if tail.len() == STORED_GROUP_TAIL_BYTES => {
                        (i64::from_be_bytes(word(width)), tail[8] != 0)
                    }
                    _ => (1, true),
                };
                for (a, accumulator) in self.accumulators.iter_mut().enumerate() {
                    let word = |i: usize| word(STORED_AGGREGATE_BYTES * a + 8 * i);
                    accumulator.values[g] = i64::from_be_bytes(word(0));
                    if let Some(slot) = accumulator.ints.get_mut(g) {
                        *slot = i64::from_be_bytes(word(1));
                    }
                    if let Some(slot) = accumulator.floats.get_mut(g) {
                        *slot = f64::from_bits(u64::from_be_bytes(word(2)));
                    }
                }
            }
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.assign_groups(&batch)?;
        self.read_signs(&batch)?;
        let before = if self.changelog { self.evaluate_touched()? } else { Vec::new() };
        let signs = (!self.signs.is_empty()).then_some(self.signs.as_slice());
        for accumulator in &mut self.accumulators {
            accumulator.update(&batch, &self.group_of_row, signs)?;
        }
        match signs {
            Some(signs) => self.group_of_row.iter().zip(signs).for_each(|(&g, s)| self.rows[g as usize] += s),
            None => self.group_of_row.iter().for_each(|&g| self.rows[g as usize] += 1),
        }
        let after = self.evaluate_touched()?;
        let mut keys =
            self.converter.convert_rows(self.touched_groups.iter().map(|&g| self.group_keys.row(g as usize)))?;
        if self.changelog {
            out.extend(self.changes(&keys, &before, &after)?);
        } else {
            keys.extend(after);
            out.push(RecordBatch::try_new(self.output.clone(), keys)?);
        }
        Ok(())
    }
}

impl Accumulator {
    fn grow(&mut self, groups: usize) {
        self.values.resize(groups, 0);
        match self.kind {
            Kind::SumInt => self.ints.resize(groups, 0),
            Kind::MinInt => self.ints.resize(groups, i64::MAX),
            Kind::MaxInt => self.ints.resize(groups, i64::MIN),
            Kind::SumFloat | Kind::Avg => self.floats.resize(groups, 0.0),
            Kind::MinFloat => self.floats.resize(groups, f64::INFINITY),
            Kind::MaxFloat => self.floats.resize(groups, f64::NEG_INFINITY),
            // Refused when the operator is built.
            Kind::CountRows | Kind::CountValues | Kind::Generic => {}
        }
    }

    /// Adds the batch's rows to their groups; with `signs`, a row whose sign is -1 (a retraction) is taken
    /// out instead (never for min and max: refused when the operator is built).
    fn update(
        &mut self,
        batch: &RecordBatch,
        group_of_row: &[u32],
        signs: Option<&[i64]>,
    ) -> Result<(), OperatorError> {
        // Two copies of the loops: the append-only one (every sign 1, the common case) compiles without a
        // lookup per row.
        match signs {
            None => self.update_signed(batch, group_of_row, |_| 1),
            Some(signs) => self.update_signed(batch, group_of_row, |row| signs[row]),
        }
    }

    fn update_signed(
        &mut self,
        batch: &RecordBatch,
        group_of_row: &[u32],
        sign: impl Fn(usize) -> i64,
    ) -> Result<(), OperatorError> {
        let Some(argument) = &self.argument else {
            for (row, &g) in group_of_row.iter().enumerate() {
                self.values[g as usize] += sign(row);
            }
            return Ok(());
        };
        let values = argument.evaluate(batch)?;
        let floating = self.kind.floating();
        if self.kind == Kind::CountValues {
            for (row, &g) in group_of_row.iter().enumerate() {
                self.values[g as usize] += i64::from(values.is_valid(row)) * sign(row);
            }
            return Ok(());
        }
        if floating {
            let values = cast(&values, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for (row, &g) in group_of_row.iter().enumerate() {
                if values.is_valid(row) {
                    let (g, v, sign) = (g as usize, values.value(row), sign(row));
                    self.values[g] += sign;
                    let slot = &mut self.floats[g];
                    *slot = match self.kind {
                        Kind::MinFloat => slot.min(v),
                        Kind::MaxFloat => slot.max(v),
                        _ => *slot + sign as f64 * v,
                    };
                }
            }
        } else {
            let values = cast(&values, &DataType::Int64)?;
            let values = values.as_primitive::<Int64Type>();
            for (row, &g) in group_of_row.iter().enumerate() {
                if values.is_valid(row) {
                    let (g, v, sign) = (g as usize, values.value(row), sign(row));
                    self.values[g] += sign;
                    let slot = &mut self.ints[g];
                    *slot = match self.kind {
                        Kind::MinInt => (*slot).min(v),
                        Kind::MaxInt => (*slot).max(v),
                        _ => slot.wrapping_add(v.wrapping_mul(sign)),
                    };
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[u32]) -> Result<ArrayRef, OperatorError> {
        let present = |g: u32| self.values[g as usize] > 0;
        let array: ArrayRef = match self.kind {
            Kind::CountRows | Kind::CountValues => {
                Arc::new(Int64Array::from_iter_values(groups.iter().map(|&g| self.values[g as usize])))
            }
            Kind::SumInt | Kind::MinInt | Kind::MaxInt => {
                Arc::new(groups.iter().map(|&g| present(g).then(|| self.ints[g as usize])).collect::<Int64Array>())
            }
            Kind::SumFloat | Kind::MinFloat | Kind::MaxFloat => {
                Arc::new(groups.iter().map(|&g| present(g).then(|| self.floats[g as usize])).collect::<Float64Array>())
            }
            Kind::Avg => Arc::new(
                groups
                    .iter()
                    .map(|&g| present(g).then(|| self.floats[g as usize] / self.values[g as usize] as f64))
                    .collect::<Float64Array>(),
            ),
            Kind::Generic => return Err(OperatorError::internal("the running aggregate has no DataFusion aggregates")),
        };
        if array.data_type() == &self.output_type {
            Ok(array)
        } else {
            Ok(cast(&array, &self.output_type)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use sluice_common::proto::AggregateCall;
    use std::collections::BTreeMap;

    #[test]
    fn emits_the_current_value_of_every_touched_key() -> Result<(), OperatorError> {
        let input = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
            Field::new("mean", DataType::Float64, true),
        ]));
        let call = |function: &str, argument: &str, name: &str| AggregateCall {
            function: function.into(),
            argument: argument.into(),
            name: name.into(),
        };
        let spec = Aggregate {
            keys: vec!["word".into()],
            aggregates: vec![call("count", "", "count"), call("sum", "n", "total"), call("avg", "n", "mean")],
            ..Default::default()
        };
        let mut op = RunningAggregate::new(&spec, &input, output.clone(), 128)?;
        let batch = |words: Vec<&str>, ns: Vec<Option<i64>>| {
            RecordBatch::try_new(
                input.clone(),
                vec![Arc::new(StringArray::from(words)), Arc::new(Int64Array::from(ns))],
            )
        };
        let mut out = Vec::new();
        op.process(batch(vec!["a", "b", "a"], vec![Some(1), None, Some(3)])?, &mut out)?;
        op.process(batch(vec!["b"], vec![Some(5)])?, &mut out)?;
        let rows: Vec<String> = out
            .iter()
            .flat_map(|b| {
                let words = b.column(0).as_string::<i32>().clone();
                let counts = b.column(1).as_primitive::<Int64Type>().clone();
                let totals = b.column(2).as_primitive::<Int64Type>().clone();
                let means = b.column(3).as_primitive::<Float64Type>().clone();
                (0..b.num_rows())
                    .map(move |r| {
                        let total = totals.is_valid(r).then(|| totals.value(r));
                        let mean = means.is_valid(r).then(|| means.value(r));
                        format!("{} {} {:?} {:?}", words.value(r), counts.value(r), total, mean)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows, vec!["a 2 Some(4) Some(2.0)", "b 1 None None", "b 2 Some(5) Some(5.0)"]);
        Ok(())
    }

    /// Groups survive a snapshot and a restore split over two subtasks by key group, and counting goes on
    /// from where it was.
    #[test]
    fn a_snapshot_restores_the_groups_split_by_key_group() -> Result<(), OperatorError> {
        let input = Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, false)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let spec = Aggregate {
            keys: vec!["word".into()],
            aggregates: vec![AggregateCall { function: "count".into(), argument: String::new(), name: "count".into() }],
            ..Default::default()
        };
        let words: Vec<String> = (0..200).map(|i| format!("w{}", i % 50)).collect();
        let batch = |words: Vec<String>| RecordBatch::try_new(input.clone(), vec![Arc::new(StringArray::from(words))]);
        let mut before = RunningAggregate::new(&spec, &input, output.clone(), 128)?;
        before.process(batch(words)?, &mut Vec::new())?;
        let mut snapshot = OperatorSnapshot::default();
        before.snapshot_state(&mut snapshot)?;

        let mut halves = [
            RunningAggregate::new(&spec, &input, output.clone(), 128)?,
            RunningAggregate::new(&spec, &input, output.clone(), 128)?,
        ];
        halves[0].restore_state(&[&snapshot], 0..=63)?;
        halves[1].restore_state(&[&snapshot], 64..=127)?;
        assert_eq!(halves[0].groups.len() + halves[1].groups.len(), 50);
        assert!(halves.iter().all(|h| !h.groups.is_empty()), "both halves own some words");
        let mut counts = std::collections::BTreeMap::new();
        for half in &mut halves {
            let mut out = Vec::new();
            let mine: Vec<String> = (0..50)
                .map(|i| format!("w{i}"))
                .filter(|w| {
                    half.groups.contains_key(
                        half.converter
                            .convert_columns(&[Arc::new(StringArray::from(vec![w.clone()])) as ArrayRef])
                            .map(|r| r.row(0).as_ref().to_vec())
                            .unwrap_or_default()
                            .as_slice(),
                    )
                })
                .collect();
            half.process(batch(mine)?, &mut out)?;
            for b in &out {
                let (w, c) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
                for r in 0..b.num_rows() {
                    counts.insert(w.value(r).to_string(), c.value(r));
                }
            }
        }
        assert_eq!(counts.len(), 50);
        assert!(counts.values().all(|&c| c == 5), "4 before the snapshot, 1 after: {counts:?}");
        Ok(())
    }

    /// The schema of a running aggregate's changelog of `(key, value)`: `key`, `value`, `_retract`.
    fn changelog_schema(key: &str, value: &str, value_type: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(key, DataType::Int64, false),
            Field::new(value, value_type, true),
            Field::new(RETRACT_COLUMN, DataType::Boolean, false),
        ]))
    }

    /// The rows of `batches` as (key, value as text, retract) triples, in order.
    fn changelog_rows(batches: &[RecordBatch]) -> Vec<(i64, String, bool)> {
        let mut rows = Vec::new();
        for batch in batches {
            let keys = batch.column(0).as_primitive::<Int64Type>();
            let retract = batch.column(2).as_boolean();
            for r in 0..batch.num_rows() {
                let value = datafusion::arrow::util::display::array_value_to_string(batch.column(1), r)
                    .unwrap_or_else(|e| e.to_string());
                rows.push((keys.value(r), value, retract.value(r)));
            }
        }
        rows
    }

    fn aggregate_spec(key: &str, call: AggregateCall, emit: AggregateEmit) -> Aggregate {
        Aggregate { keys: vec![key.into()], aggregates: vec![call], emit: emit as i32 }
    }

    /// A changelog takes a key's previous row back before its new one, says nothing when the values stay,
    /// and the rows added up give the current result.
    #[test]
    fn a_changelog_retracts_the_previous_row_only_when_the_values_change() -> Result<(), OperatorError> {
        let input = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("price", DataType::Int64, false),
        ]));
        let output = changelog_schema("auction", "top", DataType::Int64);
        let max = AggregateCall { function: "max".into(), argument: "price".into(), name: "top".into() };
        let mut op =
            RunningAggregate::new(&aggregate_spec("auction", max, AggregateEmit::Changelog), &input, output, 128)?;
        let batch = |auctions: Vec<i64>, prices: Vec<i64>| {
            RecordBatch::try_new(
                input.clone(),
                vec![Arc::new(Int64Array::from(auctions)), Arc::new(Int64Array::from(prices))],
            )
        };
        let mut out = Vec::new();
        op.process(batch(vec![1, 2, 1], vec![10, 5, 12])?, &mut out)?;
        op.process(batch(vec![1, 2], vec![11, 7])?, &mut out)?;
        op.process(batch(vec![1], vec![3])?, &mut out)?;
        let expected = vec![
            (1, "12".to_string(), false),
            (2, "5".to_string(), false),
            // Auction 1's maximum stays 12: nothing for it. Auction 2's goes from 5 to 7.
            (2, "5".to_string(), true),
            (2, "7".to_string(), false),
        ];
        assert_eq!(changelog_rows(&out), expected);
        Ok(())
    }

    /// q4's shape: a changelog of the maximum per auction feeds an average per category, which takes each
    /// superseded maximum back out; after every batch its last update per category equals the naive average
    /// of the current maxima, whatever the batch boundaries. Snapshots taken midway restore both stages.
    #[test]
    fn an_average_over_a_changelog_of_maxima_matches_a_naive_evaluation() -> Result<(), OperatorError> {
        let bids_schema = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("category", DataType::Int64, false),
            Field::new("price", DataType::Int64, false),
        ]));
        let maxima_schema = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("category", DataType::Int64, false),
            Field::new("top", DataType::Int64, true),
            Field::new(RETRACT_COLUMN, DataType::Boolean, false),
        ]));
        let averages_schema = Arc::new(Schema::new(vec![
            Field::new("category", DataType::Int64, false),
            Field::new("avg_top", DataType::Float64, true),
            Field::new("auctions", DataType::Int64, false),
        ]));
        let inner = Aggregate {
            keys: vec!["auction".into(), "category".into()],
            aggregates: vec![AggregateCall { function: "max".into(), argument: "price".into(), name: "top".into() }],
            emit: AggregateEmit::Changelog as i32,
        };
        let outer = Aggregate {
            keys: vec!["category".into()],
            aggregates: vec![
                AggregateCall { function: "avg".into(), argument: "top".into(), name: "avg_top".into() },
                AggregateCall { function: "count".into(), argument: String::new(), name: "auctions".into() },
            ],
            emit: AggregateEmit::Updates as i32,
        };
        let new_stages = || -> Result<_, OperatorError> {
            Ok((
                RunningAggregate::new(&inner, &bids_schema, maxima_schema.clone(), 128)?,
                RunningAggregate::new(&outer, &maxima_schema, averages_schema.clone(), 128)?,
            ))
        };
        let (mut maxima, mut averages) = new_stages()?;
        // A fixed pseudo-random bid sequence: 40 auctions, 4 categories (auction % 4), prices up to 1,000.
        let mut seed = 0x2545_f491_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound) as i64
        };
        let bids: Vec<(i64, i64)> = (0..2_000).map(|_| (next(40), next(1_000))).collect();
        let mut top: BTreeMap<i64, i64> = BTreeMap::new();
        let mut last_average: BTreeMap<i64, (f64, i64)> = BTreeMap::new();
        let mut at = 0;
        for (round, size) in [1usize, 7, 50, 300, 3, 1_000, 639].into_iter().enumerate() {
            let chunk = &bids[at..at + size];
            at += size;
            let batch = RecordBatch::try_new(
                bids_schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|b| b.0))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|b| b.0 % 4))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|b| b.1))),
                ],
            )?;
            for &(auction, price) in chunk {
                let slot = top.entry(auction).or_insert(price);
                *slot = (*slot).max(price);
            }
            let mut changes = Vec::new();
            maxima.process(batch, &mut changes)?;
            let mut updates = Vec::new();
            for change in changes {
                averages.process(change, &mut updates)?;
            }
            for update in &updates {
                let (categories, means, counts) = (
                    update.column(0).as_primitive::<Int64Type>(),
                    update.column(1).as_primitive::<Float64Type>(),
                    update.column(2).as_primitive::<Int64Type>(),
                );
                for r in 0..update.num_rows() {
                    last_average.insert(categories.value(r), (means.value(r), counts.value(r)));
                }
            }
            let mut expected: BTreeMap<i64, (f64, i64)> = BTreeMap::new();
            for (&auction, &price) in &top {
                let entry = expected.entry(auction % 4).or_default();
                entry.0 += price as f64;
                entry.1 += 1;
            }
            for (category, (sum, count)) in &mut expected {
                *sum /= *count as f64;
                let got = last_average.get(category).copied();
                assert_eq!(got, Some((*sum, *count)), "round {round}, category {category}");
            }
            if round == 3 {
                // Both stages go through a snapshot and a restore into new operators.
                let (mut inner_snapshot, mut outer_snapshot) =
                    (OperatorSnapshot::default(), OperatorSnapshot::default());
                maxima.snapshot_state(&mut inner_snapshot)?;
                averages.snapshot_state(&mut outer_snapshot)?;
                (maxima, averages) = new_stages()?;
                maxima.restore_state(&[&inner_snapshot], 0..=127)?;
                averages.restore_state(&[&outer_snapshot], 0..=127)?;
            }
        }
        assert_eq!(at, bids.len());
        Ok(())
    }

    #[test]
    fn min_and_max_refuse_a_changelog_input() {
        let input = changelog_schema("k", "v", DataType::Int64);
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("m", DataType::Int64, true),
        ]));
        let min = AggregateCall { function: "min".into(), argument: "v".into(), name: "m".into() };
        let built = RunningAggregate::new(&aggregate_spec("k", min, AggregateEmit::Updates), &input, output, 128);
        let error = built.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("cannot take a retracted row back out"), "{error}");
    }
}

//! The keyed running aggregate: count, sum, min, max, avg per key, emitting updates.
//!
//! State is held on the heap per *group* (one distinct key): keys are encoded with Arrow's row format
//! (comparable bytes), mapped to a dense group index, and each aggregate keeps a plain vector indexed by
//! group. A batch is processed column-at-a-time: find every row's group, update each aggregate's vector,
//! then emit one row per group the batch touched, with the group's current values. Downstream, the last
//! update of a key is its current value (an upsert stream); the input edge is HASH-partitioned, so each key
//! lives in exactly one subtask and its updates stay in order.
//!
//! Checkpoints copy the groups out as keyed entries (`groups`: key group | key | nothing → 24 bytes per
//! aggregate), so a restore can redistribute them by key group like any keyed state.
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use sluice_common::expr::CompiledExpr;
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::Aggregate;
use sluice_common::proto::KeyedStateSnapshot;

use crate::operators::accumulate::{AggregateFn, Kind};
use crate::state::{split_state_key, StateKey};

/// The keyed state a checkpoint holds the groups in.
const GROUPS_STATE: &str = "groups";
use crate::operator_api::{Operator, OperatorError};
use sluice_common::proto::OperatorSnapshot;

/// Per-group state of one aggregate. `values` counts the non-null inputs seen: a group with none yet has a
/// null sum/min/max/avg, as in SQL.
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
    max_parallelism: u32,
    converter: RowConverter,
    groups: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    group_keys: Rows,
    accumulators: Vec<Accumulator>,
    output: SchemaRef,
    /// `touched[g] == epoch` when group g was already touched by the current batch.
    touched: Vec<u64>,
    epoch: u64,
    group_of_row: Vec<u32>,
    touched_groups: Vec<u32>,
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
        let functions = AggregateFn::compile_all(&spec.aggregates, input, &output, key_columns.len())?;
        if functions.iter().any(|f| f.kind == Kind::Generic) {
            return Err(OperatorError::configuration(
                "the running aggregate computes count, sum, min, max and avg only",
            ));
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
            max_parallelism,
            converter,
            groups: HashMap::with_hasher(ahash::RandomState::new()),
            group_keys,
            accumulators,
            output,
            touched: Vec::new(),
            epoch: 0,
            group_of_row: Vec::new(),
            touched_groups: Vec::new(),
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
        let groups = self.groups.len();
        for accumulator in &mut self.accumulators {
            accumulator.grow(groups);
        }
        Ok(())
    }

    fn emit(&self) -> Result<RecordBatch, OperatorError> {
        let mut columns =
            self.converter.convert_rows(self.touched_groups.iter().map(|&g| self.group_keys.row(g as usize)))?;
        for accumulator in &self.accumulators {
            columns.push(accumulator.evaluate(&self.touched_groups)?);
        }
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
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
            let mut value = Vec::with_capacity(24 * self.accumulators.len());
            for accumulator in &self.accumulators {
                value.extend_from_slice(&accumulator.values[g].to_be_bytes());
                value.extend_from_slice(&accumulator.ints.get(g).copied().unwrap_or(0).to_be_bytes());
                value.extend_from_slice(&accumulator.floats.get(g).copied().unwrap_or(0.0).to_bits().to_be_bytes());
            }
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
        let width = 24 * self.accumulators.len();
        for state in snapshots.iter().flat_map(|s| &s.keyed).filter(|s| s.name == GROUPS_STATE) {
            for (full, value) in state.keys.iter().zip(&state.values) {
                let (key_group, key, _) = split_state_key(full).ok_or_else(|| corrupt("key"))?;
                if !key_groups.contains(&key_group) {
                    continue;
                }
                if value.len() != width {
                    return Err(corrupt("value length"));
                }
                if self.groups.contains_key(key) {
                    return Err(corrupt("a key twice"));
                }
                let g = self.groups.len();
                self.groups.insert(key.into(), g as u32);
                self.group_keys.push(parser.parse(key));
                self.touched.push(0);
                for accumulator in &mut self.accumulators {
                    accumulator.grow(g + 1);
                }
                for (a, accumulator) in self.accumulators.iter_mut().enumerate() {
                    let word = |i: usize| {
                        let at = 24 * a + 8 * i;
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(&value[at..at + 8]);
                        bytes
                    };
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
        for accumulator in &mut self.accumulators {
            accumulator.update(&batch, &self.group_of_row)?;
        }
        out.push(self.emit()?);
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

    fn update(&mut self, batch: &RecordBatch, group_of_row: &[u32]) -> Result<(), OperatorError> {
        let Some(argument) = &self.argument else {
            for &g in group_of_row {
                self.values[g as usize] += 1;
            }
            return Ok(());
        };
        let values = argument.evaluate(batch)?;
        let floating = self.kind.floating();
        if self.kind == Kind::CountValues {
            for (row, &g) in group_of_row.iter().enumerate() {
                self.values[g as usize] += i64::from(values.is_valid(row));
            }
            return Ok(());
        }
        if floating {
            let values = cast(&values, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for (row, &g) in group_of_row.iter().enumerate() {
                if values.is_valid(row) {
                    let (g, v) = (g as usize, values.value(row));
                    self.values[g] += 1;
                    let slot = &mut self.floats[g];
                    *slot = match self.kind {
                        Kind::MinFloat => slot.min(v),
                        Kind::MaxFloat => slot.max(v),
                        _ => *slot + v,
                    };
                }
            }
        } else {
            let values = cast(&values, &DataType::Int64)?;
            let values = values.as_primitive::<Int64Type>();
            for (row, &g) in group_of_row.iter().enumerate() {
                if values.is_valid(row) {
                    let (g, v) = (g as usize, values.value(row));
                    self.values[g] += 1;
                    let slot = &mut self.ints[g];
                    *slot = match self.kind {
                        Kind::MinInt => (*slot).min(v),
                        Kind::MaxInt => (*slot).max(v),
                        _ => slot.wrapping_add(v),
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
}

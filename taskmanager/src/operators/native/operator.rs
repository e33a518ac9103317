//! The adapter: runs a [`KeyedProcessFunction`] as the operator of a `custom` vertex.
//!
//! Per batch it computes every row's key bytes and key group once, then calls the function row by row with
//! that key current; watermarks and the wall clock fire the due timers, earliest first. The keyed state
//! (timers included) is the backend's, so a checkpoint needs nothing else from it.
use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::{CustomOperator, OperatorSnapshot};

use super::runtime::Env;
use super::{
    Collector, Context, KeyedProcessFunction, OpenContext, Operator, OperatorError, OperatorRegistry, Record,
    SubtaskInfo, TimeDomain,
};
use crate::operator_api::restore::{restore_keyed, stored_keys};
use crate::state::{time_from_bytes, KeyedStateBackend, StateKey};
use crate::time::timestamps_of;

/// The operator a `custom` vertex runs: the runtime around a [`KeyedProcessFunction`].
pub(crate) struct ProcessOperator {
    function: Box<dyn KeyedProcessFunction>,
    env: Env,
    key_columns: Vec<usize>,
    time_column: Option<usize>,
    max_parallelism: u32,
    hashes: Vec<u64>,
    collector: Collector,
}

impl ProcessOperator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: &CustomOperator,
        registry: &OperatorRegistry,
        input: &SchemaRef,
        output: SchemaRef,
        event_time_column: Option<&str>,
        subtask: SubtaskInfo,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let factory = registry.factory(&spec.name)?;
        let key_columns = spec.keys.iter().map(|k| input.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let sort_fields = key_columns.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
        let time_column = event_time_column.map(|c| input.index_of(c)).transpose()?;
        let timers = backend.register("timers")?;
        let mut env = Env {
            backend,
            values: Vec::new(),
            lists: Vec::new(),
            maps: Vec::new(),
            timers,
            event_timers: BTreeSet::new(),
            processing_timers: BTreeSet::new(),
            key: StateKey::default(),
            converter: RowConverter::new(sort_fields)?,
            watermark: i64::MIN,
            scratch: Vec::new(),
        };
        let function = factory(&mut OpenContext { config: &spec.config, subtask, env: &mut env })?;
        Ok(Self {
            function,
            env,
            key_columns,
            time_column,
            max_parallelism,
            hashes: Vec::new(),
            collector: Collector::new(output),
        })
    }

    /// Fires the timers of `domain` due at `time`, earliest first (including those the firing registers).
    fn fire(&mut self, domain: TimeDomain, time: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        while let Some(at) = self.env.pop_due(domain, time)? {
            let mut ctx = Context { env: &mut self.env, timestamp: Some(at) };
            self.function.on_timer(at, domain, &mut ctx, &mut self.collector)?;
        }
        self.collector.drain(out)
    }
}

impl Operator for ProcessOperator {
    fn keyed_backend(&mut self) -> Option<&mut dyn KeyedStateBackend> {
        // Timers are stored in the `timers` state, so the keyed state is everything.
        Some(self.env.backend.as_mut())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: std::ops::RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        restore_keyed(self.env.backend.as_mut(), snapshots, key_groups)?;
        // Stored timers are `key | domain (0 event time, 1 processing time) | time`.
        self.env.event_timers.clear();
        self.env.processing_timers.clear();
        for stored in stored_keys(self.env.backend.as_mut(), self.env.timers)? {
            let parsed = stored.len().checked_sub(9).and_then(|at| Some((at, time_from_bytes(&stored[at + 1..])?)));
            let Some((at, time)) = parsed else {
                return Err(OperatorError::input("a stored timer is malformed; the snapshot is corrupt"));
            };
            let entry = (time, stored[..at].to_vec());
            match stored[at] {
                0 => self.env.event_timers.insert(entry),
                _ => self.env.processing_timers.insert(entry),
            };
        }
        Ok(())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = self.env.converter.convert_columns(&keys)?;
        hash_key_columns(&keys, &mut self.hashes).map_err(|e| OperatorError::internal(e.to_string()))?;
        let times = self.time_column.map(|c| timestamps_of(batch.column(c))).transpose()?;
        let times = times.as_ref().map(|t| t.as_primitive::<Int64Type>());
        for row in 0..batch.num_rows() {
            let key_group = key_group_of(self.hashes[row], self.max_parallelism).0 as u16;
            self.env.key.set_key(key_group, rows.row(row).as_ref());
            let timestamp = times.filter(|t| t.is_valid(row)).map(|t| t.value(row));
            let record = Record { batch: &batch, row, timestamp };
            let mut ctx = Context { env: &mut self.env, timestamp };
            self.function.process_element(&record, &mut ctx, &mut self.collector)?;
        }
        self.collector.drain(out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if watermark <= self.env.watermark {
            return Ok(());
        }
        self.env.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark, out)
    }

    fn next_timer(&self) -> Option<i64> {
        self.env.processing_timers.first().map(|(at, _)| *at)
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.fire(TimeDomain::ProcessingTime, now, out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::operators::native::{ListStateHandle, ScalarValue, ValueStateHandle};
    use crate::state::HeapBackend;
    use crate::time::now_millis;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Sums values per key; emits (key, sum) from an event-time timer at 10 after the first record, and
    /// (key, -1) from a processing-time timer when `config.wall` is set.
    struct SumUntil {
        sum: ValueStateHandle<i64>,
        seen: ListStateHandle<i64>,
        wall: bool,
    }

    impl KeyedProcessFunction for SumUntil {
        fn process_element(
            &mut self,
            record: &Record<'_>,
            ctx: &mut Context<'_>,
            _out: &mut Collector,
        ) -> Result<(), OperatorError> {
            let value = record.i64("v")?.unwrap_or(0);
            let sum = ctx.value(&self.sum)?;
            ctx.update_value(&self.sum, &(sum.unwrap_or(0) + value))?;
            ctx.add_to_list(&self.seen, &value)?;
            let first = record.timestamp().unwrap_or(0);
            if sum.is_none() {
                ctx.register_event_time_timer(first + 10)?;
                // A second registration of the same timer is a no-op.
                ctx.register_event_time_timer(first + 10)?;
                if self.wall {
                    ctx.register_processing_time_timer(0)?;
                }
            }
            Ok(())
        }

        fn on_timer(
            &mut self,
            timestamp: i64,
            domain: TimeDomain,
            ctx: &mut Context<'_>,
            out: &mut Collector,
        ) -> Result<(), OperatorError> {
            let mut row = ctx.current_key()?;
            match domain {
                TimeDomain::EventTime => {
                    assert_eq!(ctx.timestamp(), Some(timestamp));
                    row.push(ScalarValue::from(ctx.value(&self.sum)?.unwrap_or(0)));
                    row.push(ScalarValue::from(ctx.list(&self.seen)?.len() as i64));
                    ctx.clear_value(&self.sum)?;
                    ctx.clear_list(&self.seen)?;
                }
                TimeDomain::ProcessingTime => {
                    row.push(ScalarValue::from(-1i64));
                    row.push(ScalarValue::Null);
                }
            }
            out.emit(row)
        }
    }

    fn registry() -> OperatorRegistry {
        OperatorRegistry::new().register("sum_until", |ctx| {
            Ok(Box::new(SumUntil {
                sum: ctx.value_state("sum", None)?,
                seen: ctx.list_state("seen")?,
                wall: ctx.parse("wall", false)?,
            }))
        })
    }

    fn operator(config: &[(&str, &str)]) -> Result<ProcessOperator, OperatorError> {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("sum", DataType::Int64, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let spec = CustomOperator {
            name: "sum_until".into(),
            keys: vec!["k".into()],
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            output: vec![],
        };
        let subtask = SubtaskInfo { index: 0, parallelism: 1 };
        ProcessOperator::new(
            &spec,
            &registry(),
            &input,
            output,
            Some("t"),
            subtask,
            128,
            Box::new(HeapBackend::default()),
        )
    }

    fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(schema, columns).expect("a valid batch")
    }

    fn rows(out: &[RecordBatch]) -> Vec<(String, i64, Option<i64>)> {
        let mut rows = Vec::new();
        for b in out {
            let (k, s, n) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>(), b.column(2));
            let n = n.as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                rows.push((k.value(r).to_string(), s.value(r), n.is_valid(r).then(|| n.value(r))));
            }
        }
        rows
    }

    #[test]
    fn state_is_per_key_and_event_time_timers_fire_in_time_order_once() -> Result<(), OperatorError> {
        let mut op = operator(&[])?;
        let mut out = Vec::new();
        op.process(batch(&[("b", 5, 1), ("a", 1, 10), ("b", 6, 2), ("a", 30, 100)]), &mut out)?;
        assert!(out.is_empty());
        op.on_watermark(14, &mut out)?;
        // a's timer at 11 fired (its state then was 10 + 100 from both records); b's at 15 not yet.
        assert_eq!(rows(&out), vec![("a".to_string(), 110, Some(2))]);
        out.clear();
        op.on_watermark(14, &mut out)?;
        assert!(out.is_empty(), "a watermark that does not advance fires nothing");
        op.process(batch(&[("a", 40, 7)]), &mut out)?;
        op.on_watermark(i64::MAX, &mut out)?;
        assert_eq!(rows(&out), vec![("b".to_string(), 3, Some(2)), ("a".to_string(), 7, Some(1))]);
        Ok(())
    }

    #[test]
    fn processing_time_timers_fire_when_the_clock_passes_them() -> Result<(), OperatorError> {
        let mut op = operator(&[("wall", "true")])?;
        let mut out = Vec::new();
        op.process(batch(&[("x", 1, 1)]), &mut out)?;
        assert_eq!(op.next_timer(), Some(0));
        op.on_processing_time(now_millis(), &mut out)?;
        assert_eq!(rows(&out), vec![("x".to_string(), -1, None)]);
        assert_eq!(op.next_timer(), None);
        Ok(())
    }

    #[test]
    fn bad_settings_and_unknown_operators_are_clear_errors() {
        let error = operator(&[("wall", "maybe")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("config 'wall' = 'maybe' is not valid"), "{error}");
        let spec = CustomOperator { name: "nope".into(), keys: vec!["k".into()], ..Default::default() };
        let input = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)]));
        let subtask = SubtaskInfo { index: 0, parallelism: 1 };
        let backend = Box::new(HeapBackend::default());
        let error = ProcessOperator::new(&spec, &registry(), &input, input.clone(), None, subtask, 128, backend)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("no native operator 'nope' (it has: sum_until)"), "{error}");
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error_not_a_panic() {
        let mut collector = Collector::new(Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)])));
        let error = collector.emit(vec![ScalarValue::from(1i64), ScalarValue::from(2i64)]).err().map(|e| e.to_string());
        assert!(error.unwrap_or_default().contains("a row of 2 values was emitted; the output has 1 columns (a)"));
        // Int32 values go into an INT64 column.
        assert!(collector.emit(vec![ScalarValue::Int32(Some(3))]).is_ok());
        let mut out = Vec::new();
        assert!(collector.drain(&mut out).is_ok());
        assert_eq!(out[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    }
}

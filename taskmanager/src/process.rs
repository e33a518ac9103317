//! Native operators: Rust code compiled into a TaskManager binary, with keyed state and timers (Flink's
//! `KeyedProcessFunction`).
//!
//! A job names the operator in a `custom` vertex (`{"name": ..., "keys": [...], "config": {...}, "output":
//! [...]}`); a TaskManager binary that links this crate registers a factory under that name in an
//! [`OperatorRegistry`] and starts with [`crate::run_with_registry`]. For every record, in arrival order,
//! the operator's [`KeyedProcessFunction::process_element`] runs with the record's key current: state read
//! and written through the [`Context`] is that key's, and timers registered there call
//! [`KeyedProcessFunction::on_timer`] later with the same key current.
//!
//! ```no_run
//! use sluice_taskmanager::process::*;
//!
//! /// Counts records per key and emits each key's count when the watermark passes a minute after its
//! /// first record.
//! struct CountPerMinute {
//!     count: ValueStateHandle<i64>,
//! }
//!
//! impl KeyedProcessFunction for CountPerMinute {
//!     fn process_element(&mut self, record: &Record<'_>, ctx: &mut Context<'_>, _out: &mut Collector)
//!         -> Result<(), OperatorError> {
//!         let count = ctx.value(&self.count)?.unwrap_or(0);
//!         if count == 0 {
//!             ctx.register_event_time_timer(record.timestamp().unwrap_or(0) + 60_000)?;
//!         }
//!         ctx.update_value(&self.count, &(count + 1))
//!     }
//!
//!     fn on_timer(&mut self, _time: i64, _domain: TimeDomain, ctx: &mut Context<'_>, out: &mut Collector)
//!         -> Result<(), OperatorError> {
//!         let mut row = ctx.current_key()?;
//!         row.push(ScalarValue::from(ctx.value(&self.count)?.unwrap_or(0)));
//!         ctx.clear_value(&self.count)?;
//!         out.emit(row)
//!     }
//! }
//!
//! let registry = OperatorRegistry::new().register("count_per_minute", |ctx| {
//!     Ok(Box::new(CountPerMinute { count: ctx.value_state("count", None)? }))
//! });
//! ```
//!
//! What the runtime guarantees:
//! - State and timers are per key and live in the job's state backend (heap or RocksDB), so they take
//!   part in whatever the backend does (snapshots).
//! - Event-time timers fire in time order when the watermark reaches their time (all of them at the end of
//!   a bounded input); processing-time timers fire when the wall clock does. A timer is registered once
//!   per (key, time, domain): registering it again is a no-op.
//! - Records arrive in the order the network delivers them, which for a key fed by several upstream
//!   subtasks is not event-time order. A function whose answer must not depend on that order buffers
//!   records in list state and handles them in an event-time timer (the example in
//!   `examples/src/fraud.rs` does).
//! - An error returned from any call fails the task with the message, naming the vertex.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
pub use datafusion::common::ScalarValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::{CustomOperator, OperatorSnapshot};

pub use crate::operators::{Operator, OperatorError, SubtaskInfo};
use crate::state::{
    split_state_key, time_bytes, time_from_bytes, KeyedStateBackend, ListState, MapState, StateId, StateKey, Ttl,
    ValueState,
};
use crate::time::{now_millis, timestamps_of};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the wall clock (ms since the epoch) reaches the timer's time.
    ProcessingTime,
}

/// A keyed operator written in Rust. See the module docs.
pub trait KeyedProcessFunction: Send {
    /// Handles one record; its key is the current key of `ctx`.
    fn process_element(
        &mut self,
        record: &Record<'_>,
        ctx: &mut Context<'_>,
        out: &mut Collector,
    ) -> Result<(), OperatorError>;

    /// A timer this function registered for the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut Context<'_>,
        _out: &mut Collector,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

type Factory = dyn Fn(&mut OpenContext<'_>) -> Result<Box<dyn KeyedProcessFunction>, OperatorError> + Send + Sync;

/// The native operators a TaskManager binary offers, by the name `custom` vertices use.
#[derive(Clone, Default)]
pub struct OperatorRegistry {
    factories: HashMap<String, Arc<Factory>>,
}

impl OperatorRegistry {
    /// An empty registry (what the stock `sluice-taskmanager` runs with).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`. It runs once per subtask, declares the function's state through
    /// the [`OpenContext`] and reads its settings there; an error fails the task.
    pub fn register<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(&mut OpenContext<'_>) -> Result<Box<dyn KeyedProcessFunction>, OperatorError> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn factory(&self, name: &str) -> Result<Arc<Factory>, OperatorError> {
        self.factories.get(name).cloned().ok_or_else(|| {
            let names = self.names();
            OperatorError::new(format!(
                "this TaskManager has no native operator '{name}' ({}); start a TaskManager binary that registers it",
                if names.is_empty() {
                    "it registers none".to_string()
                } else {
                    format!("it has: {}", names.join(", "))
                }
            ))
        })
    }
}

/// Per-key state a function declared: typed handles over the byte-level states, values encoded as JSON.
#[derive(Clone, Copy, Debug)]
pub struct ValueStateHandle<T> {
    index: usize,
    _type: PhantomData<fn() -> T>,
}

/// A list per key; see [`ValueStateHandle`].
#[derive(Clone, Copy, Debug)]
pub struct ListStateHandle<T> {
    index: usize,
    _type: PhantomData<fn() -> T>,
}

/// A map per key; see [`ValueStateHandle`].
#[derive(Clone, Copy, Debug)]
pub struct MapStateHandle<K, V> {
    index: usize,
    _type: PhantomData<fn() -> (K, V)>,
}

/// What a factory sees: the vertex's settings, the subtask, and where it declares state.
pub struct OpenContext<'a> {
    config: &'a BTreeMap<String, String>,
    subtask: SubtaskInfo,
    env: &'a mut Env,
}

impl OpenContext<'_> {
    /// The setting `name` of the vertex's `config`.
    pub fn config(&self, name: &str) -> Option<&str> {
        self.config.get(name).map(String::as_str)
    }

    /// The setting `name` parsed as `T`, or `default` when absent; a value that does not parse is an error
    /// naming the setting.
    pub fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, OperatorError>
    where
        T::Err: std::fmt::Display,
    {
        match self.config(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|e| OperatorError::new(format!("config '{name}' = '{text}' is not valid: {e}"))),
        }
    }

    /// Which subtask of the vertex this is.
    pub fn subtask(&self) -> SubtaskInfo {
        self.subtask
    }

    /// Declares a value per key, expiring `ttl` (processing time) after its last write when given.
    pub fn value_state<T>(&mut self, name: &str, ttl: Option<Duration>) -> Result<ValueStateHandle<T>, OperatorError> {
        let state = ValueState::new(self.env.backend.as_mut(), &user_state(name), ttl_of(ttl))?;
        self.env.values.push(state);
        Ok(ValueStateHandle { index: self.env.values.len() - 1, _type: PhantomData })
    }

    /// Declares a list per key.
    pub fn list_state<T>(&mut self, name: &str) -> Result<ListStateHandle<T>, OperatorError> {
        let state = ListState::new(self.env.backend.as_mut(), &user_state(name))?;
        self.env.lists.push(state);
        Ok(ListStateHandle { index: self.env.lists.len() - 1, _type: PhantomData })
    }

    /// Declares a map per key, its entries expiring `ttl` after their last write when given.
    pub fn map_state<K, V>(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<MapStateHandle<K, V>, OperatorError> {
        let state = MapState::new(self.env.backend.as_mut(), &user_state(name), ttl_of(ttl))?;
        self.env.maps.push(state);
        Ok(MapStateHandle { index: self.env.maps.len() - 1, _type: PhantomData })
    }
}

/// User states live beside the runtime's own (timers) under a prefix no runtime state uses.
fn user_state(name: &str) -> String {
    format!("user.{name}")
}

fn ttl_of(ttl: Option<Duration>) -> Option<Ttl> {
    ttl.map(|d| Ttl { millis: i64::try_from(d.as_millis()).unwrap_or(i64::MAX) })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, OperatorError> {
    serde_json::to_vec(value).map_err(|e| OperatorError::new(format!("cannot encode a state value: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OperatorError> {
    serde_json::from_slice(bytes).map_err(|e| OperatorError::new(format!("cannot decode a state value: {e}")))
}

/// The keyed runtime behind a function: its backend, states, timers and current key.
struct Env {
    backend: Box<dyn KeyedStateBackend>,
    values: Vec<ValueState>,
    lists: Vec<ListState>,
    maps: Vec<MapState>,
    /// Timers as stored: `current key | domain | time`, value empty; mirrored in the two sets below.
    timers: StateId,
    event_timers: BTreeSet<(i64, Vec<u8>)>,
    processing_timers: BTreeSet<(i64, Vec<u8>)>,
    /// The current key (key group and key, no namespace).
    key: StateKey,
    /// The current key as the key columns' Arrow row bytes' converter.
    converter: RowConverter,
    watermark: i64,
    scratch: Vec<u8>,
}

impl Env {
    fn timer_key(&mut self, domain: TimeDomain, time: i64) -> &[u8] {
        self.key.set_namespace(&[]);
        self.scratch.clear();
        self.scratch.extend_from_slice(self.key.as_bytes());
        self.scratch.push(match domain {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        });
        self.scratch.extend_from_slice(&time_bytes(time));
        &self.scratch
    }

    fn timer_set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }

    fn register_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), OperatorError> {
        let entry = (time, self.key.key_prefix().to_vec());
        if self.timer_set(domain).insert(entry) {
            let timers = self.timers;
            let stored = self.timer_key(domain, time).to_vec();
            self.backend.put(timers, &stored, &[])?;
        }
        Ok(())
    }

    fn delete_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), OperatorError> {
        let entry = (time, self.key.key_prefix().to_vec());
        if self.timer_set(domain).remove(&entry) {
            let timers = self.timers;
            let stored = self.timer_key(domain, time).to_vec();
            self.backend.delete(timers, &stored)?;
        }
        Ok(())
    }

    /// Takes the earliest timer of `domain` due at `time`, makes its key current and removes it.
    fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<i64>, OperatorError> {
        let set = self.timer_set(domain);
        match set.first() {
            Some((at, _)) if *at <= time => {}
            _ => return Ok(None),
        }
        let Some((at, key)) = set.pop_first() else { return Ok(None) };
        self.key.set_full(&key);
        let timers = self.timers;
        let stored = self.timer_key(domain, at).to_vec();
        self.backend.delete(timers, &stored)?;
        Ok(Some(at))
    }
}

/// A record handed to [`KeyedProcessFunction::process_element`]: one row of an Arrow batch.
pub struct Record<'a> {
    batch: &'a RecordBatch,
    row: usize,
    timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// The batch the record is a row of (for vectorized access).
    pub fn batch(&self) -> &'a RecordBatch {
        self.batch
    }

    /// The record's row in [`Record::batch`].
    pub fn row(&self) -> usize {
        self.row
    }

    /// The record's event time in ms, when its input has an event-time column.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    fn column(&self, name: &str) -> Result<&'a ArrayRef, OperatorError> {
        let index = self.batch.schema_ref().index_of(name)?;
        Ok(self.batch.column(index))
    }

    /// The value of column `name`.
    pub fn value(&self, name: &str) -> Result<ScalarValue, OperatorError> {
        ScalarValue::try_from_array(self.column(name)?, self.row).map_err(|e| OperatorError::new(e.to_string()))
    }

    /// An integer or timestamp column's value as i64 (None when null).
    pub fn i64(&self, name: &str) -> Result<Option<i64>, OperatorError> {
        let column = self.column(name)?;
        if column.is_null(self.row) {
            return Ok(None);
        }
        let column =
            if column.data_type() == &DataType::Int64 { column.clone() } else { cast(column, &DataType::Int64)? };
        Ok(Some(column.as_primitive::<Int64Type>().value(self.row)))
    }

    /// A numeric column's value as f64 (None when null).
    pub fn f64(&self, name: &str) -> Result<Option<f64>, OperatorError> {
        let column = self.column(name)?;
        if column.is_null(self.row) {
            return Ok(None);
        }
        let column = cast(column, &DataType::Float64)?;
        Ok(Some(column.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(self.row)))
    }

    /// A string column's value (None when null).
    pub fn str(&self, name: &str) -> Result<Option<&'a str>, OperatorError> {
        let column = self.column(name)?;
        let strings = column
            .as_string_opt::<i32>()
            .ok_or_else(|| OperatorError::new(format!("column '{name}' is {}, not a string", column.data_type())))?;
        Ok((!strings.is_null(self.row)).then(|| strings.value(self.row)))
    }
}

/// The current key's view of state, timers and time, for one call of the function.
pub struct Context<'a> {
    env: &'a mut Env,
    timestamp: Option<i64>,
}

impl Context<'_> {
    /// The current record's event time, or in [`KeyedProcessFunction::on_timer`] the timer's time.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The operator's current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.env.watermark
    }

    /// The wall clock, in ms since the epoch.
    pub fn current_processing_time(&self) -> i64 {
        now_millis()
    }

    /// The current key: the values of the vertex's key columns, in their order.
    pub fn current_key(&self) -> Result<Vec<ScalarValue>, OperatorError> {
        let (_, key, _) = split_state_key(self.env.key.as_bytes())
            .ok_or_else(|| OperatorError::new("the current key is malformed"))?;
        let parser = self.env.converter.parser();
        let columns = self.env.converter.convert_rows([parser.parse(key)])?;
        columns
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0).map_err(|e| OperatorError::new(e.to_string())))
            .collect()
    }

    /// Calls `on_timer` for the current key once the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: i64) -> Result<(), OperatorError> {
        self.env.register_timer(TimeDomain::EventTime, time)
    }

    /// Calls `on_timer` for the current key once the wall clock reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: i64) -> Result<(), OperatorError> {
        self.env.register_timer(TimeDomain::ProcessingTime, time)
    }

    pub fn delete_event_time_timer(&mut self, time: i64) -> Result<(), OperatorError> {
        self.env.delete_timer(TimeDomain::EventTime, time)
    }

    pub fn delete_processing_time_timer(&mut self, time: i64) -> Result<(), OperatorError> {
        self.env.delete_timer(TimeDomain::ProcessingTime, time)
    }

    /// The current key's value.
    pub fn value<T: DeserializeOwned>(&mut self, state: &ValueStateHandle<T>) -> Result<Option<T>, OperatorError> {
        let Env { backend, values, key, .. } = &mut *self.env;
        let value = values.get_mut(state.index).ok_or_else(unknown_state)?;
        value.get(backend.as_mut(), key.key_prefix(), now_millis())?.map(decode).transpose()
    }

    pub fn update_value<T: Serialize>(&mut self, state: &ValueStateHandle<T>, value: &T) -> Result<(), OperatorError> {
        let bytes = encode(value)?;
        let Env { backend, values, key, .. } = &mut *self.env;
        let slot = values.get_mut(state.index).ok_or_else(unknown_state)?;
        Ok(slot.put(backend.as_mut(), key.key_prefix(), &bytes, now_millis())?)
    }

    pub fn clear_value<T>(&mut self, state: &ValueStateHandle<T>) -> Result<(), OperatorError> {
        let Env { backend, values, key, .. } = &mut *self.env;
        Ok(values.get_mut(state.index).ok_or_else(unknown_state)?.clear(backend.as_mut(), key.key_prefix())?)
    }

    /// The current key's list, in the order added.
    pub fn list<T: DeserializeOwned>(&mut self, state: &ListStateHandle<T>) -> Result<Vec<T>, OperatorError> {
        let Env { backend, lists, key, .. } = &mut *self.env;
        let list = lists.get_mut(state.index).ok_or_else(unknown_state)?;
        list.get(backend.as_mut(), key.key_prefix())?.iter().map(|bytes| decode(bytes)).collect()
    }

    pub fn add_to_list<T: Serialize>(&mut self, state: &ListStateHandle<T>, element: &T) -> Result<(), OperatorError> {
        let bytes = encode(element)?;
        let Env { backend, lists, key, .. } = &mut *self.env;
        Ok(lists.get_mut(state.index).ok_or_else(unknown_state)?.add(backend.as_mut(), key.key_prefix(), &bytes)?)
    }

    pub fn clear_list<T>(&mut self, state: &ListStateHandle<T>) -> Result<(), OperatorError> {
        let Env { backend, lists, key, .. } = &mut *self.env;
        Ok(lists.get_mut(state.index).ok_or_else(unknown_state)?.clear(backend.as_mut(), key.key_prefix())?)
    }

    /// The current key's entry `entry` of a map.
    pub fn map_get<K: Serialize, V: DeserializeOwned>(
        &mut self,
        state: &MapStateHandle<K, V>,
        entry: &K,
    ) -> Result<Option<V>, OperatorError> {
        let user_key = encode(entry)?;
        let Env { backend, maps, key, .. } = &mut *self.env;
        let map = maps.get_mut(state.index).ok_or_else(unknown_state)?;
        map.get(backend.as_mut(), key.key_prefix(), &user_key, now_millis())?.as_deref().map(decode).transpose()
    }

    pub fn map_put<K: Serialize, V: Serialize>(
        &mut self,
        state: &MapStateHandle<K, V>,
        entry: &K,
        value: &V,
    ) -> Result<(), OperatorError> {
        let (user_key, bytes) = (encode(entry)?, encode(value)?);
        let Env { backend, maps, key, .. } = &mut *self.env;
        let map = maps.get_mut(state.index).ok_or_else(unknown_state)?;
        Ok(map.put(backend.as_mut(), key.key_prefix(), &user_key, &bytes, now_millis())?)
    }

    pub fn map_remove<K: Serialize, V>(
        &mut self,
        state: &MapStateHandle<K, V>,
        entry: &K,
    ) -> Result<(), OperatorError> {
        let user_key = encode(entry)?;
        let Env { backend, maps, key, .. } = &mut *self.env;
        Ok(maps.get_mut(state.index).ok_or_else(unknown_state)?.remove(
            backend.as_mut(),
            key.key_prefix(),
            &user_key,
        )?)
    }

    /// The current key's map entries (in the order of their encoded keys).
    pub fn map_entries<K: DeserializeOwned, V: DeserializeOwned>(
        &mut self,
        state: &MapStateHandle<K, V>,
    ) -> Result<Vec<(K, V)>, OperatorError> {
        let Env { backend, maps, key, .. } = &mut *self.env;
        let map = maps.get_mut(state.index).ok_or_else(unknown_state)?;
        map.entries(backend.as_mut(), key.key_prefix(), now_millis())?
            .iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }
}

fn unknown_state() -> OperatorError {
    OperatorError::new("a state handle of another operator was used")
}

/// Where a function's output rows go; turned into one Arrow batch per call of the function.
pub struct Collector {
    schema: SchemaRef,
    rows: Vec<Vec<ScalarValue>>,
    batches: Vec<RecordBatch>,
}

impl Collector {
    fn new(schema: SchemaRef) -> Self {
        Self { schema, rows: Vec::new(), batches: Vec::new() }
    }

    /// The operator's output schema (its `output` columns).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Emits one row: a value per output column, in order. Values are cast to the columns' types where Arrow
    /// can (an Int32 into an INT64 column); [`ScalarValue::Null`] is a null of the column's type.
    pub fn emit(&mut self, row: Vec<ScalarValue>) -> Result<(), OperatorError> {
        if row.len() != self.schema.fields().len() {
            return Err(OperatorError::new(format!(
                "a row of {} values was emitted; the output has {} columns ({})",
                row.len(),
                self.schema.fields().len(),
                self.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        self.rows.push(row);
        Ok(())
    }

    /// Emits a whole batch, which must have the output schema's column types.
    pub fn emit_batch(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        self.flush_rows()?;
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?;
        self.batches.push(batch);
        Ok(())
    }

    fn flush_rows(&mut self) -> Result<(), OperatorError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let typed_null = ScalarValue::try_from(field.data_type()).map_err(|e| OperatorError::new(e.to_string()))?;
            let values = rows.iter().map(|row| if row[i].is_null() { typed_null.clone() } else { row[i].clone() });
            let array = ScalarValue::iter_to_array(values).map_err(|e| {
                OperatorError::new(format!("column '{}' got values of different types: {e}", field.name()))
            })?;
            columns.push(if array.data_type() == field.data_type() { array } else { cast(&array, field.data_type())? });
        }
        self.batches.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.flush_rows()?;
        out.append(&mut self.batches);
        Ok(())
    }
}

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
        crate::operators::restore_keyed(self.env.backend.as_mut(), snapshots, key_groups)?;
        // Stored timers are `key | domain (0 event time, 1 processing time) | time`.
        self.env.event_timers.clear();
        self.env.processing_timers.clear();
        for stored in crate::operators::stored_keys(self.env.backend.as_mut(), self.env.timers)? {
            let parsed = stored.len().checked_sub(9).and_then(|at| Some((at, time_from_bytes(&stored[at + 1..])?)));
            let Some((at, time)) = parsed else {
                return Err(OperatorError::new("a stored timer is malformed; the snapshot is corrupt"));
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
        hash_key_columns(&keys, &mut self.hashes).map_err(|e| OperatorError::new(e.to_string()))?;
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
    use super::*;
    use crate::state::HeapBackend;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

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
        let error = operator(&[("wall", "maybe")]).err().map(|e| e.0).unwrap_or_default();
        assert!(error.contains("config 'wall' = 'maybe' is not valid"), "{error}");
        let spec = CustomOperator { name: "nope".into(), keys: vec!["k".into()], ..Default::default() };
        let input = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)]));
        let subtask = SubtaskInfo { index: 0, parallelism: 1 };
        let backend = Box::new(HeapBackend::default());
        let error = ProcessOperator::new(&spec, &registry(), &input, input.clone(), None, subtask, 128, backend)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(error.contains("no native operator 'nope' (it has: sum_until)"), "{error}");
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error_not_a_panic() {
        let mut collector = Collector::new(Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)])));
        let error = collector.emit(vec![ScalarValue::from(1i64), ScalarValue::from(2i64)]).err().map(|e| e.0);
        assert!(error.unwrap_or_default().contains("a row of 2 values was emitted; the output has 1 columns (a)"));
        // Int32 values go into an INT64 column.
        assert!(collector.emit(vec![ScalarValue::Int32(Some(3))]).is_ok());
        let mut out = Vec::new();
        assert!(collector.drain(&mut out).is_ok());
        assert_eq!(out[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    }
}

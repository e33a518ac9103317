//! Keyed windows: tumbling, sliding and session, on event time or processing time.
//!
//! State: one entry per (key, window) in the keyed state backend, holding the window's partial aggregates
//! ([`Acc`], 16 bytes each, then for each DataFusion aggregate its length-prefixed partial state). Its key is `key group | key | window start | window end`, so all windows of a
//! key are one prefix (sessions scan it to merge).
//!
//! A batch is handled column-at-a-time where it can be: every row's key bytes (Arrow row format), key group
//! and aggregate arguments are computed once per batch; tumbling and sliding windows then fold the batch
//! into one partial result per distinct (key, window) before touching the backend, so the backend sees one
//! read and one write per group and batch rather than per record. Session windows merge record by record.
//!
//! Firing (Flink's event-time trigger with allowed lateness):
//! - a window fires when the watermark reaches its last millisecond (`end - 1`), emitting the key columns,
//!   `window_start`, `window_end` and the aggregates;
//! - its state is kept until the watermark passes `end - 1 + allowed_lateness`; a record arriving in that
//!   span updates the window and fires it again at once (the later row supersedes the earlier);
//! - a record whose windows are all past that point is late: it goes to the side output "late" and is
//!   counted, never folded into a result.
//!
//! Processing-time windows use the wall clock for both the records' times and the firing; at the end of a
//! bounded input they fire whatever they hold. Timers live on the heap, ordered by time.
use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use prometheus::Histogram;
use sluice_common::expr::{pair_schema, CompiledExpr, ExprCompiler};
use sluice_common::job::LATE_SIDE_OUTPUT;
use sluice_common::keygroup::{hash_key_columns, key_group_of};
use sluice_common::proto::{window::Assigner, Reduce, TimeDomain, Window};

use super::accumulate::{evaluate, Acc, AggregateFn, ACC_BYTES};
use super::{Operator, OperatorError};
use crate::state::{
    key_group_of_state_key, split_state_key, time_bytes, time_from_bytes, KeyedStateBackend, StateError, StateId,
    StateKey,
};
use crate::time::{now_millis, timestamps_of, END_OF_TIME};
use sluice_common::proto::OperatorSnapshot;

impl From<StateError> for OperatorError {
    fn from(e: StateError) -> Self {
        OperatorError(e.to_string())
    }
}

/// How records map to windows.
#[derive(Clone, Copy, Debug)]
enum Assign {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Assign {
    fn of(spec: &Window) -> Result<Self, OperatorError> {
        Ok(match &spec.assigner {
            Some(Assigner::Tumbling(t)) if t.size_ms > 0 => {
                Assign::Tumbling { size: millis(t.size_ms), offset: t.offset_ms }
            }
            Some(Assigner::Sliding(s)) if s.size_ms > 0 && s.slide_ms > 0 => {
                Assign::Sliding { size: millis(s.size_ms), slide: millis(s.slide_ms), offset: s.offset_ms }
            }
            Some(Assigner::Session(s)) if s.gap_ms > 0 => Assign::Session { gap: millis(s.gap_ms) },
            _ => return Err(OperatorError::new("the window has no valid assigner")),
        })
    }

    /// The windows `[start, end)` holding time `t` (for sessions, the record's own window).
    fn windows(self, t: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self {
            Assign::Tumbling { size, offset } => {
                let start = t.saturating_sub(t.wrapping_sub(offset).rem_euclid(size));
                out.push((start, start.saturating_add(size)));
            }
            Assign::Sliding { size, slide, offset } => {
                let mut start = t.saturating_sub(t.wrapping_sub(offset).rem_euclid(slide));
                while start > t.saturating_sub(size) {
                    out.push((start, start.saturating_add(size)));
                    start = start.saturating_sub(slide);
                }
            }
            Assign::Session { gap } => out.push((t, t.saturating_add(gap))),
        }
    }
}

/// Window bounds as namespace bytes, in time order.
fn encode_window(start: i64, end: i64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&time_bytes(start));
    bytes[8..].copy_from_slice(&time_bytes(end));
    bytes
}

fn decode_window(bytes: &[u8]) -> Option<(i64, i64)> {
    if bytes.len() != 16 {
        return None;
    }
    Some((time_from_bytes(&bytes[..8])?, time_from_bytes(&bytes[8..])?))
}

/// A reducing window's fold: the input's non-key columns, an optional `a`/`b` expression for each.
struct Reducer {
    columns: Vec<usize>,
    exprs: Vec<Option<CompiledExpr>>,
    types: Vec<DataType>,
    pair: SchemaRef,
    /// Encodes and decodes a reduced record (one row over the non-key columns).
    converter: RowConverter,
}

impl Reducer {
    fn new(spec: &Reduce, keys: &[usize], input: &SchemaRef) -> Result<Self, OperatorError> {
        let columns: Vec<usize> = (0..input.fields().len()).filter(|c| !keys.contains(c)).collect();
        let compiler = ExprCompiler::new();
        let mut exprs = Vec::with_capacity(columns.len());
        for &c in &columns {
            let name = input.field(c).name();
            exprs.push(match spec.columns.iter().find(|p| p.name == *name) {
                Some(p) => Some(compiler.compile_pair(&p.expr, input)?),
                None => None,
            });
        }
        let types: Vec<DataType> = columns.iter().map(|&c| input.field(c).data_type().clone()).collect();
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(Self { columns, exprs, types, pair: Arc::new(pair_schema(input)), converter })
    }

    /// Row `row` of `batch` as a reduced record (its non-key columns).
    fn record(&self, batch: &RecordBatch, row: usize) -> Vec<ArrayRef> {
        self.columns.iter().map(|&c| batch.column(c).slice(row, 1)).collect()
    }

    /// A record's every input column: its non-key `values`, and the key columns of row `row` of `batch`
    /// (the same key).
    fn full(&self, values: &[ArrayRef], batch: &RecordBatch, row: usize) -> Vec<ArrayRef> {
        let mut full: Vec<ArrayRef> = batch.columns().iter().map(|c| c.slice(row, 1)).collect();
        for (i, &c) in self.columns.iter().enumerate() {
            full[c] = values[i].clone();
        }
        full
    }

    /// `reduce(a, b)` of two one-row records (non-key columns) of the key of row `row` of `batch`.
    fn fold(
        &self,
        a: &[ArrayRef],
        b: &[ArrayRef],
        batch: &RecordBatch,
        row: usize,
    ) -> Result<Vec<ArrayRef>, OperatorError> {
        let columns = self.full(a, batch, row).into_iter().chain(self.full(b, batch, row)).collect();
        let pair = RecordBatch::try_new(self.pair.clone(), columns)?;
        let mut next = Vec::with_capacity(self.columns.len());
        for (i, expr) in self.exprs.iter().enumerate() {
            next.push(match expr {
                Some(expr) => {
                    let value = expr.evaluate(&pair)?;
                    if value.data_type() == &self.types[i] {
                        value
                    } else {
                        cast(&value, &self.types[i])?
                    }
                }
                None => b[i].clone(),
            });
        }
        Ok(next)
    }

    fn encode(&self, record: &[ArrayRef]) -> Result<Vec<u8>, OperatorError> {
        Ok(self.converter.convert_columns(record)?.row(0).as_ref().to_vec())
    }

    fn decode<'a>(&self, records: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>, OperatorError> {
        let parser = self.converter.parser();
        Ok(self.converter.convert_rows(records.map(|r| parser.parse(r)))?)
    }
}

/// A fired window: its full state key, accumulators and DataFusion partial states.
type Fired = (Vec<u8>, Vec<Acc>, Vec<Vec<u8>>);

/// A window's stored value: the accumulators, then each DataFusion partial state with its length (u32 BE).
fn encode_value(accs: &[Acc], states: &[Vec<u8>], out: &mut Vec<u8>) {
    Acc::encode(accs, out);
    for state in states {
        out.extend_from_slice(&(state.len() as u32).to_be_bytes());
        out.extend_from_slice(state);
    }
}

/// Decodes what [`encode_value`] wrote for `n` functions, `generic` of them DataFusion's; a value of another
/// shape is corrupt.
fn decode_value(
    bytes: &[u8],
    (n, generic): (usize, usize),
    accs: &mut Vec<Acc>,
    states: &mut Vec<Vec<u8>>,
) -> Result<(), OperatorError> {
    let fixed = n * ACC_BYTES;
    let corrupt = || OperatorError::new(format!("corrupt window state: {} bytes for {n} aggregates", bytes.len()));
    Acc::decode(bytes.get(..fixed).ok_or_else(corrupt)?, n, accs)?;
    states.clear();
    let mut rest = &bytes[fixed..];
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let length = u32::from_be_bytes(*length) as usize;
        states.push(tail.get(..length).ok_or_else(corrupt)?.to_vec());
        rest = &tail[length..];
    }
    if states.len() != generic {
        return Err(corrupt());
    }
    Ok(())
}

pub struct WindowOp {
    key_columns: Vec<usize>,
    converter: RowConverter,
    assign: Assign,
    /// The event-time column; None for processing time.
    time_column: Option<usize>,
    lateness: i64,
    functions: Vec<AggregateFn>,
    output: SchemaRef,
    max_parallelism: u32,
    backend: Box<dyn KeyedStateBackend>,
    windows: StateId,
    /// (time of the window's last millisecond, full state key): windows to fire.
    fire_timers: BTreeSet<(i64, Vec<u8>)>,
    /// (time after which the state goes, full state key).
    cleanup_timers: BTreeSet<(i64, Vec<u8>)>,
    watermark: i64,
    late: Vec<RecordBatch>,
    late_count: u64,
    // Scratch buffers, reused across batches.
    hashes: Vec<u64>,
    key: StateKey,
    value: Vec<u8>,
    accs: Vec<Acc>,
    assigned: Vec<(i64, i64)>,
    /// The positions in `functions` of DataFusion aggregates (whose partial states are in `states`).
    generic: Vec<usize>,
    /// Scratch: the partial states of the DataFusion aggregates under the current key.
    states: Vec<Vec<u8>>,
    /// Fired (full state key, accumulators, DataFusion partial states) waiting to be turned into a batch.
    fired: Vec<Fired>,
    /// Observes emission wall time minus window end for every row emitted.
    emit_latency: Option<Histogram>,
    /// A reducing window (no aggregates): its reduced record is the single entry of `states`.
    reducer: Option<Reducer>,
    /// Restored windows that had fired before the checkpoint (full state keys): one gets its fire timer back
    /// when a late record updates it (the watermark starts over, so the update is not seen as late). Empty
    /// unless restored, so the common path pays one `is_empty` per update.
    fired_before_restore: BTreeSet<Vec<u8>>,
}

/// The keyed state holding the windows' accumulators.
const WINDOWS_STATE: &str = "windows";

impl WindowOp {
    pub fn new(
        spec: &Window,
        input: &SchemaRef,
        output: SchemaRef,
        event_time_column: Option<&str>,
        max_parallelism: u32,
        mut backend: Box<dyn KeyedStateBackend>,
    ) -> Result<Self, OperatorError> {
        let key_columns = spec.keys.iter().map(|k| input.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        let sort_fields = key_columns.iter().map(|&i| SortField::new(input.field(i).data_type().clone())).collect();
        let time_column = match spec.time() {
            TimeDomain::ProcessingTime => None,
            TimeDomain::EventTime | TimeDomain::Unspecified => {
                let column = event_time_column
                    .ok_or_else(|| OperatorError::new("an event-time window's input has no event-time column"))?;
                Some(input.index_of(column)?)
            }
        };
        let functions = AggregateFn::compile_all(&spec.aggregates, input, &output, key_columns.len() + 2)?;
        let windows = backend.register(WINDOWS_STATE)?;
        let generic: Vec<usize> = (0..functions.len()).filter(|&f| functions[f].generic.is_some()).collect();
        let reducer = spec.reduce.as_ref().map(|r| Reducer::new(r, &key_columns, input)).transpose()?;
        let stored_states = generic.len() + usize::from(reducer.is_some());
        Ok(Self {
            reducer,
            states: vec![Vec::new(); stored_states],
            generic,
            key_columns,
            converter: RowConverter::new(sort_fields)?,
            assign: Assign::of(spec)?,
            time_column,
            lateness: millis(spec.allowed_lateness_ms),
            functions,
            output,
            max_parallelism,
            backend,
            windows,
            fire_timers: BTreeSet::new(),
            cleanup_timers: BTreeSet::new(),
            fired_before_restore: BTreeSet::new(),
            watermark: i64::MIN,
            late: Vec::new(),
            late_count: 0,
            hashes: Vec::new(),
            key: StateKey::default(),
            value: Vec::new(),
            accs: Vec::new(),
            assigned: Vec::new(),
            fired: Vec::new(),
            emit_latency: None,
        })
    }

    /// Records each emitted row's latency (emission wall time minus window end) in `histogram`.
    pub fn with_emit_latency(mut self, histogram: Histogram) -> Self {
        self.emit_latency = Some(histogram);
        self
    }

    /// (aggregates, DataFusion aggregates among them): what a stored value holds.
    fn shape(&self) -> (usize, usize) {
        (self.functions.len(), self.generic.len() + usize::from(self.reducer.is_some()))
    }

    /// Whether state for a window ending at `end` is gone (or would be) at the current watermark.
    fn expired(&self, end: i64) -> bool {
        self.time_column.is_some() && end.saturating_sub(1).saturating_add(self.lateness) <= self.watermark
    }

    /// Whether a window ending at `end` has fired already (a record for it is within allowed lateness).
    fn past_end(&self, end: i64) -> bool {
        self.time_column.is_some() && end.saturating_sub(1) <= self.watermark
    }

    /// Reads the accumulators stored under the current key into `self.accs` and `self.states` (identities
    /// when absent).
    fn load(&mut self) -> Result<bool, OperatorError> {
        if self.backend.get(self.windows, self.key.as_bytes(), &mut self.value)? {
            decode_value(&self.value, self.shape(), &mut self.accs, &mut self.states)?;
            Ok(true)
        } else {
            self.accs.clear();
            self.accs.resize(self.functions.len(), Acc::default());
            self.states.iter_mut().for_each(Vec::clear);
            Ok(false)
        }
    }

    fn store(&mut self) -> Result<(), OperatorError> {
        encode_value(&self.accs, &self.states, &mut self.value);
        self.backend.put(self.windows, self.key.as_bytes(), &self.value)?;
        Ok(())
    }

    /// After the window under the current key was updated: set its timers, or fire it again at once when it
    /// fired already (a late record within the allowed lateness).
    fn after_update(&mut self, end: i64, created: bool) {
        if self.past_end(end) {
            self.fired.push((self.key.as_bytes().to_vec(), self.accs.clone(), self.states.clone()));
        } else if created
            || (!self.fired_before_restore.is_empty() && self.fired_before_restore.remove(self.key.as_bytes()))
        {
            self.fire_timers.insert((end.saturating_sub(1), self.key.as_bytes().to_vec()));
        }
        if created && self.lateness > 0 && self.time_column.is_some() {
            self.cleanup_timers
                .insert((end.saturating_sub(1).saturating_add(self.lateness), self.key.as_bytes().to_vec()));
        }
    }

    /// Fires every window whose last millisecond is at or before `time`, and drops state whose lateness ended.
    fn advance(&mut self, time: i64) -> Result<(), OperatorError> {
        while let Some((at, _)) = self.fire_timers.first() {
            if *at > time {
                break;
            }
            let Some((_, full)) = self.fire_timers.pop_first() else { break };
            if self.backend.get(self.windows, &full, &mut self.value)? {
                let mut states = Vec::new();
                decode_value(&self.value, self.shape(), &mut self.accs, &mut states)?;
                self.fired.push((full.clone(), self.accs.clone(), states));
                if self.lateness == 0 || self.time_column.is_none() {
                    self.backend.delete(self.windows, &full)?;
                }
            }
        }
        while let Some((at, _)) = self.cleanup_timers.first() {
            if *at > time {
                break;
            }
            let Some((_, full)) = self.cleanup_timers.pop_first() else { break };
            self.fired_before_restore.remove(&full);
            self.backend.delete(self.windows, &full)?;
        }
        Ok(())
    }

    /// Turns the fired windows into one output batch.
    fn emit_fired(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if self.fired.is_empty() {
            return Ok(());
        }
        let fired = std::mem::take(&mut self.fired);
        let parser = self.converter.parser();
        let mut rows = Vec::with_capacity(fired.len());
        let mut starts = Vec::with_capacity(fired.len());
        let mut ends = Vec::with_capacity(fired.len());
        for (full, _, _) in &fired {
            let (_, key, namespace) = split_state_key(full)
                .ok_or_else(|| OperatorError::new("corrupt window state: a key without its key group"))?;
            let (start, end) = decode_window(namespace)
                .ok_or_else(|| OperatorError::new("corrupt window state: bad window bounds"))?;
            rows.push(parser.parse(key));
            starts.push(start);
            ends.push(end);
        }
        if let Some(histogram) = &self.emit_latency {
            let now = now_millis();
            for end in &ends {
                histogram.observe(now.saturating_sub(*end).max(0) as f64 / 1000.0);
            }
        }
        let mut columns = self.converter.convert_rows(rows)?;
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        if let Some(reducer) = &self.reducer {
            let reduced = reducer.decode(fired.iter().map(|(_, _, states)| states[0].as_slice()))?;
            columns.extend(reduced);
        }
        for (i, function) in self.functions.iter().enumerate() {
            columns.push(match (&function.generic, self.generic.iter().position(|&g| g == i)) {
                (Some(generic), Some(ordinal)) => {
                    let column = generic.evaluate(fired.iter().map(|(_, _, states)| states[ordinal].as_slice()))?;
                    let wanted = &function.output_type;
                    if column.data_type() == wanted {
                        column
                    } else {
                        cast(&column, wanted)?
                    }
                }
                _ => evaluate(function, fired.iter().map(|(_, accs, _)| accs[i]))?,
            });
        }
        out.push(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }

    /// Folds a batch into tumbling or sliding windows: one partial result per (key, window) of the batch,
    /// then one read and one write per group.
    fn process_aligned(
        &mut self,
        batch: &RecordBatch,
        key_rows: &datafusion::arrow::row::Rows,
        times: &[Option<i64>],
        arguments: &[Option<ArrayRef>],
        late_rows: &mut Vec<u32>,
    ) -> Result<(), OperatorError> {
        let n = self.functions.len();
        let mut groups: HashMap<Vec<u8>, usize, ahash::RandomState> = HashMap::default();
        let mut partials: Vec<Acc> = Vec::new();
        let mut group_ends: Vec<i64> = Vec::new();
        // The rows of each group, for the DataFusion aggregates (which take their input a batch at a time).
        let mut group_rows: Vec<Vec<u32>> = Vec::new();
        for (row, time) in times.iter().enumerate() {
            let Some(t) = *time else {
                late_rows.push(row as u32);
                continue;
            };
            self.assign.windows(t, &mut self.assigned);
            let key_group = key_group_of(self.hashes[row], self.max_parallelism).0 as u16;
            let mut accepted = false;
            for i in 0..self.assigned.len() {
                let (start, end) = self.assigned[i];
                if self.expired(end) {
                    continue;
                }
                accepted = true;
                self.key.set_key(key_group, key_rows.row(row).as_ref()).set_namespace(&encode_window(start, end));
                let group = match groups.get(self.key.as_bytes()) {
                    Some(&group) => group,
                    None => {
                        let group = group_ends.len();
                        groups.insert(self.key.as_bytes().to_vec(), group);
                        partials.resize(partials.len() + n, Acc::default());
                        group_ends.push(end);
                        if !self.generic.is_empty() || self.reducer.is_some() {
                            group_rows.push(Vec::new());
                        }
                        group
                    }
                };
                if let Some(rows) = group_rows.get_mut(group) {
                    rows.push(row as u32);
                }
                for (f, function) in self.functions.iter().enumerate() {
                    partials[group * n + f].update(function.kind, arguments[f].as_ref(), row);
                }
            }
            if !accepted {
                late_rows.push(row as u32);
            }
        }
        let mut by_group: Vec<(&Vec<u8>, usize)> = groups.iter().map(|(k, &g)| (k, g)).collect();
        by_group.sort_unstable_by_key(|&(_, g)| g);
        for (full, group) in by_group {
            self.key.set_full(full);
            let created = !self.load()?;
            for (f, function) in self.functions.iter().enumerate() {
                self.accs[f].merge(function.kind, partials[group * n + f]);
            }
            for (ordinal, &f) in self.generic.iter().enumerate() {
                if let (Some(generic), Some(values), Some(rows)) =
                    (&self.functions[f].generic, &arguments[f], group_rows.get(group))
                {
                    self.states[ordinal] = generic.fold(&self.states[ordinal], values, rows)?;
                }
            }
            if let (Some(reducer), Some(rows)) = (&self.reducer, group_rows.get(group)) {
                // Folded record by record in arrival order: one small evaluation per record.
                let mut rows = rows.iter().map(|&r| r as usize);
                let mut acc = if created {
                    let first = rows.next().ok_or_else(|| OperatorError::new("a window group without records"))?;
                    reducer.record(batch, first)
                } else {
                    reducer.decode(std::iter::once(self.states[0].as_slice()))?
                };
                for row in rows {
                    acc = reducer.fold(&acc, &reducer.record(batch, row), batch, row)?;
                }
                self.states[0] = reducer.encode(&acc)?;
            }
            self.store()?;
            self.after_update(group_ends[group], created);
        }
        Ok(())
    }

    /// Merges each record into its key's sessions, one record at a time.
    fn process_sessions(
        &mut self,
        batch: &RecordBatch,
        key_rows: &datafusion::arrow::row::Rows,
        times: &[Option<i64>],
        arguments: &[Option<ArrayRef>],
        late_rows: &mut Vec<u32>,
    ) -> Result<(), OperatorError> {
        let n = self.functions.len();
        for (row, time) in times.iter().enumerate() {
            let Some(t) = *time else {
                late_rows.push(row as u32);
                continue;
            };
            self.assign.windows(t, &mut self.assigned);
            let Some(&(mut start, mut end)) = self.assigned.first() else { continue };
            let key_group = key_group_of(self.hashes[row], self.max_parallelism).0 as u16;
            self.key.set_key(key_group, key_rows.row(row).as_ref());
            let prefix = self.key.key_prefix().to_vec();
            let mut sessions: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            self.backend.scan_prefix(self.windows, &prefix, &mut |full, value| {
                sessions.push((full.to_vec(), value.to_vec()));
                true
            })?;
            let mut merged = vec![Acc::default(); n];
            for (f, function) in self.functions.iter().enumerate() {
                merged[f].update(function.kind, arguments[f].as_ref(), row);
            }
            let mut merged_states = vec![Vec::new(); self.generic.len()];
            // (The reduced record, if any, is pushed last, after the DataFusion states.)
            for (ordinal, &f) in self.generic.iter().enumerate() {
                if let (Some(generic), Some(values)) = (&self.functions[f].generic, &arguments[f]) {
                    merged_states[ordinal] = generic.fold(&[], values, &[row as u32])?;
                }
            }
            // A reducing window folds the absorbed sessions' records in time order, then this record.
            let mut reduced: Option<Vec<ArrayRef>> = None;
            let mut absorbed = Vec::new();
            let mut stored = Vec::new();
            let mut stored_states = Vec::new();
            for (full, value) in &sessions {
                let (s, e) = decode_window(&full[prefix.len()..])
                    .ok_or_else(|| OperatorError::new("corrupt window state: bad session bounds"))?;
                // Sessions that touch or overlap merge (Flink's TimeWindow.intersects).
                if s <= end && e >= start {
                    start = start.min(s);
                    end = end.max(e);
                    decode_value(value, self.shape(), &mut stored, &mut stored_states)?;
                    for (f, function) in self.functions.iter().enumerate() {
                        merged[f].merge(function.kind, stored[f]);
                    }
                    for (ordinal, &f) in self.generic.iter().enumerate() {
                        if let Some(generic) = &self.functions[f].generic {
                            merged_states[ordinal] = generic.merge(&merged_states[ordinal], &stored_states[ordinal])?;
                        }
                    }
                    if let Some(reducer) = &self.reducer {
                        let record = reducer.decode(std::iter::once(stored_states[0].as_slice()))?;
                        reduced = Some(match reduced {
                            Some(acc) => reducer.fold(&acc, &record, batch, row)?,
                            None => record,
                        });
                    }
                    absorbed.push((full.clone(), e));
                }
            }
            if self.expired(end) {
                late_rows.push(row as u32);
                continue;
            }
            for (full, e) in absorbed {
                self.backend.delete(self.windows, &full)?;
                self.fire_timers.remove(&(e.saturating_sub(1), full.clone()));
                self.cleanup_timers.remove(&(e.saturating_sub(1).saturating_add(self.lateness), full));
            }
            self.key.set_namespace(&encode_window(start, end));
            self.accs = merged;
            self.states = merged_states;
            if let Some(reducer) = &self.reducer {
                let record = reducer.record(batch, row);
                let acc = match reduced {
                    Some(acc) => reducer.fold(&acc, &record, batch, row)?,
                    None => record,
                };
                self.states.push(reducer.encode(&acc)?);
            }
            self.store()?;
            self.after_update(end, true);
        }
        Ok(())
    }
}

impl Operator for WindowOp {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        let key_rows = self.converter.convert_columns(&keys)?;
        hash_key_columns(&keys, &mut self.hashes).map_err(|e| OperatorError::new(e.to_string()))?;
        let times: Vec<Option<i64>> = match self.time_column {
            Some(column) => {
                let times = timestamps_of(batch.column(column))?;
                times.as_primitive::<Int64Type>().iter().collect()
            }
            None => vec![Some(now_millis()); batch.num_rows()],
        };
        let arguments =
            self.functions.iter().map(|f| f.arguments(&batch)).collect::<Result<Vec<_>, OperatorError>>()?;
        let mut late_rows = Vec::new();
        match self.assign {
            Assign::Session { .. } => self.process_sessions(&batch, &key_rows, &times, &arguments, &mut late_rows)?,
            _ => self.process_aligned(&batch, &key_rows, &times, &arguments, &mut late_rows)?,
        }
        if !late_rows.is_empty() {
            self.late_count += late_rows.len() as u64;
            self.late.push(take_record_batch(&batch, &UInt32Array::from(late_rows))?);
        }
        self.emit_fired(out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if self.time_column.is_none() || watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.advance(watermark)?;
        self.emit_fired(out)
    }

    fn next_timer(&self) -> Option<i64> {
        match self.time_column {
            // A window fires once the clock passes its last millisecond.
            None => self.fire_timers.first().map(|(at, _)| at.saturating_add(1)),
            Some(_) => None,
        }
    }

    fn on_processing_time(&mut self, now: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if self.time_column.is_none() {
            self.advance(now.saturating_sub(1))?;
            self.emit_fired(out)?;
        }
        Ok(())
    }

    fn drain_side_output(&mut self, out: &mut Vec<(&'static str, RecordBatch)>) {
        out.extend(self.late.drain(..).map(|batch| (LATE_SIDE_OUTPUT, batch)));
    }

    fn keyed_backend(&mut self) -> Option<&mut dyn crate::state::KeyedStateBackend> {
        Some(self.backend.as_mut())
    }

    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        // Beside the keyed state: the watermark, which says which stored windows have fired (their timers
        // follow from it and from their keys).
        snapshot.operator_state = self.watermark.to_be_bytes().to_vec();
        Ok(())
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        key_groups: RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        super::restore_keyed(self.backend.as_mut(), snapshots, key_groups.clone())?;
        self.fire_timers.clear();
        self.cleanup_timers.clear();
        // As in Flink, event time starts over (the watermark is not restored), and each window gets back the
        // timers it had: a fire timer unless it fired already under its old subtask's watermark, and a
        // cleanup timer when late records may still update it.
        for snapshot in snapshots {
            let watermark =
                <[u8; 8]>::try_from(snapshot.operator_state.as_slice()).map_or(i64::MIN, i64::from_be_bytes);
            for key in snapshot.keyed.iter().filter(|s| s.name == WINDOWS_STATE).flat_map(|s| &s.keys) {
                if !key_group_of_state_key(key).is_some_and(|group| key_groups.contains(&group)) {
                    continue;
                }
                let Some((_, end)) = key.len().checked_sub(16).and_then(|at| decode_window(&key[at..])) else {
                    return Err(OperatorError::new("a stored window key has no window; the snapshot is corrupt"));
                };
                let last = end.saturating_sub(1);
                if last > watermark || self.time_column.is_none() {
                    self.fire_timers.insert((last, key.clone()));
                } else {
                    self.fired_before_restore.insert(key.clone());
                }
                if self.lateness > 0 && self.time_column.is_some() {
                    self.cleanup_timers.insert((last.saturating_add(self.lateness), key.clone()));
                }
            }
        }
        Ok(())
    }

    fn late_records(&self) -> u64 {
        self.late_count
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        // Event-time windows closed when the end-of-time watermark passed; processing-time windows close at
        // the end of a bounded input, so what they hold is not lost.
        if self.time_column.is_none() {
            self.advance(END_OF_TIME)?;
        }
        self.emit_fired(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HeapBackend;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use sluice_common::proto::{AggregateCall, SessionWindow, SlidingWindow, TumblingWindow};

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn output() -> SchemaRef {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time, false),
            Field::new("n", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
        ]))
    }

    fn window(assigner: Assigner, lateness: u64) -> Result<WindowOp, OperatorError> {
        let call = |function: &str, argument: &str, name: &str| AggregateCall {
            function: function.into(),
            argument: argument.into(),
            name: name.into(),
        };
        let spec = Window {
            keys: vec!["word".into()],
            assigner: Some(assigner),
            aggregates: vec![call("count", "", "n"), call("sum", "v", "total")],
            allowed_lateness_ms: lateness,
            ..Default::default()
        };
        WindowOp::new(&spec, &input(), output(), Some("t"), 128, Box::new(HeapBackend::default()))
    }

    fn batch(rows: &[(&str, i64, i64)]) -> Result<RecordBatch, OperatorError> {
        Ok(RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )?)
    }

    /// "word start end n total" per output row, sorted.
    fn rows(out: &[RecordBatch]) -> Vec<String> {
        let mut rows = Vec::new();
        for b in out {
            for r in 0..b.num_rows() {
                let ts = |c: usize| {
                    b.column(c).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().value(r)
                };
                rows.push(format!(
                    "{} {} {} {} {}",
                    b.column(0).as_string::<i32>().value(r),
                    ts(1),
                    ts(2),
                    b.column(3).as_primitive::<Int64Type>().value(r),
                    b.column(4).as_primitive::<Int64Type>().value(r)
                ));
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn tumbling_windows_fire_when_the_watermark_passes_their_end() -> Result<(), OperatorError> {
        let mut op = window(Assigner::Tumbling(TumblingWindow { size_ms: 10, offset_ms: 0 }), 0)?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 1, 1), ("b", 5, 2), ("a", 9, 3), ("a", 10, 4), ("a", -1, 5)])?, &mut out)?;
        op.on_watermark(8, &mut out)?;
        assert_eq!(rows(&out), vec!["a -10 0 1 5"], "only [-10, 0) is complete at watermark 8");
        out.clear();
        op.on_watermark(9, &mut out)?;
        assert_eq!(rows(&out), vec!["a 0 10 2 4", "b 0 10 1 2"]);
        out.clear();
        op.process(batch(&[("a", 3, 100)])?, &mut out)?;
        assert!(out.is_empty());
        let mut side = Vec::new();
        op.drain_side_output(&mut side);
        assert_eq!(side.len(), 1, "a record for a fired window without lateness is late");
        assert_eq!(op.late_records(), 1);
        op.on_watermark(END_OF_TIME, &mut out)?;
        assert_eq!(rows(&out), vec!["a 10 20 1 4"]);
        Ok(())
    }

    #[test]
    fn late_records_within_allowed_lateness_update_and_fire_again() -> Result<(), OperatorError> {
        let mut op = window(Assigner::Tumbling(TumblingWindow { size_ms: 10, offset_ms: 0 }), 5)?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 1, 1)])?, &mut out)?;
        op.on_watermark(12, &mut out)?;
        assert_eq!(rows(&out), vec!["a 0 10 1 1"]);
        out.clear();
        op.process(batch(&[("a", 2, 10)])?, &mut out)?;
        assert_eq!(rows(&out), vec!["a 0 10 2 11"], "within lateness: the window fires again, updated");
        out.clear();
        op.on_watermark(14, &mut out)?;
        op.process(batch(&[("a", 3, 100)])?, &mut out)?;
        assert!(out.is_empty(), "past end - 1 + lateness the window is gone: {out:?}");
        assert_eq!(op.late_records(), 1);
        Ok(())
    }

    #[test]
    fn sliding_windows_count_each_record_in_every_window_holding_it() -> Result<(), OperatorError> {
        let mut op = window(Assigner::Sliding(SlidingWindow { size_ms: 30, slide_ms: 10, offset_ms: 0 }), 0)?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 25, 1), ("a", 31, 2)])?, &mut out)?;
        op.on_watermark(END_OF_TIME, &mut out)?;
        assert_eq!(
            rows(&out),
            vec!["a 0 30 1 1", "a 10 40 2 3", "a 20 50 2 3", "a 30 60 1 2"],
            "25 is in [0,30), [10,40), [20,50); 31 in [10,40), [20,50), [30,60)"
        );
        Ok(())
    }

    #[test]
    fn sessions_merge_when_a_record_bridges_them() -> Result<(), OperatorError> {
        let mut op = window(Assigner::Session(SessionWindow { gap_ms: 10 }), 0)?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 0, 1), ("a", 18, 2), ("b", 5, 7)])?, &mut out)?;
        op.process(batch(&[("a", 9, 4)])?, &mut out)?;
        op.on_watermark(24, &mut out)?;
        assert_eq!(rows(&out), vec!["b 5 15 1 7"], "a's session [0,28) is still open");
        out.clear();
        op.on_watermark(END_OF_TIME, &mut out)?;
        assert_eq!(rows(&out), vec!["a 0 28 3 7"], "9 bridges [0,10) and [18,28)");
        Ok(())
    }

    #[test]
    fn processing_time_windows_fire_on_the_wall_clock_or_at_the_end() -> Result<(), OperatorError> {
        let spec = Window {
            keys: vec!["word".into()],
            assigner: Some(Assigner::Tumbling(TumblingWindow { size_ms: 60_000, offset_ms: 0 })),
            time: TimeDomain::ProcessingTime as i32,
            aggregates: vec![AggregateCall { function: "count".into(), argument: String::new(), name: "n".into() }],
            ..Default::default()
        };
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let output = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let mut op = WindowOp::new(&spec, &input(), output, None, 128, Box::new(HeapBackend::default()))?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 0, 1), ("a", 0, 1)])?, &mut out)?;
        let due = op.next_timer().ok_or_else(|| OperatorError::new("no timer"))?;
        op.on_processing_time(due - 1, &mut out)?;
        assert!(out.is_empty(), "not before the window's end");
        op.on_processing_time(due, &mut out)?;
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        assert_eq!(op.next_timer(), None);
        Ok(())
    }

    /// stddev, median and approx_distinct per window, fed in several batches so partial states are stored,
    /// reloaded and (for sessions) merged; compared with the values computed here.
    #[test]
    fn datafusion_aggregates_keep_partial_states_across_batches_and_session_merges() -> Result<(), OperatorError> {
        let call = |function: &str, name: &str| AggregateCall {
            function: function.into(),
            argument: "v".into(),
            name: name.into(),
        };
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let output = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time, false),
            Field::new("sd", DataType::Float64, true),
            Field::new("med", DataType::Int64, true),
            Field::new("distinct", DataType::UInt64, true),
        ]));
        for assigner in [Assigner::Tumbling(TumblingWindow { size_ms: 100, offset_ms: 0 }), session_of(30)] {
            let spec = Window {
                keys: vec!["word".into()],
                assigner: Some(assigner),
                aggregates: vec![call("stddev", "sd"), call("median", "med"), call("approx_distinct", "distinct")],
                ..Default::default()
            };
            let backend = Box::new(HeapBackend::default());
            let mut op = WindowOp::new(&spec, &input(), output.clone(), Some("t"), 128, backend)?;
            let mut out = Vec::new();
            // "a": 2, 4, 4, 4, 5, 5, 7, 9 within [0, 100) (times 50 apart at most 20: one session too),
            // arriving out of order over three batches.
            op.process(batch(&[("a", 10, 4), ("a", 0, 2), ("b", 5, 1)])?, &mut out)?;
            op.process(batch(&[("a", 30, 4), ("a", 20, 4)])?, &mut out)?;
            op.process(batch(&[("a", 40, 5), ("a", 50, 5), ("a", 60, 7), ("a", 70, 9)])?, &mut out)?;
            op.on_watermark(END_OF_TIME, &mut out)?;
            let mut found = Vec::new();
            for b in &out {
                let words = b.column(0).as_string::<i32>();
                let sd = b.column(3).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                let med = b.column(4).as_primitive::<Int64Type>();
                let distinct = b.column(5).as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
                for r in 0..b.num_rows() {
                    let sd =
                        datafusion::arrow::array::Array::is_valid(sd, r).then(|| (sd.value(r) * 1e6).round() / 1e6);
                    found.push((words.value(r).to_string(), sd, med.value(r), distinct.value(r)));
                }
            }
            found.sort_by(|x, y| x.0.cmp(&y.0));
            // Sample standard deviation of 2,4,4,4,5,5,7,9: mean 5, squares 32 over 7.
            let sd_a = ((32.0f64 / 7.0).sqrt() * 1e6).round() / 1e6;
            let expected = vec![("a".to_string(), Some(sd_a), 4, 5), ("b".to_string(), None, 1, 1)];
            assert_eq!(found, expected, "{assigner:?}");
        }
        Ok(())
    }

    fn session_of(gap_ms: u64) -> Assigner {
        Assigner::Session(SessionWindow { gap_ms })
    }

    /// A reducing window folds records pairwise with its expressions, across batches and session merges.
    #[test]
    fn reduce_folds_records_with_pair_expressions() -> Result<(), OperatorError> {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        let output = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("window_start", time.clone(), false),
            Field::new("window_end", time.clone(), false),
            Field::new("t", time, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let projection =
            |name: &str, expr: &str| sluice_common::proto::Projection { name: name.into(), expr: expr.into() };
        // v: the sum; t: the latest time (the default would be the last record's).
        let reduce = Reduce { columns: vec![projection("v", "a.v + b.v"), projection("t", "greatest(a.t, b.t)")] };
        for assigner in [Assigner::Tumbling(TumblingWindow { size_ms: 100, offset_ms: 0 }), session_of(30)] {
            let spec = Window {
                keys: vec!["word".into()],
                assigner: Some(assigner),
                reduce: Some(reduce.clone()),
                ..Default::default()
            };
            let backend = Box::new(HeapBackend::default());
            let mut op = WindowOp::new(&spec, &input(), output.clone(), Some("t"), 128, backend)?;
            let mut out = Vec::new();
            op.process(batch(&[("a", 20, 1), ("a", 0, 2), ("b", 5, 7)])?, &mut out)?;
            op.process(batch(&[("a", 40, 10), ("a", 10, 100)])?, &mut out)?;
            op.on_watermark(END_OF_TIME, &mut out)?;
            let mut found = Vec::new();
            for b in &out {
                let words = b.column(0).as_string::<i32>();
                let t = b.column(3).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
                let v = b.column(4).as_primitive::<Int64Type>();
                found.extend((0..b.num_rows()).map(|r| (words.value(r).to_string(), t.value(r), v.value(r))));
            }
            found.sort();
            assert_eq!(found, vec![("a".to_string(), 40, 113), ("b".to_string(), 5, 7)], "{assigner:?}");
        }
        Ok(())
    }
}

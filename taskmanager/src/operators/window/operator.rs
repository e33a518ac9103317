//! The window operator: routes each batch to its windows ([`super::fold`]), fires them on the watermark or
//! the wall clock, sends late records to the side output, and restores the timers from the stored windows.
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, take, take_record_batch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use prometheus::Histogram;
use sluice_common::job::LATE_SIDE_OUTPUT;
use sluice_common::keygroup::hash_key_columns;
use sluice_common::proto::{OperatorSnapshot, TimeDomain, Window};

use super::assign::{millis, Assign, Slicing};
use super::rank::Ranker;
use super::reduce::Reducer;
use super::stored::{decode_value, decode_window, encode_value, encode_window, Fired, WINDOWS_STATE, WINDOW_BYTES};
use crate::operator_api::{restore, Operator, OperatorError};
use crate::operators::accumulate::{evaluate, Acc, AggregateFn};
use crate::state::{key_group_of_state_key, split_state_key, KeyedStateBackend, StateId, StateKey};
use crate::time::{now_millis, timestamps_of, END_OF_TIME};

/// A keyed window of one vertex; see the [module docs](super).
pub struct WindowOp {
    pub(super) key_columns: Vec<usize>,
    pub(super) converter: RowConverter,
    pub(super) assign: Assign,
    /// A sliding event-time window without lateness whose aggregates merge, kept as slices: state holds one
    /// entry per (key, slice) instead of per (key, window); see [`Slicing`] and [`WindowOp::fire_slices`].
    pub(super) slicing: Option<Slicing>,
    /// The event-time column; None for processing time.
    pub(super) time_column: Option<usize>,
    pub(super) lateness: i64,
    pub(super) functions: Vec<AggregateFn>,
    pub(super) output: SchemaRef,
    pub(super) max_parallelism: u32,
    pub(super) backend: Box<dyn KeyedStateBackend>,
    pub(super) windows: StateId,
    /// (time of the window's last millisecond, full state key): windows to fire.
    pub(super) fire_timers: BTreeSet<(i64, Vec<u8>)>,
    /// (time after which the state goes, full state key). Sliced: every stored slice, by the last
    /// millisecond of its last window.
    pub(super) cleanup_timers: BTreeSet<(i64, Vec<u8>)>,
    pub(super) watermark: i64,
    pub(super) late: Vec<RecordBatch>,
    pub(super) late_count: u64,
    // Scratch buffers, reused across batches.
    pub(super) hashes: Vec<u64>,
    pub(super) key: StateKey,
    pub(super) value: Vec<u8>,
    pub(super) accs: Vec<Acc>,
    pub(super) assigned: Vec<(i64, i64)>,
    /// The positions in `functions` of DataFusion aggregates (whose partial states are in `states`).
    pub(super) generic: Vec<usize>,
    /// Scratch: the partial states of the DataFusion aggregates under the current key.
    pub(super) states: Vec<Vec<u8>>,
    /// Fired (full state key, accumulators, DataFusion partial states) waiting to be turned into a batch.
    pub(super) fired: Vec<Fired>,
    /// Observes emission wall time minus window end for every row emitted.
    pub(super) emit_latency: Option<Histogram>,
    /// A reducing window (no aggregates): its reduced record is the single entry of `states`.
    pub(super) reducer: Option<Reducer>,
    /// A Top-N window (no aggregates): its kept records are the single entry of `states`.
    pub(super) ranker: Option<Ranker>,
    /// Restored windows that had fired before the checkpoint (full state keys): one gets its fire timer back
    /// when a late record updates it (the watermark starts over, so the update is not seen as late). Empty
    /// unless restored, so the common path pays one `is_empty` per update.
    pub(super) fired_before_restore: BTreeSet<Vec<u8>>,
    /// Scratch: the (time, key) looked up in `fire_timers` by [`Self::surely_absent`].
    pub(super) timer_probe: (i64, Vec<u8>),
    /// Scratch of [`Self::fire_slices`]: the entries a fired window leaves to no later window (key, start).
    obsolete: Vec<(Vec<u8>, i64)>,
}

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
                let column = event_time_column.ok_or_else(|| {
                    OperatorError::configuration("an event-time window's input has no event-time column")
                })?;
                Some(input.index_of(column)?)
            }
        };
        let functions = AggregateFn::compile_all(&spec.aggregates, input, &output, key_columns.len() + 2)?;
        let windows = backend.register(WINDOWS_STATE)?;
        let generic: Vec<usize> = (0..functions.len()).filter(|&f| functions[f].generic.is_some()).collect();
        let reducer = spec.reduce.as_ref().map(|r| Reducer::new(r, &key_columns, input)).transpose()?;
        let ranker = spec.top_n.as_ref().map(|t| Ranker::new(t, &key_columns, input)).transpose()?;
        let stored_states = generic.len() + usize::from(reducer.is_some() || ranker.is_some());
        let assign = Assign::of(spec)?;
        let lateness = millis(spec.allowed_lateness_ms);
        // Sliced where merging slices gives exactly the windows: on event time without lateness (a late record
        // would fire every fired window of its slice again), with aggregates that merge (a reduction and a
        // Top-N fold records in order).
        let slicing = Slicing::of(assign)
            .filter(|_| time_column.is_some() && lateness == 0 && reducer.is_none() && ranker.is_none());
        Ok(Self {
            reducer,
            ranker,
            states: vec![Vec::new(); stored_states],
            generic,
            key_columns,
            converter: RowConverter::new(sort_fields)?,
            assign,
            slicing,
            time_column,
            lateness,
            functions,
            output,
            max_parallelism,
            backend,
            windows,
            fire_timers: BTreeSet::new(),
            cleanup_timers: BTreeSet::new(),
            fired_before_restore: BTreeSet::new(),
            timer_probe: (0, Vec::new()),
            obsolete: Vec::new(),
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
    pub(super) fn shape(&self) -> (usize, usize) {
        (self.functions.len(), self.generic.len() + usize::from(self.reducer.is_some() || self.ranker.is_some()))
    }

    /// Whether state for a window ending at `end` is gone (or would be) at the current watermark.
    pub(super) fn expired(&self, end: i64) -> bool {
        self.time_column.is_some() && end.saturating_sub(1).saturating_add(self.lateness) <= self.watermark
    }

    /// Whether a window ending at `end` has fired already (a record for it is within allowed lateness).
    pub(super) fn past_end(&self, end: i64) -> bool {
        self.time_column.is_some() && end.saturating_sub(1) <= self.watermark
    }

    /// Reads the accumulators stored under the current key into `self.accs` and `self.states` (identities
    /// when absent).
    pub(super) fn load(&mut self) -> Result<bool, OperatorError> {
        if self.backend.get(self.windows, self.key.as_bytes(), &mut self.value)? {
            decode_value(&self.value, self.shape(), &mut self.accs, &mut self.states)?;
            Ok(true)
        } else {
            self.clear_loaded();
            Ok(false)
        }
    }

    /// Sets `self.accs` and `self.states` to the identities: a window with nothing in it yet.
    pub(super) fn clear_loaded(&mut self) {
        self.accs.clear();
        self.accs.resize(self.functions.len(), Acc::default());
        self.states.iter_mut().for_each(Vec::clear);
    }

    /// Whether the window ending at `end` under the current key is known to have no stored state, without
    /// reading the backend. A window that has not fired is stored exactly when it has a fire timer (timers are
    /// set when a window is created and rebuilt from the stored windows on restore; an unfired window
    /// leaves the state only when it fires); one that fired may be kept for late records, and one restored
    /// as fired has no timer. A window's first update is spared a point read that RocksDB answers only after its
    /// bloom filters and index blocks (q5 on RocksDB: reads from 32 % to 13 % of the CPU).
    ///
    /// Sliced, `end` is the slice's: a slice is stored exactly when its deletion is scheduled in
    /// `cleanup_timers` (set when it is created, rebuilt on restore, removed when it is deleted).
    pub(super) fn surely_absent(&mut self, end: i64) -> bool {
        if let Some(slicing) = self.slicing {
            let last = slicing.last_end(end.saturating_sub(slicing.slide));
            return !self.probe(last.saturating_sub(1), Timers::Cleanup);
        }
        if self.past_end(end) || self.fired_before_restore.contains(self.key.as_bytes()) {
            return false;
        }
        !self.probe(end.saturating_sub(1), Timers::Fire)
    }

    /// Whether `timers` hold (`at`, the current key).
    fn probe(&mut self, at: i64, timers: Timers) -> bool {
        // The sets are keyed by (time, owned key): the probe reuses one buffer rather than copy the key anew.
        self.timer_probe.0 = at;
        self.timer_probe.1.clear();
        self.timer_probe.1.extend_from_slice(self.key.as_bytes());
        match timers {
            Timers::Fire => self.fire_timers.contains(&self.timer_probe),
            Timers::Cleanup => self.cleanup_timers.contains(&self.timer_probe),
        }
    }

    pub(super) fn store(&mut self) -> Result<(), OperatorError> {
        encode_value(&self.accs, &self.states, &mut self.value);
        self.backend.put(self.windows, self.key.as_bytes(), &self.value)?;
        Ok(())
    }

    /// After the window under the current key was updated: set its timers, or fire it again at once when it
    /// fired already (a late record within the allowed lateness). Sliced, `end` is the slice's: a new slice
    /// schedules its deletion and the first of its windows that has not fired (the others follow as each
    /// fires, [`Self::fire_slices`]).
    pub(super) fn after_update(&mut self, end: i64, created: bool) {
        if let Some(slicing) = self.slicing {
            if created {
                self.schedule_slice(slicing, self.key.as_bytes().to_vec(), end, self.watermark);
            }
            return;
        }
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

    /// Schedules the stored slice `key` (key group, key, then the bounds of the slice ending at `end`): its
    /// deletion after the last window that holds it, and the first of its windows not fired at `watermark`
    /// (the others follow as each fires, [`Self::fire_slices`]).
    fn schedule_slice(&mut self, slicing: Slicing, key: Vec<u8>, end: i64, watermark: i64) {
        if let Some(window_end) = slicing.first_window_after(end, watermark) {
            let prefix = key.len().saturating_sub(WINDOW_BYTES);
            self.fire_timers.insert((window_end.saturating_sub(1), window_key(&key[..prefix], slicing, window_end)));
        }
        let start = end.saturating_sub(slicing.slide);
        self.cleanup_timers.insert((slicing.last_end(start).saturating_sub(1), key));
    }

    /// Fires every window whose last millisecond is at or before `time`, and drops state whose lateness ended.
    fn advance(&mut self, time: i64) -> Result<(), OperatorError> {
        while let Some((at, _)) = self.fire_timers.first() {
            if *at > time {
                break;
            }
            let Some((_, full)) = self.fire_timers.pop_first() else { break };
            if let Some(slicing) = self.slicing {
                self.fire_slices(slicing, full)?;
                continue;
            }
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

    /// Fires the window `full` (key and bounds) of a sliced window: merges what its key stores within the
    /// window's bounds (its slices; a whole window stored before slicing, restored, counts as well), deletes
    /// what no later window holds, and schedules the key's next window when a slice of this one lies in it too.
    /// A window without any stored entry emits nothing.
    fn fire_slices(&mut self, slicing: Slicing, full: Vec<u8>) -> Result<(), OperatorError> {
        let corrupt = || OperatorError::input("corrupt window state: bad window bounds");
        let at = full.len().checked_sub(WINDOW_BYTES).ok_or_else(corrupt)?;
        let (start, end) = decode_window(&full[at..]).ok_or_else(corrupt)?;
        let next_start = start.saturating_add(slicing.slide);
        let shape = self.shape();
        let (functions, generic) = (&self.functions, &self.generic);
        // The merged values go to `fired`, which owns them; the decode buffers are the (free while windows
        // fire) per-key scratch.
        let mut accs = vec![Acc::default(); functions.len()];
        let mut states = vec![Vec::new(); generic.len()];
        let (stored, stored_states) = (&mut self.accs, &mut self.states);
        let (mut found, mut continues, mut failed) = (false, false, None);
        let obsolete = &mut self.obsolete;
        obsolete.clear();
        // A key's entries scan in the order of their starts.
        self.backend.scan_prefix(self.windows, &full[..at], &mut |key, value| {
            let Some((s, e)) = key.get(at..).and_then(decode_window) else {
                failed = Some(corrupt());
                return false;
            };
            if s >= end {
                return false;
            }
            if s < start || e > end {
                return true;
            }
            let merged = decode_value(value, shape, stored, stored_states).and_then(|()| {
                for (f, function) in functions.iter().enumerate() {
                    accs[f].merge(function.kind, stored[f]);
                }
                for (ordinal, &f) in generic.iter().enumerate() {
                    if let Some(aggregate) = &functions[f].generic {
                        states[ordinal] = aggregate.merge(&states[ordinal], &stored_states[ordinal])?;
                    }
                }
                Ok(())
            });
            if let Err(e) = merged {
                failed = Some(e);
                return false;
            }
            found = true;
            if s < next_start {
                obsolete.push((key.to_vec(), s));
            } else {
                continues = true;
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        for (key, s) in self.obsolete.drain(..) {
            self.backend.delete(self.windows, &key)?;
            self.cleanup_timers.remove(&(slicing.last_end(s).saturating_sub(1), key));
        }
        if continues {
            let next_end = end.saturating_add(slicing.slide);
            self.fire_timers.insert((next_end.saturating_sub(1), window_key(&full[..at], slicing, next_end)));
        }
        if found {
            self.fired.push((full, accs, states));
        }
        Ok(())
    }

    /// Turns the fired windows into one output batch.
    fn emit_fired(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if self.fired.is_empty() {
            return Ok(());
        }
        let fired = std::mem::take(&mut self.fired);
        let mut rows = Vec::with_capacity(fired.len());
        let mut starts = Vec::with_capacity(fired.len());
        let mut ends = Vec::with_capacity(fired.len());
        for (full, _, _) in &fired {
            let (_, key, namespace) = split_state_key(full)
                .ok_or_else(|| OperatorError::input("corrupt window state: a key without its key group"))?;
            let (start, end) = decode_window(namespace)
                .ok_or_else(|| OperatorError::input("corrupt window state: bad window bounds"))?;
            rows.push(key);
            starts.push(start);
            ends.push(end);
        }
        if let Some(histogram) = &self.emit_latency {
            let now = now_millis();
            for end in &ends {
                histogram.observe(now.saturating_sub(*end).max(0) as f64 / 1000.0);
            }
        }
        let mut columns = crate::operator_api::decode_stored_rows(&self.converter, rows)?;
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        if let Some(reducer) = &self.reducer {
            let reduced = reducer.decode(fired.iter().map(|(_, _, states)| states[0].as_slice()))?;
            columns.extend(reduced);
        }
        if let Some(ranker) = &self.ranker {
            // A row per kept record: its window's keys and bounds repeated, then the record.
            let (values, window_of) = ranker.emit(fired.iter().map(|(_, _, states)| states[0].as_slice()))?;
            let window_of = UInt32Array::from(window_of);
            columns = columns.iter().map(|c| take(c, &window_of, None)).collect::<Result<Vec<_>, _>>()?;
            columns.extend(values);
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
}

/// Which timers [`WindowOp::probe`] looks in.
#[derive(Clone, Copy)]
enum Timers {
    Fire,
    Cleanup,
}

/// The state key of the window of `slicing` ending at `end`, under the key `prefix` (key group and key).
fn window_key(prefix: &[u8], slicing: Slicing, end: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + WINDOW_BYTES);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&encode_window(end.saturating_sub(slicing.size), end));
    key
}

impl Operator for WindowOp {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
        let key_rows = self.converter.convert_columns(&keys)?;
        hash_key_columns(&keys, &mut self.hashes).map_err(|e| OperatorError::internal(e.to_string()))?;
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
        restore::restore_keyed(self.backend.as_mut(), snapshots, key_groups.clone())?;
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
                let at = key.len().checked_sub(WINDOW_BYTES);
                let Some((start, end)) = at.and_then(|at| decode_window(&key[at..])) else {
                    return Err(OperatorError::input("a stored window key has no window; the snapshot is corrupt"));
                };
                let last = end.saturating_sub(1);
                if let Some(slicing) = self.slicing {
                    if end.saturating_sub(start) == slicing.slide {
                        self.schedule_slice(slicing, key.clone(), end, watermark);
                    } else if last > watermark {
                        // A whole window stored before the window was sliced: it fires with the slices in it.
                        self.fire_timers.insert((last, key.clone()));
                    } else {
                        // One that fired: without lateness nothing will update it again.
                        self.backend.delete(self.windows, key)?;
                    }
                    continue;
                }
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

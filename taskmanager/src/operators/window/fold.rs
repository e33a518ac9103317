//! Folding a batch into windows. Tumbling and sliding windows fold the batch into one partial result per
//! distinct (key, window) first, so the backend sees one read and one write per group and batch; sessions
//! merge a key's records of the batch into local sessions first, then each into the stored sessions it
//! touches (record by record where lateness could make the order matter).
use std::collections::HashMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::keygroup::key_group_of;

use super::assign::Assign;
use super::operator::WindowOp;
use super::stored::{decode_value, decode_window, encode_window};
use crate::operator_api::OperatorError;
use crate::operators::accumulate::Acc;

impl WindowOp {
    /// Folds a batch into tumbling or sliding windows: one partial result per (key, window) of the batch,
    /// then one read and one write per group (no read for a window its timers say is new). A sliced window
    /// folds each record into its one slice instead, unless every window holding that slice has expired.
    pub(super) fn process_aligned(
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
            match self.slicing {
                Some(slicing) => {
                    let (start, end) = slicing.slice(t);
                    self.assigned.clear();
                    if !self.expired(slicing.last_end(start)) {
                        self.assigned.push((start, end));
                    }
                }
                None => self.assign.windows(t, &mut self.assigned),
            }
            let key_group = key_group_of(self.hashes[row], self.max_parallelism).0 as u16;
            let mut accepted = false;
            for i in 0..self.assigned.len() {
                let (start, end) = self.assigned[i];
                // (A slice was checked above: its windows that fired do not see the record.)
                if self.slicing.is_none() && self.expired(end) {
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
                        if !self.generic.is_empty() || self.reducer.is_some() || self.ranker.is_some() {
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
        let order = self.ranker.as_ref().map(|ranker| ranker.order_rows(batch)).transpose()?;
        for (full, group) in by_group {
            self.key.set_full(full);
            let created = if self.surely_absent(group_ends[group]) {
                self.clear_loaded();
                true
            } else {
                !self.load()?
            };
            if let (Some(ranker), Some(order), Some(rows)) = (&self.ranker, &order, group_rows.get(group)) {
                match ranker.fold(&self.states[0], rows, order, batch)? {
                    Some(kept) => self.states[0] = kept,
                    // None of the records enters: the stored window stands as it was (timers included).
                    None if !created => continue,
                    None => return Err(OperatorError::internal("a new Top-N window kept none of its records")),
                }
            }
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
                    let first = rows.next().ok_or_else(|| OperatorError::internal("a window group without records"))?;
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

    /// Merges a batch into its keys' sessions. A key's records of the batch whose own windows are all still
    /// open (`t + gap - 1` above the watermark) are first merged among themselves into local sessions (their
    /// times sorted), and each local session is merged into the stored ones with one scan, one write and one
    /// deletion per absorbed session: the stored sessions come out the same as record by record (merging is
    /// the connected components of the windows, whatever the order), and none of those records can be late
    /// or fire a window again. A key with any other record (its own window past its end: possibly late, or a
    /// late firing per record) and reducing windows (an order-dependent fold) go record by record, in batch
    /// order, as Flink does. The Nexmark bidders are the case this is for: three bids in four go to one hot
    /// bidder, so a batch holds hundreds of records of one key.
    pub(super) fn process_sessions(
        &mut self,
        batch: &RecordBatch,
        key_rows: &datafusion::arrow::row::Rows,
        times: &[Option<i64>],
        arguments: &[Option<ArrayRef>],
        late_rows: &mut Vec<u32>,
    ) -> Result<(), OperatorError> {
        let Assign::Session { gap } = self.assign else {
            return Err(OperatorError::internal("process_sessions on a window that is not a session window"));
        };
        // Rows by key, and by time within a key (a stable sort: equal times keep their batch order).
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| key_rows.row(a).cmp(&key_rows.row(b)).then(times[a].cmp(&times[b])));
        let mut first = 0;
        while first < order.len() {
            let key = key_rows.row(order[first]);
            let end = first + order[first..].iter().take_while(|&&r| key_rows.row(r) == key).count();
            let mut timed: Vec<(i64, usize)> = Vec::with_capacity(end - first);
            for &row in &order[first..end] {
                match times[row] {
                    Some(t) => timed.push((t, row)),
                    None => late_rows.push(row as u32),
                }
            }
            let key_group = key_group_of(self.hashes[order[first]], self.max_parallelism).0 as u16;
            self.key.set_key(key_group, key.as_ref());
            let prefix = self.key.key_prefix().to_vec();
            let together = self.reducer.is_none() && timed.iter().all(|&(t, _)| !self.past_end(t.saturating_add(gap)));
            if together {
                let mut at = 0;
                while at < timed.len() {
                    let (start, mut session_end) = (timed[at].0, timed[at].0.saturating_add(gap));
                    let mut next = at + 1;
                    while next < timed.len() && timed[next].0 <= session_end {
                        session_end = session_end.max(timed[next].0.saturating_add(gap));
                        next += 1;
                    }
                    let rows: Vec<u32> = timed[at..next].iter().map(|&(_, row)| row as u32).collect();
                    self.merge_into_sessions(&prefix, &rows, (start, session_end), batch, arguments, late_rows)?;
                    at = next;
                }
            } else {
                timed.sort_unstable_by_key(|&(_, row)| row);
                for (t, row) in timed {
                    let own = (t, t.saturating_add(gap));
                    self.merge_into_sessions(&prefix, &[row as u32], own, batch, arguments, late_rows)?;
                }
            }
            first = end;
        }
        // Late rows go to the side output in batch order.
        late_rows.sort_unstable();
        Ok(())
    }

    /// Merges the records `rows` of one key (under `prefix`), whose windows together span `[start, end)`,
    /// with that key's stored sessions they touch or overlap, and stores the result (or calls the records
    /// late when the merged session has expired).
    fn merge_into_sessions(
        &mut self,
        prefix: &[u8],
        rows: &[u32],
        (mut start, mut end): (i64, i64),
        batch: &RecordBatch,
        arguments: &[Option<ArrayRef>],
        late_rows: &mut Vec<u32>,
    ) -> Result<(), OperatorError> {
        let n = self.functions.len();
        let mut sessions: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.backend.scan_prefix(self.windows, prefix, &mut |full, value| {
            sessions.push((full.to_vec(), value.to_vec()));
            true
        })?;
        let mut merged = vec![Acc::default(); n];
        for (f, function) in self.functions.iter().enumerate() {
            for &row in rows {
                merged[f].update(function.kind, arguments[f].as_ref(), row as usize);
            }
        }
        let mut merged_states = vec![Vec::new(); self.generic.len()];
        // (The reduced record, if any, is pushed last, after the DataFusion states.)
        for (ordinal, &f) in self.generic.iter().enumerate() {
            if let (Some(generic), Some(values)) = (&self.functions[f].generic, &arguments[f]) {
                merged_states[ordinal] = generic.fold(&[], values, rows)?;
            }
        }
        // A reducing window folds the absorbed sessions' records in time order, then the records.
        let mut reduced: Option<Vec<ArrayRef>> = None;
        let mut absorbed = Vec::new();
        let mut stored = Vec::new();
        let mut stored_states = Vec::new();
        for (full, value) in &sessions {
            let (s, e) = decode_window(&full[prefix.len()..])
                .ok_or_else(|| OperatorError::input("corrupt window state: bad session bounds"))?;
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
                        Some(acc) => reducer.fold(&acc, &record, batch, rows[0] as usize)?,
                        None => record,
                    });
                }
                absorbed.push((full.clone(), e));
            }
        }
        if self.expired(end) {
            late_rows.extend_from_slice(rows);
            return Ok(());
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
            let mut acc = reduced;
            for &row in rows {
                let record = reducer.record(batch, row as usize);
                acc = Some(match acc {
                    Some(acc) => reducer.fold(&acc, &record, batch, row as usize)?,
                    None => record,
                });
            }
            let acc = acc.ok_or_else(|| OperatorError::internal("a session without records"))?;
            self.states.push(reducer.encode(&acc)?);
        }
        self.store()?;
        self.after_update(end, true);
        Ok(())
    }
}

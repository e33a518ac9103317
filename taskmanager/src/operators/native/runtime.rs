//! The keyed runtime behind a native function: its state backend, declared states, timers and current key.
//!
//! Timers are stored in the backend (state `timers`, key `current key | domain | time`, value empty), so
//! they are part of every snapshot, and mirrored in two ordered sets on the heap so the next due timer is
//! found without a scan; a restore rebuilds the sets from the stored keys.
use std::collections::BTreeSet;

use datafusion::arrow::row::RowConverter;

use super::{OperatorError, TimeDomain};
use crate::state::{time_bytes, KeyedStateBackend, ListState, MapState, StateId, StateKey, ValueState};

/// The keyed runtime behind a function: its backend, states, timers and current key.
pub(crate) struct Env {
    pub(super) backend: Box<dyn KeyedStateBackend>,
    pub(super) values: Vec<ValueState>,
    pub(super) lists: Vec<ListState>,
    pub(super) maps: Vec<MapState>,
    /// Timers as stored: `current key | domain | time`, value empty; mirrored in the two sets below.
    pub(super) timers: StateId,
    pub(super) event_timers: BTreeSet<(i64, Vec<u8>)>,
    pub(super) processing_timers: BTreeSet<(i64, Vec<u8>)>,
    /// The current key (key group and key, no namespace).
    pub(super) key: StateKey,
    /// The current key as the key columns' Arrow row bytes' converter.
    pub(super) converter: RowConverter,
    pub(super) watermark: i64,
    pub(super) scratch: Vec<u8>,
}

impl Env {
    pub(super) fn timer_key(&mut self, domain: TimeDomain, time: i64) -> &[u8] {
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

    pub(super) fn timer_set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }

    pub(super) fn register_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), OperatorError> {
        let entry = (time, self.key.key_prefix().to_vec());
        if self.timer_set(domain).insert(entry) {
            let timers = self.timers;
            let stored = self.timer_key(domain, time).to_vec();
            self.backend.put(timers, &stored, &[])?;
        }
        Ok(())
    }

    pub(super) fn delete_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), OperatorError> {
        let entry = (time, self.key.key_prefix().to_vec());
        if self.timer_set(domain).remove(&entry) {
            let timers = self.timers;
            let stored = self.timer_key(domain, time).to_vec();
            self.backend.delete(timers, &stored)?;
        }
        Ok(())
    }

    /// Takes the earliest timer of `domain` due at `time`, makes its key current and removes it.
    pub(super) fn pop_due(&mut self, domain: TimeDomain, time: i64) -> Result<Option<i64>, OperatorError> {
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

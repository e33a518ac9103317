//! The heap backend: every state an ordered map in the TaskManager's memory.
//!
//! Ordered (a `BTreeMap`) rather than hashed, so prefix scans (all windows of one key, a map state's
//! entries) visit only the matching range.
//!
//! Keys and values are shared (`Arc`), so the snapshot a checkpoint takes on the task's thread is a list of
//! references, not a copy of the bytes: the task goes on at once while the checkpoint writes them out, and a
//! value written meanwhile is copied first (copy on write: `Arc::make_mut`), so the snapshot stays what it
//! was. A deep copy of every entry took a third of a TaskManager's CPU at a checkpoint a second with two
//! million windows in state (Nexmark q5), most of it allocating and copying.
use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::sync::Arc;

use super::{
    key_group_of_state_key, DeferredSnapshot, EntryVisitor, KeyedStateBackend, StateError, StateId, StateSnapshot,
};

type StateMap = BTreeMap<Arc<[u8]>, Arc<Vec<u8>>>;
/// One state's entries in a snapshot: (name, shared keys and values in key order).
type SharedEntries = (String, Vec<(Arc<[u8]>, Arc<Vec<u8>>)>);

/// A heap snapshot: the entries of every state, by reference (see the module docs).
struct SharedSnapshot {
    states: Vec<SharedEntries>,
}

impl DeferredSnapshot for SharedSnapshot {
    fn for_each(self: Box<Self>, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for (name, entries) in &self.states {
            for (key, value) in entries {
                visit(name, key, value).map_err(StateError)?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct HeapBackend {
    states: Vec<(String, StateMap)>,
}

impl HeapBackend {
    fn map(&mut self, state: StateId) -> Result<&mut StateMap, StateError> {
        self.states
            .get_mut(state.0 as usize)
            .map(|(_, map)| map)
            .ok_or_else(|| StateError(format!("unknown state id {}", state.0)))
    }
}

impl KeyedStateBackend for HeapBackend {
    fn name(&self) -> &'static str {
        "heap"
    }

    fn register(&mut self, name: &str) -> Result<StateId, StateError> {
        if let Some(index) = self.states.iter().position(|(n, _)| n == name) {
            return Ok(StateId(index as u32));
        }
        self.states.push((name.to_string(), BTreeMap::new()));
        Ok(StateId(self.states.len() as u32 - 1))
    }

    fn get(&mut self, state: StateId, key: &[u8], value: &mut Vec<u8>) -> Result<bool, StateError> {
        value.clear();
        match self.map(state)?.get(key) {
            Some(stored) => {
                value.extend_from_slice(stored);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, state: StateId, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let map = self.map(state)?;
        match map.get_mut(key) {
            Some(stored) => match Arc::get_mut(stored) {
                // Not in a snapshot being written: reuse the buffer.
                Some(buffer) => {
                    buffer.clear();
                    buffer.extend_from_slice(value);
                }
                None => *stored = Arc::new(value.to_vec()),
            },
            None => {
                map.insert(Arc::from(key), Arc::new(value.to_vec()));
            }
        }
        Ok(())
    }

    fn delete(&mut self, state: StateId, key: &[u8]) -> Result<(), StateError> {
        self.map(state)?.remove(key);
        Ok(())
    }

    fn append(&mut self, state: StateId, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let map = self.map(state)?;
        match map.get_mut(key) {
            Some(stored) => Arc::make_mut(stored).extend_from_slice(bytes),
            None => {
                map.insert(Arc::from(key), Arc::new(bytes.to_vec()));
            }
        }
        Ok(())
    }

    fn scan_prefix(
        &mut self,
        state: StateId,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for (key, value) in self.map(state)?.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<StateSnapshot, StateError> {
        let states = self
            .states
            .iter()
            .map(|(name, map)| (name.clone(), map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()))
            .collect();
        Ok(StateSnapshot { states })
    }

    fn deferred_snapshot(&mut self) -> Result<Box<dyn DeferredSnapshot>, StateError> {
        let states = self
            .states
            .iter()
            .map(|(name, map)| (name.clone(), map.iter().map(|(k, v)| (Arc::clone(k), Arc::clone(v))).collect()))
            .collect();
        Ok(Box::new(SharedSnapshot { states }))
    }

    fn restore(&mut self, snapshot: &StateSnapshot, key_groups: RangeInclusive<u16>) -> Result<(), StateError> {
        for (_, map) in &mut self.states {
            map.clear();
        }
        for (name, entries) in &snapshot.states {
            let id = self.register(name)?;
            let map = self.map(id)?;
            for (key, value) in entries {
                let group = key_group_of_state_key(key).ok_or_else(|| {
                    StateError(format!("state '{name}': a key of {} bytes has no key group", key.len()))
                })?;
                if key_groups.contains(&group) {
                    map.insert(Arc::from(key.as_slice()), Arc::new(value.clone()));
                }
            }
        }
        Ok(())
    }
}

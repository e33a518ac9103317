//! The heap backend: every state an ordered map in the TaskManager's memory.
//!
//! Ordered (a `BTreeMap`) rather than hashed, so prefix scans (all windows of one key, a map state's
//! entries) visit only the matching range. A snapshot is a deep copy: simple, and independent of later
//! writes as the contract demands; copy-on-write maps can make it cheaper when checkpoints need that.
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use super::{key_group_of_state_key, KeyedStateBackend, StateError, StateId, StateSnapshot};

type StateMap = BTreeMap<Vec<u8>, Vec<u8>>;

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
            Some(stored) => {
                stored.clear();
                stored.extend_from_slice(value);
            }
            None => {
                map.insert(key.to_vec(), value.to_vec());
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
            Some(stored) => stored.extend_from_slice(bytes),
            None => {
                map.insert(key.to_vec(), bytes.to_vec());
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
        for (key, value) in self.map(state)?.range(prefix.to_vec()..) {
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
            .map(|(name, map)| (name.clone(), map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .collect();
        Ok(StateSnapshot { states })
    }

    fn deferred_snapshot(&mut self) -> Result<Box<dyn super::DeferredSnapshot>, StateError> {
        Ok(Box::new(super::CopiedSnapshot(self.snapshot()?)))
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
                    map.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
}

//! A call's view of the keyed runtime: the current key's state, its timers, and the clocks.
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::runtime::Env;
use super::state::{decode, encode, ListStateHandle, MapStateHandle, ValueStateHandle};
use super::{OperatorError, ScalarValue, TimeDomain};
use crate::state::split_state_key;
use crate::time::now_millis;

/// The current key's view of state, timers and time, for one call of the function.
pub struct Context<'a> {
    pub(super) env: &'a mut Env,
    pub(super) timestamp: Option<i64>,
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
            .ok_or_else(|| OperatorError::input("the current key is malformed"))?;
        let columns = crate::operator_api::decode_stored_rows(&self.env.converter, [key])?;
        columns
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0).map_err(|e| OperatorError::internal(e.to_string())))
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
    OperatorError::configuration("a state handle of another operator was used")
}

//! Declaring state: the typed per-key handles a factory gets from its [`OpenContext`], and how their values
//! are stored (JSON, under a prefix no runtime state uses).
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::runtime::Env;
use super::{OperatorError, SubtaskInfo};
use crate::state::{ListState, MapState, Ttl, ValueState};

/// Per-key state a function declared: typed handles over the byte-level states, values encoded as JSON.
#[derive(Clone, Copy, Debug)]
pub struct ValueStateHandle<T> {
    pub(super) index: usize,
    _type: PhantomData<fn() -> T>,
}

/// A list per key; see [`ValueStateHandle`].
#[derive(Clone, Copy, Debug)]
pub struct ListStateHandle<T> {
    pub(super) index: usize,
    _type: PhantomData<fn() -> T>,
}

/// A map per key; see [`ValueStateHandle`].
#[derive(Clone, Copy, Debug)]
pub struct MapStateHandle<K, V> {
    pub(super) index: usize,
    _type: PhantomData<fn() -> (K, V)>,
}

/// What a factory sees: the vertex's settings, the subtask, and where it declares state.
pub struct OpenContext<'a> {
    pub(super) config: &'a BTreeMap<String, String>,
    pub(super) subtask: SubtaskInfo,
    pub(super) env: &'a mut Env,
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
                .map_err(|e| OperatorError::configuration(format!("config '{name}' = '{text}' is not valid: {e}"))),
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

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, OperatorError> {
    serde_json::to_vec(value).map_err(|e| OperatorError::input(format!("cannot encode a state value: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OperatorError> {
    serde_json::from_slice(bytes).map_err(|e| OperatorError::input(format!("cannot decode a state value: {e}")))
}

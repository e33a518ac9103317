//! The registry: the native operators a TaskManager binary offers, by the name `custom` vertices use.
//!
//! A binary builds it once at start ([`crate::main_with_registry`]); a task looks its vertex's name up when
//! it builds its chain, and an unknown name fails that task with the names the binary does offer.
use std::collections::HashMap;
use std::sync::Arc;

use super::{KeyedProcessFunction, OpenContext, OperatorError};

pub(super) type Factory =
    dyn Fn(&mut OpenContext<'_>) -> Result<Box<dyn KeyedProcessFunction>, OperatorError> + Send + Sync;

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

    pub(super) fn factory(&self, name: &str) -> Result<Arc<Factory>, OperatorError> {
        self.factories.get(name).cloned().ok_or_else(|| {
            let names = self.names();
            OperatorError::configuration(format!(
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

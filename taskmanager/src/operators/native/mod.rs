//! Native operators: Rust code compiled into a TaskManager binary, with keyed state and timers (Flink's
//! `KeyedProcessFunction`).
//!
//! The one extension point for user code in a job: the function's API ([`KeyedProcessFunction`],
//! [`Context`], [`Record`], [`Collector`]), the [`OperatorRegistry`] a binary fills, and the adapter that
//! runs a function as an operator of a chain.
//!
//! A job names the operator in a `custom` vertex (`{"name": ..., "keys": [...], "config": {...}, "output":
//! [...]}`); a TaskManager binary that links this crate registers a factory under that name in an
//! [`OperatorRegistry`] and starts with [`crate::run_with_registry`]. For every record, in arrival order,
//! the operator's [`KeyedProcessFunction::process_element`] runs with the record's key current: state read
//! and written through the [`Context`] is that key's, and timers registered there call
//! [`KeyedProcessFunction::on_timer`] later with the same key current.
//!
//! ```no_run
//! use sluice_taskmanager::operators::native::*;
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
//!
//! Layout: `function` what users implement; `registry` the names a binary offers;
//! `state` the typed handles a factory declares; `runtime` the keyed state, timers and current key behind a
//! function; `context` a call's view of them; `record` rows in and out; `operator` the adapter.
mod context;
mod function;
mod operator;
mod record;
mod registry;
mod runtime;
mod state;

pub use datafusion::common::ScalarValue;

pub use crate::operator_api::{Operator, OperatorError, SubtaskInfo};
pub use context::Context;
pub use function::{KeyedProcessFunction, TimeDomain};
pub(crate) use operator::ProcessOperator;
pub use record::{Collector, Record};
pub use registry::OperatorRegistry;
pub use state::{ListStateHandle, MapStateHandle, OpenContext, ValueStateHandle};

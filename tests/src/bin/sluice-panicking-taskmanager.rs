//! A TaskManager binary for tests: the stock TaskManager plus a native operator that panics. The tests of
//! issue 19 run it to show that a panic in a task fails the task (and restarts the job) with the panic's
//! message and location, instead of ending the task silently.
//!
//! `panic_at_row` (keyed, any keys) emits the INT64 column `column` (config, default `n`) of each record
//! until it sees a record whose value there equals `row` (config, default 0), and then panics. It takes the same
//! flags and environment as `sluice-taskmanager`.
use sluice_taskmanager::operators::native::{
    Collector, Context, KeyedProcessFunction, OperatorError, OperatorRegistry, Record, ScalarValue,
};

/// The name jobs use for the operator.
const NAME: &str = "panic_at_row";

/// The text its panic starts with, which the tests look for in the job's `failure_cause`.
const PANIC_TEXT: &str = "panic_at_row: reached the row it panics at";

struct PanicAtRow {
    column: String,
    row: i64,
}

impl KeyedProcessFunction for PanicAtRow {
    fn process_element(
        &mut self,
        record: &Record<'_>,
        _ctx: &mut Context<'_>,
        out: &mut Collector,
    ) -> Result<(), OperatorError> {
        let value = record.i64(&self.column)?;
        if value == Some(self.row) {
            panic!("{PANIC_TEXT} ({} = {})", self.column, self.row);
        }
        out.emit(vec![ScalarValue::Int64(value)])
    }
}

fn main() -> anyhow::Result<()> {
    let registry = OperatorRegistry::new().register(NAME, |ctx| {
        Ok(Box::new(PanicAtRow { column: ctx.parse("column", "n".to_string())?, row: ctx.parse("row", 0)? }))
    });
    sluice_taskmanager::main_with_registry(registry)
}

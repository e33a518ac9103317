//! `window`: keyed tumbling, sliding and session windows in event or processing time, with aggregates, a
//! reduce or a Top-N, and a side output for late records.
use std::sync::Arc;

use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};

use super::aggregate::{aggregate_field, check_functions};
use super::schema::{check_keys, unique_names};
use super::{OperatorSpec, Role, SchemaInput};
use crate::expr::ExprCompiler;
use crate::job::bounds::{windows_per_record, TOP_N_MAX, WINDOWS_PER_RECORD_MAX};
use crate::job::hint;
use crate::proto;

/// The side output of a window that receives records later than its allowed lateness.
pub const LATE_SIDE_OUTPUT: &str = "late";
/// The window bounds a window operator adds to its output, after the key columns.
pub const WINDOW_START_COLUMN: &str = "window_start";
/// The exclusive end of a window in a window operator's output.
pub const WINDOW_END_COLUMN: &str = "window_end";

impl OperatorSpec for proto::Window {
    const KIND: &'static str = "window";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        // An event-time window's results happen at its end: `window_end` is their event time downstream (an
        // interval join matching results back to records, as Nexmark q7 does; a window of windows). They are
        // emitted before the watermark that closed the window goes on, so they are on time there; a late
        // firing (allowed lateness) comes after it, and downstream it is late. Flink uses window_end - 1 ms
        // (`window_time`); the exclusive end keeps Flink's query texts' bounds (`BETWEEN window_end - 10 s
        // AND window_end`) as they are.
        let event_time = self.time() != proto::TimeDomain::ProcessingTime;
        let (received, input_time) = (input.input.clone(), input.input_time.clone());
        let schema = window_schema(self, &received, input_time.as_deref(), input);
        input.output_time = (event_time && schema.is_some()).then(|| WINDOW_END_COLUMN.to_string());
        if schema.is_some() {
            // Late records leave unchanged, with the input's schema and event time.
            input.side_outputs.push((LATE_SIDE_OUTPUT.to_string(), received, input_time));
        }
        schema
    }

    fn check_without_input(&self, report: &mut dyn FnMut(String)) {
        check_functions(&self.aggregates, true, report);
    }
}

fn window_schema(
    window: &proto::Window,
    schema: &SchemaRef,
    input_time: Option<&str>,
    input: &mut SchemaInput<'_, '_>,
) -> Option<SchemaRef> {
    use proto::window::Assigner;
    let report = &mut *input.report;
    let mut fields = check_keys(&window.keys, schema, input.in_edges, report);
    match &window.assigner {
        None => report("no window assigner: give one of 'tumbling', 'sliding' or 'session'".into()),
        Some(Assigner::Tumbling(t)) if t.size_ms == 0 => report("tumbling.size_ms must be positive".into()),
        Some(Assigner::Sliding(s)) if s.size_ms == 0 || s.slide_ms == 0 => {
            report("sliding.size_ms and sliding.slide_ms must be positive".into())
        }
        Some(Assigner::Sliding(s)) if s.slide_ms > s.size_ms => report(format!(
            "sliding.slide_ms ({}) is larger than size_ms ({}): records between windows would be lost",
            s.slide_ms, s.size_ms
        )),
        Some(Assigner::Sliding(s)) if windows_per_record(s.size_ms, s.slide_ms) > WINDOWS_PER_RECORD_MAX => {
            report(format!(
                "sliding.size_ms / sliding.slide_ms puts each record in {} windows; the most allowed is \
                 {WINDOWS_PER_RECORD_MAX} (raise slide_ms or lower size_ms)",
                windows_per_record(s.size_ms, s.slide_ms)
            ))
        }
        Some(Assigner::Session(s)) if s.gap_ms == 0 => report("session.gap_ms must be positive".into()),
        Some(_) => {}
    }
    let event_time = window.time() != proto::TimeDomain::ProcessingTime;
    if event_time && input_time.is_none() {
        report(
            "an event-time window needs an event-time column: set 'event_time' on the source (and keep that column \
             through the operators in between), or set \"time\": \"PROCESSING_TIME\""
                .into(),
        );
    }
    if !event_time && window.allowed_lateness_ms > 0 {
        report("allowed_lateness_ms applies to event-time windows only".into());
    }
    let bound = ArrowType::Timestamp(TimeUnit::Millisecond, None);
    fields.push(ArrowField::new(WINDOW_START_COLUMN, bound.clone(), false));
    fields.push(ArrowField::new(WINDOW_END_COLUMN, bound, false));
    let given = [!window.aggregates.is_empty(), window.reduce.is_some(), window.top_n.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        report("a window has one of 'aggregates', 'reduce' or 'top_n', not several".into());
    }
    match (&window.reduce, &window.top_n) {
        (Some(reduce), _) => fields.extend(reduce_fields(reduce, &window.keys, schema, input.compiler, report)),
        (None, Some(top_n)) => {
            if matches!(window.assigner, Some(Assigner::Session(_))) {
                report("'top_n' works on tumbling and sliding windows, not sessions".into());
            }
            fields.extend(top_n_fields(top_n, &window.keys, schema, report));
        }
        (None, None) if window.aggregates.is_empty() => report(
            "'aggregates' is missing: e.g. [{\"function\": \"count\", \"name\": \"count\"}] (or give 'reduce' or \
             'top_n')"
                .into(),
        ),
        (None, None) => {}
    }
    for call in &window.aggregates {
        if let Some(field) = aggregate_field(call, schema, input.compiler, true, report) {
            fields.push(field);
        }
    }
    unique_names(fields.iter().map(|f| f.name().as_str()), "output column", report);
    Some(Arc::new(Schema::new(fields)))
}

/// The input's columns other than the keys: the record a reducing or Top-N window stores (in Arrow's row
/// format, so each must have one; otherwise the task would fail when it starts).
fn stored_record_fields(
    keys: &[String],
    input: &SchemaRef,
    kind: &str,
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    let values: Vec<ArrowField> =
        input.fields().iter().filter(|f| !keys.contains(f.name())).map(|f| f.as_ref().clone()).collect();
    for field in &values {
        if !RowConverter::supports_fields(&[SortField::new(field.data_type().clone())]) {
            report(format!(
                "'{kind}' keeps column '{}', whose type {} cannot be stored",
                field.name(),
                field.data_type()
            ));
        }
    }
    values
}

/// A Top-N window's value columns: the input's columns other than the keys, then the rank when named.
fn top_n_fields(
    top_n: &proto::TopN,
    keys: &[String],
    input: &SchemaRef,
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    if top_n.n == 0 || top_n.n > TOP_N_MAX {
        report(format!("top_n.n is {}; it must be 1 to {TOP_N_MAX}", top_n.n));
    }
    if top_n.order_by.is_empty() {
        report("top_n.order_by is empty: give the column(s) to rank by, e.g. [{\"column\": \"price\", \"descending\": true}]".into());
    }
    let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
    for key in &top_n.order_by {
        match input.field_with_name(&key.column) {
            Ok(field) if !RowConverter::supports_fields(&[SortField::new(field.data_type().clone())]) => report(
                format!("top_n.order_by column '{}' is {}, which cannot be ordered", key.column, field.data_type()),
            ),
            Ok(_) => {}
            Err(_) => report(format!(
                "top_n.order_by column '{}'{} is not in the input: {}",
                key.column,
                hint(&key.column, &names),
                names.join(", ")
            )),
        }
    }
    let mut values = stored_record_fields(keys, input, "top_n", report);
    if !top_n.rank_column.is_empty() {
        values.push(ArrowField::new(&top_n.rank_column, ArrowType::UInt64, false));
    }
    values
}

/// A reducing window's value columns: the input's columns other than the keys, each listed one checked.
fn reduce_fields(
    reduce: &proto::Reduce,
    keys: &[String],
    input: &SchemaRef,
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    let values = stored_record_fields(keys, input, "reduce", report);
    let names: Vec<&str> = values.iter().map(|f| f.name().as_str()).collect();
    if values.is_empty() {
        report("'reduce' needs columns besides the keys to fold".into());
    }
    unique_names(reduce.columns.iter().map(|c| c.name.as_str()), "reduce column", report);
    for column in &reduce.columns {
        let Some(field) = values.iter().find(|f| *f.name() == column.name) else {
            report(format!(
                "reduce column '{}'{} is not one of the input's non-key columns: {}",
                column.name,
                hint(&column.name, &names),
                names.join(", ")
            ));
            continue;
        };
        match compiler.compile_pair(&column.expr, input) {
            Ok(expr) if can_cast_types(&expr.data_type, field.data_type()) => {}
            Ok(expr) => report(format!(
                "reduce column '{}': '{}' is {}, which cannot become the column's {}",
                column.name,
                column.expr,
                expr.data_type,
                field.data_type()
            )),
            Err(e) => report(format!("reduce column '{}': {e} (name the two records 'a' and 'b')", column.name)),
        }
    }
    values
}

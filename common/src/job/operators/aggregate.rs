//! `aggregate`: a keyed running aggregate (count, sum, min, max, avg), updated with every row; and the
//! aggregate calls that windows share.
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef, TimeUnit};

use super::schema::{check_keys, unique_names};
use super::{OperatorSpec, Role, SchemaInput};
use crate::aggregates::{generic_aggregate, generic_aggregate_names};
use crate::expr::ExprCompiler;
use crate::job::hint;
use crate::proto;

/// The functions of the keyed running aggregate.
pub const AGGREGATE_FUNCTIONS: &[&str] = &["count", "sum", "min", "max", "avg"];

/// The functions of the running aggregate that can take a row back out (a changelog input's retraction).
pub const RETRACTABLE_FUNCTIONS: &[&str] = &["count", "sum", "avg"];

/// The column that makes a stream a changelog: BOOLEAN, true for a row that takes back one emitted before,
/// false for a row that adds (see `AggregateEmit` in the proto). A running aggregate with `emit: CHANGELOG`
/// writes it; filters, selects that keep it, running aggregates and sinks take it; the other operators
/// refuse a changelog input, as their results would count a retracted row as a new one.
pub const RETRACT_COLUMN: &str = "_retract";

/// The changelog column's field.
pub fn retract_field() -> ArrowField {
    ArrowField::new(RETRACT_COLUMN, ArrowType::Boolean, false)
}

/// Whether a stream of this schema is a changelog (it has the [`RETRACT_COLUMN`]).
pub fn is_changelog(schema: &Schema) -> bool {
    schema.column_with_name(RETRACT_COLUMN).is_some()
}

impl OperatorSpec for proto::Aggregate {
    const KIND: &'static str = "aggregate";
    const ROLE: Role = Role::Transform;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        // A running aggregate's updates carry no event time.
        input.output_time = None;
        let report = &mut *input.report;
        if proto::AggregateEmit::try_from(self.emit).is_err() {
            report(format!("'emit' is {}: it is UPDATES (the default) or CHANGELOG", self.emit));
        }
        if self.keys.is_empty() {
            report("'keys' is missing: the key columns".into());
            return None;
        }
        let changelog_input = is_changelog(&input.input);
        if changelog_input && self.keys.iter().any(|k| k == RETRACT_COLUMN) {
            report(format!("'{RETRACT_COLUMN}' says whether a row is a retraction; it cannot be a key"));
        }
        let mut fields = check_keys(&self.keys, &input.input, input.in_edges, report);
        if self.aggregates.is_empty() {
            report("'aggregates' is missing: e.g. [{\"function\": \"count\", \"name\": \"count\"}]".into());
        }
        for call in &self.aggregates {
            let function = call.function.to_lowercase();
            if changelog_input
                && AGGREGATE_FUNCTIONS.contains(&function.as_str())
                && !RETRACTABLE_FUNCTIONS.contains(&function.as_str())
            {
                report(format!(
                    "aggregate '{}': {function} cannot take a retracted row back out, and the input is a changelog \
                     (it has a '{RETRACT_COLUMN}' column); use {} here, or aggregate before the changelog",
                    call.name,
                    RETRACTABLE_FUNCTIONS.join(", ")
                ));
            }
            if let Some(field) = aggregate_field(call, &input.input, input.compiler, false, report) {
                fields.push(field);
            }
        }
        if self.emit == proto::AggregateEmit::Changelog as i32 {
            fields.push(retract_field());
        }
        unique_names(fields.iter().map(|f| f.name().as_str()), "output column", report);
        Some(Arc::new(Schema::new(fields)))
    }

    fn check_without_input(&self, report: &mut dyn FnMut(String)) {
        check_functions(&self.aggregates, false, report);
    }
}

/// Reports every call to a function the operator does not know (`generic`: a window's).
pub(super) fn check_functions(calls: &[proto::AggregateCall], generic: bool, report: &mut dyn FnMut(String)) {
    for call in calls {
        if !is_known_function(&call.function, generic) {
            report(unknown_function(&call.function, generic));
        }
    }
}

/// Whether `function` is native, or (when `generic`) one of DataFusion's aggregate functions or aliases.
fn is_known_function(function: &str, generic: bool) -> bool {
    let function = function.to_lowercase();
    AGGREGATE_FUNCTIONS.contains(&function.as_str())
        || (generic && generic_aggregate(&function, &ArrowField::new("x", ArrowType::Int64, true)).is_some())
}

/// "unknown aggregate function ..." with what the operator supports.
fn unknown_function(function: &str, generic: bool) -> String {
    let mut supported: Vec<String> = AGGREGATE_FUNCTIONS.iter().map(|f| f.to_string()).collect();
    if generic {
        supported.extend(generic_aggregate_names());
    }
    let names: Vec<&str> = supported.iter().map(String::as_str).collect();
    format!(
        "unknown aggregate function '{function}'{}; supported: {}{}",
        hint(&function.to_lowercase(), &names),
        names.join(", "),
        if generic { "" } else { " (windows also take DataFusion's other aggregate functions)" }
    )
}

/// The output column of an aggregate call. `generic`: DataFusion's other aggregate functions are allowed
/// (windows), besides the five native ones.
pub(super) fn aggregate_field(
    call: &proto::AggregateCall,
    input: &SchemaRef,
    compiler: &ExprCompiler,
    generic: bool,
    report: &mut dyn FnMut(String),
) -> Option<ArrowField> {
    let function = call.function.to_lowercase();
    if call.name.is_empty() {
        report(format!("aggregate '{}({})' needs a 'name' for its output column", call.function, call.argument));
    }
    let native = AGGREGATE_FUNCTIONS.contains(&function.as_str());
    if !is_known_function(&function, generic) {
        report(unknown_function(&call.function, generic));
        return None;
    }
    let argument = call.argument.trim();
    if function == "count" && (argument.is_empty() || argument == "*") {
        return Some(ArrowField::new(&call.name, ArrowType::Int64, false));
    }
    if argument.is_empty() {
        report(format!("aggregate '{}' ({function}) needs an 'argument' expression", call.name));
        return None;
    }
    let expr = match compiler.compile(argument, input) {
        Ok(expr) => expr,
        Err(e) => {
            report(format!("aggregate '{}': {e}", call.name));
            return None;
        }
    };
    if !native {
        let field = ArrowField::new(argument, expr.data_type.clone(), expr.nullable);
        return match generic_aggregate(&function, &field) {
            Some(Ok(typed)) => Some(ArrowField::new(&call.name, typed.result.data_type().clone(), true)),
            Some(Err(e)) => {
                report(format!(
                    "aggregate '{}': {function}({argument}) with '{argument}' {}: {e}",
                    call.name,
                    field.data_type()
                ));
                None
            }
            None => None,
        };
    }
    let data_type = match (function.as_str(), &expr.data_type) {
        ("count", _) => ArrowType::Int64,
        ("avg", t) if t.is_numeric() => ArrowType::Float64,
        ("sum" | "min" | "max", t) if t.is_integer() => ArrowType::Int64,
        ("sum" | "min" | "max", t) if t.is_floating() => ArrowType::Float64,
        ("min" | "max", ArrowType::Timestamp(TimeUnit::Millisecond, None)) => expr.data_type.clone(),
        (_, t) => {
            report(format!("aggregate '{}': {function} needs a numeric argument, but '{argument}' is {t}", call.name));
            return None;
        }
    };
    // count never yields null; the others are null until a non-null value arrives.
    Some(ArrowField::new(&call.name, data_type, function != "count"))
}

//! DataFusion's aggregate functions beyond the five the engine computes natively, for window aggregates.
//!
//! `count`, `sum`, `min`, `max` and `avg` have hand-written 16-byte accumulators (the hot path). Every
//! other single-argument aggregate function of DataFusion — `stddev`, `var_pop`, `median`,
//! `approx_distinct`, `bool_and`, `bit_xor`, `array_agg`, ... — runs through DataFusion's own
//! [`Accumulator`](datafusion::logical_expr::Accumulator): its partial state is what `state()` returns, kept in
//! the state backend between batches, and merged with `merge_batch` (sessions merge too). Validation on the
//! JobManager and execution on the TaskManagers type a call with this same function, so they agree.
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, FieldRef};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::AggregateUDF;

/// The functions with native accumulators.
pub const NATIVE_AGGREGATES: &[&str] = &["count", "sum", "min", "max", "avg"];

/// DataFusion functions that make no sense on a stream of window contents.
const EXCLUDED: &[&str] = &["grouping"];

/// A DataFusion aggregate function typed for one argument.
#[derive(Debug, Clone)]
pub struct GenericAggregate {
    /// The function.
    pub udaf: Arc<AggregateUDF>,
    /// The argument as the function takes it (after DataFusion's coercion, e.g. INT64 to FLOAT64 for
    /// `stddev`): cast the evaluated argument to this type.
    pub argument: FieldRef,
    /// The result column.
    pub result: FieldRef,
}

/// The DataFusion aggregate functions that are not native, by name, sorted (for messages).
pub fn generic_aggregate_names() -> Vec<String> {
    let mut names: Vec<String> = datafusion::functions_aggregate::all_default_aggregate_functions()
        .iter()
        .map(|f| f.name().to_string())
        .filter(|n| !NATIVE_AGGREGATES.contains(&n.as_str()) && !EXCLUDED.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// Looks `name` up among DataFusion's aggregate functions (names and aliases, case-insensitive) and types it
/// for one argument `argument`. None when there is no such function; an error when it does not take that
/// argument (or takes more than one).
pub fn generic_aggregate(name: &str, argument: &Field) -> Option<Result<GenericAggregate, String>> {
    let name = name.to_lowercase();
    if NATIVE_AGGREGATES.contains(&name.as_str()) || EXCLUDED.contains(&name.as_str()) {
        return None;
    }
    let udaf = datafusion::functions_aggregate::all_default_aggregate_functions()
        .into_iter()
        .find(|f| f.name() == name || f.aliases().iter().any(|a| a.eq_ignore_ascii_case(&name)))?;
    Some(type_for(udaf, argument))
}

fn type_for(udaf: Arc<AggregateUDF>, argument: &Field) -> Result<GenericAggregate, String> {
    let given: Vec<FieldRef> = vec![Arc::new(argument.clone().with_name("argument"))];
    let coerced = fields_with_udf(&given, udaf.as_ref()).map_err(|e| first_line(&e.to_string()))?;
    let [argument] =
        <[FieldRef; 1]>::try_from(coerced).map_err(|_| format!("{} does not take a single argument", udaf.name()))?;
    let result = udaf.return_field(std::slice::from_ref(&argument)).map_err(|e| first_line(&e.to_string()))?;
    Ok(GenericAggregate { udaf, argument, result })
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn datafusion_functions_type_like_sql() {
        let int = Field::new("x", DataType::Int64, false);
        let stddev = generic_aggregate("STDDEV", &int).and_then(Result::ok);
        assert_eq!(stddev.map(|s| s.result.data_type().clone()), Some(DataType::Float64));
        let distinct = generic_aggregate("approx_distinct", &int).and_then(Result::ok);
        assert_eq!(distinct.map(|s| s.result.data_type().clone()), Some(DataType::UInt64));
        assert!(generic_aggregate("count", &int).is_none(), "native functions are not generic");
        assert!(generic_aggregate("no_such_function", &int).is_none());
        let text = Field::new("s", DataType::Utf8, false);
        assert!(matches!(generic_aggregate("stddev", &text), Some(Err(_))), "stddev of text is an error");
        assert!(generic_aggregate_names().contains(&"median".to_string()));
    }
}

//! String functions whose result grows with an argument (`repeat(s, n)`, `lpad(s, n)`, `rpad(s, n)`),
//! bounded.
//!
//! DataFusion's own versions allocate whatever the arguments ask for, up to 2 GiB a row: one
//! `repeat(word, 1000000000)` in a job file takes a TaskManager's memory (and, when the arguments are
//! literals, the JobManager's, which folds constants while it validates). Each is registered here under its
//! own name as a wrapper that first works out how many bytes the call would make for the whole batch and
//! refuses more than [`FUNCTION_RESULT_BYTES_MAX`] with an error that names the function and the bound;
//! within the bound it calls DataFusion's function unchanged. The error fails the task like any other
//! expression error, and constant folding leaves a call that fails unevaluated, so validation stays cheap.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most bytes one call of a growing function may produce for one batch (all rows together).
pub const FUNCTION_RESULT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The most bytes one character takes in UTF-8: a padded string of `n` characters has at most `4 n` bytes.
const UTF8_CHAR_BYTES_MAX: i64 = 4;

/// How a function's result size follows from its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) * n` bytes.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad(...)`: at most `n` characters.
    Pad,
}

/// The functions wrapped, and how each grows.
const GROWING: [(&str, Growth); 3] = [("repeat", Growth::Repeat), ("lpad", Growth::Pad), ("rpad", Growth::Pad)];

/// Replaces the session's growing functions with bounded wrappers of themselves.
pub(crate) fn bound_growing_functions(session: &SessionContext) {
    for (name, growth) in GROWING {
        // A build without the function (its feature off) has nothing to bound.
        if let Ok(inner) = session.udf(name) {
            session.register_udf(ScalarUDF::new_from_impl(Bounded { inner, growth }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = result_bytes(self.growth, &args.args, args.number_rows)?;
        if bytes > FUNCTION_RESULT_BYTES_MAX {
            return exec_err!(
                "{}() would make {bytes} bytes for one batch of {} rows; the most allowed is {FUNCTION_RESULT_BYTES_MAX}",
                self.inner.name(),
                args.number_rows
            );
        }
        self.inner.invoke_with_args(args)
    }
}

/// One argument's value on every row: the same for all (a scalar) or one each (nulls as 0).
enum PerRow {
    Same(i64),
    Each(ArrayRef),
}

impl PerRow {
    fn at(&self, row: usize) -> i64 {
        match self {
            PerRow::Same(value) => *value,
            PerRow::Each(array) => {
                let values = array.as_primitive::<Int64Type>();
                if row < values.len() && values.is_valid(row) {
                    values.value(row)
                } else {
                    0
                }
            }
        }
    }
}

/// The bytes a call makes for the batch, at most (saturating).
fn result_bytes(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let Some(count) = args.get(1) else { return Ok(0) };
    let counts = integers(count)?;
    let per_row_unit = match growth {
        Growth::Repeat => match args.first() {
            Some(string) => string_lengths(string)?,
            None => return Ok(0),
        },
        Growth::Pad => PerRow::Same(UTF8_CHAR_BYTES_MAX),
    };
    // One row only when every argument is a scalar (the result is one value); a column anywhere (the
    // string or the fill of a pad included) makes the result one value per row of the batch.
    let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) { 1 } else { rows };
    let mut total: u64 = 0;
    for row in 0..rows {
        let count = u64::try_from(counts.at(row)).unwrap_or(0);
        let unit = u64::try_from(per_row_unit.at(row)).unwrap_or(0);
        total = total.saturating_add(count.saturating_mul(unit));
        if total > FUNCTION_RESULT_BYTES_MAX {
            break; // Already over: no need to add up the rest.
        }
    }
    Ok(total)
}

/// An integer argument as i64 per row.
fn integers(value: &ColumnarValue) -> Result<PerRow> {
    Ok(match value {
        ColumnarValue::Scalar(scalar) => match scalar.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) => PerRow::Same(n),
            _ => PerRow::Same(0),
        },
        ColumnarValue::Array(array) => PerRow::Each(cast(array, &DataType::Int64)?),
    })
}

/// A string argument's byte length per row.
fn string_lengths(value: &ColumnarValue) -> Result<PerRow> {
    Ok(match value {
        ColumnarValue::Scalar(scalar) => match scalar {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                PerRow::Same(i64::try_from(s.len()).unwrap_or(i64::MAX))
            }
            _ => PerRow::Same(0),
        },
        ColumnarValue::Array(array) => PerRow::Each(cast(&length(array)?, &DataType::Int64)?),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use crate::expr::ExprCompiler;

    fn words() -> RecordBatch {
        let schema =
            Arc::new(Schema::new(vec![Field::new("word", datafusion::arrow::datatypes::DataType::Utf8, false)]));
        let column = Arc::new(StringArray::from(vec!["ab", "cde"]));
        RecordBatch::try_new(schema, vec![column]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn evaluate(sql: &str) -> Result<Vec<String>, String> {
        let batch = words();
        let compiled = ExprCompiler::new().compile(sql, &batch.schema()).map_err(|e| e.to_string())?;
        let array = compiled.evaluate(&batch).map_err(|e| e.to_string())?;
        let array =
            datafusion::arrow::compute::kernels::cast::cast(&array, &datafusion::arrow::datatypes::DataType::Utf8)
                .map_err(|e| e.to_string())?;
        let strings = array.as_any().downcast_ref::<StringArray>().ok_or("not strings")?;
        Ok((0..strings.len()).map(|i| strings.value(i).to_string()).collect())
    }

    #[test]
    fn growing_functions_work_as_before_within_the_bound() {
        assert_eq!(evaluate("repeat(word, 2)"), Ok(vec!["abab".to_string(), "cdecde".to_string()]));
        assert_eq!(evaluate("lpad(word, 4, '.')"), Ok(vec!["..ab".to_string(), ".cde".to_string()]));
        assert_eq!(evaluate("rpad(word, 3)"), Ok(vec!["ab ".to_string(), "cde".to_string()]));
    }

    #[test]
    fn growing_functions_refuse_a_result_past_the_bound_by_name() {
        // `lpad(word, 16000000)` is under the bound for one row and over it for the batch's two.
        for sql in [
            "repeat(word, 1000000000)",
            "lpad(word, 2000000000)",
            "rpad('x', 100000000, 'y')",
            "repeat('abc', 40000000)",
            "lpad(word, 16000000)",
            "rpad('x', 16000000, word)",
        ] {
            let error = evaluate(sql).err().unwrap_or_else(|| panic!("{sql} was evaluated"));
            let name = &sql[..sql.find('(').unwrap_or(0)];
            assert!(error.contains(&format!("{name}() would make")), "{sql}: {error}");
            assert!(error.contains("the most allowed is 67108864"), "{sql}: {error}");
        }
    }
}

//! Aggregate functions shared by the keyed operators: which function, over which argument, into which type;
//! and, for operators that keep partial results in a state backend, a small mergeable accumulator.
//!
//! An [`Acc`] is two 64-bit words — a value (an integer, or a float's bits) and the number of values seen —
//! so every function's partial result has the same 16-byte encoding, merges with another (session windows
//! merge), and a group with no non-null input yields SQL's null.
//!
//! DataFusion's other aggregate functions (windows only) run through a [`GenericAgg`]: DataFusion's own
//! accumulator, whose partial state (`Accumulator::state`) is kept as bytes in Arrow's row format.
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::aggregates::{generic_aggregate, GenericAggregate};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::expr::{CompiledExpr, ExprCompiler};
use sluice_common::proto::AggregateCall;

use crate::operator_api::OperatorError;

/// What one aggregate computes, and in which number type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    CountRows,
    CountValues,
    SumInt,
    SumFloat,
    MinInt,
    MaxInt,
    MinFloat,
    MaxFloat,
    Avg,
    /// A DataFusion accumulator ([`AggregateFn::generic`]); its [`Acc`] stays empty.
    Generic,
}

impl Kind {
    /// Whether the argument is read as Float64 (else Int64).
    pub fn floating(self) -> bool {
        matches!(self, Kind::SumFloat | Kind::MinFloat | Kind::MaxFloat | Kind::Avg)
    }

    /// Whether a row can be taken back out of it (a changelog's retraction): counts, sums and averages.
    pub fn retractable(self) -> bool {
        matches!(self, Kind::CountRows | Kind::CountValues | Kind::SumInt | Kind::SumFloat | Kind::Avg)
    }
}

/// One aggregate call, compiled against its input schema.
pub struct AggregateFn {
    pub kind: Kind,
    pub argument: Option<CompiledExpr>,
    pub output_type: DataType,
    /// For [`Kind::Generic`]: the DataFusion function.
    pub generic: Option<GenericAgg>,
}

impl AggregateFn {
    /// Compiles `calls`; their output columns start at `first_column` of `output`.
    pub fn compile_all(
        calls: &[AggregateCall],
        input: &SchemaRef,
        output: &SchemaRef,
        first_column: usize,
    ) -> Result<Vec<Self>, OperatorError> {
        let compiler = ExprCompiler::new();
        let mut functions = Vec::with_capacity(calls.len());
        for (position, call) in calls.iter().enumerate() {
            let output_type = output.field(first_column + position).data_type().clone();
            let function = call.function.to_lowercase();
            let argument = call.argument.trim();
            let argument = if function == "count" && (argument.is_empty() || argument == "*") {
                None
            } else {
                Some(compiler.compile(argument, input)?)
            };
            if let (Some(expr), false) = (&argument, NATIVE.contains(&function.as_str())) {
                let field = Field::new(&expr.sql, expr.data_type.clone(), expr.nullable);
                let typed = generic_aggregate(&function, &field)
                    .ok_or_else(|| OperatorError::configuration(format!("unknown aggregate function '{function}'")))?
                    .map_err(|e| OperatorError::configuration(format!("aggregate {function}({}): {e}", expr.sql)))?;
                let generic = Some(GenericAgg::new(typed)?);
                functions.push(AggregateFn { kind: Kind::Generic, argument, output_type, generic });
                continue;
            }
            let floating = output_type == DataType::Float64;
            let kind = match (function.as_str(), floating, &argument) {
                ("count", _, None) => Kind::CountRows,
                ("count", _, Some(_)) => Kind::CountValues,
                ("sum", false, _) => Kind::SumInt,
                ("sum", true, _) => Kind::SumFloat,
                ("min", false, _) => Kind::MinInt,
                ("max", false, _) => Kind::MaxInt,
                ("min", true, _) => Kind::MinFloat,
                ("max", true, _) => Kind::MaxFloat,
                ("avg", _, _) => Kind::Avg,
                (other, _, _) => {
                    return Err(OperatorError::configuration(format!("unknown aggregate function '{other}'")))
                }
            };
            functions.push(AggregateFn { kind, argument, output_type, generic: None });
        }
        Ok(functions)
    }

    /// The argument over `batch`, as Int64 or Float64 (None for count(*)).
    pub fn arguments(&self, batch: &RecordBatch) -> Result<Option<ArrayRef>, OperatorError> {
        let Some(argument) = &self.argument else { return Ok(None) };
        let values = argument.evaluate(batch)?;
        let wanted = match &self.generic {
            Some(generic) => generic.typed.argument.data_type().clone(),
            None if self.kind.floating() => DataType::Float64,
            None => DataType::Int64,
        };
        Ok(Some(if values.data_type() == &wanted { values } else { cast(&values, &wanted)? }))
    }
}

/// The functions with hand-written accumulators.
const NATIVE: &[&str] = sluice_common::aggregates::NATIVE_AGGREGATES;

/// A DataFusion aggregate function: creates its accumulators and keeps their partial states as bytes.
pub struct GenericAgg {
    typed: GenericAggregate,
    /// The argument's one-column schema, which the accumulator's column expression reads.
    schema: Schema,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    expr_fields: Vec<datafusion::arrow::datatypes::FieldRef>,
    /// Encodes and decodes partial states (one row per state, a column per state field).
    converter: RowConverter,
}

impl GenericAgg {
    fn new(typed: GenericAggregate) -> Result<Self, OperatorError> {
        let df = |e: datafusion::error::DataFusionError| OperatorError::internal(e.to_string());
        let schema = Schema::new(vec![typed.argument.as_ref().clone()]);
        let exprs: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new(typed.argument.name(), 0))];
        let expr_fields = vec![typed.argument.clone()];
        let state_fields = typed
            .udaf
            .state_fields(StateFieldsArgs {
                name: typed.udaf.name(),
                input_fields: &expr_fields,
                return_field: typed.result.clone(),
                ordering_fields: &[],
                is_distinct: false,
            })
            .map_err(df)?;
        let sort_fields: Vec<SortField> = state_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(sort_fields)
            .map_err(|e| OperatorError::internal(format!("{}: its state cannot be stored ({e})", typed.udaf.name())))?;
        Ok(Self { typed, schema, exprs, expr_fields, converter })
    }

    fn accumulator(&self) -> Result<Box<dyn Accumulator>, OperatorError> {
        let args = AccumulatorArgs {
            return_field: self.typed.result.clone(),
            schema: &self.schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: self.typed.udaf.name(),
            is_distinct: false,
            exprs: &self.exprs,
            expr_fields: &self.expr_fields,
        };
        self.typed.udaf.accumulator(args).map_err(|e| OperatorError::internal(e.to_string()))
    }

    fn load(&self, accumulator: &mut dyn Accumulator, state: &[u8]) -> Result<(), OperatorError> {
        if state.is_empty() {
            return Ok(());
        }
        let columns = crate::operator_api::decode_stored_rows(&self.converter, [state])?;
        accumulator.merge_batch(&columns).map_err(|e| OperatorError::input(e.to_string()))
    }

    fn save(&self, accumulator: &mut dyn Accumulator) -> Result<Vec<u8>, OperatorError> {
        let df = |e: datafusion::error::DataFusionError| OperatorError::internal(e.to_string());
        let columns = accumulator
            .state()
            .map_err(df)?
            .iter()
            .map(|value| value.to_array().map_err(df))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self.converter.convert_columns(&columns)?;
        Ok(rows.row(0).as_ref().to_vec())
    }

    /// The partial state after folding rows `rows` of `values` into `state` (empty: no values yet).
    pub fn fold(&self, state: &[u8], values: &ArrayRef, rows: &[u32]) -> Result<Vec<u8>, OperatorError> {
        let mut accumulator = self.accumulator()?;
        self.load(accumulator.as_mut(), state)?;
        let taken = take(values, &UInt32Array::from(rows.to_vec()), None)?;
        accumulator.update_batch(&[taken]).map_err(|e| OperatorError::input(e.to_string()))?;
        self.save(accumulator.as_mut())
    }

    /// Two partial states merged into one.
    pub fn merge(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, OperatorError> {
        let mut accumulator = self.accumulator()?;
        self.load(accumulator.as_mut(), a)?;
        self.load(accumulator.as_mut(), b)?;
        self.save(accumulator.as_mut())
    }

    /// The result column over several groups' partial states.
    pub fn evaluate<'a>(&self, states: impl Iterator<Item = &'a [u8]>) -> Result<ArrayRef, OperatorError> {
        let mut values = Vec::new();
        for state in states {
            let mut accumulator = self.accumulator()?;
            self.load(accumulator.as_mut(), state)?;
            values.push(accumulator.evaluate().map_err(|e| OperatorError::input(e.to_string()))?);
        }
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(self.typed.result.data_type()));
        }
        ScalarValue::iter_to_array(values).map_err(|e| OperatorError::internal(e.to_string()))
    }
}

/// A partial aggregate: a value (integer, or float bits) and how many values went into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acc {
    value: i64,
    count: i64,
}

/// The encoded size of one [`Acc`].
pub const ACC_BYTES: usize = 16;

impl Acc {
    fn float(self) -> f64 {
        f64::from_bits(self.value as u64)
    }

    fn set_float(&mut self, v: f64) {
        self.value = v.to_bits() as i64;
    }

    /// Folds in row `row` of `values` (None: count(*)).
    pub fn update(&mut self, kind: Kind, values: Option<&ArrayRef>, row: usize) {
        let Some(values) = values else {
            self.count += 1;
            return;
        };
        if !values.is_valid(row) {
            return;
        }
        if kind == Kind::CountValues || kind == Kind::Generic {
            self.count += 1;
            return;
        }
        if kind.floating() {
            let v = values.as_primitive::<Float64Type>().value(row);
            let current = self.float();
            let first = self.count == 0;
            self.set_float(match kind {
                Kind::MinFloat if !first => current.min(v),
                Kind::MaxFloat if !first => current.max(v),
                Kind::MinFloat | Kind::MaxFloat => v,
                _ => current + v,
            });
        } else {
            let v = values.as_primitive::<Int64Type>().value(row);
            let first = self.count == 0;
            self.value = match kind {
                Kind::MinInt if !first => self.value.min(v),
                Kind::MaxInt if !first => self.value.max(v),
                Kind::MinInt | Kind::MaxInt => v,
                _ => self.value.wrapping_add(v),
            };
        }
        self.count += 1;
    }

    /// Folds in another partial result of the same function.
    pub fn merge(&mut self, kind: Kind, other: Acc) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        match kind {
            Kind::CountRows | Kind::CountValues => {}
            Kind::SumInt => self.value = self.value.wrapping_add(other.value),
            Kind::MinInt => self.value = self.value.min(other.value),
            Kind::MaxInt => self.value = self.value.max(other.value),
            Kind::SumFloat | Kind::Avg => self.set_float(self.float() + other.float()),
            Kind::MinFloat => self.set_float(self.float().min(other.float())),
            Kind::MaxFloat => self.set_float(self.float().max(other.float())),
            Kind::Generic => {}
        }
        self.count += other.count;
    }

    pub fn encode(accs: &[Acc], out: &mut Vec<u8>) {
        out.clear();
        for acc in accs {
            out.extend_from_slice(&acc.value.to_le_bytes());
            out.extend_from_slice(&acc.count.to_le_bytes());
        }
    }

    /// Decodes `n` accumulators; a stored value of another length is corrupt.
    pub fn decode(bytes: &[u8], n: usize, out: &mut Vec<Acc>) -> Result<(), OperatorError> {
        if bytes.len() != n * ACC_BYTES {
            return Err(OperatorError::input(format!(
                "corrupt window state: {} bytes where {n} accumulators take {}",
                bytes.len(),
                n * ACC_BYTES
            )));
        }
        out.clear();
        for chunk in bytes.chunks_exact(ACC_BYTES) {
            let (value, count) = chunk.split_at(8);
            let word = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            out.push(Acc { value: word(value), count: word(count) });
        }
        Ok(())
    }
}

/// The output column of aggregate `f` over the accumulators of several groups.
pub fn evaluate(f: &AggregateFn, accs: impl Iterator<Item = Acc>) -> Result<ArrayRef, OperatorError> {
    let array: ArrayRef = match f.kind {
        Kind::CountRows | Kind::CountValues => Arc::new(Int64Array::from_iter_values(accs.map(|a| a.count))),
        Kind::SumInt | Kind::MinInt | Kind::MaxInt => {
            Arc::new(accs.map(|a| (a.count > 0).then_some(a.value)).collect::<Int64Array>())
        }
        Kind::SumFloat | Kind::MinFloat | Kind::MaxFloat => {
            Arc::new(accs.map(|a| (a.count > 0).then(|| a.float())).collect::<Float64Array>())
        }
        Kind::Avg => {
            Arc::new(accs.map(|a| (a.count > 0).then(|| a.float() / a.count as f64)).collect::<Float64Array>())
        }
        Kind::Generic => return Err(OperatorError::internal("a DataFusion aggregate is evaluated from its states")),
    };
    if array.data_type() == &f.output_type {
        Ok(array)
    } else {
        Ok(cast(&array, &f.output_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_results_merge_to_the_whole() {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(4), None, Some(-2), Some(9)]));
        for kind in [Kind::CountRows, Kind::CountValues, Kind::SumInt, Kind::MinInt, Kind::MaxInt] {
            let argument = (kind != Kind::CountRows).then_some(&values);
            let mut whole = Acc::default();
            (0..4).for_each(|row| whole.update(kind, argument, row));
            let (mut left, mut right) = (Acc::default(), Acc::default());
            (0..2).for_each(|row| left.update(kind, argument, row));
            (2..4).for_each(|row| right.update(kind, argument, row));
            left.merge(kind, right);
            assert_eq!(left, whole, "{kind:?}");
        }
        let mut encoded = Vec::new();
        let accs = [Acc { value: -3, count: 2 }, Acc { value: 7, count: 1 }];
        Acc::encode(&accs, &mut encoded);
        let mut decoded = Vec::new();
        assert!(Acc::decode(&encoded, 2, &mut decoded).is_ok());
        assert_eq!(decoded, accs);
        assert!(Acc::decode(&encoded[1..], 2, &mut decoded).is_err(), "a cut value is refused");
    }
}

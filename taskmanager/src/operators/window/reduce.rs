//! Reducing windows: instead of aggregates, a window keeps one record, folded with `reduce(a, b)` pair
//! expressions per non-key column (a column without one keeps the newer value).
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use sluice_common::expr::{pair_schema, CompiledExpr, ExprCompiler};
use sluice_common::proto::Reduce;

use crate::operator_api::OperatorError;

/// A reducing window's fold: the input's non-key columns, an optional `a`/`b` expression for each.
pub(super) struct Reducer {
    columns: Vec<usize>,
    exprs: Vec<Option<CompiledExpr>>,
    types: Vec<DataType>,
    pair: SchemaRef,
    /// Encodes and decodes a reduced record (one row over the non-key columns).
    converter: RowConverter,
}

impl Reducer {
    pub(super) fn new(spec: &Reduce, keys: &[usize], input: &SchemaRef) -> Result<Self, OperatorError> {
        let columns: Vec<usize> = (0..input.fields().len()).filter(|c| !keys.contains(c)).collect();
        let compiler = ExprCompiler::new();
        let mut exprs = Vec::with_capacity(columns.len());
        for &c in &columns {
            let name = input.field(c).name();
            exprs.push(match spec.columns.iter().find(|p| p.name == *name) {
                Some(p) => Some(compiler.compile_pair(&p.expr, input)?),
                None => None,
            });
        }
        let types: Vec<DataType> = columns.iter().map(|&c| input.field(c).data_type().clone()).collect();
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(Self { columns, exprs, types, pair: Arc::new(pair_schema(input)), converter })
    }

    /// Row `row` of `batch` as a reduced record (its non-key columns).
    pub(super) fn record(&self, batch: &RecordBatch, row: usize) -> Vec<ArrayRef> {
        self.columns.iter().map(|&c| batch.column(c).slice(row, 1)).collect()
    }

    /// A record's every input column: its non-key `values`, and the key columns of row `row` of `batch`
    /// (the same key).
    pub(super) fn full(&self, values: &[ArrayRef], batch: &RecordBatch, row: usize) -> Vec<ArrayRef> {
        let mut full: Vec<ArrayRef> = batch.columns().iter().map(|c| c.slice(row, 1)).collect();
        for (i, &c) in self.columns.iter().enumerate() {
            full[c] = values[i].clone();
        }
        full
    }

    /// `reduce(a, b)` of two one-row records (non-key columns) of the key of row `row` of `batch`.
    pub(super) fn fold(
        &self,
        a: &[ArrayRef],
        b: &[ArrayRef],
        batch: &RecordBatch,
        row: usize,
    ) -> Result<Vec<ArrayRef>, OperatorError> {
        let columns = self.full(a, batch, row).into_iter().chain(self.full(b, batch, row)).collect();
        let pair = RecordBatch::try_new(self.pair.clone(), columns)?;
        let mut next = Vec::with_capacity(self.columns.len());
        for (i, expr) in self.exprs.iter().enumerate() {
            next.push(match expr {
                Some(expr) => {
                    let value = expr.evaluate(&pair)?;
                    if value.data_type() == &self.types[i] {
                        value
                    } else {
                        cast(&value, &self.types[i])?
                    }
                }
                None => b[i].clone(),
            });
        }
        Ok(next)
    }

    pub(super) fn encode(&self, record: &[ArrayRef]) -> Result<Vec<u8>, OperatorError> {
        Ok(self.converter.convert_columns(record)?.row(0).as_ref().to_vec())
    }

    pub(super) fn decode<'a>(&self, records: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>, OperatorError> {
        crate::operator_api::decode_stored_rows(&self.converter, records)
    }
}

//! `filter`: keeps the rows a compiled SQL predicate accepts. Stateless, so it needs nothing at checkpoints.
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::expr::{CompiledExpr, ExprCompiler};
use sluice_common::proto::Filter;

use crate::operator_api::{Operator, OperatorError};

/// Keeps the rows for which the predicate is true (null counts as false, as in SQL).
pub struct FilterOp {
    predicate: CompiledExpr,
}

impl FilterOp {
    pub fn new(spec: &Filter, input: &SchemaRef) -> Result<Self, OperatorError> {
        let predicate = ExprCompiler::new().compile(&spec.predicate, input)?;
        if predicate.data_type != DataType::Boolean {
            return Err(OperatorError::configuration(format!("predicate '{}' is not boolean", spec.predicate)));
        }
        Ok(Self { predicate })
    }
}

impl Operator for FilterOp {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let mask = self.predicate.evaluate(&batch)?;
        let kept = filter_record_batch(&batch, mask.as_boolean())?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
        Ok(())
    }
}

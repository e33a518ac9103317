//! `select`: computes each output column from the input with a compiled SQL expression. Stateless, so it
//! needs nothing at checkpoints.
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::expr::{CompiledExpr, ExprCompiler};
use sluice_common::proto::Select;

use crate::operator_api::{Operator, OperatorError};

/// Computes each output column with a compiled SQL expression.
pub struct SelectOp {
    columns: Vec<CompiledExpr>,
    output: SchemaRef,
}

impl SelectOp {
    pub fn new(spec: &Select, input: &SchemaRef, output: SchemaRef) -> Result<Self, OperatorError> {
        let compiler = ExprCompiler::new();
        let columns = spec.columns.iter().map(|c| compiler.compile(&c.expr, input)).collect::<Result<_, _>>()?;
        Ok(Self { columns, output })
    }
}

impl Operator for SelectOp {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let arrays = self.columns.iter().map(|c| c.evaluate(&batch)).collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(self.output.clone(), arrays)?);
        Ok(())
    }
}

//! The stateless operators: `select`, `filter`, and the `blackhole_sink`.
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::expr::{CompiledExpr, ExprCompiler};
use sluice_common::proto::{BlackholeSink, Filter, Select};

use super::{Operator, OperatorError};

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

/// Keeps the rows for which the predicate is true (null counts as false, as in SQL).
pub struct FilterOp {
    predicate: CompiledExpr,
}

impl FilterOp {
    pub fn new(spec: &Filter, input: &SchemaRef) -> Result<Self, OperatorError> {
        let predicate = ExprCompiler::new().compile(&spec.predicate, input)?;
        if predicate.data_type != DataType::Boolean {
            return Err(OperatorError::new(format!("predicate '{}' is not boolean", spec.predicate)));
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

/// Discards rows; when `rows_per_second` > 0, paces the task so this subtask consumes at most that rate.
pub struct BlackholeOp {
    rows_per_second: f64,
    started: Option<Instant>,
    rows: u64,
}

impl BlackholeOp {
    pub fn new(spec: &BlackholeSink) -> Self {
        Self { rows_per_second: spec.rows_per_second, started: None, rows: 0 }
    }
}

impl Operator for BlackholeOp {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.started.get_or_insert_with(Instant::now);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn pause(&mut self) -> Option<Duration> {
        if self.rows_per_second <= 0.0 {
            return None;
        }
        let due = Duration::from_secs_f64(self.rows as f64 / self.rows_per_second);
        let elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
        due.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

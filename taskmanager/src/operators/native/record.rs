//! Rows in and out of a native function: a [`Record`] is one row of an input batch, read column by name;
//! a [`Collector`] gathers emitted rows and turns them into one Arrow batch of the output schema per call.
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::{OperatorError, ScalarValue};

/// A record handed to [`KeyedProcessFunction::process_element`]: one row of an Arrow batch.
pub struct Record<'a> {
    pub(super) batch: &'a RecordBatch,
    pub(super) row: usize,
    pub(super) timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// The batch the record is a row of (for vectorized access).
    pub fn batch(&self) -> &'a RecordBatch {
        self.batch
    }

    /// The record's row in [`Record::batch`].
    pub fn row(&self) -> usize {
        self.row
    }

    /// The record's event time in ms, when its input has an event-time column.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    fn column(&self, name: &str) -> Result<&'a ArrayRef, OperatorError> {
        let index = self.batch.schema_ref().index_of(name)?;
        Ok(self.batch.column(index))
    }

    /// The value of column `name`.
    pub fn value(&self, name: &str) -> Result<ScalarValue, OperatorError> {
        ScalarValue::try_from_array(self.column(name)?, self.row).map_err(|e| OperatorError::internal(e.to_string()))
    }

    /// An integer or timestamp column's value as i64 (None when null).
    pub fn i64(&self, name: &str) -> Result<Option<i64>, OperatorError> {
        let column = self.column(name)?;
        if column.is_null(self.row) {
            return Ok(None);
        }
        let column =
            if column.data_type() == &DataType::Int64 { column.clone() } else { cast(column, &DataType::Int64)? };
        Ok(Some(column.as_primitive::<Int64Type>().value(self.row)))
    }

    /// A numeric column's value as f64 (None when null).
    pub fn f64(&self, name: &str) -> Result<Option<f64>, OperatorError> {
        let column = self.column(name)?;
        if column.is_null(self.row) {
            return Ok(None);
        }
        let column = cast(column, &DataType::Float64)?;
        Ok(Some(column.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(self.row)))
    }

    /// A string column's value (None when null).
    pub fn str(&self, name: &str) -> Result<Option<&'a str>, OperatorError> {
        let column = self.column(name)?;
        let strings = column.as_string_opt::<i32>().ok_or_else(|| {
            OperatorError::configuration(format!("column '{name}' is {}, not a string", column.data_type()))
        })?;
        Ok((!strings.is_null(self.row)).then(|| strings.value(self.row)))
    }
}

/// Where a function's output rows go; turned into one Arrow batch per call of the function.
pub struct Collector {
    schema: SchemaRef,
    rows: Vec<Vec<ScalarValue>>,
    batches: Vec<RecordBatch>,
}

impl Collector {
    pub(super) fn new(schema: SchemaRef) -> Self {
        Self { schema, rows: Vec::new(), batches: Vec::new() }
    }

    /// The operator's output schema (its `output` columns).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Emits one row: a value per output column, in order. Values are cast to the columns' types where Arrow
    /// can (an Int32 into an INT64 column); [`ScalarValue::Null`] is a null of the column's type.
    pub fn emit(&mut self, row: Vec<ScalarValue>) -> Result<(), OperatorError> {
        if row.len() != self.schema.fields().len() {
            return Err(OperatorError::configuration(format!(
                "a row of {} values was emitted; the output has {} columns ({})",
                row.len(),
                self.schema.fields().len(),
                self.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        self.rows.push(row);
        Ok(())
    }

    /// Emits a whole batch, which must have the output schema's column types.
    pub fn emit_batch(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        self.flush_rows()?;
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?;
        self.batches.push(batch);
        Ok(())
    }

    fn flush_rows(&mut self) -> Result<(), OperatorError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let typed_null =
                ScalarValue::try_from(field.data_type()).map_err(|e| OperatorError::internal(e.to_string()))?;
            let values = rows.iter().map(|row| if row[i].is_null() { typed_null.clone() } else { row[i].clone() });
            let array = ScalarValue::iter_to_array(values).map_err(|e| {
                OperatorError::input(format!("column '{}' got values of different types: {e}", field.name()))
            })?;
            columns.push(if array.data_type() == field.data_type() { array } else { cast(&array, field.data_type())? });
        }
        self.batches.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    pub(super) fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.flush_rows()?;
        out.append(&mut self.batches);
        Ok(())
    }
}

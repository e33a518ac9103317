//! `flat_map`: splits a string column into one row per piece; the other columns repeat.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder, UInt32Builder};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::FlatMap;

use crate::operator_api::{Operator, OperatorError};

pub struct FlatMapOp {
    column: usize,
    separator: Option<String>,
    output: SchemaRef,
}

impl FlatMapOp {
    pub fn new(spec: &FlatMap, input: &SchemaRef, output: SchemaRef) -> Result<Self, OperatorError> {
        let column = input.index_of(&spec.column)?;
        let separator = (!spec.separator.is_empty()).then(|| spec.separator.clone());
        Ok(Self { column, separator, output })
    }
}

impl Operator for FlatMapOp {
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let strings = cast(batch.column(self.column), &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        let mut pieces = StringBuilder::with_capacity(strings.len() * 4, strings.value_data().len());
        let mut parents = UInt32Builder::with_capacity(strings.len() * 4);
        for row in 0..strings.len() {
            if strings.is_null(row) {
                continue;
            }
            let text = strings.value(row);
            let mut push = |piece: &str| {
                pieces.append_value(piece);
                parents.append_value(row as u32);
            };
            match &self.separator {
                None => text.split_whitespace().for_each(&mut push),
                Some(separator) => text.split(separator.as_str()).for_each(&mut push),
            }
        }
        let pieces: ArrayRef = Arc::new(pieces.finish());
        if pieces.is_empty() {
            return Ok(());
        }
        let parents = parents.finish();
        let columns = batch
            .columns()
            .iter()
            .enumerate()
            .map(
                |(i, column)| if i == self.column { Ok(pieces.clone()) } else { take(column.as_ref(), &parents, None) },
            )
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(self.output.clone(), columns)?);
        Ok(())
    }
}

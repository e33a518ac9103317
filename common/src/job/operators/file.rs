//! `file_source` and `file_sink`: JSON lines, CSV or plain lines from files, and part files out.
use datafusion::arrow::datatypes::SchemaRef;

use super::schema::{check_batch_size, declared_schema, refuse_csv_binary};
use super::{OperatorSpec, Role, SchemaInput};
use crate::proto::{self, DataType};

impl OperatorSpec for proto::FileSource {
    const KIND: &'static str = "file_source";
    const ROLE: Role = Role::Source;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let report = &mut *input.report;
        check_batch_size(self.batch_size, report);
        if self.path.trim().is_empty() {
            report("'path' is missing (a file or a directory of files)".into());
        }
        if self.schema.is_empty() {
            report("'schema' is missing: list the columns to read as [{\"name\": ..., \"type\": ...}]".into());
            return None;
        }
        match self.format() {
            proto::FileFormat::Lines if self.schema.len() != 1 || self.schema[0].r#type() != DataType::String => {
                report("format LINES reads each line into one STRING column: give exactly one STRING column".into())
            }
            proto::FileFormat::Bytes => {
                report("format BYTES is for Kafka record values; a file is read as JSON, CSV or LINES".into())
            }
            proto::FileFormat::Csv => refuse_csv_binary(&self.schema, report),
            _ => {}
        }
        Some(declared_schema(&self.schema, report))
    }
}

impl OperatorSpec for proto::FileSink {
    const KIND: &'static str = "file_sink";
    const ROLE: Role = Role::Sink;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        if self.path.trim().is_empty() {
            (input.report)("'path' is missing (the output directory)".into());
        }
        Some(input.input.clone())
    }
}

//! Checks that several operator kinds share: key columns, column names, declared schemas, batch sizes.
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef, TimeUnit};

use crate::job::bounds::{check_name_length, COLUMNS_MAX};
use crate::job::hint;
use crate::keygroup::is_hashable_key_type;
use crate::proto::{self, DataType, Edge, Partitioning};

/// The largest batch a source may be asked to emit, in rows. Larger batches only add latency and memory.
pub const BATCH_SIZE_MAX: u32 = 1 << 16;
/// The rows a source emits per batch when its settings do not say: large enough that per-batch costs
/// vanish, small enough that a batch stays in cache and latency stays in milliseconds.
pub const BATCH_SIZE_DEFAULT: u32 = 1024;
const _: () = assert!(BATCH_SIZE_DEFAULT >= 1 && BATCH_SIZE_DEFAULT <= BATCH_SIZE_MAX);

/// Whether a column can carry event time (milliseconds since the epoch).
pub fn is_time_type(data_type: &ArrowType) -> bool {
    matches!(data_type, ArrowType::Timestamp(TimeUnit::Millisecond, None) | ArrowType::Int64)
}

/// The Arrow type of a job-file type.
pub fn arrow_type(data_type: DataType) -> Option<ArrowType> {
    Some(match data_type {
        DataType::Unspecified => return None,
        DataType::String => ArrowType::Utf8,
        DataType::Int64 => ArrowType::Int64,
        DataType::Float64 => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::TimestampMs => ArrowType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Int32 => ArrowType::Int32,
        DataType::Binary => ArrowType::Binary,
    })
}

/// Checks a keyed operator's key columns and that its inputs are HASH-partitioned on them; returns the key
/// fields found.
pub(crate) fn check_keys(
    keys: &[String],
    input: &SchemaRef,
    in_edges: &[&Edge],
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    if keys.is_empty() {
        report("'keys' is missing: the key columns".into());
        return Vec::new();
    }
    if keys.len() > COLUMNS_MAX {
        report(format!("'keys' names {} columns; the most allowed is {COLUMNS_MAX}", keys.len()));
        return Vec::new();
    }
    let mut fields = Vec::new();
    let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
    for key in keys {
        match input.field_with_name(key) {
            Ok(field) if is_hashable_key_type(field.data_type()) => fields.push(field.clone()),
            Ok(field) => report(format!("key column '{key}' has type {}, which cannot be a key", field.data_type())),
            Err(_) => {
                report(format!("unknown key column '{key}'{}; the input has: {}", hint(key, &names), names.join(", ")))
            }
        }
    }
    for edge in in_edges {
        if edge.partitioning() != Partitioning::Hash || edge.key != keys {
            report(format!(
                "its input from '{}' must be partitioned by its keys: set that edge's partitioning to HASH with key {:?}",
                edge.from, keys
            ));
        }
    }
    fields
}

pub(crate) fn check_batch_size(batch_size: Option<u32>, report: &mut dyn FnMut(String)) {
    let batch_size = batch_size.unwrap_or(BATCH_SIZE_DEFAULT);
    if !(1..=BATCH_SIZE_MAX).contains(&batch_size) {
        report(format!("batch_size must be in 1..={BATCH_SIZE_MAX} (got {batch_size})"));
    }
}

pub(crate) fn unique_names<'a>(names: impl Iterator<Item = &'a str>, what: &str, report: &mut dyn FnMut(String)) {
    let mut seen = HashSet::new();
    for (index, name) in names.enumerate() {
        if index == COLUMNS_MAX {
            report(format!("more than {COLUMNS_MAX} {what}s; the most allowed is {COLUMNS_MAX}"));
            return;
        }
        if name.is_empty() {
            report(format!("a {what} has no name"));
        } else if let Some(problem) = check_name_length(&format!("{what} name"), name) {
            report(problem);
        } else if !seen.insert(name) {
            report(format!("duplicate {what} name '{name}'"));
        }
    }
}

/// Arrow's CSV reader has no binary type (its writer writes hex): a CSV source cannot declare a BINARY column.
pub(crate) fn refuse_csv_binary<'a>(
    columns: impl IntoIterator<Item = &'a proto::Field>,
    report: &mut dyn FnMut(String),
) {
    for column in columns {
        if column.r#type() == DataType::Binary {
            report(format!(
                "column '{}' is BINARY, which format CSV cannot read; use JSON (hex strings) or BYTES (Kafka)",
                column.name
            ));
        }
    }
}

/// A schema declared in the job file (a file source's columns, a custom operator's output).
pub(crate) fn declared_schema(declared: &[proto::Field], report: &mut dyn FnMut(String)) -> SchemaRef {
    unique_names(declared.iter().map(|f| f.name.as_str()), "column", report);
    let mut fields = Vec::with_capacity(declared.len());
    for field in declared {
        match arrow_type(field.r#type()) {
            Some(data_type) => fields.push(ArrowField::new(&field.name, data_type, field.nullable)),
            None => report(format!(
                "column '{}' has no type; give one of: STRING, INT64, INT32, FLOAT64, BOOL, TIMESTAMP_MS, BINARY",
                field.name
            )),
        }
    }
    Arc::new(Schema::new(fields))
}

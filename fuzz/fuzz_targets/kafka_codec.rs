//! The Kafka source's record decoder and the sink's encoder. The first byte picks the format, the schema and
//! the metadata columns; the rest is split into record values at 0xFF bytes (a value starting with 0xFE is
//! a tombstone: no value). Decoding must account for every record (a row or a named bad record), and the
//! rows it made must encode.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice_common::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use sluice_common::proto::FileFormat;
use sluice_taskmanager::fuzzing::{RawRecord, RecordDecoder, RecordEncoder};

const RECORD_SEPARATOR: u8 = 0xFF;
const TOMBSTONE_MARK: u8 = 0xFE;
const KEY_COLUMN: &str = "kafka_key";
const TIMESTAMP_COLUMN: &str = "kafka_timestamp";
/// Bytes of a value's start that also serve as its record's key.
const KEY_BYTES: usize = 4;

/// The value columns of a JSON or CSV topic: every type a job file can declare, nullable or not.
fn table_fields(nullable: bool) -> Vec<Field> {
    vec![
        Field::new("name", DataType::Utf8, nullable),
        Field::new("count", DataType::Int64, nullable),
        Field::new("price", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("small", DataType::Int32, true),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let nullable = selector & 0x04 != 0;
    let (format, mut fields) = match selector & 0x03 {
        0 => (FileFormat::Json, table_fields(nullable)),
        1 => (FileFormat::Csv, table_fields(nullable)),
        2 => (FileFormat::Lines, vec![Field::new("line", DataType::Utf8, nullable)]),
        _ => (FileFormat::Bytes, vec![Field::new("value", DataType::Binary, nullable)]),
    };
    let with_key = selector & 0x08 != 0;
    let with_timestamp = selector & 0x10 != 0;
    if with_key {
        let key_type = if selector & 0x20 != 0 { DataType::Binary } else { DataType::Utf8 };
        fields.push(Field::new(KEY_COLUMN, key_type, true));
    }
    if with_timestamp {
        fields.push(Field::new(TIMESTAMP_COLUMN, DataType::Timestamp(TimeUnit::Millisecond, None), true));
    }
    let schema = Arc::new(Schema::new(fields));
    let records: Vec<RawRecord<'_>> = rest
        .split(|&b| b == RECORD_SEPARATOR)
        .enumerate()
        .map(|(i, value)| RawRecord {
            value: (value.first() != Some(&TOMBSTONE_MARK)).then_some(value),
            key: Some(&value[..value.len().min(KEY_BYTES)]),
            timestamp: Some(i as i64),
        })
        .collect();
    let key_column = if with_key { KEY_COLUMN } else { "" };
    let timestamp_column = if with_timestamp { TIMESTAMP_COLUMN } else { "" };
    let Ok(decoder) = RecordDecoder::new(schema.clone(), format, timestamp_column, key_column) else { return };
    let Ok((batch, bad)) = decoder.decode(&records) else { return };
    assert_eq!(batch.num_rows() + bad.len(), records.len(), "every record is a row or a bad record");
    assert!(bad.iter().all(|(index, _)| *index < records.len()), "bad records are named by their index");
    let Ok(encoder) = RecordEncoder::new(&schema, format, key_column) else { return };
    if let Ok(encoded) = encoder.encode(&batch) {
        assert_eq!(encoded.len(), batch.num_rows(), "one record per row");
    }
});

//! Kafka record values to Arrow rows and back: JSON objects, CSV lines, or plain text.
//!
//! Decoding works a batch of records at a time through Arrow's JSON and CSV decoders. A record that does not
//! decode must be found and named (its topic, partition and offset go to the bad-record policy), so when a
//! batch fails the records are tried one by one, and the good ones decoded together again. Bad data is rare;
//! the fast path stays a single decoder call per batch.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::{csv, json};
use sluice_common::proto::FileFormat;

use crate::operators::OperatorError;

/// One Kafka record as read: what decoding needs of it.
pub struct RawRecord<'a> {
    pub value: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
}

/// Turns record values (plus key and timestamp, for the metadata columns) into rows of `schema`.
pub struct RecordDecoder {
    schema: SchemaRef,
    /// The columns decoded from the value: `schema` without the metadata columns.
    value_schema: SchemaRef,
    format: FileFormat,
    timestamp_column: Option<String>,
    key_column: Option<String>,
}

impl RecordDecoder {
    pub fn new(
        schema: SchemaRef,
        format: FileFormat,
        timestamp_column: &str,
        key_column: &str,
    ) -> Result<Self, OperatorError> {
        let metadata = |name: &str| (!name.is_empty()).then(|| name.to_string());
        let (timestamp_column, key_column) = (metadata(timestamp_column), metadata(key_column));
        let value_fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| Some(f.name()) != timestamp_column.as_ref() && Some(f.name()) != key_column.as_ref())
            .cloned()
            .collect();
        let format = match format {
            FileFormat::Unspecified => FileFormat::Json,
            other => other,
        };
        if format == FileFormat::Lines && (value_fields.len() != 1 || value_fields[0].data_type() != &DataType::Utf8) {
            return Err(OperatorError::new("format LINES decodes the value into one STRING column"));
        }
        Ok(Self { schema, value_schema: Arc::new(Schema::new(value_fields)), format, timestamp_column, key_column })
    }

    /// Decodes `records` into one batch. The records that cannot be decoded are left out and returned with
    /// their index in `records` and the reason.
    pub fn decode(&self, records: &[RawRecord<'_>]) -> Result<(RecordBatch, Vec<(usize, String)>), OperatorError> {
        if let Ok(batch) = self.decode_all(records) {
            return Ok((batch, Vec::new()));
        }
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.decode_all(std::slice::from_ref(record)) {
                Ok(_) => good.push(RawRecord { value: record.value, key: record.key, timestamp: record.timestamp }),
                Err(reason) => bad.push((index, reason)),
            }
        }
        // Each of `good` decoded alone; together they decode too (the decoders hold no state across rows).
        let batch = self.decode_all(&good).map_err(OperatorError::new)?;
        Ok((batch, bad))
    }

    fn decode_all(&self, records: &[RawRecord<'_>]) -> Result<RecordBatch, String> {
        let values = self.decode_values(records)?;
        if values.num_rows() != records.len() {
            return Err(format!("the value holds {} rows, not one", values.num_rows()));
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let column: ArrayRef = if Some(field.name()) == self.timestamp_column.as_ref() {
                Arc::new(TimestampMillisecondArray::from_iter(records.iter().map(|r| r.timestamp)))
            } else if Some(field.name()) == self.key_column.as_ref() {
                Arc::new(StringArray::from_iter(records.iter().map(|r| r.key.map(String::from_utf8_lossy))))
            } else {
                values.column_by_name(field.name()).cloned().ok_or_else(|| format!("no column '{}'", field.name()))?
            };
            columns.push(column);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }

    fn decode_values(&self, records: &[RawRecord<'_>]) -> Result<RecordBatch, String> {
        let rows = records.len().max(1);
        match self.format {
            FileFormat::Lines => {
                let mut builder = StringBuilder::with_capacity(records.len(), 0);
                for record in records {
                    let text =
                        std::str::from_utf8(value(record)?).map_err(|e| format!("the value is not UTF-8: {e}"))?;
                    builder.append_value(text.strip_suffix('\n').unwrap_or(text));
                }
                let column: ArrayRef = Arc::new(builder.finish());
                RecordBatch::try_new(self.value_schema.clone(), vec![column]).map_err(|e| e.to_string())
            }
            FileFormat::Csv => {
                let mut decoder = csv::ReaderBuilder::new(self.value_schema.clone())
                    .with_header(false)
                    .with_batch_size(rows)
                    .build_decoder();
                for record in records {
                    let mut line = value(record)?.to_vec();
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    feed(&line, |bytes| decoder.decode(bytes))?;
                }
                decoder.flush().map_err(|e| e.to_string())?.ok_or_else(|| "no rows".to_string())
            }
            FileFormat::Json | FileFormat::Unspecified => {
                let mut decoder = json::ReaderBuilder::new(self.value_schema.clone())
                    .with_batch_size(rows)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                for record in records {
                    feed(value(record)?, |bytes| decoder.decode(bytes))?;
                    feed(b"\n", |bytes| decoder.decode(bytes))?;
                }
                match decoder.flush().map_err(|e| e.to_string())? {
                    Some(batch) => Ok(batch),
                    None => Ok(RecordBatch::new_empty(self.value_schema.clone())),
                }
            }
        }
    }
}

fn value<'a>(record: &RawRecord<'a>) -> Result<&'a [u8], String> {
    record.value.ok_or_else(|| "the record has no value".to_string())
}

/// Hands all of `bytes` to an incremental decoder.
fn feed(
    mut bytes: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<usize, datafusion::arrow::error::ArrowError>,
) -> Result<(), String> {
    while !bytes.is_empty() {
        let used = decode(bytes).map_err(|e| e.to_string())?;
        if used == 0 {
            return Err("the decoder took no bytes (a batch is full)".into());
        }
        bytes = &bytes[used..];
    }
    Ok(())
}

/// A record to write: its key (if any) and value.
pub type KafkaRecord = (Option<Vec<u8>>, Vec<u8>);

/// Turns rows into record values and keys.
pub struct RecordEncoder {
    format: FileFormat,
    key_column: Option<usize>,
}

impl RecordEncoder {
    pub fn new(schema: &Schema, format: FileFormat, key_column: &str) -> Result<Self, OperatorError> {
        let key_column = match key_column {
            "" => None,
            name => Some(schema.index_of(name).map_err(|_| OperatorError::new(format!("no key column '{name}'")))?),
        };
        let format = match format {
            FileFormat::Unspecified => FileFormat::Json,
            other => other,
        };
        if format == FileFormat::Lines && (schema.fields().len() != 1 || schema.field(0).data_type() != &DataType::Utf8)
        {
            return Err(OperatorError::new("format LINES writes one STRING column as the value"));
        }
        Ok(Self { format, key_column })
    }

    /// The (key, value) of every row of `batch`, in order.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<KafkaRecord>, OperatorError> {
        let keys: Option<StringArray> = match self.key_column {
            Some(index) => {
                let column = cast(batch.column(index), &DataType::Utf8)?;
                column.as_any().downcast_ref::<StringArray>().cloned()
            }
            None => None,
        };
        let key = |row: usize| keys.as_ref().filter(|k| k.is_valid(row)).map(|k| k.value(row).as_bytes().to_vec());
        let values: Vec<Vec<u8>> = match self.format {
            FileFormat::Lines => {
                let column = batch.column(0);
                let text = column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| OperatorError::new("format LINES needs a STRING column"))?;
                (0..batch.num_rows())
                    .map(|row| if text.is_valid(row) { text.value(row).as_bytes().to_vec() } else { Vec::new() })
                    .collect()
            }
            FileFormat::Csv => {
                // One writer call per row: a quoted field may hold a newline, so lines cannot be split after.
                let mut values = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    let mut writer = csv::WriterBuilder::new().with_header(false).build(Vec::new());
                    writer.write(&batch.slice(row, 1))?;
                    let mut line = writer.into_inner();
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    values.push(line);
                }
                values
            }
            FileFormat::Json | FileFormat::Unspecified => {
                // JSON escapes newlines inside strings, so each row is exactly one line.
                let mut writer = json::LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                let buffer = writer.into_inner();
                buffer.split(|&b| b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect()
            }
        };
        if values.len() != batch.num_rows() {
            return Err(OperatorError::new(format!("{} rows encoded into {} values", batch.num_rows(), values.len())));
        }
        Ok(values.into_iter().enumerate().map(|(row, value)| (key(row), value)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Field, Int64Type, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn raw(value: &[u8]) -> RawRecord<'_> {
        RawRecord { value: Some(value), key: None, timestamp: Some(7) }
    }

    #[test]
    fn bad_json_records_are_named_and_the_rest_decode() {
        let decoder = RecordDecoder::new(schema(), FileFormat::Json, "ts", "").expect("decoder");
        let records = [
            raw(br#"{"word": "a", "n": 1}"#),
            raw(b"{not json"),
            raw(br#"{"word": "b", "n": "x"}"#),
            raw(br#"{"word": "c", "n": 3}"#),
            RawRecord { value: None, key: None, timestamp: None },
        ];
        let (batch, bad) = decoder.decode(&records).expect("decode");
        assert_eq!(bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(batch.num_rows(), 2);
        let words: Vec<_> = batch.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(words, vec!["a", "c"]);
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().values().to_vec(), vec![1, 3]);
        assert_eq!(
            batch.column(2).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().value(0),
            7
        );
    }

    #[test]
    fn csv_and_lines_decode_and_keys_fill_their_column() {
        let csv = RecordDecoder::new(schema(), FileFormat::Csv, "ts", "").expect("decoder");
        let (batch, bad) = csv.decode(&[raw(b"a,1"), raw(b"b,2,extra"), raw(b"c,3\n")]).expect("decode");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 1);
        assert_eq!(batch.num_rows(), 2);

        let lines_schema = Arc::new(Schema::new(vec![
            Field::new("line", DataType::Utf8, false),
            Field::new("k", DataType::Utf8, true),
        ]));
        let lines = RecordDecoder::new(lines_schema, FileFormat::Lines, "", "k").expect("decoder");
        let records = [
            RawRecord { value: Some(b"hello world"), key: Some(b"k1"), timestamp: None },
            RawRecord { value: Some(&[0xff, 0xfe]), key: None, timestamp: None },
        ];
        let (batch, bad) = lines.decode(&records).expect("decode");
        assert_eq!(bad.len(), 1);
        assert!(bad[0].1.contains("UTF-8"), "{}", bad[0].1);
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "hello world");
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "k1");
    }

    #[test]
    fn rows_encode_one_value_each_with_their_key() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["a,b", "line\nbreak"])), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .expect("batch");
        let json = RecordEncoder::new(&schema, FileFormat::Json, "n").expect("encoder").encode(&batch).expect("encode");
        assert_eq!(json[0], (Some(b"1".to_vec()), br#"{"word":"a,b","n":1}"#.to_vec()));
        assert_eq!(json[1].1, br#"{"word":"line\nbreak","n":2}"#.to_vec());
        let csv = RecordEncoder::new(&schema, FileFormat::Csv, "").expect("encoder").encode(&batch).expect("encode");
        assert_eq!(csv[0], (None, b"\"a,b\",1".to_vec()));
        assert_eq!(csv[1].1, b"\"line\nbreak\",2".to_vec());
    }
}

//! Kafka record values to Arrow rows and back: JSON objects, CSV lines, plain text or bytes as they are.
//!
//! Decoding works a batch of records at a time through Arrow's JSON and CSV decoders. A record that does not
//! decode must be found and named (its topic, partition and offset go to the bad-record policy), so when a
//! batch fails the records are tried one by one, and the good ones decoded together again. Bad data is rare;
//! the fast path stays a single decoder call per batch.
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, StringArray, StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::{csv, json};
use sluice_common::proto::FileFormat;

use crate::operator_api::OperatorError;

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
        let single = |wanted: &DataType| value_fields.len() == 1 && value_fields[0].data_type() == wanted;
        if format == FileFormat::Lines && !single(&DataType::Utf8) {
            return Err(OperatorError::configuration("format LINES decodes the value into one STRING column"));
        }
        if format == FileFormat::Bytes && !single(&DataType::Binary) {
            return Err(OperatorError::configuration("format BYTES decodes the value into one BINARY column"));
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
        let batch = self.decode_all(&good).map_err(OperatorError::internal)?;
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
                if field.data_type() == &DataType::Binary {
                    Arc::new(BinaryArray::from_iter(records.iter().map(|r| r.key)))
                } else {
                    Arc::new(StringArray::from_iter(records.iter().map(|r| r.key.map(String::from_utf8_lossy))))
                }
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
                    let Some(bytes) = self.nullable_value(record)? else {
                        builder.append_null();
                        continue;
                    };
                    let text = std::str::from_utf8(bytes).map_err(|e| format!("the value is not UTF-8: {e}"))?;
                    builder.append_value(text.strip_suffix('\n').unwrap_or(text));
                }
                let column: ArrayRef = Arc::new(builder.finish());
                RecordBatch::try_new(self.value_schema.clone(), vec![column]).map_err(|e| e.to_string())
            }
            FileFormat::Bytes => {
                let values = records.iter().map(|r| self.nullable_value(r)).collect::<Result<Vec<_>, _>>()?;
                let column: ArrayRef = Arc::new(BinaryArray::from(values));
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

    /// LINES and BYTES: the value, or None for a record without one (a tombstone) when the value column may
    /// hold nulls; without a nullable column such a record is bad.
    fn nullable_value<'a>(&self, record: &RawRecord<'a>) -> Result<Option<&'a [u8]>, String> {
        match record.value {
            None if self.value_schema.field(0).is_nullable() => Ok(None),
            _ => value(record).map(Some),
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

/// A record to write: its key and value (None: no key; no value, a tombstone).
pub type KafkaRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Turns rows into record values and keys.
pub struct RecordEncoder {
    format: FileFormat,
    key_column: Option<usize>,
    /// LINES and BYTES: the one column besides the key that is the value.
    value_column: usize,
}

impl RecordEncoder {
    pub fn new(schema: &Schema, format: FileFormat, key_column: &str) -> Result<Self, OperatorError> {
        let key_column = match key_column {
            "" => None,
            name => Some(
                schema.index_of(name).map_err(|_| OperatorError::configuration(format!("no key column '{name}'")))?,
            ),
        };
        let format = match format {
            FileFormat::Unspecified => FileFormat::Json,
            other => other,
        };
        let values: Vec<usize> = (0..schema.fields().len()).filter(|&i| Some(i) != key_column).collect();
        let value_column = values.first().copied().unwrap_or(0);
        let single = |wanted: &DataType| values.len() == 1 && schema.field(value_column).data_type() == wanted;
        if format == FileFormat::Lines && !single(&DataType::Utf8) {
            return Err(OperatorError::configuration(
                "format LINES writes one STRING column besides the key as the value",
            ));
        }
        if format == FileFormat::Bytes && !single(&DataType::Binary) {
            return Err(OperatorError::configuration(
                "format BYTES writes one BINARY column besides the key as the value",
            ));
        }
        Ok(Self { format, key_column, value_column })
    }

    /// The (key, value) of every row of `batch`, in order.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<KafkaRecord>, OperatorError> {
        let keys = match self.key_column {
            Some(index) if batch.column(index).data_type() == &DataType::Binary => column_bytes(batch.column(index))?,
            Some(index) => column_bytes(&cast(batch.column(index), &DataType::Utf8)?)?,
            None => vec![None; batch.num_rows()],
        };
        let values: Vec<Option<Vec<u8>>> = match self.format {
            // A null value is a record without value: a tombstone, which deletes its key in a compacted topic.
            FileFormat::Lines | FileFormat::Bytes => column_bytes(batch.column(self.value_column))?,
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
                    values.push(Some(line));
                }
                values
            }
            FileFormat::Json | FileFormat::Unspecified => {
                // JSON escapes newlines inside strings, so each row is exactly one line.
                let mut writer = json::LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                let buffer = writer.into_inner();
                buffer.split(|&b| b == b'\n').filter(|line| !line.is_empty()).map(|line| Some(line.to_vec())).collect()
            }
        };
        if values.len() != batch.num_rows() {
            return Err(OperatorError::internal(format!(
                "{} rows encoded into {} values",
                batch.num_rows(),
                values.len()
            )));
        }
        Ok(keys.into_iter().zip(values).collect())
    }
}

/// Each row's bytes of a STRING (its UTF-8) or BINARY column; None where the row is null.
fn column_bytes(column: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>, OperatorError> {
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().map(|v| v.map(|text| text.as_bytes().to_vec())).collect(),
        DataType::Binary => column.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::to_vec)).collect(),
        other => return Err(OperatorError::configuration(format!("a {other} column cannot be written as bytes"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
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
        assert_eq!(json[0], (Some(b"1".to_vec()), Some(br#"{"word":"a,b","n":1}"#.to_vec())));
        assert_eq!(json[1].1, Some(br#"{"word":"line\nbreak","n":2}"#.to_vec()));
        let csv = RecordEncoder::new(&schema, FileFormat::Csv, "").expect("encoder").encode(&batch).expect("encode");
        assert_eq!(csv[0], (None, Some(b"\"a,b\",1".to_vec())));
        assert_eq!(csv[1].1, Some(b"\"line\nbreak\",2".to_vec()));
    }

    #[test]
    fn bytes_pass_through_unchanged_both_ways() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("payload", DataType::Binary, true),
            Field::new("k", DataType::Binary, true),
        ]));
        let decoder = RecordDecoder::new(schema.clone(), FileFormat::Bytes, "", "k").expect("decoder");
        let not_text: &[u8] = &[0xff, 0x00, b'\n', 0xfe];
        let records = [
            RawRecord { value: Some(not_text), key: Some(&[0x80, 0x01]), timestamp: None },
            RawRecord { value: Some(b""), key: None, timestamp: None },
            // A tombstone: into the nullable value column as null.
            RawRecord { value: None, key: Some(b"gone"), timestamp: None },
        ];
        let (batch, bad) = decoder.decode(&records).expect("decode");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), not_text);
        assert_eq!(batch.column(0).as_binary::<i32>().value(1), b"");
        assert!(batch.column(0).is_null(2));
        assert_eq!(batch.column(1).as_binary::<i32>().value(0), &[0x80, 0x01]);
        assert!(batch.column(1).is_null(1));

        // Written back: the key column is left out of the value, and both come out as read, the tombstone too.
        let encoded =
            RecordEncoder::new(&schema, FileFormat::Bytes, "k").expect("encoder").encode(&batch).expect("encode");
        let expected = vec![
            (Some(vec![0x80, 0x01]), Some(not_text.to_vec())),
            (None, Some(Vec::new())),
            (Some(b"gone".to_vec()), None),
        ];
        assert_eq!(encoded, expected);
        // JSON writes the bytes as hex.
        let json = RecordEncoder::new(&schema, FileFormat::Json, "").expect("encoder").encode(&batch).expect("encode");
        assert_eq!(json[0].1, Some(br#"{"payload":"ff000afe","k":"8001"}"#.to_vec()));

        // Without a nullable value column, a record without value is bad.
        let required = Arc::new(Schema::new(vec![Field::new("payload", DataType::Binary, false)]));
        let decoder = RecordDecoder::new(required, FileFormat::Bytes, "", "").expect("decoder");
        let (_, bad) = decoder.decode(&records).expect("decode");
        assert_eq!(bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2], "{bad:?}");

        let text = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
        assert!(RecordDecoder::new(text.clone(), FileFormat::Bytes, "", "").is_err(), "BYTES needs a BINARY column");
        assert!(RecordEncoder::new(&text, FileFormat::Bytes, "").is_err(), "BYTES needs a BINARY column");
        assert!(RecordEncoder::new(&schema, FileFormat::Bytes, "").is_err(), "two value columns");
    }
}

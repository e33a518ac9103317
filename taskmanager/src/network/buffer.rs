//! Network buffers: how batches become the units that credits pay for.
//!
//! One credit pays for one buffer of at most `buffer_size_bytes`. A subpartition concatenates small batches
//! until they fill a buffer (or the buffer timeout passes), and cuts a large batch into row slices that each
//! fit. Remote buffers are measured by their Arrow IPC encoding (what crosses the wire); local ones by
//! the memory of the rows they hold ([`batch_bytes`]), since they are handed over without encoding. A single
//! row larger than a buffer still travels, alone, in a buffer of its own: rows are never cut.
//!
//! Decoding uses Arrow's push-based `StreamDecoder` over the received bytes, which only copies or slices
//! what is actually there. (The pull-based `StreamReader` allocates whatever lengths the IPC metadata
//! announces, which a corrupt frame could set to gigabytes.)
use bytes::Bytes;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

/// The payload of a data buffer: a batch as-is (same TaskManager) or its IPC encoding (remote).
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    Batch(RecordBatch),
    Ipc(Bytes),
}

/// One network buffer, with the size that was checked against `buffer_size_bytes`.
#[derive(Clone, Debug)]
pub(crate) struct DataBuffer {
    pub payload: Payload,
    pub bytes: usize,
}

/// Bytes of memory the rows of `batch` occupy, counting only the slice the batch covers.
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            // get_slice_memory_size fails only for layouts it cannot slice-measure; the whole array then
            // is a safe overestimate.
            data.get_slice_memory_size().unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

/// Encodes `batch` as an Arrow IPC stream (schema message, one batch message, end-of-stream marker).
pub(crate) fn encode_batch(batch: &RecordBatch) -> Result<Bytes, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::with_capacity(batch_bytes(batch) + 512), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(Bytes::from(writer.into_inner()?))
}

/// Decodes an IPC stream that must hold exactly one batch.
pub(crate) fn decode_batch(ipc: Bytes) -> Result<RecordBatch, ArrowError> {
    // Arrow's IPC reader panics on some malformed schemas: an error here, like any other bad frame.
    sluice_common::untrusted::catch_panic(|| decode_one_batch(ipc))
        .unwrap_or_else(|panic| Err(ArrowError::IpcError(format!("malformed IPC stream: {panic}"))))
}

fn decode_one_batch(ipc: Bytes) -> Result<RecordBatch, ArrowError> {
    let mut buffer = Buffer::from(ipc);
    let mut decoder = StreamDecoder::new();
    let batch = decoder
        .decode(&mut buffer)?
        .ok_or_else(|| ArrowError::IpcError("the IPC stream holds no record batch".into()))?;
    if decoder.decode(&mut buffer)?.is_some() {
        return Err(ArrowError::IpcError("the IPC stream holds more than one record batch".into()));
    }
    decoder.finish()?;
    Ok(batch)
}

/// Concatenates the batches accumulated for one buffer (no copy for a single batch).
pub(crate) fn concat(mut batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, ArrowError> {
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.pop()),
        _ => concat_batches(&batches[0].schema(), &batches).map(Some),
    }
}

/// Cuts `batch` into buffers of at most `buffer_size_bytes` where possible, measured in memory (local
/// channels: the batch is handed over as-is).
pub(crate) fn split_local(batch: RecordBatch, buffer_size_bytes: usize) -> Vec<DataBuffer> {
    let measure = |slice: &RecordBatch| -> Result<DataBuffer, std::convert::Infallible> {
        Ok(DataBuffer { bytes: batch_bytes(slice), payload: Payload::Batch(slice.clone()) })
    };
    match split_with(batch, buffer_size_bytes, measure) {
        Ok(buffers) => buffers,
        Err(never) => match never {},
    }
}

/// Cuts `batch` into IPC buffers of at most `buffer_size_bytes` where possible (remote channels).
pub(crate) fn split_remote(batch: RecordBatch, buffer_size_bytes: usize) -> Result<Vec<DataBuffer>, ArrowError> {
    split_with(batch, buffer_size_bytes, |slice| {
        let ipc = encode_batch(slice)?;
        Ok(DataBuffer { bytes: ipc.len(), payload: Payload::Ipc(ipc) })
    })
}

/// Slices are first sized from the average row size; a slice that `measure` still finds too big (rows of
/// uneven size, IPC's schema and padding) is halved until it fits or is a single row. Halving at most
/// doubles the work: the halves of a slice are each measured once.
fn split_with<E>(
    batch: RecordBatch,
    buffer_size_bytes: usize,
    mut measure: impl FnMut(&RecordBatch) -> Result<DataBuffer, E>,
) -> Result<Vec<DataBuffer>, E> {
    let mut buffers = Vec::new();
    // Slices still to measure, the next one last; halving pushes both halves back in order.
    let mut todo: Vec<RecordBatch> = split_by_estimate(batch, buffer_size_bytes);
    todo.reverse();
    while let Some(slice) = todo.pop() {
        let buffer = measure(&slice)?;
        if buffer.bytes > buffer_size_bytes && slice.num_rows() > 1 {
            let half = slice.num_rows() / 2;
            todo.push(slice.slice(half, slice.num_rows() - half));
            todo.push(slice.slice(0, half));
            continue;
        }
        buffers.push(buffer);
    }
    Ok(buffers)
}

/// Row slices of about `buffer_size_bytes` each, sized from the batch's average row size.
fn split_by_estimate(batch: RecordBatch, buffer_size_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes = batch_bytes(&batch);
    if bytes <= buffer_size_bytes || rows <= 1 {
        return vec![batch];
    }
    let rows_per_buffer = ((buffer_size_bytes as u128 * rows as u128) / bytes as u128).max(1) as usize;
    (0..rows).step_by(rows_per_buffer).map(|start| batch.slice(start, rows_per_buffer.min(rows - start))).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let ids = Int64Array::from_iter_values(0..rows);
        let names = StringArray::from_iter_values((0..rows).map(|i| format!("name-{i}")));
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(names)]).expect("valid batch")
    }

    #[test]
    fn a_batch_round_trips_through_ipc() {
        let original = batch(100);
        let decoded = decode_batch(encode_batch(&original).expect("encode")).expect("decode");
        assert_eq!(decoded, original);
    }

    #[test]
    fn truncated_or_garbage_ipc_is_an_error_not_a_panic() {
        let ipc = encode_batch(&batch(10)).expect("encode");
        for cut in 0..ipc.len() - 8 {
            assert!(decode_batch(ipc.slice(..cut)).is_err(), "a stream cut at {cut} of {} decoded", ipc.len());
        }
        let mut corrupt = ipc.to_vec();
        for (i, byte) in corrupt.iter_mut().enumerate().skip(8) {
            *byte = byte.wrapping_mul(31).wrapping_add(i as u8);
        }
        let _ = decode_batch(Bytes::from(corrupt));
    }

    /// Issue 19: the `frame` fuzz target found a data frame whose IPC schema has a field of type NONE, on
    /// which Arrow's reader panics (`unimplemented!`). It must be a decode error.
    #[test]
    fn gh_19_an_ipc_schema_arrow_cannot_read_is_an_error_not_a_panic() {
        let seed =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame/issue-19-arrow-ipc-type-none");
        let bytes = std::fs::read(&seed).expect("the committed crash input");
        let mut wire = bytes::BytesMut::from(&bytes[1..]);
        let frame = super::super::frame::decode_frame(&mut wire, 16 * 1024).expect("a well-formed frame");
        let Some(super::super::frame::Frame::Data { ipc, .. }) = frame else { panic!("a data frame: {frame:?}") };
        let error = decode_batch(ipc).expect_err("a schema Arrow cannot read");
        assert!(error.to_string().contains("malformed IPC stream"), "{error}");
    }

    #[test]
    fn two_batches_in_one_buffer_are_refused() {
        let one = batch(3);
        let mut writer = StreamWriter::try_new(Vec::new(), &one.schema()).expect("writer");
        writer.write(&one).expect("write");
        writer.write(&one).expect("write");
        writer.finish().expect("finish");
        let ipc = Bytes::from(writer.into_inner().expect("bytes"));
        assert!(decode_batch(ipc).is_err());
    }

    #[test]
    fn remote_buffers_fit_the_buffer_size_and_keep_every_row_in_order() {
        let original = batch(10_000);
        let buffer_size = 4096;
        let buffers = split_remote(original.clone(), buffer_size).expect("split");
        assert!(buffers.len() > 10, "only {} buffers", buffers.len());
        let mut rows = Vec::new();
        for buffer in buffers {
            assert!(buffer.bytes <= buffer_size, "a buffer of {} bytes", buffer.bytes);
            let Payload::Ipc(ipc) = buffer.payload else { panic!("remote buffers are IPC") };
            rows.push(decode_batch(ipc).expect("decode"));
        }
        assert_eq!(concat(rows).expect("concat"), Some(original));
    }

    #[test]
    fn local_buffers_fit_the_buffer_size_and_a_single_oversized_row_travels_alone() {
        let buffers = split_local(batch(10_000), 4096);
        assert!(buffers.iter().all(|b| b.bytes <= 4096), "{:?}", buffers.iter().map(|b| b.bytes).collect::<Vec<_>>());
        assert_eq!(
            buffers.iter().map(|b| if let Payload::Batch(b) = &b.payload { b.num_rows() } else { 0 }).sum::<usize>(),
            10_000
        );
        let one_row = split_local(batch(1), 1);
        assert_eq!(one_row.len(), 1);
    }
}

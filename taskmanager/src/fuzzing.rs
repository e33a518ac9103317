//! Entry points for the fuzz targets under `fuzz/` (issue 19; `scripts/fuzz.sh` runs them), and nothing
//! else: a target must reach the code a stranger's bytes reach, not a copy of it, so the few internals it
//! needs are re-exported or wrapped here instead of being made public where they live.
//!
//! Every function here is what production code runs on outside bytes; the targets' promise is that any
//! input gives a value or an error, never a panic, a hang or an allocation the input's size does not
//! justify.
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::cluster_auth::ClusterCredentials;
use tokio::io::{AsyncRead, AsyncWrite};

pub use crate::connectors::kafka::codec::{KafkaRecord, RawRecord, RecordDecoder, RecordEncoder};

/// Decodes the Arrow IPC payload of a data frame, as the receiving side of a channel does.
pub fn decode_data_frame_payload(ipc: Bytes) -> Result<RecordBatch, ArrowError> {
    crate::network::decode_batch(ipc)
}

/// The acceptor's side of the data-port handshake over `stream` (what a dialer's first bytes reach):
/// the dialer's id when its hello is accepted, else why the connection is refused. `timeout` bounds the
/// wait for a hello, as `connect_timeout` does in production.
pub async fn accept_handshake(
    stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    local_id: &str,
    credentials: &ClusterCredentials,
    max_frame_bytes: usize,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    crate::network::accept_hello(Box::new(stream), local_id, credentials, max_frame_bytes, deadline)
        .await
        .map(|(peer_id, _)| peer_id)
}

/// Rewrites the checksum in a snapshot file's trailer to match its bytes (when the file is long enough to
/// have a header and a trailer), so that a fuzzer's mutations of the records reach the record decoder
/// instead of all stopping at the checksum check.
pub fn seal_snapshot(file: &mut [u8]) {
    crate::checkpoint::reseal(file);
}

/// The buffered records of `snapshots` whose key falls into `key_groups`, as a restoring window or join
/// operator takes them from its snapshots' operator state.
pub fn restore_buffered(
    snapshots: &[&sluice_common::proto::OperatorSnapshot],
    key_columns: &[usize],
    max_parallelism: u32,
    key_groups: &std::ops::RangeInclusive<u16>,
) -> Result<Vec<RecordBatch>, String> {
    crate::operator_api::restore::restore_buffered(snapshots, key_columns, max_parallelism, key_groups)
        .map_err(|e| e.to_string())
}

/// The seed corpora of the TaskManager's fuzz targets (`fuzz/corpus/<target>/`), made by the real writers.
///
/// Goal: the committed seeds stay valid inputs as formats change, so fuzzing starts from inputs that reach
/// deep into each decoder. Method: `SLUICE_WRITE_FUZZ_SEEDS=1 cargo nextest run -p sluice-taskmanager -E
/// 'test(fuzz_seeds)'` rewrites them with the encoders; every run checks that each committed seed still
/// decodes.
#[cfg(test)]
mod seeds {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use bytes::BytesMut;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use sluice_common::proto::{OperatorSnapshot, TaskSnapshot};

    use super::*;
    use crate::checkpoint::{read_snapshot, write_snapshot, SnapshotParts};
    use crate::network::frame::{decode_frame, encode_frame, Frame, PROTOCOL_VERSION};
    use crate::network::ChannelKey;
    use crate::state::{CopiedSnapshot, StateKey, StateSnapshot};

    /// The frame target's maximum frame length for a seed whose first (selector) byte is odd.
    const FRAME_TARGET_MAX_FRAME_BYTES: usize = 16 * 1024;

    fn corpus(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
    }

    fn writing() -> bool {
        std::env::var_os("SLUICE_WRITE_FUZZ_SEEDS").is_some()
    }

    fn write(target: &str, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(corpus(target)).expect("corpus directory");
        std::fs::write(corpus(target).join(name), bytes).expect("seed written");
    }

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let mut seeds: Vec<_> = std::fs::read_dir(corpus(target))
            .expect("a committed corpus")
            .map(|entry| {
                let path = entry.expect("entry").path();
                (path.display().to_string(), std::fs::read(&path).expect("seed"))
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds for {target}");
        seeds
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let words = Arc::new(StringArray::from(vec!["apple", "pear", "fig"]));
        let counts = Arc::new(Int64Array::from(vec![3, 1, 2]));
        RecordBatch::try_new(schema, vec![words, counts]).expect("a batch")
    }

    fn frames() -> Vec<(&'static str, Vec<Frame>)> {
        let channel = ChannelKey { execution_id: 7, edge: 1, from_subtask: 0, to_subtask: 1 };
        let hello =
            |id: &str| Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: id.into(), proof: Bytes::new() };
        let ipc = crate::network::encode_batch(&batch()).expect("IPC");
        vec![
            ("hello", vec![hello("tm-a")]),
            (
                "events",
                vec![
                    Frame::Credit { channel, credits: 2 },
                    Frame::Barrier { channel, checkpoint_id: 3 },
                    Frame::Watermark { channel, timestamp_ms: 1_700_000_000_000 },
                    Frame::EndOfPartition { channel },
                ],
            ),
            ("data", vec![Frame::Data { channel, backlog: 1, ipc }]),
        ]
    }

    #[test]
    fn fuzz_seeds_of_the_frame_and_handshake_targets_decode() {
        if writing() {
            for (name, frames) in frames() {
                let mut wire = BytesMut::new();
                for frame in &frames {
                    encode_frame(frame, &mut wire);
                }
                // The frame target's first byte picks the maximum: even is the handshake's, odd a connection's.
                let selector = if name == "hello" { 0u8 } else { 1 };
                write("frame", name, &[&[selector][..], &wire].concat());
                if name == "hello" {
                    write("handshake", "hello-from-tm-a", &wire);
                }
            }
        }
        for (path, seed) in seeds("frame") {
            let max = if seed[0] % 2 == 0 {
                crate::network::frame::MAX_HELLO_FRAME_BYTES
            } else {
                FRAME_TARGET_MAX_FRAME_BYTES
            };
            let mut wire = BytesMut::from(&seed[1..]);
            let mut decoded = 0;
            while let Some(frame) = decode_frame(&mut wire, max).unwrap_or_else(|e| panic!("{path}: {e}")) {
                // A crash input kept as a seed (`issue-*`) holds a payload that must be refused, not decoded.
                let crash_input = path.rsplit('/').next().is_some_and(|name| name.starts_with("issue-"));
                if let Frame::Data { ipc, .. } = frame {
                    let payload = decode_data_frame_payload(ipc);
                    assert_eq!(payload.is_err(), crash_input, "{path}: {payload:?}");
                }
                decoded += 1;
            }
            assert!(decoded > 0 && wire.is_empty(), "{path}: {decoded} frames, {} bytes left", wire.len());
        }
        for (path, seed) in seeds("handshake") {
            let mut wire = BytesMut::from(&seed[..]);
            let hello = decode_frame(&mut wire, crate::network::frame::MAX_HELLO_FRAME_BYTES);
            assert!(matches!(hello, Ok(Some(Frame::Hello { .. }))), "{path}: {hello:?}");
        }
    }

    #[test]
    fn fuzz_seeds_of_the_snapshot_target_read_back() {
        if writing() {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut key = StateKey::default();
            let entries = (0u16..4)
                .map(|group| {
                    (key.set_key(group * 20, b"apple").set_namespace(&[1; 8]).as_bytes().to_vec(), vec![group as u8])
                })
                .collect();
            let state = StateSnapshot { states: vec![("counts".into(), entries)] };
            let buffered = crate::network::encode_batch(&batch()).expect("IPC").to_vec();
            let header = TaskSnapshot {
                job_id: "job".into(),
                checkpoint_id: 3,
                chain: 1,
                subtask: 0,
                parallelism: 2,
                operators: vec![
                    OperatorSnapshot {
                        vertex_id: "lines".into(),
                        source_position: vec![0, 0, 0, 9],
                        ..Default::default()
                    },
                    OperatorSnapshot { vertex_id: "window".into(), operator_state: buffered, ..Default::default() },
                ],
            };
            let parts = SnapshotParts { header, keyed: vec![(1, Box::new(CopiedSnapshot(state)))] };
            write_snapshot(dir.path(), "1-0.snapshot", parts).expect("written");
            write("snapshot", "keyed-and-buffered", &std::fs::read(dir.path().join("1-0.snapshot")).expect("read"));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, seed) in seeds("snapshot") {
            let copy = dir.path().join("seed");
            std::fs::write(&copy, &seed).expect("copy");
            read_snapshot(&copy).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }
}

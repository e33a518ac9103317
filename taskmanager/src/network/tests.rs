//! Tests of the data plane through its public API: real TCP on 127.0.0.1 (port 0), and two or more
//! [`NetworkEnvironment`]s in one process standing in for TaskManagers ("tm-a" sorts first, so it dials).
//!
//! Method. Every wait is an await on the API or a poll of a condition with a deadline ([`eventually`]);
//! `tokio::time::timeout` only bounds a test that would otherwise hang ([`WAIT`]). The one exception is a
//! negative assertion ("this send stays pending"), which can only be observed by letting time pass: it waits
//! [`PENDING_GRACE`], and the tests are written so that a slow machine makes them weaker, never flaky.
//!
//! Rows carry their own identity (`channel base + sequence number`), so a test checks the exact rows, in
//! order, per channel, and that nothing arrives after end-of-partition.
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::frame::{encode_frame, Frame, FrameCodec, LENGTH_PREFIX_BYTES, PROTOCOL_MAGIC, PROTOCOL_VERSION};
use super::{
    ChannelKey, InputGate, NetworkConfig, NetworkEnvironment, NetworkError, PeerAddress, ResultPartition, StreamEvent,
};

/// Safety bound on anything a test awaits; reaching it is a failure (a hang), never a pass.
const WAIT: Duration = Duration::from_secs(20);
/// How long a future must stay pending to count as blocked. Only used where a slower machine can make the
/// assertion weaker (fewer sends observed) but not wrong.
const PENDING_GRACE: Duration = Duration::from_millis(300);
/// Pause between two checks of a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

fn config() -> NetworkConfig {
    NetworkConfig { connect_timeout: Duration::from_secs(10), ..NetworkConfig::default() }
}

async fn start(id: &str, config: NetworkConfig) -> Arc<NetworkEnvironment> {
    NetworkEnvironment::start("127.0.0.1:0", id.to_string(), config)
        .await
        .expect("the environment starts on a free port")
}

fn peer(env: &NetworkEnvironment) -> PeerAddress {
    PeerAddress { task_manager_id: env.local_task_manager_id().to_string(), data_address: env.local_addr().to_string() }
}

fn key(execution_id: u64, edge: u32, from_subtask: u32, to_subtask: u32) -> ChannelKey {
    ChannelKey { execution_id, edge, from_subtask, to_subtask }
}

fn batch(values: Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("value", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).expect("a valid batch")
}

fn values(batch: &RecordBatch) -> Vec<i64> {
    let column = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("an Int64 column");
    assert_eq!(column.null_count(), 0);
    column.values().to_vec()
}

/// The rows of batch `sequence` of a channel whose rows start at `base`.
fn rows_of(base: i64, sequence: i64, rows_per_batch: i64) -> Range<i64> {
    let start = base + sequence * rows_per_batch;
    start..start + rows_per_batch
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads `gate` until `next()` returns `None` and returns the rows per input channel. Checks that every
/// channel ends exactly once, that nothing follows its end, and that `None` stays `None`.
async fn drain(gate: &mut InputGate) -> Result<Vec<Vec<i64>>, NetworkError> {
    let channels = gate.num_channels();
    let mut rows = vec![Vec::new(); channels];
    let mut ended = vec![false; channels];
    let read = async {
        while let Some(event) = gate.next().await {
            let (index, event) = event?;
            assert!(!ended[index], "input channel {index} delivered {event:?} after its end-of-partition");
            match event {
                StreamEvent::Batch(batch) => rows[index].extend(values(&batch)),
                StreamEvent::EndOfPartition => ended[index] = true,
                StreamEvent::Watermark(_) | StreamEvent::Barrier(_) | StreamEvent::LatencyMarker(_) => {}
            }
        }
        Ok::<_, NetworkError>(())
    };
    tokio::time::timeout(WAIT, read).await.expect("the gate delivered everything in time")?;
    assert!(ended.iter().all(|e| *e), "next() returned None before every channel ended: {ended:?}");
    assert!(gate.next().await.is_none(), "a finished gate stays finished");
    Ok(rows)
}

/// Sends `batches` batches of `rows_per_batch` rows on every subpartition (subpartition `j` starting at row
/// `bases[j]`), then end-of-partition, flushes, and drops the partition: exactly what a finishing task does.
async fn produce(
    mut partition: ResultPartition,
    bases: Vec<i64>,
    batches: i64,
    rows_per_batch: i64,
) -> Result<u64, NetworkError> {
    for sequence in 0..batches {
        for (subpartition, base) in bases.iter().enumerate() {
            partition.send_batch(subpartition, batch(rows_of(*base, sequence, rows_per_batch))).await?;
        }
    }
    partition.broadcast_event(StreamEvent::EndOfPartition).await?;
    partition.flush().await?;
    Ok(partition.bytes_out())
}

fn expected(base: i64, batches: i64, rows_per_batch: i64) -> Vec<i64> {
    (base..base + batches * rows_per_batch).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------------------

/// Every frame kind, written through a real socket a few bytes at a time, comes out whole and equal; the
/// codec's own unit tests (in `frame.rs`) cover lengths over the maximum, truncation and garbage.
#[tokio::test]
async fn every_frame_kind_round_trips_through_a_socket_in_small_pieces() {
    let channel = key(0x0102_0304_0506_0708, 3, 1, 2);
    let frames = vec![
        Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: "tm-a".to_string(), proof: bytes::Bytes::new() },
        Frame::Data { channel, backlog: 7, ipc: super::buffer::encode_batch(&batch(0..100)).expect("encode") },
        Frame::Barrier { channel, checkpoint_id: 42 },
        Frame::Watermark { channel, timestamp_ms: -1 },
        Frame::EndOfPartition { channel },
        Frame::Credit { channel, credits: u32::MAX },
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let mut wire = BytesMut::new();
    for frame in &frames {
        encode_frame(frame, &mut wire);
    }
    let writer = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        for piece in wire.chunks(7) {
            stream.write_all(piece).await.expect("write");
            stream.flush().await.expect("flush");
        }
    });
    let (stream, _) = listener.accept().await.expect("accept");
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    for expected in &frames {
        let frame = tokio::time::timeout(WAIT, framed.next()).await.expect("in time").expect("a frame").expect("valid");
        assert_eq!(&frame, expected);
    }
    writer.await.expect("writer");
    let end = tokio::time::timeout(WAIT, framed.next()).await.expect("in time");
    assert!(end.is_none(), "nothing after the last frame: {end:?}");
}

// ---------------------------------------------------------------------------------------------------------
// Two TaskManagers
// ---------------------------------------------------------------------------------------------------------

/// tm-a's partition has a local subpartition (to a gate on tm-a) and a remote one (to tm-b), and tm-b's
/// partition sends back to the same gate on tm-a. Everything is created concurrently (tm-b waits for tm-a
/// to dial). Every row arrives once, in order per channel, then `next()` returns `None`; the two
/// environments share exactly one TCP connection although channels run in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_task_managers_exchange_every_row_in_order_over_one_connection() {
    const BATCHES: i64 = 300;
    const ROWS: i64 = 40;
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let (a_to_a, a_to_b, b_to_a) = (key(1, 0, 0, 0), key(1, 0, 0, 1), key(1, 1, 0, 0));
    let (base_aa, base_ab, base_ba) = (0, 1_000_000, 2_000_000);

    // A 5 ms buffer timeout: small batches are concatenated into buffers, and end-of-partition flushes them.
    let buffer_timeout = Duration::from_millis(5);
    let producer_a = {
        let (a, pa, pb) = (a.clone(), peer(&a), peer(&b));
        tokio::spawn(async move {
            let partition = a.create_result_partition(vec![(a_to_a, pa), (a_to_b, pb)], buffer_timeout).await?;
            produce(partition, vec![base_aa, base_ab], BATCHES, ROWS).await
        })
    };
    let producer_b = {
        let (b, pa) = (b.clone(), peer(&a));
        tokio::spawn(async move {
            let partition = b.create_result_partition(vec![(b_to_a, pa)], Duration::ZERO).await?;
            produce(partition, vec![base_ba], BATCHES, ROWS).await
        })
    };
    let consumer_a = {
        let (a, pa, pb) = (a.clone(), peer(&a), peer(&b));
        tokio::spawn(async move {
            let mut gate = a.create_input_gate(vec![(a_to_a, pa), (b_to_a, pb)]).await?;
            let rows = drain(&mut gate).await?;
            Ok::<_, NetworkError>((rows, gate.remote_bytes_in()))
        })
    };
    let consumer_b = {
        let (b, pa) = (b.clone(), peer(&a));
        tokio::spawn(async move {
            let mut gate = b.create_input_gate(vec![(a_to_b, pa)]).await?;
            let rows = drain(&mut gate).await?;
            Ok::<_, NetworkError>((rows, gate.remote_bytes_in()))
        })
    };

    let bytes_out_a = producer_a.await.expect("task").expect("tm-a produces");
    let bytes_out_b = producer_b.await.expect("task").expect("tm-b produces");
    let (rows_a, remote_in_a) = consumer_a.await.expect("task").expect("tm-a consumes");
    let (rows_b, remote_in_b) = consumer_b.await.expect("task").expect("tm-b consumes");

    assert_eq!(rows_a[0], expected(base_aa, BATCHES, ROWS), "local channel tm-a → tm-a");
    assert_eq!(rows_a[1], expected(base_ba, BATCHES, ROWS), "remote channel tm-b → tm-a");
    assert_eq!(rows_b[0], expected(base_ab, BATCHES, ROWS), "remote channel tm-a → tm-b");
    assert!(bytes_out_a > 0 && bytes_out_b > 0);
    assert!(remote_in_a > 0 && remote_in_b > 0, "remote bytes in: tm-a {remote_in_a}, tm-b {remote_in_b}");

    for env in [&a, &b] {
        let stats = env.stats();
        assert_eq!(stats.connections, 1, "{}: {stats:?}", env.local_task_manager_id());
        assert_eq!(stats.connections_opened, 1, "{}: {stats:?}", env.local_task_manager_id());
        assert_eq!(stats.protocol_errors, 0, "{}: {stats:?}", env.local_task_manager_id());
        assert_eq!(stats.stale_frames_dropped, 0, "{}: {stats:?}", env.local_task_manager_id());
    }
    assert!(a.stats().remote_bytes_out > 0 && b.stats().remote_bytes_in > 0);
}

/// The same exchange when the producer runs on the TaskManager that does *not* dial (tm-b): it must work
/// whichever side is deployed first.
#[tokio::test]
async fn a_producer_on_the_task_manager_that_does_not_dial_is_served() {
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    assert_exchange(&b, &a, 2, 50).await;
}

// ---------------------------------------------------------------------------------------------------------
// Delivery at the end of a producer
// ---------------------------------------------------------------------------------------------------------

/// A producer sends its last batches and end-of-partition and drops its partition while the consumer has
/// not consumed anything (so the sender holds no credit for most of it): nothing is lost, locally or
/// remotely. One exclusive credit and no floating ones keep most of the data in the output queue.
#[tokio::test]
async fn a_dropped_partition_still_delivers_everything_to_a_slow_consumer() {
    let config = NetworkConfig { credit_initial: 1, floating_buffers: 0, output_queue_buffers: 4, ..config() };
    let (a, b) = (start("tm-a", config.clone()).await, start("tm-b", config).await);
    let (local, remote) = (key(3, 0, 0, 0), key(3, 0, 0, 1));
    let (gate_a, gate_b, partition) = tokio::join!(
        a.create_input_gate(vec![(local, peer(&a))]),
        b.create_input_gate(vec![(remote, peer(&a))]),
        a.create_result_partition(vec![(local, peer(&a)), (remote, peer(&b))], Duration::ZERO),
    );
    let (mut gate_a, mut gate_b, partition) =
        (gate_a.expect("gate a"), gate_b.expect("gate b"), partition.expect("partition"));

    // 1 credit + 4 queued elements: 4 batches and end-of-partition fit without the consumer's help.
    tokio::time::timeout(WAIT, produce(partition, vec![0, 100], 4, 10))
        .await
        .expect("the producer finishes")
        .expect("produce");
    eventually("the credited buffers arrived", || gate_a.in_flight_bytes() > 0 && gate_b.in_flight_bytes() > 0).await;

    assert_eq!(drain(&mut gate_a).await.expect("drain a"), vec![expected(0, 4, 10)]);
    assert_eq!(drain(&mut gate_b).await.expect("drain b"), vec![expected(100, 4, 10)]);
}

/// Deployment order between TaskManagers is not guaranteed: the producer may finish (and drop its
/// partition) before the consumer's gate exists. Its queued buffers wait for the first credit.
#[tokio::test]
async fn a_gate_created_after_the_producer_finished_receives_everything() {
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let (local, remote) = (key(4, 0, 0, 0), key(4, 0, 0, 1));
    let partition = a
        .create_result_partition(vec![(local, peer(&a)), (remote, peer(&b))], Duration::ZERO)
        .await
        .expect("partition");
    // 3 batches + end-of-partition fill the 4-element output queue exactly: no credit needed to finish.
    tokio::time::timeout(WAIT, produce(partition, vec![0, 100], 3, 10))
        .await
        .expect("the producer finishes")
        .expect("produce");

    let mut gate_a = a.create_input_gate(vec![(local, peer(&a))]).await.expect("gate a");
    let mut gate_b = b.create_input_gate(vec![(remote, peer(&a))]).await.expect("gate b");
    assert_eq!(drain(&mut gate_a).await.expect("drain a"), vec![expected(0, 3, 10)]);
    assert_eq!(drain(&mut gate_b).await.expect("drain b"), vec![expected(100, 3, 10)]);
}

/// The producer on the TaskManager that does not dial (tm-b) finishes before the consumer on tm-a exists:
/// creating its partition must not wait for a connection that only the consumer's deployment brings.
#[tokio::test]
async fn a_producer_that_does_not_dial_finishes_before_its_consumer_exists() {
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let channel = key(5, 0, 0, 0);
    let produced = async {
        let partition = b.create_result_partition(vec![(channel, peer(&a))], Duration::ZERO).await?;
        produce(partition, vec![0], 3, 10).await
    };
    tokio::time::timeout(WAIT, produced).await.expect("the producer finishes without its consumer").expect("produce");

    let mut gate = a.create_input_gate(vec![(channel, peer(&b))]).await.expect("gate");
    assert_eq!(drain(&mut gate).await.expect("drain"), vec![expected(0, 3, 10)]);
    assert_eq!(a.stats().connections, 1);
}

// ---------------------------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------------------------

/// A receiver that does not consume stops its sender after at most `credits + output queue` buffers
/// (exclusive and floating credits); bytes in flight stay within the gate's bound; consuming releases the
/// sender, and every row still arrives in order.
async fn a_receiver_that_does_not_consume_stops_the_sender(remote: bool) {
    let config = NetworkConfig { credit_initial: 2, floating_buffers: 3, output_queue_buffers: 4, ..config() };
    let (a, b) = (start("tm-a", config.clone()).await, start("tm-b", config.clone()).await);
    let consumer = if remote { &b } else { &a };
    let channel = key(6, 0, 0, 0);
    let (gate, partition) = tokio::join!(
        consumer.create_input_gate(vec![(channel, peer(&a))]),
        a.create_result_partition(vec![(channel, peer(consumer))], Duration::ZERO)
    );
    let (mut gate, mut partition) = (gate.expect("gate"), partition.expect("partition"));
    const ROWS: i64 = 10;

    // These always fit: the exclusive credits are granted up front, and the queue takes the rest.
    let guaranteed = (config.credit_initial + config.output_queue_buffers) as i64;
    let bound = (config.credit_initial + config.floating_buffers + config.output_queue_buffers) as i64;
    for sequence in 0..guaranteed {
        tokio::time::timeout(WAIT, partition.send_batch(0, batch(rows_of(0, sequence, ROWS))))
            .await
            .expect("sends covered by exclusive credits and the queue complete")
            .expect("send");
    }
    // Floating credits may let a few more through; beyond the bound every send must block. Consuming (the
    // second `next` releases the first buffer's credit) then unblocks the sender.
    let mut sent = guaranteed;
    let mut received: Vec<i64> = Vec::new();
    loop {
        assert!(sent <= bound, "{sent} buffers went out with room for {bound}");
        let mut send = Box::pin(partition.send_batch(0, batch(rows_of(0, sent, ROWS))));
        if let Ok(result) = tokio::time::timeout(PENDING_GRACE, &mut send).await {
            result.expect("send");
            sent += 1;
            continue;
        }
        eventually("the credited buffers arrived", || gate.in_flight_bytes() > 0).await;
        assert!(
            gate.in_flight_bytes() <= gate.in_flight_bytes_max(),
            "{} > {}",
            gate.in_flight_bytes(),
            gate.in_flight_bytes_max()
        );
        let (released, events) = tokio::join!(tokio::time::timeout(WAIT, send), async {
            let first = gate.next().await;
            let second = gate.next().await;
            [first, second]
        });
        released.expect("consuming releases the blocked sender").expect("send");
        for event in events {
            match event.expect("an event").expect("no error") {
                (0, StreamEvent::Batch(batch)) => received.extend(values(&batch)),
                other => panic!("expected a batch on channel 0, got {other:?}"),
            }
        }
        break;
    }
    sent += 1;
    let finish = async {
        partition.broadcast_event(StreamEvent::EndOfPartition).await?;
        partition.flush().await
    };
    let (finished, rest) = tokio::join!(finish, drain(&mut gate));
    finished.expect("finish");
    let rest = rest.expect("drain");
    received.extend(&rest[0]);
    assert_eq!(received, expected(0, sent, ROWS));
    assert!(partition.backpressured_time() > Duration::ZERO, "the blocked send was counted as backpressure");
}

#[tokio::test]
async fn a_remote_receiver_that_does_not_consume_stops_the_sender() {
    a_receiver_that_does_not_consume_stops_the_sender(true).await;
}

#[tokio::test]
async fn a_local_receiver_that_does_not_consume_stops_the_sender() {
    a_receiver_that_does_not_consume_stops_the_sender(false).await;
}

// ---------------------------------------------------------------------------------------------------------
// Strangers on the data port
// ---------------------------------------------------------------------------------------------------------

/// Log lines written by the current thread's tracing dispatcher, for tests that check a logged reason.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures the logs of everything running on this thread (a current-thread runtime) until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&super::lock(&self.0)).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        super::lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects to `address`, writes `bytes`, and waits for the server to close the connection.
async fn stranger(address: std::net::SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // The server may close before reading everything; a reset while writing is fine.
    let _ = stream.write_all(bytes).await;
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await.expect("the server closes the connection");
    // EOF or a reset (unread bytes) both mean closed; the server must not have answered.
    if let Ok(read) = closed {
        assert_eq!(read, 0, "the server answered a stranger: {sink:?}");
    }
}

fn hello_bytes(task_manager_id: &str) -> BytesMut {
    let mut wire = BytesMut::new();
    encode_frame(
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            task_manager_id: task_manager_id.to_string(),
            proof: bytes::Bytes::new(),
        },
        &mut wire,
    );
    wire
}

/// Garbage, an HTTP request, an oversized length prefix, a frame that is not a hello, a wrong magic, a wrong
/// version and a peer that would dial the wrong way are each disconnected with a logged reason, without an
/// answer; the environment keeps serving the legitimate peer.
#[tokio::test]
async fn strangers_on_the_data_port_are_disconnected_and_the_peer_is_still_served() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let address = b.local_addr();

    let mut garbage = BytesMut::new();
    garbage.put_u32(30);
    garbage.put_slice(&[0xAB; 30]);
    let mut not_hello = BytesMut::new();
    encode_frame(&Frame::Credit { channel: key(1, 0, 0, 0), credits: 1 }, &mut not_hello);
    let mut bad_magic = hello_bytes("tm-0");
    bad_magic[LENGTH_PREFIX_BYTES + super::frame::HEADER_BYTES] = b'X';
    let mut bad_version = hello_bytes("tm-0");
    bad_version[LENGTH_PREFIX_BYTES + super::frame::HEADER_BYTES + PROTOCOL_MAGIC.len()] = 0xFF;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", garbage.to_vec(), "unknown frame kind 171"),
        ("http", b"GET / HTTP/1.1\r\nHost: tm-b\r\n\r\n".to_vec(), "exceeds the maximum"),
        ("oversize", 0xFFFF_FFF0u32.to_be_bytes().to_vec(), "frame length 4294967280 bytes exceeds the maximum"),
        ("not a hello", not_hello.to_vec(), "expected hello, got a credit frame"),
        ("bad magic", bad_magic.to_vec(), "bad magic bytes"),
        ("bad version", bad_version.to_vec(), "protocol version"),
        ("wrong direction", hello_bytes("tm-z").to_vec(), "sorts first and is the one to dial"),
    ];
    for (name, bytes, _) in &cases {
        tokio::time::timeout(WAIT, stranger(address, bytes))
            .await
            .unwrap_or_else(|_| panic!("stranger '{name}' was not closed"));
    }
    eventually("every stranger was refused", || b.stats().connections_refused == cases.len() as u64).await;
    let text = logs.text();
    for (name, _, reason) in &cases {
        assert!(text.contains(reason), "no logged reason '{reason}' for stranger '{name}' in:\n{text}");
    }
    assert_eq!(b.stats().connections, 0);

    // The legitimate peer is still served.
    let channel = key(7, 0, 0, 0);
    let (gate, partition) = tokio::join!(
        b.create_input_gate(vec![(channel, peer(&a))]),
        a.create_result_partition(vec![(channel, peer(&b))], Duration::ZERO)
    );
    let (mut gate, partition) = (gate.expect("gate"), partition.expect("partition"));
    let (produced, rows) = tokio::join!(produce(partition, vec![0], 20, 10), drain(&mut gate));
    produced.expect("produce");
    assert_eq!(rows.expect("drain"), vec![expected(0, 20, 10)]);
    assert_eq!(b.stats().connections, 1);
}

/// A fake TaskManager ("tm-0") that completes the handshake, answered by tm-b.
async fn fake_peer(env: &NetworkEnvironment) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(env.local_addr()).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    framed
        .send(Frame::Hello {
            version: PROTOCOL_VERSION,
            task_manager_id: "tm-0".to_string(),
            proof: bytes::Bytes::new(),
        })
        .await
        .expect("hello");
    let reply = tokio::time::timeout(WAIT, framed.next()).await.expect("in time").expect("a reply").expect("valid");
    assert_eq!(
        reply,
        Frame::Hello {
            version: PROTOCOL_VERSION,
            task_manager_id: env.local_task_manager_id().to_string(),
            proof: bytes::Bytes::new()
        }
    );
    framed
}

/// After the handshake, an oversized length prefix closes the connection with a protocol error (the gate
/// fed by it fails), while tm-b keeps serving tm-a.
#[tokio::test]
async fn an_oversized_frame_after_the_handshake_closes_only_that_connection() {
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let fake = PeerAddress { task_manager_id: "tm-0".to_string(), data_address: "127.0.0.1:1".to_string() };
    let from_fake = key(8, 0, 0, 0);
    let (gate, framed) = tokio::join!(b.create_input_gate(vec![(from_fake, fake)]), fake_peer(&b));
    let (mut gate, framed) = (gate.expect("gate"), framed);
    let mut stream = framed.into_inner();
    let length = u32::try_from(b.config().max_frame_bytes + 1).expect("fits u32");
    stream.write_all(&length.to_be_bytes()).await.expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await.expect("tm-b closes the connection");

    let failed = tokio::time::timeout(WAIT, gate.next()).await.expect("the gate wakes up");
    assert!(matches!(failed, Some(Err(NetworkError::ConnectionLost { .. }))), "{failed:?}");
    eventually("the protocol error is counted", || b.stats().protocol_errors == 1).await;

    let channel = key(8, 1, 0, 0);
    let (gate, partition) = tokio::join!(
        b.create_input_gate(vec![(channel, peer(&a))]),
        a.create_result_partition(vec![(channel, peer(&b))], Duration::ZERO)
    );
    let (mut gate, partition) = (gate.expect("gate"), partition.expect("partition"));
    let (produced, rows) = tokio::join!(produce(partition, vec![0], 5, 10), drain(&mut gate));
    produced.expect("produce");
    assert_eq!(rows.expect("drain"), vec![expected(0, 5, 10)]);
}

/// A peer's data frame whose IPC bytes are garbage is a decode error from `next()`, not a panic; a data
/// frame without credit is a protocol violation that closes the connection.
#[tokio::test]
async fn garbage_ipc_is_an_error_and_data_without_credit_closes_the_connection() {
    let b = start("tm-b", config()).await;
    let fake = PeerAddress { task_manager_id: "tm-0".to_string(), data_address: "127.0.0.1:1".to_string() };
    let channel = key(9, 0, 0, 0);
    let (gate, framed) = tokio::join!(b.create_input_gate(vec![(channel, fake)]), fake_peer(&b));
    let (mut gate, mut framed) = (gate.expect("gate"), framed);
    let credit = tokio::time::timeout(WAIT, framed.next()).await.expect("in time").expect("a frame").expect("valid");
    assert_eq!(credit, Frame::Credit { channel, credits: b.config().credit_initial });

    framed
        .send(Frame::Data { channel, backlog: 0, ipc: Bytes::from_static(b"certainly not arrow ipc") })
        .await
        .expect("send");
    let event = tokio::time::timeout(WAIT, gate.next()).await.expect("in time");
    assert!(matches!(event, Some(Err(NetworkError::Decode { key, .. })) if key == channel), "{event:?}");

    // Two credits were granted and one is used; three more data frames overdraw.
    for _ in 0..3 {
        framed.send(Frame::Data { channel, backlog: 0, ipc: Bytes::new() }).await.expect("send");
    }
    let mut sink = Vec::new();
    let _ =
        tokio::time::timeout(WAIT, framed.get_mut().read_to_end(&mut sink)).await.expect("tm-b closes the connection");
    eventually("the violation is counted", || b.stats().protocol_errors == 1).await;
    let event = tokio::time::timeout(WAIT, gate.next()).await.expect("in time");
    assert!(matches!(event, Some(Err(NetworkError::Protocol { .. }))), "{event:?}");
}

/// A producer's TaskManager may go away once its channels delivered end-of-partition: losing that
/// connection then costs the consumer nothing, and its gate finishes normally. (Before the fix, every gate
/// with a channel on the connection failed, even with all its data received.)
#[tokio::test]
async fn a_connection_lost_after_end_of_partition_does_not_fail_the_gate() {
    let b = start("tm-b", config()).await;
    let fake = PeerAddress { task_manager_id: "tm-0".to_string(), data_address: "127.0.0.1:1".to_string() };
    let channel = key(13, 0, 0, 0);
    let (gate, framed) = tokio::join!(b.create_input_gate(vec![(channel, fake)]), fake_peer(&b));
    let (mut gate, mut framed) = (gate.expect("gate"), framed);
    let credit = tokio::time::timeout(WAIT, framed.next()).await.expect("in time").expect("a frame").expect("valid");
    assert!(matches!(credit, Frame::Credit { .. }), "{credit:?}");
    let ipc = super::buffer::encode_batch(&batch(0..10)).expect("encode");
    framed.send(Frame::Data { channel, backlog: 0, ipc }).await.expect("send");
    framed.send(Frame::EndOfPartition { channel }).await.expect("send");
    drop(framed);
    eventually("tm-b saw the connection close", || b.stats().connections == 0).await;
    assert_eq!(drain(&mut gate).await.expect("no error after a clean end"), vec![expected(0, 1, 10)]);
}

// ---------------------------------------------------------------------------------------------------------
// Released executions
// ---------------------------------------------------------------------------------------------------------

/// Releasing an execution wakes its waiting consumer and producer with `ExecutionReleased`; data frames that
/// still arrive for it are dropped and counted, never delivered; new gates for it are refused.
#[tokio::test]
async fn a_released_execution_wakes_its_waiters_and_its_late_frames_are_dropped() {
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let channel = key(10, 0, 0, 0);
    let (gate, partition) = tokio::join!(
        b.create_input_gate(vec![(channel, peer(&a))]),
        a.create_result_partition(vec![(channel, peer(&b))], Duration::ZERO)
    );
    let (mut gate, mut partition) = (gate.expect("gate"), partition.expect("partition"));

    partition.send_batch(0, batch(0..10)).await.expect("send");
    let first = tokio::time::timeout(WAIT, gate.next()).await.expect("in time").expect("an event").expect("no error");
    assert!(matches!(first, (0, StreamEvent::Batch(_))));

    // The consumer waits (its first poll released the first buffer's credit: the sender gets 2 again).
    let mut waiting = Box::pin(gate.next());
    assert!(futures::poll!(&mut waiting).is_pending());
    b.release_execution(10);
    let event = tokio::time::timeout(WAIT, waiting).await.expect("the waiting consumer wakes up");
    assert!(matches!(event, Some(Err(NetworkError::ExecutionReleased { execution_id: 10 }))), "{event:?}");
    drop(gate);

    let stale_before = b.stats().stale_frames_dropped;
    partition.send_batch(0, batch(10..20)).await.expect("the producer still holds credits");
    partition.send_batch(0, batch(20..30)).await.expect("the producer still holds credits");
    eventually("the late frames are dropped", || b.stats().stale_frames_dropped >= stale_before + 2).await;
    let refused = b.create_input_gate(vec![(channel, peer(&a))]).await;
    assert!(matches!(refused, Err(NetworkError::ExecutionReleased { execution_id: 10 })), "{:?}", refused.err());

    // Without credits the producer fills its queue and waits; releasing on its side wakes it.
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for sequence in 3.. {
                if let Err(e) = partition.send_batch(0, batch(rows_of(0, sequence, 10))).await {
                    return e;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            unreachable!("the loop only ends with an error")
        })
    };
    let queue = a.config().output_queue_buffers as usize;
    eventually("the producer filled its output queue", || sent.load(Ordering::SeqCst) == queue).await;
    a.release_execution(10);
    let error = tokio::time::timeout(WAIT, producer).await.expect("the blocked producer wakes up").expect("task");
    assert!(matches!(error, NetworkError::ExecutionReleased { execution_id: 10 }), "{error}");
    assert_eq!(sent.load(Ordering::SeqCst), queue, "nothing was queued past the full queue");
    assert!(matches!(
        a.create_result_partition(vec![(channel, peer(&b))], Duration::ZERO).await,
        Err(NetworkError::ExecutionReleased { execution_id: 10 })
    ));
}

// ---------------------------------------------------------------------------------------------------------
// Cancel-safety of InputGate::next
// ---------------------------------------------------------------------------------------------------------

/// Dropping a `next()` future that was polled and then woken by a delivery loses nothing: the next call
/// returns the element. Deterministic: local deliveries happen inside `send_batch`.
#[tokio::test]
async fn a_dropped_next_future_loses_no_event() {
    let a = start("tm-a", config()).await;
    let channel = key(11, 0, 0, 0);
    let mut gate = a.create_input_gate(vec![(channel, peer(&a))]).await.expect("gate");
    let mut partition = a.create_result_partition(vec![(channel, peer(&a))], Duration::ZERO).await.expect("partition");
    for sequence in 0..3 {
        {
            let mut next = Box::pin(gate.next());
            assert!(futures::poll!(&mut next).is_pending(), "nothing was sent yet");
            partition.send_batch(0, batch(rows_of(0, sequence, 10))).await.expect("send");
            // Woken, never polled again, dropped.
        }
        let event =
            tokio::time::timeout(WAIT, gate.next()).await.expect("in time").expect("an event").expect("no error");
        match event {
            (0, StreamEvent::Batch(batch)) => {
                assert_eq!(values(&batch), rows_of(0, sequence, 10).collect::<Vec<_>>())
            }
            other => panic!("expected batch {sequence}, got {other:?}"),
        }
    }
    partition.broadcast_event(StreamEvent::Barrier(1)).await.expect("barrier");
    partition.broadcast_event(StreamEvent::EndOfPartition).await.expect("end");
    drop(partition);
    let mut next = Box::pin(gate.next());
    let polled = futures::poll!(&mut next);
    assert!(matches!(polled, std::task::Poll::Ready(Some(Ok((0, StreamEvent::Barrier(1)))))), "{polled:?}");
    drop(next);
    assert_eq!(drain(&mut gate).await.expect("drain"), vec![Vec::<i64>::new()]);
}

/// The executor's loop: `next()` in a `select!` against a timer that fires often, over a remote and a local
/// channel, with watermarks and barriers between the batches. Every event arrives, in order per channel,
/// although many `next()` futures were dropped while waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_inside_select_with_a_timer_loses_no_event() {
    const BATCHES: i64 = 200;
    let (a, b) = (start("tm-a", config()).await, start("tm-b", config()).await);
    let (from_a, from_b) = (key(12, 0, 0, 0), key(12, 0, 1, 0));
    let producer = |env: Arc<NetworkEnvironment>, channel: ChannelKey, base: i64| {
        let target = peer(&a);
        tokio::spawn(async move {
            let mut partition = env.create_result_partition(vec![(channel, target)], Duration::ZERO).await?;
            for sequence in 0..BATCHES {
                partition.send_batch(0, batch(rows_of(base, sequence, 5))).await?;
                if sequence % 10 == 0 {
                    partition.broadcast_event(StreamEvent::Barrier(sequence as u64)).await?;
                }
                // Pacing (not synchronization): the consumer's timer must win many races against `next()`.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            partition.broadcast_event(StreamEvent::EndOfPartition).await?;
            partition.flush().await
        })
    };
    let producers = [producer(a.clone(), from_a, 0), producer(b.clone(), from_b, 1_000_000)];
    let gate = a.create_input_gate(vec![(from_a, peer(&a)), (from_b, peer(&b))]);
    let mut gate = tokio::time::timeout(WAIT, gate).await.expect("in time").expect("gate");

    let mut rows = [Vec::new(), Vec::new()];
    let mut barriers = [Vec::new(), Vec::new()];
    let mut timer_fired = 0u64;
    let read = async {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_micros(300)) => timer_fired += 1,
                event = gate.next() => match event {
                    None => break,
                    Some(event) => match event.expect("no error") {
                        (index, StreamEvent::Batch(batch)) => rows[index].extend(values(&batch)),
                        (index, StreamEvent::Barrier(id)) => barriers[index].push(id),
                        (_, StreamEvent::Watermark(_) | StreamEvent::EndOfPartition | StreamEvent::LatencyMarker(_)) => {}
                    },
                },
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("every event arrived");
    for producer in producers {
        producer.await.expect("task").expect("produce");
    }
    assert!(timer_fired > 0, "the timer never won, so no next() future was dropped");
    assert_eq!(rows[0], expected(0, BATCHES, 5));
    assert_eq!(rows[1], expected(1_000_000, BATCHES, 5));
    let expected_barriers: Vec<u64> = (0..BATCHES as u64).step_by(10).collect();
    assert_eq!(barriers, [expected_barriers.clone(), expected_barriers]);
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoint alignment
// ---------------------------------------------------------------------------------------------------------

/// A blocked channel's elements stay queued while the other channel is served; after `unblock_all` they
/// come out in their order. What aligned checkpoints rely on: nothing after a barrier is processed before
/// every channel has delivered the barrier.
#[tokio::test]
async fn a_blocked_channel_is_held_back_until_unblocked() {
    let a = start("tm-a", config()).await;
    let (first, second) = (key(21, 0, 0, 0), key(21, 0, 1, 0));
    let (gate, one, two) = tokio::join!(
        a.create_input_gate(vec![(first, peer(&a)), (second, peer(&a))]),
        a.create_result_partition(vec![(first, peer(&a))], Duration::ZERO),
        a.create_result_partition(vec![(second, peer(&a))], Duration::ZERO),
    );
    let (mut gate, mut one, mut two) = (gate.expect("gate"), one.expect("partition 1"), two.expect("partition 2"));

    one.broadcast_event(StreamEvent::Barrier(5)).await.expect("barrier");
    one.send_batch(0, batch(0..3)).await.expect("send");
    one.flush().await.expect("flush");
    assert!(matches!(next_element(&mut gate).await, (0, StreamEvent::Barrier(5))));
    gate.block(0);
    eventually("channel 0's batch is queued", || gate.in_flight_bytes() > 0).await;

    two.send_batch(0, batch(10..12)).await.expect("send");
    two.broadcast_event(StreamEvent::Barrier(5)).await.expect("barrier");
    two.flush().await.expect("flush");
    match next_element(&mut gate).await {
        (1, StreamEvent::Batch(batch)) => assert_eq!(values(&batch), vec![10, 11]),
        other => panic!("the blocked channel 0 was served: {other:?}"),
    }
    assert!(matches!(next_element(&mut gate).await, (1, StreamEvent::Barrier(5))));
    // Only the blocked channel has something: nothing comes.
    assert!(tokio::time::timeout(Duration::from_millis(50), gate.next()).await.is_err());

    gate.unblock_all();
    match next_element(&mut gate).await {
        (0, StreamEvent::Batch(batch)) => assert_eq!(values(&batch), vec![0, 1, 2]),
        other => panic!("expected channel 0's batch after unblocking, got {other:?}"),
    }
    for partition in [one, two] {
        produce(partition, vec![0], 0, 0).await.expect("end");
    }
    assert_eq!(drain(&mut gate).await.expect("drain"), vec![Vec::<i64>::new(), Vec::new()]);
}

async fn next_element(gate: &mut InputGate) -> (usize, StreamEvent) {
    tokio::time::timeout(WAIT, gate.next()).await.expect("in time").expect("an element").expect("no error")
}

/// Cluster credentials from a secret file holding `secret`, kept in `dir`.
fn credentials(
    dir: &std::path::Path,
    name: &str,
    secret: &str,
) -> Arc<sluice_common::cluster_auth::ClusterCredentials> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("the secret file is written");
    let args =
        sluice_common::cluster_auth::ClusterAuthArgs { cluster_auth: "secret".into(), cluster_secret_file: Some(path) };
    Arc::new(sluice_common::cluster_auth::ClusterCredentials::for_task_manager(&args).expect("credentials"))
}

/// Sends a hello from `from` with `proof` to `env` and returns the answer: `Some(hello)` or `None` if closed.
async fn hello_with_proof(env: &NetworkEnvironment, from: &str, proof: Vec<u8>) -> Option<Frame> {
    let stream = TcpStream::connect(env.local_addr()).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    let hello = Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: from.to_string(), proof: proof.into() };
    framed.send(hello).await.expect("hello sent");
    match tokio::time::timeout(WAIT, framed.next()).await.expect("an answer or a close within the bound") {
        Some(Ok(frame)) => Some(frame),
        Some(Err(_)) | None => None,
    }
}

#[tokio::test]
async fn only_a_peer_proving_the_cluster_secret_may_open_a_data_channel() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ours = credentials(dir.path(), "ours", &"s".repeat(40));
    let theirs = credentials(dir.path(), "theirs", &"t".repeat(40));
    let start_with = |id: &str, credentials: Arc<sluice_common::cluster_auth::ClusterCredentials>| {
        NetworkEnvironment::start_with_credentials("127.0.0.1:0", id.to_string(), config(), credentials, None)
    };
    let a = start_with("tm-a", ours.clone()).await.expect("tm-a starts");
    let b = start_with("tm-b", ours.clone()).await.expect("tm-b starts");

    assert_eq!(hello_with_proof(&b, "tm-0", Vec::new()).await, None, "a hello without a proof is refused");
    assert_eq!(hello_with_proof(&b, "tm-0", theirs.hello_proof("tm-0", "tm-b")).await, None, "another secret");
    assert_eq!(hello_with_proof(&b, "tm-0", ours.hello_proof("tm-0", "tm-c")).await, None, "a proof for another peer");
    assert_eq!(hello_with_proof(&b, "tm-0", ours.hello_proof("tm-a", "tm-b")).await, None, "another sender's proof");
    eventually("every stranger was refused", || b.stats().connections_refused == 4).await;
    match hello_with_proof(&b, "tm-0", ours.hello_proof("tm-0", "tm-b")).await {
        Some(Frame::Hello { task_manager_id, proof, .. }) => {
            assert_eq!(task_manager_id, "tm-b");
            assert!(ours.verify_hello("tm-b", "tm-0", &proof), "the answer proves membership too");
        }
        other => panic!("a member's hello was not answered: {other:?}"),
    }

    // Members exchange data as before.
    assert_exchange(&a, &b, 9, 20).await;
}

/// Sends `batches` batches of 10 rows from `producer` to `consumer` over a channel of execution
/// `execution_id`, and checks that all of them arrive in order.
async fn assert_exchange(
    producer: &NetworkEnvironment,
    consumer: &NetworkEnvironment,
    execution_id: u64,
    batches: i64,
) {
    let channel = key(execution_id, 0, 0, 0);
    let (gate, partition) = tokio::join!(
        consumer.create_input_gate(vec![(channel, peer(producer))]),
        producer.create_result_partition(vec![(channel, peer(consumer))], Duration::ZERO)
    );
    let (mut gate, partition) = (gate.expect("gate"), partition.expect("partition"));
    let (produced, rows) = tokio::join!(produce(partition, vec![0], batches, 10), drain(&mut gate));
    produced.expect("produce");
    assert_eq!(rows.expect("drain"), vec![expected(0, batches, 10)]);
}

/// Connects as TaskManager `id` (no proof: the environments here have no cluster secret) and sends a hello;
/// returns the connection and the reply, if one came before the server closed it.
async fn handshake_as(env: &NetworkEnvironment, id: &str) -> (Framed<TcpStream, FrameCodec>, Option<Frame>) {
    let stream = TcpStream::connect(env.local_addr()).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    let hello = Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: id.to_string(), proof: Bytes::new() };
    framed.send(hello).await.expect("hello");
    let reply = tokio::time::timeout(WAIT, framed.next()).await.expect("an answer or a close in time");
    (framed, reply.and_then(Result::ok))
}

/// Whether the server closed `framed` (EOF or reset) within [`WAIT`].
async fn closed_by_server(framed: &mut Framed<TcpStream, FrameCodec>) -> bool {
    matches!(tokio::time::timeout(WAIT, framed.next()).await, Ok(None | Some(Err(_))))
}

/// Goal: an idle stranger holds a pending-handshake place for [`super::ACCEPT_HANDSHAKE_TIMEOUT_MAX`] at
/// most, however long `connect_timeout` is (issue 19). Method: a socket that connects and sends nothing,
/// against an environment whose connect timeout is a minute; the time until the server closes it is
/// measured.
#[tokio::test]
async fn an_idle_stranger_is_closed_within_the_accept_handshake_bound() {
    let config = NetworkConfig { connect_timeout: Duration::from_secs(60), ..config() };
    let b = start("tm-b", config).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(b.local_addr()).await.expect("connect");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(WAIT, idle.read_to_end(&mut sink)).await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the idle stranger was not closed within {WAIT:?}");
    assert!(took < super::ACCEPT_HANDSHAKE_TIMEOUT_MAX + Duration::from_secs(2), "closed after {took:?}");
    eventually("the stranger is counted as refused", || b.stats().connections_refused == 1).await;
}

/// Goal: connections past their handshake are capped at [`super::MAX_ACCEPTED_CONNECTIONS`] (issue 19).
/// Method: that many fake peers complete their handshake with tm-b and stay; one more is answered and then
/// closed, counted as refused; when one of the first closes, a new one is taken again.
#[tokio::test]
async fn accepted_connections_beyond_the_cap_are_closed_after_the_handshake() {
    let b = start("tm-b", config()).await;
    let mut peers = Vec::new();
    for n in 0..super::MAX_ACCEPTED_CONNECTIONS {
        let (framed, reply) = handshake_as(&b, &format!("tm-0-{n:03}")).await;
        assert!(matches!(reply, Some(Frame::Hello { .. })), "peer {n} was not answered: {reply:?}");
        peers.push(framed);
    }
    eventually("every peer is connected", || b.stats().connections == super::MAX_ACCEPTED_CONNECTIONS).await;
    let (mut extra, _) = handshake_as(&b, "tm-0-extra").await;
    assert!(closed_by_server(&mut extra).await, "the connection beyond the cap stayed open");
    eventually("the connection beyond the cap is counted as refused", || b.stats().connections_refused == 1).await;
    assert_eq!(b.stats().connections, super::MAX_ACCEPTED_CONNECTIONS);

    drop(peers.pop());
    eventually("the closed peer is gone", || b.stats().connections == super::MAX_ACCEPTED_CONNECTIONS - 1).await;
    let (mut again, reply) = handshake_as(&b, "tm-0-again").await;
    assert!(matches!(reply, Some(Frame::Hello { .. })), "{reply:?}");
    eventually("a new peer is taken below the cap", || b.stats().connections == super::MAX_ACCEPTED_CONNECTIONS).await;
    assert!(!closed_by_server_quickly(&mut again).await, "the peer below the cap was closed");
}

/// Whether the server closes `framed` within [`PENDING_GRACE`] (a negative check: a slow machine only
/// makes it weaker).
async fn closed_by_server_quickly(framed: &mut Framed<TcpStream, FrameCodec>) -> bool {
    matches!(tokio::time::timeout(PENDING_GRACE, framed.next()).await, Ok(None | Some(Err(_))))
}

/// Goal: credits for channels no partition here claims do not leave sending state behind (issue 19).
/// Method: a fake peer sends credits for 100 unknown channels (each creates an unclaimed sender, since a
/// gate may legitimately grant credit before its producer is deployed); a partition claims one of them;
/// when the peer's connection closes, the 99 unclaimed are dropped and the claimed one stays.
#[tokio::test]
async fn credits_for_unknown_channels_leave_no_sending_state_once_their_connection_closes() {
    let b = start("tm-b", config()).await;
    let mut peer = fake_peer(&b).await;
    for n in 0..100 {
        peer.send(Frame::Credit { channel: key(9, 0, n, 0), credits: 2 }).await.expect("credit");
    }
    eventually("100 senders exist", || b.stats().sender_channels == 100).await;
    let fake = PeerAddress { task_manager_id: "tm-0".to_string(), data_address: "127.0.0.1:1".to_string() };
    let partition = b.create_result_partition(vec![(key(9, 0, 0, 0), fake)], Duration::ZERO).await;
    let _partition = partition.expect("the partition claims the credited channel");
    assert_eq!(b.stats().sender_channels, 100);
    drop(peer);
    eventually("the unclaimed senders are dropped", || b.stats().sender_channels == 1).await;
    assert_eq!(b.stats().protocol_errors, 0, "credits for unknown channels are not a protocol error");
}

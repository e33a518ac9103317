//! One TCP connection to another TaskManager, carrying every channel between the two in both directions.
//!
//! Only one connection per pair: the TaskManager whose id sorts first dials, the other waits to be dialed
//! (see [`NetworkEnvironment`](super::NetworkEnvironment)). The handshake is a hello frame each way; the
//! acceptor answers only a valid hello (magic, version, an id that sorts before its own), so a stranger
//! learns nothing and is closed with a logged reason.
//!
//! After the handshake two tasks own the socket:
//! - the **reader** decodes frames and routes them: data and events into gates, credits to senders;
//! - the **writer** waits on [`Connection::wake`], then writes the credits gates announced (coalesced per
//!   channel) and the buffers of the senders [`scheduled`](Connection::schedule) on it, up to
//!   [`MAX_BUFFERS_PER_CHANNEL_TURN`] per channel per turn so one busy channel does not starve the others.
//!
//! The outbox is bounded without a fixed capacity: it holds at most one entry per channel (a scheduled
//! sender is not scheduled twice; credits for a channel add up in one entry). Any error on either side
//! closes the connection and fails the channels using it.
use sluice_common::cluster_auth::ClusterCredentials;
use sluice_common::tls::Tls;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::buffer::Payload;
use super::channel::{Event, Outgoing, SenderChannel};
use super::environment::Shared;
use super::frame::{Frame, FrameCodec, FrameError, MAX_HELLO_FRAME_BYTES, PROTOCOL_VERSION};
use super::{lock, ChannelKey, NetworkError, PeerAddress};

/// Buffers the writer takes from one channel before serving the next scheduled one. Small enough that a
/// channel with many credits does not delay the others by more than a few buffers; large enough to amortize
/// taking the channel's lock.
pub const MAX_BUFFERS_PER_CHANNEL_TURN: usize = 4;
/// First delay before dialing again when the peer refuses the connection (its port may not be up yet).
const DIAL_RETRY_DELAY_MIN: std::time::Duration = std::time::Duration::from_millis(20);
/// Longest delay between two dials; dialing stops at `connect_timeout`.
const DIAL_RETRY_DELAY_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// A data connection's byte stream: plain TCP, or TLS over it (see `sluice_common::tls`).
pub(crate) trait DataStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> DataStream for T {}

pub(crate) type FramedStream = Framed<Box<dyn DataStream>, FrameCodec>;

/// How a process secures its data connections: the cluster secret for the hello, and TLS if it is on.
pub(crate) struct Security<'a> {
    pub credentials: &'a ClusterCredentials,
    pub tls: Option<&'a Tls>,
}

/// A live (or closing) connection to one peer TaskManager.
pub(crate) struct Connection {
    /// Unique per environment, so a replaced connection's channels can be told apart.
    pub id: u64,
    pub peer_id: String,
    outbox: std::sync::Mutex<Outbox>,
    /// Signalled when the outbox gains work; only the writer waits on it.
    wake: Notify,
    /// Cancelled when the connection closes (error, peer gone, replacement, or environment shutdown).
    closed: CancellationToken,
}

#[derive(Default)]
struct Outbox {
    ready: VecDeque<Arc<SenderChannel>>,
    scheduled: HashSet<ChannelKey>,
    credits: HashMap<ChannelKey, u32>,
}

impl Connection {
    fn new(id: u64, peer_id: String, closed: CancellationToken) -> Arc<Self> {
        Arc::new(Self { id, peer_id, outbox: Default::default(), wake: Notify::new(), closed })
    }

    pub(crate) fn is_alive(&self) -> bool {
        !self.closed.is_cancelled()
    }

    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Asks the writer to send what `sender` can send.
    pub(crate) fn schedule(&self, sender: Arc<SenderChannel>) {
        let mut outbox = lock(&self.outbox);
        if outbox.scheduled.insert(sender.key) {
            outbox.ready.push_back(sender);
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// Asks the writer to announce `credits` more on channel `key` to the peer.
    pub(crate) fn announce_credits(&self, key: ChannelKey, credits: u32) {
        let mut outbox = lock(&self.outbox);
        let entry = outbox.credits.entry(key).or_insert(0);
        *entry = entry.saturating_add(credits);
        drop(outbox);
        self.wake.notify_one();
    }

    fn take_outbox(&self) -> (Vec<(ChannelKey, u32)>, Vec<Arc<SenderChannel>>) {
        let mut outbox = lock(&self.outbox);
        outbox.scheduled.clear();
        let credits = outbox.credits.drain().collect();
        let ready = outbox.ready.drain(..).collect();
        (credits, ready)
    }
}

/// Starts the reader and writer of a connection whose handshake is done.
pub(crate) fn spawn(env: &Arc<Shared>, id: u64, peer_id: String, framed: FramedStream) -> Arc<Connection> {
    let connection = Connection::new(id, peer_id, env.shutdown_token().child_token());
    let (sink, stream) = framed.split();
    let (reader_env, writer_env) = (env.clone(), env.clone());
    let (reader_connection, writer_connection) = (connection.clone(), connection.clone());
    tokio::spawn(async move {
        let closed = reader_connection.closed.clone();
        let reason = tokio::select! {
            _ = closed.cancelled() => return,
            reason = read_loop(&reader_env, &reader_connection, stream) => reason,
        };
        reader_env.connection_closed(&reader_connection, &reason);
    });
    tokio::spawn(async move {
        let closed = writer_connection.closed.clone();
        let result = tokio::select! {
            _ = closed.cancelled() => return,
            result = write_loop(&writer_env, &writer_connection, sink) => result,
        };
        if let Err(e) = result {
            writer_env.connection_closed(&writer_connection, &format!("write failed: {e}"));
        }
    });
    connection
}

/// Routes incoming frames until the peer closes or misbehaves; returns why it stopped.
async fn read_loop(env: &Shared, connection: &Arc<Connection>, mut stream: SplitStream<FramedStream>) -> String {
    loop {
        match stream.next().await {
            None => return "the peer closed the connection".to_string(),
            Some(Err(e)) => {
                env.counters().protocol_errors.fetch_add(1, Ordering::Relaxed);
                return format!("bad frame: {e}");
            }
            Some(Ok(frame)) => {
                if let Err(reason) = env.handle_frame(connection, frame) {
                    env.counters().protocol_errors.fetch_add(1, Ordering::Relaxed);
                    return reason;
                }
            }
        }
    }
}

/// Writes credits and scheduled buffers, turn by turn, until an error (the caller stops it on close).
async fn write_loop(
    env: &Shared,
    connection: &Connection,
    mut sink: SplitSink<FramedStream, Frame>,
) -> Result<(), FrameError> {
    loop {
        connection.wake.notified().await;
        // Drain everything that is ready, then flush once; ends when a turn finds nothing new.
        loop {
            let (credits, ready) = connection.take_outbox();
            if credits.is_empty() && ready.is_empty() {
                break;
            }
            for (channel, credits) in credits {
                sink.feed(Frame::Credit { channel, credits }).await?;
            }
            for sender in ready {
                let (items, counter) = sender.take_sendable(MAX_BUFFERS_PER_CHANNEL_TURN);
                for (item, backlog) in items {
                    let frame = to_frame(sender.key, item, backlog);
                    let bytes = (frame.body_len() + super::frame::LENGTH_PREFIX_BYTES) as u64;
                    sink.feed(frame).await?;
                    env.counters().remote_bytes_out.fetch_add(bytes, Ordering::Relaxed);
                    if let Some(counter) = &counter {
                        counter.fetch_add(bytes, Ordering::Relaxed);
                    }
                }
                if sender.is_sendable() {
                    connection.schedule(sender);
                }
            }
            sink.flush().await?;
        }
    }
}

fn to_frame(channel: ChannelKey, item: Outgoing, backlog: u32) -> Frame {
    match item {
        Outgoing::Data(buffer) => {
            let ipc = match buffer.payload {
                Payload::Ipc(ipc) => ipc,
                // A remote channel's partition always encodes; a batch here would be a bug upstream.
                Payload::Batch(batch) => {
                    debug_assert!(false, "channel {channel}: an unencoded batch reached the connection writer");
                    super::buffer::encode_batch(&batch).unwrap_or_default()
                }
            };
            Frame::Data { channel, backlog, ipc }
        }
        Outgoing::Event(Event::Watermark(timestamp_ms)) => Frame::Watermark { channel, timestamp_ms },
        Outgoing::Event(Event::Barrier(checkpoint_id)) => Frame::Barrier { channel, checkpoint_id },
        Outgoing::Event(Event::EndOfPartition) => Frame::EndOfPartition { channel },
        Outgoing::Event(Event::LatencyMarker(emitted_ms)) => Frame::LatencyMarker { channel, emitted_ms },
    }
}

/// Dials `peer`, retrying refused connections until `deadline`, and performs the dialer's handshake.
pub(crate) async fn dial(
    local_id: &str,
    security: Security<'_>,
    peer: &PeerAddress,
    max_frame_bytes: usize,
    deadline: Instant,
) -> Result<FramedStream, NetworkError> {
    let connect_error = |reason: String| NetworkError::Connect {
        peer: peer.task_manager_id.clone(),
        address: peer.data_address.clone(),
        reason,
    };
    let mut delay = DIAL_RETRY_DELAY_MIN;
    // Ends at `deadline`: every iteration either connects, fails, or sleeps towards the deadline.
    let stream = loop {
        match tokio::time::timeout_at(deadline, TcpStream::connect(&peer.data_address)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) if Instant::now() + delay < deadline => {
                tracing::debug!(peer = %peer.task_manager_id, address = %peer.data_address, error = %e, "dial failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(DIAL_RETRY_DELAY_MAX);
            }
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => return Err(connect_error("timed out".to_string())),
        }
    };
    stream.set_nodelay(true).map_err(|e| connect_error(e.to_string()))?;
    let handshake_error = |reason: String| NetworkError::Handshake { peer: peer.task_manager_id.clone(), reason };
    let credentials = security.credentials;
    let stream: Box<dyn DataStream> = match security.tls {
        None => Box::new(stream),
        Some(tls) => {
            let name =
                sluice_common::tls::server_name(&peer.data_address).map_err(|e| handshake_error(e.to_string()))?;
            match tokio::time::timeout_at(deadline, tls.connector().connect(name, stream)).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => return Err(handshake_error(format!("TLS: {e}"))),
                Err(_) => return Err(handshake_error("timed out in the TLS handshake".to_string())),
            }
        }
    };
    let mut framed = Framed::new(stream, FrameCodec::new(MAX_HELLO_FRAME_BYTES));
    let proof = credentials.hello_proof(local_id, &peer.task_manager_id).into();
    let hello = Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: local_id.to_string(), proof };
    match tokio::time::timeout_at(deadline, framed.send(hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(handshake_error(format!("cannot send hello: {e}"))),
        Err(_) => return Err(handshake_error("timed out sending hello".to_string())),
    }
    let reply = match tokio::time::timeout_at(deadline, framed.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return Err(handshake_error(format!("bad reply: {e}"))),
        Ok(None) => return Err(handshake_error("the peer closed the connection (it refused our hello)".to_string())),
        Err(_) => return Err(handshake_error("timed out waiting for the reply".to_string())),
    };
    match reply {
        Frame::Hello { version, .. } if version != PROTOCOL_VERSION => {
            Err(handshake_error(format!("protocol version {version}, expected {PROTOCOL_VERSION}")))
        }
        Frame::Hello { task_manager_id, .. } if task_manager_id != peer.task_manager_id => {
            Err(handshake_error(format!("{} answers as {task_manager_id}", peer.data_address)))
        }
        Frame::Hello { task_manager_id, proof, .. }
            if !credentials.verify_hello(&task_manager_id, local_id, &proof) =>
        {
            Err(handshake_error(format!("{task_manager_id} cannot prove it belongs to the cluster")))
        }
        Frame::Hello { .. } => {
            framed.codec_mut().set_max_frame_bytes(max_frame_bytes);
            Ok(framed)
        }
        other => Err(handshake_error(format!("expected hello, got a {} frame", other.kind_name()))),
    }
}

/// The acceptor's handshake: checks the dialer's hello and answers it. Returns the peer's id, or why the
/// connection is refused.
pub(crate) async fn accept(
    stream: TcpStream,
    local_id: &str,
    security: Security<'_>,
    max_frame_bytes: usize,
    deadline: Instant,
) -> Result<(String, FramedStream), String> {
    stream.set_nodelay(true).map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let stream: Box<dyn DataStream> = match security.tls {
        None => Box::new(stream),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => Box::new(stream),
            Ok(Err(e)) => return Err(format!("TLS handshake failed (a plaintext peer?): {e}")),
            Err(_) => return Err("timed out in the TLS handshake".to_string()),
        },
    };
    accept_hello(stream, local_id, security.credentials, max_frame_bytes, deadline).await
}

/// The hello exchange of [`accept`], on a stream whose TLS (if any) is done: what a dialer's first bytes
/// reach. The `handshake` fuzz target drives it over an in-memory stream.
pub(crate) async fn accept_hello(
    stream: Box<dyn DataStream>,
    local_id: &str,
    credentials: &ClusterCredentials,
    max_frame_bytes: usize,
    deadline: Instant,
) -> Result<(String, FramedStream), String> {
    let mut framed = Framed::new(stream, FrameCodec::new(MAX_HELLO_FRAME_BYTES));
    let peer_id = match tokio::time::timeout_at(deadline, framed.next()).await {
        Err(_) => return Err("no hello before the handshake timeout".to_string()),
        Ok(None) => return Err("closed before sending a hello".to_string()),
        Ok(Some(Err(e))) => return Err(format!("bad hello: {e}")),
        Ok(Some(Ok(Frame::Hello { version, .. }))) if version != PROTOCOL_VERSION => {
            return Err(format!("protocol version {version}, expected {PROTOCOL_VERSION}"));
        }
        Ok(Some(Ok(Frame::Hello { task_manager_id, proof, .. }))) => {
            if !credentials.verify_hello(&task_manager_id, local_id, &proof) {
                return Err(format!("{task_manager_id} cannot prove it belongs to the cluster (wrong or no secret)"));
            }
            task_manager_id
        }
        Ok(Some(Ok(other))) => return Err(format!("expected hello, got a {} frame", other.kind_name())),
    };
    if peer_id.as_str() >= local_id {
        return Err(format!("TaskManager {peer_id} dialed, but {local_id} sorts first and is the one to dial"));
    }
    let proof = credentials.hello_proof(local_id, &peer_id).into();
    let hello = Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: local_id.to_string(), proof };
    match tokio::time::timeout_at(deadline, framed.send(hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot answer the hello of {peer_id}: {e}")),
        Err(_) => return Err(format!("timed out answering the hello of {peer_id}")),
    }
    framed.codec_mut().set_max_frame_bytes(max_frame_bytes);
    Ok((peer_id, framed))
}

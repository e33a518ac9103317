//! The wire format of the data port: length-delimited frames with a fixed header.
//!
//! Every frame is `u32 length (big endian) | body`, and every body starts with the same 21-byte header:
//!
//! ```text
//!  0      1               9         13               17             21
//!  +------+---------------+---------+----------------+--------------+----------------------------+
//!  | kind | execution u64 | edge u32| from_subtask   | to_subtask   | payload (per kind)         |
//!  +------+---------------+---------+----------------+--------------+----------------------------+
//!  hello:            magic "SLCE" | version u16 | id length u16 | TaskManager id (UTF-8)
//!  data:             backlog u32 | Arrow IPC stream of exactly one RecordBatch (schema included)
//!  barrier:          checkpoint id u64
//!  watermark:        timestamp ms i64
//!  end-of-partition: (empty)
//!  credit:           credits u32
//! ```
//!
//! All integers are big endian. The hello frame carries a zero channel.
//!
//! The decision that matters here is that the length prefix is never trusted: [`FrameCodec`] compares it
//! with the connection's maximum frame length *before* reserving memory for the body (a stranger's
//! `GET / HTTP/1.1` reads as a 1.2 GB length and is refused at once). During the handshake the maximum is
//! [`MAX_HELLO_FRAME_BYTES`], so an unauthenticated peer can make us buffer at most a few hundred bytes.
//! Decoding is strict: an unknown kind, a payload shorter than its kind needs, or trailing bytes after a
//! fixed-size payload are [`FrameError`]s, which close the connection; no input panics.
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::ChannelKey;

/// The first payload bytes of a hello frame: a peer that does not send them is not a Sluice TaskManager.
pub const PROTOCOL_MAGIC: [u8; 4] = *b"SLCE";
/// Bumped on any incompatible change of this file; a peer with another version is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 3;
/// Bytes of the length prefix in front of every frame body.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes of the header at the start of every frame body: kind, execution id, edge, from and to subtask.
pub const HEADER_BYTES: usize = 1 + 8 + 4 + 4 + 4;
/// The longest TaskManager id a hello may carry; a longer one fails the handshake.
pub const MAX_TASK_MANAGER_ID_BYTES: usize = 255;
/// The largest frame body accepted before the handshake completes: a hello with the longest id.
pub const MAX_HELLO_FRAME_BYTES: usize =
    HEADER_BYTES + PROTOCOL_MAGIC.len() + 2 + 2 + MAX_TASK_MANAGER_ID_BYTES + 2 + MAX_HELLO_PROOF_BYTES;
/// The longest membership proof a hello may carry (an HMAC-SHA256 is 32 bytes; see
/// `sluice_common::cluster_auth`).
pub const MAX_HELLO_PROOF_BYTES: usize = 64;
/// Bytes a data frame adds around its IPC payload (header and backlog); the frame-size check uses it.
pub const DATA_FRAME_OVERHEAD_BYTES: usize = HEADER_BYTES + 4;

const KIND_HELLO: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_BARRIER: u8 = 2;
const KIND_WATERMARK: u8 = 3;
const KIND_END_OF_PARTITION: u8 = 4;
const KIND_CREDIT: u8 = 5;
const KIND_LATENCY_MARKER: u8 = 6;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// First frame in each direction of a new connection: who is speaking, in which protocol version, and
    /// the proof that it belongs to the cluster (empty when cluster authentication is off).
    Hello { version: u16, task_manager_id: String, proof: Bytes },
    /// One network buffer: a RecordBatch as an Arrow IPC stream, and how many more data buffers the sender
    /// has queued for this channel (the receiver grants floating credits from it).
    Data { channel: ChannelKey, backlog: u32, ipc: Bytes },
    /// A checkpoint barrier; it consumes no credit.
    Barrier { channel: ChannelKey, checkpoint_id: u64 },
    /// An event-time watermark; it consumes no credit.
    Watermark { channel: ChannelKey, timestamp_ms: i64 },
    /// The sender will send nothing more on this channel.
    EndOfPartition { channel: ChannelKey },
    /// A latency marker: when a source emitted it (ms since the epoch); it consumes no credit.
    LatencyMarker { channel: ChannelKey, emitted_ms: i64 },
    /// Receiver to sender: this many more data buffers may be sent on the channel.
    Credit { channel: ChannelKey, credits: u32 },
}

impl Frame {
    /// The kind's name, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    /// The channel the frame belongs to (`None` for hello).
    pub fn channel(&self) -> Option<ChannelKey> {
        match self {
            Frame::Hello { .. } => None,
            Frame::Data { channel, .. }
            | Frame::Barrier { channel, .. }
            | Frame::Watermark { channel, .. }
            | Frame::LatencyMarker { channel, .. }
            | Frame::EndOfPartition { channel }
            | Frame::Credit { channel, .. } => Some(*channel),
        }
    }

    /// Bytes of the frame body (without the length prefix).
    pub fn body_len(&self) -> usize {
        HEADER_BYTES
            + match self {
                Frame::Hello { task_manager_id, proof, .. } => {
                    PROTOCOL_MAGIC.len() + 2 + 2 + task_manager_id.len() + 2 + proof.len()
                }
                Frame::Data { ipc, .. } => 4 + ipc.len(),
                Frame::Barrier { .. } | Frame::Watermark { .. } | Frame::LatencyMarker { .. } => 8,
                Frame::EndOfPartition { .. } => 0,
                Frame::Credit { .. } => 4,
            }
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => KIND_HELLO,
            Frame::Data { .. } => KIND_DATA,
            Frame::Barrier { .. } => KIND_BARRIER,
            Frame::Watermark { .. } => KIND_WATERMARK,
            Frame::LatencyMarker { .. } => KIND_LATENCY_MARKER,
            Frame::EndOfPartition { .. } => KIND_END_OF_PARTITION,
            Frame::Credit { .. } => KIND_CREDIT,
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_HELLO => "hello",
        KIND_DATA => "data",
        KIND_BARRIER => "barrier",
        KIND_WATERMARK => "watermark",
        KIND_END_OF_PARTITION => "end-of-partition",
        KIND_CREDIT => "credit",
        KIND_LATENCY_MARKER => "latency-marker",
        _ => "unknown",
    }
}

/// Why bytes from the wire are not a valid frame. Every variant closes the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {length} bytes exceeds the maximum of {max} bytes")]
    TooLong { length: usize, max: usize },
    #[error("{kind} frame truncated: it needs {needed} bytes and has {available}")]
    Truncated { kind: &'static str, needed: usize, available: usize },
    #[error("{kind} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("bad magic bytes {0:02x?}: not a Sluice data connection")]
    BadMagic([u8; 4]),
    #[error("invalid TaskManager id in hello: {0}")]
    BadTaskManagerId(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends `frame`, length prefix included, to `dst`.
///
/// The caller checks the size against the peer's maximum ([`FrameCodec`] does); a hello id longer than
/// [`MAX_TASK_MANAGER_ID_BYTES`] is written truncated to the limit's length field and fails the peer's check.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) {
    let body_len = frame.body_len();
    dst.reserve(LENGTH_PREFIX_BYTES + body_len);
    // A body above u32::MAX is impossible: frames are checked against max_frame_bytes (a usize config that
    // NetworkConfig::validate keeps below u32::MAX) before they are encoded.
    dst.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    dst.put_u8(frame.kind());
    let channel = frame.channel().unwrap_or(ChannelKey { execution_id: 0, edge: 0, from_subtask: 0, to_subtask: 0 });
    dst.put_u64(channel.execution_id);
    dst.put_u32(channel.edge);
    dst.put_u32(channel.from_subtask);
    dst.put_u32(channel.to_subtask);
    match frame {
        Frame::Hello { version, task_manager_id, proof } => {
            dst.put_slice(&PROTOCOL_MAGIC);
            dst.put_u16(*version);
            dst.put_u16(u16::try_from(task_manager_id.len()).unwrap_or(u16::MAX));
            dst.put_slice(task_manager_id.as_bytes());
            dst.put_u16(u16::try_from(proof.len()).unwrap_or(u16::MAX));
            dst.put_slice(proof);
        }
        Frame::Data { backlog, ipc, .. } => {
            dst.put_u32(*backlog);
            dst.put_slice(ipc);
        }
        Frame::Barrier { checkpoint_id, .. } => dst.put_u64(*checkpoint_id),
        Frame::Watermark { timestamp_ms, .. } => dst.put_i64(*timestamp_ms),
        Frame::LatencyMarker { emitted_ms, .. } => dst.put_i64(*emitted_ms),
        Frame::EndOfPartition { .. } => {}
        Frame::Credit { credits, .. } => dst.put_u32(*credits),
    }
}

/// Takes one frame off the front of `src` if it is complete: `Ok(None)` means "need more bytes".
///
/// The length prefix is checked against `max_frame_bytes` before anything is reserved.
pub fn decode_frame(src: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Frame>, FrameError> {
    let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length > max_frame_bytes {
        return Err(FrameError::TooLong { length, max: max_frame_bytes });
    }
    let total = LENGTH_PREFIX_BYTES + length;
    if src.len() < total {
        // Safe to reserve: `length` passed the maximum check above.
        src.reserve(total - src.len());
        return Ok(None);
    }
    src.advance(LENGTH_PREFIX_BYTES);
    decode_frame_body(src.split_to(length).freeze()).map(Some)
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode_frame_body(mut body: Bytes) -> Result<Frame, FrameError> {
    need(&body, "frame header", HEADER_BYTES)?;
    let kind = body.get_u8();
    let channel = ChannelKey {
        execution_id: body.get_u64(),
        edge: body.get_u32(),
        from_subtask: body.get_u32(),
        to_subtask: body.get_u32(),
    };
    let name = kind_name(kind);
    let frame = match kind {
        KIND_HELLO => return decode_hello(body),
        KIND_DATA => {
            need(&body, name, 4)?;
            let backlog = body.get_u32();
            return Ok(Frame::Data { channel, backlog, ipc: body });
        }
        KIND_BARRIER => {
            need(&body, name, 8)?;
            Frame::Barrier { channel, checkpoint_id: body.get_u64() }
        }
        KIND_WATERMARK => {
            need(&body, name, 8)?;
            Frame::Watermark { channel, timestamp_ms: body.get_i64() }
        }
        KIND_END_OF_PARTITION => Frame::EndOfPartition { channel },
        KIND_LATENCY_MARKER => {
            need(&body, name, 8)?;
            Frame::LatencyMarker { channel, emitted_ms: body.get_i64() }
        }
        KIND_CREDIT => {
            need(&body, name, 4)?;
            Frame::Credit { channel, credits: body.get_u32() }
        }
        other => return Err(FrameError::UnknownKind(other)),
    };
    if body.has_remaining() {
        return Err(FrameError::TrailingBytes { kind: name, extra: body.remaining() });
    }
    Ok(frame)
}

fn decode_hello(mut body: Bytes) -> Result<Frame, FrameError> {
    let name = kind_name(KIND_HELLO);
    need(&body, name, PROTOCOL_MAGIC.len() + 2 + 2)?;
    let mut magic = [0u8; 4];
    body.copy_to_slice(&mut magic);
    if magic != PROTOCOL_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = body.get_u16();
    let id_len = body.get_u16() as usize;
    if id_len == 0 || id_len > MAX_TASK_MANAGER_ID_BYTES {
        return Err(FrameError::BadTaskManagerId(format!(
            "length {id_len} is outside 1..={MAX_TASK_MANAGER_ID_BYTES}"
        )));
    }
    need(&body, name, id_len + 2)?;
    let id = body.split_to(id_len);
    let proof_len = body.get_u16() as usize;
    if proof_len > MAX_HELLO_PROOF_BYTES {
        return Err(FrameError::BadTaskManagerId(format!(
            "a proof of {proof_len} bytes, over {MAX_HELLO_PROOF_BYTES}"
        )));
    }
    need(&body, name, proof_len)?;
    let proof = body.split_to(proof_len);
    if body.has_remaining() {
        return Err(FrameError::TrailingBytes { kind: name, extra: body.remaining() });
    }
    let task_manager_id =
        String::from_utf8(id.to_vec()).map_err(|_| FrameError::BadTaskManagerId("not UTF-8".to_string()))?;
    Ok(Frame::Hello { version, task_manager_id, proof })
}

fn need(body: &Bytes, kind: &'static str, needed: usize) -> Result<(), FrameError> {
    if body.remaining() < needed {
        return Err(FrameError::Truncated { kind, needed, available: body.remaining() });
    }
    Ok(())
}

/// A tokio codec for [`Frame`]s with a maximum body length that can be raised once the handshake is done.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec refusing (in both directions) frame bodies longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// Changes the maximum, e.g. from [`MAX_HELLO_FRAME_BYTES`] to the configured one after the handshake.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The current maximum frame body length.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        decode_frame(src, self.max_frame_bytes)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let length = frame.body_len();
        if length > self.max_frame_bytes {
            return Err(FrameError::TooLong { length, max: self.max_frame_bytes });
        }
        encode_frame(&frame, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn channel() -> ChannelKey {
        ChannelKey { execution_id: 0x0102_0304_0506_0708, edge: 3, from_subtask: 1, to_subtask: 2 }
    }

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: "tm-a".to_string(), proof: Bytes::new() },
            Frame::Data { channel: channel(), backlog: 7, ipc: Bytes::from_static(b"not really ipc") },
            Frame::Data { channel: channel(), backlog: 0, ipc: Bytes::new() },
            Frame::Barrier { channel: channel(), checkpoint_id: u64::MAX },
            Frame::Watermark { channel: channel(), timestamp_ms: -5 },
            Frame::LatencyMarker { channel: channel(), emitted_ms: 1_700_000_000_000 },
            Frame::EndOfPartition { channel: channel() },
            Frame::Credit { channel: channel(), credits: 3 },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_the_codec() {
        let mut codec = FrameCodec::new(MAX);
        let mut wire = BytesMut::new();
        for frame in every_kind() {
            codec.encode(frame, &mut wire).expect("encode");
        }
        for expected in every_kind() {
            let decoded = codec.decode(&mut wire).expect("decode").expect("a complete frame");
            assert_eq!(decoded, expected);
        }
        assert!(wire.is_empty(), "{} bytes left over", wire.len());
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_is_decoded_once_complete() {
        let frame = Frame::Data { channel: channel(), backlog: 1, ipc: Bytes::from_static(b"abcdef") };
        let mut wire = BytesMut::new();
        encode_frame(&frame, &mut wire);
        let mut src = BytesMut::new();
        let mut codec = FrameCodec::new(MAX);
        for (i, byte) in wire.iter().enumerate() {
            src.put_u8(*byte);
            let decoded = codec.decode(&mut src).expect("no error on a partial frame");
            assert_eq!(decoded.is_some(), i + 1 == wire.len(), "byte {i}");
        }
    }

    #[test]
    fn a_length_over_the_maximum_is_rejected_before_allocating() {
        let mut src = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity_before = src.capacity();
        let err = decode_frame(&mut src, 1024).expect_err("must refuse");
        assert!(matches!(err, FrameError::TooLong { length, max: 1024 } if length == u32::MAX as usize), "{err}");
        assert_eq!(src.capacity(), capacity_before, "nothing was reserved for the announced length");
    }

    #[test]
    fn an_http_request_is_refused_as_too_long_during_the_handshake() {
        let mut src = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let err = decode_frame(&mut src, MAX_HELLO_FRAME_BYTES).expect_err("must refuse");
        assert!(matches!(err, FrameError::TooLong { .. }), "{err}");
    }

    #[test]
    fn the_encoder_refuses_frames_over_the_maximum() {
        let mut codec = FrameCodec::new(HEADER_BYTES + 4 + 3);
        let frame = Frame::Data { channel: channel(), backlog: 0, ipc: Bytes::from_static(b"four") };
        let err = codec.encode(frame, &mut BytesMut::new()).expect_err("too long");
        assert!(matches!(err, FrameError::TooLong { length: 29, max: 28 }), "{err}");
    }

    #[test]
    fn every_truncation_of_every_fixed_kind_is_an_error_not_a_panic() {
        for frame in every_kind() {
            let mut wire = BytesMut::new();
            encode_frame(&frame, &mut wire);
            let body = wire.split_off(LENGTH_PREFIX_BYTES).freeze();
            let minimum = match frame {
                // A data frame's IPC bytes may be cut anywhere; decoding the IPC finds that out later.
                Frame::Data { .. } => DATA_FRAME_OVERHEAD_BYTES,
                _ => body.len(),
            };
            for cut in 0..minimum {
                let result = decode_frame_body(body.slice(..cut));
                assert!(
                    matches!(result, Err(FrameError::Truncated { .. })),
                    "{} cut at {cut}: {result:?}",
                    frame.kind_name()
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A deterministic pseudo-random byte soup (xorshift) in many lengths; any outcome but a panic is fine,
        // and a frame must only come out if the bytes happened to form one.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for length in 0..256usize {
            let bytes: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            let _ = decode_frame_body(Bytes::from(bytes.clone()));
            let _ = decode_frame(&mut BytesMut::from(&bytes[..]), MAX);
        }
    }

    #[test]
    fn unknown_kinds_trailing_bytes_and_bad_magic_are_errors() {
        let mut body = BytesMut::from(&[0u8; HEADER_BYTES][..]);
        body[0] = 42;
        assert!(matches!(decode_frame_body(body.clone().freeze()), Err(FrameError::UnknownKind(42))));

        let mut wire = BytesMut::new();
        encode_frame(&Frame::Credit { channel: channel(), credits: 1 }, &mut wire);
        wire.put_u8(0);
        let err = decode_frame_body(wire.split_off(LENGTH_PREFIX_BYTES).freeze()).expect_err("trailing byte");
        assert!(matches!(err, FrameError::TrailingBytes { kind: "credit", extra: 1 }), "{err}");

        let mut wire = BytesMut::new();
        encode_frame(
            &Frame::Hello { version: PROTOCOL_VERSION, task_manager_id: "tm".into(), proof: Bytes::new() },
            &mut wire,
        );
        wire[LENGTH_PREFIX_BYTES + HEADER_BYTES] = b'X';
        let err = decode_frame_body(wire.split_off(LENGTH_PREFIX_BYTES).freeze()).expect_err("bad magic");
        assert!(matches!(err, FrameError::BadMagic(_)), "{err}");
    }
}

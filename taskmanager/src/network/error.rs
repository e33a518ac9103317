//! Errors of the network stack, grouped by what the caller does about them.
//!
//! Setup errors (`InvalidConfig`, `Bind`) stop the TaskManager. Channel-setup errors (`Connect`,
//! `PeerTimeout`, `Handshake`, `ChannelInUse`, `ExecutionReleased`) fail the task being deployed; the
//! JobManager's restart strategy takes it from there. Runtime errors (`ConnectionLost`, `Protocol`,
//! `Decode`, `FrameTooLarge`) fail the tasks using the channel. None of them is a panic: they come from
//! the outside world.
use std::time::Duration;

use datafusion::arrow::error::ArrowError;

use super::frame::FrameError;
use super::ChannelKey;

/// An error of the network stack.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot bind the data port {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("cannot connect to TaskManager {peer} at {address}: {reason}")]
    Connect { peer: String, address: String, reason: String },
    #[error("TaskManager {peer} did not connect within {waited:?} (it dials us because its id sorts first)")]
    PeerTimeout { peer: String, waited: Duration },
    #[error("handshake with TaskManager {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("the connection to TaskManager {peer} was lost: {reason}")]
    ConnectionLost { peer: String, reason: String },
    #[error("execution {execution_id} was released")]
    ExecutionReleased { execution_id: u64 },
    #[error("channel {key} is already registered on this TaskManager")]
    ChannelInUse { key: ChannelKey },
    #[error("subpartition {index} does not exist: the partition has {count}")]
    NoSuchSubpartition { index: usize, count: usize },
    #[error(
        "channel {key}: a buffer of {bytes} bytes does not fit the maximum frame of {max} bytes (one row too large?)"
    )]
    FrameTooLarge { key: ChannelKey, bytes: usize, max: usize },
    #[error("channel {key}: protocol violation: {reason}")]
    Protocol { key: ChannelKey, reason: String },
    #[error("channel {key}: cannot decode a data buffer: {source}")]
    Decode { key: ChannelKey, source: ArrowError },
    #[error("channel {key}: {source}")]
    Arrow { key: ChannelKey, source: ArrowError },
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

impl NetworkError {
    /// What kind of task failure this is: a row too large for any frame is the data's; everything else is
    /// the network's, a peer's or this TaskManager's limits (I/O, the resources kind: another placement or
    /// a later try may get through).
    pub fn kind(&self) -> sluice_common::lifecycle::FailureKind {
        use sluice_common::lifecycle::FailureKind;
        match self {
            NetworkError::FrameTooLarge { .. } => FailureKind::Input,
            _ => FailureKind::Io,
        }
    }
}

/// Why a channel stopped working: kept in shared channel state and handed to every waiter as an error.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    Released { execution_id: u64 },
    ConnectionLost { peer: String, reason: String },
    Protocol { key: ChannelKey, reason: String },
}

impl Failure {
    pub(crate) fn to_error(&self) -> NetworkError {
        match self.clone() {
            Failure::Released { execution_id } => NetworkError::ExecutionReleased { execution_id },
            Failure::ConnectionLost { peer, reason } => NetworkError::ConnectionLost { peer, reason },
            Failure::Protocol { key, reason } => NetworkError::Protocol { key, reason },
        }
    }
}

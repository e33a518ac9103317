//! The acceptor's side of the data-port handshake: the fuzzer's bytes are what a dialer sends, over an
//! in-memory stream that then ends. Any bytes give an accepted peer id or a refusal, in bounded time.
#![no_main]
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sluice_common::cluster_auth::ClusterCredentials;
use sluice_taskmanager::fuzzing::accept_handshake;
use tokio::io::AsyncWriteExt;

/// The acceptor's id: a dialer's id must sort before it, so most ids a fuzzer makes can be accepted.
const LOCAL_ID: &str = "tm-z";
/// The in-memory stream's buffer, each way: more than an input (libFuzzer's default `-max_len` is 4 KiB)
/// and the acceptor's answer, so neither side ever waits for the other to read.
const STREAM_BUFFER_BYTES: usize = 1 << 20;
/// The connection's maximum frame length once the handshake is done.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The wait for a hello. The stream ends after the input, so an accept never needs it; reaching it is a hang.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime for the target")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (mut dialer, acceptor) = tokio::io::duplex(STREAM_BUFFER_BYTES.max(data.len() + 1));
        dialer.write_all(data).await.expect("the buffer holds the whole input");
        dialer.shutdown().await.expect("an in-memory stream shuts down");
        let credentials = ClusterCredentials::none();
        let accepted = accept_handshake(acceptor, LOCAL_ID, &credentials, MAX_FRAME_BYTES, HANDSHAKE_TIMEOUT).await;
        if let Ok(peer_id) = accepted {
            assert!(peer_id.as_str() < LOCAL_ID, "{peer_id} was accepted but does not sort before {LOCAL_ID}");
        }
    });
});

//! The data port's frame decoder, as a stranger's bytes meet it: first under the handshake's maximum frame
//! length, then (for odd first bytes) under a connection's. Every decoded frame must encode back to the same
//! frame, and a data frame's Arrow IPC payload goes through the receiver's decoder.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_taskmanager::fuzzing::decode_data_frame_payload;
use sluice_taskmanager::network::frame::{decode_frame, encode_frame, Frame, MAX_HELLO_FRAME_BYTES};

/// The maximum frame length after the handshake: small (the default is 64 MiB), so that inputs of a few
/// KiB reach both sides of the length check.
const MAX_FRAME_BYTES: usize = 16 * 1024;

fuzz_target!(
    // libfuzzer-sys's panic hook aborts on every panic, even one the code under test catches; Arrow's IPC
    // reader panics on some malformed input and Sluice catches that (`sluice_common::untrusted`). The
    // default hook prints the panic; a panic nothing catches still aborts (libfuzzer-sys catches it and
    // aborts), so it is still a crash.
    init: drop(std::panic::take_hook()),
    |data: &[u8]| {
        let Some((&selector, wire)) = data.split_first() else { return };
        let max_frame_bytes = if selector % 2 == 0 { MAX_HELLO_FRAME_BYTES } else { MAX_FRAME_BYTES };
        let mut src = BytesMut::from(wire);
        // Ends: every decoded frame takes at least a length prefix and a header off `src`.
        while let Ok(Some(frame)) = decode_frame(&mut src, max_frame_bytes) {
            let mut encoded = BytesMut::new();
            encode_frame(&frame, &mut encoded);
            let again = decode_frame(&mut encoded, max_frame_bytes);
            assert!(
                matches!(&again, Ok(Some(f)) if *f == frame) && encoded.is_empty(),
                "{frame:?} does not survive encoding: {again:?}"
            );
            if let Frame::Data { ipc, .. } = frame {
                let _ = decode_data_frame_payload(ipc);
            }
        }
    }
);

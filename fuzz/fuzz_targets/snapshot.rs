//! A task's snapshot file as a restoring subtask reads it: header, checksum and trailer checks, the
//! records, then what restore does with them (keyed state merged into a heap backend for this subtask's key
//! groups, buffered records decoded and filtered by key). Each input is tried as it is and "resealed" (its
//! checksum recomputed), so that damaged records reach the decoder instead of all stopping at the checksum.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_taskmanager::checkpoint::{decode_batches, merge_keyed, read_snapshot_keeping};
use sluice_taskmanager::fuzzing::{restore_buffered, seal_snapshot};
use sluice_taskmanager::state::{key_group_of_state_key, HeapBackend, KeyedStateBackend};

/// Key groups of the job (max_parallelism) and the range the restoring subtask owns.
const MAX_PARALLELISM: u32 = 128;
const KEY_GROUPS: std::ops::RangeInclusive<u16> = 0..=63;
/// The key columns a restoring window operator hashes in its buffered records.
const KEY_COLUMNS: &[usize] = &[0];

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory for the target"))
}

fuzz_target!(
    // libfuzzer-sys's panic hook aborts on every panic, even one the code under test catches; Arrow's IPC
    // reader panics on some malformed input and Sluice catches that (`sluice_common::untrusted`). The
    // default hook prints the panic; a panic nothing catches still aborts (libfuzzer-sys catches it and
    // aborts), so it is still a crash.
    init: drop(std::panic::take_hook()),
    |data: &[u8]| {
        let path = dir().path().join("1-0.snapshot");
        let mut sealed = data.to_vec();
        seal_snapshot(&mut sealed);
        for file in [data, sealed.as_slice()] {
            std::fs::write(&path, file).expect("the target's temporary directory is writable");
            let keep = |key: &[u8]| key_group_of_state_key(key).is_some_and(|g| KEY_GROUPS.contains(&g));
            let Ok(snapshot) = read_snapshot_keeping(&path, &keep) else { continue };
            for operator in &snapshot.operators {
                if let Ok(state) = merge_keyed(&[operator]) {
                    let _ = HeapBackend::default().restore(&state, KEY_GROUPS);
                }
                let _ = decode_batches(&operator.operator_state);
                let _ = restore_buffered(&[operator], KEY_COLUMNS, MAX_PARALLELISM, &KEY_GROUPS);
            }
        }
    }
);

//! What stands in for the RocksDB backend in a TaskManager built without the `rocksdb` cargo feature.
//!
//! Only the fuzz build (fuzz/) leaves the feature out: its targets decode snapshots through the heap
//! backend, and compiling RocksDB's C++ again, with coverage flags, was the largest part of a cold fuzz
//! build. The settings keep their shape so that the configuration parses the same; opening an instance or
//! reading a native checkpoint is a state error that says why (an I/O failure to the job: no job runs on
//! this build).
use std::path::PathBuf;

use super::{EntryVisitor, HeapBackend, StateError};

/// RocksDB settings as the configuration gives them; nothing is allocated without RocksDB.
#[derive(Clone, Debug, Default)]
pub struct RocksDbSettings {
    pub write_buffer_size: usize,
    pub max_write_buffers: u32,
    block_cache_size: usize,
}

impl RocksDbSettings {
    pub fn new(write_buffer_size: usize, max_write_buffers: u32, block_cache_size: usize) -> Self {
        Self { write_buffer_size, max_write_buffers, block_cache_size }
    }

    pub fn memtable_budget(&self) -> usize {
        self.write_buffer_size.saturating_mul(self.max_write_buffers as usize)
    }

    pub fn block_cache_size(&self) -> usize {
        self.block_cache_size
    }
}

fn absent() -> StateError {
    StateError("this TaskManager was built without RocksDB (the `rocksdb` cargo feature of sluice-taskmanager)".into())
}

/// Never opens: there is no RocksDB in this build. (The type it would return is the heap backend's, so
/// callers compile unchanged; no value of it is ever made here.)
pub struct RocksDbBackend;

impl RocksDbBackend {
    pub fn open(_dir: PathBuf, _settings: &RocksDbSettings) -> Result<HeapBackend, StateError> {
        Err(absent())
    }
}

/// Refuses: a native checkpoint is RocksDB's own file format.
pub fn read_native_checkpoint(
    dir: PathBuf,
    _states: Vec<(String, String)>,
    _settings: &RocksDbSettings,
    _visit: &mut EntryVisitor<'_>,
) -> Result<(), StateError> {
    let _ = std::fs::remove_dir_all(dir);
    Err(absent())
}

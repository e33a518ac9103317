//! Which checkpoint files stay, and the janitor that deletes the rest without holding up the job's actor.
//!
//! Retained checkpoints keep their directories; the shared files of incremental snapshots are
//! reference-counted by the retained checkpoints that use them ([`SharedRegistry`]). Everything else is
//! garbage: checkpoints that fell out of retention, aborted ones, shared files nobody references any more,
//! and directories a slow task wrote for a checkpoint that was already aborted (the sweep).
//!
//! Deleting is slow on object storage (a listing and a request per file), so the coordinator decides what
//! goes and hands it to the job's [`Janitor`], a task with a bounded queue that deletes in order. A sweep
//! is safe off the actor because checkpoint ids only grow: it is given the ids to keep and the newest id
//! it may touch, and every checkpoint triggered after it was queued has a larger id.
use std::collections::{BTreeMap, BTreeSet};

use sluice_common::checkpoint_layout::{is_single_component, parse_checkpoint_dir_name, SHARED_DIR};
use sluice_common::ids::{CheckpointId, JobId};
use sluice_common::proto::AcknowledgeCheckpointRequest;
use sluice_common::storage::Storage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::Store;

/// Deletions queued for one job's janitor. When the queue is full the coordinator waits for room: the
/// actor slows down rather than memory growing. A checkpoint completes at most every few milliseconds
/// and queues at most three items, so the queue fills only when storage is much slower than checkpoints.
pub const JANITOR_QUEUE_CAPACITY: usize = 64;

/// The files under a job's `shared/` (SST files of incremental RocksDB snapshots) and who uses them.
#[derive(Default)]
pub(super) struct SharedRegistry {
    /// Retained checkpoints referencing each file.
    references: BTreeMap<String, u32>,
    /// Files no retained checkpoint references, with the completion at which they became so. They are deleted
    /// at a later completion unless referenced again: a task may reference a file in the checkpoint right
    /// after the completion that released it (it had not heard of that completion yet).
    released: BTreeMap<String, u64>,
    /// Checkpoints and savepoints completed.
    pub(super) completions: u64,
}

impl SharedRegistry {
    /// The first file a checkpoint reuses that is no longer stored, if any.
    pub(super) fn missing(&self, acks: &[AcknowledgeCheckpointRequest]) -> Option<String> {
        acks.iter().find_map(|ack| {
            ack.shared_files
                .iter()
                .filter(|f| !ack.uploaded_shared_files.contains(f))
                .find(|f| !self.references.contains_key(*f) && !self.released.contains_key(*f))
                .cloned()
        })
    }

    pub(super) fn retain(&mut self, files: &[String]) {
        for file in files {
            *self.references.entry(file.clone()).or_default() += 1;
            self.released.remove(file);
        }
    }

    pub(super) fn release(&mut self, files: &[String]) {
        for file in files {
            if let Some(count) = self.references.get_mut(file) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.references.remove(file);
                    self.released.insert(file.clone(), self.completions);
                }
            }
        }
    }

    /// Files that no retained checkpoint references (a savepoint's, an aborted checkpoint's uploads).
    pub(super) fn unreferenced(&mut self, files: &[String]) {
        for file in files {
            if !self.references.contains_key(file) {
                self.released.entry(file.clone()).or_insert(self.completions);
            }
        }
    }

    /// Released files whose grace has passed; forgotten here, to be deleted.
    pub(super) fn collect(&mut self) -> Vec<String> {
        let now = self.completions;
        let garbage: Vec<String> = self.released.iter().filter(|(_, &at)| at < now).map(|(f, _)| f.clone()).collect();
        for file in &garbage {
            self.released.remove(file);
        }
        garbage
    }
}

/// One piece of work for the janitor.
#[derive(Debug)]
pub(super) enum Cleanup {
    /// A retained checkpoint fell out of retention: record it as discarded, then delete its directory.
    Discard { id: u64, dir: Storage },
    /// Delete a directory (an aborted checkpoint, or a savepoint that could not be completed).
    Delete(Storage),
    /// Delete shared files no retained checkpoint references any more.
    SharedFiles(Vec<String>),
    /// Delete every `chk-N` directory of the job with N at most `newest` that is not in `keep`: what a task
    /// wrote for a checkpoint after it was aborted (its write was already under way).
    Sweep { keep: BTreeSet<u64>, newest: u64 },
}

/// The task that deletes one job's garbage, in the order it was queued.
pub(super) struct Janitor {
    queue: Option<mpsc::Sender<Cleanup>>,
    task: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Starts the janitor of the job whose checkpoints live in `job_dir`.
    pub(super) fn start(job_id: JobId, job_dir: Storage, store: Store) -> Self {
        let (queue, mut work) = mpsc::channel(JANITOR_QUEUE_CAPACITY);
        let task = tokio::spawn(async move {
            while let Some(cleanup) = work.recv().await {
                clean(&job_id, &job_dir, &store, cleanup).await;
            }
        });
        Janitor { queue: Some(queue), task: Some(task) }
    }

    /// Queues `cleanup`, waiting for room when the queue is full.
    pub(super) async fn submit(&self, cleanup: Cleanup) {
        let Some(queue) = &self.queue else { return };
        if let Err(refused) = queue.send(cleanup).await {
            // Only after `finish`, or if the task panicked: the files stay until the job's directory goes.
            tracing::warn!(work = ?refused.0, "the checkpoint janitor is gone; leaving files in place");
        }
    }

    /// Lets the queued work finish, then stops the task.
    pub(super) async fn finish(&mut self) {
        self.queue = None;
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the checkpoint janitor failed");
            }
        }
    }
}

async fn clean(job_id: &JobId, job_dir: &Storage, store: &Store, cleanup: Cleanup) {
    match cleanup {
        Cleanup::Discard { id, dir } => {
            // Recorded first, as Flink removes a checkpoint from its store before deleting its state: whoever
            // reads the store (the REST API, a JobManager taking over) never finds a checkpoint kept whose
            // files are gone. Deleted even when the record fails: it fell out of retention either way.
            if let Err(e) = store.discard_checkpoint(job_id, id).await {
                tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
            }
            delete_dir(&dir).await;
        }
        Cleanup::Delete(dir) => delete_dir(&dir).await,
        Cleanup::SharedFiles(files) => {
            let shared = job_dir.child(SHARED_DIR);
            for file in files {
                // Acknowledgements with other names are refused; this guards what reaches `delete` anyway.
                if !is_single_component(&file) {
                    tracing::warn!(job_id = %job_id, file, "not deleting a shared file whose name is not one path component");
                    continue;
                }
                if let Err(e) = shared.delete(&file).await {
                    tracing::warn!(job_id = %job_id, file, error = %e, "cannot delete a shared checkpoint file");
                }
            }
        }
        Cleanup::Sweep { keep, newest } => sweep(job_dir, &keep, newest).await,
    }
}

/// Deletes the job's `chk-N` directories with N ≤ `newest` that are not in `keep`.
async fn sweep(job_dir: &Storage, keep: &BTreeSet<u64>, newest: u64) {
    let names = match job_dir.list_dirs().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the job's checkpoints");
            return;
        }
    };
    for name in names {
        let Some(CheckpointId(id)) = parse_checkpoint_dir_name(&name) else { continue };
        if id <= newest && !keep.contains(&id) {
            let orphan = job_dir.child(&name);
            tracing::info!(dir = %orphan.location(), "deleting the files of a checkpoint that did not complete");
            delete_dir(&orphan).await;
        }
    }
}

/// Deletes a location and everything in it; a missing one is fine, a failure is logged.
pub(super) async fn delete_dir(dir: &Storage) {
    if let Err(e) = dir.delete_all().await {
        tracing::warn!(dir = %dir.location(), error = %e, "cannot delete checkpoint files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn ack(shared: &[&str], uploaded: &[&str]) -> AcknowledgeCheckpointRequest {
        AcknowledgeCheckpointRequest {
            shared_files: files(shared),
            uploaded_shared_files: files(uploaded),
            ..Default::default()
        }
    }

    /// A shared file is deleted only when no retained checkpoint references it and one more completion has
    /// passed without it being referenced again; a checkpoint reusing a file that is gone is refused.
    #[test]
    fn shared_files_live_while_referenced_and_one_completion_longer() {
        let mut registry = SharedRegistry::default();
        // Checkpoint 1 uploads a and b; retained = 1.
        assert_eq!(registry.missing(&[ack(&["a", "b"], &["a", "b"])]), None);
        registry.completions += 1;
        registry.retain(&files(&["a", "b"]));
        assert!(registry.collect().is_empty());
        // Checkpoint 2 reuses b, uploads c; checkpoint 1 is released: a waits one completion.
        assert_eq!(registry.missing(&[ack(&["b", "c"], &["c"])]), None);
        registry.completions += 1;
        registry.retain(&files(&["b", "c"]));
        registry.release(&files(&["a", "b"]));
        assert!(registry.collect().is_empty(), "a was released just now");
        // A task that had not heard of checkpoint 2 still references a in checkpoint 3: allowed, and a lives on.
        assert_eq!(registry.missing(&[ack(&["a", "c"], &[])]), None);
        registry.completions += 1;
        registry.retain(&files(&["a", "c"]));
        registry.release(&files(&["b", "c"]));
        assert!(registry.collect().is_empty(), "a is referenced again, b was released just now");
        // Checkpoint 4 references only c: b goes now, a one completion later.
        registry.completions += 1;
        registry.retain(&files(&["c"]));
        registry.release(&files(&["a", "c"]));
        assert_eq!(registry.collect(), files(&["b"]));
        assert_eq!(registry.missing(&[ack(&["b"], &[])]), Some("b".to_string()), "b is gone");
        registry.completions += 1;
        assert_eq!(registry.collect(), files(&["a"]));
        // An aborted checkpoint's uploads go at the next completion.
        registry.unreferenced(&files(&["d"]));
        registry.completions += 1;
        assert_eq!(registry.collect(), files(&["d"]));
        assert_eq!(registry.references.keys().cloned().collect::<Vec<_>>(), files(&["c"]));
    }

    /// The sweep deletes only checkpoint directories up to the newest id it was given and not kept: a
    /// checkpoint triggered after the sweep was queued (a larger id), `shared/` and anything else stay.
    #[tokio::test]
    async fn a_sweep_deletes_only_old_unkept_checkpoint_directories() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let job_dir = Storage::open(&root.path().display().to_string())?;
        for name in ["chk-1", "chk-2", "chk-3", "chk-4", "shared", "other"] {
            job_dir.child(name).put("f", b"x".to_vec()).await?;
        }
        sweep(&job_dir, &BTreeSet::from([2]), 3).await;
        let mut left = job_dir.list_dirs().await?;
        left.sort();
        assert_eq!(left, ["chk-2", "chk-4", "other", "shared"]);
        Ok(())
    }
}

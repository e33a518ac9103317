//! `file_sink`: newline-delimited JSON part files under the sink's directory.
//!
//! Two modes, chosen by the deployment:
//! - **Direct** (the job takes no periodic checkpoints): one part file per subtask and attempt, written as
//!   records come: `<path>/part-<subtask>.jsonl`, or, when that exists (a restarted attempt, or a job
//!   restored from a savepoint or retained checkpoint into the same path), `part-<subtask>.<k>.jsonl` with
//!   the first free `k`. A file is only ever created new (`O_EXCL`), never truncated or appended to: at
//!   least once means what an earlier attempt wrote stays, so its records may appear again in a later file,
//!   never vanish. A checkpoint flushes and syncs the file.
//! - **Exactly once** (the job checkpoints): a two-phase commit, as Flink's `FileSink`. Records go to a hidden
//!   in-progress file `.part-<subtask>-<token>-<n>.inprogress`; at a checkpoint's barrier it is closed,
//!   synced and renamed to `.part-…-<n>.pending` (pre-commit), and the checkpoint's state lists it; when the
//!   checkpoint completes, pending files become visible as `part-<subtask>-<token>-<n>.jsonl` (commit). On
//!   restore, the pending files the checkpoint lists are committed (their checkpoint completed), and the
//!   files of those writers that it does not list (written after it) are deleted, since their records are
//!   read again. Readers that skip hidden files never see uncommitted data. At the end of a bounded input
//!   everything is committed.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice_common::durable::{rename_durably, sync_dir};
use sluice_common::proto::OperatorSnapshot;

use crate::operator_api::{Operator, OperatorError, SubtaskInfo};

type Writer = LineDelimitedWriter<BufWriter<File>>;

pub struct FileSinkWriter {
    dir: PathBuf,
    subtask: u32,
    mode: Mode,
}

enum Mode {
    Direct { path: PathBuf, writer: Option<Writer> },
    Transactional(Transaction),
}

/// The exactly-once mode's files.
struct Transaction {
    /// Names this writer's files (random per attempt), so a restore can tell its files from others'.
    token: String,
    /// The number of the next part file.
    next: u64,
    /// The part file being written, if any records came since the last barrier.
    current: Option<(u64, Writer)>,
    /// Pre-committed files waiting for their checkpoint to complete.
    pending: Vec<Pending>,
}

/// A pre-committed part file, as checkpoints record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    /// The checkpoint whose completion commits it.
    checkpoint: u64,
    /// Hidden name while pending, and the visible name it gets.
    pending: String,
    committed: String,
}

/// The sink's operator state in a checkpoint (JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SinkState {
    token: String,
    pending: Vec<Pending>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> OperatorError + '_ {
    move |e| OperatorError::io(format!("{}: {e}", path.display()))
}

impl FileSinkWriter {
    /// `exactly_once`: the job checkpoints, so part files are committed on checkpoint completion.
    /// Writes into `dir` (the spec's path as resolved and allowed by the TaskManager's confinement).
    pub fn open(dir: &Path, subtask: SubtaskInfo, exactly_once: bool) -> Result<Self, OperatorError> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| OperatorError::io(format!("cannot create {}: {e}", dir.display())))?;
        let mode = if exactly_once {
            let token = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
            Mode::Transactional(Transaction { token, next: 0, current: None, pending: Vec::new() })
        } else {
            let (path, file) = create_direct_part(&dir, subtask.index)?;
            Mode::Direct { path, writer: Some(LineDelimitedWriter::new(BufWriter::new(file))) }
        };
        Ok(Self { dir, subtask: subtask.index, mode })
    }

    fn names(&self, token: &str, n: u64) -> (String, String, String) {
        let base = format!("part-{}-{token}-{n}", self.subtask);
        (format!(".{base}.inprogress"), format!(".{base}.pending"), format!("{base}.jsonl"))
    }

    /// Closes the in-progress file (if any) and renames it to pending for `checkpoint`.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<(), OperatorError> {
        let Mode::Transactional(t) = &mut self.mode else { return Ok(()) };
        let Some((n, writer)) = t.current.take() else { return Ok(()) };
        let token = t.token.clone();
        let (in_progress, pending, committed) = self.names(&token, n);
        let path = self.dir.join(&in_progress);
        close(writer, &path)?;
        rename_durably(&path, &self.dir.join(&pending)).map_err(io_error(&path))?;
        let Mode::Transactional(t) = &mut self.mode else { return Ok(()) };
        t.pending.push(Pending { checkpoint, pending, committed });
        Ok(())
    }

    /// Makes the pending files of checkpoints up to `checkpoint` visible.
    fn commit_up_to(&mut self, checkpoint: u64) -> Result<(), OperatorError> {
        let Mode::Transactional(t) = &mut self.mode else { return Ok(()) };
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut t.pending).into_iter().partition(|p| p.checkpoint <= checkpoint);
        t.pending = later;
        for file in due {
            commit(&self.dir, &file)?;
        }
        Ok(())
    }
}

/// The most part files one subtask may have in a direct sink's directory: `part-<subtask>.jsonl` and
/// `part-<subtask>.<k>.jsonl` for `k` up to this. Each restart adds one; at the limit the sink fails to
/// open, naming the directory, rather than scan without end (clear out the directory, or use a new path).
pub const DIRECT_PART_FILES_PER_SUBTASK_MAX: u32 = 10_000;

/// Creates the direct mode's next part file of `subtask`: the first of `part-<subtask>.jsonl`,
/// `part-<subtask>.1.jsonl`, ... that does not exist, created exclusively so nothing is ever truncated.
/// Its directory is synced, so the new file is not lost with a crash once its data is synced.
fn create_direct_part(dir: &Path, subtask: u32) -> Result<(PathBuf, File), OperatorError> {
    for k in 0..=DIRECT_PART_FILES_PER_SUBTASK_MAX {
        let name = if k == 0 { format!("part-{subtask}.jsonl") } else { format!("part-{subtask}.{k}.jsonl") };
        let path = dir.join(name);
        // A symlink planted under a part file's name would redirect the writes out of the allowed directory
        // (an exclusive create refuses it too, but this says why).
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(OperatorError::configuration(format!(
                "{} is a symlink; a sink writes only files",
                path.display()
            )));
        }
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => {
                sync_dir(dir).map_err(|e| OperatorError::io(format!("cannot create {}: {e}", path.display())))?;
                return Ok((path, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(OperatorError::io(format!("cannot create {}: {e}", path.display()))),
        }
    }
    Err(OperatorError::io(format!(
        "{} holds {DIRECT_PART_FILES_PER_SUBTASK_MAX} part files of subtask {subtask} already; clear it out or use another path",
        dir.display()
    )))
}

/// Renames a pending file to its visible name, durably (the directory is synced: a commit a crash undoes
/// would lose records whose checkpoint completed). Done already (by another subtask restoring the same
/// checkpoint, or before a failure) is fine; gone altogether is data loss, and an error.
fn commit(dir: &Path, file: &Pending) -> Result<(), OperatorError> {
    let (from, to) = (dir.join(&file.pending), dir.join(&file.committed));
    match std::fs::rename(&from, &to) {
        Ok(()) => {}
        Err(_) if to.is_file() => {}
        Err(e) => {
            return Err(OperatorError::io(format!(
                "cannot commit {} of checkpoint {} as {}: {e}",
                from.display(),
                file.checkpoint,
                to.display()
            )))
        }
    }
    // Synced also when the rename was done already: by another subtask, whose sync may not have happened yet.
    sync_dir(dir).map_err(|e| {
        OperatorError::io(format!("cannot commit {} of checkpoint {}: {e}", to.display(), file.checkpoint))
    })
}

fn close(writer: Writer, path: &Path) -> Result<(), OperatorError> {
    let mut writer = writer;
    writer.finish().map_err(|e| OperatorError::io(format!("cannot write {}: {e}", path.display())))?;
    let mut file = writer.into_inner();
    file.flush().map_err(io_error(path))?;
    file.get_ref().sync_all().map_err(io_error(path))
}

impl Operator for FileSinkWriter {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let (dir, subtask) = (self.dir.clone(), self.subtask);
        let (writer, path) = match &mut self.mode {
            Mode::Direct { path, writer } => {
                let Some(writer) = writer.as_mut() else {
                    return Err(OperatorError::internal(format!("{} is already closed", path.display())));
                };
                (writer, path.clone())
            }
            Mode::Transactional(t) => {
                if t.current.is_none() {
                    let n = t.next;
                    t.next += 1;
                    let path = dir.join(format!(".part-{subtask}-{}-{n}.inprogress", t.token));
                    let file = File::create(&path).map_err(io_error(&path))?;
                    t.current = Some((n, LineDelimitedWriter::new(BufWriter::new(file))));
                }
                let Some((n, writer)) = t.current.as_mut() else { return Ok(()) };
                let path = dir.join(format!(".part-{subtask}-{}-{n}.inprogress", t.token));
                (writer, path)
            }
        };
        writer.write(&batch).map_err(|e| OperatorError::io(format!("cannot write {}: {e}", path.display())))
    }

    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        match &mut self.mode {
            Mode::Direct { path, writer } => {
                // At least once: everything before the barrier is on disk when the checkpoint completes.
                if let Some(writer) = writer.as_mut() {
                    let file = writer.get_mut();
                    file.flush().map_err(io_error(path))?;
                    file.get_ref().sync_data().map_err(io_error(path))?;
                }
                Ok(())
            }
            Mode::Transactional(_) => {
                self.pre_commit(snapshot_checkpoint(snapshot))?;
                let Mode::Transactional(t) = &self.mode else { return Ok(()) };
                let state = SinkState { token: t.token.clone(), pending: t.pending.clone() };
                snapshot.operator_state = serde_json::to_vec(&state)
                    .map_err(|e| OperatorError::internal(format!("cannot encode the sink's state: {e}")))?;
                Ok(())
            }
        }
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        _key_groups: std::ops::RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        let mut states = Vec::new();
        for snapshot in snapshots.iter().filter(|s| !s.operator_state.is_empty()) {
            let state: SinkState = serde_json::from_slice(&snapshot.operator_state)
                .map_err(|e| OperatorError::input(format!("the sink's state is corrupt: {e}")))?;
            states.push(state);
        }
        // Every restoring subtask commits every listed file: a rename that another one did already is fine.
        let listed: Vec<&Pending> = states.iter().flat_map(|s| &s.pending).collect();
        for file in &listed {
            commit(&self.dir, file)?;
        }
        // Files of the restored writers that the checkpoint does not list hold records after it: delete.
        let tokens: Vec<&str> = states.iter().map(|s| s.token.as_str()).collect();
        let entries = std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hidden = name.starts_with(".part-") && (name.ends_with(".inprogress") || name.ends_with(".pending"));
            let of_restored = tokens.iter().any(|token| name.contains(&format!("-{token}-")));
            if hidden && of_restored && !listed.iter().any(|p| p.pending == name) {
                let path = entry.path();
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&path)(e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<(), OperatorError> {
        self.commit_up_to(id)
    }

    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        match &mut self.mode {
            Mode::Direct { path, writer } => match writer.take() {
                Some(writer) => close(writer, path),
                None => Ok(()),
            },
            Mode::Transactional(_) => {
                // The input ended: nothing will come after, so everything written is committed.
                self.pre_commit(u64::MAX)?;
                self.commit_up_to(u64::MAX)
            }
        }
    }
}

/// The checkpoint an operator snapshot is taken for (the task sets it before asking operators).
fn snapshot_checkpoint(snapshot: &OperatorSnapshot) -> u64 {
    snapshot.checkpoint_id
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).expect("batch")
    }

    /// The visible rows (values of `n`) of a sink directory, from committed part files only.
    fn visible(dir: &Path) -> Vec<i64> {
        let mut rows = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir).expect("dir").flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.starts_with('.') {
                continue;
            }
            for line in std::fs::read_to_string(&path).expect("read").lines() {
                let row: serde_json::Value = serde_json::from_str(line).expect("json");
                rows.push(row["n"].as_i64().expect("n"));
            }
        }
        rows.sort_unstable();
        rows
    }

    fn sink(dir: &Path) -> FileSinkWriter {
        FileSinkWriter::open(dir, SubtaskInfo { index: 0, parallelism: 1 }, true).expect("open")
    }

    fn snapshot(sink: &mut FileSinkWriter, checkpoint: u64) -> OperatorSnapshot {
        let mut snapshot = OperatorSnapshot { checkpoint_id: checkpoint, ..Default::default() };
        sink.snapshot_state(&mut snapshot).expect("snapshot");
        snapshot
    }

    #[test]
    fn a_part_file_planted_as_a_symlink_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("elsewhere.txt");
        std::fs::write(&target, "untouched").expect("write");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("mkdir");
        std::os::unix::fs::symlink(&target, out.join("part-0.jsonl")).expect("symlink");
        let opened = FileSinkWriter::open(&out, SubtaskInfo { index: 0, parallelism: 1 }, false);
        let Err(error) = opened else { panic!("a symlinked part file must be refused") };
        assert!(error.message().contains("is a symlink"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "untouched");
    }

    /// Goal: a restart (a new attempt, or a job restored from a savepoint into the same path) keeps what
    /// the at-least-once sink wrote before (issue 19). Method: two openings of one subtask's sink into one
    /// directory, each writing and finishing; the first file is intact, the second is another file.
    #[test]
    fn a_restarted_direct_sink_keeps_what_was_written_before() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = || FileSinkWriter::open(dir.path(), SubtaskInfo { index: 0, parallelism: 1 }, false);
        let mut first = open().expect("open");
        first.process(batch(&[1, 2]), &mut Vec::new()).expect("write");
        let mut snapshot = OperatorSnapshot::default();
        first.snapshot_state(&mut snapshot).expect("a checkpoint syncs the file");
        drop(first); // A crash: no finish.
        let mut second = open().expect("open again");
        second.process(batch(&[3]), &mut Vec::new()).expect("write");
        second.finish(&mut Vec::new()).expect("finish");
        assert_eq!(visible(dir.path()), vec![1, 2, 3], "nothing written before was truncated");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, vec!["part-0.1.jsonl".to_string(), "part-0.jsonl".to_string()]);
    }

    #[test]
    fn records_become_visible_only_when_their_checkpoint_completes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = sink(dir.path());
        sink.process(batch(&[1, 2]), &mut Vec::new()).expect("write");
        assert!(visible(dir.path()).is_empty(), "nothing before a checkpoint");
        snapshot(&mut sink, 1);
        sink.process(batch(&[3]), &mut Vec::new()).expect("write");
        snapshot(&mut sink, 2);
        assert!(visible(dir.path()).is_empty(), "pre-committed is not committed");
        sink.notify_checkpoint_complete(1).expect("commit");
        assert_eq!(visible(dir.path()), vec![1, 2]);
        sink.process(batch(&[4]), &mut Vec::new()).expect("write");
        sink.finish(&mut Vec::new()).expect("finish");
        assert_eq!(visible(dir.path()), vec![1, 2, 3, 4], "the end of input commits everything");
        let hidden = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'));
        assert_eq!(hidden.count(), 0);
    }

    #[test]
    fn a_restore_commits_what_the_checkpoint_lists_and_drops_what_came_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut failed = sink(dir.path());
        failed.process(batch(&[1]), &mut Vec::new()).expect("write");
        let state = snapshot(&mut failed, 7);
        // Written after checkpoint 7: pre-committed for 8 (never completed) and in progress.
        failed.process(batch(&[2]), &mut Vec::new()).expect("write");
        snapshot(&mut failed, 8);
        failed.process(batch(&[3]), &mut Vec::new()).expect("write");
        drop(failed); // A crash: no finish, no commit.
        assert!(visible(dir.path()).is_empty());

        // Two subtasks restore the same checkpoint: both commit, neither fails.
        let mut first = sink(dir.path());
        first.restore_state(&[&state], 0..=127).expect("restore");
        let mut second = sink(dir.path());
        second.restore_state(&[&state], 0..=127).expect("restore again");
        assert_eq!(visible(dir.path()), vec![1], "checkpoint 7's file is committed, later records are gone");
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_lost_pending_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut failed = sink(dir.path());
        failed.process(batch(&[1]), &mut Vec::new()).expect("write");
        let state = snapshot(&mut failed, 3);
        drop(failed);
        for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            std::fs::remove_file(entry.path()).expect("remove");
        }
        let error = sink(dir.path()).restore_state(&[&state], 0..=127).expect_err("lost").to_string();
        assert!(error.contains(".pending") && error.contains("checkpoint 3"), "{error}");
    }
}

//! `file_sink`: newline-delimited JSON, one part file per subtask (`<path>/part-<subtask>.jsonl`).
//!
//! This sink is at-least-once: what a failed attempt wrote stays. (The exactly-once file sink, which
//! commits part files on checkpoint completion, belongs to the checkpointing work.)
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::{FileSink, OperatorSnapshot};

use super::{Operator, OperatorError, SubtaskInfo};

pub struct FileSinkWriter {
    path: PathBuf,
    writer: Option<LineDelimitedWriter<BufWriter<File>>>,
}

impl FileSinkWriter {
    pub fn open(spec: &FileSink, subtask: SubtaskInfo) -> Result<Self, OperatorError> {
        let dir = PathBuf::from(&spec.path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| OperatorError::new(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(format!("part-{}.jsonl", subtask.index));
        let file =
            File::create(&path).map_err(|e| OperatorError::new(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self { path, writer: Some(LineDelimitedWriter::new(BufWriter::new(file))) })
    }
}

impl Operator for FileSinkWriter {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(OperatorError::new(format!("{} is already closed", self.path.display())));
        };
        writer.write(&batch).map_err(|e| OperatorError::new(format!("cannot write {}: {e}", self.path.display())))
    }

    fn snapshot_state(&mut self, _snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        // At least once: everything before the barrier is on disk when the checkpoint completes.
        if let Some(writer) = self.writer.as_mut() {
            let error = |e: String| OperatorError::new(format!("cannot write {}: {e}", self.path.display()));
            let file = writer.get_mut();
            file.flush().map_err(|e| error(e.to_string()))?;
            file.get_ref().sync_data().map_err(|e| error(e.to_string()))?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let error = |e: String| OperatorError::new(format!("cannot write {}: {e}", self.path.display()));
        if let Some(mut writer) = self.writer.take() {
            writer.finish().map_err(|e| error(e.to_string()))?;
            let mut file = writer.into_inner();
            file.flush().map_err(|e| error(e.to_string()))?;
            file.get_ref().sync_all().map_err(|e| error(e.to_string()))?;
        }
        Ok(())
    }
}

//! The bounded file source: newline-delimited JSON, CSV, or plain lines.
//!
//! With parallelism `p`, subtask `k` reads the byte range `[k·len/p, (k+1)·len/p)` of every file, owning
//! exactly the lines that *start* inside its range (the Hadoop split rule): it skips the partial line at its
//! start (the previous subtask finishes it) and reads past its end to finish its last line. So every line is
//! read once, by one subtask, whatever the parallelism. Lines are decoded in batches by Arrow's incremental
//! JSON and CSV decoders.
use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::StringBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::{csv, json};
use sluice_common::job::BATCH_SIZE_DEFAULT;
use sluice_common::proto::{FileFormat, FileSource};

use crate::operator_api::{OperatorError, Source, SourcePoll, SubtaskInfo};

/// The longest line accepted, in bytes. A longer one fails the task with the file and offset, rather than
/// growing a buffer without bound.
const LINE_BYTES_MAX: usize = 16 << 20;

enum Decoder {
    Json(json::reader::Decoder),
    // Boxed: the CSV decoder is several hundred bytes, the others a few dozen.
    Csv(Box<csv::reader::Decoder>),
    Lines(StringBuilder),
}

pub struct FileSourceReader {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<Split>,
    schema: SchemaRef,
    format: FileFormat,
    csv_header: bool,
    batch_size: usize,
    subtask: SubtaskInfo,
    decoder: Decoder,
    rows_in_decoder: usize,
}

/// The part of one file this subtask reads.
struct Split {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the next line.
    position: u64,
    /// Lines starting at or after this offset belong to the next subtask.
    end: u64,
    line: Vec<u8>,
}

impl FileSourceReader {
    /// Reads `path` (the spec's path as resolved and allowed by the TaskManager's confinement), a file or a
    /// directory of files; in a directory, only regular files count (a symlink is never followed out of it).
    pub fn open(
        spec: &FileSource,
        path: &Path,
        schema: SchemaRef,
        subtask: SubtaskInfo,
    ) -> Result<Self, OperatorError> {
        let files = list_files(path)?;
        let batch_size = spec.batch_size.unwrap_or(BATCH_SIZE_DEFAULT).max(1) as usize;
        let format = match spec.format() {
            FileFormat::Unspecified => FileFormat::Json,
            other => other,
        };
        let mut reader = Self {
            files,
            next_file: 0,
            current: None,
            schema,
            format,
            csv_header: spec.csv_header,
            batch_size,
            subtask,
            decoder: Decoder::Lines(StringBuilder::new()),
            rows_in_decoder: 0,
        };
        reader.decoder = reader.new_decoder()?;
        Ok(reader)
    }

    fn new_decoder(&self) -> Result<Decoder, OperatorError> {
        Ok(match self.format {
            FileFormat::Csv => Decoder::Csv(Box::new(
                csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(false)
                    .with_batch_size(self.batch_size)
                    .build_decoder(),
            )),
            FileFormat::Lines => Decoder::Lines(StringBuilder::new()),
            FileFormat::Bytes => {
                return Err(OperatorError::configuration("format BYTES is for Kafka record values, not files"))
            }
            FileFormat::Json | FileFormat::Unspecified => Decoder::Json(
                json::ReaderBuilder::new(self.schema.clone()).with_batch_size(self.batch_size).build_decoder()?,
            ),
        })
    }

    fn open_next_split(&mut self) -> Result<bool, OperatorError> {
        let Some(path) = self.files.get(self.next_file).cloned() else { return Ok(false) };
        self.next_file += 1;
        let error = |e: std::io::Error| OperatorError::io(format!("cannot read {}: {e}", path.display()));
        let file = File::open(&path).map_err(error)?;
        let len = file.metadata().map_err(error)?.len();
        let (k, p) = (u64::from(self.subtask.index), u64::from(self.subtask.parallelism.max(1)));
        let (start, end) = (len * k / p, len * (k + 1) / p);
        let mut reader = BufReader::new(file);
        let mut position = start;
        let mut skipped = Vec::new();
        if start > 0 {
            // The line that contains byte `start - 1` belongs to the previous subtask, unless it ends exactly there.
            reader.seek(SeekFrom::Start(start - 1)).map_err(error)?;
            position = start - 1 + read_line(&mut reader, &mut skipped, &path, start - 1)? as u64;
        } else if self.csv_header && self.format == FileFormat::Csv {
            position += read_line(&mut reader, &mut skipped, &path, 0)? as u64;
        }
        self.current = Some(Split { path, reader, position, end, line: Vec::new() });
        Ok(true)
    }

    /// Feeds lines to the decoder until a batch is full or the split ends. Returns false at the split's end.
    fn fill(&mut self) -> Result<bool, OperatorError> {
        let Some(split) = self.current.as_mut() else { return Ok(false) };
        while self.rows_in_decoder < self.batch_size {
            if split.position >= split.end {
                return Ok(false);
            }
            let n = read_line(&mut split.reader, &mut split.line, &split.path, split.position)?;
            if n == 0 {
                return Ok(false);
            }
            let offset = split.position;
            split.position += n as u64;
            let line = trim_newline(&split.line);
            if line.iter().all(u8::is_ascii_whitespace) && self.format != FileFormat::Lines {
                continue;
            }
            let at = |e: String| OperatorError::input(format!("{} at byte {offset}: {e}", split.path.display()));
            match &mut self.decoder {
                Decoder::Lines(builder) => builder.append_value(String::from_utf8_lossy(line)),
                Decoder::Json(decoder) => {
                    let mut bytes = line.to_vec();
                    bytes.push(b'\n');
                    decoder.decode(&bytes).map_err(|e| at(e.to_string()))?;
                }
                Decoder::Csv(decoder) => {
                    let mut bytes = line.to_vec();
                    bytes.push(b'\n');
                    decoder.decode(&bytes).map_err(|e| at(e.to_string()))?;
                }
            }
            self.rows_in_decoder += 1;
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        if self.rows_in_decoder == 0 {
            return Ok(None);
        }
        self.rows_in_decoder = 0;
        let path = self.current.as_ref().map(|s| s.path.display().to_string()).unwrap_or_default();
        let at = |e: datafusion::arrow::error::ArrowError| OperatorError::input(format!("{path}: {e}"));
        Ok(match &mut self.decoder {
            Decoder::Lines(builder) => {
                Some(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(builder.finish())])?)
            }
            Decoder::Json(decoder) => decoder.flush().map_err(at)?,
            Decoder::Csv(decoder) => decoder.flush().map_err(at)?,
        })
    }
}

impl Source for FileSourceReader {
    fn position(&mut self, _checkpoint: u64) -> Result<Vec<u8>, OperatorError> {
        // The next file to open, and the byte offset of the next line of the one being read (u64::MAX when
        // none is open). Between polls the decoder holds no rows.
        let mut position = (self.next_file as u64).to_be_bytes().to_vec();
        position.extend_from_slice(&self.current.as_ref().map_or(u64::MAX, |split| split.position).to_be_bytes());
        Ok(position)
    }

    fn seek(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let bad = |why: String| OperatorError::input(format!("cannot resume the file source: {why}"));
        if position.len() != 16 {
            return Err(bad(format!("a position is 16 bytes, not {}", position.len())));
        }
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&position[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        let (next_file, offset) = (usize::try_from(word(0)).unwrap_or(usize::MAX), word(8));
        if next_file > self.files.len() {
            return Err(bad(format!("file {next_file} of {} (the input directory changed)", self.files.len())));
        }
        self.current = None;
        if offset == u64::MAX {
            self.next_file = next_file;
            return Ok(());
        }
        self.next_file = next_file.checked_sub(1).ok_or_else(|| bad("an offset without a file".into()))?;
        self.open_next_split()?;
        let Some(split) = self.current.as_mut() else { return Err(bad("the file is gone".into())) };
        if offset < split.position || offset > split.end {
            return Err(bad(format!(
                "offset {offset} of {} is outside this subtask's split {}..{} (the file changed)",
                split.path.display(),
                split.position,
                split.end
            )));
        }
        let path = split.path.display().to_string();
        split.reader.seek(SeekFrom::Start(offset)).map_err(|e| bad(format!("{path}: {e}")))?;
        split.position = offset;
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError> {
        loop {
            if self.current.is_none() && !self.open_next_split()? {
                return Ok(match self.flush()? {
                    Some(batch) => SourcePoll::Batch(batch),
                    None => SourcePoll::End,
                });
            }
            let more = self.fill()?;
            if !more {
                self.current = None;
            }
            if self.rows_in_decoder >= self.batch_size || (!more && self.rows_in_decoder > 0) {
                if let Some(batch) = self.flush()? {
                    return Ok(SourcePoll::Batch(batch));
                }
            }
        }
    }
}

fn list_files(path: &Path) -> Result<Vec<PathBuf>, OperatorError> {
    let error = |e: std::io::Error| OperatorError::io(format!("cannot read {}: {e}", path.display()));
    let metadata = std::fs::metadata(path).map_err(error)?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(error)? {
        let entry = entry.map_err(error)?;
        let name = entry.file_name();
        if entry.file_type().map_err(error)?.is_file() && !name.to_string_lossy().starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one line (with its newline) into `line`, bounded by [`LINE_BYTES_MAX`]. Returns the bytes consumed.
fn read_line(
    reader: &mut BufReader<File>,
    line: &mut Vec<u8>,
    path: &Path,
    offset: u64,
) -> Result<usize, OperatorError> {
    line.clear();
    let mut limited = reader.by_ref().take(LINE_BYTES_MAX as u64 + 1);
    let n = limited
        .read_until(b'\n', line)
        .map_err(|e| OperatorError::input(format!("cannot read {} at byte {offset}: {e}", path.display())))?;
    if n > LINE_BYTES_MAX {
        return Err(OperatorError::input(format!(
            "{} at byte {offset}: a line is longer than {LINE_BYTES_MAX} bytes",
            path.display()
        )));
    }
    Ok(n)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use sluice_common::proto::{DataType as ProtoType, Field as ProtoField};
    use std::io::Write;

    fn read_all(path: &Path, format: FileFormat, schema: SchemaRef, parallelism: u32) -> Vec<String> {
        let spec = FileSource {
            path: path.display().to_string(),
            format: format as i32,
            schema: vec![ProtoField { name: "line".into(), r#type: ProtoType::String as i32, nullable: false }],
            batch_size: Some(7),
            ..Default::default()
        };
        let mut lines = Vec::new();
        for index in 0..parallelism {
            let Ok(mut source) =
                FileSourceReader::open(&spec, path, schema.clone(), SubtaskInfo { index, parallelism })
            else {
                panic!("open failed");
            };
            loop {
                match source.poll_next() {
                    Ok(SourcePoll::Batch(b)) => {
                        lines.extend(b.column(0).as_string::<i32>().iter().flatten().map(String::from))
                    }
                    Ok(SourcePoll::End) => break,
                    other => panic!("unexpected: {}", other.err().map(|e| e.to_string()).unwrap_or_default()),
                }
            }
        }
        lines.sort();
        lines
    }

    #[test]
    fn every_line_is_read_once_at_any_parallelism() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let text_path = dir.path().join("t.txt");
        let json_path = dir.path().join("t.jsonl");
        let (mut text, mut json) = (File::create(&text_path)?, File::create(&json_path)?);
        let mut expected = Vec::new();
        for i in 0..503 {
            let line = format!("line {i} {}", "x".repeat(i % 37));
            writeln!(text, "{line}")?;
            writeln!(json, "{{\"line\": \"{line}\"}}")?;
            expected.push(line);
        }
        expected.sort();
        let schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
        for parallelism in [1, 2, 3, 8] {
            assert_eq!(
                read_all(&text_path, FileFormat::Lines, schema.clone(), parallelism),
                expected,
                "lines p={parallelism}"
            );
            assert_eq!(
                read_all(&json_path, FileFormat::Json, schema.clone(), parallelism),
                expected,
                "json p={parallelism}"
            );
        }
        Ok(())
    }
}

//! Reading what a `file_sink` wrote: `part-<subtask>.jsonl` files of one JSON object per line.
//!
//! Keyed operators emit an update stream (one row per key per batch), so the current value of a key is its
//! *last* row. A key lives in exactly one subtask, hence in exactly one part file, in order; a key found in
//! two part files means the HASH partitioning is broken, and reading fails saying so.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value};

/// The part files of a sink directory, sorted by name.
pub fn part_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list the sink directory {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("part-") && name.ends_with(".jsonl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every row of one part file, in order.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(Value::Object(row)) => Ok(row),
            Ok(other) => anyhow::bail!("{}:{}: expected a JSON object, found {other}", path.display(), i + 1),
            Err(e) => anyhow::bail!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1),
        })
        .collect()
}

/// The last row of every key (the string value of column `key`) over all part files of `dir`.
///
/// Fails if a row lacks the key column or if a key appears in more than one part file.
pub fn latest_rows_by_key(dir: &Path, key: &str) -> anyhow::Result<BTreeMap<String, Map<String, Value>>> {
    let mut latest: BTreeMap<String, (PathBuf, Map<String, Value>)> = BTreeMap::new();
    for file in part_files(dir)? {
        for row in read_rows(&file)? {
            let Some(Value::String(value)) = row.get(key) else {
                anyhow::bail!("{}: a row has no string column '{key}': {row:?}", file.display());
            };
            let value = value.clone();
            if let Some((earlier, _)) = latest.get(&value).filter(|(f, _)| *f != file) {
                anyhow::bail!("key '{value}' appears in two part files: {} and {}", earlier.display(), file.display());
            }
            latest.insert(value, (file.clone(), row));
        }
    }
    Ok(latest.into_iter().map(|(k, (_, row))| (k, row)).collect())
}

/// Reads an unsigned integer column that Arrow's JSON writer may have written as a number or a string.
pub fn as_u64(row: &Map<String, Value>, column: &str) -> anyhow::Result<u64> {
    match row.get(column) {
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| anyhow::anyhow!("column '{column}' is not an unsigned integer: {n}"))
        }
        Some(Value::String(s)) => {
            s.parse().with_context(|| format!("column '{column}' is not an unsigned integer: {s}"))
        }
        other => anyhow::bail!("column '{column}' is missing or not a number: {other:?}"),
    }
}

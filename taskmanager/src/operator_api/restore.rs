//! Restoring keyed operators: the steps every stateful operator's [`super::Operator::restore_state`] shares.
//!
//! A restore hands an operator the snapshots of its vertex from every subtask of the checkpointed job (the
//! parallelism may have changed since); these helpers merge them and keep only this subtask's key groups,
//! so that each operator states only what is its own (which states it has, what it rebuilds on the heap).
use std::ops::RangeInclusive;

use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::OperatorSnapshot;

use super::OperatorError;
use crate::checkpoint;
use crate::state::{KeyedStateBackend, StateId};

/// Loads the keyed state of `snapshots` (merged) into a backend, keeping `key_groups`.
pub(crate) fn restore_keyed(
    backend: &mut dyn KeyedStateBackend,
    snapshots: &[&OperatorSnapshot],
    key_groups: RangeInclusive<u16>,
) -> Result<(), OperatorError> {
    let merged = checkpoint::merge_keyed(snapshots).map_err(OperatorError::input)?;
    backend.restore(&merged, key_groups).map_err(|e| OperatorError::io(e.to_string()))
}

/// Every key stored in `state`.
pub(crate) fn stored_keys(backend: &mut dyn KeyedStateBackend, state: StateId) -> Result<Vec<Vec<u8>>, OperatorError> {
    let mut keys = Vec::new();
    backend
        .scan_prefix(state, &[], &mut |key, _| {
            keys.push(key.to_vec());
            true
        })
        .map_err(|e| OperatorError::io(e.to_string()))?;
    Ok(keys)
}

/// The buffered records of `snapshots` whose key (the `key_columns`) falls into `key_groups`.
pub(crate) fn restore_buffered(
    snapshots: &[&OperatorSnapshot],
    key_columns: &[usize],
    max_parallelism: u32,
    key_groups: &RangeInclusive<u16>,
) -> Result<Vec<RecordBatch>, OperatorError> {
    use datafusion::arrow::array::{ArrayRef, BooleanArray};
    let mut kept = Vec::new();
    let mut hashes = Vec::new();
    for snapshot in snapshots {
        for batch in checkpoint::decode_batches(&snapshot.operator_state).map_err(OperatorError::input)? {
            // A damaged snapshot may hold batches of another shape: a missing key column is an error.
            let keys = key_columns
                .iter()
                .map(|&i| {
                    batch.columns().get(i).cloned().ok_or_else(|| {
                        OperatorError::input(format!(
                            "buffered records of vertex '{}' have {} columns; key column {i} is missing",
                            snapshot.vertex_id,
                            batch.num_columns()
                        ))
                    })
                })
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            sluice_common::keygroup::hash_key_columns(&keys, &mut hashes)
                .map_err(|e| OperatorError::internal(e.to_string()))?;
            let mine: BooleanArray = hashes
                .iter()
                .map(|&h| {
                    Some(key_groups.contains(&(sluice_common::keygroup::key_group_of(h, max_parallelism).0 as u16)))
                })
                .collect();
            let batch = datafusion::arrow::compute::filter_record_batch(&batch, &mine)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
    }
    Ok(kept)
}

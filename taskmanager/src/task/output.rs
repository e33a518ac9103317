//! Routing a chain's output batches to the subpartitions of its result partitions.
//!
//! HASH computes each row's key group from its key columns and splits the batch with one `take` per
//! target subtask (vectorized, no per-row copies into builders). REBALANCE sends whole batches round-robin
//! (per batch rather than per record: batches are the unit of work). BROADCAST sends every batch to every
//! subpartition; FORWARD has a single subpartition.
use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::keygroup::{hash_key_columns, key_group_of, subtask_for_key_group};
use sluice_common::proto::Partitioning;

use super::plan::OutputPlan;
use super::TaskError;
use crate::network::ResultPartition;

pub struct Output {
    pub plan: OutputPlan,
    pub partition: ResultPartition,
    next_round_robin: usize,
    hashes: Vec<u64>,
    targets: Vec<Vec<u32>>,
}

impl Output {
    pub fn new(plan: OutputPlan, partition: ResultPartition) -> Self {
        let targets = vec![Vec::new(); plan.subpartitions.len()];
        Self { plan, partition, next_round_robin: 0, hashes: Vec::new(), targets }
    }

    pub async fn emit(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
        let n = self.plan.subpartitions.len();
        match self.plan.partitioning {
            Partitioning::Hash if n > 1 => {
                let keys: Vec<ArrayRef> = self.plan.key_columns.iter().map(|&i| batch.column(i).clone()).collect();
                hash_key_columns(&keys, &mut self.hashes).map_err(|e| TaskError::internal(e.to_string()))?;
                self.targets.iter_mut().for_each(Vec::clear);
                let parallelism = n as u32;
                for (row, &hash) in self.hashes.iter().enumerate() {
                    let key_group = key_group_of(hash, self.plan.max_parallelism);
                    let target = subtask_for_key_group(key_group, parallelism, self.plan.max_parallelism);
                    self.targets[target as usize].push(row as u32);
                }
                for target in 0..n {
                    if self.targets[target].is_empty() {
                        continue;
                    }
                    let rows = if self.targets[target].len() == batch.num_rows() {
                        batch.clone()
                    } else {
                        let indices = UInt32Array::from(std::mem::take(&mut self.targets[target]));
                        take_record_batch(&batch, &indices)?
                    };
                    self.partition.send_batch(target, rows).await?;
                }
            }
            Partitioning::Broadcast => {
                for target in 0..n {
                    self.partition.send_batch(target, batch.clone()).await?;
                }
            }
            Partitioning::Rebalance => {
                let target = self.next_round_robin % n.max(1);
                self.next_round_robin = self.next_round_robin.wrapping_add(1);
                self.partition.send_batch(target, batch).await?;
            }
            Partitioning::Forward | Partitioning::Hash | Partitioning::Unspecified => {
                self.partition.send_batch(0, batch).await?
            }
        }
        Ok(())
    }
}

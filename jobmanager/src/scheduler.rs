//! Placement: which TaskManager hosts each slot a job needs, and which subtasks run in each slot.
//!
//! Slot sharing (as in Flink): a job needs as many slots as its largest parallelism, and slot `j` of the
//! job hosts subtask `j` of every chain whose parallelism is greater than `j`. So a pipeline of chains
//! with parallelism 4, 2 and 4 needs 4 slots, and slot 0 runs three subtasks.
//!
//! The functions here are pure: they decide from a snapshot of free slots, and the cluster registry
//! applies the decision under its lock, so that allocation is atomic.
use std::cmp::Reverse;

use sluice_common::proto::{Chain, Placement, SubtaskPlacement};

use sluice_common::ids::TaskManagerId;

/// The free slots of one active TaskManager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeSlots {
    /// The TaskManager.
    pub task_manager: TaskManagerId,
    /// How many of its slots no job holds.
    pub free: u32,
}

/// Fewer free slots than the job needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("waiting for {needed} slots, {available} available")]
pub struct NotEnoughSlots {
    /// Slots the job needs.
    pub needed: u32,
    /// Free slots over all active TaskManagers.
    pub available: u32,
}

/// Chooses a TaskManager for each of the `needed` slots of a job: element `j` hosts the job's slot `j`.
///
/// - SPREAD (and UNSPECIFIED): each slot goes to the TaskManager this job uses least so far, then to the one
///   with the most free slots, so the subtasks spread over as many TaskManagers as possible.
/// - PACK: if one TaskManager can hold every slot, the one that fits most tightly (best fit); otherwise fill
///   the TaskManager with the most free slots before moving to the next, so as few as possible are used.
///
/// Ties go to the smaller TaskManager id, so the answer is deterministic.
pub fn choose_slots(
    free: &[FreeSlots],
    needed: u32,
    placement: Placement,
) -> Result<Vec<TaskManagerId>, NotEnoughSlots> {
    let available: u32 = free.iter().map(|f| f.free).sum();
    if available < needed {
        return Err(NotEnoughSlots { needed, available });
    }
    let mut candidates: Vec<FreeSlots> = free.iter().filter(|f| f.free > 0).cloned().collect();
    candidates.sort_by(|a, b| a.task_manager.cmp(&b.task_manager));
    let chosen = match placement {
        Placement::Spread | Placement::Unspecified => spread(candidates, needed),
        Placement::Pack => pack(candidates, needed),
    };
    assert_eq!(chosen.len(), needed as usize, "placement chose {} slots when {needed} were needed", chosen.len());
    Ok(chosen)
}

fn spread(candidates: Vec<FreeSlots>, needed: u32) -> Vec<TaskManagerId> {
    // (candidate, slots this job took from it so far)
    let mut candidates: Vec<(FreeSlots, u32)> = candidates.into_iter().map(|c| (c, 0)).collect();
    let mut chosen = Vec::with_capacity(needed as usize);
    for _ in 0..needed {
        // The TaskManager this job uses least, then the one with the most free slots; `max_by_key` returns
        // the last maximum, so iterate in reverse for the smallest id to win ties.
        let Some((best, taken)) =
            candidates.iter_mut().rev().filter(|(c, _)| c.free > 0).max_by_key(|(c, taken)| (Reverse(*taken), c.free))
        else {
            break;
        };
        best.free -= 1;
        *taken += 1;
        chosen.push(best.task_manager.clone());
    }
    chosen
}

fn pack(mut candidates: Vec<FreeSlots>, needed: u32) -> Vec<TaskManagerId> {
    let best_fit = candidates.iter().filter(|c| c.free >= needed).min_by_key(|c| c.free);
    if let Some(single) = best_fit {
        return vec![single.task_manager.clone(); needed as usize];
    }
    // Stable sort: equal free counts keep the id order.
    candidates.sort_by_key(|c| Reverse(c.free));
    let mut chosen = Vec::with_capacity(needed as usize);
    for candidate in candidates {
        let take = candidate.free.min(needed - chosen.len() as u32);
        chosen.extend(std::iter::repeat_n(candidate.task_manager, take as usize));
        if chosen.len() as u32 == needed {
            break;
        }
    }
    chosen
}

/// Where every subtask of every chain runs, given the TaskManager of each of the job's slots.
pub fn subtask_placements(chains: &[Chain], slots: &[TaskManagerId]) -> Vec<SubtaskPlacement> {
    let mut placements = Vec::new();
    for chain in chains {
        assert!(
            chain.parallelism as usize <= slots.len(),
            "chain {} has parallelism {} but the job holds {} slots",
            chain.index,
            chain.parallelism,
            slots.len()
        );
        for subtask in 0..chain.parallelism {
            placements.push(SubtaskPlacement {
                chain: chain.index,
                subtask,
                task_manager_id: slots[subtask as usize].0.clone(),
            });
        }
    }
    placements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(id: &str) -> TaskManagerId {
        TaskManagerId(id.to_string())
    }

    fn free(list: &[(&str, u32)]) -> Vec<FreeSlots> {
        list.iter().map(|(id, n)| FreeSlots { task_manager: tm(id), free: *n }).collect()
    }

    fn count(chosen: &[TaskManagerId], id: &str) -> usize {
        chosen.iter().filter(|t| t.0 == id).count()
    }

    #[test]
    fn spread_uses_every_task_manager_most_free_first() {
        let chosen = choose_slots(&free(&[("a", 4), ("b", 4), ("c", 2)]), 6, Placement::Spread).unwrap_or_default();
        assert_eq!((count(&chosen, "a"), count(&chosen, "b"), count(&chosen, "c")), (2, 2, 2));
        // The most free first, the smallest id on ties.
        assert_eq!(chosen[0], tm("a"));
        assert_eq!(chosen[1], tm("b"));
    }

    #[test]
    fn unspecified_placement_spreads() {
        let chosen = choose_slots(&free(&[("a", 2), ("b", 2)]), 2, Placement::Unspecified).unwrap_or_default();
        assert_eq!(chosen, vec![tm("a"), tm("b")]);
    }

    #[test]
    fn pack_fills_one_task_manager_when_one_fits() {
        let chosen = choose_slots(&free(&[("a", 4), ("b", 3), ("c", 8)]), 3, Placement::Pack).unwrap_or_default();
        assert_eq!(chosen, vec![tm("b"); 3], "best fit is b, whose 3 free slots fit exactly");
    }

    #[test]
    fn pack_fills_the_largest_first_when_none_fits_alone() {
        let chosen = choose_slots(&free(&[("a", 2), ("b", 3), ("c", 2)]), 5, Placement::Pack).unwrap_or_default();
        assert_eq!(chosen, vec![tm("b"), tm("b"), tm("b"), tm("a"), tm("a")]);
    }

    #[test]
    fn not_enough_slots_reports_needed_and_available() {
        let err = choose_slots(&free(&[("a", 1), ("b", 2)]), 4, Placement::Spread).err();
        assert_eq!(err, Some(NotEnoughSlots { needed: 4, available: 3 }));
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("waiting for 4 slots, 3 available"));
        assert_eq!(choose_slots(&[], 1, Placement::Pack).err(), Some(NotEnoughSlots { needed: 1, available: 0 }));
    }

    #[test]
    fn slot_sharing_puts_subtask_j_of_every_chain_in_slot_j() {
        let chains = vec![
            Chain { index: 0, vertex_ids: vec!["src".into()], parallelism: 4 },
            Chain { index: 1, vertex_ids: vec!["agg".into()], parallelism: 2 },
        ];
        let slots = vec![tm("a"), tm("b"), tm("a"), tm("b")];
        let placements = subtask_placements(&chains, &slots);
        assert_eq!(placements.len(), 6);
        let at = |chain: u32, subtask: u32| {
            placements.iter().find(|p| p.chain == chain && p.subtask == subtask).map(|p| p.task_manager_id.clone())
        };
        assert_eq!(at(0, 2).as_deref(), Some("a"));
        assert_eq!(at(0, 3).as_deref(), Some("b"));
        assert_eq!(at(1, 0).as_deref(), Some("a"));
        assert_eq!(at(1, 1).as_deref(), Some("b"));
        assert_eq!(at(1, 2), None);
    }
}

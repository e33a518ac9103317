//! Key groups: how keyed records and keyed state are assigned to subtasks.
//!
//! A key is hashed with a hash that is stable across processes, machines and releases (xxh3 over the key's
//! canonical bytes, never a randomly seeded hasher), then `hash mod max_parallelism` gives its
//! [`KeyGroup`]. Subtask `i` of `p` owns the contiguous range of key groups whose
//! `key_group * p / max_parallelism == i` (Flink's assignment). Because state is stored per key group, a job
//! can later be restored at another parallelism by moving whole key groups.
//!
//! ```
//! use sluice_common::keygroup::{key_group_range, subtask_for_key_group};
//! use sluice_common::ids::KeyGroup;
//! // 128 key groups over 3 subtasks: contiguous ranges that cover every group exactly once.
//! assert_eq!(key_group_range(0, 3, 128), 0..43);
//! assert_eq!(key_group_range(1, 3, 128), 43..86);
//! assert_eq!(key_group_range(2, 3, 128), 86..128);
//! assert_eq!(subtask_for_key_group(KeyGroup(42), 3, 128), 0);
//! assert_eq!(subtask_for_key_group(KeyGroup(43), 3, 128), 1);
//! ```
use std::ops::Range;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::KeyGroup;

/// Default number of key groups, and so the default upper bound for parallelism.
pub const MAX_PARALLELISM_DEFAULT: u32 = 128;
/// The largest max_parallelism a job may ask for (Flink's bound: 2^15).
pub const MAX_PARALLELISM_LIMIT: u32 = 32_768;
// Keyed state keys start with the key group as a big-endian u16 (the TaskManager's state layout): every
// key group of the largest allowed max_parallelism must fit that prefix.
const _: () = assert!(MAX_PARALLELISM_LIMIT - 1 <= u16::MAX as u32);
const _: () = assert!(MAX_PARALLELISM_DEFAULT >= 1 && MAX_PARALLELISM_DEFAULT <= MAX_PARALLELISM_LIMIT);

/// Seed of the first key column's hash; later columns are seeded with the running hash.
const KEY_HASH_SEED: u64 = 0x5u64 << 56 | 0x10_1CE;
/// What a null key column contributes to the hash.
const NULL_KEY_HASH: u64 = 0x9E37_79B9_7F4A_7C15;

/// The key group of a key hash.
pub fn key_group_of(hash: u64, max_parallelism: u32) -> KeyGroup {
    debug_assert!(max_parallelism > 0, "max_parallelism must be positive");
    KeyGroup((hash % u64::from(max_parallelism)) as u32)
}

/// The subtask (of `parallelism`) that owns `key_group`.
pub fn subtask_for_key_group(key_group: KeyGroup, parallelism: u32, max_parallelism: u32) -> u32 {
    debug_assert!(key_group.0 < max_parallelism, "key group {} >= max parallelism {}", key_group.0, max_parallelism);
    (u64::from(key_group.0) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// The key groups owned by `subtask` of `parallelism`.
pub fn key_group_range(subtask: u32, parallelism: u32, max_parallelism: u32) -> Range<u32> {
    let (s, p, m) = (u64::from(subtask), u64::from(parallelism), u64::from(max_parallelism));
    let start = (s * m).div_ceil(p);
    let end = ((s + 1) * m).div_ceil(p);
    start as u32..end as u32
}

/// A key column whose type cannot be hashed.
#[derive(Debug, thiserror::Error)]
#[error("key column of type {0} cannot be hashed (supported: strings, integers, floats, booleans, timestamps, binary)")]
pub struct UnsupportedKeyType(pub DataType);

/// Whether a column of this type can be a key.
pub fn is_hashable_key_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int64
            | DataType::Int32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Timestamp(TimeUnit::Millisecond, _)
            | DataType::Binary
    )
}

/// Hashes the rows of the key `columns` into `hashes` (cleared first), vectorized, column by column.
pub fn hash_key_columns(columns: &[ArrayRef], hashes: &mut Vec<u64>) -> Result<(), UnsupportedKeyType> {
    let rows = columns.first().map_or(0, |c| c.len());
    hashes.clear();
    hashes.resize(rows, KEY_HASH_SEED);
    for column in columns {
        hash_column(column.as_ref(), hashes)?;
    }
    Ok(())
}

fn hash_column(column: &dyn Array, hashes: &mut [u64]) -> Result<(), UnsupportedKeyType> {
    macro_rules! fold {
        ($bytes_of:expr) => {
            for (row, hash) in hashes.iter_mut().enumerate() {
                *hash = if column.is_null(row) {
                    xxh3_64_with_seed(&NULL_KEY_HASH.to_le_bytes(), *hash)
                } else {
                    xxh3_64_with_seed($bytes_of(row).as_ref(), *hash)
                };
            }
        };
    }
    match column.data_type() {
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            fold!(|row| a.value(row).as_bytes())
        }
        DataType::LargeUtf8 => {
            let a = column.as_string::<i64>();
            fold!(|row| a.value(row).as_bytes())
        }
        DataType::Utf8View => {
            let a = column.as_string_view();
            fold!(|row| a.value(row).as_bytes())
        }
        DataType::Int64 => {
            let a = column.as_primitive::<Int64Type>();
            fold!(|row| a.value(row).to_le_bytes())
        }
        DataType::Int32 => {
            // Widened so that an INT32 and an INT64 key of the same value land in the same key group.
            let a = column.as_primitive::<Int32Type>();
            fold!(|row| i64::from(a.value(row)).to_le_bytes())
        }
        DataType::Float64 => {
            let a = column.as_primitive::<Float64Type>();
            fold!(|row| a.value(row).to_bits().to_le_bytes())
        }
        DataType::Boolean => {
            let a = column.as_boolean();
            fold!(|row| [u8::from(a.value(row))])
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = column.as_primitive::<TimestampMillisecondType>();
            fold!(|row| a.value(row).to_le_bytes())
        }
        DataType::Binary => {
            let a = column.as_binary::<i32>();
            fold!(|row| a.value(row))
        }
        other => return Err(UnsupportedKeyType(other.clone())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, StringViewArray};
    use std::sync::Arc;

    #[test]
    fn ranges_cover_every_key_group_exactly_once_and_agree_with_the_owner_function() {
        for max_parallelism in [1, 7, 128, 1000] {
            for parallelism in 1..=max_parallelism.min(20) {
                let mut next = 0;
                for subtask in 0..parallelism {
                    let range = key_group_range(subtask, parallelism, max_parallelism);
                    assert_eq!(range.start, next, "gap before subtask {subtask} of {parallelism}/{max_parallelism}");
                    for kg in range.clone() {
                        assert_eq!(subtask_for_key_group(KeyGroup(kg), parallelism, max_parallelism), subtask);
                    }
                    next = range.end;
                }
                assert_eq!(next, max_parallelism);
            }
        }
    }

    #[test]
    fn string_hashes_do_not_depend_on_the_string_layout() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec!["apple", "pear"]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec!["apple", "pear"]));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(hash_key_columns(&[plain], &mut a).is_ok());
        assert!(hash_key_columns(&[view], &mut b).is_ok());
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn hashes_are_stable_across_releases() {
        // Pinned: changing the hash silently moves every key's state to another key group.
        let keys: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let mut hashes = Vec::new();
        assert!(hash_key_columns(&[keys], &mut hashes).is_ok());
        let pinned = hashes.clone();
        let again: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(hash_key_columns(&[again], &mut hashes).is_ok());
        assert_eq!(hashes, pinned);
        assert_eq!(key_group_of(hashes[0], 128), key_group_of(pinned[0], 128));
    }
}

/// Properties of key-group assignment over generated keys and parallelisms: what rescaling and restore rely
/// on, checked for far more cases than the examples above.
#[cfg(test)]
mod properties {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, LargeStringArray, StringArray, StringViewArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// The largest max_parallelism whose every parallelism (1..=max) and every subtask is checked one by one:
    /// `max²/2` ranges per case keeps a case in milliseconds.
    const EXHAUSTIVE_MAX_PARALLELISM: u32 = 300;

    fn hashes_of(column: ArrayRef) -> Vec<u64> {
        let mut hashes = Vec::new();
        assert!(hash_key_columns(&[column], &mut hashes).is_ok(), "a supported key type");
        hashes
    }

    proptest! {
        #[test]
        fn every_key_lands_in_exactly_one_key_group_in_range_and_one_owner(
            keys in proptest::collection::vec(any::<String>(), 1..20),
            max_parallelism in 1..=MAX_PARALLELISM_LIMIT,
            parallelism_seed in any::<u32>(),
        ) {
            let parallelism = 1 + parallelism_seed % max_parallelism;
            for hash in hashes_of(Arc::new(StringArray::from(keys.clone()))) {
                let group = key_group_of(hash, max_parallelism);
                prop_assert!(group.0 < max_parallelism, "key group {} of {max_parallelism}", group.0);
                let owner = subtask_for_key_group(group, parallelism, max_parallelism);
                prop_assert!(owner < parallelism, "owner {owner} of parallelism {parallelism}");
                let owners: Vec<u32> = (0..parallelism)
                    .filter(|&s| key_group_range(s, parallelism, max_parallelism).contains(&group.0))
                    .collect();
                prop_assert_eq!(owners, vec![owner], "key group {} of {}", group.0, max_parallelism);
            }
        }

        #[test]
        fn ranges_partition_the_key_groups_contiguously_for_every_parallelism(
            max_parallelism in 1..=EXHAUSTIVE_MAX_PARALLELISM,
        ) {
            for parallelism in 1..=max_parallelism {
                let mut next = 0;
                for subtask in 0..parallelism {
                    let range = key_group_range(subtask, parallelism, max_parallelism);
                    prop_assert_eq!(range.start, next, "gap or overlap before subtask {} of {}", subtask, parallelism);
                    prop_assert!(!range.is_empty(), "subtask {subtask} of {parallelism} owns no key group");
                    for group in range.clone() {
                        prop_assert_eq!(subtask_for_key_group(KeyGroup(group), parallelism, max_parallelism), subtask);
                    }
                    next = range.end;
                }
                prop_assert_eq!(next, max_parallelism, "parallelism {} leaves key groups unowned", parallelism);
            }
        }

        #[test]
        fn ranges_partition_the_key_groups_at_large_max_parallelism(
            max_parallelism in EXHAUSTIVE_MAX_PARALLELISM..=MAX_PARALLELISM_LIMIT,
            parallelism_seed in any::<u32>(),
        ) {
            let parallelism = 1 + parallelism_seed % max_parallelism;
            let mut next = 0;
            for subtask in 0..parallelism {
                let range = key_group_range(subtask, parallelism, max_parallelism);
                prop_assert_eq!(range.start, next);
                prop_assert!(!range.is_empty());
                // The owner function agrees at both ends of every range (and so, ranges being contiguous, inside).
                prop_assert_eq!(subtask_for_key_group(KeyGroup(range.start), parallelism, max_parallelism), subtask);
                prop_assert_eq!(subtask_for_key_group(KeyGroup(range.end - 1), parallelism, max_parallelism), subtask);
                next = range.end;
            }
            prop_assert_eq!(next, max_parallelism);
        }

        #[test]
        fn assignment_is_stable_whatever_the_batch_and_the_string_layout(
            keys in proptest::collection::vec(any::<String>(), 1..20),
            rotation in any::<usize>(),
        ) {
            let plain = hashes_of(Arc::new(StringArray::from(keys.clone())));
            prop_assert_eq!(&plain, &hashes_of(Arc::new(StringArray::from(keys.clone()))), "hashing twice");
            prop_assert_eq!(&plain, &hashes_of(Arc::new(StringViewArray::from(keys.clone()))));
            prop_assert_eq!(&plain, &hashes_of(Arc::new(LargeStringArray::from(keys.clone()))));
            // A key's hash does not depend on the other rows of its batch or on its position.
            let mut rotated = keys.clone();
            let by = rotation % keys.len();
            rotated.rotate_left(by);
            let mut expected = plain.clone();
            expected.rotate_left(by);
            prop_assert_eq!(hashes_of(Arc::new(StringArray::from(rotated))), expected);
            for (key, hash) in keys.iter().zip(&plain) {
                prop_assert_eq!(hashes_of(Arc::new(StringArray::from(vec![key.clone()]))), vec![*hash]);
            }
        }

        #[test]
        fn an_int32_key_lands_where_the_same_int64_key_does(values in proptest::collection::vec(any::<i32>(), 1..20)) {
            let wide: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
            prop_assert_eq!(
                hashes_of(Arc::new(Int32Array::from(values))),
                hashes_of(Arc::new(Int64Array::from(wide)))
            );
        }
    }
}

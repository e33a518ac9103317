//! Typed lifecycles: every status and kind that is stored, sent over the wire or shown to users.
//!
//! Each lifecycle is an enum with one table of legal moves, tested against an independently written list
//! of edges, and one name per value (`as_str`) used in the store, the REST API, logs and metrics. Text
//! becomes a value only through `FromStr`, so nothing outside this module compares status strings by hand,
//! and text that names no value is an error the caller turns into a clear failure, never a panic.
//!
//! - [`job`]: a job's status ([`JobStatus`], Flink's states) and what a user asked for ([`DesiredStatus`]);
//! - [`checkpoint`]: a checkpoint's status ([`CheckpointStatus`]) and kind ([`CheckpointKind`]);
//! - [`task`]: the rules of a task's state as reported by TaskManagers (the proto `TaskState`);
//! - [`failure`]: what kind of failure ended a task ([`FailureKind`]), and whether a restart can help.
//!
//! Both processes use these: the JobManager to drive and store, the CLI and tests to read what REST says.
pub mod checkpoint;
pub mod failure;
pub mod job;
pub mod task;

pub use checkpoint::{CheckpointKind, CheckpointStatus};
pub use failure::FailureKind;
pub use job::{DesiredStatus, JobStatus};

/// Stored or received text that names no value of a lifecycle enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{text}'")]
pub struct UnknownName {
    /// What was being read ("checkpoint status", ...).
    pub what: &'static str,
    /// The text found.
    pub text: String,
}

/// Defines `ALL`, `as_str`, `Display`, `Serialize` and `Deserialize` (as the name) and `FromStr` (with [`UnknownName`]) for a field-less enum whose
/// values each have one name. The enum itself, with its docs, is written out by the caller. (`JobStatus`
/// spells these out by hand: its parse error names the store, which its callers report as is.)
macro_rules! named_values {
    (@count) => { 0 };
    (@count $head:ident $($tail:ident)*) => { 1 + named_values!(@count $($tail)*) };
    ($enum:ident, $what:literal, { $($value:ident => $name:literal),+ $(,)? }) => {
        impl $enum {
            /// Every value, in declaration order.
            pub const ALL: [$enum; named_values!(@count $($value)+)] = [$($enum::$value),+];

            /// The name used in the store, the REST API, logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($enum::$value => $name),+
                }
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $enum {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $enum {
            type Err = $crate::lifecycle::UnknownName;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $enum::ALL
                    .into_iter()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| $crate::lifecycle::UnknownName { what: $what, text: text.to_string() })
            }
        }
    };
}
pub(crate) use named_values;

/// `'A', 'B', 'C'`: the names of `values`, quoted for an SQL `IN (...)` list. Names are fixed identifiers
/// (upper case and underscores), so quoting them needs no escaping; asserted here.
pub fn sql_list<T: Copy>(values: impl IntoIterator<Item = T>, name: impl Fn(T) -> &'static str) -> String {
    let quoted: Vec<String> = values
        .into_iter()
        .map(|value| {
            let text = name(value);
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "a lifecycle name must be an identifier: {text}"
            );
            format!("'{text}'")
        })
        .collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_lists_quote_each_name_once() {
        let terminal = JobStatus::ALL.iter().copied().filter(|s| s.is_terminal());
        assert_eq!(sql_list(terminal, JobStatus::as_str), "'FAILED', 'CANCELED', 'FINISHED'");
        assert_eq!(sql_list(std::iter::empty::<JobStatus>(), JobStatus::as_str), "");
    }
}

//! What kind of failure ended a task, by who can mend it (DataFusion's error categories are the model).
//!
//! A task that fails says which kind its failure is; the TaskManager sends it with the failure
//! (`TaskStateReport.failure_kind`), the JobManager stores it in the job's exception history, shows it on
//! REST and in the UI, and lets it decide whether a restart can help:
//!
//! | kind | what | who mends it | restarted |
//! |---|---|---|---|
//! | `INPUT` | a record that does not decode, a value an expression cannot take, stored state that does not read back | whoever owns the data | per the restart strategy |
//! | `CONFIGURATION` | a function, format, path or native operator the job names that cannot work | whoever wrote the job | **no**: the same job meets it again |
//! | `IO` | a file, checkpoint storage, Kafka, the network, a peer TaskManager | the operator of that system; often passes | per the restart strategy |
//! | `INTERNAL` | a broken invariant or a panic: a bug in Sluice | us | per the restart strategy |
//!
//! Only `CONFIGURATION` changes what happens: Flink would restart such a job until its strategy gives up
//! (with checkpoints, by default, never), so a typo in a job would keep a cluster busy restarting it.
//! Everything else restarts as before kinds existed: input can be fixed upstream while the job waits, I/O
//! often recovers, and a bug may not strike twice.
use super::named_values;
use crate::proto;

/// What kind of failure ended a task (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Data the task was given cannot be processed.
    Input,
    /// The job asks for something that cannot work.
    Configuration,
    /// Something outside the task failed.
    Io,
    /// A bug in Sluice.
    Internal,
}

named_values!(FailureKind, "failure kind", {
    Input => "INPUT",
    Configuration => "CONFIGURATION",
    Io => "IO",
    Internal => "INTERNAL",
});

impl FailureKind {
    /// Whether restarting the same job can get past the failure (only a configuration error cannot).
    pub fn restart_can_help(self) -> bool {
        match self {
            FailureKind::Input | FailureKind::Io | FailureKind::Internal => true,
            FailureKind::Configuration => false,
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> proto::FailureKind {
        match self {
            FailureKind::Input => proto::FailureKind::Input,
            FailureKind::Configuration => proto::FailureKind::Configuration,
            FailureKind::Io => proto::FailureKind::Io,
            FailureKind::Internal => proto::FailureKind::Internal,
        }
    }

    /// The kind a report carries; None when it says none (a TaskManager of an older version) or a value
    /// this version does not know.
    pub fn from_proto(value: i32) -> Option<FailureKind> {
        match proto::FailureKind::try_from(value).ok()? {
            proto::FailureKind::Unspecified => None,
            proto::FailureKind::Input => Some(FailureKind::Input),
            proto::FailureKind::Configuration => Some(FailureKind::Configuration),
            proto::FailureKind::Io => Some(FailureKind::Io),
            proto::FailureKind::Internal => Some(FailureKind::Internal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_goes_over_the_wire_and_back_and_only_configuration_is_not_restarted() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_proto(kind.to_proto() as i32), Some(kind));
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
            assert_eq!(kind.restart_can_help(), kind != FailureKind::Configuration, "{kind}");
        }
        assert_eq!(FailureKind::from_proto(proto::FailureKind::Unspecified as i32), None, "not said");
        assert_eq!(FailureKind::from_proto(99), None, "a value of a newer version");
        assert!("BOGUS".parse::<FailureKind>().is_err());
    }
}

//! The job's phases, one file each: what the actor does while the job is in that status, and which
//! transition it decides next. The loop that applies transitions, and what every phase shares (cancelling
//! tasks, noticing a lost TaskManager), is in [`super::actor`]; the table of legal edges is
//! `sluice_common::lifecycle::job`.
//!
//! | status | file | leaves to |
//! |---|---|---|
//! | CREATED | [`created`] | RUNNING, FAILING, FAILED, CANCELED |
//! | RUNNING | [`running`] | FINISHED, FAILING, CANCELLING |
//! | FAILING, CANCELLING | [`draining`] | FAILED, RESTARTING, CANCELED |
//! | RESTARTING | [`restarting`] | RUNNING, FAILING, CANCELLING, FAILED |
//! | FINISHED, FAILED, CANCELED | [`finished`] | (the actor ends) |
//!
//! Before its first phase, the actor of a job an earlier leader left RUNNING adopts that attempt
//! ([`adopting`]: the job stays RUNNING) or sets out to redeploy it (CREATED).
pub(crate) mod adopting;
mod created;
mod draining;
mod finished;
mod restarting;
mod running;

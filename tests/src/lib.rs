//! # sluice-tests: a harness for tests against real Sluice processes
//!
//! The integration tests in `tests/tests/` start a real JobManager and real TaskManagers (the binaries
//! `cargo build --bins` produces), talk to them over their REST API, data files and Prometheus endpoints,
//! and check what a user would see. Nothing is mocked: if it passes here, it works on a laptop.
//!
//! ## Running
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/sluice/target
//! cargo build --bins                # the binaries under test: sluice-jobmanager, sluice-taskmanager, sluice
//! cargo test -p sluice-tests        # every test starts its own cluster; they may run in parallel
//! ```
//! A failing test prints the tail of each process's log and the path of its kept directory.
//!
//! ## Rules the harness enforces
//! - Every process binds 127.0.0.1 with port 0 and announces what it bound in its address file
//!   (`jobmanager.addr`, `taskmanager.addr`), so tests never collide on ports and can run in parallel.
//! - Every process is owned by a [`Process`] guard: dropped means killed by its PID and reaped, pass or
//!   fail. (A test process killed with SIGKILL cannot run its guards; its children then die with their
//!   sockets' peers, or linger until the machine's next clean-up.)
//! - Every wait polls its condition with a deadline ([`wait::poll_until`]) and, on timeout, says what it
//!   last observed. No sleep stands in for synchronization.
//! - Each process's stdout and stderr go to `<test dir>/<name>.log`. When a test fails, the tail of every
//!   log is printed and the test directory is kept (its path is printed) for a post-mortem.
//!
//! ## Layout
//! - [`cluster`]: [`Cluster`] (a JobManager plus TaskManagers) and its REST helpers.
//! - [`process`]: [`Process`], a child process killed on drop, with its log.
//! - [`wait`]: polling with a deadline.
//! - [`prometheus`]: parsing the Prometheus text format of `GET /metrics`.
//! - [`sink`]: reading what the file sink wrote.
//! - [`windows`]: the windowed exactly-once job, its expected output, and what its sink committed.
//! - [`memory`]: the resident memory of a process, from `/proc`.
//! - [`openapi`]: checking REST answers against the OpenAPI document.
//! - [`postgres`], [`s3`]: PostgreSQL and S3 servers of a test's own, to stop and start.
//! - [`binaries`]: where the binaries under test are found.
//! - [`chaos`]: chaos runs (random kills of TaskManagers and the JobManager, then an exact output check).
//!
//! ## Panics
//! Helpers whose failure means the test failed (the cluster did not start, a request the test relies on
//! did not succeed) panic with a message naming what failed: this is a test harness, and a panic is how a
//! test fails. The [`Cluster`] guard then prints the logs while unwinding.
#![warn(missing_docs)]

pub mod binaries;
pub mod chaos;
pub mod cluster;
pub mod kafka;
pub mod memory;
pub mod openapi;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod s3;
pub mod sink;
pub mod wait;
pub mod windows;

pub use cluster::{CliOutput, Cluster, ClusterSpec};
pub use process::Process;
pub use sluice_common::ids::JobId;
pub use sluice_common::lifecycle::JobStatus;

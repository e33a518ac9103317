//! # sluice-common
//!
//! The model every Sluice process shares. The JobManager and the TaskManagers never link each other's code;
//! they meet here and in `proto/`.
//!
//! ## Layout
//! - [`proto`]: code generated from `proto/sluice.proto`: the job graph (whose proto3 JSON form is the job
//!   file users write), and the control-plane gRPC services. One definition, two encodings.
//! - [`job`]: reading a job file with errors that name the vertex and field ([`job::parse_job_file`]),
//!   validating a graph and inferring every vertex's Arrow schema ([`job::validate`]), chaining vertices
//!   into tasks ([`job::chain`]), and a builder API that writes job files ([`job::builder`]).
//! - [`expr`]: SQL expression strings compiled to vectorized DataFusion physical expressions.
//! - [`keygroup`]: key hashing and the key-group ranges that assign keys to subtasks.
//! - [`ids`]: newtypes for the identifiers that cross process boundaries.
//! - [`lifecycle`]: typed job, checkpoint and task lifecycles, each with its transition table.
//! - [`checkpoint_layout`]: every name of the checkpoint storage layout, for both sides;
//!   [`checkpoint_metadata`]: the format of a completed checkpoint's `_metadata`.
//! - [`bounds`]: the time bounds the JobManager and TaskManagers must agree on, with their relations checked.
//! - [`cluster_auth`]: the cluster secret: gRPC calls and data-port hellos prove membership.
//! - [`config`]: configuration files merged under flags and environment variables.
//! - [`process`]: what every Sluice binary does at start and stop (logging, shutdown signals).
//! - [`secret`]: secret files (REST tokens, the cluster secret): generated, read, rotated, compared.
//! - [`tls`]: rustls for REST, gRPC and the data port, from certificate files.
//! - [`untrusted`]: third-party decoders on outside bytes, with their panics turned into errors.
//! - [`storage`]: checkpoint locations: a local directory, `s3://` or `gs://`.
//! - [`durable`]: renames that commit, followed by a sync of the directory, so they survive a crash.
//! - [`confine`]: what jobs may read, write and reach (allowed directories, Kafka properties and brokers,
//!   savepoint locations), checked by the JobManager at submission and again by each TaskManager, and
//!   the secrets of job files hidden from everything the REST API returns.
#![warn(missing_docs)]

pub mod aggregates;
pub mod bounds;
pub mod checkpoint_layout;
pub mod checkpoint_metadata;
pub mod cluster_auth;
pub mod config;
pub mod confine;
pub mod durable;
pub mod expr;
pub mod ids;
pub mod job;
pub mod keygroup;
pub mod lifecycle;
pub mod nexmark;
pub mod process;
pub mod secret;
pub mod splitmix;
pub mod storage;
pub mod tls;
pub mod untrusted;

/// Generated from `proto/sluice.proto` (prost messages, tonic services, pbjson serde impls).
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used)]
    include!(concat!(env!("OUT_DIR"), "/sluice.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/sluice.v1.serde.rs"));
}

/// Arrow, as re-exported by DataFusion, so every crate uses the one version DataFusion was built with.
pub use datafusion::arrow;

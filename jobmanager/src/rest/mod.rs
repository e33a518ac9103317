//! The REST API and the web UI (axum).
//!
//! Handlers read the store and the live job views, and *write desired state only*: submitting inserts a
//! job and starts its actor; cancelling records the wish in the store and wakes the actor. They never talk
//! to TaskManagers. Shapes follow Flink's REST API where that is cheap (`/jobs`, `/jobs/{id}`,
//! `/taskmanagers`, ...). Every error is `{"error": "..."}` ([`error::ApiError`]). Every request passes
//! [`auth::guard`] first: a bearer token of the route's scope, and no request another site's page could send.
mod auth;
mod bottleneck;
mod error;
mod handlers;
mod introspection;
mod limits;
mod openapi;
mod submission_rate;
mod tls_listener;
mod ui;
mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use submission_rate::SUBMISSIONS_PER_SECOND_DEFAULT;
pub(crate) use tls_listener::TlsListener;

use crate::Context;

/// The largest job submission accepted, in bytes (a job file, JSON or multipart). Job files are small
/// (kilobytes); a larger body is answered 413 without being read further.
pub const SUBMIT_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
// A job that passes submission must deploy: the DeployTasks request carries its graph (issue 19).
const _: () = assert!(2 * SUBMIT_BODY_BYTES_MAX <= sluice_common::bounds::GRPC_MESSAGE_BYTES_MAX);

/// The routes of the REST API and the web UI.
pub(crate) fn router(ctx: Arc<Context>) -> Router {
    let submissions =
        submission_rate::SubmissionBucket::new(ctx.settings.submissions_per_second, std::time::Instant::now());
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .route("/openapi.json", get(openapi::document))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::prometheus_metrics))
        .route("/jobs", get(handlers::list_jobs))
        .route(
            "/jobs/submit",
            post(handlers::submit_job)
                .layer(DefaultBodyLimit::max(SUBMIT_BODY_BYTES_MAX))
                .layer(middleware::from_fn_with_state(submissions, submission_rate::limit_submissions)),
        )
        .route("/jobs/{job_id}", get(handlers::job_details))
        .route("/jobs/{job_id}/status", get(handlers::job_status))
        .route("/jobs/{job_id}/cancel", post(handlers::cancel_job))
        .route("/jobs/{job_id}/metrics", get(handlers::job_metrics))
        .route("/jobs/{job_id}/checkpoints", get(handlers::job_checkpoints).post(handlers::trigger_checkpoint))
        .route("/jobs/{job_id}/checkpoints/{checkpoint_id}", get(introspection::checkpoint))
        .route("/jobs/{job_id}/plan", get(introspection::plan))
        .route("/jobs/{job_id}/vertices/{vertex_id}", get(introspection::vertex))
        .route("/jobs/{job_id}/exceptions", get(introspection::exceptions))
        .route("/jobs/{job_id}/savepoint", post(handlers::trigger_savepoint))
        .route("/jobs/{job_id}/savepoints/{trigger_id}", get(handlers::savepoint_status))
        .route("/jobs/{job_id}/stop", post(handlers::stop_job))
        .route("/taskmanagers", get(handlers::task_managers))
        .route("/cluster/metrics", get(handlers::cluster_metrics))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(ctx.clone(), handlers::standby_writes))
        .layer(middleware::from_fn_with_state(ctx.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(limits::in_flight(), limits::limit))
        .with_state(ctx)
}

//! Limits on the REST server as a whole (issue 19): how long one request may take and how many may be
//! served at once. Each request passes [`limit`] before the auth guard, so a flood of strangers is bounded
//! as well.
//!
//! Over the concurrency limit a request is answered 503 at once rather than queued: a queue would only move
//! the unbounded wait from the socket into the JobManager. The timeout answers 503 too, and drops the
//! handler's future, which cancels whatever it was awaiting (a body upload, a database query).
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The longest one REST request may take, body upload included. It must leave room for the slowest
/// legitimate handler, a checkpoint or savepoint trigger waiting for its answer
/// ([`super::handlers::CHECKPOINT_TRIGGER_ANSWER_TIMEOUT`]).
pub(crate) const REST_REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
const _: () =
    assert!(REST_REQUEST_TIMEOUT.as_secs() > super::handlers::CHECKPOINT_TRIGGER_ANSWER_TIMEOUT.as_secs() + 10);

/// The most REST requests served at once. The web UI and the CLI make a handful; 256 leaves room for
/// scripts polling many jobs while bounding the memory that concurrent 8 MiB submissions can hold.
pub(crate) const REST_REQUESTS_IN_FLIGHT_MAX: usize = 256;

/// The permits for [`REST_REQUESTS_IN_FLIGHT_MAX`], shared by every request of one router.
pub(crate) type InFlight = std::sync::Arc<tokio::sync::Semaphore>;

/// A fresh set of permits for one router.
pub(crate) fn in_flight() -> InFlight {
    std::sync::Arc::new(tokio::sync::Semaphore::new(REST_REQUESTS_IN_FLIGHT_MAX))
}

/// Serves `request` within [`REST_REQUEST_TIMEOUT`] if fewer than [`REST_REQUESTS_IN_FLIGHT_MAX`] are
/// being served, else answers 503.
pub(crate) async fn limit(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the JobManager is serving {REST_REQUESTS_IN_FLIGHT_MAX} requests already; retry shortly"),
        )
        .into_response();
    };
    match tokio::time::timeout(REST_REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s", REST_REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

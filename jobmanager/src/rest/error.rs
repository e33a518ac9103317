//! REST errors: every failure is a JSON body `{"error": "..."}` with a status that tells the client what
//! to do (400/413: fix the request; 404: no such thing; 409: not in this state; 503: retry later).
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

/// An error answered to a REST client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// For rejected job files: every problem, one per element (also joined into `message`).
    problems: Option<Vec<String>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<&'a [String]>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), problems: None }
    }

    /// 400 for a job file with these problems.
    pub fn invalid_job(problems: &[String]) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: problems.join("\n"), problems: Some(problems.to_vec()) }
    }

    /// 404 for an unknown job.
    pub fn job_not_found(job_id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("job {job_id} not found"))
    }

    /// 500 for a bug or a corrupt record.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "REST request failed on the metadata store");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: &self.message, problems: self.problems.as_deref() };
        (self.status, Json(body)).into_response()
    }
}

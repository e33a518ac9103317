//! A rate limit on `POST /jobs/submit` (issue 19): one token bucket per JobManager.
//!
//! Each submission validates a job file (up to 8 MiB, on a blocking thread), may open a savepoint's
//! metadata, inserts a row and starts an actor. The cap on unfinished jobs bounds how many live at once;
//! this bounds how fast they may come, so a script submitting in a loop (jobs that fail at once leave the
//! cap free) cannot keep the JobManager validating and writing rows at full speed. A submission over the
//! rate is answered 429 with `Retry-After` (whole seconds until a token is back), before its body is read.
//!
//! The bucket holds at most `burst` tokens and gains `rate` per second; a submission takes one. Time is
//! passed in, so the arithmetic is tested without waiting.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The default of `--submissions-per-second`: far above what people and CI pipelines submit, low enough
/// that a loop cannot turn the JobManager into a validation service.
pub const SUBMISSIONS_PER_SECOND_DEFAULT: u32 = 10;
/// The bucket holds this many seconds' worth of tokens: a burst of submissions (a deployment script
/// starting its jobs) passes whole.
const BURST_SECONDS: u32 = 3;

/// The bucket; shared by every request of one router.
#[derive(Debug)]
pub(crate) struct SubmissionBucket {
    /// Tokens gained per second.
    rate: f64,
    /// The most tokens held.
    burst: f64,
    /// Tokens held, as of `updated`.
    state: Mutex<(f64, Instant)>,
}

impl SubmissionBucket {
    /// A full bucket for `per_second` submissions a second (at least 1).
    pub(crate) fn new(per_second: u32, now: Instant) -> Arc<Self> {
        let rate = f64::from(per_second.max(1));
        let burst = rate * f64::from(BURST_SECONDS);
        Arc::new(SubmissionBucket { rate, burst, state: Mutex::new((burst, now)) })
    }

    /// Takes a token at `now`: `Ok` when there was one, else how long until there is.
    pub(crate) fn take(&self, now: Instant) -> Result<(), Duration> {
        // Held only for this arithmetic, never across an await.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, updated) = *state;
        let refilled = (tokens + now.saturating_duration_since(updated).as_secs_f64() * self.rate).min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            Ok(())
        } else {
            *state = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

/// Passes a submission when the bucket has a token, else answers 429 with `Retry-After`.
pub(crate) async fn limit_submissions(
    State(bucket): State<Arc<SubmissionBucket>>,
    request: Request,
    next: Next,
) -> Response {
    match bucket.take(Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "more than {} submissions a second (--submissions-per-second / SUBMISSIONS_PER_SECOND); \
                     retry in {seconds} s",
                    bucket.rate
                ),
            )
            .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    #[test]
    fn a_bucket_passes_its_burst_then_one_submission_per_token() {
        let start = Instant::now();
        let bucket = SubmissionBucket::new(2, start);
        for n in 0..2 * BURST_SECONDS {
            assert_eq!(bucket.take(start), Ok(()), "submission {n} of the burst");
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500), "one token comes back every 1/rate s");
        assert!(bucket.take(start + Duration::from_millis(400)).is_err());
        assert_eq!(bucket.take(start + Duration::from_millis(500)), Ok(()));
        // A long quiet spell refills to the burst, not beyond.
        let later = start + Duration::from_secs(3600);
        for _ in 0..2 * BURST_SECONDS {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[tokio::test]
    async fn a_submission_over_the_rate_is_answered_429_with_retry_after() {
        let bucket = SubmissionBucket::new(1, Instant::now());
        let app = Router::new()
            .route("/jobs/submit", post(|| async { "taken" }))
            .layer(axum::middleware::from_fn_with_state(bucket, limit_submissions));
        let submit = || Request::post("/jobs/submit").body(axum::body::Body::empty()).unwrap_or_default();
        for _ in 0..BURST_SECONDS {
            let answer = app.clone().oneshot(submit()).await.unwrap_or_else(|e| match e {});
            assert_eq!(answer.status(), StatusCode::OK);
        }
        let refused = app.oneshot(submit()).await.unwrap_or_else(|e| match e {});
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after = refused.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok());
        assert_eq!(retry_after, Some("1"));
    }
}

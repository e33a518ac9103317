//! The gate every REST request passes before a handler sees it: a bearer token of the right scope, and no
//! request a web page of another origin could have sent.
//!
//! Tokens travel only in the `Authorization` header, never in cookies, so a page of another site cannot make a
//! browser send one. What such a page *can* send without a token when authentication is off (a form post, a
//! `text/plain` fetch) is refused by the request checks: a request with a body must be JSON or multipart, and a
//! state-changing request whose `Origin` is not this server is refused.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::security::{RestAuth, Scope};
use crate::Context;

/// Why a request was refused; the reason is the `reason` label of `sluice_requests_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Authorization: Bearer` header.
    NoToken,
    /// A token that is not one of ours.
    UnknownToken,
    /// A token whose scope does not cover the route.
    Scope,
    /// A body that is neither JSON nor multipart.
    ContentType,
    /// A state-changing request from a page of another origin.
    CrossOrigin,
    /// With authentication off, a request addressed to a name other than loopback (DNS rebinding: a page of
    /// another site whose name now resolves to 127.0.0.1).
    Host,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::UnknownToken => "unknown_token",
            Refusal::Scope => "scope",
            Refusal::ContentType => "content_type",
            Refusal::CrossOrigin => "cross_origin",
            Refusal::Host => "host",
        }
    }

    fn into_response(self, needed: Option<Scope>) -> Response {
        let (status, message) = match self {
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                "this route needs a token: send 'Authorization: Bearer <token>' (a local cluster writes its admin \
                 token to <data-dir>/admin.token; sluice reads SLUICE_TOKEN or SLUICE_TOKEN_FILE)"
                    .to_string(),
            ),
            Refusal::UnknownToken => (StatusCode::UNAUTHORIZED, "the token is not one this JobManager accepts".into()),
            Refusal::Scope => (
                StatusCode::FORBIDDEN,
                format!("this route needs a token of scope '{}'", needed.unwrap_or(Scope::Admin).as_str()),
            ),
            Refusal::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request body must be application/json or multipart/form-data".into(),
            ),
            Refusal::CrossOrigin => {
                (StatusCode::FORBIDDEN, "a state-changing request from a page of another origin is refused".into())
            }
            Refusal::Host => (
                StatusCode::FORBIDDEN,
                "without authentication this JobManager answers only requests addressed to a loopback name".into(),
            ),
        };
        let mut response = ApiError::new(status, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
        }
        response
    }
}

/// The middleware: passes the request on, or answers the refusal and counts it.
pub(super) async fn guard(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let needed = needed_scope(request.method(), request.uri().path(), ctx.rest_auth.as_deref());
    let host_refused = ctx.rest_auth.is_none() && !ctx.rest_insecure && !is_loopback_host(request.headers());
    let checked = if host_refused {
        Err(Refusal::Host)
    } else {
        check(ctx.rest_auth.as_deref(), needed, request.method(), request.headers())
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            ctx.metrics.requests_refused.with_label_values(&["rest", refusal.reason()]).inc();
            tracing::debug!(method = %request.method(), path = request.uri().path(), reason = refusal.reason(),
                "REST request refused");
            refusal.into_response(needed)
        }
    }
}

/// The scope a route needs: none for the health check and the web page's files (they hold no data; the page asks
/// for a token), `read` for every GET, `admin` for anything else.
fn needed_scope(method: &Method, path: &str, auth: Option<&RestAuth>) -> Option<Scope> {
    match path {
        "/health" | "/ready" | "/" | "/openapi.json" => None,
        _ if path.starts_with("/ui/") && (method == Method::GET || method == Method::HEAD) => None,
        "/metrics" if auth.is_some_and(|auth| auth.metrics_open) => None,
        _ if method == Method::GET || method == Method::HEAD => Some(Scope::Read),
        _ => Some(Scope::Admin),
    }
}

/// Checks the token, then what a page of another origin could send.
fn check(auth: Option<&RestAuth>, needed: Option<Scope>, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if let (Some(auth), Some(needed)) = (auth, needed) {
        let token = bearer_token(headers).ok_or(Refusal::NoToken)?;
        let scope = auth.scope_of(token).ok_or(Refusal::UnknownToken)?;
        if scope < needed {
            return Err(Refusal::Scope);
        }
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    if !same_origin(headers) {
        return Err(Refusal::CrossOrigin);
    }
    if has_body(headers) && !is_json_or_multipart(headers) {
        return Err(Refusal::ContentType);
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Whether the request carries no `Origin`, or one naming this server (the `Host` it was sent to). Browsers
/// send `Origin` on every cross-origin POST; command-line clients send none.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(header::HOST).map(|h| h.to_str())) else {
        return false;
    };
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest).trim_end_matches('/');
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Whether the `Host` header names loopback: `localhost`, `127.*` or `[::1]`, with any port.
fn is_loopback_host(headers: &HeaderMap) -> bool {
    let Some(Ok(host)) = headers.get(header::HOST).map(|h| h.to_str()) else { return false };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request has a body (a non-zero length, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

fn is_json_or_multipart(headers: &HeaderMap) -> bool {
    let Some(Ok(content_type)) = headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) else { return false };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "multipart/form-data"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}")));
        }
        map
    }

    #[test]
    fn routes_need_read_for_gets_and_admin_for_the_rest() {
        assert_eq!(needed_scope(&Method::GET, "/health", None), None);
        assert_eq!(needed_scope(&Method::GET, "/", None), None);
        assert_eq!(needed_scope(&Method::GET, "/jobs", None), Some(Scope::Read));
        assert_eq!(needed_scope(&Method::GET, "/metrics", None), Some(Scope::Read));
        assert_eq!(needed_scope(&Method::POST, "/jobs/submit", None), Some(Scope::Admin));
        assert_eq!(needed_scope(&Method::OPTIONS, "/jobs", None), Some(Scope::Admin));
        assert_eq!(needed_scope(&Method::POST, "/health", None), None, "health answers 405, not 401");
    }

    #[test]
    fn only_loopback_names_count_as_loopback_hosts() {
        let host = |value: &str| is_loopback_host(&headers(&[(header::HOST, value)]));
        assert!(host("127.0.0.1:8081") && host("localhost:8081") && host("LOCALHOST") && host("[::1]:8081"));
        assert!(host("127.1.2.3"));
        assert!(!host("evil.example:8081") && !host("10.0.0.1:8081") && !host("localhost.evil.example"));
        assert!(!is_loopback_host(&HeaderMap::new()), "no Host header");
    }

    #[test]
    fn a_bearer_token_is_read_in_any_case_and_nothing_else_counts() {
        assert_eq!(bearer_token(&headers(&[(header::AUTHORIZATION, "Bearer abc")])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[(header::AUTHORIZATION, "bearer  abc ")])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[(header::AUTHORIZATION, "Basic abc")])), None);
        assert_eq!(bearer_token(&headers(&[(header::AUTHORIZATION, "Bearer ")])), None);
        assert_eq!(bearer_token(&headers(&[(header::COOKIE, "token=abc")])), None);
    }

    #[test]
    fn pages_of_other_origins_and_bodies_that_are_not_json_are_refused_even_without_auth() {
        let post =
            |pairs: &[(header::HeaderName, &str)]| check(None, Some(Scope::Admin), &Method::POST, &headers(pairs));
        let host = (header::HOST, "127.0.0.1:8081");
        let json = (header::CONTENT_TYPE, "application/json; charset=utf-8");
        let length = (header::CONTENT_LENGTH, "12");
        assert_eq!(post(&[host.clone(), json.clone(), length.clone()]), Ok(()));
        assert_eq!(
            post(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:8081"), json.clone(), length.clone()]),
            Ok(())
        );
        assert_eq!(
            post(&[host.clone(), (header::ORIGIN, "https://evil.example"), json.clone(), length.clone()]),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(post(&[host.clone(), (header::ORIGIN, "null"), length.clone()]), Err(Refusal::CrossOrigin));
        assert_eq!(
            post(&[host.clone(), (header::CONTENT_TYPE, "text/plain"), length.clone()]),
            Err(Refusal::ContentType)
        );
        assert_eq!(post(&[host.clone(), length]), Err(Refusal::ContentType), "a body without a type");
        assert_eq!(post(&[host.clone(), (header::CONTENT_LENGTH, "0")]), Ok(()), "an empty POST (cancel)");
        assert_eq!(
            post(&[
                host,
                (header::CONTENT_TYPE, "multipart/form-data; boundary=x"),
                (header::TRANSFER_ENCODING, "chunked")
            ]),
            Ok(())
        );
    }
}

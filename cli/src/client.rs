//! The HTTP client the commands share: one JobManager base URL, bounded timeouts and answer sizes, and
//! errors that say what went wrong in the words the server used.
//!
//! Every REST error of the JobManager is a JSON body `{"error": "..."}` (a rejected job file adds
//! `"problems": [...]`, one per line of `error`). [`RequestError::Server`] keeps that message, so the
//! user reads the server's own explanation rather than just a status code. Connection failures are a
//! separate variant because `sluice wait` retries them and nothing else.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long to wait for a TCP connection to the JobManager. Past it the request fails as
/// [`RequestError::Unreachable`]; a JobManager on a reachable host answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take in all, answer included. Past it the request fails as unreachable:
/// every REST call of the JobManager is a read of its store or a write of a wish, never a long job.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read, in bytes. A longer one fails as [`RequestError::BadAnswer`] instead of
/// growing without limit (the largest real answer, a job's metrics, is kilobytes).
const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a request to the JobManager failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer: connection refused, timed out, reset. Retrying may help.
    #[error(
        "cannot reach the JobManager at {url} (is it running? point --jobmanager or SLUICE_JOBMANAGER at its \
         REST address)"
    )]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The transport's error.
        #[source]
        source: reqwest::Error,
    },
    /// The JobManager answered with an error status.
    #[error("{method} {url} answered {status}: {message}")]
    Server {
        /// The method requested.
        method: Method,
        /// The URL requested.
        url: String,
        /// The answer's status.
        status: StatusCode,
        /// The server's `error` message, or the start of the body when it is not the usual JSON.
        message: String,
    },
    /// The JobManager answered, but not with JSON the CLI can read.
    #[error("{method} {url}: the answer cannot be read: {detail}")]
    BadAnswer {
        /// The method requested.
        method: Method,
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// A client of one JobManager's REST API.
pub struct Client {
    /// `http://host:port`, without a trailing slash.
    base_url: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the JobManager at `address` (`http://host:port`, `https://host:port`, or `host:port`),
    /// sending `token` as `Authorization: Bearer` with every request and trusting the CA in `ca_file` too.
    pub fn new(address: &str, token: Option<&str>, ca_file: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{} holds no PEM certificate: {e}", path.display()))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sluice-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { base_url: base_url(address), http })
    }

    /// The JobManager's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET path`, answered with JSON.
    pub async fn get(&self, path: &str) -> Result<Value, RequestError> {
        self.send(Method::GET, path, |request| request).await
    }

    /// `POST path` with an empty body, answered with JSON.
    pub async fn post(&self, path: &str) -> Result<Value, RequestError> {
        self.send(Method::POST, path, |request| request).await
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, RequestError> {
        self.send(Method::POST, path, |request| request.json(body)).await
    }

    /// `POST path` with a multipart form, answered with JSON.
    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> Result<Value, RequestError> {
        self.send(Method::POST, path, |request| request.multipart(form)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, RequestError> {
        let url = format!("{}{path}", self.base_url);
        let request = build(self.http.request(method.clone(), &url));
        let mut response =
            request.send().await.map_err(|source| RequestError::Unreachable { url: url.clone(), source })?;
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > ANSWER_BYTES_MAX => {
                    let detail = format!("it is longer than {ANSWER_BYTES_MAX} bytes");
                    return Err(RequestError::BadAnswer { method, url, detail });
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(source) => return Err(RequestError::Unreachable { url, source }),
            }
        }
        if !status.is_success() {
            return Err(RequestError::Server { method, url, status, message: error_message(&body) });
        }
        serde_json::from_slice(&body).map_err(|e| RequestError::BadAnswer {
            method,
            url,
            detail: format!("not JSON ({e}): {}", excerpt(&body)),
        })
    }
}

/// Decodes a typed view of an answer the CLI has already received as JSON.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("the JobManager's answer to {what} has an unexpected shape: {e}"))
}

/// Normalizes a user-given address: adds `http://` when no scheme is given and drops trailing slashes.
fn base_url(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// The message of an error answer: the `error` field of its JSON, or else the start of its text.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => match fields.get("error") {
            Some(Value::String(message)) => message.clone(),
            _ => excerpt(body),
        },
        _ if body.is_empty() => "(no message)".to_string(),
        _ => excerpt(body),
    }
}

/// The characters of a body shown in a message, at most.
const EXCERPT_CHARS_MAX: usize = 500;

/// The start of a body as text, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_scheme_gets_http_and_loses_trailing_slashes() {
        assert_eq!(base_url("127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(base_url("http://jm:8081/"), "http://jm:8081");
        assert_eq!(base_url(" https://jm.example.com// "), "https://jm.example.com");
    }

    #[test]
    fn the_error_message_is_the_servers_error_field() {
        let body =
            br#"{"error":"vertex 'a': bad\nedge a -> b: worse","problems":["vertex 'a': bad","edge a -> b: worse"]}"#;
        assert_eq!(error_message(body), "vertex 'a': bad\nedge a -> b: worse");
    }

    #[test]
    fn an_error_body_that_is_not_the_usual_json_is_shown_as_text_and_cut() {
        assert_eq!(error_message(b"Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(b""), "(no message)");
        assert_eq!(error_message(br#"{"detail":"x"}"#), r#"{"detail":"x"}"#);
        let long = "é".repeat(EXCERPT_CHARS_MAX + 10);
        let shown = error_message(long.as_bytes());
        assert_eq!(shown.chars().count(), EXCERPT_CHARS_MAX + 3, "cut at a character boundary, plus '...'");
    }
}

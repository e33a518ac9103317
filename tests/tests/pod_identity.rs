//! EKS Pod Identity without EKS: the object-store client takes its credentials from the container credentials
//! endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, with the bearer token in `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`),
//! which is what the EKS Pod Identity agent injects into a pod.
//!
//! Method: a small HTTP server of the test's own answers the endpoint as the agent does (the credentials JSON,
//! only to a request carrying the token), and an s3s-fs server accepts exactly those credentials. The cluster's
//! processes get the endpoint and the token file and no key at all; a checkpointed job must complete
//! checkpoints into the bucket, and the endpoint must have been asked, with the token, by the JobManager and
//! the TaskManagers. The JobManager's start-up log says which credentials it used.
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::s3::{S3Server, BUCKET, CREDENTIALS};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::windows::checkpointed_job_on;
use sluice_tests::{Cluster, ClusterSpec};

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the endpoint waits for a request's bytes.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of one request the endpoint reads (a GET with a few headers).
const REQUEST_BYTES_MAX: usize = 16 * 1024;

/// Serves the container credentials endpoint on a loopback port, in a thread of its own (it lives as long as
/// the test process). Counts the requests that carried `token`, and refuses the others with 403.
fn credentials_endpoint(token: &str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let served = Arc::new(AtomicUsize::new(0));
    let (count, token) = (served.clone(), token.to_string());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT));
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_BYTES_MAX {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let authorized = text.lines().any(|line| line.trim() == format!("authorization: {token}"));
            let response = if authorized {
                count.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    r#"{{"AccessKeyId":"{CREDENTIALS}","SecretAccessKey":"{CREDENTIALS}","Token":"pod-identity-session","Expiration":"2100-01-01T00:00:00Z"}}"#
                );
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (format!("http://{address}/v1/credentials"), served)
}

#[test]
fn checkpoints_reach_s3_with_credentials_from_the_pod_identity_endpoint() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let token = sluice_common::secret::generate();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, &token).unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, served) = credentials_endpoint(&token);
    let s3 = S3Server::start_in_temp_dir().unwrap_or_else(|e| panic!("{e:#}"));
    // The S3 server's address and region, and no key: those come from the endpoint.
    let env: Vec<(String, String)> = s3.env().into_iter().filter(|(k, _)| !k.contains("ACCESS_KEY")).collect();
    let spec = ClusterSpec::default()
        .env("S3_CHECKPOINT_PATH", format!("s3://{BUCKET}/pod-identity"))
        .envs(env)
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &endpoint)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.display().to_string());
    let cluster = Cluster::start(spec);
    let log = std::fs::read_to_string(cluster.dir().join("jobmanager.log")).unwrap_or_default();
    assert!(
        log.contains("checkpoint storage works") && log.contains("container credentials"),
        "the JobManager probed the bucket with the container credentials:\n{log}"
    );

    let sink = cluster.dir().join("output");
    let id = cluster.submit_json(&checkpointed_job_on("HEAP", &sink));
    let completed = poll_until("two checkpoints in S3", TIMEOUT, || {
        let answer = cluster.get(&format!("/jobs/{}/checkpoints", id.0));
        let completed = answer["counts"]["completed"].as_u64().unwrap_or(0);
        Ok(if completed >= 2 { Progress::Ready(answer) } else { Progress::Pending(answer.to_string()) })
    });
    let completed = completed.unwrap_or_else(|e| panic!("{e:#}"));
    let location = completed["latest"]["completed"]["location"].as_str().unwrap_or_default().to_string();
    assert!(location.starts_with("s3://"), "{completed}");
    let checkpoint = s3.local_path(&location);
    assert!(checkpoint.join("_metadata").is_file(), "{} is in the bucket (written by the JobManager)", location);
    // The tasks' snapshots are in it too: the TaskManagers wrote them, which S3 allowed only with the credentials.
    let snapshots = std::fs::read_dir(&checkpoint)
        .unwrap_or_else(|e| panic!("{}: {e}", checkpoint.display()))
        .flatten()
        .filter(|f| f.file_name() != "_metadata")
        .count();
    assert!(snapshots > 0, "the TaskManagers wrote their snapshots into {location}");
    assert!(served.load(Ordering::SeqCst) >= 1, "the endpoint was asked, with the token");
    let cancelled = cluster.cancel(&id);
    assert!(cancelled.is_object(), "{cancelled}");
}

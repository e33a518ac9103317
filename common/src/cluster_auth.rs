//! Membership of a cluster: the cluster secret, shared by the JobManager and its TaskManagers.
//!
//! Every gRPC call between them carries `authorization: Bearer <secret>`; the data port's hello carries an
//! HMAC-SHA256 of the two TaskManager ids under the secret, so the secret itself never crosses the data port.
//! A process without the secret cannot register, heartbeat, report, acknowledge, deploy, trigger, notify, or
//! open a data channel. Within the cluster, identities are bound by sessions: each registration carries a
//! random session the TaskManager chose ([`SESSION_METADATA`]), which it sends with every later call and which
//! the JobManager sends with every call to that TaskManager, so one TaskManager can neither speak for another
//! nor call another's RPC port. See `docs/security.md`.
//!
//! The secret file may hold several secrets (one a line) during a rotation: calls and hellos are signed with
//! the first and accepted with any.
use std::path::{Path, PathBuf};

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::secret::{self, SecretError, SecretFile, SecretSet};

/// The file a JobManager generates the cluster secret in, under its data directory.
pub const CLUSTER_SECRET_FILE_NAME: &str = "cluster.secret";

/// The gRPC metadata key of a TaskManager's session.
pub const SESSION_METADATA: &str = "x-sluice-session";

/// The gRPC metadata key of the leader epoch every JobManager call to a TaskManager carries (decimal): a
/// TaskManager refuses a call with an older epoch than the newest it has seen, so a JobManager that lost its
/// leadership (and has not noticed yet) cannot command it.
pub const LEADER_EPOCH_METADATA: &str = "x-sluice-leader-epoch";

/// What the data port's hello proof is computed over, before the two ids.
const HELLO_PROOF_CONTEXT: &[u8] = b"sluice data-port hello v2";

/// Bytes of a hello proof (HMAC-SHA256).
pub const HELLO_PROOF_BYTES: usize = 32;

/// Cluster authentication settings, shared by both binaries.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterAuthArgs {
    /// How the JobManager and TaskManagers prove they belong to the cluster: `secret` (a shared secret, the
    /// default) or `none` (anyone who reaches a port is a member; only on a network nobody else can reach).
    #[arg(long, env = "CLUSTER_AUTH", default_value = "secret", value_parser = ["secret", "none"])]
    pub cluster_auth: String,

    /// The cluster secret file (one secret a line; several during a rotation). The JobManager's default is
    /// `<data-dir>/cluster.secret`, generated (mode 0600) when missing; a TaskManager must be given the same
    /// file (a local cluster: the JobManager's; Kubernetes: a mounted Secret).
    #[arg(long, env = "CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

/// Why a call was refused; the reason is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The call carried no cluster secret.
    NoSecret,
    /// The call carried a secret that is not the cluster's.
    WrongSecret,
}

impl Refusal {
    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoSecret => "no_secret",
            Refusal::WrongSecret => "wrong_secret",
        }
    }

    /// The gRPC status answered.
    pub fn status(self) -> tonic::Status {
        match self {
            Refusal::NoSecret => tonic::Status::unauthenticated("this call needs the cluster secret"),
            Refusal::WrongSecret => tonic::Status::unauthenticated("the cluster secret is wrong"),
        }
    }
}

/// A process's cluster credentials: the secrets, or nothing when cluster authentication is off.
#[derive(Debug)]
pub struct ClusterCredentials {
    secrets: Option<SecretFile>,
}

impl ClusterCredentials {
    /// No authentication (`--cluster-auth none`, and unit tests).
    pub fn none() -> ClusterCredentials {
        ClusterCredentials { secrets: None }
    }

    /// The JobManager's credentials: the configured file, or `<data_dir>/cluster.secret`, generated when
    /// missing.
    pub fn for_job_manager(args: &ClusterAuthArgs, data_dir: &Path) -> Result<ClusterCredentials, SecretError> {
        if args.cluster_auth == "none" {
            tracing::warn!(
                "cluster authentication is off (--cluster-auth none): anyone who reaches a port is a member"
            );
            return Ok(ClusterCredentials::none());
        }
        let path = match &args.cluster_secret_file {
            Some(path) => path.clone(),
            None => {
                let path = data_dir.join(CLUSTER_SECRET_FILE_NAME);
                if secret::read_or_generate(&path)?.1 {
                    tracing::info!(path = %path.display(), "generated the cluster secret; give TaskManagers this \
                        file (--cluster-secret-file)");
                }
                path
            }
        };
        Ok(ClusterCredentials { secrets: Some(SecretFile::open(&path)?) })
    }

    /// A TaskManager's credentials: the configured file, which must exist when authentication is on.
    pub fn for_task_manager(args: &ClusterAuthArgs) -> Result<ClusterCredentials, SecretError> {
        if args.cluster_auth == "none" {
            tracing::warn!("cluster authentication is off (--cluster-auth none)");
            return Ok(ClusterCredentials::none());
        }
        let Some(path) = &args.cluster_secret_file else {
            return Err(SecretError::Invalid {
                what: "the cluster secret".into(),
                detail: "none given: pass --cluster-secret-file (CLUSTER_SECRET_FILE) with the JobManager's \
                         secret (a local JobManager writes it to <its data dir>/cluster.secret), or \
                         --cluster-auth none on a network nobody else can reach"
                    .into(),
            });
        };
        Ok(ClusterCredentials { secrets: Some(SecretFile::open(path)?) })
    }

    /// Whether calls are authenticated.
    pub fn is_enabled(&self) -> bool {
        self.secrets.is_some()
    }

    fn current(&self) -> Option<SecretSet> {
        self.secrets.as_ref().map(SecretFile::current)
    }

    /// Adds the secret to an outgoing call's metadata (nothing when authentication is off).
    pub fn authorize(&self, metadata: &mut MetadataMap) {
        let Some(secret) = self.current().and_then(|set| set.first().map(str::to_string)) else { return };
        // A secret from `secret::parse` is printable and without white space, so it is a valid header value.
        if let Ok(value) = MetadataValue::try_from(format!("Bearer {secret}")) {
            metadata.insert("authorization", value);
        }
    }

    /// Checks an incoming call's secret.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Refusal> {
        let Some(secrets) = self.current() else { return Ok(()) };
        let offered = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Refusal::NoSecret)?;
        if secrets.matches(offered.trim()) {
            Ok(())
        } else {
            Err(Refusal::WrongSecret)
        }
    }

    /// The proof a data-port hello from `from` to `to` carries (empty when authentication is off).
    pub fn hello_proof(&self, from: &str, to: &str) -> Vec<u8> {
        match self.current().and_then(|set| set.first().map(str::to_string)) {
            Some(secret) => hello_tag(&secret, from, to).as_ref().to_vec(),
            None => Vec::new(),
        }
    }

    /// Whether `proof` is a hello proof from `from` to `to` under one of the cluster's secrets (always true
    /// when authentication is off).
    pub fn verify_hello(&self, from: &str, to: &str, proof: &[u8]) -> bool {
        let Some(secrets) = self.current() else { return true };
        let message = hello_message(from, to);
        let verified = secrets.iter().any(|secret| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            ring::hmac::verify(&key, &message, proof).is_ok()
        });
        verified
    }
}

fn hello_message(from: &str, to: &str) -> Vec<u8> {
    [HELLO_PROOF_CONTEXT, b"\0", from.as_bytes(), b"\0", to.as_bytes()].concat()
}

fn hello_tag(secret: &str, from: &str, to: &str) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, &hello_message(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn credentials(dir: &Path, text: &str) -> Result<ClusterCredentials, SecretError> {
        let path = dir.join("secret");
        std::fs::write(&path, text).map_err(|source| SecretError::Unwritable { path: path.clone(), source })?;
        let args = ClusterAuthArgs { cluster_auth: "secret".into(), cluster_secret_file: Some(path) };
        ClusterCredentials::for_task_manager(&args)
    }

    #[test]
    fn a_call_is_accepted_with_the_secret_only() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ours = credentials(dir.path(), &format!("{}\n", "s".repeat(32)))?;
        let mut metadata = MetadataMap::new();
        assert_eq!(ours.check(&metadata), Err(Refusal::NoSecret));
        ours.authorize(&mut metadata);
        assert_eq!(ours.check(&metadata), Ok(()));
        let other_dir = tempfile::tempdir()?;
        let theirs = credentials(other_dir.path(), &format!("{}\n", "t".repeat(32)))?;
        assert_eq!(theirs.check(&metadata), Err(Refusal::WrongSecret));
        assert_eq!(ClusterCredentials::none().check(&MetadataMap::new()), Ok(()));
        Ok(())
    }

    #[test]
    fn a_hello_proof_binds_both_ids_and_survives_a_rotation() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let before = credentials(dir.path(), &format!("{old}\n"))?;
        let proof = before.hello_proof("tm-a", "tm-b");
        assert_eq!(proof.len(), HELLO_PROOF_BYTES);
        assert!(before.verify_hello("tm-a", "tm-b", &proof));
        assert!(!before.verify_hello("tm-b", "tm-a", &proof), "the direction counts");
        assert!(!before.verify_hello("tm-a", "tm-c", &proof), "the receiver counts");
        assert!(!before.verify_hello("tm-a", "tm-b", &[]));
        let other_dir = tempfile::tempdir()?;
        let during = credentials(other_dir.path(), &format!("{new}\n{old}\n"))?;
        assert!(during.verify_hello("tm-a", "tm-b", &proof), "the old secret is still accepted");
        assert!(!before.verify_hello("tm-a", "tm-b", &during.hello_proof("tm-a", "tm-b")), "signed with the new one");
        Ok(())
    }

    #[test]
    fn a_task_manager_without_a_secret_file_says_what_to_do() {
        let args = ClusterAuthArgs { cluster_auth: "secret".into(), cluster_secret_file: None };
        let error = ClusterCredentials::for_task_manager(&args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("--cluster-secret-file"), "{error}");
    }
}

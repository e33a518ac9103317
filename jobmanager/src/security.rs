//! Who may call the JobManager over REST: bearer tokens with a scope, and where it may listen without them.
//!
//! Two scopes: `read` (GET routes, and `/metrics` unless it is opened) and `admin` (everything). Tokens come
//! from the environment (`ADMIN_TOKENS`, `READ_TOKENS`) or from files, one token a line, re-read when they change ([`sluice_common::secret::SecretFile`]), so a token
//! is rotated by adding the new one, moving the clients, and removing the old one. With no admin token file
//! configured, the JobManager generates one in `<data-dir>/admin.token` (mode 0600) on first start and logs
//! where; `sluice`, the scripts and the tests read it from there. See `docs/security.md`.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice_common::secret::{self, SecretFile, SecretSet};

/// The file a JobManager generates its admin token in, under its data directory.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";

/// REST authentication settings (flattened into [`crate::JobManagerConfig`]). Its `Debug` hides the tokens.
#[derive(clap::Args, Clone)]
pub struct RestAuthArgs {
    /// How REST callers prove who they are: `token` (a bearer token: `Authorization: Bearer <token>`) or
    /// `none` (anyone who reaches the port is admin; a non-loopback address then also needs --insecure).
    #[arg(long, env = "REST_AUTH", default_value = "token", value_parser = ["token", "none"])]
    pub rest_auth: String,

    /// A file of admin tokens, one per line (`#` comments allowed; several lines during a rotation). Default
    /// `<data-dir>/admin.token`, generated (mode 0600) when missing.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// A file of read-only tokens (GET routes and metrics), one per line.
    #[arg(long, env = "READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,

    /// Admin tokens given in the environment (one a line), e.g. a Kubernetes Secret as a variable; with it and no
    /// --admin-token-file, no token file is generated. Prefer the variable to the flag (a flag shows in `ps`).
    #[arg(long, env = "ADMIN_TOKENS", hide_env_values = true)]
    pub admin_tokens: Option<String>,

    /// Read-only tokens given in the environment (one a line).
    #[arg(long, env = "READ_TOKENS", hide_env_values = true)]
    pub read_tokens: Option<String>,

    /// Whether `GET /metrics` needs a token (`read`) or is open to whoever reaches the port (`open`), for a
    /// Prometheus that cannot send one.
    #[arg(long, env = "METRICS_AUTH", default_value = "read", value_parser = ["read", "open"])]
    pub metrics_auth: String,

    /// Allow `--rest-auth none` on an address other than loopback. Anyone who reaches the port then owns the
    /// cluster: only for a network nobody else can reach.
    #[arg(long, env = "INSECURE")]
    pub insecure: bool,
}

impl std::fmt::Debug for RestAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |tokens: &Option<String>| tokens.as_ref().map(|_| "***");
        f.debug_struct("RestAuthArgs")
            .field("rest_auth", &self.rest_auth)
            .field("admin_token_file", &self.admin_token_file)
            .field("read_token_file", &self.read_token_file)
            .field("admin_tokens", &hidden(&self.admin_tokens))
            .field("read_tokens", &hidden(&self.read_tokens))
            .field("metrics_auth", &self.metrics_auth)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET routes and metrics.
    Read,
    /// Everything: submit, cancel, stop, savepoints.
    Admin,
}

impl Scope {
    /// The scope's name, as documented.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// The tokens of one scope: from a file (re-read on change), from the environment, or both.
#[derive(Debug, Default)]
struct Tokens {
    file: Option<SecretFile>,
    fixed: SecretSet,
}

impl Tokens {
    fn new(file: Option<SecretFile>, fixed: Option<&str>, what: &str) -> anyhow::Result<Tokens> {
        let fixed = match fixed {
            Some(text) => SecretSet::new(secret::parse(text, what)?),
            None => SecretSet::default(),
        };
        Ok(Tokens { file, fixed })
    }

    fn matches(&self, token: &str) -> bool {
        // Both are compared, so the time does not say where a token came from.
        let from_file = self.file.as_ref().is_some_and(|file| file.current().matches(token));
        self.fixed.matches(token) | from_file
    }
}

/// The tokens a JobManager accepts.
#[derive(Debug)]
pub struct RestAuth {
    admin: Tokens,
    read: Tokens,
    /// `/metrics` needs no token.
    pub metrics_open: bool,
}

impl RestAuth {
    /// The REST authentication `args` configure, with `data_dir` for the generated token; `None` when it is
    /// turned off. A configured token file that cannot be read is an error: the JobManager does not start.
    pub fn from_args(args: &RestAuthArgs, data_dir: &Path) -> anyhow::Result<Option<RestAuth>> {
        if args.rest_auth == "none" {
            tracing::warn!("REST authentication is off (--rest-auth none): whoever reaches the REST port is admin");
            return Ok(None);
        }
        let admin_file = match (&args.admin_token_file, &args.admin_tokens) {
            (Some(path), _) => Some(SecretFile::open(path).context("the admin tokens (--admin-token-file)")?),
            (None, Some(_)) => None,
            (None, None) => {
                let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
                let (_, created) = secret::read_or_generate(&path).context("the generated admin token")?;
                if created {
                    tracing::info!(path = %path.display(), "generated an admin token; clients read it from this file \
                        (sluice: SLUICE_TOKEN_FILE={})", path.display());
                } else {
                    tracing::info!(path = %path.display(), "admin token file");
                }
                Some(SecretFile::open(&path).context("the admin token")?)
            }
        };
        let admin = Tokens::new(admin_file, args.admin_tokens.as_deref(), "ADMIN_TOKENS")?;
        let read_file = match &args.read_token_file {
            Some(path) => Some(SecretFile::open(path).context("the read tokens (--read-token-file)")?),
            None => None,
        };
        let read = Tokens::new(read_file, args.read_tokens.as_deref(), "READ_TOKENS")?;
        Ok(Some(RestAuth { admin, read, metrics_open: args.metrics_auth == "open" }))
    }

    /// The scope of `token`, if it is one of ours.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        if self.admin.matches(token) {
            return Some(Scope::Admin);
        }
        self.read.matches(token).then_some(Scope::Read)
    }
}

/// Refuses to serve REST on a non-loopback address without authentication unless `--insecure` says so.
pub fn check_bind_policy(args: &RestAuthArgs, rest: SocketAddr) -> anyhow::Result<()> {
    if args.rest_auth == "none" && !rest.ip().is_loopback() && !args.insecure {
        anyhow::bail!(
            "refusing to serve REST on {rest} without authentication: anyone who reaches it could run code in the \
             cluster. Keep --rest-auth token (the default), bind 127.0.0.1, or add --insecure if nobody else can \
             reach this network"
        );
    }
    Ok(())
}

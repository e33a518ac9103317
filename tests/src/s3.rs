//! An S3 server of a test's own: `s3s-fs` (crates.io), which serves a directory over the S3 API with each
//! top-level folder a bucket and each object a plain file, so a test can look at what was stored, and stop
//! and start the server (same port, same files) to simulate an outage.
//!
//! The binary is found as `$SLUICE_S3S_FS`, else `s3s-fs` on the PATH, else
//! `$HOME/.cache/sluice/tools/bin/s3s-fs`, where `scripts/test.sh` installs it
//! (`cargo install s3s-fs@0.14.1 --features binary --locked`). The server listens on 127.0.0.1 and a port
//! the test picks, and is killed by its PID when the value is dropped, pass or fail.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::process::{Launch, Process};
use crate::wait::{poll_until, Progress};

/// The access key and secret the server accepts.
pub const CREDENTIALS: &str = "sluice-test";
/// The bucket every server starts with.
pub const BUCKET: &str = "checkpoints";

/// A running (or stopped) S3 server owned by a test.
pub struct S3Server {
    binary: PathBuf,
    root: PathBuf,
    port: u16,
    process: Option<Process>,
    _dir: Option<tempfile::TempDir>,
}

/// The `s3s-fs` binary.
pub fn binary() -> anyhow::Result<PathBuf> {
    crate::binaries::test_tool("s3s-fs", "SLUICE_S3S_FS")
}

impl S3Server {
    /// Starts a server over `root` (created, with the bucket [`BUCKET`]); returns once it accepts connections.
    pub fn start(root: &Path) -> anyhow::Result<S3Server> {
        std::fs::create_dir_all(root.join(BUCKET)).with_context(|| format!("cannot create {}", root.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = S3Server { binary: binary()?, root: root.to_path_buf(), port, process: None, _dir: None };
        server.start_again()?;
        Ok(server)
    }

    /// [`S3Server::start`] over a temporary directory of its own, removed when the value is dropped.
    pub fn start_in_temp_dir() -> anyhow::Result<S3Server> {
        let dir = tempfile::Builder::new().prefix("sluice-test-s3").tempdir()?;
        let mut server = S3Server::start(&dir.path().join("data"))?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Starts the (stopped) server on its port again; returns once it accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let args = vec![
            "--host".to_string(),
            "127.0.0.1".to_string(),
            "--port".to_string(),
            self.port.to_string(),
            "--access-key".to_string(),
            CREDENTIALS.to_string(),
            "--secret-key".to_string(),
            CREDENTIALS.to_string(),
            self.root.display().to_string(),
        ];
        let log_dir = self.root.parent().unwrap_or(&self.root).to_path_buf();
        let process = Process::spawn(Launch {
            name: "s3s-fs",
            program: &self.binary,
            args,
            env: &[],
            cwd: &log_dir,
            log_dir: &log_dir,
        })?;
        self.process = Some(process);
        let address = format!("127.0.0.1:{}", self.port);
        poll_until(
            "the S3 server to accept connections",
            Duration::from_secs(30),
            || match std::net::TcpStream::connect(&address) {
                Ok(_) => Ok(Progress::Ready(())),
                Err(e) => Ok(Progress::Pending(e.to_string())),
            },
        )
    }

    /// Stops the server (SIGKILL): requests fail until [`S3Server::start_again`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory the server serves (a folder per bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The environment a Sluice process needs to use this server (object_store reads these).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", CREDENTIALS.to_string()),
            ("AWS_SECRET_ACCESS_KEY", CREDENTIALS.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The local file (or folder) behind `s3://bucket/key`; panics on another kind of location.
    pub fn local_path(&self, url: &str) -> PathBuf {
        let key = url.strip_prefix("s3://").unwrap_or_else(|| panic!("{url} is not an s3:// location"));
        self.root.join(key)
    }
}

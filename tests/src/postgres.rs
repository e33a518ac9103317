//! A PostgreSQL server of a test's own, for tests that stop and start it while a cluster uses it.
//!
//! `scripts/test.sh` starts one shared server for the suite (`SLUICE_TEST_POSTGRES_URL`); a test that
//! restarts the database must not do that to the others, so it starts its own with `initdb` and `pg_ctl`
//! from the installed PostgreSQL (`/usr/lib/postgresql/<version>/bin`), on 127.0.0.1 and a port it picks,
//! with its data in a temporary directory. As root, the server runs as the `postgres` user (PostgreSQL
//! refuses root). The server is stopped (immediate mode) when the value is dropped, pass or fail.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// A running (or stopped) PostgreSQL server owned by a test.
pub struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Extra `-c` settings for the server (TLS).
    settings: String,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql (scripts/test.sh does)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop().context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

impl PostgresServer {
    /// Creates a cluster with `initdb` and starts it; returns once it accepts connections.
    pub fn start() -> anyhow::Result<PostgresServer> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("sluice-test-pg").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        // The effective user: /proc/self belongs to it.
        let as_postgres = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)?;
        if as_postgres {
            for path in [dir.path(), data.as_path()] {
                let status = Command::new("chown").arg("postgres:postgres").arg(path).status()?;
                if !status.success() {
                    bail!("chown postgres {} failed", path.display());
                }
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = PostgresServer { bin, data, port, as_postgres, settings: String::new(), _dir: dir };
        server
            .run("initdb", &["-D", &server.data_arg(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])?;
        server.start_again()?;
        Ok(server)
    }

    /// Like [`PostgresServer::start`], but the server speaks TLS with `cert` and `key` (PEM) and refuses every TCP
    /// connection that is not encrypted (`hostnossl ... reject`), as a managed database that enforces TLS does.
    pub fn start_with_tls(cert: &Path, key: &Path) -> anyhow::Result<PostgresServer> {
        let mut server = PostgresServer::start()?;
        server.stop()?;
        let (cert_copy, key_copy) = (server.data.join("server.crt"), server.data.join("server.key"));
        std::fs::copy(cert, &cert_copy)?;
        std::fs::copy(key, &key_copy)?;
        std::fs::set_permissions(&key_copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )?;
        if server.as_postgres {
            for path in [&cert_copy, &key_copy] {
                let status = Command::new("chown").arg("postgres:postgres").arg(path).status()?;
                if !status.success() {
                    bail!("chown postgres {} failed", path.display());
                }
            }
        }
        server.settings =
            format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert_copy.display(), key_copy.display());
        server.start_again()?;
        Ok(server)
    }

    fn data_arg(&self) -> String {
        self.data.display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command.args(args).stdin(Stdio::null()).output().with_context(|| tool.to_string())?;
        if !output.status.success() {
            bail!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Starts the (stopped) server; returns once it accepts connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off{}",
            self.port,
            self.data_arg(),
            self.settings
        );
        let log = self.data.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data_arg(), "-l", &log, "-w", "-t", "30", "-o", &options, "start"])
    }

    /// Stops the server (fast mode: connections are closed, nothing is lost).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data_arg(), "-m", "fast", "-w", "-t", "30", "stop"])
    }

    /// The URL of database `postgres` on this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Already stopped is fine; nothing else can be done about a failure here.
        let _ = self.run("pg_ctl", &["-D", &self.data_arg(), "-m", "immediate", "-w", "-t", "30", "stop"]);
    }
}

/// The URL of a new, empty database (named `<prefix>_<random>`) on the suite's shared server
/// (`SLUICE_TEST_POSTGRES_URL`, which `scripts/test.sh` starts). Panics when that is not set.
pub fn fresh_database(prefix: &str) -> String {
    use sqlx::Executor;
    let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    });
    let name = format!("{prefix}_{}", uuid_like());
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let admin = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&admin_url).await;
        let admin = admin.unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
        let create = format!("CREATE DATABASE {name}");
        let done = admin.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(create.clone()))).await;
        done.unwrap_or_else(|e| panic!("{create}: {e}"));
    });
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    format!("{base}/{name}")
}

/// 16 random lower-case hex digits (a valid part of an SQL identifier).
fn uuid_like() -> String {
    format!("{:016x}", rand::random::<u64>())
}

//! TLS (rustls, ring) for the three transports: REST, gRPC between the JobManager and TaskManagers, and the
//! data port between TaskManagers.
//!
//! One setting for all of them: with `--tls on` every listener of the process serves TLS with its certificate
//! and key, and every connection it opens verifies the peer's certificate against the CA file. A plaintext
//! client is refused by a TLS listener (its bytes are not a TLS handshake), so TLS is required once on.
//! `scripts/gen-certs.sh` makes a CA and one certificate for a local cluster (`127.0.0.1`, `localhost`).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The longest certificate or key file read, in bytes (a chain of a few certificates is kilobytes).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// How long a TLS handshake may take before the connection is dropped: a client that connects and says
/// nothing must not hold a handshake slot for long.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS settings, shared by both binaries.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// TLS on every listener and connection of this process (REST, gRPC, data port): `off` or `on`. Every
    /// process of a cluster must agree.
    #[arg(long, env = "TLS", default_value = "off", value_parser = ["off", "on"])]
    pub tls: String,

    /// This process's certificate chain (PEM), presented by its listeners.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of the certificate (PEM).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// The CA certificate(s) (PEM) that peers' certificates must chain to.
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// What `--check-config` finds wrong without reading the files: `--tls on` without one of them.
    pub fn problems(&self) -> Vec<String> {
        if self.tls != "on" {
            return Vec::new();
        }
        let files = [
            (&self.tls_cert_file, "--tls-cert-file (TLS_CERT_FILE)"),
            (&self.tls_key_file, "--tls-key-file (TLS_KEY_FILE)"),
            (&self.tls_ca_file, "--tls-ca-file (TLS_CA_FILE)"),
        ];
        files.iter().filter(|(file, _)| file.is_none()).map(|(_, name)| format!("--tls on needs {name}")).collect()
    }
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting is missing.
    #[error("--tls on needs {0}")]
    Missing(&'static str),
    /// A file cannot be read or holds no usable PEM.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, ...).
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// A process's TLS material, loaded once.
#[derive(Clone)]
pub struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let error = |detail: String| TlsError::File { path: path.to_path_buf(), detail };
    let length = std::fs::metadata(path).map_err(|e| error(e.to_string()))?.len();
    if length > PEM_FILE_BYTES_MAX {
        return Err(error(format!("longer than {PEM_FILE_BYTES_MAX} bytes")));
    }
    std::fs::read(path).map_err(|e| error(e.to_string()))
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |detail: String| TlsError::File { path: path.to_path_buf(), detail };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// The TLS `args` configure; `None` when it is off.
    pub fn from_args(args: &TlsArgs) -> Result<Option<Tls>, TlsError> {
        if args.tls != "on" {
            return Ok(None);
        }
        let cert_path = args.tls_cert_file.as_deref().ok_or(TlsError::Missing("--tls-cert-file"))?;
        let key_path = args.tls_key_file.as_deref().ok_or(TlsError::Missing("--tls-key-file"))?;
        let ca_path = args.tls_ca_file.as_deref().ok_or(TlsError::Missing("--tls-ca-file"))?;
        let (cert_pem, key_pem, ca_pem) = (read_pem(cert_path)?, read_pem(key_path)?, read_pem(ca_path)?);
        Tls::from_pem(cert_pem, key_pem, ca_pem, (cert_path, key_path, ca_path)).map(Some)
    }

    fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        ca_pem: Vec<u8>,
        (cert_path, key_path, ca_path): (&Path, &Path, &Path),
    ) -> Result<Tls, TlsError> {
        let chain = certificates(&cert_pem, cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::File { path: key_path.to_path_buf(), detail: format!("no private key: {e}") })?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&ca_pem, ca_path)? {
            roots.add(ca).map_err(|e| TlsError::File { path: ca_path.to_path_buf(), detail: e.to_string() })?;
        }
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(config)?;
        // This configuration serves REST (HTTP/1.1, what axum speaks here) and the data port (no ALPN); tonic
        // builds its own, with h2, from the same files.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls { server: Arc::new(server), client: Arc::new(client), cert_pem, key_pem, ca_pem })
    }

    /// Accepts TLS on a listener's connections (the data port, REST).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// Opens TLS on a connection to `address` (`host:port`), verifying the peer's certificate for `host`.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The TLS configuration of a tonic server.
    pub fn tonic_server(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        // Bounded: tonic waits for handshakes without a limit unless told one.
        tonic::transport::ServerTlsConfig::new().identity(identity).timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// The TLS configuration of a tonic client calling `address` (`host:port`).
    pub fn tonic_client(&self, address: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name(host_of(address))
    }
}

/// The host of `host:port` (an IPv6 literal keeps no brackets).
pub fn host_of(address: &str) -> String {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let host = match without_scheme.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => without_scheme,
    };
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// The name a certificate must carry for `address`.
pub fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host_of(address)).map_err(|e| TlsError::Config(format!("{address}: {e}")))
}

/// `http` or `https`, as `tls` says, for URLs of the transports.
pub fn scheme(tls: Option<&Tls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_is_what_a_certificate_names() {
        assert_eq!(host_of("127.0.0.1:6123"), "127.0.0.1");
        assert_eq!(host_of("https://jobmanager.sluice.svc:6123"), "jobmanager.sluice.svc");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert!(server_name("127.0.0.1:1").is_ok());
    }

    #[test]
    fn tls_on_without_its_files_says_which_is_missing() {
        let args = TlsArgs { tls: "on".into(), tls_cert_file: None, tls_key_file: None, tls_ca_file: None };
        let error = Tls::from_args(&args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("--tls-cert-file"), "{error}");
        let off = TlsArgs { tls: "off".into(), ..args };
        assert!(matches!(Tls::from_args(&off), Ok(None)));
    }
}

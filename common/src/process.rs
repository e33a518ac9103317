//! What every Sluice binary does the same way at start and at stop.
use std::io::IsTerminal;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `format` is `text` or `json`. Colours only
/// on a terminal, so log files stay plain text.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Returns on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    StopSignals::new().next().await;
}

/// SIGTERM and Ctrl-C (SIGINT), one after another: a process that stops gracefully on the first (a
/// TaskManager drains) stops at once on the second. Listening starts when it is made (inside a runtime), so no
/// signal between two [`StopSignals::next`] calls is missed.
pub struct StopSignals {
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Starts listening. Must be called inside a tokio runtime.
    pub fn new() -> Self {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => StopSignals { terminate: Some(signal) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                StopSignals { terminate: None }
            }
        }
    }

    /// Returns on the next SIGTERM or Ctrl-C.
    pub async fn next(&mut self) {
        match &mut self.terminate {
            Some(terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

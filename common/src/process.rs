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
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Starts listening. Must be called inside a tokio runtime.
    pub fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        StopSignals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Returns on the next SIGTERM or Ctrl-C (never, if neither can be listened for).
    pub async fn next(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                // None: the stream ended, which a signal stream never does while the runtime runs.
                Some(signal) => {
                    let _ = signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.terminate) => {}
            _ = one(&mut self.interrupt) => {}
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

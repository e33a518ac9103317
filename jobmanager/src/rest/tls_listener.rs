//! A TLS listener for axum: TCP connections are accepted at once and their handshakes run in tasks of their
//! own (at most [`PENDING_HANDSHAKES_MAX`] at a time, each bounded by `TLS_HANDSHAKE_TIMEOUT`), so a client
//! that connects and stalls cannot hold up the others.
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_common::tls::TLS_HANDSHAKE_TIMEOUT;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes under way at once; a connection beyond it waits for a slot before its handshake starts.
pub const PENDING_HANDSHAKES_MAX: usize = 64;

/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// Pause after a failed TCP accept (out of file descriptors, ...), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves TLS connections of a bound listener.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `acceptor`.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(TlsListener { ready, local, accept_loop })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(PENDING_HANDSHAKES_MAX));
    // Ends when axum drops the listener (the sender then fails) or the task is aborted.
    while !ready.is_closed() {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a REST connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // The receiver is gone only when the server stops; the connection is dropped with it.
                    let _ = ready.send((tls, address)).await;
                }
                Ok(Err(e)) => tracing::debug!(%address, error = %e, "REST TLS handshake failed"),
                Err(_) => tracing::debug!(%address, "REST TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it never does while the listener lives): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

//! Where the operators' API is served: plain HTTP, or HTTPS with rustls
//! from a certificate chain and key in PEM files.
//!
//! Over TLS, connections are accepted at once and their handshakes run
//! side by side, each for at most [`HANDSHAKE_TIMEOUT`] and at most
//! [`HANDSHAKES`] at a time, so that a client that stalls in its handshake
//! delays no other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::task::AbortOnDropHandle;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many TLS handshakes run at once; further connections wait in the
/// socket's backlog.
pub const HANDSHAKES: usize = 256;

/// The API's certificate and key: it is served over HTTPS.
#[derive(Clone)]
pub struct ApiTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiTls")
    }
}

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {} for the API's TLS: {why}", file.display())]
pub struct TlsError {
    /// The file.
    pub file: PathBuf,
    /// Why (never its contents).
    pub why: String,
}

impl ApiTls {
    /// The certificate chain of `cert` (PEM, the server's certificate
    /// first) and the private key of `key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ApiTls, TlsError> {
        let unusable = |file: &Path, why: String| TlsError {
            file: file.to_owned(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| unusable(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(unusable(cert, "it holds no PEM certificate".to_owned()));
        }
        let private =
            PrivateKeyDer::from_pem_file(key).map_err(|e| unusable(key, e.to_string()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| unusable(key, format!("it does not go with {}: {e}", cert.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiTls {
            config: Arc::new(config),
        })
    }
}

/// Serves `router` on `listener` — over TLS when `tls` is given — until
/// `shutdown` resolves and the connections in progress end.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ApiTls>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls)?, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake
/// succeeded.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDropHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: ApiTls) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES);
        let acceptor = TlsAcceptor::from(tls.config);
        let accepting = tokio::spawn(async move {
            let mut listener = listener;
            let slots = Arc::new(Semaphore::new(HANDSHAKES));
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                // axum's accept: retries what a busy machine makes fail.
                let (tcp, peer) = axum::serve::Listener::accept(&mut listener).await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shaken =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(slot);
                    match shaken {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!(
                            "TLS handshake with {peer} took longer than {}; closed",
                            backstop_core::HumanDuration(HANDSHAKE_TIMEOUT)
                        ),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            _accepting: AbortOnDropHandle::new(accepting),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task holds a sender for as long as this
            // listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

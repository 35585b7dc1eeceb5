//! A TCP proxy that cuts every connection after a number of bytes: the
//! flaky link of a long download, in front of a real server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How much one read moves.
const BUFFER: usize = 256 << 10;

/// A proxy on 127.0.0.1 forwarding to `upstream` and closing each
/// connection once it has carried `cut_every` bytes towards the client
/// (never, for 0). It stops when dropped.
///
/// ```no_run
/// use backstop_faultserver::CutProxy;
///
/// # let nginx: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let proxy = CutProxy::start(nginx, 256 << 20);
/// println!("download from http://{}/file.bin", proxy.addr());
/// println!("{} bytes sent so far", proxy.forwarded());
/// ```
pub struct CutProxy {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl CutProxy {
    /// Starts the proxy on a free port of 127.0.0.1, on its own thread.
    ///
    /// # Panics
    /// When the runtime or the socket cannot be created (test
    /// infrastructure).
    pub fn start(upstream: SocketAddr, cut_every: u64) -> CutProxy {
        Self::start_on("127.0.0.1:0", upstream, cut_every)
    }

    /// Starts the proxy listening on `listen`.
    ///
    /// # Panics
    /// As [`CutProxy::start`].
    pub fn start_on(listen: &str, upstream: SocketAddr, cut_every: u64) -> CutProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = std::net::TcpListener::bind(listen).expect("proxy socket");
        listener.set_nonblocking(true).expect("proxy socket mode");
        let addr = listener.local_addr().expect("proxy address");
        let forwarded = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (total, count) = (Arc::clone(&forwarded), Arc::clone(&connections));
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let total = Arc::clone(&total);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, cut_every, &total).await;
                    }
                });
            }
        });
        CutProxy {
            addr,
            forwarded,
            connections,
            runtime: Some(runtime),
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes carried from the server to clients so far, over every
    /// connection.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Carries one connection both ways until either side closes or the cut.
async fn relay(client: TcpStream, server: TcpStream, cut_every: u64, total: &AtomicU64) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let downstream = async {
        let mut buf = vec![0u8; BUFFER];
        let mut left = if cut_every == 0 { u64::MAX } else { cut_every };
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(BUFFER).min(BUFFER);
            let n = match server_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            total.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
    };
    // Whichever direction ends first ends the connection: both halves are
    // dropped, so the client sees the cut at once.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

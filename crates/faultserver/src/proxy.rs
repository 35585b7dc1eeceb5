//! A TCP proxy in front of a real server, for the faults no real server
//! makes on demand: a connection cut after a number of bytes (the flaky
//! link of a long download), or every connection dropped until the test
//! restores them (a database or a message bus restarting for one client,
//! a machine partitioned away), or an answer swallowed after the server
//! acted on the request (the dropped connection that makes a client retry
//! what was done) — without touching the server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How much one read moves.
const BUFFER: usize = 256 << 10;

/// A proxy on 127.0.0.1 to one upstream address. It stops when dropped.
///
/// ```no_run
/// use backstop_faultserver::Proxy;
///
/// // A database that goes away and comes back, for one client.
/// let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap());
/// let url = format!("postgres://postgres@{}/test", proxy.addr());
/// // ... connect through `url` ...
/// proxy.cut(); // every connection drops; new ones are closed at once
/// proxy.restore(); // connections go through again
///
/// // A link that breaks every 256 MiB of a download.
/// # let nginx: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let flaky = Proxy::cutting(nginx, 256 << 20);
/// println!("download from http://{}/file.bin", flaky.addr());
/// println!("{} bytes sent so far", flaky.forwarded());
/// ```
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: SocketAddr,
    /// Each connection is closed once it has carried this many bytes
    /// towards the client; `u64::MAX` for never.
    cut_every: u64,
    /// Refusing: new connections are closed as soon as accepted.
    refusing: AtomicBool,
    /// Responses still to swallow: the server's first bytes on a
    /// connection close it instead of reaching the client.
    swallow: AtomicU64,
    /// Bumped on every cut; open connections end when it changes.
    generation: watch::Sender<u64>,
    forwarded: AtomicU64,
    /// Bytes carried from clients to the server.
    uploaded: AtomicU64,
    /// When `uploaded` reaches this, the connection carrying that byte is
    /// cut (once); `u64::MAX` for never.
    cut_upload_at: AtomicU64,
    connections: AtomicU64,
    /// Connections closed at once because the proxy was cut.
    refused: AtomicU64,
    open: AtomicUsize,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1, on its
    /// own thread, that carries connections until [`Proxy::cut`].
    ///
    /// # Panics
    /// When the runtime or the socket cannot be created: this is test
    /// infrastructure, and a test cannot go on without it.
    pub fn start(upstream: SocketAddr) -> Proxy {
        Self::start_on("127.0.0.1:0", upstream, 0)
    }

    /// Starts a proxy to `upstream` on a free port of 127.0.0.1 that also
    /// closes each connection once it has carried `cut_every` bytes
    /// towards the client (never, for 0).
    ///
    /// # Panics
    /// As [`Proxy::start`].
    pub fn cutting(upstream: SocketAddr, cut_every: u64) -> Proxy {
        Self::start_on("127.0.0.1:0", upstream, cut_every)
    }

    /// [`Proxy::cutting`], listening on `listen`.
    ///
    /// # Panics
    /// As [`Proxy::start`].
    pub fn start_on(listen: &str, upstream: SocketAddr, cut_every: u64) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = std::net::TcpListener::bind(listen).expect("proxy socket");
        listener.set_nonblocking(true).expect("proxy socket mode");
        let addr = listener.local_addr().expect("proxy address");
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream,
            cut_every: if cut_every == 0 { u64::MAX } else { cut_every },
            refusing: AtomicBool::new(false),
            swallow: AtomicU64::new(0),
            generation,
            forwarded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            cut_upload_at: AtomicU64::new(u64::MAX),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if s.refusing.load(Ordering::SeqCst) {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                s.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(Arc::clone(&s), client));
            }
        });
        Proxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection, both ways, and closes new ones as soon
    /// as they are accepted, until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Swallows the next `n` responses: a request goes through to the
    /// server, which acts on it, but the connection is closed as soon as
    /// the server's answer begins, before any of it reaches the client —
    /// the dropped connection after which a client cannot know whether its
    /// request was done.
    pub fn drop_responses(&self, n: u64) {
        self.shared.swallow.store(n, Ordering::SeqCst);
    }

    /// Cuts, once, the connection that carries the `n`th byte from now
    /// towards the server, before that byte gets there: a request body
    /// torn on the way (an upload chunk cut mid-`PATCH`).
    pub fn cut_upload_after(&self, n: u64) {
        let at = self
            .shared
            .uploaded
            .load(Ordering::SeqCst)
            .saturating_add(n);
        self.shared.cut_upload_at.store(at, Ordering::SeqCst);
    }

    /// Bytes carried from clients to the server so far, over every
    /// connection.
    pub fn uploaded(&self) -> u64 {
        self.shared.uploaded.load(Ordering::SeqCst)
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (refused ones not counted).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections closed as soon as accepted because the proxy was cut:
    /// how often a client tried while it was.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Bytes carried from the server to clients so far, over every
    /// connection.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

/// Carries one connection both ways until either side closes, the byte
/// limit towards the client is reached, or the proxy cuts it.
async fn forward(shared: Arc<Shared>, client: TcpStream) {
    let mut cuts = shared.generation.subscribe();
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = shared.uploaded.fetch_add(n as u64, Ordering::SeqCst);
            let at = shared.cut_upload_at.load(Ordering::SeqCst);
            if before + n as u64 >= at
                && shared
                    .cut_upload_at
                    .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                // The bytes before the cut go through; the rest never.
                let keep = usize::try_from(at.saturating_sub(before))
                    .unwrap_or(n)
                    .min(n);
                let _ = server_write.write_all(&buf[..keep]).await;
                shared
                    .uploaded
                    .fetch_sub((n - keep) as u64, Ordering::SeqCst);
                break;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; BUFFER];
        let mut left = shared.cut_every;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(BUFFER).min(BUFFER);
            let n = match server_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if left == shared.cut_every
                && shared
                    .swallow
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                break;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
    };
    // Whichever ends first ends the connection: both halves are dropped,
    // so the client sees the cut at once.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        _ = cuts.changed() => {}
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on a free port.
    fn echo() -> SocketAddr {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("echo socket");
        let upstream = echo.local_addr().expect("echo address");
        std::thread::spawn(move || {
            for stream in echo.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        upstream
    }

    fn roundtrip(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn forwards_until_cut_and_again_once_restored() {
        let proxy = Proxy::start(echo());
        let mut a = std::net::TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(roundtrip(&mut a).ok(), Some(b"ping".to_vec()));
        proxy.cut();
        while proxy.open() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(roundtrip(&mut a).is_err(), "the open connection is cut");
        let mut b = std::net::TcpStream::connect(proxy.addr()).expect("accepted");
        assert!(roundtrip(&mut b).is_err(), "and a new one closed");
        proxy.restore();
        let mut c = std::net::TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(roundtrip(&mut c).ok(), Some(b"ping".to_vec()));
        assert_eq!(proxy.connections(), 2, "the refused one is not counted");
    }

    #[test]
    fn a_swallowed_response_closes_its_connection_after_the_request_went_through() {
        let proxy = Proxy::start(echo());
        proxy.drop_responses(1);
        let mut a = std::net::TcpStream::connect(proxy.addr()).expect("connects");
        a.write_all(b"ping").expect("sent");
        let mut rest = Vec::new();
        let _ = a.read_to_end(&mut rest);
        assert_eq!(rest, b"", "nothing of the answer arrives");
        let mut b = std::net::TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(
            roundtrip(&mut b).ok(),
            Some(b"ping".to_vec()),
            "the next goes through"
        );
    }

    #[test]
    fn a_cutting_proxy_closes_each_connection_after_its_bytes() {
        let proxy = Proxy::cutting(echo(), 6);
        let mut a = std::net::TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(roundtrip(&mut a).ok(), Some(b"ping".to_vec()));
        // Two more bytes reach the client, then the connection ends.
        a.write_all(b"pong").expect("sent");
        let mut rest = Vec::new();
        let _ = a.read_to_end(&mut rest);
        assert_eq!(rest, b"po");
        assert_eq!(proxy.forwarded(), 6);
    }
}

//! A TCP proxy whose connections a test can cut: PostgreSQL or NATS
//! "restarting" for one client, or a machine partitioned away, without
//! touching the server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on 127.0.0.1 to one upstream address. It stops when dropped.
///
/// ```no_run
/// use backstop_faultserver::proxy::TcpProxy;
///
/// let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap());
/// let url = format!("postgres://postgres@{}/test", proxy.addr());
/// // ... connect through `url` ...
/// proxy.cut(); // every connection drops; new ones are closed at once
/// proxy.restore(); // connections go through again
/// ```
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: SocketAddr,
    /// Refusing: new connections are closed as soon as accepted.
    cut: AtomicBool,
    /// Bumped on every cut; open connections end when it changes.
    generation: watch::Sender<u64>,
    open: AtomicUsize,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl TcpProxy {
    /// Starts a proxy to `upstream` on a free port, on its own thread.
    ///
    /// # Panics
    /// When the runtime or the socket cannot be created: this is test
    /// infrastructure, and a test cannot go on without it.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy socket");
        listener.set_nonblocking(true).expect("proxy socket mode");
        let addr = listener.local_addr().expect("proxy address");
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            generation,
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
                if s.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(Arc::clone(&s), client));
            }
        });
        TcpProxy {
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
    /// as they are accepted, until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

async fn forward(shared: Arc<Shared>, mut client: TcpStream) {
    let mut cuts = shared.generation.subscribe();
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    shared.open.fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cuts.changed() => {}
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn forwards_until_cut_and_again_once_restored() {
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
        let proxy = TcpProxy::start(upstream);
        let roundtrip = |s: &mut std::net::TcpStream| -> std::io::Result<Vec<u8>> {
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(buf.to_vec())
        };
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
    }
}

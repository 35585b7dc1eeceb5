//! A real nginx, started by a test on a free port of 127.0.0.1 with its
//! own configuration and temporary directories (never the system
//! service), serving a directory with Range support.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `server` lines of a reverse proxy to `upstream` that buffers each
/// request body whole.
fn proxy_to(upstream: SocketAddr) -> String {
    format!(
        "client_max_body_size 0;\n    proxy_request_buffering on;\n    \
         location / {{ proxy_pass http://{upstream}; proxy_set_header Host $http_host; \
         proxy_set_header X-Forwarded-Proto $scheme; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}"
    )
}

/// A running nginx. It is killed when dropped.
///
/// Requests carrying an `X-Slow` header are served at 1 MiB/s, so that a
/// test can interrupt a transfer halfway without racing it.
///
/// ```no_run
/// use backstop_faultserver::Nginx;
///
/// let root = tempfile::tempdir().unwrap();
/// std::fs::write(root.path().join("model.bin"), b"weights").unwrap();
/// let nginx = Nginx::start(root.path());
/// println!("{}", nginx.url("/model.bin"));
/// ```
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx serving `root`.
    ///
    /// # Panics
    /// When nginx is not installed (`apt-get install nginx`; `.ci/run`
    /// installs it) or does not start: a test that needs it must fail,
    /// never skip.
    pub fn start(root: &Path) -> Nginx {
        Self::launch(
            "",
            &format!(
                "root {};\n    location / {{ limit_rate $rate; }}",
                root.display()
            ),
        )
    }

    /// Starts nginx as a reverse proxy to `upstream`, the way Harbor puts
    /// one in front of its registry: each request body is buffered whole
    /// before it is passed on (a request cut on the way never reaches
    /// `upstream`), any size, the client's `Host` kept.
    ///
    /// # Panics
    /// As [`Nginx::start`].
    pub fn reverse_proxy(upstream: SocketAddr) -> Nginx {
        Self::launch("", &proxy_to(upstream))
    }

    /// [`Nginx::reverse_proxy`] over HTTPS, with the certificate (chain)
    /// and key of these PEM files: a private registry whose certificate
    /// authority only its users trust. [`Nginx::url`] still says
    /// `http://`; the address is what a caller needs.
    ///
    /// # Panics
    /// As [`Nginx::start`].
    pub fn tls_reverse_proxy(upstream: SocketAddr, certificate: &Path, key: &Path) -> Nginx {
        Self::launch(
            " ssl",
            &format!(
                "ssl_certificate {};\n    ssl_certificate_key {};\n    {}",
                certificate.display(),
                key.display(),
                proxy_to(upstream)
            ),
        )
    }

    fn launch(listen: &str, server: &str) -> Nginx {
        let binary = find().unwrap_or_else(|| {
            panic!("nginx is not installed: `apt-get install -y nginx` (.ci/run installs it)")
        });
        let dir = tempfile::tempdir().expect("nginx temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  sendfile on;\n  \
             default_type application/octet-stream;\n  \
             map $http_x_slow $rate {{ default 0; \"~.\" 1m; }}\n  \
             server {{\n    listen 127.0.0.1:{port}{listen};\n    {server}\n  }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx configuration");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { child, addr, dir };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}: {}", nginx.error_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {addr}: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        nginx
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx on PATH, or where Debian puts it (`/usr/sbin` is not on every
/// user's PATH).
fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

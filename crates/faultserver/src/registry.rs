//! A real OCI registry: Debian's `docker-registry` (distribution 2.8, the
//! base of Harbor), started by a test on a free port of 127.0.0.1 with its
//! own configuration and storage (never the system service).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `http.secret` every test registry signs its upload state with:
/// fixed, so that a session survives a restart of the registry.
pub const SECRET: &str = "backstop-test-registry-secret";

/// A running registry. It is killed when dropped.
///
/// ```no_run
/// use backstop_faultserver::DockerRegistry;
///
/// let registry = DockerRegistry::start();
/// println!("push to oci://{}/models/m:v1 --plain-http", registry.addr());
/// let private = DockerRegistry::with_user("alice", "s3cret");
/// ```
pub struct DockerRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// A registry open to anyone.
    ///
    /// # Panics
    /// When `docker-registry` is not installed (`apt-get install -y
    /// docker-registry`; `.ci/run` installs it) or does not start: a test
    /// that needs it must fail, never skip.
    pub fn start() -> DockerRegistry {
        Self::launch(None)
    }

    /// A registry that takes only `user` with `password` (htpasswd, bcrypt;
    /// `htpasswd` comes with `apache2-utils`).
    ///
    /// # Panics
    /// As [`DockerRegistry::start`], or when `htpasswd` is missing.
    pub fn with_user(user: &str, password: &str) -> DockerRegistry {
        Self::launch(Some((user, password)))
    }

    fn launch(user: Option<(&str, &str)>) -> DockerRegistry {
        let dir = tempfile::tempdir().expect("registry temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let mut conf = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {SECRET}\n"
        );
        if let Some((user, password)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap_or_else(|e| {
                    panic!("htpasswd is not installed ({e}): `apt-get install -y apache2-utils`")
                });
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).expect("htpasswd file");
            conf.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: backstop-test\n    path: {d}/htpasswd\n"
            ));
        }
        std::fs::write(dir.path().join("config.yml"), conf).expect("registry configuration");
        let mut registry = DockerRegistry {
            child: spawn(dir.path()),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        registry.wait_listening();
        registry
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {}: {}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the registry and starts it again on the same port and
    /// storage: upload sessions stopped cleanly between chunks survive.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path());
        self.wait_listening();
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where it keeps blobs and manifests.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

fn spawn(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "docker-registry is not installed ({e}): `apt-get install -y docker-registry` (.ci/run installs it)"
            )
        })
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

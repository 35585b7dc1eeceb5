//! Connecting to NATS: where the server is, how a coordinator or worker
//! proves who it is — a user and password, a token, an NKey seed, or a
//! `.creds` file (decentralised JWT auth) — and TLS: a custom certificate
//! authority, a client certificate, `tls://` URLs.
//!
//! No secret reaches a log or an error. The NATS client library logs the
//! server's URL at debug level, so the URL it is handed never carries
//! credentials: a `user:password@` (or `token@`) in the URL is taken out
//! and sent as the credentials it is, and every message shows
//! [`NatsServer::url`], which has none.
//!
//! ```
//! use backstop_queue::transport::nats::connection::{NatsAuth, NatsServer};
//! use backstop_core::Secret;
//!
//! let server = NatsServer::parse("nats://gpu-7:hunter2@10.0.0.5:4222").unwrap();
//! assert_eq!(server.url(), "nats://10.0.0.5:4222");
//! assert!(server.credentials_in_url());
//! assert_eq!(
//!     server.auth(),
//!     &NatsAuth::UserPassword { user: "gpu-7".into(), password: Secret::new("hunter2") }
//! );
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event, ServerAddr, ServerError};
use backstop_core::Secret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::protocol::NatsError;

/// How a client proves who it is to the NATS server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A user and password (`authorization { users: [{user, password}] }`).
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// A token (`authorization { token }`).
    Token(Secret),
    /// An NKey seed (`SU...`): the server knows its public key
    /// (`authorization { users: [{nkey: U...}] }`).
    NKey(Secret),
    /// The text of a `.creds` file: a user JWT and its NKey seed, for a
    /// server in operator mode (decentralised JWT auth).
    Credentials(Secret),
}

impl NatsAuth {
    /// What kind of credentials these are, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            NatsAuth::None => "no credentials",
            NatsAuth::UserPassword { .. } => "a user and password",
            NatsAuth::Token(_) => "a token",
            NatsAuth::NKey(_) => "an NKey seed",
            NatsAuth::Credentials(_) => "a credentials file",
        }
    }

    /// Checks what can be checked before connecting: an NKey seed and a
    /// credentials file must parse. The error never shows the secret.
    fn check(&self) -> Result<(), NatsError> {
        let unusable = |source: Box<dyn std::error::Error + Send + Sync>| NatsError::Credentials {
            kind: self.kind(),
            source,
        };
        match self {
            NatsAuth::NKey(seed) => nkeys::KeyPair::from_seed(seed.expose().trim())
                .map(drop)
                .map_err(|e| unusable(Box::new(e))),
            NatsAuth::Credentials(creds) => async_nats::ConnectOptions::new()
                .credentials(creds.expose())
                .map(drop)
                .map_err(|e| unusable(Box::new(e))),
            NatsAuth::UserPassword { user, .. } if user.is_empty() => {
                Err(unusable("the user is empty".into()))
            }
            _ => Ok(()),
        }
    }

    /// `options` that send these credentials.
    fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, NatsError> {
        Ok(match self {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::NKey(seed) => options.nkey(seed.expose().trim().to_owned()),
            NatsAuth::Credentials(creds) => {
                options
                    .credentials(creds.expose())
                    .map_err(|e| NatsError::Credentials {
                        kind: self.kind(),
                        source: Box::new(e),
                    })?
            }
        })
    }
}

/// TLS towards the NATS server. Any of these set, or a `tls://` URL, makes
/// TLS required: the connection never falls back to plain text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Trust the certificate authorities of this PEM file, instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Present this certificate chain (PEM) to the server...
    pub cert_file: Option<PathBuf>,
    /// ...with this private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl NatsTls {
    /// Whether anything is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Reads each file now, so that a missing or malformed one is told at
    /// start-up rather than as a refused connection.
    fn check(&self) -> Result<(), NatsError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let unusable = |file: &Path, why: String| NatsError::Tls {
            file: file.to_owned(),
            why,
        };
        let certificates = |file: &Path| -> Result<(), NatsError> {
            let found = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| unusable(file, e.to_string()))?;
            if found.is_empty() {
                return Err(unusable(file, "it holds no PEM certificate".to_owned()));
            }
            Ok(())
        };
        if let Some(ca) = &self.ca_file {
            certificates(ca)?;
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                certificates(cert)?;
                PrivateKeyDer::from_pem_file(key).map_err(|e| unusable(key, e.to_string()))?;
            }
            (Some(cert), None) => {
                return Err(unusable(
                    cert,
                    "a client certificate needs its key too".to_owned(),
                ));
            }
            (None, Some(key)) => {
                return Err(unusable(
                    key,
                    "a client key needs its certificate too".to_owned(),
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// Where the NATS server is and how to connect to it.
#[derive(Clone, Debug)]
pub struct NatsServer {
    /// The server, without credentials.
    addr: ServerAddr,
    auth: NatsAuth,
    credentials_in_url: bool,
    tls: NatsTls,
    inbox_prefix: Option<String>,
}

impl NatsServer {
    /// The server at `url` (`nats://HOST:PORT`, `tls://HOST:PORT`, or
    /// `HOST:PORT`). A `user:password@` in it becomes
    /// [`NatsAuth::UserPassword`], a lone `token@` [`NatsAuth::Token`]
    /// (percent-decoded, as NATS clients read them).
    pub fn parse(url: &str) -> Result<NatsServer, NatsError> {
        let invalid = |why: String| NatsError::Url {
            url: shown_url(url),
            why,
        };
        let addr: ServerAddr = url.trim().parse().map_err(|e: std::io::Error| {
            // Its message quotes no part of the URL.
            invalid(e.to_string())
        })?;
        if addr.is_websocket() {
            return Err(invalid(
                "backstop speaks NATS over TCP (nats:// or tls://), not WebSocket".to_owned(),
            ));
        }
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| invalid("its credentials are not valid percent-encoded UTF-8".into()))
        };
        let auth = match (addr.username(), addr.password()) {
            (None, None) => NatsAuth::None,
            (user, Some(password)) => NatsAuth::UserPassword {
                user: decode(user.unwrap_or(""))?,
                password: Secret::new(decode(password)?),
            },
            (Some(token), None) => NatsAuth::Token(Secret::new(decode(token)?)),
        };
        let credentials_in_url = auth != NatsAuth::None;
        auth.check()?;
        let mut bare = addr.into_inner();
        // Setting these fails only for URLs that cannot have them, which
        // a NATS address with a host always can.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let addr = ServerAddr::from_url(bare).map_err(|e| invalid(e.to_string()))?;
        Ok(NatsServer {
            addr,
            auth,
            credentials_in_url,
            tls: NatsTls::default(),
            inbox_prefix: None,
        })
    }

    /// The server's URL, without credentials: for messages.
    pub fn url(&self) -> String {
        self.addr.as_url_str().trim_end_matches('/').to_owned()
    }

    /// Whether the URL carried the credentials (where `ps` shows them,
    /// when it was given on the command line).
    pub fn credentials_in_url(&self) -> bool {
        self.credentials_in_url
    }

    /// The credentials it sends.
    pub fn auth(&self) -> &NatsAuth {
        &self.auth
    }

    /// Sends `auth`. Credentials in the URL and others besides are
    /// refused: which one was meant cannot be told.
    pub fn with_auth(mut self, auth: NatsAuth) -> Result<NatsServer, NatsError> {
        if auth == NatsAuth::None {
            return Ok(self);
        }
        if self.auth != NatsAuth::None {
            return Err(NatsError::TwoCredentials {
                first: self.auth.kind(),
                second: auth.kind(),
            });
        }
        auth.check()?;
        self.auth = auth;
        Ok(self)
    }

    /// Speaks TLS as `tls` says; its files are read now.
    pub fn with_tls(mut self, tls: NatsTls) -> Result<NatsServer, NatsError> {
        tls.check()?;
        self.tls = tls;
        Ok(self)
    }

    /// Whether TLS is required of the connection.
    pub fn tls_required(&self) -> bool {
        self.addr.tls_required() || self.tls.is_set()
    }

    /// Receives the answers to its requests under `prefix` instead of
    /// `_INBOX`: a worker's under its own subjects, so that the server can
    /// confine it to them.
    pub fn with_inbox_prefix(mut self, prefix: impl Into<String>) -> NatsServer {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, NatsError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .require_tls(self.tls_required());
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        self.auth.apply(options)
    }

    /// Connects, retrying reconnections forever once connected.
    pub async fn connect(&self, name: &str) -> Result<NatsConnection, NatsError> {
        let (denied_tx, denied) = watch::channel(None);
        let url = self.url();
        let said = url.clone();
        let options = self.options(name)?.event_callback(move |event| {
            let (denied_tx, url) = (denied_tx.clone(), said.clone());
            async move {
                if let Event::ServerError(ServerError::Other(text)) = event {
                    if is_permission_denial(&text) {
                        tracing::error!("NATS at {url} refused a permission: {text}");
                        denied_tx.send_replace(Some(text));
                    } else {
                        tracing::warn!("NATS at {url} says: {text}");
                    }
                }
            }
        });
        let client = options.connect(self.addr.clone()).await.map_err(|source| {
            if refused(&source) {
                NatsError::Refused { url, source }
            } else {
                NatsError::Connect { url, source }
            }
        })?;
        Ok(NatsConnection { client, denied })
    }

    /// [`connect`](Self::connect), waiting for a server that does not
    /// answer yet: each failure is logged and the connection tried again
    /// after a backoff with full jitter
    /// ([`crate::coordinator::startup_retry`]), until the server answers
    /// or `shutdown` fires (`Ok(None)`). A refusal ([`NatsError::Refused`])
    /// is returned at once.
    pub async fn connect_when_ready(
        &self,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<NatsConnection>, NatsError> {
        let policy = crate::coordinator::startup_retry();
        let mut rng = fastrand::Rng::new();
        let mut retry = 0;
        loop {
            let tried = tokio::select! {
                tried = self.connect(name) => tried,
                () = shutdown.cancelled() => return Ok(None),
            };
            match tried {
                Ok(connection) => {
                    if retry > 0 {
                        tracing::info!("NATS at {} answers", self.url());
                    }
                    return Ok(Some(connection));
                }
                Err(e @ NatsError::Connect { .. }) => {
                    let wait = policy.delay_after(retry, &mut rng);
                    retry = retry.saturating_add(1);
                    tracing::warn!(
                        "{}; trying again in {}",
                        crate::error_chain(&e),
                        backstop_core::HumanDuration(wait)
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(None),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A connection to NATS, and what the server refused it.
pub struct NatsConnection {
    client: async_nats::Client,
    denied: watch::Receiver<Option<String>>,
}

impl NatsConnection {
    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The client, for a user that does not ask about refusals (each is
    /// logged anyway).
    pub fn into_client(self) -> async_nats::Client {
        self.client
    }

    /// Resolves once the server refuses this client permission to publish
    /// or subscribe on a subject: what it said. Never resolves while it
    /// refuses nothing.
    pub async fn denied(&self) -> String {
        let mut denied = self.denied.clone();
        match denied.wait_for(Option::is_some).await {
            Ok(text) => text.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }
}

/// Whether a server error says a permission was refused (the connection
/// stays open; the message was dropped).
fn is_permission_denial(text: &str) -> bool {
    text.to_ascii_lowercase().contains("permissions violation")
}

/// Whether the server refused this client — its credentials, or TLS (its
/// certificate, or ours) — rather than could not be reached: trying again
/// does not help.
fn refused(error: &async_nats::ConnectError) -> bool {
    use tokio_rustls::rustls::Error as Tls;
    match error.kind() {
        ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls => true,
        // A failed TLS handshake arrives as an I/O error around rustls's.
        _ => {
            let mut cause = std::error::Error::source(error);
            while let Some(e) = cause {
                if let Some(tls) = e.downcast_ref::<Tls>() {
                    return matches!(
                        tls,
                        Tls::InvalidCertificate(_)
                            | Tls::AlertReceived(_)
                            | Tls::NoCertificatesPresented
                            | Tls::PeerIncompatible(_)
                    );
                }
                cause = match e.downcast_ref::<std::io::Error>() {
                    Some(io) => io.get_ref().map(|inner| inner as &dyn std::error::Error),
                    None => e.source(),
                };
            }
            false
        }
    }
}

/// `url` without any user or password, however malformed it is: for
/// messages about a URL that cannot be read.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => host.to_owned(),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_become_what_they_are() {
        let cases: &[(&str, &str, NatsAuth)] = &[
            (
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1:4222",
                NatsAuth::None,
            ),
            ("10.0.0.1:4222", "nats://10.0.0.1:4222", NatsAuth::None),
            (
                "nats://u:hunter2@10.0.0.1:4222",
                "nats://10.0.0.1:4222",
                NatsAuth::UserPassword {
                    user: "u".into(),
                    password: Secret::new("hunter2"),
                },
            ),
            (
                "tls://u%40x:p%3Aw%2F@nats.internal",
                "tls://nats.internal",
                NatsAuth::UserPassword {
                    user: "u@x".into(),
                    password: Secret::new("p:w/"),
                },
            ),
            (
                "s3cr3t-token@host:4222",
                "nats://host:4222",
                NatsAuth::Token(Secret::new("s3cr3t-token")),
            ),
        ];
        for (url, shown, auth) in cases {
            let server = NatsServer::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(server.url(), *shown, "{url}");
            assert_eq!(server.auth(), auth, "{url}");
            assert_eq!(server.credentials_in_url(), *auth != NatsAuth::None);
            assert!(!format!("{server:?}").contains("hunter2"), "{server:?}");
            assert!(!format!("{server:?}").contains("s3cr3t"), "{server:?}");
        }
    }

    #[test]
    fn a_url_that_cannot_be_read_is_told_without_its_credentials() {
        for url in [
            "nats://u:hunter2@127.0.0.1:99999",
            "http://u:hunter2@host:4222",
            "ws://u:hunter2@host:4222",
        ] {
            match NatsServer::parse(url) {
                Err(e @ NatsError::Url { .. }) => {
                    let told = crate::error_chain(&e);
                    assert!(!told.contains("hunter2"), "{told}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_in_the_url_and_besides_are_refused() {
        let server = NatsServer::parse("nats://u:p@host").unwrap_or_else(|e| panic!("{e}"));
        match server.with_auth(NatsAuth::Token(Secret::new("t"))) {
            Err(NatsError::TwoCredentials { first, second }) => {
                assert_eq!((first, second), ("a user and password", "a token"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_seed_or_credentials_file_that_cannot_be_used_is_told_without_its_text() {
        let server = || NatsServer::parse("nats://host").unwrap_or_else(|e| panic!("{e}"));
        for auth in [
            NatsAuth::NKey(Secret::new("SUnot-a-seed-hunter2")),
            NatsAuth::Credentials(Secret::new("hunter2, not a creds file")),
        ] {
            match server().with_auth(auth) {
                Err(e @ NatsError::Credentials { .. }) => {
                    let told = crate::error_chain(&e);
                    assert!(!told.contains("hunter2"), "{told}");
                }
                other => panic!("{other:?}"),
            }
        }
        let seed = nkeys::KeyPair::new_user()
            .seed()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            server()
                .with_auth(NatsAuth::NKey(Secret::new(seed)))
                .is_ok()
        );
    }

    #[test]
    fn tls_files_are_read_at_start_up() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        let server = || NatsServer::parse("tls://host").unwrap_or_else(|e| panic!("{e}"));
        assert!(server().tls_required());
        for tls in [
            NatsTls {
                ca_file: Some(dir.path().join("missing.pem")),
                ..NatsTls::default()
            },
            NatsTls {
                ca_file: Some(not_pem.clone()),
                ..NatsTls::default()
            },
            NatsTls {
                cert_file: Some(not_pem.clone()),
                ..NatsTls::default()
            },
        ] {
            assert!(
                matches!(server().with_tls(tls.clone()), Err(NatsError::Tls { .. })),
                "{tls:?}"
            );
        }
    }

    #[test]
    fn permission_denials_are_told_apart() {
        assert!(is_permission_denial(
            "Permissions Violation for Publish to \"backstop.from.gpu-8.register\""
        ));
        assert!(!is_permission_denial("Maximum Payload Violation"));
    }
}

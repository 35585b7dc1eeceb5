//! The client against a real socket: the fault server answers with the
//! statuses, headers and broken connections real servers produce.

use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_faultserver::{FaultServer, Reply};
use backstop_http::{
    CancellationToken, Client, Ending, Error, HttpFailure, Jitter, Method, Policy, RetryEvent,
    StatusCode,
};

/// The API preset with millisecond waits, so that tests spend their time on
/// the behaviour and not on sleeping.
fn quick() -> Policy {
    Policy::api()
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
        .with_jitter(Jitter::None)
        .with_attempt_timeout(Duration::from_secs(10))
}

fn client() -> Client {
    Client::builder()
        .policy(quick())
        .header_timeout(Duration::from_millis(500))
        .read_idle_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

type Events = Arc<Mutex<Vec<(u32, String, Duration, bool)>>>;

fn recorder() -> (Events, impl FnMut(&RetryEvent<'_>) + Send + 'static) {
    let events: Events = Arc::default();
    let log = Arc::clone(&events);
    (events, move |e: &RetryEvent<'_>| {
        log.lock()
            .unwrap()
            .push((e.attempt, e.reason.to_owned(), e.delay, e.server_wait))
    })
}

/// The whole message a user would see: the error and its causes.
fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(" | ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn a_429_with_retry_after_ms_is_waited_out() {
    let server = FaultServer::start();
    server.script(
        "/api",
        [
            Reply::status(429).header("retry-after-ms", "80"),
            Reply::ok("fine"),
        ],
    );
    let (events, hook) = recorder();
    let body = client()
        .get(&server.url("/api"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body.bytes[..], b"fine");
    assert_eq!(server.hits("/api"), 2);
    let events = events.lock().unwrap();
    assert_eq!(
        *events,
        [(1, "HTTP 429".to_owned(), Duration::from_millis(80), true)]
    );
}

#[tokio::test]
async fn retry_after_seconds_are_honoured_exactly() {
    let server = FaultServer::start();
    server.script(
        "/api",
        [
            Reply::status(503).header("Retry-After", "1"),
            Reply::ok("up"),
        ],
    );
    let (events, hook) = recorder();
    let started = std::time::Instant::now();
    client()
        .get(&server.url("/api"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(events.lock().unwrap()[0].2, Duration::from_secs(1));
    assert!(started.elapsed() >= Duration::from_secs(1), "never early");
}

#[tokio::test]
async fn hugging_face_ratelimit_header_is_honoured() {
    let server = FaultServer::start();
    server.script(
        "/api/models",
        [
            Reply::status(429)
                .header("RateLimit", "\"api\";r=0;t=1")
                .header("RateLimit-Policy", "\"fixed window\";\"api\";q=500;w=300"),
            Reply::json("[]"),
        ],
    );
    let (events, hook) = recorder();
    client()
        .get(&server.url("/api/models"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(events.lock().unwrap()[0].2, Duration::from_secs(1));
}

#[tokio::test]
async fn persistent_overload_ends_typed_after_every_attempt() {
    let server = FaultServer::start();
    server.always("/api", Reply::status(503).body("upstream connect error"));
    let err = client().get(&server.url("/api")).bytes().await.unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Overloaded { wait: None }));
    assert!(err.is_temporary());
    assert_eq!(server.hits("/api"), 5);
    let shown = chain(&err);
    let host = server.addr().to_string();
    assert!(
        shown.starts_with(&format!("{host} is overloaded: 5 attempts over ")),
        "{shown}"
    );
    assert!(
        shown.ends_with("| HTTP 503 Service Unavailable: upstream connect error"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_wait_longer_than_the_policy_allows_ends_at_once() {
    let server = FaultServer::start();
    server.always("/api", Reply::status(429).header("Retry-After", "3600"));
    let err = client().get(&server.url("/api")).bytes().await.unwrap_err();
    assert_eq!(
        err.ending(),
        Some(Ending::RateLimited {
            wait: Some(Duration::from_secs(3600))
        })
    );
    assert_eq!(server.hits("/api"), 1);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "rate limited by {}: 1 attempt over ",
            server.addr()
        )),
        "{shown}"
    );
    assert!(shown.ends_with("; the server asks to wait 1 h"), "{shown}");
}

#[tokio::test]
async fn other_client_errors_fail_fast() {
    let server = FaultServer::start();
    for (status, ending) in [
        (404, Ending::Permanent),
        (400, Ending::Permanent),
        (401, Ending::Auth),
        (403, Ending::Auth),
    ] {
        let path = format!("/s{status}");
        server.always(&path, Reply::status(status));
        let err = client().get(&server.url(&path)).bytes().await.unwrap_err();
        assert_eq!(err.ending(), Some(ending), "{status}");
        assert!(!err.is_temporary());
        assert_eq!(server.hits(&path), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn an_exhausted_quota_in_the_body_is_not_retried() {
    let server = FaultServer::start();
    server.always(
        "/v1/chat",
        Reply::status(429).body(
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        ),
    );
    let err = client()
        .get(&server.url("/v1/chat"))
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::QuotaExhausted { reset: None }));
    assert_eq!(server.hits("/v1/chat"), 1);
    assert!(chain(&err).contains("You exceeded your current quota"));
}

#[tokio::test]
async fn a_server_that_never_answers_is_timed_out_and_retried() {
    let server = FaultServer::start();
    server.script("/slow", [Reply::stall(), Reply::ok("late but fine")]);
    let (events, hook) = recorder();
    let client = Client::builder()
        .policy(quick())
        .header_timeout(Duration::from_millis(300))
        .read_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let body = client
        .get(&server.url("/slow"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body.bytes[..], b"late but fine");
    assert_eq!(events.lock().unwrap()[0].1, "no response headers");
}

#[tokio::test]
async fn a_body_cut_halfway_is_fetched_again() {
    let server = FaultServer::start();
    let payload = "0123456789".repeat(1000);
    server.script(
        "/file",
        [
            Reply::ok(payload.clone()).cut_after(4000),
            Reply::ok(payload.clone()),
        ],
    );
    let (events, hook) = recorder();
    let body = client()
        .get(&server.url("/file"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.bytes.len(), payload.len());
    assert_eq!(&body.bytes[..], payload.as_bytes());
    assert_eq!(events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_by_the_idle_timeout() {
    let server = FaultServer::start();
    server.script(
        "/file",
        [Reply::ok("abcdef").stall_after(3), Reply::ok("abcdef")],
    );
    let (events, hook) = recorder();
    let body = client()
        .get(&server.url("/file"))
        .on_retry(hook)
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body.bytes[..], b"abcdef");
    assert_eq!(events.lock().unwrap()[0].1, "read timed out");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Bind and drop a listener: the port is free and refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client()
        .get(&format!("http://127.0.0.1:{port}/"))
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Exhausted));
    assert_eq!(err.retry_error().unwrap().attempts, 5);
    assert_eq!(
        err.retry_error().unwrap().reason.as_deref(),
        Some("connection refused")
    );
}

/// A listener on a free port that accepts each connection and hands it to
/// `serve`, on a thread of its own.
fn raw_server(serve: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            serve(conn);
        }
    });
    port
}

/// One attempt at `url`, which must fail.
async fn once(url: &str) -> Error {
    client()
        .get(url)
        .policy(quick().with_max_attempts(1))
        .bytes()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn the_root_cause_is_in_the_message() {
    // A name under .invalid never resolves (RFC 6761), offline too.
    let err = once("http://backstop-test.invalid/").await;
    let shown = chain(&err);
    assert!(
        shown.contains(" | could not connect: dns error: failed to lookup address information"),
        "{shown}"
    );

    // A TLS handshake that the server ends at once: it reads the hello
    // and closes its side, without a reset.
    let port = raw_server(|mut conn| {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let err = once(&format!("https://127.0.0.1:{port}/")).await;
    let shown = chain(&err);
    assert!(
        shown.ends_with(" | could not connect: tls handshake eof"),
        "{shown}"
    );

    // A server that answers the handshake in plain HTTP: a TLS error,
    // which trying again does not mend.
    let port = raw_server(|mut conn| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = once(&format!("https://127.0.0.1:{port}/")).await;
    let shown = chain(&err);
    assert!(
        shown.ends_with(" | TLS error: received corrupt message of type InvalidContentType"),
        "{shown}"
    );
}

#[tokio::test]
async fn post_is_retried_only_when_the_server_refused_it() {
    let server = FaultServer::start();
    server.always("/jobs", Reply::status(502));
    let err = client()
        .request(Method::POST, &server.url("/jobs"))
        .body("{}")
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Permanent));
    assert_eq!(server.hits("/jobs"), 1);

    server.script("/queue", [Reply::status(429), Reply::ok("queued")]);
    let body = client()
        .request(Method::POST, &server.url("/queue"))
        .body("{}")
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body.bytes[..], b"queued");
    assert_eq!(server.hits("/queue"), 2);
    assert!(server.requests().iter().all(|r| r.method == "POST"));
}

/// An `Idempotency-Key` makes a POST safe to send again: it is retried
/// as a GET is, through failures after which the server may have acted,
/// carrying the same key and body every time.
#[tokio::test]
async fn a_post_with_an_idempotency_key_is_retried_like_a_get() {
    let server = FaultServer::start();
    server.script(
        "/jobs",
        [
            Reply::status(502),
            Reply::status(503),
            Reply::ok("x".repeat(100)).cut_after(5),
            Reply::ok("made"),
        ],
    );
    let body = client()
        .request(Method::POST, &server.url("/jobs"))
        .header("Idempotency-Key", "k-1")
        .body("{}")
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body.bytes[..], b"made");
    let sent = server.requests();
    assert_eq!(sent.len(), 4);
    assert!(
        sent.iter()
            .all(|r| r.header("idempotency-key") == Some("k-1") && &r.body[..] == b"{}")
    );

    // Told otherwise, it is not.
    server.always("/once", Reply::status(502));
    let err = client()
        .request(Method::POST, &server.url("/once"))
        .header("Idempotency-Key", "k-2")
        .idempotent(false)
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Permanent));
    assert_eq!(server.hits("/once"), 1);
}

/// `save` leaves one whole body in the file, however many attempts it
/// took: what a cut attempt wrote is cut away.
#[tokio::test]
async fn save_writes_one_whole_body_whatever_the_cuts() {
    let server = FaultServer::start();
    let whole: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    server.script(
        "/answer",
        [
            Reply::ok(whole.clone()).cut_after(200_000),
            Reply::ok(whole.clone()),
        ],
    );
    let file = tempfile::tempfile().unwrap();
    let saved = client()
        .request(Method::PUT, &server.url("/answer"))
        .body("x")
        .save(&file)
        .await
        .unwrap();
    assert_eq!((saved.status, saved.len), (StatusCode::OK, 300_000));
    let mut got = Vec::new();
    std::io::Seek::rewind(&mut &file).unwrap();
    std::io::Read::read_to_end(&mut &file, &mut got).unwrap();
    assert!(got == whole, "one body, not a cut one and a whole one");
    assert_eq!(server.hits("/answer"), 2);
}

#[tokio::test]
async fn redirects_are_followed() {
    let server = FaultServer::start();
    server.script("/resolve", [Reply::redirect(302, "/cdn/blob")]);
    server.script("/cdn/blob", [Reply::ok("blob")]);
    let body = client().get(&server.url("/resolve")).bytes().await.unwrap();
    assert_eq!(&body.bytes[..], b"blob");
    assert_eq!(body.url.path(), "/cdn/blob");
}

#[tokio::test]
async fn invalid_json_fails_at_once() {
    let server = FaultServer::start();
    server.always("/api", Reply::json("{not json"));
    let err = client()
        .get(&server.url("/api"))
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Permanent));
    assert_eq!(server.hits("/api"), 1);
    assert!(
        chain(&err).contains("not the JSON expected"),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn bodies_beyond_the_limit_are_refused() {
    let server = FaultServer::start();
    server.always("/big", Reply::ok(vec![b'x'; 2048]));
    let err = client()
        .get(&server.url("/big"))
        .max_body(1024)
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Permanent));
    assert!(chain(&err).contains("larger than the 1024-byte limit"));
}

#[tokio::test]
async fn credentials_never_reach_the_error() {
    let server = FaultServer::start();
    let token = "hf_TopSecretToken123";
    server.always(
        "/private",
        Reply::status(401).body(format!(r#"{{"error":"bad token {token}"}}"#)),
    );
    let err = client()
        .get(&server.url("/private?access_token=qs-secret"))
        .header("Authorization", &format!("Bearer {token}"))
        .bytes()
        .await
        .unwrap_err();
    let shown = format!("{} {err:?}", chain(&err));
    assert!(!shown.contains(token), "{shown}");
    assert!(!shown.contains("qs-secret"), "{shown}");
    assert!(shown.contains("bad token <redacted>"), "{shown}");
    // The token was sent, though.
    let sent = &server.requests()[0];
    assert_eq!(
        sent.header("authorization"),
        Some(&*format!("Bearer {token}"))
    );
}

#[tokio::test]
async fn malformed_headers_fail_before_sending() {
    let server = FaultServer::start();
    let err = client()
        .get(&server.url("/x"))
        .header("Bad Name", "v")
        .bytes()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidHeader(_)), "{err}");
    let err = client()
        .get(&server.url("/x"))
        .header("Authorization", "Bearer sec\nret")
        .bytes()
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("sec"), "{err}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn cancelling_during_a_wait_stops_at_once() {
    let server = FaultServer::start();
    server.always("/api", Reply::status(503).header("Retry-After", "30"));
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let err = client()
        .get(&server.url("/api"))
        .cancel_on(token)
        .bytes()
        .await
        .unwrap_err();
    assert_eq!(err.ending(), Some(Ending::Cancelled));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The last attempt's error is still there.
    assert!(matches!(
        err.retry_error().unwrap().last_error(),
        Some(HttpFailure::Status { .. })
    ));
}

mod redirects {
    use super::*;

    #[tokio::test]
    async fn authorization_is_not_forwarded_to_another_origin() {
        let (origin, cdn) = (FaultServer::start(), FaultServer::start());
        origin.script("/resolve", [Reply::redirect(302, &cdn.url("/blob"))]);
        cdn.script("/blob", [Reply::ok("blob")]);
        let body = client()
            .get(&origin.url("/resolve"))
            .header("Authorization", "Bearer hf_secret")
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body.bytes[..], b"blob");
        assert_eq!(
            origin.requests()[0].header("authorization"),
            Some("Bearer hf_secret")
        );
        assert_eq!(cdn.requests()[0].header("authorization"), None);
    }

    #[tokio::test]
    async fn api_key_headers_never_follow_a_redirect_to_another_origin() {
        let (origin, elsewhere) = (FaultServer::start(), FaultServer::start());
        origin.always("/v1/models", Reply::redirect(307, &elsewhere.url("/steal")));
        origin.script("/same", [Reply::redirect(302, "/v1/ok")]);
        origin.script("/v1/ok", [Reply::ok("ok")]);
        let err = client()
            .get(&origin.url("/v1/models"))
            .header("X-Api-Key", "sk-secret")
            .bytes()
            .await
            .unwrap_err();
        assert_eq!(err.ending(), Some(Ending::Permanent));
        assert!(elsewhere.requests().is_empty(), "the key went elsewhere");
        let shown = chain(&err);
        assert!(
            shown.contains(&format!("redirect to {} not followed", elsewhere.addr())),
            "{shown}"
        );
        assert!(!shown.contains("sk-secret"));
        // Redirects within the same origin are still followed.
        let body = client()
            .get(&origin.url("/same"))
            .header("X-Api-Key", "sk-secret")
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body.bytes[..], b"ok");
    }
}

/// A server on a free port that reads a request's headers, then its body
/// `piece` bytes at a time with `pause` between (never, for a zero
/// piece), then answers 201.
fn slow_reader(piece: usize, pause: Duration) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        if piece == 0 {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let mut buf = vec![0u8; piece];
        let mut read = 0;
        while read < length {
            let want = piece.min(length - read);
            if reader.read_exact(&mut buf[..want]).is_err() {
                return;
            }
            read += want;
            std::thread::sleep(pause);
        }
        let mut stream = stream;
        let _ = stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_slower_than_the_header_timeout_still_goes_through() {
    // 24 MiB at 512 KiB per 50 ms: about 2.4 s, past both the 1 s header
    // timeout and the 1 s idle timeout of reads; what the socket buffers
    // hold after the last piece drains well within the header timeout.
    let addr = slow_reader(512 << 10, Duration::from_millis(50));
    let client = Client::builder()
        .header_timeout(Duration::from_secs(1))
        .read_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let resp = client
        .request(Method::PUT, &format!("http://{addr}/upload"))
        .body(vec![7u8; 24 << 20])
        .policy(Policy::api().with_max_attempts(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_none_of_the_body_fails_the_attempt_as_stalled() {
    let addr = slow_reader(0, Duration::ZERO);
    let client = Client::builder()
        .read_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // Larger than every socket buffer on the way.
    let err = client
        .request(Method::PUT, &format!("http://{addr}/upload"))
        .body(vec![7u8; 64 << 20])
        .policy(Policy::api().with_max_attempts(1))
        .send()
        .await
        .unwrap_err();
    match err.retry_error().and_then(|e| e.last_error()) {
        Some(HttpFailure::UploadStalled(d)) => assert_eq!(*d, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
}

/// A success whose rate-limit headers say the quota is spent holds the
/// next request to that host as a 429 would: nothing is sent until the
/// reset (here longer than the policy waits, so the call ends at once).
#[tokio::test]
async fn a_success_that_spends_the_quota_holds_the_next_request() {
    let server = FaultServer::start();
    server.always(
        "/v2/",
        Reply::json("{}")
            .header("ratelimit-limit", "100;w=21600")
            .header("ratelimit-remaining", "0;w=21600"),
    );
    let client = client();
    client.get(&server.url("/v2/")).bytes().await.unwrap();
    let err = client.get(&server.url("/v2/")).bytes().await.unwrap_err();
    match err.ending() {
        Some(Ending::RateLimited { wait: Some(wait) }) => assert!(
            wait > Duration::from_secs(21590) && wait <= Duration::from_secs(21601),
            "the window, 6 h: {wait:?}"
        ),
        other => panic!("{other:?}: {err}"),
    }
    assert_eq!(server.hits("/v2/"), 1, "the second request was not sent");
}

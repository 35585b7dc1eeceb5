//! `backstop request`: a request with any method and a body, as curl
//! sends it (`-X`, `-d`, `--data-binary`, `--json`, `-H`), under the
//! engine's retries. A GET without a body is `get`'s download, resumed by
//! Range; any other answer cannot be resumed, so it is fetched whole again
//! when cut, and written out only once complete.

use std::fs::File;
use std::io::{BufReader, Read};

use backstop_core::{AttemptError, Classified, Ending};
use backstop_http::{FileBody, MAX_BODY, Method, Payload, RequestBuilder};
use backstop_transfer::Spool;

use crate::cli::{RequestArgs, SendArgs};
use crate::report::{Report, exit};

pub async fn run(args: RequestArgs) -> Result<(), Report> {
    let RequestArgs { send, mut get } = args;
    let key = idempotency_key(&send, &get.headers)?;
    if let Some(key) = &key {
        get.headers
            .push(("Idempotency-Key".to_owned(), key.clone()));
    }
    if send.is_plain_get() {
        return super::get::run(get).await;
    }
    // Everything read and checked before anything is sent.
    let body = body(&send)?;
    let method = match (&send.method, &body) {
        (Some(method), _) => method.clone(),
        (None, Some(_)) => Method::POST,
        (None, None) => Method::GET,
    };
    let client = get.retry.client()?;
    let mut request = client.request(method.clone(), &get.url);
    if get.retry.attempt_timeout.is_none() {
        // A runaway guard from the size, as for get: a large upload that
        // keeps moving is never cut by the API's 30 s (stalls are caught
        // by the idle timeout).
        let size = body.as_ref().map_or(0, |b| b.payload.len());
        let timeout = backstop_core::Policy::transfer_attempt_timeout(size);
        request = request.policy(client.policy().clone().with_attempt_timeout(timeout));
    }
    for (name, value) in &get.headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = with_body(request, body, &get.headers);
    }
    if send.retry_unsafe {
        request = request.idempotent(true);
    }
    let sent = Sent {
        method: &method,
        key: key.as_deref(),
        generated: send.idempotency_key.as_deref() == Some("auto"),
    };
    match &get.output {
        Some(path) => {
            let spool = Spool::for_path(path).map_err(|e| {
                Report::from_error(exit::FAILURE, &e)
                    .detail(format!("cannot write {}", path.display()))
                    .hint("nothing was sent")
            })?;
            let saved = request
                .save(spool.file())
                .await
                .map_err(|e| sent.report(e))?;
            spool.commit().map_err(|e| {
                Report::from_error(exit::FAILURE, &e).detail(format!(
                    "the answer arrived but could not be put in {}",
                    path.display()
                ))
            })?;
            tracing::info!("wrote {} bytes to {}", saved.len, path.display());
        }
        None => {
            // The whole answer first, then stdout: a retry never leaves
            // half of one in a pipe.
            let mut spool = tempfile::tempfile().map_err(|e| {
                Report::from_error(exit::FAILURE, &e).hint("no temporary folder; nothing was sent")
            })?;
            request.save(&spool).await.map_err(|e| sent.report(e))?;
            super::get::copy_to_stdout(&mut spool)?;
        }
    }
    Ok(())
}

/// What was sent, for the message when it fails.
struct Sent<'a> {
    method: &'a Method,
    key: Option<&'a str>,
    generated: bool,
}

impl Sent<'_> {
    /// A failure as the user reads it, saying, for a request that was not
    /// sent again because the server may have acted on it, how to let it
    /// be; and, for one that carried a key made for this run, which key
    /// makes a rerun the same request.
    fn report(&self, e: backstop_http::Error) -> Report {
        // Ended as permanent by a failure that is worth another attempt:
        // stopped only because the request is not idempotent.
        let maybe_acted = e.ending() == Some(Ending::Permanent)
            && matches!(
                e.retry_error().and_then(|r| r.last.as_ref()),
                Some(AttemptError::Failed(f)) if f.verdict().class.is_retryable()
            );
        let temporary = e.ending().is_some_and(|ending| ending.is_temporary());
        let auth = e.ending() == Some(Ending::Auth);
        let report = Report::from(e);
        if maybe_acted {
            return report.hint(format!(
                "not sent again: the server may have acted on this {}; if it honours \
                 idempotency keys, --idempotency-key auto makes retries safe (--retry-unsafe \
                 retries anyway)",
                self.method
            ));
        }
        match self.key {
            Some(key) if self.generated && temporary && !auth => report.detail(format!(
                "it may have been acted on; to send it again as the same request, run the \
                 same command with --idempotency-key {key}"
            )),
            _ => report,
        }
    }
}

/// The `Idempotency-Key` to send: `--idempotency-key`'s, a new random one
/// for `auto`, or none. Given twice (the flag and `-H`), it is refused.
fn idempotency_key(
    send: &SendArgs,
    headers: &[(String, String)],
) -> Result<Option<String>, Report> {
    let Some(given) = send.idempotency_key.as_deref() else {
        return Ok(None);
    };
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
    {
        return Err(Report::new(
            exit::USAGE,
            "--idempotency-key and -H 'Idempotency-Key: ...' both give a key; give one",
        ));
    }
    match given.trim() {
        "" => Err(Report::new(exit::USAGE, "--idempotency-key is empty")),
        "auto" => crate::state::random_uuid()
            .map(Some)
            .map_err(|e| Report::from_error(exit::FAILURE, &e)),
        key => Ok(Some(key.to_owned())),
    }
}

/// What a request carries, and how it is labelled.
struct Body {
    payload: Payload,
    content_type: &'static str,
    accept: Option<&'static str>,
}

/// The body of `-d`, `--data-binary` or `--json` (never more than one of
/// them), read and checked now: a file that cannot be read, or `--json`
/// that is not JSON, is a usage error before anything is sent.
fn body(send: &SendArgs) -> Result<Option<Body>, Report> {
    const FORM: &str = "application/x-www-form-urlencoded";
    if !send.json.is_empty() {
        let payload = gather(&send.json, "--json", b"", false)?;
        check_json(&payload)?;
        return Ok(Some(Body {
            payload,
            content_type: "application/json",
            accept: Some("application/json"),
        }));
    }
    let (items, flag, strip) = if send.data.is_empty() {
        (&send.data_binary, "--data-binary", false)
    } else {
        (&send.data, "-d", true)
    };
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(Body {
        payload: gather(items, flag, b"&", strip)?,
        content_type: FORM,
        accept: None,
    }))
}

/// The pieces given to `flag`, as one body: a single `@FILE` of a regular
/// file is sent from the file, read again for each attempt; anything else
/// (text, `@-`, several pieces, `-d`'s files) is gathered in memory to be
/// sent again, at most [`MAX_BODY`] bytes, joined with `sep`. With
/// `strip`, carriage returns and newlines of files are dropped, as curl's
/// `-d` does.
fn gather(items: &[String], flag: &str, sep: &[u8], strip: bool) -> Result<Payload, Report> {
    if let [only] = items
        && !strip
        && let Some(path) = only.strip_prefix('@').filter(|p| *p != "-")
    {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(flag, path, &e))?;
        if meta.is_file() {
            return Ok(Payload::File(FileBody::new(path, 0, meta.len())));
        }
    }
    let mut body = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(sep);
        }
        let room = (MAX_BODY + 1).saturating_sub(body.len()) as u64;
        let mut piece = match item.strip_prefix('@') {
            None => item.as_bytes().to_vec(),
            Some("-") => read_up_to(std::io::stdin().lock(), room)
                .map_err(|e| unreadable(flag, "standard input", &e))?,
            Some(path) => File::open(path)
                .and_then(|f| read_up_to(f, room))
                .map_err(|e| unreadable(flag, path, &e))?,
        };
        if strip && item.starts_with('@') {
            piece.retain(|b| *b != b'\r' && *b != b'\n');
        }
        body.extend_from_slice(&piece);
        if body.len() > MAX_BODY {
            return Err(Report::new(
                exit::USAGE,
                format!(
                    "{flag}: the body is larger than {} MiB, which is held in memory to be sent again",
                    MAX_BODY >> 20
                ),
            )
            .hint("send a large body from a file, with --data-binary @FILE: it is read from the file for every attempt")
            .detail("nothing was sent"));
        }
    }
    Ok(Payload::Bytes(body.into()))
}

fn read_up_to(reader: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

fn unreadable(flag: &str, what: &str, e: &std::io::Error) -> Report {
    Report::from_error(exit::USAGE, e)
        .detail(format!("{flag} @{what}: cannot be read"))
        .hint("nothing was sent")
}

/// Fails unless the body is one JSON document: checked as it is read from
/// a file, never held whole.
fn check_json(payload: &Payload) -> Result<(), Report> {
    let checked = match payload {
        Payload::Bytes(bytes) => serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map(|_| ()),
        Payload::File(file) => {
            let reader = File::open(file.path())
                .map_err(|e| unreadable("--json", &file.path().display().to_string(), &e))?;
            serde_json::from_reader::<_, serde::de::IgnoredAny>(BufReader::new(reader)).map(|_| ())
        }
    };
    checked.map_err(|e| {
        Report::new(exit::USAGE, format!("--json: not valid JSON: {e}")).hint("nothing was sent")
    })
}

/// `request` with `body` and its labels, unless the headers give them.
fn with_body<'c>(
    mut request: RequestBuilder<'c>,
    body: Body,
    headers: &[(String, String)],
) -> RequestBuilder<'c> {
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("content-type") {
        request = request.header("Content-Type", body.content_type);
    }
    if let Some(accept) = body.accept
        && !given("accept")
    {
        request = request.header("Accept", accept);
    }
    request.payload(body.payload)
}

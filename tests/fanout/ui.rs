//! The web dashboard in a real browser: Debian's chromium, headless,
//! driven over WebDriver by its chromedriver (installed by `.ci/run`;
//! without them these tests fail, loudly). And its sessions and CSRF
//! checks, over plain HTTP.
//!
//! With `BACKSTOP_UI_SCREENSHOTS=DIR`, the browser test saves a screenshot
//! of each page in DIR (the README's are made so, into `docs/ui/`).

use base64::Engine;

use super::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key of a WebDriver element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 exchange: (status, headers in lower case, body). The
/// body ends at its Content-Length (chromedriver keeps the connection
/// open), else where the server closes.
fn exchange(addr: &str, request: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head, body_start) = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase(),
                end + 4,
            );
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "{addr} closed before its answer's headers");
        answer.extend_from_slice(&chunk[..n]);
    };
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(length) => {
            while answer.len() < body_start + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "{addr} closed mid-answer");
                answer.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut answer).unwrap();
        }
    }
    let status = head[9..12].parse().unwrap();
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    let body = String::from_utf8_lossy(&answer[body_start..]).into_owned();
    (status, head, body)
}

/// A headless chromium under chromedriver, stopped when dropped.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        for program in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(program).exists(),
                "{program} is required for the dashboard's browser test; install Debian's \
                 chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr = format!("127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&browser.addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (status, answer) = browser.raw("POST", "/session", Some(caps));
        assert_eq!(status, 200, "no browser session: {answer}");
        browser.session = answer["value"]["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, _, text) = exchange(
            &self.addr,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            ),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A command of this session; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = self.raw(method, &path, body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    fn all(&self, css: &str) -> Vec<String> {
        let found = self.call(
            "POST",
            "/elements",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("not an element: {e}"))
                    .to_owned()
            })
            .collect()
    }

    /// Waits until `css` matches; the first element it matches.
    fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.all(css).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {css}; it shows:\n{}",
                self.text(&self.all("body")[0])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn click(&self, element: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(serde_json::json!({})),
        );
    }

    fn type_in(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(serde_json::json!({ "text": text })),
        );
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": script, "args": []})),
        )
    }

    /// Saves a screenshot as `NAME.png` in `BACKSTOP_UI_SCREENSHOTS`, if set.
    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("BACKSTOP_UI_SCREENSHOTS") else {
            return;
        };
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), bytes).unwrap();
    }

    /// What the browser's console said at level SEVERE (errors, refused
    /// resources, Content-Security-Policy violations) since last asked.
    fn console_errors(&self) -> Vec<String> {
        let log = self.call(
            "POST",
            "/se/log",
            Some(serde_json::json!({"type": "browser"})),
        );
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_dashboard_shows_a_delivery_die_and_requeues_it_from_the_page_until_done() {
    let f = fleet();
    let _serve = f.serve(&["--max-failures", "2"]);
    let fixed = f.path("fixed");
    let mut w1 = f.worker("gpu-1", "gpu", &[("install", "echo installed llama")]);
    let failing = format!(
        "echo 'pulling llama'; test -f {} || {{ echo 'no space left on /models' >&2; exit 1; }}",
        fixed.display()
    );
    let _w2 = f.worker("gpu-2", "gpu", &[("install", &failing)]);
    let server = server_of(&f);
    let b = Browser::start();
    // The console is read: what a page logs as an error is seen.
    b.goto(&format!("{server}/ui/sign-in"));
    b.script("console.error('backstop test: the console is read');");
    let seen = b.console_errors();
    assert!(
        seen.iter().any(|e| e.contains("the console is read")),
        "{seen:?}"
    );

    // Without a session, any page is the sign-in page, and only it.
    b.goto(&format!("{server}/ui/dead"));
    b.wait_for("#sign-in");
    assert!(b.url().ends_with("/ui/sign-in"), "{}", b.url());
    assert!(b.all("nav").is_empty() && b.all("#live").is_empty());
    b.screenshot("sign-in");
    b.type_in(&b.wait_for("#token"), &f.token);
    b.click(&b.wait_for("#sign-in button"));
    b.wait_for("nav a[aria-current='page'][href='/ui']");

    // The dead letters page, open before the operation exists: the
    // delivery that dies appears in it without a reload.
    b.goto(&format!("{server}/ui/dead"));
    b.wait_for("#no-dead");
    b.script("window.backstopMarker = 'still this page';");
    let op = f.submit("install", "gpu", &["--key", "llama"]);
    let row = b.wait_for("#dead tr[data-node='gpu-2']");
    assert_eq!(
        b.script("return window.backstopMarker;"),
        "still this page",
        "the page updated itself, not by a reload"
    );
    let text = b.text(&row);
    assert!(text.contains("no space left on /models"), "{text}");
    assert!(b.all("#dead tr[data-node='gpu-1']").is_empty());
    assert_eq!(f.wait_state(op, "gpu-1", "done")["state"], "done");
    b.screenshot("dead-letters");

    // Fixed; requeued from the page, after its confirmation.
    std::fs::write(&fixed, "").unwrap();
    let requeue = b.wait_for("#dead tr[data-node='gpu-2'] a.button");
    b.click(&requeue);
    let confirm = b.wait_for("#confirm");
    let question = b.text(&b.wait_for(".question"));
    assert!(question.starts_with("Requeue dead delivery "), "{question}");
    assert_eq!(
        delivery(&f.op(op), "gpu-2")["state"],
        "dead",
        "nothing requeued before the confirmation"
    );
    b.screenshot("confirm-requeue");
    b.click(&confirm);
    let flash = b.text(&b.wait_for(".flash"));
    assert_eq!(flash, "Requeued 1 dead delivery.");

    // The operation's page shows it done, with what its handler printed.
    b.goto(&format!("{server}/ui/ops/{op}"));
    b.wait_for("#deliveries tr[data-node='gpu-2'][data-state='done']");
    assert_eq!(f.wait_state(op, "gpu-2", "done")["failures"], 0);
    b.wait_for("#deliveries tr[data-node='gpu-1'][data-state='done']");
    // What its handler printed, opened (which pauses the live updates).
    b.click(&b.wait_for("#deliveries tr[data-node='gpu-2'] details summary"));
    let output = b.text(&b.wait_for("#deliveries tr[data-node='gpu-2'] details pre"));
    assert_eq!(output.trim(), "pulling llama");
    b.screenshot("operation");

    // The other pages show what happened.
    b.goto(&format!("{server}/ui/ops?kind=install&key=llama"));
    b.wait_for(&format!("#ops tr[data-op='{op}']"));
    // The API filters by key too.
    let (status, by_key) = http(&server, "GET", "/v1/ops?key=llama", Some(&f.token), "");
    assert_eq!((status, by_key[0]["id"].as_i64()), (200, Some(op)));
    let (_, none) = http(&server, "GET", "/v1/ops?key=another", Some(&f.token), "");
    assert_eq!(none, serde_json::json!([]));
    b.goto(&format!("{server}/ui/ops?key=another"));
    b.wait_for("#live p.muted");
    assert!(b.all("#ops").is_empty(), "filtered by key");
    b.goto(&format!("{server}/ui/ops"));
    b.wait_for(&format!("#ops tr[data-op='{op}']"));
    b.screenshot("operations");
    b.goto(&format!("{server}/ui/nodes"));
    let node = b.text(&b.wait_for("#nodes tr[data-node='gpu-2']"));
    assert!(
        node.contains("healthy") && node.contains("install"),
        "{node}"
    );
    b.screenshot("nodes");
    b.goto(&format!("{server}/ui"));
    let by_state = b.text(&b.wait_for("#by-state"));
    assert!(by_state.contains('2'), "two deliveries done: {by_state}");
    let chart = b.wait_for("#minutes");
    let label = b.call(
        "GET",
        &format!("/element/{chart}/attribute/aria-label"),
        None,
    );
    assert_eq!(label, "2 done and 2 failed in the last hour");
    b.screenshot("overview");

    // Drained and undrained from the nodes page.
    b.goto(&format!("{server}/ui/nodes"));
    b.click(&b.wait_for("#nodes tr[data-node='gpu-1'] form button"));
    assert!(
        b.text(&b.wait_for(".flash"))
            .starts_with("Drained node gpu-1")
    );
    assert_eq!(f.node("gpu-1")["drained"], true);
    b.click(&b.wait_for("#nodes tr[data-node='gpu-1'] form button"));
    assert!(
        b.text(&b.wait_for(".flash"))
            .starts_with("Undrained node gpu-1")
    );
    assert_eq!(f.node("gpu-1")["drained"], false);

    // Removed, drained first, after the confirmation: the worker stops.
    b.click(&b.wait_for("#nodes tr[data-node='gpu-1'] form button"));
    b.wait_for(".flash");
    b.click(&b.wait_for("#nodes tr[data-node='gpu-1'] a.danger"));
    let question = b.text(&b.wait_for(".question"));
    assert_eq!(question, "Remove node gpu-1?");
    assert_eq!(
        f.node("gpu-1")["drained"],
        true,
        "not removed before confirmed"
    );
    b.click(&b.wait_for("#confirm"));
    let flash = b.text(&b.wait_for(".flash"));
    assert!(flash.starts_with("Removed node gpu-1"), "{flash}");
    assert!(b.all("#nodes tr[data-node='gpu-1']").is_empty());
    assert_eq!(w1.exit_code(), Some(0), "a removed worker stops");

    let errors = b.console_errors();
    assert!(errors.is_empty(), "the browser's console: {errors:#?}");
}

/// Signs in over HTTP; the session cookie.
fn signed_in(server: &str, token: &str) -> String {
    let (status, head, _) = form_post(server, "/ui/sign-in", "", &format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("; httponly") && cookie.contains("; samesite=strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(token), "the token is never in the cookie");
    cookie.split(';').next().unwrap().to_owned()
}

fn form_post(server: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let addr = server.trim_start_matches("http://");
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get(server: &str, path: &str, headers: &str) -> (u16, String, String) {
    let addr = server.trim_start_matches("http://");
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"),
    )
}

#[test]
fn the_dashboard_needs_a_session_and_each_post_its_csrf_token_from_this_origin() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let _w = f.worker("gpu-1", "gpu", &[("install", "true")]);
    let server = server_of(&f);

    // No session: every page sends to the sign-in page, which shows
    // nothing of the queue; every POST is refused.
    for page in [
        "/ui",
        "/ui/nodes",
        "/ui/dead",
        "/ui/ops/1",
        "/ui/requeue?all=true",
    ] {
        let (status, head, _) = get(&server, page, "");
        assert_eq!(status, 303, "{page}");
        assert!(head.contains("location: /ui/sign-in"), "{page}: {head}");
    }
    let (status, _, page) = get(&server, "/ui/sign-in", "");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"sign-in\"") && !page.contains("gpu-1") && !page.contains("<nav"));
    let (status, _, _) = form_post(&server, "/ui/nodes/gpu-1/drain", "", "csrf=x");
    assert_eq!(status, 403);

    // A wrong token is refused, with no session.
    let (status, head, page) = form_post(&server, "/ui/sign-in", "", "token=not-the-token");
    assert_eq!(status, 401);
    assert!(!head.contains("set-cookie"), "{head}");
    assert!(
        page.contains("not this coordinator&#39;s token")
            || page.contains("not this coordinator's token"),
        "{page}"
    );
    // A sign-in from another site is refused too, even with the token.
    let cross = "Origin: http://evil.example\r\n";
    let (status, head, _) = form_post(&server, "/ui/sign-in", cross, &format!("token={}", f.token));
    assert_eq!(status, 403);
    assert!(!head.contains("set-cookie"), "{head}");

    // Signed in: a page carries the session's CSRF token.
    let cookie = signed_in(&server, &f.token);
    let with = format!("Cookie: {cookie}\r\n");
    let (status, _, page) = get(&server, "/ui/nodes", &with);
    assert_eq!(status, 200);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // A POST without the CSRF token, with another, or from another
    // origin: 403, and nothing changed.
    let drain = "/ui/nodes/gpu-1/drain";
    for (headers, body) in [
        (with.clone(), String::new()),
        (with.clone(), "csrf=".to_owned()),
        (with.clone(), format!("csrf={}", "0".repeat(64))),
        (format!("{with}{cross}"), format!("csrf={csrf}")),
        (
            format!("{with}Sec-Fetch-Site: cross-site\r\n"),
            format!("csrf={csrf}"),
        ),
    ] {
        let (status, _, answer) = form_post(&server, drain, &headers, &body);
        assert_eq!(status, 403, "{headers} {body}: {answer}");
    }
    assert_eq!(f.node("gpu-1")["drained"], false);
    // Another session's token is not this one's.
    let other = signed_in(&server, &f.token);
    let (status, _, _) = form_post(
        &server,
        drain,
        &format!("Cookie: {other}\r\n"),
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403);
    assert_eq!(f.node("gpu-1")["drained"], false);

    // With it, from this origin: done.
    let same = format!("{with}Origin: {server}\r\n");
    let (status, head, _) = form_post(&server, drain, &same, &format!("csrf={csrf}"));
    assert_eq!(status, 303, "{head}");
    assert_eq!(f.node("gpu-1")["drained"], true);

    // Signed out: the session is gone.
    let (status, head, _) = form_post(&server, "/ui/sign-out", &with, &format!("csrf={csrf}"));
    assert_eq!(status, 303);
    assert!(head.contains("max-age=0"), "{head}");
    let (status, _, _) = get(&server, "/ui/nodes", &with);
    assert_eq!(status, 303);
}

//! Only your nodes on NATS, only your operators on the API: each kind of
//! NATS credentials against a nats-server of the test's own that requires
//! it, NATS over TLS with certificates made here, workers confined to
//! their names by the README's nats-server configuration, and the API over
//! HTTPS. Every `serve` and `worker` here logs at `-vv`, and no secret may
//! appear in what they write, in the errors of a refused connection, or
//! in a handler's environment.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

impl Nats {
    /// A nats-server on a free port with `config` (after its `listen`
    /// line), and `env` for the variables the configuration reads.
    fn with_config(config: &str, env: &[(&str, &str)]) -> Nats {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, format!("listen: 127.0.0.1:{port}\n{config}\n")).unwrap();
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nats-server exited ({status}) with this configuration:\n{config}\n{}",
                    read(&dir.path().join("nats.log"))
                );
            }
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats { child, port, dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// `backstop -vv serve` on `nats` with `extra` flags and `env`; waits until
/// it serves and remembers its URL.
fn serve_vv(f: &Fleet, nats: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = f.cmd();
    cmd.args(["-vv", "serve", "--listen", "127.0.0.1:0", "--nats", nats])
        .args(["--subject-prefix", &f.prefix])
        .args(QUICK_SERVE)
        .args(extra)
        .envs(env.iter().copied());
    f.serving(cmd)
}

/// The `backstop -vv worker` command for `name` on `nats`, its handler
/// recording the operation in `ran` and its whole environment in `env`.
fn worker_cmd(f: &Fleet, nats: &str, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let handler = format!(
        "env > {}; echo $BACKSTOP_OP >> {}",
        f.path(&format!("{name}.env")).display(),
        f.path(&format!("{name}.ran")).display()
    );
    let mut cmd = f.cmd();
    cmd.args(["-vv", "worker", "--nats", nats, "--name", name])
        .args(["--type", "gpu", "--subject-prefix", &f.prefix])
        .args(["--heartbeat", "200ms", "--grace", "2s"])
        .arg("--handle")
        .arg(format!("install={handler}"))
        .args(extra)
        .envs(env.iter().copied());
    cmd
}

/// Runs `cmd`, which must exit by itself; its exit code and stderr.
fn exit_of(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_secret_free(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} shows a secret ({secret:?}):\n{text}"
        );
    }
}

/// How a coordinator and a worker prove who they are: flags and
/// environment.
struct Creds<'a> {
    args: Vec<String>,
    env: Vec<(&'a str, String)>,
}

impl Creds<'_> {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// On the NATS server at `bare` (a URL without credentials), which
/// requires them: a worker without is refused at once (exit 1); with them,
/// `serve` at `-vv` on `nats` (`bare`, or with credentials in it) and
/// `worker` at `-vv` on `bare` deliver an operation, and no secret shows in
/// their logs or in the handler's environment.
fn delivers_only_with_credentials(
    f: &Fleet,
    (bare, nats): (&str, &str),
    coordinator: &Creds,
    worker: &Creds,
    secrets: &[&str],
) -> (Proc, Proc) {
    let (code, err) = exit_of(worker_cmd(f, bare, "gpu-1", &[], &[]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    let serve = serve_vv(f, nats, &coordinator.args(), &coordinator.env());
    let mut w = Proc::spawn(
        worker_cmd(f, bare, "gpu-1", &worker.args(), &worker.env()),
        "backstop worker gpu-1",
    );
    w.wait_for("registered as node gpu-1");
    let op = f.submit("install", "gpu", &[]);
    f.wait_state(op, "gpu-1", "done");
    assert_eq!(read(&f.path("gpu-1.ran")).trim(), op.to_string());
    // The client library logged the server it connected to: the place a
    // password in the URL used to show.
    assert!(w.log().contains("attempting connection"), "{}", w.log());
    assert_secret_free("serve's stderr", &serve.log(), secrets);
    assert_secret_free("the worker's stderr", &w.log(), secrets);
    assert_secret_free(
        "the handler's environment",
        &read(&f.path("gpu-1.env")),
        secrets,
    );
    (serve, w)
}

#[test]
fn nats_user_and_password_from_a_file_the_environment_or_the_url() {
    let f = fleet();
    let nats = Nats::with_config(
        r#"authorization { users = [
            { user: coordinator, password: $COORDINATOR_PASSWORD }
            { user: gpu-1, password: $WORKER_PASSWORD }
        ] }"#,
        &[
            ("COORDINATOR_PASSWORD", "coordinator-pw-3f9a"),
            ("WORKER_PASSWORD", "worker-pw-77c1"),
        ],
    );
    let secrets = ["coordinator-pw-3f9a", "worker-pw-77c1"];
    // The coordinator's password in the URL on its command line: it works,
    // with a warning that `ps` shows it.
    let in_url = format!(
        "nats://coordinator:coordinator-pw-3f9a@127.0.0.1:{}",
        nats.port
    );
    let password_file = nats.file("worker.password", "worker-pw-77c1\n");
    let from_file = Creds {
        args: vec![
            "--nats-user".into(),
            "gpu-1".into(),
            "--nats-password-file".into(),
            password_file,
        ],
        env: vec![],
    };
    let (mut serve, mut w) = delivers_only_with_credentials(
        &f,
        (&nats.url(), &in_url),
        &Creds {
            args: vec![],
            env: vec![],
        },
        &from_file,
        &secrets,
    );
    serve.wait_for("carries credentials, which `ps` shows");
    w.stop();
    // From the environment, and wrong: refused, and the wrong one is not
    // shown either.
    let from_env = |password: &str| {
        worker_cmd(
            &f,
            &nats.url(),
            "gpu-1",
            &["--nats-user", "gpu-1"],
            &[("BACKSTOP_NATS_PASSWORD", password)],
        )
    };
    let (code, err) = exit_of(from_env("not-the-pw-5d2e"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    assert_secret_free("a refusal", &err, &["not-the-pw-5d2e"]);
    let mut w = Proc::spawn(from_env("worker-pw-77c1"), "backstop worker gpu-1");
    w.wait_for("registered as node gpu-1");
    let op = f.submit("install", "gpu", &[]);
    f.wait_state(op, "gpu-1", "done");
    assert!(
        !w.log().contains("carries credentials"),
        "only a URL with credentials warns:\n{}",
        w.log()
    );
    assert_secret_free("the worker's stderr", &w.log(), &secrets);
    assert_secret_free(
        "the handler's environment",
        &read(&f.path("gpu-1.env")),
        &secrets,
    );
    // A wrong password in the URL is not shown in the refusal either.
    let wrong = format!("nats://gpu-1:url-pw-wrong-91b3@127.0.0.1:{}", nats.port);
    let (code, err) = exit_of(worker_cmd(&f, &wrong, "gpu-9", &[], &[]));
    assert_eq!(code, Some(1), "{err}");
    assert_secret_free("a refusal", &err, &["url-pw-wrong-91b3"]);
    w.stop();
    serve.stop();
}

#[test]
fn nats_token_from_a_file_or_the_environment() {
    let f = fleet();
    let nats = Nats::with_config(
        "authorization { token: $TOKEN }",
        &[("TOKEN", "nats-token-0c4b2e")],
    );
    let token_file = nats.file("token", "nats-token-0c4b2e\n");
    let (mut serve, mut w) = delivers_only_with_credentials(
        &f,
        (&nats.url(), &nats.url()),
        &Creds {
            args: vec!["--nats-token-file".into(), token_file],
            env: vec![],
        },
        &Creds {
            args: vec![],
            env: vec![("BACKSTOP_NATS_TOKEN", "nats-token-0c4b2e".into())],
        },
        &["nats-token-0c4b2e"],
    );
    w.stop();
    serve.stop();
}

#[test]
fn nats_nkey_seeds_from_files() {
    let f = fleet();
    let coordinator = nkeys::KeyPair::new_user();
    let worker = nkeys::KeyPair::new_user();
    let nats = Nats::with_config(
        &format!(
            "authorization {{ users = [ {{ nkey: {} }}, {{ nkey: {} }} ] }}",
            coordinator.public_key(),
            worker.public_key()
        ),
        &[],
    );
    let (cseed, wseed) = (coordinator.seed().unwrap(), worker.seed().unwrap());
    let creds = |file: &str| Creds {
        args: vec!["--nats-nkey-file".into(), file.to_owned()],
        env: vec![],
    };
    let (mut serve, mut w) = delivers_only_with_credentials(
        &f,
        (&nats.url(), &nats.url()),
        &creds(&nats.file("coordinator.nk", &format!("{cseed}\n"))),
        &creds(&nats.file("worker.nk", &wseed)),
        &[&cseed, &wseed],
    );
    w.stop();
    serve.stop();
    // A seed that is not one is refused before anything is tried.
    let bad = nats.file("bad.nk", "SUnot-a-seed-6e1f\n");
    let (code, err) = exit_of(worker_cmd(
        &f,
        &nats.url(),
        "gpu-1",
        &["--nats-nkey-file", &bad],
        &[],
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the NATS credentials (an NKey seed) cannot be used"),
        "{err}"
    );
    assert_secret_free("a refusal", &err, &["not-a-seed-6e1f"]);
}

/// A JWT as nats-server reads them: header, claims, and an Ed25519
/// signature by `signer`, base64url without padding.
fn jwt(claims: Value, signer: &nkeys::KeyPair) -> String {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = signer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}

fn claims(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> Value {
    serde_json::json!({
        "jti": format!("{:X}", fastrand_u64()),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    })
}

/// A `.creds` file for a new user of `account`, as `nsc` writes them.
fn creds_file(account: &nkeys::KeyPair, name: &str) -> (String, String) {
    let user = nkeys::KeyPair::new_user();
    let token = jwt(
        claims(
            account,
            &user.public_key(),
            name,
            serde_json::json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        ),
        account,
    );
    let seed = user.seed().unwrap();
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    (text, seed)
}

#[test]
fn nats_creds_files_against_an_operator_mode_server() {
    let f = fleet();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        claims(
            &operator,
            &operator.public_key(),
            "backstop-test",
            serde_json::json!({"type": "operator", "version": 2}),
        ),
        &operator,
    );
    let account_jwt = jwt(
        claims(
            &operator,
            &account.public_key(),
            "fleet",
            serde_json::json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account", "version": 2
            }),
        ),
        &operator,
    );
    let nats = Nats::with_config(
        &format!(
            "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {account_jwt}\n}}",
            account.public_key()
        ),
        &[],
    );
    let (coordinator_creds, coordinator_seed) = creds_file(&account, "coordinator");
    let (worker_creds, worker_seed) = creds_file(&account, "gpu-1");
    let creds = |file: String| Creds {
        args: vec!["--nats-creds".into(), file],
        env: vec![],
    };
    let (mut serve, mut w) = delivers_only_with_credentials(
        &f,
        (&nats.url(), &nats.url()),
        &creds(nats.file("coordinator.creds", &coordinator_creds)),
        &Creds {
            args: vec![],
            env: vec![(
                "BACKSTOP_NATS_CREDS",
                nats.file("worker.creds", &worker_creds),
            )],
        },
        &[&coordinator_seed, &worker_seed],
    );
    w.stop();
    serve.stop();
    // Credentials of another operator's account are refused.
    let stranger = nkeys::KeyPair::new_account();
    let (other_creds, other_seed) = creds_file(&stranger, "gpu-1");
    let file = nats.file("other.creds", &other_creds);
    let (code, err) = exit_of(worker_cmd(
        &f,
        &nats.url(),
        "gpu-1",
        &["--nats-creds", &file],
        &[],
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    assert_secret_free("a refusal", &err, &[&other_seed]);
}

/// A certificate authority made here, and the certificates it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "backstop test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` with `usage`, and its key: PEM.
    fn sign(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

#[test]
fn nats_over_tls_with_a_ca_of_its_own_and_client_certificates() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let f = fleet();
    let ca = Ca::new();
    let (server_cert, server_key) = ca.sign(&["127.0.0.1", "localhost"], ServerAuth);
    let (client_cert, client_key) = ca.sign(&["gpu-1"], ClientAuth);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca_file, server_cert, server_key) = (
        file("ca.pem", &ca.pem),
        file("server.pem", &server_cert),
        file("server.key", &server_key),
    );
    let (client_cert, client_key) = (
        file("client.pem", &client_cert),
        file("client.key", &client_key),
    );
    let nats = Nats::with_config(
        &format!(
            "tls {{\n  cert_file: \"{server_cert}\"\n  key_file: \"{server_key}\"\n  \
             ca_file: \"{ca_file}\"\n  verify: true\n  timeout: 2\n}}"
        ),
        &[],
    );
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let tls = Creds {
        args: vec![
            "--nats-ca-file".into(),
            ca_file.clone(),
            "--nats-cert".into(),
            client_cert.clone(),
            "--nats-key".into(),
            client_key.clone(),
        ],
        env: vec![],
    };
    let client_key_text = read(Path::new(&client_key));
    let secret = client_key_text
        .lines()
        .nth(1)
        .expect("a PEM key has a body");
    let (mut serve, mut w) =
        delivers_only_with_credentials(&f, (&url, &url), &tls, &tls, &[secret]);
    w.stop();
    // Without a client certificate, or trusting another CA: refused at
    // once.
    let other = Ca::new();
    let other_ca = file("other-ca.pem", &other.pem);
    for extra in [
        vec!["--nats-ca-file", ca_file.as_str()],
        vec![
            "--nats-ca-file",
            other_ca.as_str(),
            "--nats-cert",
            client_cert.as_str(),
            "--nats-key",
            client_key.as_str(),
        ],
    ] {
        let (code, err) = exit_of(worker_cmd(&f, &url, "gpu-2", &extra, &[]));
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(err.contains("refused the connection"), "{extra:?}: {err}");
    }
    // A CA file that is not one is told at start-up (exit 2).
    let (code, err) = exit_of(worker_cmd(
        &f,
        &url,
        "gpu-2",
        &["--nats-ca-file", &client_key],
        &[],
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("for TLS to NATS"), "{err}");
    serve.stop();
}

/// The README's nats-server configuration that confines each worker to
/// its name.
fn readme_confinement() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("# nats-server.conf: coordinators use every subject")
        .expect("the README gives the nats-server configuration that confines workers");
    let block = &readme[start..];
    block[..block.find("```").unwrap()].to_owned()
}

/// A client of NATS speaking its text protocol, to play a compromised
/// worker: it can say anything its credentials let it.
struct Rogue {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Rogue {
    fn connect(port: u16, user: &str, password: &str) -> Rogue {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rogue = Rogue {
            lines: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        assert!(rogue.line().starts_with("INFO"));
        let connect = serde_json::json!({
            "user": user, "pass": password, "verbose": false, "pedantic": false,
            "protocol": 1, "headers": false, "no_responders": false,
        });
        rogue.send(&format!("CONNECT {connect}\r\nPING\r\n"));
        let answer = rogue.line();
        assert_eq!(answer, "PONG", "the rogue's connection was refused");
        rogue
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines
            .read_line(&mut line)
            .expect("nats-server answers the rogue in time");
        line.trim_end().to_owned()
    }

    /// The next message or error, answering the server's pings.
    fn next(&mut self) -> String {
        loop {
            let line = self.line();
            match line.as_str() {
                "PING" => self.send("PONG\r\n"),
                "PONG" | "+OK" => {}
                _ if line.starts_with("MSG ") => {
                    let payload = self.line();
                    return payload;
                }
                _ => return line,
            }
        }
    }

    /// Publishes `body` on `subject`; what comes back first: the server's
    /// error, or the answer on `inbox`.
    fn publish(&mut self, subject: &str, inbox: Option<&str>, body: &Value) -> String {
        let body = body.to_string();
        let reply = inbox.map(|i| format!(" {i}")).unwrap_or_default();
        self.send(&format!(
            "PUB {subject}{reply} {}\r\n{body}\r\nPING\r\n",
            body.len()
        ));
        self.next()
    }
}

#[test]
fn a_worker_confined_to_its_name_cannot_register_as_another_or_answer_for_it() {
    let mut f = fleet();
    // The README's configuration speaks of the default prefix.
    f.prefix = "backstop".to_owned();
    let passwords = [
        ("COORDINATOR_PASSWORD", "coord-pw-1a2b"),
        ("GPU_7_PASSWORD", "gpu7-pw-3c4d"),
        ("GPU_8_PASSWORD", "gpu8-pw-5e6f"),
    ];
    let nats = Nats::with_config(&readme_confinement(), &passwords);
    let as_user = |user: &str, password: &str| Creds {
        args: vec!["--nats-user".into(), user.to_owned()],
        env: vec![("BACKSTOP_NATS_PASSWORD", password.to_owned())],
    };
    let coordinator = as_user("coordinator", "coord-pw-1a2b");
    let mut serve = serve_vv(&f, &nats.url(), &coordinator.args(), &coordinator.env());
    // gpu-7 works as gpu-7.
    let gpu7 = as_user("gpu-7", "gpu7-pw-3c4d");
    let mut w7 = Proc::spawn(
        worker_cmd(&f, &nats.url(), "gpu-7", &gpu7.args(), &gpu7.env()),
        "backstop worker gpu-7",
    );
    w7.wait_for("registered as node gpu-7");
    // ...but cannot be gpu-8: exit 1, naming the subject it was refused.
    let (code, err) = exit_of(worker_cmd(
        &f,
        &nats.url(),
        "gpu-8",
        &gpu7.args(),
        &gpu7.env(),
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("NATS does not let this worker use the subjects of node gpu-8"),
        "{err}"
    );
    assert!(err.contains("backstop.node.gpu-8."), "{err}");
    assert_secret_free("a refusal", &err, &["gpu7-pw-3c4d"]);
    let names: Vec<Value> = f
        .json_lines(&["nodes", "list"])
        .into_iter()
        .map(|n| n["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("gpu-7")]);
    // gpu-8 runs a delivery that waits for a file.
    let go = f.path("go");
    let gpu8 = as_user("gpu-8", "gpu8-pw-5e6f");
    let mut cmd = worker_cmd(&f, &nats.url(), "gpu-8", &gpu8.args(), &gpu8.env());
    cmd.arg("--handle").arg(format!(
        "wait=while [ ! -e {} ]; do sleep 0.05; done",
        go.display()
    ));
    let mut w8 = Proc::spawn(cmd, "backstop worker gpu-8");
    w8.wait_for("registered as node gpu-8");
    let op = f.json(&["ops", "submit", "wait", "--node", "gpu-8"])["op"]["id"]
        .as_i64()
        .unwrap();
    let running = f.wait_state(op, "gpu-8", "in_flight");
    let token = serde_json::json!({
        "delivery": running["id"], "attempt": running["attempt"],
    });
    // A rogue holding gpu-7's credentials tries to answer for gpu-8.
    let mut rogue = Rogue::connect(nats.port, "gpu-7", "gpu7-pw-3c4d");
    let inbox = "backstop.node.gpu-7.inbox.rogue";
    rogue.send(&format!("SUB {inbox}.> 1\r\n"));
    let done = |node: &str| serde_json::json!({"token": token, "node": node, "outcome": "done"});
    // On gpu-8's subjects: the server refuses.
    for (subject, body) in [
        ("backstop.from.gpu-8.results", done("gpu-8")),
        (
            "backstop.from.gpu-8.heartbeat",
            serde_json::json!({"name": "gpu-8", "session": "x", "leaving": true}),
        ),
    ] {
        let said = rogue.publish(subject, None, &body);
        assert!(
            said.contains("Permissions Violation for Publish"),
            "{subject}: {said}"
        );
    }
    rogue.send("SUB backstop.node.gpu-8.deliver 2\r\nPING\r\n");
    let said = rogue.next();
    assert!(
        said.contains("Permissions Violation for Subscription"),
        "{said}"
    );
    // On its own subjects, speaking for gpu-8, for a delivery of gpu-8's,
    // or for a name nobody holds: the coordinator answers, and ignores it.
    for (n, (subject, body)) in [
        ("backstop.from.gpu-7.results", done("gpu-8")),
        ("backstop.from.gpu-7.results", done("gpu-7")),
        (
            "backstop.from.gpu-7.register",
            serde_json::json!({
                "name": "gpu-9", "node_type": "gpu", "kinds": ["install"],
                "capacity": 1, "session": "rogue",
            }),
        ),
        (
            "backstop.from.gpu-7.heartbeat",
            serde_json::json!({"name": "gpu-8", "session": "rogue", "leaving": true}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = rogue.publish(subject, Some(&format!("{inbox}.{n}")), &body);
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("{subject}: the coordinator answered {answer:?}"));
        assert_ne!(answer["ok"], true, "{subject}: {answer}");
    }
    serve.wait_for("which was offered to node gpu-8; ignored");
    serve.wait_for("a message for node gpu-9 arrived on backstop.from.gpu-7.register");
    serve.wait_for("a message for node gpu-8 arrived on backstop.from.gpu-7.heartbeat");
    let names: Vec<Value> = f
        .json_lines(&["nodes", "list"])
        .into_iter()
        .map(|n| n["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("gpu-7"), Value::from("gpu-8")]);
    let still = delivery(&f.op(op), "gpu-8");
    assert_eq!(still["state"], "in_flight", "{still}");
    assert_eq!(f.node("gpu-8")["status"], "healthy");
    // gpu-8's own outcome is the one stored.
    std::fs::write(&go, "").unwrap();
    let finished = f.wait_state(op, "gpu-8", "done");
    assert_eq!(
        (finished["attempts"].as_u64(), finished["failures"].as_u64()),
        (Some(1), Some(0)),
        "{finished}"
    );
    assert_secret_free("serve's stderr", &serve.log(), &passwords.map(|(_, p)| p));
    w7.stop();
    w8.stop();
    serve.stop();
}

#[test]
fn the_api_over_tls_is_trusted_with_its_ca_and_refused_without() {
    use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let f = fleet();
    let ca = Ca::new();
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"], ServerAuth);
    for (name, text) in [("ca.pem", &ca.pem), ("api.pem", &cert), ("api.key", &key)] {
        std::fs::write(f.path(name), text).unwrap();
    }
    let path = |name: &str| f.path(name).display().to_string();
    let mut cmd = f.cmd();
    cmd.args(["-vv", "serve", "--listen", "127.0.0.1:0"]).args([
        "--tls-cert",
        &path("api.pem"),
        "--tls-key",
        &path("api.key"),
    ]);
    let mut serve = f.serving(cmd);
    let url = f.server.lock().unwrap().clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // Trusting the CA: by flag, and by BACKSTOP_CA_FILE.
    let ops = f.run(&[
        "ops",
        "list",
        "--json",
        "--server",
        &url,
        "--ca-file",
        &path("ca.pem"),
    ]);
    assert_eq!(
        ops.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ops.stderr)
    );
    let nodes = f
        .cmd()
        .env("BACKSTOP_CA_FILE", path("ca.pem"))
        .args(["nodes", "list", "--json", "--server", &url])
        .output()
        .unwrap();
    assert_eq!(
        nodes.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    // Without it, or trusting another CA: refused, saying why.
    let other = Ca::new();
    std::fs::write(f.path("other.pem"), &other.pem).unwrap();
    for extra in [vec![], vec!["--ca-file".to_owned(), path("other.pem")]] {
        let mut args = vec![
            "ops".to_owned(),
            "list".into(),
            "--server".into(),
            url.clone(),
        ];
        args.extend(extra.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = f.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains("invalid peer certificate"), "{extra:?}: {err}");
        assert!(err.contains("--ca-file"), "{extra:?}: {err}");
        assert_secret_free("a refusal", &err, &[&f.token]);
    }
    // A key that is not one is told at start-up (exit 2).
    let out = f.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &path("api.pem"),
        "--tls-key",
        &path("ca.pem"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("for the API's TLS"), "{err}");
    // Plain HTTP on the TLS port gets nothing.
    let plain = url.replace("https://", "http://");
    let out = f.run(&["ops", "list", "--server", &plain]);
    assert_ne!(out.status.code(), Some(0));
    serve.stop();
}

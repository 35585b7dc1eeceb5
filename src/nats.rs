//! NATS for `serve` and `worker`: the server's URL with the credentials and
//! TLS of the flags, secrets read from files or the environment — never
//! from the command line, where `ps` shows them to every user.

use std::path::Path;

use backstop_core::Secret;
use backstop_queue::transport::nats::connection::{NatsAuth, NatsServer, NatsTls};

use crate::cli::NatsArgs;
use crate::report::{Report, exit};

/// The variable the NATS password may come from (with `--nats-user`).
pub const PASSWORD_ENV: &str = "BACKSTOP_NATS_PASSWORD";

/// The variable a NATS token may come from.
pub const TOKEN_ENV: &str = "BACKSTOP_NATS_TOKEN";

/// The NATS server at `url` (from `--nats` or `BACKSTOP_NATS`), with the
/// credentials and TLS `args` give. Credentials in a URL given on the
/// command line still work, with a warning.
pub fn server(url: &str, args: &NatsArgs) -> Result<NatsServer, Report> {
    let mut server = NatsServer::parse(url)?;
    if server.credentials_in_url() && std::env::var("BACKSTOP_NATS").ok().as_deref() != Some(url) {
        tracing::warn!(
            "the --nats URL carries credentials, which `ps` shows to every user of this \
             machine; give them in a file (--nats-user with --nats-password-file, \
             --nats-token-file) or in {PASSWORD_ENV} or {TOKEN_ENV} instead"
        );
    }
    for auth in credentials(args)? {
        server = server.with_auth(auth)?;
    }
    let tls = NatsTls {
        ca_file: args.nats_ca_file.clone(),
        cert_file: args.nats_cert.clone(),
        key_file: args.nats_key.clone(),
    };
    Ok(server.with_tls(tls)?)
}

/// Every kind of credentials the flags and the environment give (more
/// than one is refused by [`NatsServer::with_auth`]).
fn credentials(args: &NatsArgs) -> Result<Vec<NatsAuth>, Report> {
    let mut given = Vec::new();
    let password = env_secret(PASSWORD_ENV);
    match (&args.nats_user, password) {
        (Some(user), password) => {
            let password = match (&args.nats_password_file, password) {
                (Some(file), _) => read_secret(file, "--nats-password-file")?,
                (None, Some(password)) => password,
                (None, None) => {
                    return Err(Report::new(
                        exit::USAGE,
                        format!("--nats-user {user} has no password"),
                    )
                    .hint(format!(
                        "put it in a file for --nats-password-file, or in {PASSWORD_ENV}"
                    )));
                }
            };
            given.push(NatsAuth::UserPassword {
                user: user.clone(),
                password,
            });
        }
        (None, Some(_)) => {
            return Err(Report::new(
                exit::USAGE,
                format!("{PASSWORD_ENV} is set, but no --nats-user (or BACKSTOP_NATS_USER)"),
            ));
        }
        (None, None) => {}
    }
    match (&args.nats_token_file, env_secret(TOKEN_ENV)) {
        (Some(file), _) => given.push(NatsAuth::Token(read_secret(file, "--nats-token-file")?)),
        (None, Some(token)) => given.push(NatsAuth::Token(token)),
        (None, None) => {}
    }
    if let Some(file) = &args.nats_nkey_file {
        given.push(NatsAuth::NKey(read_secret(file, "--nats-nkey-file")?));
    }
    if let Some(file) = &args.nats_creds {
        given.push(NatsAuth::Credentials(read_secret(file, "--nats-creds")?));
    }
    Ok(given)
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(Secret::new)
}

/// The secret in `file`, without the line end an editor adds. The error
/// names the file and the flag, never what it holds.
fn read_secret(file: &Path, flag: &str) -> Result<Secret, Report> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Report::from_error(exit::USAGE, &e).detail(format!("{flag} {}", file.display()))
    })?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Err(Report::new(
            exit::USAGE,
            format!("{flag} {} is empty", file.display()),
        ));
    }
    Ok(Secret::new(text))
}

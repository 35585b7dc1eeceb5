//! `backstop login` and `backstop logout`: registry credentials where
//! docker and oras keep them.

use backstop_core::{Ending, Secret};
use backstop_oci::{CredentialFiles, Credentials, Registry};
use tokio::io::AsyncReadExt;

use crate::cli::{LoginArgs, LogoutArgs};
use crate::report::{Report, exit};

pub async fn login(args: LoginArgs) -> Result<(), Report> {
    let mut input = String::new();
    tokio::io::stdin()
        .read_to_string(&mut input)
        .await
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    // As docker does: one trailing newline is the terminal's, not the
    // password's.
    let password = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input);
    if password.is_empty() {
        return Err(Report::new(exit::USAGE, "no password on standard input")
            .hint("echo \"$TOKEN\" | backstop login REGISTRY -u USER --password-stdin"));
    }
    let credentials = Credentials {
        username: args.username.clone(),
        password: Secret::new(password),
    };
    let client = args.retry.client_trusting(args.ca_file.as_deref())?;
    let registry = Registry::new(
        client,
        &args.registry,
        args.plain_http,
        Some(credentials.clone()),
    )?;
    let checked = args.retry.policy().retry(|_| registry.ping("")).run().await;
    if let Err(e) = checked {
        let auth = e.ending == Ending::Auth;
        let error = backstop_oci::Error::Registry {
            host: registry.host().to_owned(),
            source: Box::new(e),
        };
        let report = Report::from_error(
            crate::report::code_for(error.ending().unwrap_or(Ending::Permanent)),
            &error,
        )
        .detail("nothing was stored");
        return Err(if auth {
            report.hint("check the user name and the password or token")
        } else {
            report
        });
    }
    let path = CredentialFiles::from_env()
        .store(&args.registry, &credentials)
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    eprintln!(
        "backstop: logged in to {} as {}; credentials stored in {}",
        args.registry,
        args.username,
        path.display()
    );
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<(), Report> {
    let files = CredentialFiles::from_env();
    let removed = files
        .remove(&args.registry)
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    let path = files
        .docker
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if removed {
        eprintln!(
            "backstop: removed the credentials of {} from {path}",
            args.registry
        );
    } else {
        eprintln!("backstop: no credentials of {} in {path}", args.registry);
    }
    Ok(())
}

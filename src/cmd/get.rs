//! `backstop get`: one GET with the engine's retries.

use std::io::Write;

use crate::cli::GetArgs;
use crate::report::Report;

pub async fn run(args: GetArgs) -> Result<(), Report> {
    let client = args.retry.client()?;
    let mut request = client.get(&args.url);
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    match &args.output {
        Some(path) => {
            let written = request.to_file(path).await?;
            tracing::info!("wrote {written} bytes to {}", path.display());
        }
        None => {
            // The whole body first, then stdout: a retry never leaves a
            // partial copy in a pipe.
            let mut body = request.spool().await?;
            let mut stdout = std::io::stdout().lock();
            let copied = std::io::copy(&mut body, &mut stdout).and_then(|_| stdout.flush());
            match copied {
                Ok(()) => {}
                // The reader went away (`| head`): not our failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    return Err(Report::from_error(crate::report::exit::FAILURE, &e)
                        .hint("stdout could not be written"));
                }
            }
        }
    }
    Ok(())
}

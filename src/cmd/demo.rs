//! `backstop demo`: the engine at work against a flaky server on this
//! machine, so a fresh install can see what it does without a network.

use std::time::Duration;

use backstop_core::Policy;
use backstop_faultserver::{FaultServer, Reply};
use backstop_http::Client;

use crate::cli::{SearchArgs, SortArg};
use crate::report::{Report, exit};

const MODELS: &str = r#"[
 {"id":"Qwen/Qwen3-8B-GGUF","downloads":152311,"likes":312,"pipeline_tag":"text-generation","createdAt":"2026-04-28T09:12:44.000Z"},
 {"id":"bartowski/Llama-3.2-3B-Instruct-GGUF","downloads":980112,"likes":188,"pipeline_tag":"text-generation","createdAt":"2024-09-25T18:30:01.000Z"},
 {"id":"ggml-org/gemma-3-4b-it-GGUF","downloads":77120,"likes":95,"pipeline_tag":"image-text-to-text","createdAt":"2025-03-12T08:00:00.000Z"}
]"#;

pub async fn run() -> Result<(), Report> {
    let server = FaultServer::try_start().map_err(|e| {
        Report::from_error(exit::FAILURE, &e).detail("cannot start the local Hub on 127.0.0.1")
    })?;
    server.script(
        "/api/models",
        [
            Reply::status(429)
                .header("Retry-After", "1")
                .body(r#"{"error":"You are being rate limited"}"#),
            Reply::status(503).body("upstream overloaded"),
            Reply::json(MODELS).cut_after(MODELS.len() / 2),
            Reply::json(MODELS),
        ],
    );
    eprintln!(
        "backstop: demo: a local Hub at {} answers 429 (Retry-After: 1), then 503, \
         then cuts its answer halfway, and only then answers",
        server.url("")
    );
    let policy = Policy::api().with_initial_delay(Duration::from_millis(500));
    let client = Client::builder().policy(policy).build()?;
    let hub = super::hub::hub_at(client, &server.url(""))?;
    let args = SearchArgs {
        datasets: false,
        search: Some("gguf".into()),
        author: None,
        sort: Some(SortArg::Trending),
        limit: 5,
        json: false,
        skip_on_rate_limit: false,
        retry: Default::default(),
    };
    super::hub::list(&hub, &args).await?;
    eprintln!(
        "backstop: demo: the listing came through after {} requests",
        server.requests().len()
    );
    Ok(())
}

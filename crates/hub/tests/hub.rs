//! The Hub client against a fake Hub: queries, tokens, pagination through
//! rate limits.

use std::time::Duration;

use backstop_core::{Ending, Jitter, Secret};
use backstop_faultserver::{FaultServer, Reply};
use backstop_http::{Client, Policy};
use backstop_hub::{Error, Hub, Query, RepoKind, Sort};

fn hub(server: &FaultServer, token: Option<&str>) -> Hub {
    let policy = Policy::api()
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
        .with_jitter(Jitter::None);
    let client = Client::builder().policy(policy).build().unwrap();
    Hub::new(client, &server.url(""), token.map(Secret::new)).unwrap()
}

fn page(ids: &[&str]) -> String {
    let items: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"id":"{id}","modelId":"{id}","downloads":1,"likes":2}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn a_search_sends_the_query_and_the_token() {
    let server = FaultServer::start();
    server.script("/api/models", [Reply::json(page(&["a/one", "b/two"]))]);
    let query = Query {
        search: Some("llama 3".into()),
        author: Some("meta".into()),
        sort: Some(Sort::Downloads),
        limit: 2,
    };
    let models = hub(&server, Some("hf_token"))
        .search(RepoKind::Model, &query)
        .await
        .unwrap();
    assert_eq!(models.len(), 2);
    let sent = &server.requests()[0];
    assert_eq!(
        sent.uri,
        "/api/models?search=llama+3&author=meta&sort=downloads&direction=-1&limit=2"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer hf_token"));
}

#[tokio::test]
async fn no_token_no_authorization_header() {
    let server = FaultServer::start();
    server.script("/api/models", [Reply::json("[]")]);
    let models = hub(&server, None)
        .search(RepoKind::Model, &Query::default())
        .await
        .unwrap();
    assert!(models.is_empty());
    assert_eq!(server.requests()[0].header("authorization"), None);
    assert!(server.requests()[0].uri.ends_with("limit=20"));
}

#[tokio::test]
async fn a_rate_limit_on_a_later_page_is_waited_out_not_dropped() {
    let server = FaultServer::start();
    let next = format!(
        "<{}>; rel=\"next\"",
        server.url("/api/models?cursor=p2&limit=4")
    );
    server.script(
        "/api/models",
        [
            Reply::json(page(&["a/1", "a/2"])).header("Link", &next),
            Reply::status(429).header("RateLimit", "\"api\";r=0;t=1"),
            Reply::json(page(&["a/3", "a/4"])),
        ],
    );
    let query = Query {
        limit: 4,
        ..Default::default()
    };
    let models = hub(&server, None)
        .search(RepoKind::Model, &query)
        .await
        .unwrap();
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a/1", "a/2", "a/3", "a/4"]);
    assert_eq!(server.hits("/api/models"), 3);
    assert!(server.requests()[2].uri.contains("cursor=p2"));
}

#[tokio::test]
async fn the_listing_stops_at_the_limit_and_never_follows_links_elsewhere() {
    let server = FaultServer::start();
    server.script(
        "/api/models",
        [Reply::json(page(&["a/1", "a/2", "a/3"])).header(
            "Link",
            "<https://evil.example/api/models?cursor=x>; rel=\"next\"",
        )],
    );
    let query = Query {
        limit: 10,
        ..Default::default()
    };
    let models = hub(&server, Some("hf_secret"))
        .search(RepoKind::Model, &query)
        .await
        .unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(server.hits("/api/models"), 1);

    server.script(
        "/api/models",
        [Reply::json(page(&["a/1", "a/2", "a/3"])).header(
            "Link",
            &format!("<{}>; rel=\"next\"", server.url("/api/models?cursor=2")),
        )],
    );
    let query = Query {
        limit: 2,
        ..Default::default()
    };
    let models = hub(&server, None)
        .search(RepoKind::Model, &query)
        .await
        .unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(server.hits("/api/models"), 2, "no page beyond the limit");
}

#[tokio::test]
async fn a_persistent_rate_limit_is_typed() {
    let server = FaultServer::start();
    server.always("/api/models", Reply::status(429));
    let err = hub(&server, None)
        .search(RepoKind::Model, &Query::default())
        .await
        .unwrap_err();
    let Error::Http(http) = &err else {
        panic!("{err}")
    };
    assert_eq!(http.ending(), Some(Ending::RateLimited { wait: None }));
    assert!(err.is_temporary());
    assert_eq!(server.hits("/api/models"), 5);
}

#[tokio::test]
async fn a_page_that_is_not_a_list_is_a_clear_error() {
    let server = FaultServer::start();
    server.always("/api/models", Reply::json(r#"{"error":"maintenance"}"#));
    let err = hub(&server, None)
        .search(RepoKind::Model, &Query::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Answer(_)));
    assert!(err.to_string().contains("not a list of models"), "{err}");
    assert!(!err.is_temporary() && !err.is_usage());
}

#[tokio::test]
async fn revisions_are_fetched_through_the_same_layer() {
    let server = FaultServer::start();
    let path = "/api/models/Qwen/Qwen3-8B-GGUF/revision/refs%2Fpr%2F3";
    server.script(
        path,
        [
            Reply::status(503),
            Reply::json(include_str!("fixtures/model-revision.json")),
        ],
    );
    let info = hub(&server, None)
        .info(RepoKind::Model, "Qwen/Qwen3-8B-GGUF", Some("refs/pr/3"))
        .await
        .unwrap();
    assert_eq!(info.siblings.len(), 3);
    assert_eq!(server.hits(path), 2);
    assert!(server.requests()[0].uri.ends_with("?blobs=true"));

    let err = hub(&server, None)
        .info(RepoKind::Model, "../../etc", Some("main"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert_eq!(server.requests().len(), 2, "nothing sent for a bad id");
}

#[tokio::test]
async fn datasets_are_searched_and_described_under_their_own_paths() {
    let server = FaultServer::start();
    server.script(
        "/api/datasets",
        [
            Reply::status(429).header("Retry-After", "0"),
            Reply::json(page(&["HuggingFaceFW/fineweb"])),
        ],
    );
    let query = Query {
        search: Some("fineweb".into()),
        sort: Some(Sort::Likes),
        limit: 1,
        ..Default::default()
    };
    let found = hub(&server, None)
        .search(RepoKind::Dataset, &query)
        .await
        .unwrap();
    assert_eq!(found[0].id, "HuggingFaceFW/fineweb");
    assert_eq!(server.hits("/api/datasets"), 2, "the 429 was retried");
    assert_eq!(
        server.requests()[1].uri,
        "/api/datasets?search=fineweb&sort=likes&direction=-1&limit=1"
    );

    // No revision: the default branch, as huggingface_hub's repo_info.
    server.script(
        "/api/datasets/org/data",
        [Reply::json(
            r#"{"id":"org/data","sha":"abc","siblings":[]}"#,
        )],
    );
    server.script(
        "/api/spaces/org/demo/revision/v1",
        [Reply::json(
            r#"{"id":"org/demo","sha":"def","siblings":[]}"#,
        )],
    );
    let hub = hub(&server, None);
    let info = hub.info(RepoKind::Dataset, "org/data", None).await.unwrap();
    assert_eq!(info.sha.as_deref(), Some("abc"));
    let info = hub
        .info(RepoKind::Space, "org/demo", Some("v1"))
        .await
        .unwrap();
    assert_eq!(info.sha.as_deref(), Some("def"));
    let uris: Vec<String> = server.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        uris[2..],
        [
            "/api/datasets/org/data?blobs=true",
            "/api/spaces/org/demo/revision/v1?blobs=true"
        ]
    );
}

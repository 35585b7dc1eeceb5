//! Bearer tokens from the registry's realm, refreshed when refused, and
//! never sent to another host on a redirect: against a scripted registry
//! (a real one needs a signing key for its token realm).

use backstop_faultserver::{FaultServer, Reply};
use backstop_oci::{
    ArtifactOptions, Credentials, PushOptions, Pusher, Reference, Registry, build, collect,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_the_realm_for_the_push_scope_and_are_fetched_again_when_refused() {
    let registry = FaultServer::start();
    let storage = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.gguf"), b"weights").unwrap();
    let artifact = build(
        collect(&[dir.path().to_owned()]).unwrap(),
        &ArtifactOptions::default(),
    )
    .unwrap();
    let layer = format!("/v2/m/blobs/{}", artifact.layers[0].digest_text());
    let config = format!("/v2/m/blobs/sha256:{}", artifact.config_digest);
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"test-registry\"",
        registry.url("/token")
    );
    registry.script(
        "/v2/",
        [Reply::status(401).header("www-authenticate", &challenge)],
    );
    registry.always("/v2/", Reply::status(200));
    registry.script(
        "/token",
        [
            Reply::json(r#"{"token":"t1","expires_in":300}"#),
            Reply::json(r#"{"access_token":"t2","expires_in":300}"#),
        ],
    );
    // The layer's HEAD is refused once: the token was revoked mid-push.
    registry.script(
        &layer,
        [Reply::status(401).header("www-authenticate", &challenge)],
    );
    registry.always(&layer, Reply::status(404));
    registry.always(&config, Reply::status(404));
    registry.always(
        "/v2/m/blobs/uploads/",
        Reply::status(202).header("location", "/upload/1?_state=s"),
    );
    // The closing PUT is redirected to storage on another host.
    registry.always(
        "/upload/1",
        Reply::status(307).header("location", &storage.url("/put")),
    );
    storage.always("/put", Reply::status(201));
    registry.always("/v2/m/manifests/v1", Reply::status(404));
    registry.script(
        "/v2/m/manifests/v1",
        [Reply::status(404), Reply::status(201)],
    );

    let reference: Reference = format!("oci://{}/m:v1", registry.addr()).parse().unwrap();
    let client = backstop_http::Client::new().unwrap();
    let credentials = Credentials {
        username: "robot".into(),
        password: backstop_core::Secret::new("pw"),
    };
    let registry_client = Registry::new(
        client,
        reference.registry(),
        true,
        Some(credentials.clone()),
    )
    .unwrap();
    let options = PushOptions {
        jobs: 1,
        ..PushOptions::default()
    };
    let summary = Pusher::new(&registry_client, &reference)
        .options(options)
        .run(&artifact)
        .await;
    let failures: Vec<String> = summary.failures().map(|e| format!("{e:?}")).collect();
    assert!(summary.succeeded(), "{failures:#?}");

    let requests = registry.requests();
    let tokens: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 2, "one token, and one more after the refusal");
    for t in &tokens {
        assert!(t.uri.contains("service=test-registry"), "{}", t.uri);
        assert!(
            t.uri.contains("scope=repository%3Am%3Apull%2Cpush"),
            "{}",
            t.uri
        );
        assert_eq!(
            t.header("authorization"),
            Some(credentials.basic().expose())
        );
    }
    let bearer = |r: &&backstop_faultserver::Recorded| r.header("authorization").map(str::to_owned);
    let blob_heads: Vec<_> = requests
        .iter()
        .filter(|r| r.uri == layer)
        .map(|r| bearer(&r))
        .collect();
    assert_eq!(
        blob_heads,
        [Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())],
        "refused with the first token, sent again with the second"
    );
    let manifest = requests
        .iter()
        .rfind(|r| r.uri == "/v2/m/manifests/v1")
        .unwrap();
    assert_eq!(manifest.method, "PUT");
    assert_eq!(manifest.header("authorization"), Some("Bearer t2"));
    let stored = storage.requests();
    assert!(!stored.is_empty(), "the redirect was followed");
    assert!(
        stored.iter().all(|r| r.header("authorization").is_none()),
        "no credential for another host: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_read_within_its_limit_and_checked_against_the_digest_asked_for() {
    use backstop_oci::{Fault, MAX_MANIFEST, parse_manifest};
    let server = FaultServer::start();
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
    server.always("/v2/m/manifests/v1", Reply::ok(&body[..]));
    server.always("/v2/big/manifests/v1", Reply::ok(vec![b' '; 10 << 20]));
    let wrong = "0".repeat(64);
    server.always(
        &format!("/v2/m/manifests/sha256:{wrong}"),
        Reply::ok(&body[..]),
    );
    let client = backstop_http::Client::new().unwrap();
    let registry = Registry::new(client, &server.addr().to_string(), true, None).unwrap();
    let at = |r: &str| -> Reference { format!("oci://{}/{r}", server.addr()).parse().unwrap() };

    let bytes = registry.manifest(&at("m:v1")).await.unwrap();
    assert_eq!(&bytes[..], &body[..]);
    assert!(parse_manifest(bytes, "m:v1").unwrap().layers.is_empty());
    match registry.manifest(&at("big:v1")).await {
        Err(Fault::Protocol(why)) => assert!(why.contains(&MAX_MANIFEST.to_string()), "{why}"),
        other => panic!("{other:?}"),
    }
    match registry.manifest(&at(&format!("m@sha256:{wrong}"))).await {
        Err(Fault::Protocol(why)) => assert!(why.contains("not the sha256:0000"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_during_a_pull_is_replaced_before_the_next_request() {
    let registry = FaultServer::start();
    let weights: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = backstop_transfer::Sha256::of(&weights);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                   "digest": format!("sha256:{}", backstop_transfer::Sha256::of(b"{}")), "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                    "digest": format!("sha256:{digest}"), "size": weights.len(),
                    "annotations": {"org.cncf.model.filepath": "w.bin"}}]
    });
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"test-registry\"",
        registry.url("/token")
    );
    registry.script(
        "/v2/",
        [Reply::status(401).header("www-authenticate", &challenge)],
    );
    registry.always("/v2/", Reply::status(200));
    // The first token lives 2 s (17 s less the 15 s kept in hand), less
    // than the registry then asks the blob's download to wait.
    registry.script("/token", [Reply::json(r#"{"token":"t1","expires_in":17}"#)]);
    registry.always("/token", Reply::json(r#"{"token":"t2","expires_in":300}"#));
    registry.always(
        "/v2/m/manifests/v1",
        Reply::ok(manifest.to_string())
            .header("content-type", "application/vnd.oci.image.manifest.v1+json"),
    );
    let blob = format!("/v2/m/blobs/sha256:{digest}");
    registry.script(&blob, [Reply::status(503).header("retry-after", "3")]);
    registry.always(&blob, Reply::file(weights.clone()));

    let source: backstop_oci::OciSource =
        format!("oci://{}/m:v1", registry.addr()).parse().unwrap();
    let client = backstop_http::Client::new().unwrap();
    let through = std::sync::Arc::new(
        Registry::new(client.clone(), source.reference.registry(), true, None).unwrap(),
    );
    let items = backstop_oci::pull_items(&through, &source, &backstop_core::Policy::api())
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = backstop_transfer::Plan::new(out.path(), items).unwrap();
    let summary = backstop_transfer::Pull::new(client)
        .run(&plan)
        .await
        .unwrap();
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(std::fs::read(out.path().join("w.bin")).unwrap(), weights);
    let sent: Vec<Option<String>> = registry
        .requests()
        .iter()
        .filter(|r| r.uri == blob)
        .map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(
        sent,
        [Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())],
        "the retry after the wait carries a fresh token"
    );
}

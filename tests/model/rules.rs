//! The rules as a user meets them through the layer: HEAD under a rule for GET, rules files
//! that cannot be read (a FIFO, a device, a file over the size cap) refused at build without
//! waiting, and the warning about client overrides that can never apply, given at build.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use testkit::*;
use tollgate::{BuildError, DEFAULT_MAX_RULES_FILE_BYTES, RateLimitLayer, RulesError, Tier};

/// A router with only `get(...)` handlers, as an app has: axum answers HEAD with them.
fn get_only(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/api/data", get(|| async { "data" }))
        .route("/api/feed", get(|| async { "feed" }))
        .layer(layer)
}

#[tokio::test]
async fn head_is_limited_by_the_rule_for_get() {
    let layer = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 100, "refill_rate": 1},
                "routes": [{"path": "/api/data", "methods": ["GET"], "capacity": 2, "refill_rate": 0.001}]}"#,
        ))
        .build_layer()
        .await
        .unwrap();
    let app = get_only(layer);
    let head = || request("HEAD", "/api/data", Some("alice"));
    let first = send(&app, head()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("2"));
    let rest = statuses(&app, 7, head).await;
    assert_eq!(rest[0], StatusCode::OK);
    assert!(
        rest[1..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{rest:?}"
    );
    // HEAD and GET share the rule, and so the client's state.
    let get = send(&app, request("GET", "/api/data", Some("alice"))).await;
    assert_eq!(get.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another method is not covered by the rule.
    let other = send(&app, request("DELETE", "/api/data", Some("alice"))).await;
    assert_eq!(header(&other, "x-ratelimit-limit"), Some("100"));
}

#[tokio::test]
async fn head_uses_its_own_rule_where_there_is_one_in_every_tier() {
    let layer = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 100, "refill_rate": 1},
                "routes": [
                    {"path": "/api/feed", "methods": ["GET"], "capacity": 2, "refill_rate": 0.001},
                    {"path": "/api/feed", "methods": ["HEAD"], "capacity": 5, "refill_rate": 0.001}
                ],
                "tiers": {"pro": {"default": {"capacity": 100, "refill_rate": 1},
                    "routes": [{"path": "/api/data", "methods": ["GET"], "capacity": 3, "refill_rate": 0.001}]}}}"#,
        ))
        .build_layer()
        .await
        .unwrap();
    let app = get_only(layer);
    let limit = |response: &axum::response::Response| {
        header(response, "x-ratelimit-limit").map(str::to_owned)
    };
    let head = send(&app, request("HEAD", "/api/feed", Some("bob"))).await;
    assert_eq!(limit(&head).as_deref(), Some("5"));
    let get = send(&app, request("GET", "/api/feed", Some("bob"))).await;
    assert_eq!(limit(&get).as_deref(), Some("2"));

    let mut in_pro = request("HEAD", "/api/data", Some("carol"));
    in_pro.extensions_mut().insert(Tier::new("pro"));
    let head = send(&app, in_pro).await;
    assert_eq!(limit(&head).as_deref(), Some("3"));
}

/// Builds a layer on the rules file at `path`, which must fail within 10 s. The build runs
/// on a runtime and thread of its own, so that a build that blocks fails this test instead of
/// hanging it.
fn build_error(path: &Path, max_bytes: u64) -> RulesError {
    let (done, result) = std::sync::mpsc::channel();
    let builder = Limiter::builder()
        .rules_file(path)
        .max_rules_file_bytes(max_bytes);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = done.send(runtime.block_on(builder.build()).map(drop));
    });
    match result.recv_timeout(Duration::from_secs(10)) {
        Err(_) => panic!("building on {} did not finish within 10 s", path.display()),
        Ok(Ok(())) => panic!("{} must be refused", path.display()),
        Ok(Err(BuildError::Rules(error))) => error,
        Ok(Err(other)) => panic!("expected a rules error, got {other}"),
    }
}

#[test]
fn a_fifo_as_the_rules_file_fails_the_build_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rate_limits.json");
    files::mkfifo(&fifo);
    // Nothing ever writes to it: a blocking open would never return.
    let error = build_error(&fifo, DEFAULT_MAX_RULES_FILE_BYTES);
    assert!(
        matches!(error, RulesError::NotAFile { file_type, .. } if file_type.contains("FIFO")),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("rules file {} is a FIFO", fifo.display())),
        "{error}"
    );
}

#[test]
fn a_device_as_the_rules_file_fails_the_build_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("rate_limits.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for device in [
        zero.as_path(),
        Path::new("/dev/zero"),
        Path::new("/dev/urandom"),
    ] {
        let error = build_error(device, DEFAULT_MAX_RULES_FILE_BYTES);
        assert_eq!(
            error.to_string(),
            format!(
                "rules file {} is a character device, not a regular file: only regular files (or symlinks to them) are read",
                device.display()
            )
        );
    }
}

#[tokio::test]
async fn a_rules_file_over_the_size_cap_fails_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    // Valid rules padded to exactly 1000 bytes with trailing whitespace.
    let json = r#"{"default": {"capacity": 5, "refill_rate": 1}}"#;
    std::fs::write(&path, format!("{json:<1000}")).unwrap();
    let error = build_error(&path, 999);
    assert!(
        matches!(error, RulesError::TooLarge { max_bytes: 999, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("is larger than 999 bytes"),
        "{error}"
    );
    let limiter = Limiter::builder()
        .rules_file(&path)
        .max_rules_file_bytes(1000)
        .watch_rules_file(false)
        .build()
        .await
        .unwrap();
    assert_eq!(limiter.rules().iter().len(), 1);

    // The default cap: a sparse file just over it costs no disk, and is never read.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(DEFAULT_MAX_RULES_FILE_BYTES + 1)
        .unwrap();
    let error = build_error(&huge, DEFAULT_MAX_RULES_FILE_BYTES);
    assert!(
        error.to_string().contains("is larger than 16777216 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn overrides_that_can_never_apply_are_warned_about_at_build() {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    std::fs::write(
        &path,
        r#"{"default": {"limit": "10/second"},
            "clients": {"ip:2001:db8::4201": {"unlimited": true}, "ip:2001:db8:42::/64": {"unlimited": true}}}"#,
    )
    .unwrap();
    let _from_file = Limiter::builder()
        .rules_file(&path)
        .watch_rules_file(false)
        .build_layer()
        .await
        .unwrap();
    let warned = logs::containing(&["WARN", "\"ip:2001:db8::4201\" never applies"]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("keyed by their /64 network"),
        "{}",
        warned[0]
    );
    assert!(logs::containing(&["ip:2001:db8:42::/64\" never applies"]).is_empty());

    // Rules given to the builder, and another prefix length.
    let _given = Limiter::builder()
        .rules(rules(
            r#"{"default": {"limit": "10/second"}, "clients": {"ip:2001:db8:43::/64": {"unlimited": true}}}"#,
        ))
        .ipv6_prefix_len(56)
        .build_layer()
        .await
        .unwrap();
    let warned = logs::containing(&["\"ip:2001:db8:43::/64\" never applies"]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("like \"ip:2001:db8:43::/56\""),
        "{}",
        warned[0]
    );
}

/// The block of `seed`'s document (in `../shared/seeds/`, beside the repository) that
/// follows `heading` and is fenced as `fence`.
fn seed_block(seed: &str, heading: &str, fence: &str) -> String {
    let seeds = repo_file("../shared/seeds");
    let file = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the seeds sit beside the repository)",
                seeds.display()
            )
        })
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(seed))
        })
        .unwrap_or_else(|| panic!("no seed {seed} in {}", seeds.display()));
    let text = std::fs::read_to_string(&file).unwrap();
    let after = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in {seed}"))..];
    let start = after.find(&format!("```{fence}\n")).unwrap() + fence.len() + 4;
    let end = start + after[start..].find("```").unwrap();
    after[start..end].to_owned()
}

/// The test files are the seeds' own, byte for byte.
#[test]
fn the_seed_files_under_test_are_the_seeds_own() {
    for (seed, heading, fence, file) in [
        (
            "003",
            "#### 2. `rate_limits.json` file",
            "json",
            "seed003/rate_limits.json",
        ),
        ("003", "#### 1. `.env` file", "", "seed003/.env"),
        (
            "004",
            "### Rate Limit Tiers (`config.yaml`)",
            "yaml",
            "seed004/config.yaml",
        ),
    ] {
        let ours = std::fs::read_to_string(repo_file(&format!("tests/data/{file}"))).unwrap();
        assert_eq!(ours, seed_block(seed, heading, fence), "{file}");
    }
    let shipped = std::fs::read_to_string(repo_file("examples/seed004-config.yaml")).unwrap();
    assert_eq!(shipped, seed_block("004", "### Rate Limit Tiers", "yaml"));
}

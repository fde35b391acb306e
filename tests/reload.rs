//! Hot reload of the rules file under a running server (real TCP): in-place edits, editors
//! that save by rename, Kubernetes ConfigMap symlink swaps, broken files, SIGHUP, and
//! buckets that keep their state across a reload.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use tollgate::RateLimitLayer;

fn rules_with_capacity(capacity: u32) -> String {
    format!(
        r#"{{"default": {{"capacity": {capacity}, "refill_rate": 0.001}},
             "routes": [{{"path": "/health", "unlimited": true}}]}}"#
    )
}

/// Writes `text` as the rules file the way `save` says.
fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Saves like editors that write a temporary file and rename it over the original.
fn save_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

async fn limit_seen(
    http: &reqwest::Client,
    base: &str,
    client: &str,
) -> (StatusCode, Option<u32>, Option<u32>) {
    let response = http
        .get(format!("{base}/api/data"))
        .header("x-client-id", client)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        reqwest_number(&response, "x-ratelimit-limit"),
        reqwest_number(&response, "x-ratelimit-remaining"),
    )
}

/// Polls (with a throwaway client) until the server reports `limit`; returns how long it took.
async fn wait_for_limit(base: &str, limit: u32) -> Duration {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut probe = 0;
    loop {
        probe += 1;
        let (_, seen, _) = limit_seen(&http, base, &format!("probe-{probe}")).await;
        if seen == Some(limit) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "limit {limit} never took effect (last saw {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_file(path: &Path) -> (RateLimitLayer, String) {
    let layer = RateLimitLayer::builder()
        .rules_file(path)
        .build()
        .await
        .unwrap();
    let base = serve(layer.clone()).await;
    (layer, base)
}

#[tokio::test]
async fn edits_take_effect_within_a_second_and_broken_files_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let (layer, base) = serve_file(&path).await;
    let http = reqwest::Client::new();
    assert_eq!(limit_seen(&http, &base, "a").await.1, Some(3));

    write_file(&path, &rules_with_capacity(7));
    let took = wait_for_limit(&base, 7).await;
    eprintln!("in-place edit took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(layer.stats().reloads, 1);

    // A broken save: the old limits stay in force and the failure is visible.
    write_file(&path, r#"{"default": {"capacity": 0, "refill_rate": 1}}"#);
    let deadline = Instant::now() + Duration::from_secs(5);
    while layer.stats().failed_reloads == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = layer.stats();
    let error = stats.last_reload_error.clone().unwrap();
    assert!(
        error.contains("rate_limits.json: at default.capacity"),
        "{error}"
    );
    for n in 0..7 {
        let (status, limit, _) = limit_seen(&http, &base, "steady").await;
        assert_eq!((status, limit), (StatusCode::OK, Some(7)), "request {n}");
    }
    assert_eq!(
        limit_seen(&http, &base, "steady").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The same broken content again is not a new failure.
    write_file(&path, r#"{"default": {"capacity": 0, "refill_rate": 1}}"#);
    assert!(layer.reload().await.is_err());
    assert_eq!(layer.stats().failed_reloads, 1);

    // The next good save is taken, and clears the error.
    write_file(&path, &rules_with_capacity(9));
    wait_for_limit(&base, 9).await;
    assert_eq!(layer.stats().last_reload_error, None);
}

#[tokio::test]
async fn saves_by_rename_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let (_layer, base) = serve_file(&path).await;
    save_by_rename(&path, &rules_with_capacity(11));
    let took = wait_for_limit(&base, 11).await;
    eprintln!("rename-save took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    save_by_rename(&path, &rules_with_capacity(12));
    wait_for_limit(&base, 12).await;
}

/// The layout Kubernetes gives a mounted ConfigMap: `rate_limits.json -> ..data/rate_limits.json`,
/// `..data -> ..<timestamp>`; an update writes a new timestamped directory and atomically
/// renames a new `..data` link over the old one.
fn configmap_update(dir: &Path, version: u32, text: &str) {
    let versioned = dir.join(format!("..2026_11_22_{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("rate_limits.json"), text).unwrap();
    let temp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(versioned.file_name().unwrap(), &temp_link).unwrap();
    std::fs::rename(&temp_link, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn configmap_symlink_swaps_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    configmap_update(dir.path(), 1, &rules_with_capacity(3));
    let path: PathBuf = dir.path().join("rate_limits.json");
    std::os::unix::fs::symlink("..data/rate_limits.json", &path).unwrap();
    let (_layer, base) = serve_file(&path).await;
    assert_eq!(
        limit_seen(&reqwest::Client::new(), &base, "a").await.1,
        Some(3)
    );

    configmap_update(dir.path(), 2, &rules_with_capacity(13));
    let took = wait_for_limit(&base, 13).await;
    eprintln!("ConfigMap symlink swap took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn memory_buckets_keep_their_state_and_a_lowered_capacity_clamps_it() {
    buckets_keep_their_state_and_a_lowered_capacity_clamps_it(None).await;
}

#[tokio::test]
async fn redis_buckets_keep_their_state_and_a_lowered_capacity_clamps_it() {
    let redis = TestRedis::start();
    buckets_keep_their_state_and_a_lowered_capacity_clamps_it(Some(&redis)).await;
}

async fn buckets_keep_their_state_and_a_lowered_capacity_clamps_it(redis: Option<&TestRedis>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(10));
    let mut builder = RateLimitLayer::builder()
        .rules_file(&path)
        .watch_rules_file(false);
    if let Some(redis) = redis {
        builder = on_test_redis(builder, redis, &unique_prefix("reload"));
    }
    let layer = builder.build().await.unwrap();
    let base = serve(layer.clone()).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        limit_seen(&http, &base, "kept").await;
    }
    assert_eq!(limit_seen(&http, &base, "kept").await.2, Some(6));

    // Raised capacity, same rule identity: the 6 tokens left are still 6 (no fresh bucket).
    write_file(&path, &rules_with_capacity(20));
    assert!(layer.reload().await.unwrap());
    assert_eq!(
        limit_seen(&http, &base, "kept").await,
        (StatusCode::OK, Some(20), Some(5))
    );
    // Unchanged content: nothing to do.
    assert!(!layer.reload().await.unwrap());

    // Lowered below what is left: clamped to the new capacity.
    write_file(&path, &rules_with_capacity(2));
    assert!(layer.reload().await.unwrap());
    assert_eq!(
        limit_seen(&http, &base, "kept").await,
        (StatusCode::OK, Some(2), Some(1))
    );
    assert_eq!(limit_seen(&http, &base, "kept").await.2, Some(0));
    assert_eq!(
        limit_seen(&http, &base, "kept").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A broken file through reload(): an error, and the rules stay.
    write_file(&path, "{");
    let error = layer.reload().await.unwrap_err().to_string();
    assert!(error.contains("rate_limits.json: at "), "{error}");
    assert_eq!(limit_seen(&http, &base, "fresh").await.1, Some(2));
    assert_eq!(layer.stats().reloads, 2);
}

#[tokio::test]
async fn sighup_reloads_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let path_text = path.display().to_string();
    let mut demo = start_demo(&[
        ("WATCH_RULES", "false"),
        ("RATE_LIMIT_RULES_PATH", &path_text),
    ]);
    let address = demo.address.clone();
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    assert_eq!(limit_seen(&http, &base, "a").await.1, Some(3));

    // Not watched: an edit alone changes nothing.
    write_file(&path, &rules_with_capacity(8));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(limit_seen(&http, &base, "b").await.1, Some(3));
    let status = Command::new("kill")
        .args(["-HUP", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = wait_for_limit(&base, 8).await;
    eprintln!("SIGHUP reload took effect after {took:?}");
    assert!(
        demo.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the demo"
    );
}

//! Hot reload of the rules file under a running server (real TCP): in-place edits, editors
//! that save by rename, Kubernetes ConfigMap symlink swaps, broken files, SIGHUP, buckets
//! that keep their state across a reload, files that must not be read (a FIFO, /dev/zero)
//! put in place of the rules file, a large file swapped in under load, and rules from
//! `set_rules` replaced by the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::*;
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

/// Polls (with a throwaway client) until the server reports `limit`; returns how long it took
/// until the request that saw it was sent (however long a busy machine took to answer it).
async fn wait_for_limit(base: &str, limit: u32) -> Duration {
    wait_for_limit_within(base, limit, Duration::from_secs(5)).await
}

/// [`wait_for_limit`], failing after `patience`.
async fn wait_for_limit_within(base: &str, limit: u32, patience: Duration) -> Duration {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut probe = 0;
    loop {
        probe += 1;
        let sent = started.elapsed();
        let (_, seen, _) = limit_seen(&http, base, &format!("probe-{probe}")).await;
        if seen == Some(limit) {
            return sent;
        }
        assert!(
            started.elapsed() < patience,
            "limit {limit} never took effect (last saw {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (5 s at most) until `layer`'s limiter has failed to reload a broken save.
async fn broken_save_noticed(layer: &RateLimitLayer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while layer.limiter().stats().failed_reloads == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_file(path: &Path) -> (RateLimitLayer, String) {
    let layer = Limiter::builder()
        .rules_file(path)
        .build_layer()
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
    assert_eq!(layer.limiter().stats().reloads, 1);

    // A broken save: the old limits stay in force and the failure is visible.
    write_file(&path, r#"{"default": {"capacity": 0, "refill_rate": 1}}"#);
    broken_save_noticed(&layer).await;
    let stats = layer.limiter().stats();
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
    assert!(layer.limiter().reload().await.is_err());
    assert_eq!(layer.limiter().stats().failed_reloads, 1);

    // The next good save is taken, and clears the error.
    write_file(&path, &rules_with_capacity(9));
    wait_for_limit(&base, 9).await;
    assert_eq!(layer.limiter().stats().last_reload_error, None);
}

/// A YAML rules file reloads as a JSON one does: edits are taken, a broken save is reported
/// at its line and column and changes nothing.
#[tokio::test]
async fn yaml_rules_files_reload_as_json_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let yaml = |capacity: u32| {
        format!(
            "default:\n  capacity: {capacity}\n  refill_rate: 0.001\nroutes:\n  - {{path: /health, unlimited: true}}\n"
        )
    };
    write_file(&path, &yaml(3));
    let (layer, base) = serve_file(&path).await;
    let http = reqwest::Client::new();
    assert_eq!(limit_seen(&http, &base, "a").await.1, Some(3));
    write_file(&path, &yaml(7));
    wait_for_limit(&base, 7).await;
    write_file(&path, "default:\n  capacity: 8\n  refil_rate: 1\n");
    broken_save_noticed(&layer).await;
    let error = layer.limiter().stats().last_reload_error.clone().unwrap();
    assert!(
        error.contains(
            "config.yaml: at default.refil_rate (line 3, column 3): unknown field `refil_rate`"
        ),
        "{error}"
    );
    assert_eq!(limit_seen(&http, &base, "b").await.1, Some(7));
}

#[tokio::test]
async fn saves_by_rename_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let (_layer, base) = serve_file(&path).await;
    files::save_by_rename(&path, &rules_with_capacity(11));
    let took = wait_for_limit(&base, 11).await;
    eprintln!("rename-save took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    files::save_by_rename(&path, &rules_with_capacity(12));
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
    let mut builder = Limiter::builder().rules_file(&path).watch_rules_file(false);
    if let Some(redis) = redis {
        builder = on_test_redis(builder, redis, &unique_prefix("reload"));
    }
    let layer = builder.build_layer().await.unwrap();
    let base = serve(layer.clone()).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        limit_seen(&http, &base, "kept").await;
    }
    assert_eq!(limit_seen(&http, &base, "kept").await.2, Some(6));

    // Raised capacity, same rule identity: the 6 tokens left are still 6 (no fresh bucket).
    write_file(&path, &rules_with_capacity(20));
    assert!(layer.limiter().reload().await.unwrap());
    assert_eq!(
        limit_seen(&http, &base, "kept").await,
        (StatusCode::OK, Some(20), Some(5))
    );
    // Unchanged content: nothing to do.
    assert!(!layer.limiter().reload().await.unwrap());

    // Lowered below what is left: clamped to the new capacity.
    write_file(&path, &rules_with_capacity(2));
    assert!(layer.limiter().reload().await.unwrap());
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
    let error = layer.limiter().reload().await.unwrap_err().to_string();
    assert!(error.contains("rate_limits.json: at "), "{error}");
    assert_eq!(limit_seen(&http, &base, "fresh").await.1, Some(2));
    assert_eq!(layer.limiter().stats().reloads, 2);
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

/// Builds a layer on the rules file at `path` and serves it from a runtime of its own, on a
/// thread of its own: anything that blocks that runtime shows as requests that time out,
/// rather than as a test that hangs with it.
async fn serve_file_apart(path: &Path) -> (RateLimitLayer, String) {
    let (started, layer_and_base) = tokio::sync::oneshot::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let served = serve_file(&path).await;
            let _ = started.send(served);
            // Serve until the test process ends.
            std::future::pending::<()>().await;
        });
    });
    layer_and_base.await.expect("the server thread starts")
}

/// A client whose requests fail after 5 s: requests the server does not answer.
fn impatient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client")
}

/// Sends 64 requests at once, each from a new client, and checks each is answered under
/// the rules of capacity `limit`.
async fn burst_answered_under(http: &reqwest::Client, base: &str, limit: u32) {
    static CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let requests = (0..64).map(|_| {
        let http = http.clone();
        let url = format!("{base}/api/data");
        let client = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            http.get(url)
                .header("x-client-id", format!("burst-{client}"))
                .send()
                .await
        }
    });
    for (n, answer) in futures::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        let response = answer.unwrap_or_else(|e| panic!("request {n} not answered: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
        assert_eq!(
            reqwest_number::<u32>(&response, "x-ratelimit-limit"),
            Some(limit),
            "request {n}"
        );
    }
}

/// Waits, sending bursts of requests all along, until a reload has failed; returns its
/// error.
async fn failed_reload_while_serving(layer: &RateLimitLayer, base: &str, limit: u32) -> String {
    let http = impatient_client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        burst_answered_under(&http, base, limit).await;
        if let Some(error) = layer.limiter().stats().last_reload_error {
            // The old rules still answer after the failure too.
            burst_answered_under(&http, base, limit).await;
            return error;
        }
        assert!(
            Instant::now() < deadline,
            "the file put in place was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves a rules file, puts in its place what `put_in_place` makes of the path while
/// requests flow, and checks that it is refused as `file_type` without holding up a request,
/// and that a good save afterwards is taken.
async fn refused_in_place_then_a_save_is_taken(file_type: &str, put_in_place: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let (layer, base) = serve_file_apart(&path).await;

    put_in_place(&path);
    let error = failed_reload_while_serving(&layer, &base, 3).await;
    let expected = format!(
        "rules file {} is {file_type}, not a regular file: only regular files (or symlinks to them) are read",
        path.display()
    );
    assert_eq!(error, expected);
    // reload() says so at once too.
    let reloaded = tokio::time::timeout(Duration::from_secs(5), layer.limiter().reload())
        .await
        .expect("reload() returns");
    assert_eq!(reloaded.unwrap_err().to_string(), expected);

    files::save_by_rename(&path, &rules_with_capacity(9));
    wait_for_limit(&base, 9).await;
    assert_eq!(layer.limiter().stats().last_reload_error, None);
}

#[tokio::test]
async fn a_fifo_renamed_over_the_file_blocks_nothing_and_a_later_save_is_taken() {
    // No writer ever opens the FIFO: opening or reading it blocking would never return.
    refused_in_place_then_a_save_is_taken("a FIFO (named pipe)", |path| {
        let fifo = path.with_extension("fifo");
        files::mkfifo(&fifo);
        std::fs::rename(&fifo, path).unwrap();
    })
    .await;
}

#[tokio::test]
async fn dev_zero_linked_over_the_file_is_not_read_and_a_later_save_is_taken() {
    // As a ConfigMap swap would: a new symlink renamed over the file.
    refused_in_place_then_a_save_is_taken("a character device", |path| {
        let link = path.with_extension("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        std::fs::rename(&link, path).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_refused_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    let small = rules_with_capacity(3);
    write_file(&path, &small);
    let layer = Limiter::builder()
        .rules_file(&path)
        .watch_rules_file(false)
        .max_rules_file_bytes(small.len() as u64)
        .build_layer()
        .await
        .unwrap();
    write_file(&path, &format!("{small}\n\n"));
    let error = layer.limiter().reload().await.unwrap_err();
    assert!(
        matches!(error, tollgate::RulesError::TooLarge { .. }),
        "{error}"
    );
    assert_eq!(
        layer.limiter().stats().last_reload_error,
        Some(format!(
            "rules file {} is larger than {} bytes, the most that is read (raise the limit with the builder's max_rules_file_bytes or check-rules --max-file-bytes)",
            path.display(),
            small.len()
        ))
    );
    assert_eq!(
        layer
            .limiter()
            .rules()
            .default_rule()
            .limit()
            .unwrap()
            .bands()[0]
            .capacity(),
        3
    );
    // Back to the content in force: nothing to reload, and the failure is over.
    write_file(&path, &small);
    assert!(!layer.limiter().reload().await.unwrap());
    assert_eq!(layer.limiter().stats().last_reload_error, None);
    assert_eq!(layer.limiter().stats().failed_reloads, 1);
}

/// A valid rules file with `routes` routes (about 105 bytes each) and a default of
/// `capacity`, like `bench/many_routes.py` writes.
fn many_routes(routes: usize, capacity: u32) -> String {
    let routes: Vec<String> = (0..routes)
        .map(|i| match i % 4 {
            0 => format!(
                r#"{{"path": "/api/v1/service-{i}/items/{{id}}", "methods": ["GET", "PUT"], "limits": [{{"capacity": 10, "refill_rate": 1}}, "1000/hour"]}}"#
            ),
            1 => format!(
                r#"{{"path": "/api/v1/service-{i}/search", "limit": "100/minute", "algorithm": "sliding_window", "cost": 2}}"#
            ),
            2 => format!(
                r#"{{"path": "/api/v1/service-{i}/upload", "methods": ["POST"], "limit": "30/minute", "algorithm": "fixed_window"}}"#
            ),
            _ => format!(r#"{{"path": "/static/bundle-{i}/{{*rest}}", "unlimited": true}}"#),
        })
        .collect();
    format!(
        "{{\"default\": {{\"capacity\": {capacity}, \"refill_rate\": 0.001}},\n \"routes\": [\n  {}\n ]}}\n",
        routes.join(",\n  ")
    )
}

#[tokio::test]
async fn requests_keep_flowing_while_a_large_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(1_000_000));
    let (layer, base) = serve_file_apart(&path).await;

    // Sixteen clients send requests one after another until the new rules are in force.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|n| {
            let (base, done) = (base.clone(), done.clone());
            tokio::spawn(async move {
                let http = impatient_client();
                let (mut answered, mut slowest) = (0u32, Duration::ZERO);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let (status, ..) = limit_seen(&http, &base, &format!("load-{n}")).await;
                    slowest = slowest.max(sent.elapsed());
                    assert!(
                        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&status),
                        "{status}"
                    );
                    answered += 1;
                }
                (answered, slowest)
            })
        })
        .collect();

    // A large file replaces small rules, then another replaces it (the large rules taken
    // out of force are freed too).
    for capacity in [77, 78] {
        let large = many_routes(20_000, capacity);
        files::save_by_rename(&path, &large);
        let took = wait_for_limit_within(&base, capacity, Duration::from_secs(120)).await;
        eprintln!(
            "{} bytes, 20,000 routes, took effect after {took:?}",
            large.len()
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for task in load {
        let (answered, slowest_here) = task.await.expect("load task");
        // Every client was answered while the files were read and validated.
        assert!(answered > 0);
        slowest = slowest.max(slowest_here);
    }
    eprintln!("slowest request meanwhile: {slowest:?}");
    assert_eq!(layer.limiter().rules().iter().len(), 20_001);
}

#[tokio::test]
async fn the_file_replaces_rules_from_set_rules_with_a_warning() {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    write_file(&path, &rules_with_capacity(3));
    let (layer, base) = serve_file(&path).await;
    let file = path.display().to_string();
    let replaced =
        || logs::containing(&["WARN", "replaced the rules installed by set_rules", &file]);

    layer
        .limiter()
        .set_rules(testkit::rules(&rules_with_capacity(5)));
    wait_for_limit(&base, 5).await;
    assert!(replaced().is_empty());

    // A change to the file puts the file back in force, and says so.
    write_file(&path, &rules_with_capacity(7));
    wait_for_limit(&base, 7).await;
    let warned = replaced();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("trigger=\"file change\""),
        "{}",
        warned[0]
    );

    // reload() does too, even though the file has not changed since.
    layer
        .limiter()
        .set_rules(testkit::rules(&rules_with_capacity(5)));
    wait_for_limit(&base, 5).await;
    assert!(layer.limiter().reload().await.unwrap());
    wait_for_limit(&base, 7).await;
    assert_eq!(replaced().len(), 2);
    assert!(
        replaced()[1].contains("trigger=\"reload()\""),
        "{}",
        replaced()[1]
    );
    // Once the file is in force, an unchanged file is nothing to do, and nothing to say.
    assert!(!layer.limiter().reload().await.unwrap());
    assert_eq!(replaced().len(), 2);
}

//! Moving over with the files one has: the token-bucket middleware's `rate_limits.json` and
//! `.env`, and the tiered check service's `config.yaml`, byte for byte (they are in
//! `tests/data/`), through `tollgate serve` and `check-rules`; the environment variables
//! those services read; and what stops a start.

use std::path::Path;
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::*;

/// A working directory holding `files` from `tests/data/` (`(from, as)`).
fn workdir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in files {
        std::fs::copy(
            repo_file(&format!("tests/data/{from}")),
            dir.path().join(to),
        )
        .unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
    dir
}

/// Sends `count` checks for `identifier` one after the other; how many were allowed, and
/// how long they took.
async fn burst(base: &str, body: Value, count: usize) -> (u32, f64) {
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..count {
        let (status, _) = post_check(base, body.clone()).await;
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    (allowed, started.elapsed().as_secs_f64())
}

/// The most a token bucket of `capacity` refilling `per_second` can allow in `elapsed`
/// seconds, starting full.
fn at_most(capacity: u32, per_second: f64, elapsed: f64) -> u32 {
    capacity + (per_second * elapsed).ceil() as u32
}

#[tokio::test]
async fn the_token_bucket_middlewares_files_work_unchanged() {
    let redis = TestRedis::start();
    let port = redis.port().to_string();
    let prefix = unique_prefix("seed003");
    // Its `.env` names the Docker host `redis`; the environment's own values win.
    let service = start_service_in(
        workdir_with(&[
            ("seed003/rate_limits.json", "rate_limits.json"),
            ("seed003/.env", ".env"),
        ]),
        &[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port),
            ("REDIS_PREFIX", &prefix),
        ],
    );
    let log = service.startup_log.join("\n");
    assert!(log.contains("settings read from .env"), "{log}");
    for said in [
        "REDIS_HOST from environment",
        "REDIS_PORT from environment",
        "REDIS_DB from .env",
        "rate_limits.json (RATE_LIMIT_RULES_PATH, from .env)",
        "rule \"special_path\" is named by no route",
    ] {
        assert!(log.contains(said), "{said:?} in:\n{log}");
    }
    let health = get_json(&format!("http://{}/health", service.address)).await;
    assert_eq!(health["redis"], "connected");

    // 20 at once, then 5 a second.
    let base = &service.address;
    let (status, body) = post_check(base, json!({"identifier": "10.0.0.1"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["limit"].clone(), body["tokens_remaining"].clone()),
        (json!(20), json!(19))
    );
    let (allowed, elapsed) = burst(base, json!({"identifier": "10.0.0.1"}), 40).await;
    assert!(
        (19..=at_most(19, 5.0, elapsed)).contains(&allowed),
        "{allowed} allowed of 40 in {elapsed:.2} s"
    );
    let (status, body) = post_check(base, json!({"identifier": "10.0.0.1"})).await;
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The next token is 0.2 s away.
        assert_eq!(body["detail"]["retry_after"], 1, "{body}");
    }
    // The named rule, by name: its own budget.
    let (status, body) = post_check(
        base,
        json!({"identifier": "10.0.0.1", "rule": "special_path"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["limit"].clone(), body["rule"].clone()),
        (json!(50), json!("special_path"))
    );

    // REDIS_DB from the `.env`: database 0 has the keys.
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis.client())
        .unwrap();
    keys.retain(|key| key.contains("10.0.0.1"));
    assert!(!keys.is_empty(), "no keys under {prefix} in database 0");
}

#[tokio::test]
async fn redis_db_puts_the_keys_in_that_database() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("redis-db");
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "REDIS_HOST=127.0.0.1\nREDIS_PORT={}   # the test's own\nREDIS_DB=3\nREDIS_PREFIX={prefix}\n",
            redis.port()
        ),
    )
    .unwrap();
    let service = start_service_in(dir, &[]);
    let (status, _) = post_check(&service.address, json!({"identifier": "db-client"})).await;
    assert_eq!(status, StatusCode::OK);
    let keys_in = |db: u32| -> Vec<String> {
        let mut client = redis.client();
        redis::cmd("SELECT").arg(db).exec(&mut client).unwrap();
        redis::cmd("KEYS")
            .arg(format!("{prefix}*db-client*"))
            .query(&mut client)
            .unwrap()
    };
    assert!(
        !keys_in(3).is_empty(),
        "the client's state is in database 3"
    );
    assert!(keys_in(0).is_empty(), "and not in database 0");
}

#[tokio::test]
async fn the_seed_env_file_with_its_comments_starts_degraded_not_in_memory() {
    // Unchanged, it names the host `redis`, which does not resolve here: the service starts
    // degraded and says so, never silently in memory.
    let service = start_service_in(
        workdir_with(&[
            ("seed003/rate_limits.json", "rate_limits.json"),
            ("seed003/.env", ".env"),
        ]),
        &[("REDIS_TIMEOUT_MS", "200")],
    );
    let log = service.startup_log.join("\n");
    assert!(
        log.contains("backend=\"redis\"") || log.contains("backend=redis"),
        "{log}"
    );
    assert!(log.contains("REDIS_HOST from .env"), "{log}");
    let health = get_json(&format!("http://{}/health", service.address)).await;
    assert_ne!(health["redis"], "not_configured", "{health}");
    assert_ne!(health["redis"], "connected", "{health}");
}

#[tokio::test]
async fn the_tiered_services_config_yaml_works_unchanged() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("seed004");
    // No RATE_LIMIT_RULES_PATH and no rate_limits.json: `config.yaml` is read, as the
    // tiered service read it.
    let service = start_service_in(
        workdir_with(&[("seed004/config.yaml", "config.yaml")]),
        &[("REDIS_URL", redis.url()), ("REDIS_PREFIX", &prefix)],
    );
    let log = service.startup_log.join("\n");
    assert!(
        log.contains(
            "config.yaml (found in the working directory: RATE_LIMIT_RULES_PATH is not set)"
        ),
        "{log}"
    );
    let base = &service.address;
    for (tier, limit) in [("free", 100), ("pro", 1000), ("enterprise", 10_000)] {
        let (status, body) = post_check(
            base,
            json!({"identifier": format!("user:{tier}"), "tier": tier}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tier}: {body}");
        assert_eq!(body["limit"], limit, "{tier}");
        assert_eq!(body["tokens_remaining"], limit - 1, "{tier}");
    }
    // Without a tier: the default tier, free, and its bucket.
    let (_, body) = post_check(base, json!({"identifier": "user:free"})).await;
    assert_eq!(body["limit"], 100);
    let (status, body) = post_check(base, json!({"identifier": "u", "tier": "gold"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"detail": "Invalid tier: gold"}));
    // 100 at once, then 100 a minute.
    let (allowed, elapsed) = burst(base, json!({"identifier": "user:burst"}), 130).await;
    assert!(
        (100..=at_most(100, 100.0 / 60.0, elapsed)).contains(&allowed),
        "{allowed} allowed of 130 in {elapsed:.2} s"
    );
}

#[test]
fn check_rules_reads_both_files_as_they_are() {
    let run = std::process::Command::new(tollgate_binary())
        .args(["check-rules"])
        .arg(repo_file("tests/data/seed003/rate_limits.json"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Named rules"), "{stdout}");
    assert!(
        stdout.ends_with("OK: 2 rules, 0 tiers, 0 client overrides\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: rule \"special_path\" is named by no route"),
        "{stderr}"
    );
    let run = std::process::Command::new(tollgate_binary())
        .args(["check-rules"])
        .arg(repo_file("tests/data/seed004/config.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Tier \"free\" (default tier: requests without a tier):"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("OK: 3 rules, 3 tiers, 0 client overrides\n"),
        "{stdout}"
    );
    // A YAML mistake is reported at its line and column.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.yaml");
    std::fs::write(
        &bad,
        "tiers:\n  free:\n    limit: 100\n    windw: 60\ndefault_tier: free\n",
    )
    .unwrap();
    let run = std::process::Command::new(tollgate_binary())
        .args(["check-rules"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("at tiers.free.windw (line 4, column 5): unknown field `windw`"),
        "{stderr}"
    );
}

/// A start that must fail: exit status 1 and `message` on stderr.
fn fails_saying(dir: &Path, envs: &[(&str, &str)], args: &[&str], message: &str) {
    let output = serve_in_until_it_exits(dir, envs, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{envs:?} {args:?}: {stderr}");
    assert!(stderr.contains(message), "{envs:?} {args:?}: {stderr}");
}

#[test]
fn settings_that_cannot_be_used_stop_the_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    fails_saying(
        dir.path(),
        &[("REDIS_HOST", "127.0.0.1"), ("REDIS_PORT", "notaport")],
        &[],
        "error: REDIS_PORT=\"notaport\" is not a port",
    );
    fails_saying(
        dir.path(),
        &[("REDIS_HOST", "127.0.0.1"), ("REDIS_DB", "first")],
        &[],
        "error: REDIS_DB=\"first\" is not a database number",
    );
    fails_saying(
        dir.path(),
        &[("REDIS_PORT", "6379")],
        &[],
        "error: REDIS_PORT set without REDIS_HOST",
    );
    fails_saying(
        dir.path(),
        &[("LOG_LEVEL", "loud")],
        &[],
        "error: LOG_LEVEL=\"loud\" names no log level",
    );
    fails_saying(
        dir.path(),
        &[],
        &["--env-file", "missing.env"],
        "error: --env-file missing.env:",
    );
    // A line that cannot be read stops the start, and is not shown: it may hold a secret.
    std::fs::write(
        dir.path().join(".env"),
        "REDIS_HOST 127.0.0.1\nTOLLGATE_ADMIN_TOKEN=\"s3cret\n",
    )
    .unwrap();
    fails_saying(
        dir.path(),
        &[],
        &[],
        "error: .env: cannot read one of its lines",
    );
    let output = serve_in_until_it_exits(dir.path(), &[], &[]);
    let shown = String::from_utf8_lossy(&output.stderr);
    assert!(
        !shown.contains("s3cret") && !shown.contains("127.0.0.1"),
        "{shown}"
    );
    // The same file, named: the variables it sets count.
    let named = dir.path().join("other.env");
    std::fs::write(&named, "REDIS_HOST=127.0.0.1\nREDIS_PORT=0\n").unwrap();
    fails_saying(
        dir.path(),
        &[],
        &["--env-file", named.to_str().unwrap()],
        "error: REDIS_PORT=\"0\" is not a port",
    );
}

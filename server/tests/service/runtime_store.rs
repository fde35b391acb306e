//! Where `tollgate serve` keeps its runtime entries (`POST /configure`, the admin API's
//! writes), run as its users run it: the real binary, a real `redis-server` killed and
//! started again empty on the same port, real HTTP. Instances write the entries they hold
//! back into a Redis that lost them, and a deliberate removal of every entry still reaches
//! them all; the number of entries and the state file's size are capped; a runtime key that
//! Redis holds as something else than a hash is logged once per episode and counted.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::*;

/// A request with an optional JSON body; its status and JSON body.
async fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an answer");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The targets of the runtime entries an instance lists, in order.
async fn runtime_targets(base: &str) -> Vec<String> {
    let (status, rules) = call("GET", &format!("{base}/admin/rules"), None).await;
    assert_eq!(status, 200, "{rules}");
    rules["runtime"]
        .as_array()
        .expect("a list of runtime entries")
        .iter()
        .map(|entry| entry["target"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until `base` lists exactly `wanted` as its runtime entries, failing after 10 s.
async fn until_targets(base: &str, wanted: &[&str]) {
    let started = Instant::now();
    loop {
        let targets = runtime_targets(base).await;
        if targets == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{base} lists {targets:?}, not {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fields of the runtime entries' hash in Redis, sorted.
fn fields_in_redis(redis: &TestRedis, prefix: &str) -> Vec<String> {
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{prefix}:runtime"))
        .query(&mut redis.client())
        .expect("HKEYS");
    fields.sort();
    fields
}

/// `POST /configure` of `key` at 5/hour on the instance at `address`.
async fn configure_key(address: &str, key: &str) -> (u16, Value) {
    let url = format!("http://{address}/configure");
    call("POST", &url, Some(json!({"key": key, "limit": "5/hour"}))).await
}

const ENTRIES: [&str; 3] = ["client:id:k1", "client:id:k2", "rule:/reports@GET"];

/// Finding 7: the compose Redis kept nothing, so a restart lost every runtime entry. Each
/// instance holds its last good copy and writes it back into a Redis that comes back
/// without it; removing every entry on purpose still reaches every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_written_back_into_a_redis_restarted_empty() {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("written-back");
    let envs = [
        ("DEFAULT_RATE_LIMIT", "1000/hour"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    let (mut a, mut b) = (start_service(&envs), start_service(&envs));
    let (base_a, base_b) = (
        format!("http://{}", a.address),
        format!("http://{}", b.address),
    );
    for (key, limit) in [("k1", "5/hour"), ("k2", "7/hour")] {
        let body = json!({"key": key, "limit": limit});
        let (status, answer) = call("POST", &format!("{base_a}/configure"), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let route = json!({"path": "/reports", "methods": ["GET"], "limit": "3/hour"});
    let (status, answer) = call("POST", &format!("{base_b}/admin/rules/routes"), Some(route)).await;
    assert_eq!(status, 200, "{answer}");
    until_targets(&base_a, &ENTRIES).await;
    until_targets(&base_b, &ENTRIES).await;

    redis.restart();
    assert_eq!(
        fields_in_redis(&redis, &prefix),
        Vec::<String>::new(),
        "empty"
    );
    let restarted = Instant::now();
    while fields_in_redis(&redis, &prefix) != ENTRIES {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "not written back: {:?}",
            fields_in_redis(&redis, &prefix)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("written back {:?} after the restart", restarted.elapsed());
    // Neither instance adopted the empty Redis meanwhile, nor does it now.
    assert_eq!(runtime_targets(&base_a).await, ENTRIES);
    assert_eq!(runtime_targets(&base_b).await, ENTRIES);
    // And a change after the restart is made over them, not over nothing.
    let body = json!({"key": "k3", "limit": "9/hour"});
    assert_eq!(
        call("POST", &format!("{base_b}/configure"), Some(body))
            .await
            .0,
        200
    );
    let four = [
        "client:id:k1",
        "client:id:k2",
        "client:id:k3",
        "rule:/reports@GET",
    ];
    until_targets(&base_a, &four).await;

    // Every entry removed on purpose: the empty set reaches both, and stays empty.
    for entry in [
        "clients/id:k1",
        "clients/id:k2",
        "clients/id:k3",
        "routes/reports@GET",
    ] {
        let (status, answer) = call("DELETE", &format!("{base_a}/admin/rules/{entry}"), None).await;
        assert_eq!(status, 200, "{entry}: {answer}");
    }
    until_targets(&base_b, &[]).await;
    until_targets(&base_a, &[]).await;
    assert_eq!(fields_in_redis(&redis, &prefix), Vec::<String>::new());

    let logs = [a.stop_and_read_log(), b.stop_and_read_log()].join("\n");
    let written_back: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("Redis had lost the runtime entries"))
        .collect();
    assert!(!written_back.is_empty(), "no warning:\n{logs}");
    assert!(
        written_back
            .iter()
            .all(|line| line.contains("WARN") && line.contains("held=3")),
        "{written_back:?}"
    );
    let restored: u64 = written_back
        .iter()
        .filter_map(|line| line.split("restored=").nth(1)?.split_whitespace().next())
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        restored, 3,
        "each entry written back once: {written_back:?}"
    );
}

/// Finding 9: a new entry past `TOLLGATE_MAX_RUNTIME_ENTRIES` is a 422 naming the cap, on
/// one instance's state file and across instances on one Redis (counted in Redis);
/// replacing or removing an entry still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_entry_past_the_cap_is_a_422_naming_it() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("capped");
    let on_redis = [
        ("DEFAULT_RATE_LIMIT", "1000/hour"),
        ("TOLLGATE_MAX_RUNTIME_ENTRIES", "2"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    let (a, b) = (start_service(&on_redis), start_service(&on_redis));
    let memory = start_service(&[
        ("DEFAULT_RATE_LIMIT", "1000/hour"),
        ("TOLLGATE_MAX_RUNTIME_ENTRIES", "2"),
    ]);
    // On Redis the two instances fill it together; in memory one does.
    let setups = [
        [&a.address, &b.address, &a.address],
        [&memory.address, &memory.address, &memory.address],
    ];
    for [first, second, third] in setups {
        assert_eq!(configure_key(first, "k1").await.0, 200);
        assert_eq!(configure_key(second, "k2").await.0, 200);
        let (status, body) = configure_key(third, "k3").await;
        assert_eq!(status, 422, "{body}");
        let msg = body["detail"][0]["msg"].as_str().unwrap();
        assert!(
            msg.starts_with("client:id:k3 was not added: at most 2 runtime entries are kept")
                && msg.contains("TOLLGATE_MAX_RUNTIME_ENTRIES"),
            "{msg}"
        );
        assert_eq!(body["detail"][0]["loc"], json!(["body"]));
        // The admin API's writes are capped the same way.
        let route = json!({"path": "/x", "limit": "1/hour"});
        let url = format!("http://{third}/admin/rules/routes");
        assert_eq!(call("POST", &url, Some(route)).await.0, 422);
        // Replacing one is not a new entry; removing one makes room.
        assert_eq!(configure_key(third, "k1").await.0, 200);
        let url = format!("http://{second}/admin/rules/clients/id:k2");
        assert_eq!(call("DELETE", &url, None).await.0, 200);
        assert_eq!(configure_key(third, "k3").await.0, 200);
        until_targets(
            &format!("http://{first}"),
            &["client:id:k1", "client:id:k3"],
        )
        .await;
    }
}

/// Finding 9: a state file larger than `TOLLGATE_STATE_FILE_MAX_BYTES` stops the start at
/// once, with an error naming the file and the limit, without reading it into memory (a
/// sparse gigabyte here; one of these took 1.06 GB of RSS before); and a change that would
/// make the file larger is refused with a 422.
#[tokio::test]
async fn a_state_file_past_its_cap_stops_the_start_and_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tollgate-runtime.json");
    std::fs::File::create(&state)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let started = Instant::now();
    let output = serve_until_it_exits(&[("TOLLGATE_STATE_FILE", state.as_os_str())]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot load the runtime state file {}: it is larger than 16777216 bytes, the most that is read",
            state.display()
        )) && stderr.contains("TOLLGATE_STATE_FILE_MAX_BYTES"),
        "{stderr}"
    );

    std::fs::remove_file(&state).unwrap();
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "1000/hour"),
        ("TOLLGATE_STATE_FILE", state.to_str().unwrap()),
        ("TOLLGATE_STATE_FILE_MAX_BYTES", "200"),
    ]);
    let url = format!("http://{}/configure", service.address);
    let mut kept = 0;
    let refused = loop {
        let key = format!("key-{kept}");
        let (status, body) = call("POST", &url, Some(json!({"key": key, "limit": "5/hour"}))).await;
        if status != 200 {
            break (status, body);
        }
        kept += 1;
        assert!(kept < 10, "200 bytes never filled");
    };
    assert_eq!(refused.0, 422, "{}", refused.1);
    let msg = refused.1["detail"][0]["msg"].as_str().unwrap();
    assert!(
        msg.contains("would be larger than 200 bytes")
            && msg.contains("TOLLGATE_STATE_FILE_MAX_BYTES"),
        "{msg}"
    );
    let written = std::fs::metadata(&state).unwrap().len();
    assert!((1..=200).contains(&written), "{written} bytes");
    // What was written starts the next instance.
    drop(service);
    let again = start_service(&[
        ("TOLLGATE_STATE_FILE", state.to_str().unwrap()),
        ("TOLLGATE_STATE_FILE_MAX_BYTES", "200"),
    ]);
    assert_eq!(
        runtime_targets(&format!("http://{}", again.address))
            .await
            .len(),
        kept
    );
}

/// Finding 14: the runtime key replaced by a string made every re-read fail with nothing
/// logged. Now a run of failed reads logs once (and its end once), every failure counts in
/// `tollgate_runtime_read_errors_total`, the entries in force stay, and once the key is
/// deleted the instance writes its entries back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_key_of_the_wrong_type_is_logged_once_per_episode_and_counted() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("wrong-type");
    let mut service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "1000/hour"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ]);
    let base = format!("http://{}", service.address);
    let body = json!({"key": "k", "limit": "5/hour"});
    assert_eq!(
        call("POST", &format!("{base}/configure"), Some(body))
            .await
            .0,
        200
    );
    let key = format!("{prefix}:runtime");
    let mut control = redis.client();
    let mut publish = |times: usize| {
        for _ in 0..times {
            // Not a change: every instance reads everything again.
            let _: () = redis::cmd("PUBLISH")
                .arg(&key)
                .arg("read everything again")
                .query(&mut control)
                .unwrap();
        }
    };
    let counted = "tollgate_runtime_read_errors_total";
    for episode in 1..=2u64 {
        let _: () = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(&key)
            .cmd("SET")
            .arg(&key)
            .arg("not a hash")
            .query(&mut redis.client())
            .unwrap();
        let before = metric(&base, counted).await;
        publish(3);
        let started = Instant::now();
        while metric(&base, counted).await < before + 3 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "episode {episode}: {} failed reads counted",
                metric(&base, counted).await - before
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            runtime_targets(&base).await,
            ["client:id:k"],
            "still in force"
        );
        // Deleted: the instance writes its entry back at its next read.
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query(&mut redis.client())
            .unwrap();
        publish(1);
        let started = Instant::now();
        while fields_in_redis(&redis, &prefix) != ["client:id:k"] {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not written back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let log = service.stop_and_read_log();
    let count = |needle: &str| log.lines().filter(|line| line.contains(needle)).count();
    assert_eq!(
        count("the runtime entries in Redis cannot be read"),
        2,
        "one warning per episode:\n{log}"
    );
    assert_eq!(
        count("the runtime entries in Redis are read again"),
        2,
        "{log}"
    );
    let warning = log
        .lines()
        .find(|line| line.contains("cannot be read"))
        .unwrap();
    assert!(
        warning.contains("WARN")
            && warning.contains(&format!("{key} is not a hash"))
            && warning.contains("WRONGTYPE"),
        "{warning}"
    );
}

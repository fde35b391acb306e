//! Usage statistics hold attacker-chosen keys: `tollgate serve`, run as its users run it
//! (the real binary, a real `redis-server`, real HTTP), counts at most
//! `TOLLGATE_USAGE_CLIENTS_PER_HOUR` keys per key in Redis each hour. Past it, a key's calls
//! are in the totals only, it leaves nothing of its own in Redis, and `GET /stats/{key}`
//! says it was not tracked that hour.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::*;

async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// This UTC hour, as usage names it.
fn utc_hour() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..13].replace('T', "-")
}

/// The usage keys Redis holds of `key`.
fn own_keys(redis: &TestRedis, prefix: &str, key: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:usage:{{id:{key}}}:*"))
        .query(&mut redis.client())
        .expect("KEYS")
}

/// Three keys an hour: the first three are counted per key; two more are in the totals
/// only. Returns `None` if the UTC hour turned during the run (the next hour counts anew).
async fn past_the_hours_bound(redis: &TestRedis) -> Option<()> {
    let prefix = unique_prefix("per-hour");
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "1/hour"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &prefix),
        ("TOLLGATE_USAGE_CLIENTS_PER_HOUR", "3"),
    ]);
    let base = format!("http://{}", service.address);
    let hour = utc_hour();
    // Two calls each (one allowed, one refused); the first three keys written first.
    for key in ["k1", "k2", "k3"] {
        for _ in 0..2 {
            get(&format!("{base}/check/{key}")).await;
        }
    }
    let (status, k1) = get(&format!("{base}/stats/k1")).await;
    assert_eq!(status, 200, "{k1}");
    for key in ["k4", "k5"] {
        for _ in 0..2 {
            get(&format!("{base}/check/{key}")).await;
        }
    }
    let (_, k5) = get(&format!("{base}/stats/k5")).await;
    let (_, k1) = get(&format!("{base}/stats/k1")).await;
    let (_, global) = get(&format!("{base}/admin/stats")).await;
    if utc_hour() != hour {
        return None;
    }

    // The totals count every call.
    assert_eq!(
        (
            &global["total_requests"],
            &global["allowed"],
            &global["denied"]
        ),
        (&json!(10), &json!(5), &json!(5)),
        "{global}"
    );
    // The first three keys are counted per key; the rest are not, and say so.
    assert_eq!(k1["hourly_calls"], json!({ hour.clone(): 2 }), "{k1}");
    assert_eq!(k1["untracked_hours"], json!([]), "{k1}");
    assert_eq!(k5["hourly_calls"], json!({}), "{k5}");
    assert_eq!(k5["daily_calls"], json!({}), "{k5}");
    assert_eq!(k5["untracked_hours"], json!([hour]), "{k5}");
    // Nothing of theirs in Redis: no hashes, no place in the ranking.
    for key in ["k4", "k5"] {
        assert_eq!(own_keys(redis, &prefix, key), Vec::<String>::new(), "{key}");
    }
    assert_eq!(own_keys(redis, &prefix, "k1").len(), 2, "its hour and day");
    let ranked: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:usage:limited:{hour}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(ranked, ["id:k1", "id:k2", "id:k3"]);
    let most_limited: Vec<&str> = global["most_limited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    assert_eq!(most_limited, ["id:k1", "id:k2", "id:k3"]);
    // The calls past the bound are counted as dropped.
    let dropped = metric(&base, "tollgate_usage_dropped_total").await;
    assert_eq!(dropped, 4);
    let counted: u64 = redis::cmd("GET")
        .arg(format!("{prefix}:usage-clients:{hour}"))
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(counted, 3);
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hours_bound_keys_count_in_the_totals_only() {
    let redis = TestRedis::start();
    for _ in 0..2 {
        if past_the_hours_bound(&redis).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the UTC hour turned during both runs");
}

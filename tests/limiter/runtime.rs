//! Runtime rule changes on the `Limiter`, on memory (kept in a real state file), on a real
//! Redis and on a real Redis Cluster: client overrides and routes set, replaced and removed, validated like the rules
//! file, kept across restarts, shared by every limiter on the Redis (announced, and re-read
//! as a safety net), merged again over a reloaded file, and refused whole when they cannot be
//! kept.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::*;
use tollgate::{
    ClientKey, InvalidRule, Limiter, Origin, Query, RuleTarget, RulesError, RuntimeError,
};

const RULES: &str = r#"{
    "default": {"limit": "5/hour"},
    "routes": [{"path": "/api/data", "limit": "4/hour"}],
    "clients": {"id:partner": {"limit": "50/hour"}}
}"#;

/// Where a limiter keeps its runtime entries.
enum Kept<'a> {
    /// In memory, with this state file.
    File(PathBuf),
    /// In this Redis, under this prefix.
    Redis(&'a TestRedis, String),
}

impl Kept<'_> {
    async fn limiter(&self, json: &str) -> Limiter {
        let builder = Limiter::builder().rules(rules(json));
        let builder = match self {
            Kept::File(path) => builder.runtime_state_file(path),
            Kept::Redis(redis, prefix) => builder
                .redis_url(redis.url())
                .redis_prefix(prefix)
                .redis_timeout(Duration::from_secs(2)),
        };
        builder
            .build()
            .await
            .unwrap_or_else(|e| panic!("build limiter: {e}"))
    }

    /// The entries as the store holds them, by target.
    fn stored(&self) -> Vec<(String, serde_json::Value)> {
        match self {
            Kept::File(path) => match std::fs::read_to_string(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("read {}: {e}", path.display()),
                Ok(text) => {
                    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let entries = state["entries"].as_object().unwrap().clone();
                    entries.into_iter().collect()
                }
            },
            Kept::Redis(redis, prefix) => {
                let fields: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(format!("{prefix}:runtime"))
                    .query(&mut redis.client())
                    .unwrap();
                let mut fields: Vec<(String, serde_json::Value)> = fields
                    .into_iter()
                    .map(|(target, rule)| (target, serde_json::from_str(&rule).unwrap()))
                    .collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                fields
            }
        }
    }
}

fn state_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tollgate-runtime.json")
}

/// How many requests `client` gets through under the rule a `GET path` falls under, before
/// the first refusal (at most 100).
async fn admitted(limiter: &Limiter, client: &str, path: &str) -> u32 {
    let client = ClientKey::id(client);
    let mut admitted = 0;
    while admitted < 100
        && limiter
            .check(Query::new(&client).route("GET", path))
            .await
            .unwrap()
            .allowed()
    {
        admitted += 1;
    }
    admitted
}

/// The capacity of the first band of `client`'s limit under the rule of `GET path`.
fn capacity(limiter: &Limiter, client: &str, path: &str) -> Option<u32> {
    let rules = limiter.rules();
    let resolved = rules
        .resolve(&http::Method::GET, path, None, &ClientKey::id(client))
        .unwrap();
    resolved.limit.map(|limit| limit.bands()[0].capacity())
}

async fn a_client_override_is_enforced(kept: &Kept<'_>) {
    let limiter = kept.limiter(RULES).await;
    let k = ClientKey::id("k");
    limiter
        .set_client_override(&k, json!({"limit": "3/hour"}))
        .await
        .unwrap();
    assert_eq!(admitted(&limiter, "k", "/").await, 3);
    assert_eq!(
        admitted(&limiter, "k", "/api/data").await,
        3,
        "on every limited rule"
    );
    assert_eq!(
        admitted(&limiter, "other", "/").await,
        5,
        "others keep the default"
    );
    assert_eq!(
        kept.stored(),
        [("client:id:k".to_owned(), json!({"limit": "3/hour"}))]
    );
    let entries = limiter.rule_entries();
    let origin = |target: &RuleTarget| {
        entries
            .iter()
            .find(|e| e.target == *target)
            .map(|e| e.origin)
    };
    assert_eq!(
        origin(&RuleTarget::Client(k.clone())),
        Some(Origin::Runtime)
    );
    assert_eq!(
        origin(&RuleTarget::Client(ClientKey::id("partner"))),
        Some(Origin::Base)
    );
    assert_eq!(
        origin(&RuleTarget::Rule("default".into())),
        Some(Origin::Base)
    );

    // A runtime entry wins over the base rules' override for the same client; removing it
    // puts the base rules' back.
    let partner = ClientKey::id("partner");
    limiter
        .set_client_override(&partner, json!({"limit": "2/hour"}))
        .await
        .unwrap();
    assert_eq!(capacity(&limiter, "partner", "/"), Some(2));
    assert!(limiter.runtime_entries().iter().any(|e| e.replaces_base));
    assert!(limiter.remove_client_override(&partner).await.unwrap());
    assert_eq!(capacity(&limiter, "partner", "/"), Some(50));
    assert!(!limiter.remove_client_override(&partner).await.unwrap());
    assert_eq!(kept.stored().len(), 1);
}

#[tokio::test]
async fn a_client_override_is_enforced_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    a_client_override_is_enforced(&Kept::File(state_file(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_override_is_enforced_on_redis() {
    let redis = TestRedis::start();
    a_client_override_is_enforced(&Kept::Redis(&redis, unique_prefix("override"))).await;
}

async fn a_route_is_added_updated_and_removed(kept: &Kept<'_>) {
    let limiter = kept.limiter(RULES).await;
    // A client that spent some of the default: its state survives every change below.
    assert!(
        limiter
            .check(Query::new(&ClientKey::id("steady")))
            .await
            .unwrap()
            .allowed()
    );

    // Replacing the base rules' route: same identity, new limit.
    let id = limiter
        .set_route(json!({"path": "/api/data", "limit": "2/hour"}))
        .await
        .unwrap();
    assert_eq!(id, "/api/data");
    assert_eq!(admitted(&limiter, "a", "/api/data").await, 2);
    // Updated: the route keeps its identity, so its clients keep their state.
    limiter
        .set_route(json!({"path": "/api/data", "limit": "3/hour"}))
        .await
        .unwrap();
    assert_eq!(admitted(&limiter, "b", "/api/data").await, 3);
    assert_eq!(
        admitted(&limiter, "a", "/api/data").await,
        0,
        "a's bucket survived, empty: a raised capacity adds no tokens"
    );
    // Removed: the base rules' route again.
    assert!(limiter.remove_route("/api/data").await.unwrap());
    assert_eq!(capacity(&limiter, "b", "/api/data"), Some(4));

    // A route the base rules do not have, in seed 002's terms: 2 requests per 60 s,
    // sliding window. Removing it leaves the path to the default.
    let id = limiter
        .set_route(
            json!({"path": "/api/items/{id}", "capacity": 2, "refill_rate": 2.0 / 60.0,
                          "algorithm": "sliding_window"}),
        )
        .await
        .unwrap();
    assert_eq!(id, "/api/items/<id>");
    assert_eq!(admitted(&limiter, "a", "/api/items/7").await, 2);
    assert_eq!(
        limiter
            .rules()
            .find("/api/items/<id>")
            .unwrap()
            .limit()
            .unwrap()
            .algorithm(),
        tollgate::Algorithm::SlidingWindow
    );
    assert_eq!(
        kept.stored(),
        [(
            "rule:/api/items/<id>".to_owned(),
            json!({"path": "/api/items/{id}", "capacity": 2, "refill_rate": 2.0 / 60.0,
                   "algorithm": "sliding_window"})
        )]
    );
    // By its pattern, as by its identity.
    assert!(limiter.remove_route("/api/items/{id}").await.unwrap());
    assert_eq!(
        limiter
            .rules()
            .lookup(&http::Method::GET, "/api/items/7")
            .id(),
        "default"
    );
    assert!(
        !limiter.remove_route("/api/data").await.unwrap(),
        "only base rules left"
    );
    assert_eq!(kept.stored(), []);

    let steady = limiter
        .peek(Query::new(&ClientKey::id("steady")))
        .await
        .unwrap();
    assert_eq!(steady.decision().unwrap().remaining, 4, "state survived");
}

#[tokio::test]
async fn a_route_is_added_updated_and_removed_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    a_route_is_added_updated_and_removed(&Kept::File(state_file(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_is_added_updated_and_removed_on_redis() {
    let redis = TestRedis::start();
    a_route_is_added_updated_and_removed(&Kept::Redis(&redis, unique_prefix("route"))).await;
}

/// The problem the rules file would report for the same rule, at the same place.
fn file_problem(json: &str) -> (String, InvalidRule) {
    match tollgate::Rules::from_json(json).unwrap_err() {
        RulesError::Invalid {
            location, problem, ..
        } => (location.json_path, problem),
        other => panic!("{other}"),
    }
}

async fn invalid_entries_are_refused_whole(kept: &Kept<'_>) {
    let limiter = kept.limiter(RULES).await;
    let before = limiter.rule_entries();
    let k = ClientKey::id("k");

    // Seed 000's `/configure` with a limit of zero.
    let err = limiter
        .set_client_override(&k, json!({"limit": "0/second"}))
        .await
        .unwrap_err();
    let RuntimeError::Invalid(RulesError::Invalid {
        source_name,
        location,
        problem,
    }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!(source_name, "runtime entry");
    let file = file_problem(
        r#"{"default": {"limit": "5/hour"}, "clients": {"id:k": {"limit": "0/second"}}}"#,
    );
    assert_eq!((location.json_path.clone(), problem.clone()), file);
    assert_eq!(
        err.to_string(),
        "runtime entry: at clients.id:k.limit: limit must look like \"N/unit\" with unit one of second, \
         minute, hour, day and N an integer from 1 to 1000000000 for N/second or 4294967295 for \
         N/minute, N/hour, N/day; got \"0/second\""
    );

    // A route with an unknown field, and one with a bad cost.
    let err = limiter
        .set_route(json!({"path": "/x", "limt": "1/second"}))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("runtime entry: at routes[0].limt: unknown field `limt`"),
        "{err}"
    );
    let err = limiter
        .set_route(json!({"path": "/x", "limit": "5/second", "cost": 6}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "runtime entry: at routes[0].cost: cost must be an integer from 1 to 5 (the smallest \
         capacity of the rule), got 6"
    );
    // Not a rule at all, and a client that is not a client key.
    let err = limiter
        .set_client_override(&k, json!("100/minute"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("runtime entry: at clients.id:k: invalid type"),
        "{err}"
    );
    let err = limiter
        .set_client_override(&ClientKey::id("has space"), json!({"limit": "1/second"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a client key"), "{err}");

    // Valid alone, but not beside the base rules' route for the same path and methods.
    let err = limiter
        .set_route(json!({"path": "/api/data", "methods": ["GET"], "limit": "1/second"}))
        .await
        .unwrap_err();
    let RuntimeError::Conflict { target, source } = &err else {
        panic!("{err}")
    };
    assert_eq!(target, "rule:/api/data@GET");
    assert!(
        source
            .to_string()
            .contains("route \"/api/data\" duplicates routes[0]"),
        "{source}"
    );
    assert!(err.to_string().starts_with(
        "rule:/api/data@GET does not fit the rules in force: <inline> with runtime entries: at routes[1].path"
    ), "{err}");
    // Nor beside a runtime route whose pattern it overlaps.
    let fits = limiter
        .set_route(json!({"path": "/api/{name}", "limit": "1/second"}))
        .await;
    assert!(
        fits.is_ok(),
        "a parameter beside a static segment fits: {fits:?}"
    );
    let err = limiter
        .set_route(json!({"path": "/api/{other}", "limit": "1/second"}))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("conflicts with routes[1] (\"/api/{name}\")"),
        "{err}"
    );
    assert!(limiter.remove_route("/api/<name>").await.unwrap());

    // Nothing of it applied or stored.
    assert_eq!(limiter.rule_entries(), before);
    assert_eq!(kept.stored(), []);
    assert!(limiter.runtime_entries().is_empty());
}

#[tokio::test]
async fn invalid_entries_are_refused_whole_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    invalid_entries_are_refused_whole(&Kept::File(state_file(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_entries_are_refused_whole_on_redis() {
    let redis = TestRedis::start();
    invalid_entries_are_refused_whole(&Kept::Redis(&redis, unique_prefix("invalid"))).await;
}

/// Polls `limiter` until `client`'s limit under the default rule is `capacity`; returns how
/// long that took, failing after `patience`.
async fn until_capacity(
    limiter: &Limiter,
    client: &str,
    capacity_wanted: Option<u32>,
    patience: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let seen = capacity(limiter, client, "/");
        if seen == capacity_wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "{client}'s limit is still {seen:?}, not {capacity_wanted:?}, after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_limiter_is_enforced_by_the_other_within_a_second() {
    let redis = TestRedis::start();
    let kept = Kept::Redis(&redis, unique_prefix("shared"));
    let (a, b) = (kept.limiter(RULES).await, kept.limiter(RULES).await);
    let k = ClientKey::id("k");

    a.set_client_override(&k, json!({"limit": "2/hour"}))
        .await
        .unwrap();
    let took = until_capacity(&b, "k", Some(2), Duration::from_secs(1)).await;
    eprintln!("the other limiter applied the override {took:?} after it was set");
    assert_eq!(admitted(&b, "k", "/").await, 2, "enforced there");

    let id = b
        .set_route(json!({"path": "/api/new", "limit": "1/hour"}))
        .await
        .unwrap();
    let started = Instant::now();
    while a.rules().find(&id).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the route never reached A"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(admitted(&a, "x", "/api/new").await, 1);

    assert!(b.remove_client_override(&k).await.unwrap());
    until_capacity(&a, "k", Some(5), Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_reread_applies_a_change_whose_announcement_was_missed() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("reread");
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .redis_url(redis.url())
        .redis_prefix(&prefix)
        .runtime_resync_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    // Written straight into the hash, never announced.
    let hset = |target: &str, rule: &str| {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:runtime"))
            .arg(target)
            .arg(rule)
            .query(&mut redis.client())
            .unwrap();
    };
    hset("client:id:k", r#"{"limit": "7/minute"}"#);
    until_capacity(&limiter, "k", Some(7), Duration::from_secs(2)).await;
    // The read that follows the subscription is done by now (it would have read the first
    // write), and nothing is announced: only the periodic re-read can find this one.
    hset("client:id:k", r#"{"limit": "8/minute"}"#);
    let took = until_capacity(&limiter, "k", Some(8), Duration::from_secs(2)).await;
    eprintln!("the re-read applied the unannounced entry after {took:?}");

    // A field that holds no valid rule is left out, and says why.
    hset("client:id:bad", "not json");
    let started = Instant::now();
    let bad = loop {
        let entries = limiter.runtime_entries();
        if let Some(bad) = entries
            .into_iter()
            .find(|e| e.target.to_string() == "client:id:bad")
        {
            break bad;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "never re-read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let why = bad.left_out.expect("left out");
    assert!(why.contains("at clients.id:bad: invalid type"), "{why}");
    assert_eq!(
        capacity(&limiter, "k", "/"),
        Some(8),
        "the valid entry stays"
    );
}

async fn entries_survive_a_restart(kept: &Kept<'_>) {
    let limiter = kept.limiter(RULES).await;
    limiter
        .set_client_override(&ClientKey::id("k"), json!({"limit": "3/minute"}))
        .await
        .unwrap();
    limiter
        .set_route(json!({"path": "/api/new", "limit": "1/minute"}))
        .await
        .unwrap();
    let before = limiter.rule_entries();
    drop(limiter);

    // In force as soon as build returns.
    let limiter = kept.limiter(RULES).await;
    assert_eq!(limiter.rule_entries(), before);
    assert_eq!(capacity(&limiter, "k", "/"), Some(3));
    assert_eq!(limiter.runtime_entries().len(), 2);
}

#[tokio::test]
async fn entries_survive_a_restart_via_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    entries_survive_a_restart(&Kept::File(state_file(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_restart_on_redis() {
    let redis = TestRedis::start();
    entries_survive_a_restart(&Kept::Redis(&redis, unique_prefix("restart"))).await;
}

fn write_rules(path: &Path, default: &str, routes: &str) {
    std::fs::write(
        path,
        format!(r#"{{"default": {{"limit": "{default}"}}, "routes": [{routes}]}}"#),
    )
    .unwrap();
}

#[tokio::test]
async fn a_reload_of_the_file_keeps_the_runtime_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate_limits.json");
    write_rules(
        &file,
        "5/hour",
        r#"{"path": "/api/data", "limit": "4/hour"}"#,
    );
    let limiter = Limiter::builder()
        .rules_file(&file)
        .watch_rules_file(false)
        .reload_on_sighup(false)
        .runtime_state_file(state_file(&dir))
        .build()
        .await
        .unwrap();
    limiter
        .set_client_override(&ClientKey::id("k"), json!({"limit": "3/minute"}))
        .await
        .unwrap();
    limiter
        .set_route(json!({"path": "/api/{name}", "limit": "1/minute"}))
        .await
        .unwrap();

    write_rules(
        &file,
        "6/hour",
        r#"{"path": "/api/data", "limit": "8/hour"}"#,
    );
    assert!(limiter.reload().await.unwrap());
    assert_eq!(
        capacity(&limiter, "other", "/"),
        Some(6),
        "the file's new default"
    );
    assert_eq!(capacity(&limiter, "other", "/api/data"), Some(8));
    assert_eq!(capacity(&limiter, "k", "/"), Some(3), "the override stays");
    assert_eq!(
        capacity(&limiter, "other", "/api/x"),
        Some(1),
        "the route stays"
    );

    // The file gains a route the runtime route conflicts with: the file's is in force, and
    // the runtime route is left out (kept, and back once the file lets it).
    write_rules(
        &file,
        "6/hour",
        r#"{"path": "/api/{id}", "limit": "9/hour"}"#,
    );
    assert!(limiter.reload().await.unwrap());
    assert_eq!(capacity(&limiter, "other", "/api/x"), Some(9));
    let entries = limiter.runtime_entries();
    let route = entries
        .iter()
        .find(|e| e.target == RuleTarget::Rule("/api/<name>".into()))
        .unwrap();
    let why = route.left_out.as_deref().expect("left out");
    assert!(
        why.contains("conflicts with routes[0] (\"/api/{id}\")"),
        "{why}"
    );
    assert_eq!(
        capacity(&limiter, "k", "/"),
        Some(3),
        "the override is unaffected"
    );

    write_rules(&file, "6/hour", "");
    assert!(limiter.reload().await.unwrap());
    assert_eq!(
        capacity(&limiter, "other", "/api/x"),
        Some(1),
        "back in force"
    );
    assert!(
        limiter
            .runtime_entries()
            .iter()
            .all(|e| e.left_out.is_none())
    );

    // Rules given with set_rules are a base too.
    limiter.set_rules(rules(r#"{"default": {"limit": "7/hour"}}"#));
    assert_eq!(capacity(&limiter, "other", "/"), Some(7));
    assert_eq!(capacity(&limiter, "k", "/"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_change_is_refused_and_applied_nowhere() {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("down");
    let kept = Kept::Redis(&redis, prefix.clone());
    let (a, b) = (kept.limiter(RULES).await, kept.limiter(RULES).await);
    let before = a.rule_entries();
    redis.kill();

    let started = Instant::now();
    let err = a
        .set_client_override(&ClientKey::id("k"), json!({"limit": "3/minute"}))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused in {:?}",
        started.elapsed()
    );
    let RuntimeError::Store { target, source } = &err else {
        panic!("{err}")
    };
    assert_eq!(target, "client:id:k");
    eprintln!("refused after {:?}: {err}", started.elapsed());
    assert_eq!(source.store(), "Redis");
    assert!(!source.reason().is_empty());
    assert!(
        err.to_string()
            .starts_with("client:id:k was not changed: Redis could not store the change: "),
        "{err}"
    );
    assert_eq!(a.rule_entries(), before, "not applied here");
    assert!(a.runtime_entries().is_empty());
    let err = a
        .set_route(json!({"path": "/api/new", "limit": "1/minute"}))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Store { .. }), "{err}");
    assert!(a.rules().find("/api/new").is_none());

    // Redis back (empty, as it persists nothing here): nothing was stored, and the other
    // limiter never applied anything.
    redis.restart();
    assert_eq!(Kept::Redis(&redis, prefix).stored(), []);
    assert_eq!(b.rule_entries(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stored_while_a_limiter_could_not_reach_redis_apply_once_it_answers() {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("late");
    // Stored by another instance, and kept on disk (SAVE): there as soon as Redis answers
    // again, whenever this limiter's subscription is made.
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:runtime"))
        .arg("client:id:k")
        .arg(r#"{"limit": "3/minute"}"#)
        .query(&mut redis.client())
        .unwrap();
    let _: () = redis::cmd("SAVE").query(&mut redis.client()).unwrap();
    redis.kill();
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .redis_url(redis.url())
        .redis_prefix(&prefix)
        // Not the periodic re-read: the subscription made again is what triggers it.
        .runtime_resync_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    assert!(limiter.runtime_entries().is_empty());
    redis.restart();
    let took = until_capacity(&limiter, "k", Some(3), Duration::from_secs(5)).await;
    eprintln!("applied {took:?} after Redis came back");
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_refuses_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let path = state_dir.join("tollgate-runtime.json");
    let kept = Kept::File(path.clone());
    let limiter = kept.limiter(RULES).await;
    limiter
        .set_client_override(&ClientKey::id("kept"), json!({"limit": "3/minute"}))
        .await
        .unwrap();
    let before = limiter.rule_entries();

    // The directory is gone, and a file is in its place (a volume unmounted, say); as
    // root, permissions would not stop the write.
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, "not a directory").unwrap();
    let err = limiter
        .set_client_override(&ClientKey::id("k"), json!({"limit": "9/minute"}))
        .await
        .unwrap_err();
    let RuntimeError::StateFile { path: at, source } = &err else {
        panic!("{err}")
    };
    assert_eq!(at, &path);
    assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory, "{source}");
    assert!(
        err.to_string().starts_with(&format!(
            "runtime entries were not changed: cannot write the runtime state file {}: ",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(limiter.rule_entries(), before, "not applied");
    assert_eq!(capacity(&limiter, "k", "/"), Some(5));
    let err = limiter
        .remove_client_override(&ClientKey::id("kept"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::StateFile { .. }), "{err}");
    assert_eq!(
        capacity(&limiter, "kept", "/"),
        Some(3),
        "not removed either"
    );
}

#[tokio::test]
async fn a_state_file_that_is_not_one_stops_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_file(&dir);
    std::fs::write(&path, "{\"entries\": [").unwrap();
    let err = Limiter::builder()
        .rules(rules(RULES))
        .runtime_state_file(&path)
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot load the runtime state file {}: it is not a runtime state file",
            path.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn an_in_memory_limiter_without_a_state_file_refuses_changes() {
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .build()
        .await
        .unwrap();
    let err = limiter
        .set_client_override(&ClientKey::id("k"), json!({"limit": "3/minute"}))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NoStore), "{err}");
    assert_eq!(capacity(&limiter, "k", "/"), Some(5));
    // Invalid entries are still told apart.
    let err = limiter
        .set_client_override(&ClientKey::id("k"), json!({"limit": "0/second"}))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Invalid(_)), "{err}");
}

/// On a real Redis Cluster, the hash and the announcements work the same: one key per
/// command, announcements heard from any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_limiter_on_a_cluster() {
    let cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster");
    let build = || async {
        Limiter::builder()
            .rules(rules(RULES))
            .redis_cluster(cluster.urls())
            .redis_prefix(&prefix)
            .redis_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (build().await, build().await);
    a.set_client_override(&ClientKey::id("k"), json!({"limit": "3/hour"}))
        .await
        .unwrap();
    let took = until_capacity(&b, "k", Some(3), Duration::from_secs(1)).await;
    eprintln!("applied on the other limiter {took:?} after it was set, on a cluster");
    assert_eq!(admitted(&b, "k", "/").await, 3);
    // Kept: a limiter built now finds it.
    assert_eq!(capacity(&build().await, "k", "/"), Some(3));
}

//! Usage statistics in Redis, shared by every instance that uses the same prefix.
//!
//! | key | type | fields or members | expires |
//! | --- | --- | --- | --- |
//! | `<prefix>:usage:{<client>}:<YYYY-MM-DD-HH>` | hash | `allowed`, `denied`, `allowed:<rule>`, `denied:<rule>` | 25 h after its last write |
//! | `<prefix>:usage:{<client>}:<YYYY-MM-DD>` | hash | `allowed`, `denied` | 31 d after its last write |
//! | `<prefix>:usage:global:<YYYY-MM-DD-HH>` | hash | `allowed`, `denied`, `allowed:<rule>`, `denied:<rule>` | 25 h after its last write |
//! | `<prefix>:usage:limited:<YYYY-MM-DD-HH>` | sorted set | client, scored by its refusals | 25 h after its last write |
//! | `<prefix>:usage-clients:<YYYY-MM-DD-HH>` | string | how many clients that hour counts per client, at most `clients_per_hour` | 25 h after its last write |
//!
//! Each hour counts at most `clients_per_hour` clients per client (their own hashes, and the
//! ranking). Before a flush writes, the clients that have a hash for the hour already are
//! counted; new ones get room from the hour's count while it lasts (`admit.lua`, one script
//! per hour; two instances admitting one new client at once count it twice, so the bound
//! errs low). The calls of the rest are in the hour's global hash only, and counted as
//! dropped; a client's usage names the hours where it was not counted (`untracked_hours`).
//!
//! Every write adds (`HINCRBY`, `ZINCRBY`), so instances never overwrite each other's counts.
//! The hash tag `{<client>}` puts a client's keys in one slot of a Redis Cluster; each hour's
//! global keys land where they hash. Commands go out as pipelines: as few as possible on one
//! Redis, one per slot on a cluster (a cluster pipeline cannot cross slots), a few at a time,
//! each within the deadline of commands other than decisions.
//!
//! A pipeline that fails has its counts put back for the next flush. One that missed its
//! deadline may still have been applied by Redis, so after a timeout some counts can be
//! written twice; none is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Cmd, Pipeline, Script, Value};
use tokio::task::JoinSet;

use super::cluster::slot;
use super::connection::Connection;
use super::{REDIS, RedisBackend};
use crate::backend::usage::calendar::{Day, Hour, day_name, day_of, hour_name};
use crate::backend::usage::{
    Calls, ClientCalls, ClientUsage, DAYS_READ, HOURS_READ, HourCalls, RuleCalls, UsageBatch,
    UsageStore, UsageSummary, most_limited,
};
use crate::backend::{Client, StoreError, StoreFuture};
use crate::key::KeyRef;

/// An hour's keys live this long after their last write.
const HOUR_TTL_SECS: u64 = 25 * 3600;
/// A day's keys live this long after their last write.
const DAY_TTL_SECS: u64 = 31 * 24 * 3600;
/// The most commands in one pipeline.
const MAX_PIPELINE_COMMANDS: usize = 4096;
/// The most pipelines in flight at once.
const IN_FLIGHT: usize = 8;
static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("admit.lua")));

fn client_key(prefix: &str, client: &str, period: &str) -> String {
    format!("{prefix}:usage:{{{client}}}:{period}")
}

fn global_key(prefix: &str, hour: Hour) -> String {
    format!("{prefix}:usage:global:{}", hour_name(hour))
}

fn limited_key(prefix: &str, hour: Hour) -> String {
    format!("{prefix}:usage:limited:{}", hour_name(hour))
}

/// How many clients `hour` counts per client. Outside `usage:*`, which holds the counts
/// themselves.
fn counted_key(prefix: &str, hour: Hour) -> String {
    format!("{prefix}:usage-clients:{}", hour_name(hour))
}

/// Keeps, of `batch`, the hours of the clients Redis counts per client: those that have a
/// hash for the hour already, and new ones while the hour counts fewer than
/// `clients_per_hour`. The others' calls stay in the totals only (`batch.global`); returns
/// how many calls that is.
async fn admit(
    redis: &RedisBackend,
    connection: &Connection,
    batch: &mut UsageBatch,
    clients_per_hour: u64,
) -> Result<u64, String> {
    let prefix = redis.prefix();
    let asked: Vec<(usize, Hour)> = batch
        .clients
        .iter()
        .enumerate()
        .flat_map(|(at, client)| client.hours.iter().map(move |hour| (at, hour.hour)))
        .collect();
    let exists = asked
        .iter()
        .map(|(at, hour)| {
            let key = client_key(
                prefix,
                &batch.clients[*at].client.to_string(),
                &hour_name(*hour),
            );
            let command = redis::cmd("EXISTS").arg(&key).clone();
            (key, command)
        })
        .collect();
    let known = read_with(connection, exists, redis.command_timeout()).await?;
    let mut new: BTreeMap<Hour, Vec<usize>> = BTreeMap::new();
    for ((at, hour), known) in asked.into_iter().zip(known) {
        if !matches!(known, Value::Int(1)) {
            new.entry(hour).or_default().push(at);
        }
    }
    let deadline = redis.command_timeout();
    let mut dropped = 0;
    for (hour, clients) in new {
        let mut call = ADMIT.key(counted_key(prefix, hour));
        call.arg(clients.len())
            .arg(clients_per_hour)
            .arg(HOUR_TTL_SECS);
        let mut connection = connection.clone();
        let granted =
            match tokio::time::timeout(deadline, call.invoke_async::<usize>(&mut connection)).await
            {
                Ok(Ok(granted)) => granted,
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("Redis did not answer within {deadline:?}")),
            };
        for at in clients.into_iter().skip(granted) {
            let hours = &mut batch.clients[at].hours;
            if let Some(position) = hours.iter().position(|h| h.hour == hour) {
                dropped += hours.remove(position).calls.total();
            }
        }
    }
    batch.clients.retain(|client| !client.hours.is_empty());
    Ok(dropped)
}

/// Commands on keys of one slot, and the counts they write, put back if they fail.
struct Part {
    slot: u16,
    commands: Vec<Cmd>,
    counts: UsageBatch,
}

/// `HINCRBY`s of `calls` (and of each rule's, as `allowed:<rule>`, `denied:<rule>`) into
/// `key`, then its expiry.
fn add_to_hash(
    commands: &mut Vec<Cmd>,
    key: &str,
    calls: Calls,
    rules: &[RuleCalls],
    ttl_secs: u64,
) {
    let mut increment = |field: &str, by: u64| {
        if by > 0 {
            commands.push(redis::cmd("HINCRBY").arg(key).arg(field).arg(by).clone());
        }
    };
    increment("allowed", calls.allowed);
    increment("denied", calls.denied);
    for rule in rules {
        increment(&format!("allowed:{}", rule.rule), rule.calls.allowed);
        increment(&format!("denied:{}", rule.rule), rule.calls.denied);
    }
    if calls.total() > 0 {
        commands.push(redis::cmd("EXPIRE").arg(key).arg(ttl_secs).clone());
    }
}

/// What writes `batch`: a part per client (its hours and days), per hour of every client's
/// calls, and per hour of the ranking of refusals.
fn parts(prefix: &str, batch: UsageBatch) -> Vec<Part> {
    let mut parts = Vec::with_capacity(batch.clients.len() + 2 * batch.global.len());
    let mut ranked: BTreeMap<Hour, Vec<ClientCalls>> = BTreeMap::new();
    for mut client in batch.clients {
        let name = client.client.to_string();
        let mut commands = Vec::new();
        let mut days: BTreeMap<Day, Calls> = BTreeMap::new();
        for hour in &mut client.hours {
            let key = client_key(prefix, &name, &hour_name(hour.hour));
            add_to_hash(&mut commands, &key, hour.calls, &hour.rules, HOUR_TTL_SECS);
            days.entry(day_of(hour.hour)).or_default().add(hour.calls);
            if hour.unranked > 0 {
                let unranked = HourCalls {
                    hour: hour.hour,
                    calls: Calls::default(),
                    rules: Vec::new(),
                    unranked: std::mem::take(&mut hour.unranked),
                };
                let only_ranking = ClientCalls {
                    client: client.client.clone(),
                    hours: vec![unranked],
                };
                ranked.entry(hour.hour).or_default().push(only_ranking);
            }
        }
        for (day, calls) in days {
            let key = client_key(prefix, &name, &day_name(day));
            add_to_hash(&mut commands, &key, calls, &[], DAY_TTL_SECS);
        }
        if commands.is_empty() {
            continue;
        }
        parts.push(Part {
            slot: slot(client_key(prefix, &name, "").as_bytes()),
            commands,
            counts: UsageBatch {
                clients: vec![client],
                global: Vec::new(),
            },
        });
    }
    for (hour, clients) in ranked {
        let key = limited_key(prefix, hour);
        let mut commands: Vec<Cmd> = clients
            .iter()
            .map(|c| {
                let denied = c.hours[0].unranked;
                redis::cmd("ZINCRBY")
                    .arg(&key)
                    .arg(denied)
                    .arg(c.client.to_string())
                    .clone()
            })
            .collect();
        commands.push(redis::cmd("EXPIRE").arg(&key).arg(HOUR_TTL_SECS).clone());
        parts.push(Part {
            slot: slot(key.as_bytes()),
            commands,
            counts: UsageBatch {
                clients,
                global: Vec::new(),
            },
        });
    }
    for (hour, rules) in batch.global {
        let key = global_key(prefix, hour);
        let mut calls = Calls::default();
        rules.iter().for_each(|r| calls.add(r.calls));
        let mut commands = Vec::new();
        add_to_hash(&mut commands, &key, calls, &rules, HOUR_TTL_SECS);
        parts.push(Part {
            slot: slot(key.as_bytes()),
            commands,
            counts: UsageBatch {
                clients: Vec::new(),
                global: vec![(hour, rules)],
            },
        });
    }
    parts
}

/// Groups of items whose commands go out as one pipeline: on a cluster, items of one slot;
/// on a single Redis, any; at most [`MAX_PIPELINE_COMMANDS`] commands each (an item is never
/// split).
fn pipelines<T>(items: Vec<(u16, usize, T)>, cluster: bool) -> Vec<Vec<T>> {
    let mut by_slot: BTreeMap<u16, Vec<(usize, T)>> = BTreeMap::new();
    for (slot, commands, item) in items {
        let slot = if cluster { slot } else { 0 };
        by_slot.entry(slot).or_default().push((commands, item));
    }
    let mut groups = Vec::new();
    for (_, items) in by_slot {
        let (mut group, mut commands) = (Vec::new(), 0);
        for (count, item) in items {
            if commands + count > MAX_PIPELINE_COMMANDS && !group.is_empty() {
                groups.push(std::mem::take(&mut group));
                commands = 0;
            }
            group.push(item);
            commands += count;
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    groups
}

/// Runs every pipeline, [`IN_FLIGHT`] at a time, each within `deadline`; each one's
/// replies, in order.
async fn run_all(
    connection: &Connection,
    pipelines: Vec<Pipeline>,
    deadline: Duration,
) -> Vec<Result<Vec<Value>, String>> {
    let count = pipelines.len();
    let mut results: Vec<Result<Vec<Value>, String>> = (0..count)
        .map(|_| Err("the pipeline did not run".to_owned()))
        .collect();
    let mut running = JoinSet::new();
    let mut waiting = pipelines.into_iter().enumerate();
    loop {
        while running.len() < IN_FLIGHT
            && let Some((index, pipeline)) = waiting.next()
        {
            let mut connection = connection.clone();
            running.spawn(async move {
                let reply = tokio::time::timeout(deadline, pipeline.query_async(&mut connection));
                let result = match reply.await {
                    Ok(Ok(values)) => Ok(values),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("Redis did not answer within {deadline:?}")),
                };
                (index, result)
            });
        }
        match running.join_next().await {
            Some(Ok((index, result))) => results[index] = result,
            Some(Err(panicked)) => tracing::error!(%panicked, "a usage pipeline panicked"),
            None => break,
        }
    }
    results
}

fn connection(redis: &RedisBackend) -> Result<Connection, String> {
    redis
        .connection()
        .ok_or_else(|| "not connected to Redis yet".to_owned())
}

/// Writes `batch`, each hour counting at most `clients_per_hour` clients per client.
/// Returns the calls counted in the totals only (past that bound); on failure, what was not
/// written and why.
async fn write(
    redis: &RedisBackend,
    mut batch: UsageBatch,
    clients_per_hour: u64,
) -> Result<u64, (UsageBatch, String)> {
    let connection = match connection(redis) {
        Ok(connection) => connection,
        Err(reason) => return Err((batch, reason)),
    };
    let dropped = match admit(redis, &connection, &mut batch, clients_per_hour).await {
        Ok(dropped) => dropped,
        Err(reason) => return Err((batch, reason)),
    };
    let cluster = matches!(connection, Connection::Cluster(_));
    let items = parts(redis.prefix(), batch)
        .into_iter()
        .map(|part| (part.slot, part.commands.len(), part))
        .collect();
    let groups = pipelines(items, cluster);
    let commands = groups
        .iter()
        .map(|parts| {
            let mut pipeline =
                Pipeline::with_capacity(parts.iter().map(|p| p.commands.len()).sum());
            for part in parts {
                for command in &part.commands {
                    pipeline.add_command(command.clone()).ignore();
                }
            }
            pipeline
        })
        .collect();
    let results = run_all(&connection, commands, redis.command_timeout()).await;
    let mut unwritten = UsageBatch::default();
    let mut reason = None;
    for (parts, result) in groups.into_iter().zip(results) {
        if let Err(error) = result {
            reason.get_or_insert(error);
            for part in parts {
                unwritten.clients.extend(part.counts.clients);
                unwritten.global.extend(part.counts.global);
            }
        }
    }
    match reason {
        None => Ok(dropped),
        Some(reason) => Err((unwritten, reason)),
    }
}

/// Runs one command per key (`(key, command)`), as few pipelines as the connection allows;
/// every reply, in order.
async fn read(
    redis: &RedisBackend,
    commands: Vec<(String, Cmd)>,
) -> Result<Vec<Value>, StoreError> {
    let fail = |reason| StoreError::new(REDIS, reason);
    let connection = connection(redis).map_err(fail)?;
    read_with(&connection, commands, redis.command_timeout())
        .await
        .map_err(fail)
}

/// [`read`] over `connection`, each pipeline within `deadline`.
async fn read_with(
    connection: &Connection,
    commands: Vec<(String, Cmd)>,
    deadline: Duration,
) -> Result<Vec<Value>, String> {
    let cluster = matches!(connection, Connection::Cluster(_));
    let count = commands.len();
    let items = commands
        .into_iter()
        .enumerate()
        .map(|(index, (key, command))| (slot(key.as_bytes()), 1, (index, command)))
        .collect();
    let groups = pipelines(items, cluster);
    let pipelines = groups
        .iter()
        .map(|group| {
            let mut pipeline = Pipeline::with_capacity(group.len());
            for (_, command) in group {
                pipeline.add_command(command.clone());
            }
            pipeline
        })
        .collect();
    let results = run_all(connection, pipelines, deadline).await;
    let mut replies = vec![Value::Nil; count];
    for (group, result) in groups.into_iter().zip(results) {
        for ((index, _), value) in group.into_iter().zip(result?) {
            replies[index] = value;
        }
    }
    Ok(replies)
}

/// A hash of counts, as `HGETALL` gives it.
fn counts(reply: Value) -> Result<HashMap<String, u64>, StoreError> {
    redis::from_redis_value(reply).map_err(|e| {
        StoreError::new(
            REDIS,
            format!("a usage hash holds something else than counts: {e}"),
        )
    })
}

fn calls_of(fields: &HashMap<String, u64>) -> Calls {
    Calls::new(
        fields.get("allowed").copied().unwrap_or(0),
        fields.get("denied").copied().unwrap_or(0),
    )
}

/// Every `allowed:<rule>` and `denied:<rule>` field, by rule.
fn rules_of(fields: &HashMap<String, u64>) -> BTreeMap<String, Calls> {
    let mut rules: BTreeMap<String, Calls> = BTreeMap::new();
    for (field, count) in fields {
        if let Some(rule) = field.strip_prefix("allowed:") {
            rules.entry(rule.to_owned()).or_default().allowed += count;
        } else if let Some(rule) = field.strip_prefix("denied:") {
            rules.entry(rule.to_owned()).or_default().denied += count;
        }
    }
    rules
}

fn hgetall(key: String) -> (String, Cmd) {
    let command = redis::cmd("HGETALL").arg(&key).clone();
    (key, command)
}

/// The hours read, oldest first: the current one and the 23 before.
fn hours_read(now: Hour) -> impl Iterator<Item = Hour> {
    now.saturating_sub(HOURS_READ - 1)..=now
}

/// `client`'s calls over the last 24 hours and 30 days, and the hours in which it was not
/// counted per client (the hour counted `clients_per_hour` others).
async fn client(
    redis: &RedisBackend,
    client: KeyRef<'_>,
    now: Hour,
    clients_per_hour: u64,
) -> Result<ClientUsage, StoreError> {
    let name = client.to_string();
    let prefix = redis.prefix();
    let today = day_of(now);
    let hours: Vec<Hour> = hours_read(now).collect();
    let days: Vec<Day> = (today.saturating_sub(DAYS_READ - 1)..=today).collect();
    let commands = hours
        .iter()
        .map(|h| hgetall(client_key(prefix, &name, &hour_name(*h))))
        .chain(
            days.iter()
                .map(|d| hgetall(client_key(prefix, &name, &day_name(*d)))),
        )
        .chain(hours.iter().map(|h| {
            let key = counted_key(prefix, *h);
            let count = redis::cmd("GET").arg(&key).clone();
            (key, count)
        }))
        .collect();
    let mut replies = read(redis, commands).await?.into_iter();
    let mut usage = ClientUsage::new(name);
    let mut counted_hours = Vec::with_capacity(hours.len());
    for (hour, reply) in hours.iter().zip(replies.by_ref()) {
        let fields = counts(reply)?;
        counted_hours.push(!fields.is_empty());
        if !fields.is_empty() {
            usage.hours.insert(hour_name(*hour), calls_of(&fields));
            usage
                .rules_by_hour
                .insert(hour_name(*hour), rules_of(&fields));
        }
    }
    for (day, reply) in days.iter().zip(replies.by_ref()) {
        let fields = counts(reply)?;
        if !fields.is_empty() {
            usage.days.insert(day_name(*day), calls_of(&fields));
        }
    }
    for ((hour, counted), count) in hours.iter().zip(counted_hours).zip(replies) {
        let count: Option<u64> = redis::from_redis_value(count).map_err(|e| {
            StoreError::new(
                REDIS,
                format!("a count of the clients counted holds something else: {e}"),
            )
        })?;
        if !counted && count.unwrap_or(0) >= clients_per_hour {
            usage.untracked_hours.insert(hour_name(*hour));
        }
    }
    Ok(usage)
}

/// Every client's calls over the last 24 hours, and the `top` clients most refused over
/// them (each hour's ranking read whole and added up here: a cluster keeps the hours in
/// different slots).
async fn summary(redis: &RedisBackend, top: usize, now: Hour) -> Result<UsageSummary, StoreError> {
    let prefix = redis.prefix();
    let hours: Vec<Hour> = hours_read(now).collect();
    let commands = hours
        .iter()
        .map(|h| hgetall(global_key(prefix, *h)))
        .chain(hours.iter().map(|h| {
            let key = limited_key(prefix, *h);
            let command = redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone();
            (key, command)
        }))
        .collect();
    let mut replies = read(redis, commands).await?.into_iter();
    let mut summary = UsageSummary::default();
    for (hour, reply) in hours.iter().zip(replies.by_ref()) {
        let fields = counts(reply)?;
        if fields.is_empty() {
            continue;
        }
        let calls = calls_of(&fields);
        summary.hours.insert(hour_name(*hour), calls);
        summary.allowed += calls.allowed;
        summary.denied += calls.denied;
        for (rule, calls) in rules_of(&fields) {
            summary.rules.entry(rule).or_default().add(calls);
        }
    }
    let mut limited: HashMap<String, u64> = HashMap::new();
    for reply in replies {
        let ranked: Vec<(String, f64)> = redis::from_redis_value(reply).map_err(|e| {
            StoreError::new(
                REDIS,
                format!("a ranking of refusals holds something else: {e}"),
            )
        })?;
        for (client, denied) in ranked {
            // Scores are sums of whole refusals, exact in a double up to 2^53.
            *limited.entry(client).or_default() += denied as u64;
        }
    }
    summary.most_limited = most_limited(limited.into_iter(), top);
    Ok(summary)
}

impl UsageStore for RedisBackend {
    fn name(&self) -> &'static str {
        REDIS
    }

    fn write(
        &self,
        batch: UsageBatch,
        clients_per_hour: u64,
    ) -> StoreFuture<'_, Result<u64, (UsageBatch, StoreError)>> {
        Box::pin(async move {
            write(self, batch, clients_per_hour)
                .await
                .map_err(|(unwritten, reason)| (unwritten, StoreError::new(REDIS, reason)))
        })
    }

    fn client<'a>(
        &'a self,
        who: Client<'a>,
        hour: u64,
        clients_per_hour: u64,
    ) -> StoreFuture<'a, Result<ClientUsage, StoreError>> {
        Box::pin(client(self, who.0, hour, clients_per_hour))
    }

    fn summary(&self, top: usize, hour: u64) -> StoreFuture<'_, Result<UsageSummary, StoreError>> {
        Box::pin(summary(self, top, hour))
    }
}

/// The key of `client`'s calls in `hour`, for tests.
#[cfg(test)]
fn hour_key(prefix: &str, client: &str, hour: Hour) -> String {
    client_key(prefix, client, &hour_name(hour))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::key::ClientKey;

    #[test]
    fn keys_are_named_as_documented() {
        let hour = 1_000_000_000 / 3600;
        assert_eq!(
            hour_key("tollgate", "id:user:123", hour),
            "tollgate:usage:{id:user:123}:2001-09-09-01"
        );
        assert_eq!(global_key("p", hour), "p:usage:global:2001-09-09-01");
        assert_eq!(limited_key("p", hour), "p:usage:limited:2001-09-09-01");
        assert_eq!(
            client_key("p", "ip:10.0.0.1", &day_name(day_of(hour))),
            "p:usage:{ip:10.0.0.1}:2001-09-09"
        );
    }

    #[test]
    fn a_client_part_holds_its_hours_and_days_in_one_slot() {
        let rule: Arc<str> = "/data".into();
        let hour = 24 * 1000 + 23;
        // One allowed and one denied call in one hour, one allowed in the next, which is on
        // the next day.
        let calls = |hour, allowed, denied| {
            let mut calls = HourCalls::new(hour);
            calls.calls = Calls::new(allowed, denied);
            calls.rules = vec![RuleCalls {
                rule: Arc::clone(&rule),
                calls: calls.calls,
            }];
            calls.unranked = denied;
            calls
        };
        let (first, second) = (calls(hour, 1, 1), calls(hour + 1, 1, 0));
        let batch = UsageBatch {
            global: vec![
                (hour, first.rules.clone()),
                (hour + 1, second.rules.clone()),
            ],
            clients: vec![ClientCalls {
                client: ClientKey::id("a"),
                hours: vec![first, second],
            }],
        };
        let parts = parts("p", batch);
        // The client; the ranking of its hour with a refusal; the global hash of each hour.
        assert_eq!(parts.len(), 4);
        let mine = &parts[0];
        let keys: Vec<String> = mine
            .commands
            .iter()
            .map(|c| String::from_utf8(c.args_iter().nth(1).map(arg_bytes).unwrap()).unwrap())
            .collect();
        assert!(
            keys.iter().all(|k| k.starts_with("p:usage:{id:a}:")),
            "{keys:?}"
        );
        assert!(keys.iter().all(|k| slot(k.as_bytes()) == mine.slot));
        // Two hours on two days: two hour hashes and two day hashes.
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), 4, "{distinct:?}");
        assert_eq!(mine.counts.clients[0].hours[0].unranked, 0, "ranked apart");
        assert_eq!(parts[1].counts.clients[0].hours[0].unranked, 1);
        assert_eq!(parts[1].counts.clients[0].hours[0].calls, Calls::default());
    }

    fn arg_bytes(arg: redis::Arg<&[u8]>) -> Vec<u8> {
        match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn pipelines_keep_to_one_slot_on_a_cluster_and_a_bounded_size() {
        let items = vec![(1, 3, 'a'), (2, 3, 'b'), (1, 3, 'c')];
        assert_eq!(pipelines(items.clone(), false), [vec!['a', 'b', 'c']]);
        assert_eq!(pipelines(items, true), [vec!['a', 'c'], vec!['b']]);
        let many: Vec<_> = (0..3)
            .map(|n| (0, MAX_PIPELINE_COMMANDS / 2 + 1, n))
            .collect();
        assert_eq!(pipelines(many, false), [vec![0], vec![1], vec![2]]);
    }
}

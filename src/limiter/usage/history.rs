//! The memory backend's usage history: what every flush wrote, kept in this process for
//! [`HOURS_KEPT`] hours and [`DAYS_KEPT`] days, for at most `max_clients` clients and
//! `max_bytes` of them, as estimated by [`ClientHistory::bytes`] (those seen longest ago are
//! forgotten first).

use std::collections::BTreeMap;
use std::hash::RandomState;

use super::pending::key_bytes;
use crate::backend::usage::calendar::{Day, Hour, day_name, day_of, hour_name};
use crate::backend::usage::{
    Calls, ClientUsage, DAYS_READ, HOURS_READ, RuleCalls, UsageBatch, UsageSummary, add_rule,
    most_limited,
};
use crate::key::{ClientKey, KeyRef};

/// Hours kept: the last 24 and the one before, which a day's window still reaches into
/// until the hour ends.
pub(crate) const HOURS_KEPT: u64 = 25;
/// Days kept: the last 30 and the one before.
pub(crate) const DAYS_KEPT: u64 = 31;
/// What a client's entry costs besides its key, its hours and its days.
const CLIENT_BYTES: usize = 128;
/// What an hour costs, besides its rules.
const HOUR_BYTES: usize = 96;
/// What a rule's counts in an hour cost.
const RULE_BYTES: usize = 40;
/// What a day costs.
const DAY_BYTES: usize = 48;

#[derive(Default)]
struct ClientHistory {
    hours: BTreeMap<Hour, (Calls, Vec<RuleCalls>)>,
    days: BTreeMap<Day, Calls>,
    /// The flush that last brought calls of this client.
    seen: u64,
}

impl ClientHistory {
    /// The bytes this client's history is taken to hold, its key's `key_bytes` included.
    fn bytes(&self, key_bytes: usize) -> usize {
        let rules: usize = self.hours.values().map(|(_, rules)| rules.len()).sum();
        CLIENT_BYTES
            + key_bytes
            + self.hours.len() * HOUR_BYTES
            + rules * RULE_BYTES
            + self.days.len() * DAY_BYTES
    }
}

pub(crate) struct History {
    clients: hashbrown::HashMap<ClientKey, ClientHistory, RandomState>,
    global: BTreeMap<Hour, Vec<RuleCalls>>,
    max_clients: usize,
    /// The clients' [`ClientHistory::bytes`], together; at most `max_bytes` after a merge.
    bytes: usize,
    max_bytes: usize,
    flushes: u64,
    /// The hour up to which old periods were dropped.
    pruned: Hour,
}

impl History {
    pub(crate) fn new(max_clients: usize, max_bytes: usize) -> Self {
        Self {
            clients: hashbrown::HashMap::with_hasher(RandomState::new()),
            global: BTreeMap::new(),
            max_clients,
            bytes: 0,
            max_bytes,
            flushes: 0,
            pruned: 0,
        }
    }

    /// Adds what a flush took; returns how many clients were forgotten to stay within the
    /// bounds.
    pub(crate) fn merge(&mut self, batch: UsageBatch, now: Hour) -> u64 {
        self.flushes += 1;
        for client in batch.clients {
            let key = key_bytes(client.client.as_ref());
            let history = self.clients.entry(client.client).or_default();
            let before = if history.seen == 0 {
                0
            } else {
                history.bytes(key)
            };
            history.seen = self.flushes;
            for hour in client.hours {
                let (calls, rules) = history.hours.entry(hour.hour).or_default();
                calls.add(hour.calls);
                for rule in &hour.rules {
                    add_rule(rules, &rule.rule, rule.calls);
                }
                history
                    .days
                    .entry(day_of(hour.hour))
                    .or_default()
                    .add(hour.calls);
            }
            self.bytes = self.bytes - before + history.bytes(key);
        }
        for (hour, rules) in batch.global {
            let counted = self.global.entry(hour).or_default();
            for rule in rules {
                add_rule(counted, &rule.rule, rule.calls);
            }
        }
        if self.pruned != now {
            self.prune(now);
        }
        self.evict()
    }

    /// Clients held.
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// `client`'s calls over the last [`HOURS_READ`] hours and [`DAYS_READ`] days.
    pub(crate) fn client(&self, client: KeyRef<'_>, now: Hour) -> ClientUsage {
        let mut usage = ClientUsage::new(client.to_string());
        let Some(history) = self.clients.get(&client) else {
            return usage;
        };
        let first_hour = now.saturating_sub(HOURS_READ - 1);
        for (hour, (calls, rules)) in history.hours.range(first_hour..=now) {
            let name = hour_name(*hour);
            usage.hours.insert(name.clone(), *calls);
            let by_rule = rules
                .iter()
                .map(|r| (r.rule.to_string(), r.calls))
                .collect();
            usage.rules_by_hour.insert(name, by_rule);
        }
        let today = day_of(now);
        let first_day = today.saturating_sub(DAYS_READ - 1);
        for (day, calls) in history.days.range(first_day..=today) {
            usage.days.insert(day_name(*day), *calls);
        }
        usage
    }

    /// Every client's calls over the last [`HOURS_READ`] hours, and the `top` clients most
    /// refused over them.
    pub(crate) fn summary(&self, top: usize, now: Hour) -> UsageSummary {
        let mut summary = UsageSummary::default();
        let first_hour = now.saturating_sub(HOURS_READ - 1);
        for (hour, rules) in self.global.range(first_hour..=now) {
            let mut calls = Calls::default();
            for rule in rules {
                calls.add(rule.calls);
                summary
                    .rules
                    .entry(rule.rule.to_string())
                    .or_default()
                    .add(rule.calls);
            }
            summary.hours.insert(hour_name(*hour), calls);
            summary.allowed += calls.allowed;
            summary.denied += calls.denied;
        }
        let limited = self.clients.iter().filter_map(|(client, history)| {
            let denied: u64 = history
                .hours
                .range(first_hour..=now)
                .map(|(_, (calls, _))| calls.denied)
                .sum();
            (denied > 0).then(|| (client.to_string(), denied))
        });
        summary.most_limited = most_limited(limited, top);
        summary
    }

    /// Drops periods no longer kept, and clients left with none.
    fn prune(&mut self, now: Hour) {
        let oldest_hour = now.saturating_sub(HOURS_KEPT - 1);
        let oldest_day = day_of(now).saturating_sub(DAYS_KEPT - 1);
        self.global = self.global.split_off(&oldest_hour);
        self.clients.retain(|_, history| {
            history.hours = history.hours.split_off(&oldest_hour);
            history.days = history.days.split_off(&oldest_day);
            !history.days.is_empty()
        });
        self.bytes = self.counted_bytes();
        self.pruned = now;
    }

    /// Every client's [`ClientHistory::bytes`], counted again.
    fn counted_bytes(&self) -> usize {
        self.clients
            .iter()
            .map(|(key, history)| history.bytes(key_bytes(key.as_ref())))
            .sum()
    }

    /// Forgets the clients seen longest ago, down to both bounds; returns how many.
    fn evict(&mut self) -> u64 {
        let over = self.clients.len().saturating_sub(self.max_clients);
        if over == 0 && self.bytes <= self.max_bytes {
            return 0;
        }
        // Oldest first: forgotten until both bounds hold.
        let mut by_age: Vec<(u64, usize)> = self
            .clients
            .iter()
            .map(|(key, history)| (history.seen, history.bytes(key_bytes(key.as_ref()))))
            .collect();
        by_age.sort_unstable();
        let (mut evicted, mut left) = (0, self.bytes);
        for (_, bytes) in &by_age {
            if evicted >= over && left <= self.max_bytes {
                break;
            }
            evicted += 1;
            left = left.saturating_sub(*bytes);
        }
        let last_evicted = by_age[evicted - 1].0;
        // Clients seen at that flush are forgotten only as many as needed.
        let mut at_the_edge = by_age[..evicted]
            .iter()
            .filter(|(seen, _)| *seen == last_evicted)
            .count();
        self.clients.retain(|_, history| {
            if history.seen < last_evicted {
                return false;
            }
            if history.seen == last_evicted && at_the_edge > 0 {
                at_the_edge -= 1;
                return false;
            }
            true
        });
        self.bytes = self.counted_bytes();
        evicted as u64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::limiter::usage::pending::Pending;

    fn flush(history: &mut History, now: Hour, calls: &[(&str, Hour, bool)]) -> u64 {
        let pending = Pending::new(100, usize::MAX);
        let rule: Arc<str> = "default".into();
        for (client, hour, allowed) in calls {
            pending.record(*hour, ClientKey::id(*client).as_ref(), &rule, *allowed);
        }
        history.merge(pending.take(), now)
    }

    #[test]
    fn hours_and_days_are_read_over_their_windows() {
        let mut history = History::new(10, usize::MAX);
        let now = 24 * 1000 + 5;
        flush(&mut history, now, &[("a", now, true), ("a", now, false)]);
        flush(
            &mut history,
            now,
            &[("a", now - 23, true), ("a", now - 24, true)],
        );
        let usage = history.client(ClientKey::id("a").as_ref(), now);
        assert_eq!(usage.hours.len(), 2, "{:?}", usage.hours);
        assert_eq!(usage.hours[&hour_name(now)], Calls::new(1, 1));
        assert_eq!(usage.days[&day_name(day_of(now))], Calls::new(1, 1));
        assert_eq!(usage.days[&day_name(day_of(now) - 1)], Calls::new(2, 0));
        assert_eq!(
            usage.rules_by_hour[&hour_name(now)]["default"],
            Calls::new(1, 1)
        );
        let summary = history.summary(5, now);
        assert_eq!((summary.allowed, summary.denied), (2, 1));
        assert_eq!(&*history.global[&now][0].rule, "default");
    }

    #[test]
    fn old_periods_are_dropped_when_the_hour_changes() {
        let mut history = History::new(10, usize::MAX);
        let then = 24 * 1000;
        flush(&mut history, then, &[("a", then, true)]);
        let later = then + HOURS_KEPT;
        flush(&mut history, later, &[("b", later, true)]);
        assert!(!history.global.contains_key(&then));
        let a = &history.clients[&ClientKey::id("a")];
        assert!(a.hours.is_empty());
        assert_eq!(a.days.len(), 1, "the day is kept for a month");
        flush(&mut history, then + 24 * (DAYS_KEPT + 1), &[]);
        assert_eq!(history.len(), 0, "a month later, nothing of a or b is left");
    }

    #[test]
    fn the_clients_seen_longest_ago_are_forgotten() {
        let mut history = History::new(2, usize::MAX);
        let now = 1000;
        assert_eq!(flush(&mut history, now, &[("a", now, true)]), 0);
        assert_eq!(flush(&mut history, now, &[("b", now, true)]), 0);
        assert_eq!(
            flush(&mut history, now, &[("c", now, true), ("d", now, true)]),
            2
        );
        assert_eq!(history.len(), 2);
        assert!(history.clients.contains_key(&ClientKey::id("c")));
        assert!(history.clients.contains_key(&ClientKey::id("d")));
        assert_eq!(
            flush(&mut history, now, &[("c", now, true), ("e", now, true)]),
            1
        );
        assert!(history.clients.contains_key(&ClientKey::id("c")));
        assert!(history.clients.contains_key(&ClientKey::id("e")));
    }

    #[test]
    fn the_clients_seen_longest_ago_are_forgotten_to_stay_within_the_bytes() {
        let big = |n: usize| format!("{n}{}", "x".repeat(60_000));
        let one_big = {
            let mut history = History::new(100, usize::MAX);
            flush(&mut history, 1000, &[(&big(0), 1000, true)]);
            history.bytes
        };
        let mut history = History::new(100, 3 * one_big);
        let now = 1000;
        for n in 0..3 {
            assert_eq!(flush(&mut history, now, &[(&big(n), now, true)]), 0);
        }
        assert_eq!(flush(&mut history, now, &[(&big(3), now, true)]), 1);
        assert_eq!(history.len(), 3);
        assert!(history.bytes <= 3 * one_big, "{}", history.bytes);
        assert!(
            !history.clients.contains_key(&ClientKey::id(big(0))),
            "the oldest went"
        );
        // Short keys fit many times over.
        let small: Vec<String> = (0..50).map(|n| format!("small-{n}")).collect();
        let calls: Vec<(&str, Hour, bool)> =
            small.iter().map(|c| (c.as_str(), now, true)).collect();
        flush(&mut history, now, &calls);
        assert!(history.bytes <= 3 * one_big, "{}", history.bytes);
        assert!(history.len() >= 50, "{}", history.len());
    }

    #[test]
    fn the_most_limited_come_first() {
        let top = most_limited(
            [
                ("b".to_owned(), 3),
                ("a".to_owned(), 3),
                ("c".to_owned(), 9),
            ]
            .into_iter(),
            2,
        );
        let names: Vec<_> = top.iter().map(|c| (c.client.as_str(), c.denied)).collect();
        assert_eq!(names, [("c", 9), ("a", 3)]);
    }
}

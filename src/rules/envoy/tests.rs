//! The examples of envoy ratelimit's README, tollgate's extensions, every refusal, and
//! reading files and directories.

use serde_json::json;

use super::*;
use crate::RulesError;

// Examples of envoy ratelimit's README, used more than once.
const EXAMPLE_2: &str = include_str!("../../../tests/data/envoy_ratelimit/messaging.yaml");

const EXAMPLE_3: &str = "
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10

  # Black list IP
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
";

const EXAMPLE_5: &str = "
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true

  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
";

const EXAMPLE_6: &str = "
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
";

const EXAMPLE_7: &str = "
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
";

const EXAMPLE_9_TRAILING: &str = "
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit:
      unit: minute
      requests_per_unit: 20
";

fn nodes(yaml: &str) -> Value {
    match EnvoyDomain::from_yaml(yaml, "config.yaml") {
        Ok(domain) => domain.nodes().clone(),
        Err(err) => panic!("{err}"),
    }
}

fn error(yaml: &str) -> String {
    match EnvoyDomain::from_yaml(yaml, "config.yaml") {
        Ok(domain) => panic!("accepted: {}", domain.nodes()),
        Err(err) => err.to_string(),
    }
}

/// A one-descriptor document whose `rate_limit` block is `rate_limit` (indented by six).
fn with_rate_limit(rate_limit: &str) -> String {
    format!("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n{rate_limit}")
}

#[test]
fn readme_example_1_two_values_of_one_key() {
    let yaml = "
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500

  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
";
    let domain = EnvoyDomain::from_yaml(yaml, "config.yaml").unwrap();
    assert_eq!(domain.domain(), "mongo_cps");
    assert_eq!(domain.source_name(), "config.yaml");
    assert_eq!(
        domain.nodes(),
        &json!([
            {"key": "database", "value": "users", "limit": "500/second", "algorithm": "fixed_window"},
            {"key": "database", "value": "default", "limit": "500/second", "algorithm": "fixed_window"}
        ])
    );
}

#[test]
fn readme_example_2_nested_descriptors_and_keys_without_value() {
    let yaml = EXAMPLE_2;
    assert_eq!(
        nodes(yaml),
        json!([
            {"key": "message_type", "value": "marketing", "descriptors": [
                {"key": "to_number", "limit": "5/day", "algorithm": "fixed_window"}
            ]},
            {"key": "to_number", "limit": "100/day", "algorithm": "fixed_window"}
        ])
    );
}

#[test]
fn readme_example_3_zero_requests_is_refused() {
    let yaml = EXAMPLE_3;
    assert_eq!(
        error(yaml),
        "config.yaml: at descriptors[1].rate_limit.requests_per_unit (line 14, column 26): requests_per_unit must be at least 1 (refusing every request, as envoy ratelimit does for 0, is not supported: leave the descriptor out or give it a small limit)"
    );
    // The first descriptor alone is fine.
    assert_eq!(
        nodes(&yaml.replace("requests_per_unit: 0", "requests_per_unit: 1")),
        json!([
            {"key": "remote_address", "limit": "10/second", "algorithm": "fixed_window"},
            {"key": "remote_address", "value": "50.0.0.5", "limit": "1/second", "algorithm": "fixed_window"}
        ])
    );
}

#[test]
fn readme_example_4_levels() {
    let flat = "
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
";
    assert_eq!(
        nodes(flat),
        json!([{"key": "key", "value": "value", "limit": "300/second", "algorithm": "fixed_window"}])
    );
    let nested = "
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
";
    assert_eq!(
        nodes(nested),
        json!([{"key": "key", "value": "value", "descriptors": [
            {"key": "subkey", "limit": "300/second", "algorithm": "fixed_window"}
        ]}])
    );
}

#[test]
fn readme_example_5_unlimited() {
    let yaml = EXAMPLE_5;
    assert_eq!(
        nodes(yaml),
        json!([
            {"key": "ldap", "unlimited": true},
            {"key": "azure", "limit": "100/minute", "algorithm": "fixed_window"}
        ])
    );
}

#[test]
fn readme_example_6_shadow_mode() {
    let yaml = EXAMPLE_6;
    assert_eq!(
        nodes(yaml),
        json!([{"key": "service", "descriptors": [
            {"key": "user", "value": "user-a", "limit": "10/second", "algorithm": "fixed_window", "shadow": true},
            {"key": "user", "value": "user-b", "limit": "20/second", "algorithm": "fixed_window"}
        ]}])
    );
}

#[test]
fn readme_example_7_replaces() {
    let yaml = EXAMPLE_7;
    assert_eq!(
        nodes(yaml),
        json!([
            {"key": "key_1", "value": "value_1", "descriptors": [
                {"key": "user", "value": "bkthomps", "name": "specific_limit", "limit": "5/second", "algorithm": "fixed_window"}
            ]},
            {"key": "key_2", "value": "value_2", "descriptors": [
                {"key": "user", "value": "bkthomps", "replaces": ["specific_limit"], "limit": "10/second", "algorithm": "fixed_window"}
            ]}
        ])
    );
}

#[test]
fn readme_example_8_detailed_metric_is_ignored() {
    let yaml = "
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
";
    assert_eq!(
        nodes(yaml),
        json!([
            {"key": "key1", "limit": "10/minute", "algorithm": "fixed_window"},
            {"key": "key1", "value": "value1", "limit": "20/minute", "algorithm": "fixed_window"}
        ])
    );
}

#[test]
fn readme_example_9_trailing_wildcards_only() {
    let trailing = EXAMPLE_9_TRAILING;
    assert_eq!(
        nodes(trailing),
        json!([{"key": "key1", "value": "value*", "limit": "20/minute", "algorithm": "fixed_window"}])
    );
    let middle = "
domain: example9
descriptors:
  - key: path
    value: /api/*/action
    rate_limit:
      unit: minute
      requests_per_unit: 20
";
    assert_eq!(
        error(middle),
        "config.yaml: at descriptors[0].value (line 5, column 12): value \"/api/*/action\" has a `*` before its end: only a trailing `*` (a prefix match, like \"files/*\") is supported"
    );
    let multiple = "
domain: example9
descriptors:
  - key: route
    value: /api/*/resource/*/action
    rate_limit:
      unit: minute
      requests_per_unit: 20
";
    assert!(
        error(multiple).contains("value \"/api/*/resource/*/action\" has a `*` before its end")
    );
}

#[test]
fn readme_example_10_value_to_metric_is_ignored() {
    let yaml = "
domain: example10
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit:
              unit: minute
              requests_per_unit: 60
";
    assert_eq!(
        nodes(yaml),
        json!([{"key": "route", "descriptors": [{"key": "http_method", "descriptors": [
            {"key": "subject_id", "limit": "60/minute", "algorithm": "fixed_window"}
        ]}]}])
    );
    let wildcard = "
domain: example10_wildcard
descriptors:
  - key: user
    value_to_metric: true
    descriptors:
      - key: action
        value: read*
        value_to_metric: true
        descriptors:
          - key: resource
            rate_limit:
              unit: minute
              requests_per_unit: 100
";
    assert_eq!(
        nodes(wildcard),
        json!([{"key": "user", "descriptors": [{"key": "action", "value": "read*", "descriptors": [
            {"key": "resource", "limit": "100/minute", "algorithm": "fixed_window"}
        ]}]}])
    );
}

#[test]
fn readme_example_11_shared_thresholds_are_refused() {
    let yaml = "
domain: example11
descriptors:
  # With share_threshold: true, all files/* matches share the same threshold
  - key: files
    value: files/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 10

  # Without share_threshold, each files_no_share/* match has its own isolated threshold
  - key: files_no_share
    value: files_no_share/*
    share_threshold: false
    rate_limit:
      unit: hour
      requests_per_unit: 10
";
    assert_eq!(
        error(yaml),
        "config.yaml: at descriptors[0].share_threshold (line 7, column 22): share_threshold: true is not supported: each value matching a wildcard counts separately in tollgate"
    );
    assert_eq!(
        nodes(&yaml.replace("share_threshold: true", "share_threshold: false")),
        json!([
            {"key": "files", "value": "files/*", "limit": "10/hour", "algorithm": "fixed_window"},
            {"key": "files_no_share", "value": "files_no_share/*", "limit": "10/hour", "algorithm": "fixed_window"}
        ])
    );
    let metrics = "
domain: example11_metrics
descriptors:
  - key: route
    value: api/*
    share_threshold: true
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit:
          unit: minute
          requests_per_unit: 60
";
    assert!(error(metrics).contains("at descriptors[0].share_threshold (line 6, column 22)"));
}

#[test]
fn long_units_refill_over_envoy_ratelimits_own_lengths() {
    for (unit, secs) in [
        ("week", 604_800.0),
        ("month", 2_592_000.0),
        ("year", 31_536_000.0),
    ] {
        let yaml = with_rate_limit(&format!(
            "      unit: {unit}\n      requests_per_unit: 100\n"
        ));
        assert_eq!(
            nodes(&yaml),
            json!([{"key": "k", "capacity": 100, "refill_rate": 100.0 / secs, "algorithm": "fixed_window"}]),
            "{unit}"
        );
    }
    // envoy ratelimit reads units whatever their case.
    let yaml = with_rate_limit("      unit: MINUTE\n      requests_per_unit: 7\n");
    assert_eq!(nodes(&yaml)[0]["limit"], "7/minute");
}

#[test]
fn burst_makes_a_token_bucket() {
    let yaml =
        with_rate_limit("      unit: second\n      requests_per_unit: 10\n      burst: 50\n");
    assert_eq!(
        nodes(&yaml),
        json!([{"key": "k", "capacity": 50, "refill_rate": 10.0, "algorithm": "token_bucket"}])
    );
    let yaml = with_rate_limit(
        "      unit: week\n      requests_per_unit: 7\n      burst: 3\n      algorithm: token_bucket\n",
    );
    assert_eq!(
        nodes(&yaml),
        json!([{"key": "k", "capacity": 3, "refill_rate": 7.0 / 604_800.0, "algorithm": "token_bucket"}])
    );
}

#[test]
fn algorithm_and_bands() {
    let yaml = with_rate_limit(
        "      unit: minute\n      requests_per_unit: 100\n      algorithm: sliding_window\n      bands:\n        - {unit: hour, requests_per_unit: 1000}\n        - {unit: year, requests_per_unit: 1000000}\n",
    );
    assert_eq!(
        nodes(&yaml),
        json!([{
            "key": "k",
            "limits": ["100/minute", "1000/hour", {"capacity": 1_000_000, "refill_rate": 1e6 / 31_536_000.0}],
            "algorithm": "sliding_window"
        }])
    );
}

#[test]
fn refusals_of_rate_limit_fields() {
    let cases = [
        (
            "      unit: fortnight\n      requests_per_unit: 5\n",
            "at descriptors[0].rate_limit.unit (line 5, column 13): unit must be one of second, minute, hour, day, week, month, year; got \"fortnight\"",
        ),
        (
            "      unit: second\n",
            "at descriptors[0].rate_limit (line 5, column 7): rate_limit needs `unit` and `requests_per_unit`, or `unlimited: true`; it has no `requests_per_unit`",
        ),
        (
            "      requests_per_unit: 5\n",
            "at descriptors[0].rate_limit (line 5, column 7): rate_limit needs `unit` and `requests_per_unit`, or `unlimited: true`; it has no `unit`",
        ),
        (
            "      unlimited: true\n      unit: second\n",
            "at descriptors[0].rate_limit.unit (line 6, column 13): `unit` has no meaning with `unlimited: true`",
        ),
        (
            "      unlimited: true\n      burst: 5\n",
            "at descriptors[0].rate_limit.burst (line 6, column 14): `burst` has no meaning with `unlimited: true`",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      burst: 10\n      algorithm: fixed_window\n",
            "at descriptors[0].rate_limit.algorithm (line 8, column 18): burst is the capacity of a token bucket: it needs algorithm token_bucket, not fixed_window",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      burst: 0\n",
            "at descriptors[0].rate_limit.burst (line 7, column 14): burst must be an integer from 1 to 4294967295, got 0",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      algorithm: leaky_bucket\n",
            "at descriptors[0].rate_limit.algorithm (line 7, column 18): unknown variant `leaky_bucket`, expected one of token_bucket, fixed_window, sliding_window",
        ),
        (
            "      unit: year\n      requests_per_unit: 1\n",
            "at descriptors[0].rate_limit.requests_per_unit (line 6, column 26): 1 per year is outside what tollgate counts: at least 0.000001 requests per second and at most 1000000000 s to refill the whole capacity",
        ),
        (
            "      unit: year\n      requests_per_unit: 32\n      burst: 4000000000\n",
            "at descriptors[0].rate_limit.burst (line 7, column 14): 32 per year with burst 4000000000 is outside what tollgate counts",
        ),
        (
            "      unit: second\n      requests_per_unit: -1\n",
            "at descriptors[0].rate_limit.requests_per_unit (line 6, column 26): expected an integer from 0 to 4294967295",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      per: ip\n",
            "at descriptors[0].rate_limit.per (line 7, column 7): unknown field `per`, expected one of unit, requests_per_unit, unlimited, name, replaces, algorithm, burst, bands",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      bands: [{unit: day, requests_per_unit: 0}]\n",
            "at descriptors[0].rate_limit.bands[0].requests_per_unit (line 7, column 46): requests_per_unit must be at least 1",
        ),
        (
            "      unit: second\n      requests_per_unit: 5\n      bands: [{unit: day}]\n",
            "at descriptors[0].rate_limit.bands[0] (line 7, column 16): missing field `requests_per_unit`",
        ),
    ];
    for (rate_limit, expected) in cases {
        let message = error(&with_rate_limit(rate_limit));
        assert!(
            message.starts_with(&format!("config.yaml: {expected}")),
            "{rate_limit}\n{message}"
        );
    }
    let eight = "{unit: day, requests_per_unit: 1000}, ".repeat(8);
    let message = error(&with_rate_limit(&format!(
        "      unit: second\n      requests_per_unit: 5\n      bands: [{eight}]\n"
    )));
    assert!(
        message.ends_with("at descriptors[0].rate_limit.bands (line 7, column 14): a rate_limit may have at most 8 bands (its own and `bands`), got 9"),
        "{message}"
    );
}

#[test]
fn refusals_of_replaces() {
    let yaml = |replaces: &str| {
        format!(
            "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {{name: first, unit: second, requests_per_unit: 5}}\n  - key: b\n    rate_limit:\n      name: second\n      unit: second\n      requests_per_unit: 5\n      replaces:\n{replaces}"
        )
    };
    assert_eq!(
        nodes(&yaml("        - name: first\n"))[1]["replaces"],
        json!(["first"])
    );
    assert_eq!(
        error(&yaml("        - name: third\n")),
        "config.yaml: at descriptors[1].rate_limit.replaces[0] (line 11, column 11): replaces \"third\", but no rate_limit of this domain has that name (names: [\"first\", \"second\"])"
    );
    let twice = "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {name: n, unit: second, requests_per_unit: 5}\n    descriptors:\n      - key: b\n        rate_limit: {name: n, unit: second, requests_per_unit: 5}\n";
    assert_eq!(
        error(twice),
        "config.yaml: at descriptors[0].descriptors[0].rate_limit.name (line 7, column 21): the name \"n\" is already given at descriptors[0].rate_limit.name: `replaces` needs names to be unique in a domain"
    );
    assert_eq!(
        error(&yaml("        - {}\n")),
        "config.yaml: at descriptors[1].rate_limit.replaces[0] (line 11, column 11): a replaces entry needs a non-empty `name`"
    );
    assert_eq!(
        error(&yaml("        - name: second\n")),
        "config.yaml: at descriptors[1].rate_limit.replaces[0] (line 11, column 11): rate_limit \"second\" cannot replace itself"
    );
}

#[test]
fn refusals_of_descriptor_fields() {
    let cases = [
        (
            "domain: ''\n",
            "at domain (line 1, column 9): domain must not be empty",
        ),
        (
            "descriptors: []\n",
            "at line 1, column 1: missing field `domain`",
        ),
        (
            "domain: d\nname: x\n",
            "at name (line 2, column 1): unknown field `name`, expected one of domain, descriptors",
        ),
        (
            "domain: d\ndomain: e\n",
            "at line 2, column 1: duplicate mapping key: domain",
        ),
        (
            "domain: d\n---\ndomain: e\n",
            "at line 3, column 1: a second YAML document: each file holds one domain, in one document",
        ),
        (
            "domain: d\ndescriptors:\n  - key: ''\n",
            "at descriptors[0].key (line 3, column 10): key must not be empty",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    value: x\n  - key: a\n    value: x\n",
            "at descriptors[1] (line 5, column 10): key \"a\" with value \"x\" duplicates descriptors[0]: each key and value may appear once in a list",
        ),
        (
            "domain: d\ndescriptors:\n  - key: s\n    descriptors:\n      - key: a\n      - key: a\n        value: ''\n",
            "at descriptors[0].descriptors[1] (line 6, column 14): key \"a\" without a value duplicates descriptors[0].descriptors[0]",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    quota_mode: true\n",
            "at descriptors[0].quota_mode (line 4, column 17): quota_mode: true is not supported: tollgate has no quota mode",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    metadata: {team: x}\n",
            "at descriptors[0].metadata (line 4, column 15): metadata is not supported: tollgate does not return descriptor metadata",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    value: [x]\n",
            "at descriptors[0].value (line 4, column 12): expected string scalar",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n   value: x\n",
            "at descriptors (line 4, column 4):",
        ),
    ];
    for (yaml, expected) in cases {
        let message = error(yaml);
        assert!(
            message.starts_with(&format!("config.yaml: {expected}")),
            "{yaml}\n{message}"
        );
    }
}

#[test]
fn scalars_are_read_as_envoy_ratelimit_reads_them() {
    // Keys and values are strings whatever they look like; an empty value is none; booleans
    // may be YAML 1.1's; shadow_mode is ignored where there is nothing to observe.
    let yaml = "
domain: 42
descriptors:
  - key: remote_address
    value: 50.0.0.5
    shadow_mode: yes
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: 7
    value: ''
    shadow_mode: true
    rate_limit: {unlimited: true}
  - key: code
    value: 404
    shadow_mode: true
";
    let domain = EnvoyDomain::from_yaml(yaml, "config.yaml").unwrap();
    assert_eq!(domain.domain(), "42");
    assert_eq!(
        domain.nodes(),
        &json!([
            {"key": "remote_address", "value": "50.0.0.5", "limit": "3/second", "algorithm": "fixed_window", "shadow": true},
            {"key": "7", "unlimited": true},
            {"key": "code", "value": "404"}
        ])
    );
}

#[test]
fn alias_bombs_are_refused() {
    // Ten to the ninth descriptors from a few lines: refused by the YAML reader's budget.
    let mut yaml = String::from(
        "domain: d\ndescriptors:\n  - key: k0\n    descriptors: &x0 [{key: a}, {key: b}, {key: c}, {key: d}, {key: e}, {key: f}, {key: g}, {key: h}, {key: i}, {key: j}]\n",
    );
    for i in 1..9 {
        let p = i - 1;
        let nested: Vec<String> = (0..10)
            .map(|j| format!("{{key: k{j}, descriptors: *x{p}}}"))
            .collect();
        yaml.push_str(&format!(
            "  - key: k{i}\n    descriptors: &x{i} [{}]\n",
            nested.join(", ")
        ));
    }
    // Refused after reading a quarter of a million nodes: about 2 s in a debug build, a few
    // times that on a busy machine; the billion, read through, would take hours.
    let started = std::time::Instant::now();
    let message = error(&yaml);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        message.ends_with("(line 12, column 191): budget breached: Nodes { nodes: 250001 }"),
        "{message}"
    );
}

#[test]
fn merge_into_a_rules_document() {
    let a = EnvoyDomain::from_yaml(
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true}\n",
        "a.yaml",
    )
    .unwrap();
    let b = EnvoyDomain::from_yaml("domain: b\n", "b.yaml").unwrap();
    let rules = r#"{"default": {"limit": "5/second"}, "descriptors": {"c": []}}"#;
    let merged = EnvoyDomain::merge_into(rules, "rules.json", &[a.clone(), b.clone()]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&merged).unwrap(),
        json!({
            "default": {"limit": "5/second"},
            "descriptors": {"a": [{"key": "k", "unlimited": true}], "b": [], "c": []}
        })
    );
    let without = EnvoyDomain::merge_into(
        r#"{"default": {"unlimited": true}}"#,
        "rules.json",
        std::slice::from_ref(&b),
    )
    .unwrap();
    assert_eq!(
        without,
        r#"{"default":{"unlimited":true},"descriptors":{"b":[]}}"#
    );

    let both = r#"{"default": {"unlimited": true}, "descriptors": {"a": []}}"#;
    let err = EnvoyDomain::merge_into(both, "rules.json", std::slice::from_ref(&a)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "domain \"a\" is configured in both rules.json and a.yaml: each domain may be configured in one place only"
    );
    let again = EnvoyDomain::from_yaml("domain: a\n", "again.yaml").unwrap();
    let err =
        EnvoyDomain::rules_document(&json!({"unlimited": true}), &[a.clone(), again]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("domain \"a\" is configured in both a.yaml and again.yaml"),
        "{err}"
    );

    // What is not a rules document is left for the rules parser to report.
    for text in ["{\"default\": ", "[1]", r#"{"descriptors": 5}"#] {
        assert_eq!(
            EnvoyDomain::merge_into(text, "rules.json", std::slice::from_ref(&a)).unwrap(),
            text
        );
    }
}

#[test]
fn a_directory_is_every_yaml_file_in_it_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("b.yml", "domain: second\n");
    write("a.yaml", "domain: first\n");
    write("c.yaml.bak", "not: read\n");
    write(".hidden.yaml", "not: read\n");
    write("notes.txt", "not read");
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    let domains = EnvoyDomain::read(dir.path()).unwrap();
    let names: Vec<&str> = domains.iter().map(EnvoyDomain::domain).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        domains[1].source_name(),
        dir.path().join("b.yml").display().to_string()
    );

    // One file alone.
    let one = EnvoyDomain::read(&dir.path().join("b.yml")).unwrap();
    assert_eq!(one.len(), 1);

    write("c.yaml", "domain: first\n");
    let err = EnvoyDomain::read(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "domain \"first\" is configured in both {} and {}: each domain may be configured in one place only",
            dir.path().join("a.yaml").display(),
            dir.path().join("c.yaml").display()
        )
    );

    std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
    write(
        "d.yaml",
        "domain: d\ndescriptors:\n  - key: k\n    value: \"\u{e9}\"\n",
    );
    std::fs::write(
        dir.path().join("e.yaml"),
        b"domain: e\ndescriptors:\n  - key: \xff\n",
    )
    .unwrap();
    let err = EnvoyDomain::read(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: at line 3, column 10: not UTF-8 text",
            dir.path().join("e.yaml").display()
        )
    );
}

#[test]
fn a_directory_without_config_files_or_a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = EnvoyDomain::read(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "envoy ratelimit config directory {} has no *.yaml or *.yml file",
            dir.path().display()
        )
    );
    let missing = dir.path().join("missing.yaml");
    let err = EnvoyDomain::read(&missing).unwrap_err();
    assert!(
        matches!(err, EnvoyConfigError::File(RulesError::Read { .. })),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "envoy ratelimit config: cannot read rules file {}",
            missing.display()
        )),
        "{err}"
    );
}

/// The rules of `domains` (YAML documents) with an unlimited default rule, as the rules
/// parser reads them.
fn rules_of(yamls: &[&str]) -> crate::Rules {
    let domains: Vec<EnvoyDomain> = yamls
        .iter()
        .enumerate()
        .map(|(i, yaml)| EnvoyDomain::from_yaml(yaml, &format!("{i}.yaml")).unwrap())
        .collect();
    let json = EnvoyDomain::rules_document(&json!({"unlimited": true}), &domains).unwrap();
    match crate::Rules::from_json(&json) {
        Ok(rules) => rules,
        Err(err) => panic!("{err}\n{json}"),
    }
}

#[test]
fn converted_readme_examples_are_valid_rules() {
    use crate::Algorithm;
    let example_3 = EXAMPLE_3.replace("requests_per_unit: 0", "requests_per_unit: 1");
    let rules = rules_of(&[
        EXAMPLE_2,
        &example_3,
        EXAMPLE_5,
        EXAMPLE_6,
        EXAMPLE_7,
        EXAMPLE_9_TRAILING,
    ]);
    let limit_of = |domain: &str, entries: &[(&str, &str)]| {
        let found = rules
            .descriptor(domain, entries.iter().copied())
            .unwrap_or_else(|| panic!("no rule for {domain} {entries:?}"));
        (found.rule.limit().cloned(), found.client.to_string())
    };

    let (limit, client) = limit_of(
        "messaging",
        &[("message_type", "marketing"), ("to_number", "2061111111")],
    );
    let limit = limit.unwrap();
    assert_eq!(limit.rate(), "5/day");
    assert_eq!(limit.algorithm(), Algorithm::FixedWindow);
    assert_eq!(client, "id:marketing/2061111111");
    assert_eq!(
        limit_of("messaging", &[("to_number", "1")])
            .0
            .unwrap()
            .rate(),
        "100/day"
    );
    assert!(
        rules
            .descriptor("messaging", [("message_type", "marketing")])
            .is_none()
    );

    let blocked = limit_of("edge_proxy_per_ip", &[("remote_address", "50.0.0.5")]);
    assert_eq!(blocked.0.unwrap().rate(), "1/second");
    let other = limit_of("edge_proxy_per_ip", &[("remote_address", "50.0.0.1")]);
    assert_eq!(other.0.unwrap().rate(), "10/second");

    assert!(
        limit_of("internal", &[("ldap", "x")]).0.is_none(),
        "unlimited"
    );
    assert_eq!(
        limit_of("internal", &[("azure", "x")]).0.unwrap().rate(),
        "100/minute"
    );

    let shadowed = limit_of("example6", &[("service", "auth"), ("user", "user-a")])
        .0
        .unwrap();
    assert!(shadowed.shadow());
    let enforced = limit_of("example6", &[("service", "auth"), ("user", "user-b")])
        .0
        .unwrap();
    assert!(!enforced.shadow());

    let replacing = rules
        .descriptor("example7", [("key_2", "value_2"), ("user", "bkthomps")])
        .unwrap();
    assert_eq!(
        replacing.rule.replaces().collect::<Vec<_>>(),
        ["specific_limit"]
    );
    let replaced = rules
        .descriptor("example7", [("key_1", "value_1"), ("user", "bkthomps")])
        .unwrap();
    assert_eq!(replaced.rule.name(), Some("specific_limit"));
    assert_eq!(replaced.rule.domain(), Some("example7"));

    assert_eq!(
        limit_of("example9", &[("key1", "valueXYZ")])
            .0
            .unwrap()
            .rate(),
        "20/minute"
    );
    assert!(rules.descriptor("example9", [("key1", "other")]).is_none());
}

#[test]
fn converted_extensions_are_valid_rules() {
    use crate::Algorithm;
    use std::time::Duration;
    let yaml = "
domain: ext
descriptors:
  - key: weekly
    rate_limit: {unit: week, requests_per_unit: 70}
  - key: burst
    rate_limit: {unit: second, requests_per_unit: 10, burst: 50}
  - key: banded
    rate_limit:
      unit: minute
      requests_per_unit: 100
      algorithm: sliding_window
      bands: [{unit: month, requests_per_unit: 3000}]
";
    let rules = rules_of(&[yaml]);
    let limit = |key: &str| {
        rules
            .descriptor("ext", [(key, "v")])
            .and_then(|found| found.rule.limit().cloned())
            .unwrap()
    };
    let weekly = limit("weekly");
    assert_eq!(weekly.algorithm(), Algorithm::FixedWindow);
    assert_eq!(weekly.bands()[0].capacity(), 70);
    assert_eq!(weekly.bands()[0].period(), Duration::from_secs(7 * 86_400));
    let burst = limit("burst");
    assert_eq!(burst.algorithm(), Algorithm::TokenBucket);
    assert_eq!(burst.bands()[0].capacity(), 50);
    assert_eq!(burst.bands()[0].refill_per_sec(), 10.0);
    let banded = limit("banded");
    assert_eq!(banded.algorithm(), Algorithm::SlidingWindow);
    assert_eq!(banded.bands().len(), 2);
    assert_eq!(banded.bands()[1].period(), Duration::from_secs(30 * 86_400));
}

#[test]
fn merged_into_a_rules_file_the_rules_parser_reads_both() {
    let domains = [EnvoyDomain::from_yaml(EXAMPLE_5, "internal.yaml").unwrap()];
    let rules_json = r#"{"default": {"limit": "10/second"}, "routes": [{"path": "/a", "limit": "1/second"}],
        "descriptors": {"own": [{"key": "k", "limit": "3/minute"}]}}"#;
    let json = EnvoyDomain::merge_into(rules_json, "rules.json", &domains).unwrap();
    let rules = crate::Rules::from_json(&json).unwrap();
    assert!(rules.descriptor("own", [("k", "x")]).is_some());
    assert!(rules.descriptor("internal", [("azure", "x")]).is_some());
    assert_eq!(
        rules
            .lookup(&http::Method::GET, "/a")
            .limit()
            .unwrap()
            .rate(),
        "1/second"
    );
}

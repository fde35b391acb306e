//! The `tollgate` binary, run as an operator would: `check-rules`' exit codes and output,
//! and what `tollgate serve` says when a setting stops its start, and how it logs.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use tempfile::NamedTempFile;
use tollgate::Rules;

// The repository's rules file, one directory above this package.
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../rate_limits.json");

/// Every feature of the format: bands, cost, shadow, algorithms, tiers with a default tier,
/// client overrides and the failure policy.
const TIERED: &str = r#"{
  "default": {"capacity": 20, "refill_rate": 5},
  "routes": [
    {"path": "/api/data", "limits": [{"capacity": 10, "refill_rate": 1}, "1000/hour"]},
    {"path": "/api/submit", "methods": ["POST"], "limit": "30/minute", "cost": 2},
    {"path": "/api/search", "limit": "100/minute", "shadow": true},
    {"path": "/static/{*rest}", "unlimited": true}
  ],
  "tiers": {
    "free": {"default": {"limit": "10/minute"}},
    "pro": {
      "default": {"limit": "100/minute"},
      "routes": [
        {"path": "/api/data", "limit": "500/minute", "algorithm": "sliding_window"},
        {"path": "/health", "unlimited": true}
      ]
    }
  },
  "default_tier": "pro",
  "clients": {"id:partner": {"limit": "1000/minute"}, "ip:10.0.0.9": {"unlimited": true}},
  "on_redis_error": "deny",
  "local_fallback_instances": 3,
  "headers": "both"
}"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert_has("stdout", &self.stdout, needle);
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert_has("stderr", &self.stderr, needle);
        self
    }

    /// The indented block of `--explain` output or of one rule in the summary, starting at
    /// the line that is exactly `header` (after indentation).
    #[track_caller]
    fn block(&self, header: &str) -> String {
        let mut lines = self.stdout.lines().skip_while(|l| l.trim() != header);
        let Some(first) = lines.next() else {
            panic!("no line {header:?} in:\n{}", self.stdout)
        };
        let indent = first.len() - first.trim_start().len();
        lines
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| format!("{}\n", l.trim()))
            .collect()
    }
}

#[track_caller]
fn assert_has(stream: &str, text: &str, needle: &str) {
    assert!(text.contains(needle), "{stream} lacks {needle:?}:\n{text}");
}

fn tollgate(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("the tollgate binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn rules_file(json: &str) -> NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("tollgate-cli-")
        .suffix(".json")
        .tempfile()
        .expect("a temporary file");
    file.write_all(json.as_bytes())
        .expect("temporary file written");
    file
}

fn path_of(file: &NamedTempFile) -> &str {
    file.path().to_str().expect("temporary paths are UTF-8")
}

/// `check-rules` on `json` written to a file, with `extra` arguments after the file.
fn check(json: &str, extra: &[&str]) -> Run {
    let file = rules_file(json);
    let mut args = vec!["check-rules", path_of(&file)];
    args.extend_from_slice(extra);
    tollgate(&args)
}

#[test]
fn shipped_file_summary_lists_every_rule() {
    // Derived from the library so the test follows edits to the shipped file.
    let rules = Rules::from_file(SHIPPED).unwrap_or_else(|e| panic!("{e}"));
    let run = tollgate(&["check-rules", SHIPPED]);
    run.expect_code(0).stdout_has(SHIPPED);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    for rule in rules.iter() {
        let block = run.block(rule.id());
        let pattern = rule.pattern().unwrap_or("(default: paths no route covers)");
        assert!(
            block.contains(&format!("pattern:  {pattern}\n")),
            "{}: {block}",
            rule.id()
        );
        match rule.limit() {
            None => assert!(block.contains("limit:    unlimited\n"), "{block}"),
            Some(limit) => {
                assert!(block.contains(limit.algorithm().as_str()), "{block}");
                for band in limit.bands() {
                    let capacity = format!("band:     capacity {},", band.capacity());
                    assert!(block.contains(&capacity), "{}: {block}", rule.id());
                }
            }
        }
    }
    let total = run.stdout.lines().last().unwrap_or_default();
    let tiers = rules.tier_names().count();
    let clients = rules.clients().count();
    assert!(
        total.starts_with(&format!("OK: {} rules, {tiers} tier", rules.iter().len())),
        "{total}"
    );
    assert!(
        total.contains(&format!(", {clients} client override")),
        "{total}"
    );
}

#[test]
fn summary_of_a_simple_file() {
    let run = check(
        r#"{
          "default": {"capacity": 20, "refill_rate": 5},
          "routes": [
            {"path": "/api/users/{id}", "methods": ["get", "PUT"], "capacity": 5, "refill_rate": 0.5},
            {"path": "/health", "unlimited": true}
          ]
        }"#,
        &[],
    );
    run.expect_code(0)
        .stdout_has("Base rules (requests without a tier):")
        .stdout_has("OK: 3 rules, 0 tiers, 0 client overrides");
    assert_eq!(
        run.block("default"),
        "pattern:  (default: paths no route covers)\n\
         methods:  all methods\n\
         limit:    token_bucket, cost 1\n\
         band:     capacity 20, refill 5/s, period 4s\n"
    );
    assert_eq!(
        run.block("/api/users/<id>@GET,PUT"),
        "pattern:  /api/users/{id}\n\
         methods:  GET, PUT (HEAD counts as GET)\n\
         limit:    token_bucket, cost 1\n\
         band:     capacity 5, refill 0.5/s, period 10s\n"
    );
    assert_eq!(
        run.block("/health"),
        "pattern:  /health\nmethods:  all methods\nlimit:    unlimited\n"
    );
    assert!(!run.stdout.contains("on_redis_error"), "{}", run.stdout);
    assert!(!run.stdout.contains("Client overrides"), "{}", run.stdout);
}

#[test]
fn summary_of_tiers_bands_cost_shadow_and_clients() {
    let run = check(TIERED, &[]);
    run.expect_code(0)
        .stdout_has("Base rules (unused: default_tier is \"pro\"):")
        .stdout_has("Tier \"free\":\n")
        .stdout_has("Tier \"pro\" (default tier: requests without a tier):")
        .stdout_has("on_redis_error: deny\n")
        .stdout_has("local_fallback_instances: 3\n")
        .stdout_has("headers: both\n");
    assert_eq!(
        run.stdout.lines().last(),
        Some("OK: 9 rules, 2 tiers, 2 client overrides")
    );
    assert_eq!(
        run.block("/api/data"),
        "pattern:  /api/data\n\
         methods:  all methods\n\
         limit:    token_bucket, cost 1, must fit every band\n\
         band:     capacity 10, refill 1/s, period 10s\n\
         band:     capacity 1000, refill 0.2778/s, period 1h\n"
    );
    assert!(run.block("/api/submit@POST").contains(
        "limit:    token_bucket, cost 2\nband:     capacity 30, refill 0.5/s, period 1m\n"
    ));
    assert!(
        run.block("/api/search")
            .contains("limit:    token_bucket, cost 1, shadow")
    );
    assert!(
        run.block("free:default")
            .contains("capacity 10, refill 0.1667/s, period 1m")
    );
    assert!(run.block("pro:/api/data").contains(
        "limit:    sliding_window, cost 1\nband:     capacity 500, refill 8.333/s, period 1m\n"
    ));
    assert!(run.block("pro:/health").contains("limit:    unlimited"));
    // Tiers appear in name order, each rule under its own tier.
    let free = run.stdout.find("Tier \"free\"").unwrap_or(usize::MAX);
    let pro = run.stdout.find("Tier \"pro\"").unwrap_or(usize::MAX);
    let pro_rule = run.stdout.find("  pro:default").unwrap_or(usize::MAX);
    assert!(free < pro && pro < pro_rule, "{}", run.stdout);
    // Overrides are sorted by key.
    let clients = run.block("Client overrides (replace the limit of every limited rule):");
    assert_eq!(
        clients,
        "id:partner\n\
         limit:    token_bucket, cost 1\n\
         band:     capacity 1000, refill 16.67/s, period 1m\n\
         ip:10.0.0.9\n\
         limit:    unlimited\n"
    );
}

#[test]
fn periods_read_as_durations() {
    let run = check(
        r#"{"default": {"limits": ["1/day", "90/second", {"capacity": 90, "refill_rate": 1},
                                  {"capacity": 1, "refill_rate": 4}, {"capacity": 5400, "refill_rate": 1}]}}"#,
        &[],
    );
    run.expect_code(0);
    let block = run.block("default");
    for band in [
        "capacity 1, refill 0.00001157/s, period 1d\n",
        "capacity 90, refill 90/s, period 1s\n",
        "capacity 90, refill 1/s, period 1m30s\n",
        "capacity 1, refill 4/s, period 0.25s\n",
        "capacity 5400, refill 1/s, period 1h30m\n",
    ] {
        assert!(block.contains(band), "{band:?} not in:\n{block}");
    }
}

/// Runs an invalid file and checks the error names the file and the JSON location.
#[track_caller]
fn rejected(json: &str, location: &str, reason: &str) {
    let file = rules_file(json);
    let run = tollgate(&["check-rules", path_of(&file)]);
    run.expect_code(1)
        .stderr_has(&format!("error: {}: at {location}", path_of(&file)))
        .stderr_has(reason);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
}

const DEFAULT: &str = r#""default": {"capacity": 20, "refill_rate": 5}"#;

#[test]
fn unknown_field_is_rejected() {
    rejected(
        &format!(
            r#"{{{DEFAULT}, "routes": [{{"path": "/a", "unlimited": true}}, {{"path": "/b", "capcity": 1, "refill_rate": 1}}]}}"#
        ),
        "routes[1].capcity",
        "unknown field `capcity`",
    );
}

#[test]
fn bad_limit_unit_is_rejected() {
    rejected(
        &format!(
            r#"{{{DEFAULT}, "routes": [{{"path": "/a", "unlimited": true}}, {{"path": "/b", "limit": "10/week"}}]}}"#
        ),
        "routes[1].limit",
        "\"10/week\"",
    );
}

#[test]
fn zero_capacity_is_rejected() {
    rejected(
        r#"{"default": {"capacity": 0, "refill_rate": 1}}"#,
        "default.capacity",
        "capacity must be an integer from 1",
    );
}

#[test]
fn bad_pattern_is_rejected() {
    rejected(
        &format!(r#"{{{DEFAULT}, "routes": [{{"path": "api/data", "unlimited": true}}]}}"#),
        "routes[0].path",
        "is not a valid pattern",
    );
}

#[test]
fn duplicate_route_is_rejected() {
    rejected(
        &format!(
            r#"{{{DEFAULT}, "routes": [{{"path": "/a", "unlimited": true}}, {{"path": "/a", "limit": "1/second"}}]}}"#
        ),
        "routes[1].path",
        "duplicates routes[0]",
    );
}

#[test]
fn unknown_default_tier_is_rejected() {
    rejected(
        &format!(
            r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"unlimited": true}}}}}}, "default_tier": "gold"}}"#
        ),
        "default_tier",
        "tier \"gold\" is not defined",
    );
}

#[test]
fn malformed_json_is_rejected_with_line_and_column() {
    rejected(
        "{\n  \"default\": {\"capacity\": 20,}\n}",
        "default (line 2, column",
        "trailing comma",
    );
}

#[test]
fn unreadable_file_is_rejected() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().expect("temporary paths are UTF-8");
    let run = tollgate(&["check-rules", missing]);
    run.expect_code(1)
        .stderr_has(&format!("error: cannot read rules file {missing}"));
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);

    // A directory exists but is not a file: said as such.
    let shown = dir.path().display().to_string();
    let run = tollgate(&["check-rules", &shown]);
    run.expect_code(1).stderr_has(&format!(
        "error: rules file {shown} is a directory, not a regular file"
    ));
}

/// `tollgate` with `args`, which must finish within 10 s: a FIFO or a device as the rules
/// file must not make it wait for a writer or read forever.
fn tollgate_promptly(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tollgate binary runs");
    let started = std::time::Instant::now();
    while child.try_wait().expect("child status").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("tollgate {args:?} did not finish within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("child output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_fifo_or_a_device_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fifo = dir.path().join("rate_limits.json");
    testkit::files::mkfifo(&fifo);
    let fifo = fifo.to_str().expect("temporary paths are UTF-8");
    // No writer ever opens the FIFO: reading it would wait forever.
    let run = tollgate_promptly(&["check-rules", fifo]);
    run.expect_code(1).stderr_has(&format!(
        "error: rules file {fifo} is a FIFO (named pipe), not a regular file: only regular files (or symlinks to them) are read"
    ));
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);

    let zero = dir.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("a symlink");
    for device in [zero.to_str().expect("UTF-8"), "/dev/zero", "/dev/urandom"] {
        tollgate_promptly(&["check-rules", device])
            .expect_code(1)
            .stderr_has(&format!(
                "error: rules file {device} is a character device, not a regular file"
            ));
    }
}

#[test]
fn the_size_cap_is_configurable() {
    let json = format!(r#"{{{DEFAULT}, "routes": [{{"path": "/a", "unlimited": true}}]}}"#);
    let file = rules_file(&json);
    let size = json.len().to_string();
    let under = (json.len() - 1).to_string();
    tollgate(&["check-rules", path_of(&file), "--max-file-bytes", &size]).expect_code(0);
    tollgate(&["check-rules", path_of(&file), "--max-file-bytes", &under])
        .expect_code(1)
        .stderr_has(&format!(
            "error: rules file {} is larger than {under} bytes, the most that is read",
            path_of(&file)
        ));
    tollgate(&["check-rules", path_of(&file), "--max-file-bytes", "lots"]).expect_code(2);
}

#[test]
fn a_file_that_is_not_json_says_what_was_found() {
    rejected(
        "hello, world",
        "line 1, column 1",
        "not valid JSON: found \"hello\" where a value was expected",
    );
    rejected(
        "{\n  \"routes\": [\n    {\"path\": \"/a\", \"unlimited\": true}}\n",
        "routes (line 3, column 38)",
        "not valid JSON: found \"}\" where `,` or `]` was expected",
    );
}

#[test]
fn text_after_the_document_is_rejected() {
    let one = format!("{{{DEFAULT}}}");
    for (after, found) in [
        (one.as_str(), "\"{\""),
        ("\nxyz", "\"xyz\""),
        ("]", "\"]\""),
        ("\0\0", "\"\\0\""),
    ] {
        let line = if after.starts_with('\n') { 2 } else { 1 };
        let column = if line == 2 { 1 } else { one.len() + 1 };
        rejected(
            &format!("{one}{after}"),
            &format!("line {line}, column {column}"),
            &format!("not valid JSON: found {found} after the end of the JSON document"),
        );
    }
    // Whitespace after it is fine.
    check(&format!("{one}\n\n"), &[]).expect_code(0);
}

#[test]
fn ipv6_overrides_that_never_apply_are_warned_about() {
    let json = format!(
        r#"{{{DEFAULT}, "clients": {{
            "ip:2001:db8::7": {{"unlimited": true}},
            "ip:2001:db8:1:2::/64": {{"limit": "1/second"}},
            "id:alice": {{"limit": "1/second"}}
        }}}}"#
    );
    let run = check(&json, &[]);
    run.expect_code(0)
        .stdout_has("OK: 1 rule, 0 tiers, 3 client overrides");
    assert_eq!(
        run.stderr,
        "warning: client override \"ip:2001:db8::7\" never applies: IPv6 clients are keyed by their /64 network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8::/64\"\n"
    );
    // Keyed by whole addresses, it is the /64 one that never applies.
    let run = check(&json, &["--ipv6-prefix-len", "128"]);
    run.expect_code(0)
        .stderr_has("warning: client override \"ip:2001:db8:1:2::/64\" never applies");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    // With --explain too.
    check(&json, &["--explain", "GET", "/"])
        .expect_code(0)
        .stderr_has("\"ip:2001:db8::7\" never applies");
    for bad in ["0", "129", "x"] {
        check(&json, &["--ipv6-prefix-len", bad])
            .expect_code(2)
            .stderr_has("--ipv6-prefix-len");
    }
    // Nothing to say about overrides that can apply.
    let run = check(
        &format!(r#"{{{DEFAULT}, "clients": {{"ip:2001:db8::/64": {{"unlimited": true}}}}}}"#),
        &[],
    );
    run.expect_code(0);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

/// The answer of `--explain METHOD PATH` (with `extra` options) for `json`, which must exit 0:
/// the lines under `METHOD PATH`, unindented.
#[track_caller]
fn explain(json: &str, method: &str, path: &str, extra: &[&str]) -> String {
    let mut args = vec!["--explain", method, path];
    args.extend_from_slice(extra);
    let run = check(json, &args);
    run.expect_code(0).stdout_has("\nOK: ");
    run.block(&format!("{} {path}", method.to_ascii_uppercase()))
}

#[track_caller]
fn assert_has_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert_has("output", text, needle);
    }
}

#[test]
fn explain_a_route_in_the_base_rules() {
    let run = tollgate(&["check-rules", SHIPPED, "--explain", "post", "/api/submit"]);
    run.expect_code(0);
    // The answer comes first; the summary of every rule is left out.
    assert!(
        run.stdout.starts_with("POST /api/submit\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Base rules"), "{}", run.stdout);
    // The shipped file has no default_tier, so tier-less requests use the base rules.
    assert!(Rules::from_file(SHIPPED).is_ok_and(|r| r.default_tier().is_none()));
    let block = run.block("POST /api/submit");
    assert!(
        block.starts_with("client:   unknown\ntier:     base rules\nrule:     /api/submit@POST\n"),
        "{block}"
    );
    assert_has_all(
        &block,
        &["override: no", "capacity 30, refill 0.5/s, period 1m"],
    );
}

#[test]
fn explain_head_under_a_rule_for_get() {
    let json = format!(
        r#"{{{DEFAULT}, "routes": [
            {{"path": "/api/data", "methods": ["GET"], "limit": "2/second"}},
            {{"path": "/api/feed", "methods": ["GET"], "limit": "3/second"}},
            {{"path": "/api/feed", "methods": ["HEAD"], "limit": "4/second"}}
        ]}}"#
    );
    let block = explain(&json, "HEAD", "/api/data", &[]);
    assert_has_all(
        &block,
        &[
            "rule:     /api/data@GET\n",
            "methods:  GET (HEAD counts as GET)\n",
            "band:     capacity 2,",
        ],
    );
    let block = explain(&json, "head", "/api/feed", &[]);
    assert_has_all(&block, &["rule:     /api/feed@HEAD\n", "methods:  HEAD\n"]);
    // The GET rule of a path with its own HEAD rule does not claim HEAD.
    let block = explain(&json, "GET", "/api/feed", &[]);
    assert_has_all(&block, &["methods:  GET\n"]);
    // The summary says it too.
    let run = check(&json, &[]);
    run.expect_code(0);
    assert!(
        run.block("/api/data@GET")
            .contains("methods:  GET (HEAD counts as GET)\n")
    );
}

#[test]
fn explain_uses_the_default_tier() {
    assert_eq!(
        explain(TIERED, "GET", "/api/data", &[]),
        "client:   unknown\n\
         tier:     pro (the default_tier)\n\
         rule:     pro:/api/data\n\
         pattern:  /api/data\n\
         methods:  all methods\n\
         override: no, the rule's own limit\n\
         limit:    sliding_window, cost 1\n\
         band:     capacity 500, refill 8.333/s, period 1m\n"
    );
}

#[test]
fn explain_a_path_no_route_covers() {
    // The query string is not part of the path the layer matches.
    let block = explain(TIERED, "DELETE", "/nothing/here?x=1", &[]);
    assert_has_all(
        &block,
        &[
            "rule:     pro:default\n",
            "pattern:  (default: paths no route covers)\n",
            "capacity 100, refill 1.667/s, period 1m",
        ],
    );
    // The base rules' /static route is not used while default_tier is set.
    let block = explain(TIERED, "GET", "/static/app.js", &[]);
    assert_has_all(&block, &["rule:     pro:default\n"]);
}

#[test]
fn explain_with_an_explicit_tier() {
    let block = explain(TIERED, "GET", "/api/data", &["--tier", "free"]);
    assert_has_all(
        &block,
        &[
            "tier:     free\n",
            "rule:     free:default\n",
            "capacity 10, refill 0.1667/s, period 1m",
        ],
    );
}

#[test]
fn explain_with_an_unknown_tier_fails() {
    let run = check(TIERED, &["--explain", "GET", "/api/data", "--tier", "gold"]);
    run.expect_code(1)
        .stderr_has("error: tier \"gold\" is not in the rules file")
        .stderr_has("free, pro");
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);

    let run = tollgate(&[
        "check-rules",
        SHIPPED,
        "--explain",
        "GET",
        "/",
        "--tier",
        "nope",
    ]);
    run.expect_code(1)
        .stderr_has("tier \"nope\" is not in the rules file");
}

#[test]
fn explain_with_a_client_override() {
    for client in ["id:partner", "partner"] {
        let block = explain(TIERED, "GET", "/api/data", &["--client", client]);
        assert_has_all(
            &block,
            &[
                "client:   id:partner\n",
                "rule:     pro:/api/data\n",
                "override: yes",
                "limit:    token_bucket, cost 1\nband:     capacity 1000, refill 16.67/s, period 1m\n",
            ],
        );
    }

    let block = explain(TIERED, "GET", "/api/data", &["--client", "ip:10.0.0.9"]);
    assert_has_all(&block, &["override: yes", "limit:    unlimited\n"]);

    // An unlimited rule stays unlimited; the override has nothing to replace.
    let block = explain(TIERED, "GET", "/health", &["--client", "partner"]);
    assert_has_all(
        &block,
        &[
            "override: no, the rule is unlimited",
            "limit:    unlimited\n",
        ],
    );

    // Another client keeps the rule's limit.
    let block = explain(TIERED, "GET", "/api/data", &["--client", "alice"]);
    assert_has_all(
        &block,
        &["client:   id:alice\n", "override: no", "capacity 500,"],
    );
}

#[test]
fn explain_client_key_forms() {
    for (given, shown) in [
        ("unknown", "unknown"),
        ("ip:10.0.0.1", "ip:10.0.0.1"),
        ("ip:2001:db8::1/64", "ip:2001:db8::/64"),
        ("10.0.0.1", "id:10.0.0.1"),
    ] {
        let block = explain(TIERED, "GET", "/", &["--client", given]);
        assert_has_all(&block, &[&format!("client:   {shown}\n")]);
    }
}

#[test]
fn invalid_explain_arguments_are_usage_errors() {
    for (args, message) in [
        (
            &["--explain", "GE T", "/api/data"][..],
            "\"GE T\" is not an HTTP method",
        ),
        (
            &["--explain", "", "/api/data"],
            "\"\" is not an HTTP method",
        ),
        (
            &["--explain", "GET", "api/data"],
            "\"api/data\" is not a request path",
        ),
        (
            &["--explain", "GET", "/a b"],
            "\"/a b\" is not a request path",
        ),
        (
            &["--explain", "GET", "/", "--client", "a b"],
            "\"a b\" is not an X-Client-ID",
        ),
        (
            &["--explain", "GET", "/", "--client", "ip:999.1.1.1"],
            "\"ip:999.1.1.1\" is not a client key",
        ),
    ] {
        let run = check(TIERED, args);
        run.expect_code(2).stderr_has(message);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    // The usage error wins even when the file is invalid.
    let run = check(r#"{"default": {}}"#, &["--explain", "GE T", "/"]);
    run.expect_code(2).stderr_has("is not an HTTP method");
}

#[test]
fn usage_errors_exit_2() {
    tollgate(&["check-rules"])
        .expect_code(2)
        .stderr_has("<FILE>");
    tollgate(&["check-rules", SHIPPED, "--frobnicate"])
        .expect_code(2)
        .stderr_has("--frobnicate");
    tollgate(&[]).expect_code(2);
    tollgate(&["check-ruels", SHIPPED]).expect_code(2);
    tollgate(&["check-rules", SHIPPED, "--explain", "GET"])
        .expect_code(2)
        .stderr_has("--explain");
    // --client and --tier only make sense with --explain.
    tollgate(&["check-rules", SHIPPED, "--client", "alice"])
        .expect_code(2)
        .stderr_has("--explain");
    tollgate(&["check-rules", SHIPPED, "--tier", "pro"])
        .expect_code(2)
        .stderr_has("--explain");
}

#[test]
fn rules_file_path_is_shown_as_given() {
    let file = rules_file(&format!("{{{DEFAULT}}}"));
    let dir = file.path().parent().unwrap_or(Path::new("/"));
    let name = file
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let run = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(dir)
        .args(["check-rules", name])
        .output()
        .expect("the tollgate binary runs");
    assert_eq!(run.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.starts_with(&format!("Rules file: {name}\n")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("OK: 1 rule, 0 tiers, 0 client overrides\n"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------
// `tollgate serve`: the errors that stop a start name what the operator set, once; logs
// are plain text when piped, or JSON lines.
// ---------------------------------------------------------------------------------------

/// `tollgate serve` with only `envs` in its environment (no `NO_COLOR`: its output is
/// piped, which alone must keep colours out), on free ports in a fresh directory, until it
/// exits by itself: a start that must fail.
fn serve_failing(envs: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PORT", "0")
        .env("GRPC_PORT", "0")
        .envs(envs.iter().copied())
        .current_dir(dir.path())
        .output()
        .expect("the tollgate binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Run {
    /// Exit status 1 with `message` said once, as the `error:` line on stderr (and not
    /// again as a log line), and no panic.
    fn fails_saying_once(&self, message: &str) -> &Self {
        self.expect_code(1).stderr_has(&format!("error: {message}"));
        let said = self.stdout.matches(message).count() + self.stderr.matches(message).count();
        assert_eq!(
            said, 1,
            "said {said} times:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }

    fn lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "{needle:?} in:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    serve_failing(&[("PORT", "notaport")], &[])
        .expect_code(2)
        .stderr_has("invalid value 'notaport' for 'PORT'")
        .stderr_has("invalid digit")
        .lacks("--port");
    serve_failing(&[("FAIL_MODE", "sometimes")], &[])
        .expect_code(2)
        .stderr_has("invalid value 'sometimes' for 'FAIL_MODE'")
        .stderr_has("closed, open, local")
        .lacks("--fail-mode");
    serve_failing(&[("TOLLGATE_MAX_RUNTIME_ENTRIES", "0")], &[])
        .expect_code(2)
        .stderr_has("for 'TOLLGATE_MAX_RUNTIME_ENTRIES'")
        .lacks("--max-runtime-entries");
    // The same value given as the flag is the flag's.
    for args in [&["--port", "notaport"][..], &["--port=notaport"]] {
        serve_failing(&[("PORT", "notaport")], args)
            .expect_code(2)
            .stderr_has("for '--port <PORT>'");
    }
}

#[test]
fn a_redis_url_that_is_not_one_says_what_one_looks_like() {
    serve_failing(&[("REDIS_URL", "http://127.0.0.1:6379")], &[])
        .fails_saying_once(
            "REDIS_URL: cannot use the Redis URL http://127.0.0.1:6379: it must start with \
             redis:// (or redis+unix:// or unix:// for a Unix socket)",
        )
        .lacks("cannot connect");
    serve_failing(&[("REDIS_CLUSTER_NODES", "127.0.0.1:7000")], &[])
        .fails_saying_once("REDIS_CLUSTER_NODES: cannot use the Redis URL 127.0.0.1:7000:")
        .stderr_has("it must start with redis://");
}

#[test]
fn trusting_every_address_advises_the_setting_not_the_rust_call() {
    for everything in ["0.0.0.0/0", "::/0"] {
        serve_failing(&[("TRUSTED_PROXIES", everything)], &[])
            .fails_saying_once(&format!(
                "TRUSTED_PROXIES: \"{everything}\" covers every address"
            ))
            .stderr_has("set TRUSTED_PROXIES=* (alone) to trust every peer")
            .lacks("trust_any_peer");
    }
}

#[test]
fn worker_threads_that_are_not_a_count_are_an_error_not_a_panic() {
    for threads in ["zero", "0", "-1"] {
        serve_failing(&[("TOKIO_WORKER_THREADS", threads)], &[])
            .fails_saying_once(&format!(
                "TOKIO_WORKER_THREADS={threads:?}: the runtime's worker threads must be a whole \
                 number from 1 up"
            ))
            .lacks("backtrace");
    }
}

#[test]
fn piped_logs_carry_no_colours() {
    // A start that fails after its first log lines.
    let run = serve_failing(&[("DEFAULT_RATE_LIMIT", "0/second")], &[]);
    run.fails_saying_once("DEFAULT_RATE_LIMIT=\"0/second\"")
        .stdout_has(" INFO ")
        .stdout_has("open files limit");
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
}

/// `tollgate serve` running until dropped.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn json_logs_are_one_object_a_line() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let mut serving = Serving(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("serve")
            .env_clear()
            .envs([("PORT", "0"), ("GRPC_PORT", "0")])
            .env("TOLLGATE_LOG_FORMAT", "json")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the tollgate binary runs"),
    );
    let stdout = serving.0.stdout.take().unwrap();
    let (lines, logged) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    let listening = loop {
        let line = logged
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| panic!("no \"listening on\" line; logged:\n{}", seen.join("\n")));
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        seen.push(line);
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("listening on http://") {
            break event;
        }
    };
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert_eq!(listening["target"], "tollgate::serve", "{listening}");
    assert!(listening["timestamp"].is_string(), "{listening}");
    // Fields stay fields: the start's summary names its backend as one.
    assert!(
        seen.iter()
            .any(|line| line.contains(r#""backend":"memory""#)),
        "{seen:#?}"
    );
}

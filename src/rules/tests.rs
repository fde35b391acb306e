use super::*;

fn ok(json: &str) -> Rules {
    match Rules::from_json(json) {
        Ok(rules) => rules,
        Err(err) => panic!("expected valid rules, got: {err}"),
    }
}

/// The error message for rules that must be rejected.
fn err(json: &str) -> String {
    match Rules::from_json(json) {
        Ok(rules) => panic!("expected an error, got {rules:?}"),
        Err(err) => err.to_string(),
    }
}

const DEFAULT: &str = r#""default": {"capacity": 20, "refill_rate": 5}"#;

fn with_routes(routes: &str) -> String {
    format!(r#"{{{DEFAULT}, "routes": [{routes}]}}"#)
}

#[test]
fn shipped_rules_file_is_valid() {
    let rules = Rules::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.iter().len() > 1);
}

#[test]
fn the_three_forms() {
    let rules = ok(&with_routes(
        r#"{"path": "/a", "capacity": 10, "refill_rate": 0.25},
           {"path": "/b", "limit": "30/minute"},
           {"path": "/c", "limit": "2/second"},
           {"path": "/d", "limit": "24 / hour"},
           {"path": "/e", "limit": "1/day"},
           {"path": "/f", "unlimited": true},
           {"path": "/g", "unlimited": false, "capacity": 1, "refill_rate": 1}"#,
    ));
    let bucket = |p: &str| {
        rules
            .lookup(&Method::GET, p)
            .limit()
            .map(|limit| limit.bands()[0])
    };
    assert_eq!(bucket("/a"), Band::new(10, 0.25));
    assert_eq!(bucket("/b"), Band::new(30, 0.5));
    assert_eq!(bucket("/c"), Band::new(2, 2.0));
    assert_eq!(bucket("/d"), Band::new(24, 24.0 / 3600.0));
    assert_eq!(bucket("/e"), Band::new(1, 1.0 / 86400.0));
    assert_eq!(bucket("/f"), None);
    assert_eq!(bucket("/g"), Band::new(1, 1.0));
    assert_eq!(bucket("/nothing"), Band::new(20, 5.0));
}

#[test]
fn routes_are_optional_and_default_may_be_unlimited() {
    let rules = ok(r#"{"default": {"unlimited": true}}"#);
    assert_eq!(rules.iter().len(), 1);
    assert!(rules.lookup(&Method::GET, "/x").limit().is_none());
}

#[test]
fn most_specific_pattern_wins() {
    let rules = ok(&with_routes(
        r#"{"path": "/api/{*rest}", "capacity": 1, "refill_rate": 1},
           {"path": "/api/users/{id}", "capacity": 2, "refill_rate": 1},
           {"path": "/api/users/admin", "capacity": 3, "refill_rate": 1},
           {"path": "/api/users/{id}/posts", "capacity": 4, "refill_rate": 1}"#,
    ));
    let id = |p: &str| rules.lookup(&Method::GET, p).id().to_owned();
    assert_eq!(id("/api/users/admin"), "/api/users/admin");
    assert_eq!(id("/api/users/7"), "/api/users/<id>");
    assert_eq!(id("/api/users/7/posts"), "/api/users/<id>/posts");
    assert_eq!(id("/api/other/deep/path"), "/api/<*rest>");
    assert_eq!(id("/api"), "default");
    assert_eq!(id("/"), "default");
    assert_eq!(id(""), "default");
}

#[test]
fn methods_select_rules_and_fall_through_to_less_specific_patterns() {
    let rules = ok(&with_routes(
        r#"{"path": "/api/{*rest}", "capacity": 1, "refill_rate": 1},
           {"path": "/api/submit", "methods": ["post", "PUT", "POST"], "capacity": 2, "refill_rate": 1},
           {"path": "/api/submit", "methods": ["DELETE"], "capacity": 3, "refill_rate": 1}"#,
    ));
    let id = |m: Method, p: &str| rules.lookup(&m, p).id().to_owned();
    assert_eq!(id(Method::POST, "/api/submit"), "/api/submit@POST,PUT");
    assert_eq!(id(Method::PUT, "/api/submit"), "/api/submit@POST,PUT");
    assert_eq!(id(Method::DELETE, "/api/submit"), "/api/submit@DELETE");
    // GET is named by no rule for this path, so the catch-all applies.
    assert_eq!(id(Method::GET, "/api/submit"), "/api/<*rest>");
    assert_eq!(id(Method::PATCH, "/api/submit"), "/api/<*rest>");
    assert_eq!(id(Method::POST, "/other"), "default");
}

#[test]
fn rule_ids_are_stable_and_free_of_hash_tag_braces() {
    let rules = ok(&with_routes(
        r#"{"path": "/u/{id}/f/{*rest}", "methods": ["GET"], "unlimited": true}"#,
    ));
    let ids: Vec<&str> = rules.iter().map(Rule::id).collect();
    assert_eq!(ids, ["default", "/u/<id>/f/<*rest>@GET"]);
}

#[test]
fn syntax_errors_give_line_and_column() {
    let msg = err("{\n  \"default\": {\"capacity\": 20,,}\n}");
    assert_eq!(
        msg,
        "<inline>: at default (line 2, column 30): not valid JSON: found \",\" where a key in double quotes was expected"
    );
}

#[test]
fn text_that_is_not_json_says_what_was_found_and_where() {
    for (text, expected) in [
        (
            "hello",
            "at line 1, column 1: not valid JSON: found \"hello\" where a value was expected",
        ),
        // serde_json stops inside the word; the whole word is shown, from its start.
        (
            "not JSON at all",
            "at line 1, column 1: not valid JSON: found \"not\" where a value was expected",
        ),
        (
            "\n\n  <xml/>",
            "at line 3, column 3: not valid JSON: found \"<\" where a value was expected",
        ),
        (
            "{\"default\": {\"capacity\": fals}}",
            "at default.capacity (line 1, column 26): not valid JSON: found \"fals\" where a value was expected",
        ),
        (
            "{\"default\" {}}",
            "at line 1, column 12: not valid JSON: found \"{\" where `:` was expected",
        ),
        (
            "{\"routes\": [{\"path\": \"/a\"} {\"path\": \"/b\"}]}",
            "at routes (line 1, column 28): not valid JSON: found \"{\" where `,` or `]` was expected",
        ),
        (
            "{\"default\": {\"unlimited\": true,}}",
            "at default (line 1, column 32): not valid JSON: found \"}\" after a trailing comma",
        ),
        (
            "{\"default\": {\"unlimited\": true}",
            "at line 1, column 32: not valid JSON: found the end of the file before the object was closed with `}`",
        ),
        (
            "{\"routes\": [\n",
            "at routes (line 2, column 1): not valid JSON: found the end of the file before the list was closed with `]`",
        ),
        (
            "",
            "at line 1, column 1: not valid JSON: found the end of the file where a value was expected",
        ),
        (
            "{\"default\": {\"limit\": \"1/second}}",
            "at default.limit (line 1, column 34): not valid JSON: found the end of the file before the string was closed with `\"`",
        ),
        (
            "{\"default\": {\"capacity\": 1., \"refill_rate\": 1}}",
            "at default.capacity (line 1, column 28): not valid JSON: found \",\" (invalid number)",
        ),
    ] {
        assert_eq!(err(text), format!("<inline>: {expected}"), "{text:?}");
    }
}

#[test]
fn text_after_the_document_is_refused_where_it_starts() {
    let one = r#"{"default": {"unlimited": true}}"#;
    for (after, found, column) in [
        (
            r#"{"default": {"limit": "1/second"}}"#.to_owned(),
            r#""{""#,
            33,
        ),
        (" xyz".to_owned(), r#""xyz""#, 34),
        ("]".to_owned(), r#""]""#, 33),
        ("\0\0\0".to_owned(), r#""\0""#, 33),
    ] {
        assert_eq!(
            err(&format!("{one}{after}")),
            format!(
                "<inline>: at line 1, column {column}: not valid JSON: found {found} after the end of the JSON document"
            ),
            "{after:?}"
        );
    }
    let msg = err(&format!("{one}\n\n  , more"));
    assert!(
        msg.starts_with("<inline>: at line 3, column 3: not valid JSON: found \",\""),
        "{msg}"
    );
    // Whitespace after the document is fine.
    ok(&format!("{one} \n\t\r\n"));
}

#[test]
fn a_file_that_is_not_utf8_says_where() {
    let err = Rules::parse_file(b"{\n  \"default\": \xff}", Path::new("rules.json"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "rules.json: at line 2, column 14: not valid JSON: found the byte 0xFF (a rules file is UTF-8 text)"
    );
}

#[test]
fn a_rule_naming_get_covers_head_unless_head_has_its_own() {
    let rules = ok(&with_routes(
        r#"{"path": "/api/data", "methods": ["GET"], "limit": "2/second"},
           {"path": "/api/feed", "methods": ["GET", "PUT"], "limit": "3/second"},
           {"path": "/api/feed", "methods": ["HEAD"], "limit": "4/second"},
           {"path": "/u/{id}", "methods": ["GET"], "limit": "5/second"},
           {"path": "/u/{name}", "methods": ["HEAD"], "limit": "6/second"},
           {"path": "/both", "methods": ["GET", "HEAD"], "limit": "7/second"},
           {"path": "/any", "limit": "8/second"},
           {"path": "/a/{*rest}", "methods": ["HEAD"], "limit": "9/second"},
           {"path": "/a/b", "methods": ["GET"], "limit": "10/second"}"#,
    ));
    let id = |m: Method, p: &str| rules.lookup(&m, p).id().to_owned();
    // Same identity, so HEAD and GET share one state (and Redis keys do not change).
    assert_eq!(id(Method::HEAD, "/api/data"), "/api/data@GET");
    assert_eq!(id(Method::GET, "/api/data"), "/api/data@GET");
    assert_eq!(id(Method::POST, "/api/data"), "default");
    assert_eq!(id(Method::HEAD, "/api/feed"), "/api/feed@HEAD");
    assert_eq!(id(Method::GET, "/api/feed"), "/api/feed@GET,PUT");
    // A HEAD rule for the same path under another parameter name wins too.
    assert_eq!(id(Method::HEAD, "/u/7"), "/u/<name>@HEAD");
    assert_eq!(id(Method::GET, "/u/7"), "/u/<id>@GET");
    assert_eq!(id(Method::HEAD, "/both"), "/both@GET,HEAD");
    assert_eq!(id(Method::HEAD, "/any"), "/any");
    // A HEAD rule on a less specific path does not take HEAD from a GET rule's path.
    assert_eq!(id(Method::HEAD, "/a/b"), "/a/b@GET");
    assert_eq!(id(Method::HEAD, "/a/c"), "/a/<*rest>@HEAD");
    let applies = |rule: &str| rules.find(rule).unwrap().applies_to(&Method::HEAD);
    assert!(applies("/api/data@GET"));
    assert!(!applies("/api/feed@GET,PUT"));
    assert!(!applies("/u/<id>@GET"));
    assert!(applies("/a/b@GET"));
    assert!(
        !rules
            .find("/api/feed@HEAD")
            .unwrap()
            .applies_to(&Method::GET)
    );
}

#[test]
fn head_follows_get_in_tiers_too() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}},
            "routes": [{{"path": "/api/data", "methods": ["GET"], "limit": "2/second"}}]}}}}}}"#
    ));
    let head = rules
        .resolve(&Method::HEAD, "/api/data", Some("pro"), &ClientKey::Unknown)
        .unwrap();
    assert_eq!(head.rule.id(), "pro:/api/data@GET");
    // Without any rule naming GET, HEAD goes where other methods go.
    let rules = ok(&with_routes(
        r#"{"path": "/api/data", "methods": ["POST"], "limit": "2/second"}"#,
    ));
    assert_eq!(rules.lookup(&Method::HEAD, "/api/data").id(), "default");
}

#[test]
fn unreachable_overrides_say_why() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "clients": {{
            "ip:2001:db8::7": {{"unlimited": true}},
            "ip:2001:db8:1:2::/64": {{"unlimited": true}},
            "ip:2001:db8:9::/48": {{"unlimited": true}},
            "ip:10.0.0.1": {{"unlimited": true}},
            "id:alice": {{"unlimited": true}}
        }}}}"#
    ));
    let never = |bits: u8| -> Vec<String> {
        rules
            .unreachable_overrides(bits)
            .map(|o| o.to_string())
            .collect()
    };
    assert_eq!(
        never(64),
        [
            "client override \"ip:2001:db8:9::/48\" never applies: IPv6 clients are keyed by their /64 network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8:9::/64\"",
            "client override \"ip:2001:db8::7\" never applies: IPv6 clients are keyed by their /64 network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8::/64\"",
        ]
    );
    assert_eq!(never(48).len(), 2);
    assert_eq!(
        never(128),
        [
            "client override \"ip:2001:db8:1:2::/64\" never applies: IPv6 clients are keyed by their whole address (ipv6_prefix_len 128), so an override must name an address, like \"ip:2001:db8:1:2::\"",
            "client override \"ip:2001:db8:9::/48\" never applies: IPv6 clients are keyed by their whole address (ipv6_prefix_len 128), so an override must name an address, like \"ip:2001:db8:9::\"",
        ]
    );
}

#[test]
fn locations_are_never_empty() {
    for (text, location) in [
        // A key the format does not know may be a named rule: the document ends before
        // its value says.
        ("{\"\"", "."),
        ("{", "."),
        ("[", "."),
        ("{\"default\"", "."),
        ("{\"routes\": [{\"\"", "routes[0][\"\"]"),
        ("{\"routes\": [{\"a b\": 1", "routes[0][\"a b\"]"),
    ] {
        let Err(RulesError::Invalid {
            location: found, ..
        }) = Rules::from_json(text)
        else {
            panic!("{text:?} must be refused");
        };
        assert_eq!(found.json_path, location, "{text:?}");
    }
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let msg = err(&with_routes(
        r#"{"path": "/a", "capacity": 1, "refill_rate": 1},
           {"path": "/b", "capcity": 1, "refill_rate": 1}"#,
    ));
    assert!(
        msg.starts_with("<inline>: at routes[1].capcity"),
        "got: {msg}"
    );
    assert!(msg.contains("unknown field `capcity`"), "{msg}");
    let msg = err(&format!(r#"{{{DEFAULT}, "rotues": []}}"#));
    assert!(msg.contains("unknown field `rotues`"), "{msg}");
}

#[test]
fn bands_algorithms_cost_and_shadow() {
    let rules = ok(&with_routes(
        r#"{"path": "/a", "limits": [{"capacity": 10, "refill_rate": 1}, "1000/hour", "5000/day"]},
           {"path": "/b", "limit": "100/minute", "algorithm": "sliding_window", "cost": 5},
           {"path": "/c", "limit": "10/second", "algorithm": "fixed_window", "shadow": true}"#,
    ));
    let limit = |p: &str| rules.lookup(&Method::GET, p).limit().unwrap().clone();
    let a = limit("/a");
    assert_eq!(a.algorithm(), Algorithm::TokenBucket);
    let capacities: Vec<u32> = a.bands().iter().map(Band::capacity).collect();
    assert_eq!(capacities, [10, 1000, 5000]);
    assert_eq!(a.bands()[2].period(), Duration::from_secs(86400));
    assert_eq!((a.cost(), a.shadow()), (1, false));
    let b = limit("/b");
    assert_eq!((b.algorithm(), b.cost()), (Algorithm::SlidingWindow, 5));
    let c = limit("/c");
    assert_eq!((c.algorithm(), c.shadow()), (Algorithm::FixedWindow, true));
    assert_eq!(c.to_string(), "fixed_window 10 per 1s, shadow");
}

#[test]
fn global_shadow_applies_to_every_limited_rule() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "shadow": true, "routes": [{{"path": "/a", "limit": "1/second"}}, {{"path": "/b", "unlimited": true}}]}}"#
    ));
    assert!(rules.default_rule().limit().unwrap().shadow());
    assert!(rules.lookup(&Method::GET, "/a").limit().unwrap().shadow());
    assert!(rules.lookup(&Method::GET, "/b").limit().is_none());
}

#[test]
fn bad_bands() {
    for (bands, location, why) in [
        ("[]", "routes[0].limits", "1 to 8 bands, got 0"),
        (
            r#"["1/second","1/second","1/second","1/second","1/second","1/second","1/second","1/second","1/second"]"#,
            "routes[0].limits",
            "got 9",
        ),
        (
            r#"["1/second", "2/week"]"#,
            "routes[0].limits[1]",
            "got \"2/week\"",
        ),
        (
            r#"[{"capacity": 0, "refill_rate": 1}]"#,
            "routes[0].limits[0].capacity",
            "capacity must be",
        ),
        (
            r#"[{"capacity": 1}]"#,
            "routes[0].limits[0]",
            "`refill_rate` is missing",
        ),
        (
            r#"[{"capacity": 1, "refill_rate": 1, "burst": 2}]"#,
            "routes[0].limits[0].burst",
            "unknown field `burst`",
        ),
        (
            r#"[{"capacity": "1", "refill_rate": 1}]"#,
            "routes[0].limits[0].capacity",
            "expected a number",
        ),
        ("[5]", "routes[0].limits[0]", "invalid band 5"),
        (r#""1/second""#, "routes[0].limits", "invalid type"),
    ] {
        let msg = err(&with_routes(&format!(
            r#"{{"path": "/a", "limits": {bands}}}"#
        )));
        assert!(
            msg.starts_with(&format!("<inline>: at {location}")),
            "{bands}: {msg}"
        );
        assert!(msg.contains(why), "{bands}: {msg}");
    }
}

#[test]
fn bad_costs_algorithms_and_unlimited_extras() {
    for (rule, location, why) in [
        (
            r#""limit": "5/second", "cost": 0"#,
            "routes[0].cost",
            "from 1 to 5",
        ),
        (
            r#""limits": ["5/second", "3/day"], "cost": 4"#,
            "routes[0].cost",
            "from 1 to 3",
        ),
        (
            r#""limit": "5/second", "cost": 1.5"#,
            "routes[0].cost",
            "got 1.5",
        ),
        (
            r#""limit": "5/second", "algorithm": "leaky_bucket""#,
            "routes[0].algorithm",
            "unknown variant `leaky_bucket`",
        ),
        (
            r#""unlimited": true, "algorithm": "fixed_window""#,
            "routes[0].algorithm",
            "no meaning on an unlimited rule",
        ),
        (
            r#""unlimited": true, "cost": 2"#,
            "routes[0].cost",
            "no meaning",
        ),
        (
            r#""unlimited": true, "shadow": true"#,
            "routes[0].shadow",
            "no meaning",
        ),
        (
            r#""limit": "5/second", "limits": ["1/second"]"#,
            "routes[0]",
            "it has limit, limits",
        ),
        (
            r#""unlimited": true, "unit": "tokens""#,
            "routes[0].unit",
            "no meaning",
        ),
        (
            r#""unlimited": true, "settle_header": "x-used""#,
            "routes[0].settle_header",
            "no meaning",
        ),
        (
            r#""limit": "5/second", "unit": "big tokens""#,
            "routes[0].unit",
            "must be 1 to 32 letters",
        ),
        (
            r#""limit": "5/second", "settle_header": "content-length""#,
            "routes[0].settle_header",
            "one of the app's own",
        ),
        (
            r#""limit": "5/second", "settle_header": "x used""#,
            "routes[0].settle_header",
            "must be a header name",
        ),
    ] {
        let msg = err(&with_routes(&format!(r#"{{"path": "/a", {rule}}}"#)));
        assert!(
            msg.starts_with(&format!("<inline>: at {location}")),
            "{rule}: {msg}"
        );
        assert!(msg.contains(why), "{rule}: {msg}");
    }
}

#[test]
fn tiers_are_rule_sets_of_their_own() {
    let rules = ok(&format!(
        r#"{{{DEFAULT},
            "routes": [{{"path": "/api/data", "limit": "2/second"}}],
            "tiers": {{
                "pro": {{"default": {{"limit": "50/second"}}, "routes": [{{"path": "/api/{{*rest}}", "limit": "40/second"}}]}},
                "free-trial": {{"default": {{"limit": "1/second"}}}}
            }}}}"#
    ));
    let names: Vec<&str> = rules.tier_names().collect();
    assert_eq!(names, ["free-trial", "pro"]);
    assert_eq!(rules.default_tier(), None);
    let unknown = ClientKey::Unknown;
    let id = |tier: Option<&str>, path: &str| {
        rules
            .resolve(&Method::GET, path, tier, &unknown)
            .unwrap()
            .rule
            .id()
            .to_owned()
    };
    assert_eq!(id(None, "/api/data"), "/api/data");
    assert_eq!(id(Some("pro"), "/api/data"), "pro:/api/<*rest>");
    assert_eq!(id(Some("pro"), "/"), "pro:default");
    assert_eq!(id(Some("free-trial"), "/api/data"), "free-trial:default");
    assert_eq!(rules.find("pro:default").and_then(Rule::tier), Some("pro"));
    let err = rules
        .resolve(&Method::GET, "/", Some("gold"), &unknown)
        .unwrap_err();
    assert_eq!(err.name(), "gold");
}

#[test]
fn default_tier_is_used_without_a_tier() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "tiers": {{"free": {{"default": {{"limit": "1/second"}}}}}}, "default_tier": "free"}}"#
    ));
    assert_eq!(rules.default_tier(), Some("free"));
    assert_eq!(rules.lookup(&Method::GET, "/").id(), "free:default");
}

#[test]
fn bad_tiers() {
    let msg = err(&format!(
        r#"{{{DEFAULT}, "tiers": {{"p r o": {{"default": {{"limit": "1/second"}}}}}}}}"#
    ));
    assert!(
        msg.starts_with("<inline>: at tiers.p r o: tier name \"p r o\""),
        "{msg}"
    );
    let msg = err(&format!(
        r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}}, "routes": [{{"path": "/a", "limit": "x"}}]}}}}}}"#
    ));
    assert!(
        msg.starts_with("<inline>: at tiers.pro.routes[0].limit: limit must look like"),
        "{msg}"
    );
    let msg = err(&format!(
        r#"{{{DEFAULT}, "tiers": {{"pro": {{"routes": []}}}}}}"#
    ));
    assert!(msg.starts_with("<inline>: at tiers.pro"), "{msg}");
    assert!(msg.contains("missing field `default`"), "{msg}");
    let msg = err(&format!(
        r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}}}}}}, "default_tier": "gold"}}"#
    ));
    assert!(
        msg.starts_with("<inline>: at default_tier: tier \"gold\" is not defined"),
        "{msg}"
    );
    assert!(msg.contains("[\"pro\"]"), "{msg}");
}

#[test]
fn client_overrides() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "routes": [{{"path": "/health", "unlimited": true}}],
            "clients": {{
                "id:partner": {{"limit": "1000/minute"}},
                "ip:10.0.0.9": {{"unlimited": true}},
                "ip:2001:db8:1:2:3::9/64": {{"limit": "5/second"}},
                "unknown": {{"limit": "1/second"}}
            }}}}"#
    ));
    let resolve = |key: ClientKey, path: &str| {
        let r = rules.resolve(&Method::GET, path, None, &key).unwrap();
        (
            r.rule.id().to_owned(),
            r.limit.map(|l| l.bands()[0].capacity()),
            r.client_override,
        )
    };
    assert_eq!(
        resolve(ClientKey::Id("partner".into()), "/"),
        ("default".into(), Some(1000), true)
    );
    assert_eq!(
        resolve(ClientKey::Id("other".into()), "/"),
        ("default".into(), Some(20), false)
    );
    let ip: std::net::IpAddr = "10.0.0.9".parse().unwrap();
    assert_eq!(
        resolve(ClientKey::Ip(ip), "/"),
        ("default".into(), None, true)
    );
    let net = ClientKey::Ipv6Network {
        network: "2001:db8:1:2::".parse().unwrap(),
        prefix_len: 64,
    };
    assert_eq!(resolve(net, "/").1, Some(5));
    assert_eq!(resolve(ClientKey::Unknown, "/").1, Some(1));
    // Unlimited routes are not limited by an override.
    assert_eq!(resolve(ClientKey::Id("partner".into()), "/health").1, None);
    assert_eq!(rules.clients().count(), 4);
}

#[test]
fn bad_client_overrides() {
    for (key, body, location, why) in [
        (
            "alice",
            r#"{"limit": "1/second"}"#,
            "clients.alice",
            "is not a client key",
        ),
        (
            "ip:999.1.1.1",
            r#"{"limit": "1/second"}"#,
            "clients.ip:999.1.1.1",
            "is not a client key",
        ),
        (
            "id:has space",
            r#"{"limit": "1/second"}"#,
            "clients.id:has space",
            "is not a client key",
        ),
        (
            "id:a",
            r#"{"path": "/", "limit": "1/second"}"#,
            "clients.id:a.path",
            "only allowed in routes",
        ),
        (
            "id:a",
            r#"{"limit": "1/week"}"#,
            "clients.id:a.limit",
            "limit must look like",
        ),
    ] {
        let msg = err(&format!(r#"{{{DEFAULT}, "clients": {{"{key}": {body}}}}}"#));
        assert!(
            msg.starts_with(&format!("<inline>: at {location}")),
            "{key}: {msg}"
        );
        assert!(msg.contains(why), "{key}: {msg}");
    }
}

#[test]
fn failure_policy_fields() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "on_redis_error": "deny", "local_fallback_instances": 3}}"#
    ));
    assert_eq!(rules.on_redis_error(), Some(OnRedisError::Deny));
    assert_eq!(rules.local_fallback_instances(), Some(3));
    let rules = ok(&format!("{{{DEFAULT}}}"));
    assert_eq!(rules.on_redis_error(), None);
    assert_eq!(rules.local_fallback_instances(), None);

    let msg = err(&format!(r#"{{{DEFAULT}, "on_redis_error": "ignore"}}"#));
    assert!(msg.starts_with("<inline>: at on_redis_error"), "{msg}");
    assert!(
        msg.contains("expected one of `allow`, `deny`, `local`"),
        "{msg}"
    );
    let msg = err(&format!(r#"{{{DEFAULT}, "local_fallback_instances": 0}}"#));
    assert!(
        msg.starts_with("<inline>: at local_fallback_instances"),
        "{msg}"
    );
}

#[test]
fn missing_default_is_an_error() {
    let msg = err(r#"{"routes": []}"#);
    assert!(msg.contains("missing field `default`"), "{msg}");
}

#[test]
fn bad_capacities() {
    for (value, shown) in [
        ("0", "got 0"),
        ("-1", "got -1"),
        ("2.5", "got 2.5"),
        ("4294967296", "got 4294967296"),
    ] {
        let msg = err(&format!(
            r#"{{"default": {{"capacity": {value}, "refill_rate": 1}}}}"#
        ));
        assert_eq!(
            msg,
            format!(
                "<inline>: at default.capacity: capacity must be an integer from 1 to 4294967295, {shown}"
            )
        );
    }
    let msg = err(r#"{"default": {"capacity": "10", "refill_rate": 1}}"#);
    assert!(msg.starts_with("<inline>: at default.capacity"), "{msg}");
}

#[test]
fn bad_refill_rates() {
    for value in ["0", "-1", "-0.5", "1e-9", "1e10"] {
        let msg = err(&with_routes(&format!(
            r#"{{"path": "/a", "capacity": 1, "refill_rate": {value}}}"#
        )));
        assert!(
            msg.starts_with("<inline>: at routes[0].refill_rate: refill_rate must be"),
            "{value}: {msg}"
        );
    }
}

#[test]
fn periods_longer_than_the_maximum_are_refused() {
    let msg = err(
        r#"{"default": {"capacity": 5000000, "refill_rate": 0.000001, "algorithm": "sliding_window"}}"#,
    );
    assert!(
        msg.starts_with("<inline>: at default: capacity / refill_rate (the time the whole bucket takes to refill) must be at most 1000000000 s, got 5000000000000 s"),
        "{msg}"
    );
    assert!(Band::new(5_000_000, 1e-6).is_none());
    assert!(Band::new(1000, 1e-6).is_some());
}

#[test]
fn bad_limit_shorthands() {
    for value in [
        "10",
        "10/week",
        "0/second",
        "-1/second",
        "x/minute",
        "10/",
        "/minute",
        "10/minutes",
    ] {
        let msg = err(&with_routes(&format!(
            r#"{{"path": "/a", "limit": "{value}"}}"#
        )));
        assert!(
            msg.starts_with("<inline>: at routes[0].limit: limit must look like \"N/unit\""),
            "{value}: {msg}"
        );
        assert!(msg.contains(&format!("{value:?}")), "{msg}");
    }
}

#[test]
fn each_unit_takes_the_largest_count_its_message_names() {
    // The largest N each unit accepts, and the message naming it for a count one above.
    for (unit, largest) in [
        ("second", 1_000_000_000_u64),
        ("minute", 4_294_967_295),
        ("hour", 4_294_967_295),
        ("day", 4_294_967_295),
    ] {
        let rules = ok(&format!(
            r#"{{"default": {{"limit": "{largest}/{unit}"}}}}"#
        ));
        let capacity = rules
            .default_rule()
            .limit()
            .map(|l| l.bands()[0].capacity());
        assert_eq!(capacity.map(u64::from), Some(largest), "{unit}");
        let above = format!("{}/{unit}", largest + 1);
        let msg = err(&format!(r#"{{"default": {{"limit": "{above}"}}}}"#));
        assert_eq!(
            msg,
            format!(
                "<inline>: at default.limit: limit must look like \"N/unit\" with unit one of second, minute, hour, day \
                 and N an integer from 1 to 1000000000 for N/second or 4294967295 for N/minute, N/hour, N/day; got {above:?}"
            )
        );
    }
}

#[test]
fn exactly_one_limit_form() {
    for (rule, found) in [
        (r#"{"path": "/a"}"#, "it has none"),
        (
            r#"{"path": "/a", "capacity": 1}"#,
            "`refill_rate` is missing",
        ),
        (
            r#"{"path": "/a", "refill_rate": 1}"#,
            "`capacity` is missing",
        ),
        (
            r#"{"path": "/a", "limit": "1/second", "capacity": 1, "refill_rate": 1}"#,
            "it has capacity, refill_rate, limit",
        ),
        (
            r#"{"path": "/a", "unlimited": true, "limit": "1/second"}"#,
            "it has limit, unlimited",
        ),
        (
            r#"{"path": "/a", "unlimited": false}"#,
            "it has `unlimited: false` alone",
        ),
    ] {
        let msg = err(&with_routes(rule));
        assert!(
            msg.starts_with("<inline>: at routes[0]: a rule needs exactly one of"),
            "{rule}: {msg}"
        );
        assert!(msg.ends_with(found), "{rule}: {msg}");
    }
}

#[test]
fn bad_methods() {
    let msg = err(&with_routes(
        r#"{"path": "/a", "methods": [], "unlimited": true}"#,
    ));
    assert!(msg.contains("at routes[0].methods: methods must be a non-empty list"));
    let msg = err(&with_routes(
        r#"{"path": "/a", "methods": ["GET", "GE T"], "unlimited": true}"#,
    ));
    assert!(msg.contains("at routes[0].methods[1]"), "{msg}");
    assert!(msg.contains("\"GE T\" is not a method name"), "{msg}");
    let msg = err(&with_routes(
        r#"{"path": "/a", "methods": [""], "unlimited": true}"#,
    ));
    assert!(msg.contains("at routes[0].methods[0]"), "{msg}");
    let msg = err(&with_routes(
        r#"{"path": "/a", "methods": "GET", "unlimited": true}"#,
    ));
    assert!(msg.contains("at routes[0].methods"), "{msg}");
}

#[test]
fn path_and_methods_are_not_allowed_in_default() {
    let msg = err(r#"{"default": {"path": "/", "unlimited": true}}"#);
    assert!(
        msg.contains("at default.path: `path` is only allowed in routes"),
        "{msg}"
    );
}

#[test]
fn duplicate_routes() {
    let msg = err(&with_routes(
        r#"{"path": "/a", "unlimited": true}, {"path": "/a", "limit": "1/second"}"#,
    ));
    assert!(
        msg.contains("at routes[1].path: route \"/a\" duplicates routes[0]"),
        "{msg}"
    );
    let msg = err(&with_routes(
        r#"{"path": "/a", "methods": ["GET", "POST"], "unlimited": true},
           {"path": "/a", "methods": ["post"], "unlimited": true}"#,
    ));
    assert!(msg.contains("duplicates routes[0]"), "{msg}");
    let msg = err(&with_routes(
        r#"{"path": "/a", "unlimited": true},
           {"path": "/a", "methods": ["GET"], "unlimited": true}"#,
    ));
    assert!(msg.contains("duplicates routes[0]"), "{msg}");
    // Same rule identity through the brace mapping.
    let msg = err(&with_routes(
        r#"{"path": "/u/{id}", "unlimited": true}, {"path": "/u/<id>", "unlimited": true}"#,
    ));
    assert!(msg.contains("same rule identity"), "{msg}");
}

#[test]
fn bad_patterns() {
    for (path, reason) in [
        ("api", "does not start with '/'"),
        ("", "does not start with '/'"),
        ("/a/{*rest}/b", "catch-all"),
        ("/a/{", "parameter"),
        ("/a/{x}-{y}", "parameter"),
    ] {
        let msg = err(&with_routes(&format!(
            r#"{{"path": "{path}", "unlimited": true}}"#
        )));
        assert!(
            msg.starts_with(&format!(
                "<inline>: at routes[0].path: path {path:?} is not a valid pattern"
            )),
            "{path}: {msg}"
        );
        assert!(msg.to_lowercase().contains(reason), "{path}: {msg}");
    }
    let msg = err(&with_routes(
        r#"{"path": "/u/{id}", "unlimited": true}, {"path": "/u/{name}", "unlimited": true}"#,
    ));
    assert!(msg.contains("at routes[1].path"), "{msg}");
    assert!(msg.contains("conflicts with routes[0]"), "{msg}");
}

#[test]
fn paths_with_control_characters_are_refused_naming_the_character() {
    for (escaped, shown, code, byte) in [
        (r"/a\u0000b", r#""/a\0b""#, "U+0000", 2),
        (r"/a\nb", r#""/a\nb""#, "U+000A", 2),
        (r"/\tx", r#""/\tx""#, "U+0009", 1),
        (r"/x/\u007f", r#""/x/\u{7f}""#, "U+007F", 3),
        (r"/\u0085", r#""/\u{85}""#, "U+0085", 1),
    ] {
        let msg = err(&with_routes(&format!(
            r#"{{"path": "{escaped}", "unlimited": true}}"#
        )));
        assert_eq!(
            msg,
            format!(
                "<inline>: at routes[0].path: path {shown} is not a valid pattern: it contains the control \
                 character {code} at byte {byte} (patterns start with '/' and use {{param}} for one segment \
                 and {{*rest}} for the remainder)"
            )
        );
    }
    // Tiers' routes are read by the same code.
    let msg = err(&format!(
        r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"unlimited": true}}, "routes": [{{"path": "/p\r", "unlimited": true}}]}}}}}}"#
    ));
    assert!(
        msg.starts_with("<inline>: at tiers.pro.routes[0].path: path \"/p\\r\""),
        "{msg}"
    );
    // Characters that are not control characters stay allowed.
    ok(&with_routes(
        r#"{"path": "/caf\u00e9/a b/~!$", "unlimited": true}"#,
    ));
}

#[test]
fn unreadable_file_names_the_file() {
    let err = Rules::from_file("/definitely/not/here.json").unwrap_err();
    assert!(matches!(err, RulesError::Read { .. }));
    assert!(err.to_string().contains("/definitely/not/here.json"));
}

#[test]
fn file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(&file, r#"{"default": {"capacity": 1, "refill_rate": -2}}"#).unwrap();
    let msg = Rules::from_file(&file).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        msg.starts_with(&format!("{}: at default.refill_rate", file.display())),
        "{msg}"
    );
}

fn with_descriptors(domains: &str) -> String {
    format!(r#"{{{DEFAULT}, "descriptors": {{{domains}}}}}"#)
}

#[test]
fn descriptors_match_exact_values_then_wildcards_then_any_value() {
    let rules = ok(&with_descriptors(
        r#""edge": [
            {"key": "path", "value": "/api/admin", "limit": "1/second"},
            {"key": "path", "value": "/api/*", "limit": "2/second"},
            {"key": "path", "value": "/api/orders/*", "limit": "3/second"},
            {"key": "path", "limit": "4/second"},
            {"key": "tenant", "descriptors": [
                {"key": "user", "value": "bot", "unlimited": true},
                {"key": "user", "limits": ["5/second", "100/hour"], "algorithm": "sliding_window"}
            ]}
        ]"#,
    ));
    let id = |entries: &[(&str, &str)]| {
        rules
            .descriptor("edge", entries.iter().copied())
            .map(|found| found.rule.id().to_owned())
    };
    assert_eq!(
        id(&[("path", "/api/admin")]).as_deref(),
        Some("@edge/path=%2Fapi%2Fadmin")
    );
    assert_eq!(
        id(&[("path", "/api/x")]).as_deref(),
        Some("@edge/path=%2Fapi%2F*")
    );
    // The longest wildcard wins.
    assert_eq!(
        id(&[("path", "/api/orders/7")]).as_deref(),
        Some("@edge/path=%2Fapi%2Forders%2F*")
    );
    assert_eq!(id(&[("path", "/else")]).as_deref(), Some("@edge/path"));
    // A node without a limit, a descriptor longer than the tree, an unknown key: no rule.
    assert_eq!(id(&[("tenant", "a")]), None);
    assert_eq!(id(&[("path", "/else"), ("user", "x")]), None);
    assert_eq!(id(&[("user", "x")]), None);
    assert_eq!(id(&[]), None);
    assert_eq!(
        id(&[("tenant", "a"), ("user", "alice")]).as_deref(),
        Some("@edge/tenant/user")
    );
    let bot = rules
        .descriptor("edge", [("tenant", "a"), ("user", "bot")])
        .unwrap();
    assert!(bot.rule.limit().is_none());
    let alice = rules
        .descriptor("edge", [("tenant", "a"), ("user", "alice")])
        .unwrap();
    let limit = alice.rule.limit().unwrap();
    assert_eq!(limit.algorithm(), Algorithm::SlidingWindow);
    assert_eq!(limit.bands().len(), 2);
    assert_eq!(alice.rule.domain(), Some("edge"));
    assert_eq!(alice.client.to_string(), "id:a/alice");
    // Values with the separator stay apart.
    let split = rules
        .descriptor("edge", [("tenant", "a/b"), ("user", "c")])
        .unwrap();
    let other = rules
        .descriptor("edge", [("tenant", "a"), ("user", "b/c")])
        .unwrap();
    assert_ne!(split.client, other.client);
    // Descriptor rules are not routes.
    assert_eq!(rules.lookup(&Method::GET, "/api/admin").id(), "default");
}

#[test]
fn descriptor_names_and_replaces() {
    let rules = ok(&with_descriptors(
        r#""d": [
            {"key": "a", "limit": "10/minute", "name": "wide"},
            {"key": "b", "limit": "5/minute", "replaces": ["wide"], "shadow": true}
        ]"#,
    ));
    let b = rules.descriptor("d", [("b", "1")]).unwrap().rule;
    assert_eq!(b.replaces().collect::<Vec<_>>(), ["wide"]);
    assert!(b.limit().unwrap().shadow());
    assert_eq!(
        rules.descriptor("d", [("a", "1")]).unwrap().rule.name(),
        Some("wide")
    );
    assert!(rules.find("@d/a").is_some());
}

#[test]
fn descriptor_errors_name_the_place() {
    for (domains, expected) in [
        (
            r#""d": [{"key": "", "limit": "1/second"}]"#,
            "<inline>: at descriptors.d[0].key: a descriptor key must not be empty",
        ),
        (
            r#""d": [{"key": "k", "value": "", "limit": "1/second"}]"#,
            "<inline>: at descriptors.d[0].value: an empty value matches nothing; leave `value` out to match any value of the key",
        ),
        (
            r#""d": [{"key": "k", "limit": "1/second"}, {"key": "k", "limit": "2/second"}]"#,
            "<inline>: at descriptors.d[1]: key \"k\" without a value duplicates descriptors.d[0]",
        ),
        (
            r#""d": [{"key": "k", "descriptors": [{"key": "v", "value": "1", "limit": "1/second"}, {"key": "v", "value": "1", "unlimited": true}]}]"#,
            "<inline>: at descriptors.d[0].descriptors[1]: key \"v\" with value \"1\" duplicates descriptors.d[0].descriptors[0]",
        ),
        (
            r#""d": [{"key": "k", "limit": "1/week"}]"#,
            "<inline>: at descriptors.d[0].limit: limit must look like",
        ),
        (
            r#""d": [{"key": "k", "cost": 2}]"#,
            "<inline>: at descriptors.d[0]: a rule needs exactly one of",
        ),
        (
            r#""d": [{"key": "k", "name": "n"}]"#,
            "<inline>: at descriptors.d[0].name: `name` names a limit, and this descriptor has none",
        ),
        (
            r#""d": [{"key": "k", "limit": "1/second", "replaces": ["nope"]}]"#,
            "<inline>: at descriptors.d[0].replaces: it replaces \"nope\", but no descriptor of domain \"d\" has that name",
        ),
        (
            r#""d": [{"key": "k", "limit": "1/second", "name": "n"}, {"key": "j", "limit": "1/second", "name": "n"}]"#,
            "<inline>: at descriptors.d[1].name: the name \"n\" is already given at descriptors.d[0]",
        ),
        (
            r#""d": [{"key": "k", "path": "/x", "limit": "1/second"}]"#,
            "<inline>: at descriptors.d[0].path (line 1, column 89): unknown field `path`",
        ),
        (
            r#""": [{"key": "k", "limit": "1/second"}]"#,
            "<inline>: at descriptors: a domain must not be empty",
        ),
    ] {
        let message = err(&with_descriptors(domains));
        assert!(
            message.starts_with(expected),
            "for {domains}\n got: {message}\nwant: {expected}"
        );
    }
}

#[test]
fn global_shadow_applies_to_descriptor_rules() {
    let rules = ok(&format!(
        r#"{{{DEFAULT}, "shadow": true, "descriptors": {{"d": [{{"key": "k", "limit": "1/second"}}]}}}}"#
    ));
    assert!(
        rules
            .descriptor("d", [("k", "v")])
            .unwrap()
            .rule
            .limit()
            .unwrap()
            .shadow()
    );
}

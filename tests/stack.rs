//! The compose stack: its files checked structurally, and its topology run without Docker.
//!
//! CI has no Docker engine, so `docker-compose.yml`, the `Dockerfile` and the nginx template
//! are read and checked against each other and against the demo, and then the same topology
//! runs from local processes: a private `redis-server`, two demo processes sharing it, and
//! Debian's nginx serving the very template the compose stack mounts.
//!
//! Needs `python3` with PyYAML (to read the compose file), `redis-server` and `nginx`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

const APPS: [&str; 2] = ["app1", "app2"];
const TEMPLATE: &str = "deploy/nginx/default.conf.template";
/// The main nginx.conf that serves [`TEMPLATE`] outside the official image.
const LOCAL_MAIN_CONF: &str = "deploy/local/nginx.conf.template";

// ---------------------------------------------------------------------------------------
// The files, structurally.
// ---------------------------------------------------------------------------------------

/// `docker-compose.yml` as JSON, read by PyYAML (the project has no YAML crate).
fn compose() -> Value {
    let file = std::fs::read(repo_file("docker-compose.yml")).expect("docker-compose.yml");
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 (with PyYAML) reads docker-compose.yml for this test: {e}")
        });
    child.stdin.take().unwrap().write_all(&file).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'yaml'"),
        "PyYAML is missing: pip install pyyaml (Debian: apt-get install python3-yaml)"
    );
    assert!(
        output.status.success(),
        "docker-compose.yml is not valid YAML:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("PyYAML's JSON")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A service's `environment`, in either of its two forms.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

/// A service's bind mounts, short (`src:dst[:ro]`) or long form.
fn mounts(service: &Value) -> Vec<Mount> {
    let Some(volumes) = service["volumes"].as_array() else {
        return Vec::new();
    };
    volumes
        .iter()
        .map(|volume| match volume {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                assert!(parts.len() >= 2, "volume {short:?}: expected source:target");
                Mount {
                    source: parts[0].to_owned(),
                    target: parts[1].to_owned(),
                    read_only: parts
                        .get(2)
                        .is_some_and(|mode| mode.split(',').any(|m| m == "ro")),
                }
            }
            long => Mount {
                source: scalar(&long["source"]),
                target: scalar(&long["target"]),
                read_only: long["read_only"].as_bool() == Some(true),
            },
        })
        .collect()
}

fn host_path(source: &str) -> PathBuf {
    std::fs::canonicalize(repo_file(source))
        .unwrap_or_else(|e| panic!("mount source {source:?} does not exist: {e}"))
}

/// A `depends_on` entry's condition (the short list form means `service_started`).
fn dependency(service: &Value, on: &str) -> Option<String> {
    match &service["depends_on"] {
        Value::Array(names) => names
            .iter()
            .any(|n| n == on)
            .then(|| "service_started".to_owned()),
        Value::Object(map) => map.get(on).map(|d| scalar(&d["condition"])),
        _ => None,
    }
}

/// One Dockerfile instruction: its keyword (upper case) and its arguments.
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's stages, each a list of instructions (continuations joined, comments
/// dropped).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// The `ENV` of the image's final stage (`KEY=VALUE` pairs, unquoted).
fn image_environment(runtime: &[Instruction]) -> BTreeMap<String, String> {
    args_of(runtime, "ENV")
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {pair:?}: write ENV KEY=VALUE"));
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// The command of a `HEALTHCHECK ... CMD ["a", "b"]`.
fn image_healthcheck(runtime: &[Instruction]) -> Option<Vec<String>> {
    let args = args_of(runtime, "HEALTHCHECK").pop()?;
    let (_, command) = args.split_once("CMD")?;
    serde_json::from_str(command.trim()).ok()
}

/// A compose `healthcheck.test` as the command it runs (`CMD` or `CMD-SHELL` stripped).
fn compose_healthcheck(service: &Value) -> Option<Vec<String>> {
    let check = service.get("healthcheck")?;
    if check["disable"].as_bool() == Some(true) {
        return None;
    }
    match &check["test"] {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            match items.first().map(String::as_str) {
                Some("CMD") => Some(items[1..].to_vec()),
                Some("CMD-SHELL") => Some(
                    items[1..]
                        .join(" ")
                        .split_whitespace()
                        .map(String::from)
                        .collect(),
                ),
                _ => None,
            }
        }
        Value::String(shell) => Some(shell.split_whitespace().map(String::from).collect()),
        _ => None,
    }
}

/// What an app container gets: the image's `ENV`, overridden by the compose environment.
fn app_environment(compose: &Value, app: &str) -> BTreeMap<String, String> {
    let stages = dockerfile_stages();
    let mut env = image_environment(stages.last().unwrap());
    env.extend(environment(service(compose, app)));
    env
}

#[test]
fn compose_has_the_four_services_and_only_nginx_is_reachable() {
    let compose = compose();
    assert!(
        compose.get("version").is_none(),
        "compose v2 files need no top-level `version`"
    );
    for name in ["redis", "app1", "app2", "nginx"] {
        service(&compose, name);
    }
    assert!(
        scalar(&service(&compose, "redis")["image"]).starts_with("redis:"),
        "redis runs the official image"
    );
    assert!(
        scalar(&service(&compose, "nginx")["image"]).starts_with("nginx"),
        "nginx runs the official image"
    );

    let services = compose["services"].as_object().unwrap();
    let publishing: Vec<&String> = services
        .iter()
        .filter(|(_, s)| {
            s.get("ports")
                .is_some_and(|p| p.as_array().is_none_or(|p| !p.is_empty()))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        publishing,
        ["nginx"],
        "only nginx may publish a port: the apps trust one proxy hop, so a client reaching \
         them directly could choose its own key"
    );

    // nginx listens where its published port points.
    let nginx = service(&compose, "nginx");
    let ports = nginx["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let container_port = match &ports[0] {
        Value::String(short) => short
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/tcp")
            .to_owned(),
        long => scalar(&long["target"]),
    };
    assert_eq!(
        environment(nginx).get("NGINX_PORT"),
        Some(&container_port),
        "NGINX_PORT is what nginx listens on, so it must be the published container port"
    );
}

/// How many replicas share the limits, as the apps are told it: the shipped rules file's
/// `local_fallback_instances` if it has one, else `LOCAL_FALLBACK_INSTANCES`.
fn fallback_instances(env: &BTreeMap<String, String>) -> u32 {
    let shipped = tollgate::Rules::from_file(repo_file("rate_limits.json")).unwrap();
    shipped.local_fallback_instances().unwrap_or_else(|| {
        env.get("LOCAL_FALLBACK_INSTANCES").map_or(1, |n| {
            n.parse().expect("LOCAL_FALLBACK_INSTANCES is a number")
        })
    })
}

/// With Redis gone, each replica decides alone with its share of every limit: the number
/// of replicas the stack runs, in the compose file and in the script without Docker.
#[test]
fn the_apps_know_how_many_replicas_share_the_limits() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let replicas: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some_and(|b| scalar(b) == "."))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(replicas, APPS, "the replicas built from the Dockerfile");
    for app in APPS {
        let env = app_environment(&compose, app);
        assert_eq!(
            fallback_instances(&env),
            APPS.len() as u32,
            "{app}: with Redis down, {} replicas deciding alone must each take 1/{} of a limit",
            APPS.len(),
            APPS.len()
        );
    }
    let script = std::fs::read_to_string(repo_file("scripts/stack-without-docker.sh")).unwrap();
    assert!(
        script.contains(&format!("LOCAL_FALLBACK_INSTANCES={}", APPS.len())),
        "scripts/stack-without-docker.sh must tell its {} replicas how many they are",
        APPS.len()
    );
}

#[test]
fn compose_apps_share_redis_trust_one_hop_and_follow_the_mounted_rules() {
    let compose = compose();
    let nginx_env = environment(service(&compose, "nginx"));
    for (app, address_var) in APPS.iter().zip(["APP1_ADDR", "APP2_ADDR"]) {
        let app_service = service(&compose, app);
        let env = app_environment(&compose, app);
        let get = |name: &str| {
            env.get(name)
                .unwrap_or_else(|| panic!("{app}: {name} is not set"))
                .as_str()
        };

        assert_eq!(
            scalar(&app_service["build"]),
            ".",
            "{app}: built from the top-level Dockerfile"
        );
        assert_eq!(
            get("REDIS_URL"),
            "redis://redis:6379",
            "{app}: the shared Redis"
        );
        assert_eq!(
            dependency(app_service, "redis").as_deref(),
            Some("service_healthy"),
            "{app}: starts once Redis answers"
        );
        assert!(
            env.get("TRUSTED_PROXY_HOPS").map(String::as_str) == Some("1")
                || env.get("TRUSTED_PROXIES").is_some_and(|p| !p.is_empty()),
            "{app}: must trust exactly nginx (TRUSTED_PROXY_HOPS=1 or TRUSTED_PROXIES)"
        );
        // nginx reaches the apps from the compose network, in the default trusted peers;
        // trusting every peer would let anything that reaches an app choose its key.
        assert_ne!(
            env.get("TRUSTED_PROXIES").map(|p| p.trim()),
            Some("*"),
            "{app}: trust nginx, not every peer"
        );
        assert_eq!(
            get("HOST"),
            "0.0.0.0",
            "{app}: must listen on the compose network"
        );

        // nginx reaches this app at the port it listens on.
        let (host, port) = nginx_env
            .get(address_var)
            .and_then(|a| a.split_once(':'))
            .unwrap_or_else(|| panic!("nginx: {address_var} must be {app}:PORT"));
        assert_eq!((host, port), (*app, get("PORT")), "nginx's {address_var}");

        // RATE_LIMIT_RULES_PATH is the repository's rules file, through a directory mount.
        let rules_path = get("RATE_LIMIT_RULES_PATH");
        let mounts = mounts(app_service);
        let mount = mounts
            .iter()
            .find(|m| {
                rules_path
                    .strip_prefix(m.target.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .unwrap_or_else(|| {
                panic!("{app}: RATE_LIMIT_RULES_PATH={rules_path} is under no mount")
            });
        let inside = rules_path[mount.target.len()..].trim_start_matches('/');
        let source = host_path(&mount.source);
        assert!(
            source.is_dir(),
            "{app}: mount the rules file's directory, not the file: the layer watches the \
             directory, and a single-file bind mount delivers no change event there (nor \
             shows a file that an editor replaced)"
        );
        assert_eq!(
            std::fs::canonicalize(source.join(inside)).ok(),
            std::fs::canonicalize(repo_file("rate_limits.json")).ok(),
            "{app}: RATE_LIMIT_RULES_PATH={rules_path} must be the repository's rate_limits.json"
        );
        assert!(
            mount.read_only,
            "{app}: the apps only read the rules: mount them :ro"
        );
    }
}

#[test]
fn compose_every_service_has_a_health_check_and_starts_in_order() {
    let compose = compose();
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();

    let redis = compose_healthcheck(service(&compose, "redis")).expect("redis: healthcheck");
    assert_eq!(redis, ["redis-cli", "ping"]);

    for app in APPS {
        // The compose healthcheck wins; without one the image's HEALTHCHECK applies.
        let check = compose_healthcheck(service(&compose, app))
            .or_else(|| image_healthcheck(runtime))
            .unwrap_or_else(|| panic!("{app}: no health check in compose nor the Dockerfile"));
        assert_eq!(
            check,
            ["demo", "healthcheck"],
            "{app}: the demo probes itself"
        );
    }

    let nginx = service(&compose, "nginx");
    let check = compose_healthcheck(nginx)
        .expect("nginx: healthcheck")
        .join(" ");
    let port = environment(nginx)["NGINX_PORT"].clone();
    assert!(
        check.contains(&format!("127.0.0.1:{port}/nginx-health")),
        "nginx: health check must ask its own /nginx-health on port {port}: {check}"
    );
    for app in APPS {
        assert_eq!(
            dependency(nginx, app).as_deref(),
            Some("service_healthy"),
            "nginx: starts once {app} is healthy"
        );
    }
}

#[test]
fn dockerfile_builds_the_demo_and_runs_it_unprivileged() {
    let stages = dockerfile_stages();
    assert!(
        stages.len() >= 2,
        "a multi-stage build: builder, then runtime"
    );
    let (runtime, builders) = stages.split_last().unwrap();

    let builds_demo = builders
        .iter()
        .flat_map(|stage| args_of(stage, "RUN"))
        .any(|run| {
            run.contains("cargo build")
                && run.contains("--release")
                && run.contains("--example demo")
                && run.contains("--locked")
        });
    assert!(
        builds_demo,
        "a builder stage runs cargo build --release --example demo --locked"
    );

    let from = args_of(runtime, "FROM").pop().unwrap();
    assert!(
        from.starts_with("debian:") || from.contains("distroless"),
        "a small runtime image, got {from}"
    );
    let copies = args_of(runtime, "COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with("/demo")),
        "the runtime stage copies the demo binary from the builder: {copies:?}"
    );
    assert!(
        copies.iter().any(|c| c.starts_with("rate_limits.json ")),
        "the runtime stage ships rate_limits.json: {copies:?}"
    );

    let user = args_of(runtime, "USER")
        .pop()
        .expect("the runtime stage sets a USER");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the demo must not run as root: USER {user}"
    );

    let env = image_environment(runtime);
    let exposed: Vec<&str> = args_of(runtime, "EXPOSE")
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_end_matches("/tcp"))
        .collect();
    assert_eq!(exposed, [env["PORT"].as_str()], "EXPOSE matches PORT");
    assert_eq!(env["HOST"], "0.0.0.0", "reachable from other containers");
    assert_eq!(
        image_healthcheck(runtime).as_deref(),
        Some(&["demo".to_owned(), "healthcheck".to_owned()][..]),
        "HEALTHCHECK CMD [\"demo\", \"healthcheck\"]"
    );
}

/// Every variable the stack sets on the apps is one the demo reads, and the demo's
/// essential settings are all set.
#[test]
fn app_environment_is_what_the_demo_reads() {
    let compose = compose();
    let demo = std::fs::read_to_string(repo_file("examples/demo.rs")).unwrap();
    let code: String = demo
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let reads = |name: &str| {
        code.contains(&format!("\"{name}\""))
            // tracing-subscriber's EnvFilter reads RUST_LOG itself.
            || (name == "RUST_LOG" && code.contains("EnvFilter::try_from_default_env"))
    };
    for app in APPS {
        let env = app_environment(&compose, app);
        for name in env.keys() {
            assert!(
                reads(name),
                "{app} sets {name}, which examples/demo.rs never reads"
            );
        }
        for name in ["REDIS_URL", "RATE_LIMIT_RULES_PATH", "HOST", "PORT"] {
            assert!(reads(name), "examples/demo.rs no longer reads {name}");
            assert!(env.contains_key(name), "{app} does not set {name}");
        }
        let trust = ["TRUSTED_PROXY_HOPS", "TRUSTED_PROXIES"];
        assert!(
            trust.iter().all(|name| reads(name)),
            "examples/demo.rs no longer reads {trust:?}"
        );
        assert!(
            trust.iter().any(|name| env.contains_key(*name)),
            "{app} says whom to trust with neither of {trust:?}"
        );
    }
}

/// `$NAME` and `${NAME}` references in an nginx template, with their byte ranges: what
/// envsubst would look at.
fn references(template: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = template.as_bytes();
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_part = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let braced = bytes.get(i + 1) == Some(&b'{');
        let start = i + 1 + usize::from(braced);
        let mut end = start;
        if bytes.get(start).copied().is_some_and(is_start) {
            end += 1;
            while bytes.get(end).copied().is_some_and(is_part) {
                end += 1;
            }
        }
        let closed = !braced || bytes.get(end) == Some(&b'}');
        if end > start && closed {
            let stop = end + usize::from(braced);
            found.push((i..stop, &template[start..end]));
            i = stop;
        } else {
            i += 1;
        }
    }
    found
}

/// Renders a template as the official nginx image does: envsubst over the variables that
/// are set, leaving every other `$name` (nginx's own variables) as it is.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut copied = 0;
    for (range, name) in references(template) {
        if let Some((_, value)) = vars.iter().find(|(var, _)| *var == name) {
            out.push_str(&template[copied..range.start]);
            out.push_str(value);
            copied = range.end;
        }
    }
    out.push_str(&template[copied..]);
    out
}

/// The environment-style (upper case) variables a template uses.
fn template_variables(template: &str) -> BTreeSet<&str> {
    references(template)
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| name.bytes().any(|b| b.is_ascii_uppercase()))
        .collect()
}

#[test]
fn nginx_template_uses_exactly_the_variables_compose_sets() {
    let template = std::fs::read_to_string(repo_file(TEMPLATE)).unwrap();
    let used = template_variables(&template);
    assert_eq!(
        used,
        BTreeSet::from(["APP1_ADDR", "APP2_ADDR", "NGINX_PORT"]),
        "the template's variables"
    );
    let compose = compose();
    let nginx = service(&compose, "nginx");
    // The template the topology tests render is the one the image renders.
    let templates = mounts(nginx)
        .into_iter()
        .find(|m| m.target == "/etc/nginx/templates")
        .expect("nginx: deploy/nginx mounted at /etc/nginx/templates");
    assert_eq!(host_path(&templates.source), host_path("deploy/nginx"));
    assert_eq!(
        Path::new(TEMPLATE).file_name().unwrap(),
        "default.conf.template",
        "rendered as conf.d/default.conf, replacing the image's own default server"
    );
    let nginx_env = environment(nginx);
    for name in &used {
        assert!(
            nginx_env.contains_key(*name),
            "the template uses ${{{name}}}, which compose does not set on nginx: it would \
             stay in the rendered config"
        );
    }
    // nginx writes the entry the apps trust: appended to the client's list, or alone.
    assert!(
        [
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
        ]
        .iter()
        .any(|line| template.contains(line)),
        "{TEMPLATE} must set X-Forwarded-For from the address nginx saw"
    );
    // nginx, not the client, says who the client is: X-Client-ID comes from nginx's map of
    // API keys, which replaces whatever the client sent.
    let client_name = template
        .lines()
        .find_map(|line| line.trim().strip_prefix("map $http_x_api_key $"))
        .map(|rest| rest.trim_end_matches('{').trim())
        .unwrap_or_else(|| panic!("{TEMPLATE} must map X-API-Key to a client name"));
    assert!(
        template.contains(&format!("proxy_set_header X-Client-ID ${client_name};")),
        "{TEMPLATE} must set X-Client-ID from ${client_name}, never pass the client's through"
    );
    for needed in [
        "add_header X-Upstream $upstream_addr always;",
        "location = /nginx-health",
    ] {
        assert!(template.contains(needed), "{TEMPLATE} lacks `{needed}`");
    }

    // The renderer leaves nginx's variables alone, as envsubst with a variable list does.
    assert_eq!(
        render(
            "listen ${NGINX_PORT}; $host ${host} $NGINX_PORTS $NGINX_PORT",
            &[("NGINX_PORT", "80")]
        ),
        "listen 80; $host ${host} $NGINX_PORTS 80"
    );
}

// ---------------------------------------------------------------------------------------
// The topology, without Docker.
// ---------------------------------------------------------------------------------------

/// Small limits so the tests reach them quickly; refills too slow to matter during a test.
const RULES: &str = r#"{
    "default": {"capacity": 5, "refill_rate": 0.001},
    "routes": [
        {"path": "/api/data", "capacity": 6, "refill_rate": 0.001},
        {"path": "/health", "unlimited": true}
    ],
    "clients": {"id:internal-batch": {"capacity": 50, "refill_rate": 0.001}},
    "on_redis_error": "deny"
}"#;

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .expect(
            "nginx is needed by this test but was not found: install nginx: apt-get install nginx",
        )
}

/// nginx in the foreground, serving the rendered template from a temporary prefix; killed
/// when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(apps: [&str; 2]) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(apps, free_port()) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn try_start(apps: [&str; 2], port: u16) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path();
        let template = std::fs::read_to_string(repo_file(TEMPLATE)).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let rendered = render(
            &template,
            &[
                ("NGINX_PORT", &listen),
                ("APP1_ADDR", apps[0]),
                ("APP2_ADDR", apps[1]),
            ],
        );
        std::fs::create_dir(prefix.join("conf.d")).unwrap();
        std::fs::write(prefix.join("conf.d/default.conf"), rendered).unwrap();
        let main = std::fs::read_to_string(repo_file(LOCAL_MAIN_CONF)).unwrap();
        let prefix_text = prefix.to_str().expect("a UTF-8 temporary path");
        let main = render(&main, &[("PREFIX", prefix_text)]);
        std::fs::write(prefix.join("nginx.conf"), main).unwrap();
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nginx: {e}"))?;
        let log = || std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("nginx exited with {status}:\n{}", log()));
            }
            if nginx_answers(port) {
                return Ok(Self {
                    child,
                    port,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nginx not listening after 10 s:\n{}", log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether nginx itself, not some other process that took the port, answers on `port`.
fn nginx_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = String::new();
    stream
        .write_all(b"GET /nginx-health HTTP/1.0\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
        && reply.contains("Server: nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compose topology from local processes. Fields drop in order: nginx, the apps, Redis.
struct Stack {
    nginx: Nginx,
    apps: [Demo; 2],
    redis: TestRedis,
    _rules: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        Self::start_with(RULES, &[])
    }

    /// The stack with these rules, and these variables for the apps too.
    fn start_with(rules_json: &str, env: &[(&str, &str)]) -> Self {
        let redis = TestRedis::start();
        let rules = tempfile::tempdir().unwrap();
        let rules_file = rules.path().join("rate_limits.json");
        std::fs::write(&rules_file, rules_json).unwrap();
        let rules_path = rules_file.to_str().unwrap();
        let app = || {
            let mut vars = vec![
                ("REDIS_URL", redis.url()),
                ("PORT", "0"),
                ("TRUSTED_PROXY_HOPS", "1"),
                ("RATE_LIMIT_RULES_PATH", rules_path),
            ];
            vars.extend_from_slice(env);
            start_demo(&vars)
        };
        let apps = [app(), app()];
        let nginx = Nginx::start([apps[0].address.as_str(), apps[1].address.as_str()]);
        Self {
            nginx,
            apps,
            redis,
            _rules: rules,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nginx.port)
    }

    fn app_addresses(&self) -> BTreeSet<String> {
        self.apps.iter().map(|a| a.address.clone()).collect()
    }

    fn redis_keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.redis.client())
            .unwrap()
    }

    /// The shared Redis holds a key for each client in `present`, and none that contains
    /// anything in `absent` (what a client wrote).
    fn assert_keys(&self, present: &[&str], absent: &[&str]) {
        let keys = self.redis_keys();
        for client in present {
            assert!(
                keys.iter().any(|k| k.contains(client)),
                "{client}: {keys:?}"
            );
        }
        for written in absent {
            assert!(
                !keys.iter().any(|k| k.contains(written)),
                "{written}, which a client wrote, became a key: {keys:?}"
            );
        }
    }
}

/// An HTTP client whose connections come from `source` (any 127.0.0.0/8 address is this
/// machine on Linux), so nginx sees different client addresses.
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    client_from(Ipv4Addr::LOCALHOST)
}

/// Status, `X-RateLimit-Remaining` and `X-Upstream` of one response.
struct Seen {
    status: StatusCode,
    remaining: Option<u32>,
    upstream: String,
}

async fn get(request: reqwest::RequestBuilder) -> Seen {
    let response = request.send().await.expect("a response through nginx");
    Seen {
        status: response.status(),
        remaining: reqwest_header(&response, "x-ratelimit-remaining").map(|v| v.parse().unwrap()),
        upstream: reqwest_header(&response, "x-upstream").expect("nginx adds X-Upstream"),
    }
}

#[tokio::test]
async fn one_limit_holds_across_both_replicas() {
    let stack = Stack::start();
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let request = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice");
        seen.push(get(request).await);
    }

    let statuses: Vec<u16> = seen.iter().map(|s| s.status.as_u16()).collect();
    let mut expected = vec![200; 6];
    expected.extend([429; 14]);
    assert_eq!(
        statuses, expected,
        "capacity 6 in total, whichever replica answers"
    );
    let remaining: Vec<Option<u32>> = seen.iter().map(|s| s.remaining).collect();
    let mut expected: Vec<Option<u32>> = (0..6).rev().map(Some).collect();
    expected.extend([Some(0); 14]);
    assert_eq!(
        remaining, expected,
        "one token per request, across replicas"
    );

    // Round robin: both replicas served, and both refused, so neither kept a bucket of its own.
    let answered: BTreeSet<String> = seen.iter().map(|s| s.upstream.clone()).collect();
    let refused: BTreeSet<String> = seen
        .iter()
        .filter(|s| s.status == StatusCode::TOO_MANY_REQUESTS)
        .map(|s| s.upstream.clone())
        .collect();
    assert_eq!(answered, stack.app_addresses(), "both replicas answered");
    assert_eq!(refused, stack.app_addresses(), "both replicas refused");

    let keys: Vec<String> = stack
        .redis_keys()
        .into_iter()
        .filter(|k| k.contains("id:alice"))
        .collect();
    assert_eq!(keys.len(), 1, "one bucket in the shared Redis: {keys:?}");
}

/// The shipped rules and the compose file's replica count: with Redis killed, the two
/// replicas together admit about one limit's worth (10 on `/api/data`, 5 each), not two.
#[tokio::test]
async fn with_redis_gone_the_replicas_share_one_limit() {
    let compose = compose();
    let instances = app_environment(&compose, APPS[0])
        .get("LOCAL_FALLBACK_INSTANCES")
        .cloned()
        .expect("compose tells the apps how many replicas there are");
    let shipped = std::fs::read_to_string(repo_file("rate_limits.json")).unwrap();
    let mut stack = Stack::start_with(&shipped, &[("LOCAL_FALLBACK_INSTANCES", &instances)]);
    stack.redis.kill();
    let http = client();
    let mut admitted = 0;
    for _ in 0..30 {
        let request = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice");
        let response = request.send().await.expect("a response through nginx");
        assert_eq!(
            reqwest_header(&response, "x-ratelimit-limit").as_deref(),
            Some("5"),
            "the local fallback decides, with half of the burst of 10"
        );
        if response.status() == StatusCode::OK {
            admitted += 1;
        }
    }
    // 5 per replica, and a token or so each refilled (1/s, halved) while the test ran.
    assert!(
        (10..=13).contains(&admitted),
        "{admitted} admitted across both replicas with Redis gone"
    );
}

#[tokio::test]
async fn clients_are_keyed_by_the_address_nginx_saw() {
    let stack = Stack::start();
    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let data = stack.url("/api/data");

    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(get(first.get(&data)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);

    // What the client writes in X-Forwarded-For stays left of the entry nginx appends, and
    // the apps read only that one: spoofing through the proxy gets the same bucket.
    for spoofed in ["1.2.3.4", "127.0.0.2", "1.2.3.4, 5.6.7.8"] {
        let seen = get(first.get(&data).header("x-forwarded-for", spoofed)).await;
        assert_eq!(
            (seen.status, seen.remaining),
            (StatusCode::TOO_MANY_REQUESTS, Some(0)),
            "X-Forwarded-For: {spoofed} must not reach another bucket"
        );
    }

    // Another address, as nginx sees it, is another client.
    let other = get(second.get(&data)).await;
    assert_eq!((other.status, other.remaining), (StatusCode::OK, Some(5)));

    stack.assert_keys(&["ip:127.0.0.1", "ip:127.0.0.2"], &["1.2.3.4", "5.6.7.8"]);
}

/// The gateway pattern: nginx replaces whatever X-Client-ID a client sends with the name
/// its map gives the client's X-API-Key, or with nothing.
#[tokio::test]
async fn nginx_names_clients_by_api_key_and_drops_their_own_ids() {
    let stack = Stack::start();
    let http = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let data = stack.url("/api/data");

    // A client's own X-Client-ID never reaches the apps: fresh values on every request all
    // draw from the bucket of its address.
    let mut statuses = Vec::new();
    for n in 0..7 {
        let forged = format!("forged-{n}");
        let seen = get(http.get(&data).header("x-client-id", forged)).await;
        statuses.push(seen.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
    // Nor does the name of a client with an override, nor an unknown key.
    for (name, value) in [("x-client-id", "internal-batch"), ("x-api-key", "nope")] {
        let seen = get(http.get(&data).header(name, value)).await;
        assert_eq!(
            (seen.status, seen.remaining),
            (StatusCode::TOO_MANY_REQUESTS, Some(0)),
            "{name}: {value} must not leave the address's bucket"
        );
    }

    // A known key is the client's own bucket, whatever X-Client-ID it sends beside it.
    let alice = get(http
        .get(&data)
        .header("x-api-key", "demo-key-alice")
        .header("x-client-id", "bob"))
    .await;
    assert_eq!((alice.status, alice.remaining), (StatusCode::OK, Some(5)));
    // And the gateway alone can give a client its override (capacity 50).
    let batch = get(http.get(&data).header("x-api-key", "demo-key-batch")).await;
    assert_eq!((batch.status, batch.remaining), (StatusCode::OK, Some(49)));

    stack.assert_keys(
        &["ip:127.0.0.3", "id:alice", "id:internal-batch"],
        &["forged", "id:bob"],
    );
}

#[tokio::test]
async fn health_passes_through_nginx_unlimited() {
    let stack = Stack::start();
    let http = client();
    let mut upstreams = BTreeSet::new();
    // More than the default capacity of 5: /health is unlimited.
    for _ in 0..10 {
        let response = http.get(stack.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert_eq!(
                reqwest_header(&response, name),
                None,
                "/health carries no {name}"
            );
        }
        upstreams.insert(reqwest_header(&response, "x-upstream").expect("proxied"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }
    assert_eq!(upstreams, stack.app_addresses());

    let own = http.get(stack.url("/nginx-health")).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(
        reqwest_header(&own, "x-upstream"),
        None,
        "answered by nginx itself"
    );
    assert_eq!(own.text().await.unwrap(), "ok\n");
}

// ---------------------------------------------------------------------------------------
// `demo healthcheck`, the probe the image's HEALTHCHECK runs.
// ---------------------------------------------------------------------------------------

/// Runs `demo healthcheck` against `port`: its exit status, stderr and how long it took.
fn healthcheck(port: u16) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(demo_binary())
        .arg("healthcheck")
        .env_clear()
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run demo healthcheck");
    let deadline = started + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo healthcheck still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, started.elapsed())
}

/// A one-connection server on a free port that answers `reply` (or nothing, holding the
/// connection open until the client leaves).
fn fake_server(reply: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.read(&mut request);
            match reply {
                Some(reply) => {
                    let _ = stream.write_all(reply.as_bytes());
                }
                // Wait for the client to give up and close.
                None => while matches!(stream.read(&mut request), Ok(n) if n > 0) {},
            }
        }
    });
    port
}

#[test]
fn demo_healthcheck_exits_0_only_for_a_healthy_demo() {
    let demo = start_demo(&[]);
    let port: u16 = demo.address.rsplit(':').next().unwrap().parse().unwrap();
    let (status, stderr, _) = healthcheck(port);
    assert_eq!(
        status.code(),
        Some(0),
        "a running demo is healthy: {stderr}"
    );

    let nothing = free_port();
    let (status, stderr, _) = healthcheck(nothing);
    assert_eq!(status.code(), Some(1), "nothing listening");
    assert!(stderr.contains("unhealthy: cannot connect"), "{stderr}");

    let failing = fake_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    ));
    let (status, stderr, _) = healthcheck(failing);
    assert_eq!(status.code(), Some(1), "a 503 is unhealthy");
    assert!(stderr.contains("answered 503"), "{stderr}");

    let silent = fake_server(None);
    let (status, stderr, took) = healthcheck(silent);
    assert_eq!(status.code(), Some(1), "no answer is unhealthy");
    assert!(stderr.contains("within 2 s"), "{stderr}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "gives up after its 2 s timeout, took {took:?}"
    );
}

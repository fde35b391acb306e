//! The deployment files read for tests: `docker-compose.yml` (through PyYAML: the project
//! has no YAML crate), the `Dockerfile`, and the nginx templates, with envsubst's rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::repo_file;

/// The replicas of the compose stack's app.
pub const APPS: [&str; 2] = ["app1", "app2"];
/// The compose stack's rate limit service (`tollgate serve`).
pub const SERVICE: &str = "tollgate";
/// Every process of the compose stack that decides on the shared limits.
pub const DECIDERS: [&str; 3] = ["app1", "app2", SERVICE];
/// The nginx template both the compose stack and the stack without Docker serve.
pub const TEMPLATE: &str = "deploy/nginx/default.conf.template";
/// The main nginx.conf that serves [`TEMPLATE`] outside the official image.
pub const LOCAL_MAIN_CONF: &str = "deploy/local/nginx.conf.template";

/// `docker-compose.yml` as JSON, read by PyYAML (the project has no YAML crate).
pub fn compose() -> Value {
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

pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A service's `environment`, in either of its two forms.
pub fn environment(service: &Value) -> BTreeMap<String, String> {
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

#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A service's bind mounts, short (`src:dst[:ro]`) or long form.
pub fn mounts(service: &Value) -> Vec<Mount> {
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

pub fn host_path(source: &str) -> PathBuf {
    std::fs::canonicalize(repo_file(source))
        .unwrap_or_else(|e| panic!("mount source {source:?} does not exist: {e}"))
}

/// A `depends_on` entry's condition (the short list form means `service_started`).
pub fn dependency(service: &Value, on: &str) -> Option<String> {
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
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// The Dockerfile's stages, each a list of instructions (continuations joined, comments
/// dropped).
pub fn dockerfile_stages() -> Vec<Vec<Instruction>> {
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

pub fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// The `ENV` of the image's final stage (`KEY=VALUE` pairs, unquoted).
pub fn image_environment(runtime: &[Instruction]) -> BTreeMap<String, String> {
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
pub fn image_healthcheck(runtime: &[Instruction]) -> Option<Vec<String>> {
    let args = args_of(runtime, "HEALTHCHECK").pop()?;
    let (_, command) = args.split_once("CMD")?;
    serde_json::from_str(command.trim()).ok()
}

/// A compose `healthcheck.test` as the command it runs (`CMD` or `CMD-SHELL` stripped).
pub fn compose_healthcheck(service: &Value) -> Option<Vec<String>> {
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

/// What a container built from the Dockerfile gets: the image's `ENV`, overridden by the
/// compose environment.
pub fn app_environment(compose: &Value, app: &str) -> BTreeMap<String, String> {
    let stages = dockerfile_stages();
    let mut env = image_environment(stages.last().unwrap());
    env.extend(environment(service(compose, app)));
    env
}

/// How many replicas share the limits, as the apps are told it: the shipped rules file's
/// `local_fallback_instances` if it has one, else `LOCAL_FALLBACK_INSTANCES`.
pub fn fallback_instances(env: &BTreeMap<String, String>) -> u32 {
    let shipped = tollgate::Rules::from_file(repo_file("rate_limits.json")).unwrap();
    shipped.local_fallback_instances().unwrap_or_else(|| {
        env.get("LOCAL_FALLBACK_INSTANCES").map_or(1, |n| {
            n.parse().expect("LOCAL_FALLBACK_INSTANCES is a number")
        })
    })
}

/// `$NAME` and `${NAME}` references in an nginx template, with their byte ranges: what
/// envsubst would look at.
pub fn references(template: &str) -> Vec<(std::ops::Range<usize>, &str)> {
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
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
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
pub fn template_variables(template: &str) -> BTreeSet<&str> {
    references(template)
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| name.bytes().any(|b| b.is_ascii_uppercase()))
        .collect()
}

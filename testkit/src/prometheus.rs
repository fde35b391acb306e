//! A scrape of `/metrics`, parsed by Prometheus's own Python parser (`prometheus_client`), as
//! a Prometheus server would read it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Every sample of a scrape, parsed by `prometheus_client`: `(name, labels, value)`; and
/// each metric family's `# HELP` text (empty without one).
pub struct Scrape(
    pub Vec<(String, serde_json::Map<String, Value>, f64)>,
    pub BTreeMap<String, String>,
);

impl Scrape {
    /// The sample named `name` whose labels include `labels`; 0 when absent (a counter
    /// not moved yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(v))
            })
            .map_or(0.0, |(_, _, value)| *value)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// Fails unless every metric family scraped has a `# HELP` description.
    pub fn assert_described(&self) {
        assert!(!self.1.is_empty(), "no metrics scraped");
        let undescribed: Vec<&String> = self
            .1
            .iter()
            .filter(|(_, help)| help.trim().is_empty())
            .map(|(family, _)| family)
            .collect();
        assert!(undescribed.is_empty(), "no # HELP for {undescribed:?}");
    }
}

/// Parses the Prometheus text format with Python's `prometheus_client` parser.
pub fn parse(text: &str) -> Scrape {
    const PARSER: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("MISSING", end="")
    sys.exit(3)
samples = []
help = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    help[family.name] = family.documentation
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps([samples, help]))
"#;
    // The first Python that has the module: `python3` on the PATH may be a pyenv one,
    // without Debian's packages.
    let mut missing = Vec::new();
    for python in ["python3", "/usr/bin/python3"] {
        let mut child = match Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                missing.push(format!("{python}: {error}"));
                continue;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout == "MISSING" {
            missing.push(format!("{python}: no prometheus_client"));
            continue;
        }
        assert!(
            output.status.success(),
            "prometheus_client could not parse /metrics: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (samples, help) = serde_json::from_str(&stdout).expect("the parser's JSON");
        return Scrape(samples, help);
    }
    panic!(
        "Python's prometheus_client parser reads /metrics in this test: \
         apt-get install python3-prometheus-client (or pip install prometheus-client); {}",
        missing.join("; ")
    );
}

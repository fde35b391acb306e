use super::*;

fn show(yaml: &str) -> String {
    match EnvoyDomain::from_yaml(yaml, "t.yaml") {
        Ok(d) => format!("OK {} {}", d.domain(), d.nodes()),
        Err(e) => format!("ERR {e}"),
    }
}

#[test]
fn probe() {
    for yaml in [
        "domain: a\ndescriptors:\n  - key: 123\n    value: 50.0.0.5\n",
        "domain: a\ndescriptors:\n  - key: k\n    value: [1]\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 5\n      bands: [{unit: x, requests_per_unit: -3}]\n",
        "domain: a\ndescriptors:\n  - key: k\n    valu: x\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: -1\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: abc\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 5\n      algorithm: leaky\n",
        "domain: a\ndescriptors:\n  - key: k\n    metadata:\n      a: [1, 2]\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5}\n    shadow_mode: yes\n",
        "domain: a\ndescriptors:\n  - key: k\n   bad: [\n",
        "domain: a\ndomain: b\n",
        "descriptors: []\n",
        "domain: a\ndescriptors:\n",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 5\n      replaces:\n        - nam: x\n",
        "a: &a [1,2]\nb: *a\n",
        "",
    ] {
        println!("{yaml:?}\n  => {}", show(yaml));
    }
}

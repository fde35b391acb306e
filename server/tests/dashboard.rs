//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real `tollgate serve` binary with an admin token. The page asks for the
//! token, shows traffic sent while it watches (totals from the admin API, the chart from
//! the event stream), edits a rule through the admin API, shows the API's validation error
//! for a bad one, and tries a key. A screenshot is saved as `dashboard.png` in cargo's target
//! directory (`target/`, or `CARGO_TARGET_DIR`), and as `docs/dashboard.png` with
//! `UPDATE_DASHBOARD_SCREENSHOT=1` (the README's picture).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A program on `PATH` (or at one of `also`), or a failure saying how to install it.
fn program(names: &[&str], also: &[&str]) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| also.iter().map(PathBuf::from).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "{} is needed by the dashboard test but was not found: install Chromium and its \
                 WebDriver: apt-get install chromium chromium-driver",
                names[0]
            )
        })
}

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(program(
            &["chromedriver"],
            &["/usr/lib/chromium/chromedriver"],
        ))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromedriver");
        Self { child, port }
    }

    /// A headless Chromium session, once chromedriver answers.
    async fn session(&self) -> Client {
        let chromium = program(&["chromium", "chromium-browser"], &["/usr/bin/chromium"]);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"]
            }),
        );
        let url = format!("http://127.0.0.1:{}", self.port);
        let started = Instant::now();
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => return client,
                Err(error) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no Chromium session from chromedriver: {error}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` in the page until it returns something `done` accepts, for at most 15 s.
async fn wait_for(
    client: &Client,
    what: &str,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or(Value::Null);
        if done(&value) {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the dashboard did not show {what} within 15 s; last seen: {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_and_edits_rules() {
    let token = "dashboard-test-token";
    let service = start_service(&[
        // Per hour: no token comes back while the test counts allowed and denied.
        ("DEFAULT_RATE_LIMIT", "5/hour"),
        ("TOLLGATE_ADMIN_TOKEN", token),
    ]);
    let base = format!("http://{}", service.address);
    watch_and_edit(&base, &base, token, "dashboard.png").await;
}

/// The same page through nginx (`deploy/gateways/nginx-service-proxy.conf.template`, which keeps
/// `Host`): its own requests count as its own origin's, and its event stream passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_behind_a_proxy_that_keeps_host() {
    let token = "dashboard-test-token";
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "5/hour"),
        ("TOLLGATE_ADMIN_TOKEN", token),
    ]);
    let proxy = Nginx::start(
        "deploy/gateways/nginx-service-proxy.conf.template",
        &[("TOLLGATE_ADDR", service.address.as_str())],
    );
    let page = format!("http://127.0.0.1:{}", proxy.port);
    let base = format!("http://{}", service.address);
    watch_and_edit(&page, &base, token, "dashboard-proxied.png").await;
}

/// Opens the dashboard at `page`, gives it `token`, sends traffic to the service at `base`,
/// and checks what the page shows and edits; saves a screenshot as `screenshot` in cargo's
/// target directory.
async fn watch_and_edit(page: &str, base: &str, token: &str, screenshot: &str) {
    let driver = Driver::start();
    let client = driver.session().await;
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        client.goto(&format!("{page}/dashboard")).await.unwrap();

        // The admin API needs the token: the page asks for it.
        wait_for(
            &client,
            "the token dialog",
            "return document.getElementById('token-dialog').open",
            |v| *v == json!(true),
        )
        .await;
        fill(&client, "token-input", token).await;
        click(&client, "#token-form button[value=ok]").await;
        wait_for(
            &client,
            "the live event stream",
            "return document.getElementById('connection').dataset.state",
            |v| *v == json!("live"),
        )
        .await;

        // Traffic while it watches, over a few seconds: 5 allowed, 15 denied.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for n in 0..20 {
            if n % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            http.get(format!("{base}/check/alice"))
                .send()
                .await
                .unwrap();
        }
        wait_for(
            &client,
            "20 requests in the totals",
            "return document.getElementById('total-requests').textContent",
            |v| *v == json!("20"),
        )
        .await;
        let denied = wait_for(
            &client,
            "the denied requests in the chart",
            "return Number(document.getElementById('chart').dataset.totalDenied)",
            |v| v.as_u64() == Some(15),
        )
        .await;
        assert_eq!(denied, json!(15));
        let limited = wait_for(
            &client,
            "alice among the most limited",
            "return document.querySelector('#limited tbody').textContent",
            |v| v.as_str().is_some_and(|t| t.contains("id:alice")),
        )
        .await;
        assert!(limited.as_str().unwrap().contains("15"), "{limited}");

        // A bad rule: the API's validation error, shown as it is.
        client
            .find(Locator::Id("rule-kind"))
            .await
            .unwrap()
            .select_by_value("client")
            .await
            .unwrap();
        fill(&client, "rule-client", "id:tester").await;
        fill(&client, "rule-json", r#"{"limit": "0/second"}"#).await;
        click(&client, "#rule-form button[type=submit]").await;
        wait_for(
            &client,
            "the validation error",
            "return document.getElementById('rule-error').textContent",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("limit must look like"))
            },
        )
        .await;

        // A good one: in the rules table, and enforced.
        fill(&client, "rule-json", r#"{"limit": "1/hour"}"#).await;
        click(&client, "#rule-form button[type=submit]").await;
        wait_for(
            &client,
            "the new rule in the table",
            "return !!document.querySelector('#rules tr[data-target=\"client:id:tester\"]')",
            |v| *v == json!(true),
        )
        .await;
        fill(&client, "try-key", "tester").await;
        click(&client, "#try-form button").await;
        wait_for(
            &client,
            "tester's first check",
            "return document.getElementById('try-result').dataset.status",
            |v| *v == json!("200"),
        )
        .await;
        click(&client, "#try-form button").await;
        let shown = wait_for(
            &client,
            "tester refused",
            "return document.getElementById('try-result').textContent",
            |v| v.as_str().is_some_and(|t| t.starts_with("HTTP 429")),
        )
        .await;
        assert!(
            shown.as_str().unwrap().contains("x-ratelimit-limit: 1"),
            "{shown}"
        );

        let png = client.screenshot().await.unwrap();
        // This test is <target>/<profile>/deps/dashboard-<hash>.
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().join(screenshot);
        std::fs::write(&target, &png).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        if page == base && std::env::var_os("UPDATE_DASHBOARD_SCREENSHOT").is_some() {
            std::fs::write(repo_file("docs/dashboard.png"), &png).unwrap();
        }
    })
    .await;
    let _ = client.close().await;
    outcome.expect("the dashboard test took more than 90 s");
}

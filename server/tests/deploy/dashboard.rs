//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real `tollgate serve` binary with an admin token. The page asks for the
//! token, shows traffic sent while it watches (totals from the admin API, the chart from
//! the event stream), edits a rule through the admin API, shows the API's validation error
//! for a bad one, and tries a key. A screenshot is saved as `dashboard.png` in the target
//! directory's `tmp/` (wherever `CARGO_TARGET_DIR` puts it), and as `docs/dashboard.png`
//! with `UPDATE_DASHBOARD_SCREENSHOT=1`, the README's picture. A test that fails with its
//! browser open still ends Chromium. `/docs`, Swagger UI, renders every operation of
//! `/openapi.json` with no content security policy violation in the browser's console.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use testkit::*;

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

/// chromedriver on a free port, and the Chromium it starts: both ended when dropped, also
/// when a test panics with its browser open (ending chromedriver alone would leave Chromium
/// running, adopted by init).
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
        // The console, for `BrowserLog`.
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
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
        // Found while chromedriver is their ancestor: once it is gone they are init's.
        let browser = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        end(&browser);
    }
}

/// The processes descending from `root`, from each process's parent in `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, status_of(pid)?.1)))
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    found.remove(0);
    found
}

/// A process's state letter and parent, from `/proc/PID/stat`; `None` once it is gone.
fn status_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, may hold spaces and parentheses: count from its last ")".
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid` still runs (a zombie has ended, only not yet been reaped).
fn running(pid: u32) -> bool {
    status_of(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Ends `pids`: SIGTERM, for Chromium to close its own helpers, then SIGKILL for any left
/// after 5 s.
fn end(pids: &[u32]) {
    let signal = |name: &str, pids: &[u32]| {
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg(name)
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
    };
    signal("-TERM", pids);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&pid| running(pid)).collect();
    signal("-KILL", &left);
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

/// The compose stack's shape: two app instances and the service on one Redis. The
/// dashboard, served by the service, charts the instances' traffic and names them within
/// 2 s of its event stream going live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_whole_fleet() {
    let token = "dashboard-test-token";
    let fleet = Fleet::start("dashboard-fleet", &[("TOLLGATE_ADMIN_TOKEN", token)]);
    fleet.send_traffic();
    let driver = Driver::start();
    let client = driver.session().await;
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        let page = format!("http://{}", fleet.service.address);
        open_with_token(&client, &page, token).await;
        let live = Instant::now();
        let names = wait_for(
            &client,
            "both app instances",
            "return document.getElementById('instances').dataset.names",
            |v| {
                v.as_str()
                    .is_some_and(|names| names.contains("app-1") && names.contains("app-2"))
            },
        )
        .await;
        let allowed = wait_for(
            &client,
            "the instances' requests in the chart",
            "return Number(document.getElementById('chart').dataset.totalAllowed)",
            |v| v.as_u64().is_some_and(|n| n > 0),
        )
        .await;
        let took = live.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "the instances ({names}, {allowed} allowed) showed {took:?} after the stream went live"
        );
        let shown = client
            .find(Locator::Id("live-instances"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(shown.parse::<u32>().is_ok_and(|n| n >= 2), "{shown}");
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the dashboard did not show the fleet within 90 s"
    );
}

/// chromedriver's command that reads (and empties) the browser's console log.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

/// The console lines since the last read that report a content security policy violation.
async fn csp_violations(client: &Client) -> Vec<String> {
    let log = client
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser's log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["message"].as_str())
        .filter(|message| message.contains("Content Security Policy"))
        .map(str::to_owned)
        .collect()
}

/// `/docs` lists every operation of `/openapi.json`, styled, and breaks no rule of its
/// content security policy, which allows the inline styles Swagger UI sets (the dashboard's
/// does not: a style injected there is reported, which shows the console is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_renders_within_its_content_security_policy() {
    let service = start_service(&[]);
    let base = format!("http://{}", service.address);
    let document: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|path| path.as_object().unwrap().len())
        .sum();
    let driver = Driver::start();
    let client = driver.session().await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        client.goto(&format!("{base}/dashboard")).await.unwrap();
        client
            .execute(
                "const s = document.createElement('style'); s.textContent = 'body {}'; \
                 document.head.appendChild(s);",
                vec![],
            )
            .await
            .unwrap();
        let seen = wait_for_violation(&client).await;
        assert!(seen.contains("style-src"), "{seen}");

        client.goto(&format!("{base}/docs")).await.unwrap();
        wait_for(
            &client,
            "every operation",
            "return document.querySelectorAll('.opblock').length",
            |v| *v == json!(operations),
        )
        .await;
        // Open one: its parameters and answers render, with more inline styles.
        click(&client, "#operations-check-by_key .opblock-summary").await;
        wait_for(
            &client,
            "an operation's answers",
            "return document.querySelectorAll('#operations-check-by_key .responses-table').length",
            |v| v.as_u64().is_some_and(|n| n > 0),
        )
        .await;
        // Swagger UI's style sheet applies: its operations are laid out as flex boxes.
        let display = client
            .execute(
                "return getComputedStyle(document.querySelector('.opblock-summary')).display",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(display, json!("flex"));
        assert_eq!(csp_violations(&client).await, Vec::<String>::new());
    })
    .await;
    assert!(outcome.is_ok(), "/docs did not render within 60 s");
}

/// Reads the console until a content security policy violation is reported (15 s at most).
async fn wait_for_violation(client: &Client) -> String {
    let started = Instant::now();
    loop {
        if let Some(found) = csp_violations(client).await.into_iter().next() {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no content security policy violation reported: the console is not read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dashboard test that panics with its browser open leaves no Chromium behind: its
/// processes are gone once the failed test's driver is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_test_leaves_no_browser_running() {
    let (sender, browser) = std::sync::mpsc::channel();
    let failed = tokio::spawn(async move {
        let driver = Driver::start();
        let _client = driver.session().await;
        sender.send(descendants(driver.child.id())).unwrap();
        panic!("a dashboard test failing with its browser open (on purpose)");
    })
    .await;
    assert!(failed.is_err_and(|error| error.is_panic()));
    let browser = browser.recv().unwrap();
    assert!(!browser.is_empty(), "chromedriver started no browser");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = browser
            .iter()
            .copied()
            .filter(|&pid| running(pid))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Chromium processes {left:?} still run after the failed test"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the dashboard at `page` and, when it asks for the admin token (as it does at its
/// first 401), gives it `token`; returns once its event stream is live.
async fn open_with_token(client: &Client, page: &str, token: &str) {
    client.goto(&format!("{page}/dashboard")).await.unwrap();
    wait_for(
        client,
        "the token dialog",
        "return document.getElementById('token-dialog').open",
        |v| *v == json!(true),
    )
    .await;
    fill(client, "token-input", token).await;
    click(client, "#token-form button[value=ok]").await;
    wait_for(
        client,
        "the live event stream",
        "return document.getElementById('connection').dataset.state",
        |v| *v == json!("live"),
    )
    .await;
}

/// Opens the dashboard at `page`, gives it `token`, sends traffic to the service at `base`,
/// and checks what the page shows and edits; saves a screenshot named `screenshot` in the
/// target directory's `tmp/`.
async fn watch_and_edit(page: &str, base: &str, token: &str, screenshot: &str) {
    let driver = Driver::start();
    let client = driver.session().await;
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        open_with_token(&client, page, token).await;

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

        // The default rule is the service's base rule: it comes from DEFAULT_RATE_LIMIT
        // here, with no rules file, so the page must not say "file".
        wait_for(
            &client,
            "the default rule's source",
            "return document.querySelector('#rules tr[data-target=\"rule:default\"] td:nth-child(2)').textContent",
            |v| *v == json!("base"),
        )
        .await;

        let png = client.screenshot().await.unwrap();
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(screenshot);
        std::fs::write(&target, &png)
            .unwrap_or_else(|e| panic!("cannot save {}: {e}", target.display()));
        if page == base && std::env::var_os("UPDATE_DASHBOARD_SCREENSHOT").is_some() {
            std::fs::write(repo_file("docs/dashboard.png"), &png).unwrap();
        }
    })
    .await;
    let _ = client.close().await;
    outcome.expect("the dashboard test took more than 90 s");
}

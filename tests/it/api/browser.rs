//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with fantoccini): signing in,
//! a test run with simulated failures started from the form and watched
//! live until it ends, and the protections (sign-in redirect, a
//! cross-origin form post refused). Screenshots of the pages are saved
//! under `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{PATIENCE, TOKEN, TestServer, start};

/// A chromedriver process and the browser session it runs.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Browser {
        crate::support::ensure_apt("chromedriver", "chromium chromium-driver");
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: killing it takes the browser along.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let profile = tempfile::tempdir().unwrap();
        let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--window-size=1280,800",
                    "--disable-gpu", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver on {url}: {e}"),
            }
        };
        Browser {
            driver,
            client: Some(client),
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }

    /// Wait until `check` holds (polling the page), or fail saying `what`.
    async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                let source = self.client().source().await.unwrap_or_default();
                panic!("the page never showed {what}; page source:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Attribute `name` of every element matching `css`, read in one
    /// script run: element by element, a live update swapping the nodes in
    /// between made stale reads drop out of the list (seen once in CI).
    async fn attr_all(&self, css: &str, name: &str) -> Vec<String> {
        let read = self
            .client()
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0])) \
                 .map(e => e.getAttribute(arguments[1])) \
                 .filter(v => v !== null);",
                vec![json!(css), json!(name)],
            )
            .await;
        match read {
            Ok(serde_json::Value::Array(values)) => values
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, server: &TestServer, token: &str) {
        let c = self.client();
        c.goto(&server.url("/ui/runs")).await.unwrap();
        let url = c.current_url().await.unwrap();
        assert_eq!(
            url.path(),
            "/ui/sign-in",
            "a page without a session redirects to sign-in"
        );
        assert_eq!(url.query(), Some("next=%2Fui%2Fruns"));
        c.find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        c.find(Locator::Css("form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_until("the runs page after signing in", || async {
            c.current_url().await.is_ok_and(|u| u.path() == "/ui/runs")
        })
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pid = self.driver.id() as i32;
        // The whole group: chromedriver and the browser it started.
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

/// A workflow whose run lasts a few seconds (a 2 s hold), with a branch
/// edge and retries that a simulated fault can use.
fn demo_workflow() -> Value {
    let retry = json!({ "max_attempts": 3, "initial_delay": "300ms" });
    json!({
        "name": "console-demo",
        "description": "Greets, checks the name, waits, and sums up (the console's browser test)",
        "vars": { "who": "grace", "friends": ["ada", "linus"] },
        "steps": [
            { "id": "greet", "piece": "transform@^0.1", "action": "template",
              "input": { "template": "Hello, {{ vars.who }}!" }, "retry": retry },
            { "id": "check", "piece": "flow@^0.1", "action": "if",
              "input": { "condition": "{{ vars.who | length > 3 }}" }, "retry": retry },
            { "id": "long_name", "piece": "transform@^0.1", "action": "template", "needs": ["check.then"],
              "input": { "template": "{{ vars.who }} is a long name" }, "retry": retry },
            { "id": "shout", "piece": "transform@^0.1", "action": "template",
              "for_each": "{{ vars.friends }}", "input": { "template": "HI {{ item | upper }}" }, "retry": retry },
            { "id": "pause", "piece": "delay@^0.1", "action": "sleep", "needs": ["greet"],
              "input": { "duration": "2s" } },
            { "id": "summary", "piece": "transform@^0.1", "action": "merge",
              "needs": ["long_name", "shout", "pause"],
              "input": { "values": [ { "greeting": "{{ steps.greet.output.text }}" } ] }, "retry": retry }
        ]
    })
}

#[tokio::test]
async fn a_test_run_with_simulated_failures_is_started_and_watched_live_in_chromium() {
    let server = start(4).await;
    server.create_workflow(&demo_workflow()).await;
    // Some history for the runs page.
    for _ in 0..3 {
        let (_, run) = server
            .json(server.post(
                "/api/v1/workflows/console-demo/runs",
                &json!({ "vars": { "who": "ada" } }),
            ))
            .await;
        server.wait_finished(run["id"].as_str().unwrap()).await;
    }
    let browser = Browser::start().await;
    let c = browser.client();
    browser.sign_in(&server, TOKEN).await;
    browser.screenshot("runs").await;

    c.goto(&server.url("/ui/workflows/console-demo"))
        .await
        .unwrap();
    let rate = c.find(Locator::Id("simulate_failures")).await.unwrap();
    rate.clear().await.unwrap();
    rate.send_keys("0.5").await.unwrap();
    let seed = c.find(Locator::Id("seed")).await.unwrap();
    seed.clear().await.unwrap();
    seed.send_keys("11").await.unwrap();
    browser.screenshot("workflow").await;
    c.find(Locator::Id("start-test"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until("the run page", || async {
            c.current_url()
                .await
                .is_ok_and(|u| u.path().starts_with("/ui/runs/"))
        })
        .await;
    // The run holds for 2 s: the page first shows it unfinished ...
    let first = browser.attr_all("#run-meta", "data-run-status").await;
    assert!(
        first.iter().all(|s| s != "succeeded" && s != "failed"),
        "the run was already over when its page loaded: {first:?}"
    );
    // ... and, without a reload, every node ends succeeded.
    browser
        .wait_until("every node succeeded", || async {
            let nodes = browser.attr_all("svg.dag g.node", "data-status").await;
            nodes.len() == 6 && nodes.iter().all(|s| s == "succeeded")
        })
        .await;
    browser
        .wait_until("the run succeeded", || async {
            browser.attr_all("#run-meta", "data-run-status").await == ["succeeded"]
        })
        .await;
    // The timeline shows simulated faults and the retries that followed
    // (read once the page holds a whole timeline: a live update may be
    // swapping it in).
    browser
        .wait_until("the timeline with its bars", || async {
            let kinds = browser.attr_all(".timeline g.bar", "data-kind").await;
            kinds.len() > 7 && kinds.iter().any(|k| k == "parked")
        })
        .await;
    let kinds = browser.attr_all(".timeline g.bar", "data-kind").await;
    let simulated = kinds.iter().filter(|k| *k == "simulated").count();
    assert!(
        simulated >= 1,
        "no simulated fault on the timeline: {kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k == "retry-wait"),
        "a retry wait follows the faults: {kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k == "parked"),
        "the 2 s hold is on the timeline: {kinds:?}"
    );
    // Step details carry the failed attempts (state as text too).
    // (Polled: the page may be swapping in its last live update.)
    browser
        .wait_until("a failed attempt in the step tables", || async {
            browser
                .attr_all("table.attempts tr[data-attempt]", "data-status")
                .await
                .iter()
                .any(|s| s == "failed")
        })
        .await;
    let badge = c.find(Locator::Css(".run-head .badge.test")).await.unwrap();
    assert_eq!(badge.text().await.unwrap(), "test");
    // The handle edge is labelled.
    let labels = c
        .find_all(Locator::Css("svg.dag text.edge-label"))
        .await
        .unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].text().await.unwrap(), "then");
    browser.screenshot("run").await;

    // Narrow (mobile) width: the page still lays out without sideways scroll of the body.
    c.set_window_size(390, 844).await.unwrap();
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(true),
        "the run page scrolls sideways at 390 px"
    );
    browser.screenshot("run-narrow").await;
    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_session_pages_redirect_and_a_cross_origin_post_is_refused_in_chromium() {
    let server = start(1).await;
    server
        .create_workflow(&json!({
            "name": "slow",
            "steps": [{ "id": "nap", "piece": "delay@^0.1", "action": "sleep",
                        "input": { "duration": "60s" } }]
        }))
        .await;
    let (_, run) = server
        .json(server.post("/api/v1/workflows/slow/runs", &json!({})))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    server
        .wait_run(&id, |r| r["status"] == "running" || r["status"] == "queued")
        .await;

    let browser = Browser::start().await;
    let c = browser.client();
    // A page without a session: to the sign-in page (sign_in checks it).
    browser.sign_in(&server, TOKEN).await;

    // Another origin (same host, another port: same *site*, so the
    // SameSite=Strict cookie is sent) posts a form to cancel the run.
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_url = format!("http://{}/", attacker.local_addr().unwrap());
    let target = server.url(&format!("/ui/runs/{id}/cancel"));
    let page = format!(
        "<!doctype html><html><body><form id=\"f\" method=\"post\" action=\"{target}\"></form>\
         <script>document.getElementById('f').submit()</script></body></html>"
    );
    let serve = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = attacker.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    c.goto(&attacker_url).await.unwrap();
    browser
        .wait_until("the console's refusal", || async {
            c.source()
                .await
                .is_ok_and(|s| s.contains("cross-origin request refused"))
        })
        .await;
    let run = server.run(&id).await;
    assert_ne!(
        run["status"], "cancelled",
        "the forged post cancelled the run: {run}"
    );

    // The same action from the console's own page works.
    c.goto(&server.url(&format!("/ui/runs/{id}")))
        .await
        .unwrap();
    c.find(Locator::Css("form[action$=\"/cancel\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    server.wait_run(&id, |r| r["status"] == "cancelled").await;
    serve.abort();
    browser.close().await;
    server.stop().await;
}

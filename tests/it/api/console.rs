//! The web console over HTTP (no browser: `browser.rs` drives Chromium):
//! sign-in and sessions, the origin check, and what each page shows.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use super::{TOKEN, TestServer, start};

/// A client that does not follow redirects (the tests look at them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestServer {
    /// Sign in with `token` from the console's own origin; the cookie pair.
    pub(super) async fn sign_in(&self, token: &str) -> String {
        let response = client()
            .post(self.url("/ui/sign-in"))
            .header(ORIGIN, &self.base)
            .form(&[("token", token), ("next", "/ui/queue")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/ui/queue");
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        cookie.split(';').next().unwrap().to_owned()
    }

    /// `GET path` with the session cookie: status and body.
    pub(super) async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let response = client()
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// `POST path` (a form) with the session cookie and `origin`.
    async fn action(
        &self,
        cookie: &str,
        path: &str,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = client()
            .post(self.url(path))
            .header(COOKIE, cookie)
            .form(form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send().await.unwrap()
    }
}

/// Three steps in a chain, each retried quickly.
fn chain_workflow(name: &str) -> Value {
    json!({
        "name": name,
        "description": "a console test chain",
        "vars": { "who": "ada" },
        "steps": [
            { "id": "greet", "piece": "transform@^0.1", "action": "template",
              "input": { "template": "hi {{ vars.who }}" },
              "retry": { "max_attempts": 3, "initial_delay": "20ms" } },
            { "id": "check", "piece": "flow@^0.1", "action": "if",
              "input": { "condition": "{{ vars.who | length > 1 }}" },
              "retry": { "max_attempts": 3, "initial_delay": "20ms" } },
            { "id": "long", "piece": "transform@^0.1", "action": "template", "needs": ["check.then"],
              "input": { "template": "{{ steps.greet.output.text }}!" },
              "retry": { "max_attempts": 3, "initial_delay": "20ms" } }
        ]
    })
}

async fn run_to_end(server: &TestServer, workflow: &str, body: Value) -> Value {
    let (status, run) = server
        .json(server.post(&format!("/api/v1/workflows/{workflow}/runs"), &body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    server.wait_finished(run["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn pages_need_a_session_that_a_token_sign_in_sets_and_revocation_ends() {
    let server = start(2).await;
    // No session: pages redirect to the sign-in page, which keeps the target.
    let response = client()
        .get(server.url("/ui/runs?status=failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[LOCATION],
        "/ui/sign-in?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
    );
    let root = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(root.headers()[LOCATION], "/ui/runs");
    let form = client()
        .get(server.url("/ui/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(form.text().await.unwrap().contains("name=\"token\""));

    // A wrong token: 401 and no cookie.
    let wrong = client()
        .post(server.url("/ui/sign-in"))
        .header(ORIGIN, &server.base)
        .form(&[("token", "of_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    // The right token, but from another origin: refused.
    let forged = client()
        .post(server.url("/ui/sign-in"))
        .header(ORIGIN, "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());

    // Signed in: an HttpOnly, SameSite=Strict cookie; Secure only over TLS.
    let response = client()
        .post(server.url("/ui/sign-in"))
        .header(ORIGIN, &server.base)
        .form(&[("token", TOKEN), ("next", "/ui/workflows")])
        .send()
        .await
        .unwrap();
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("omniflow_session=of_"), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let tls = client()
        .post(server.url("/ui/sign-in"))
        .header(ORIGIN, &server.base)
        .header("x-forwarded-proto", "https")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(
        tls.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    // The token never appears in a URL: the redirect is the page asked for.
    assert_eq!(response.headers()[LOCATION], "/ui/workflows");
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, html) = server.page(&cookie, "/ui/runs").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<h1>Runs</h1>"));
    // Only the cookie's hash is stored.
    let db = std::fs::read(server.dir.path().join("omniflow.db")).unwrap();
    let value = cookie.split_once('=').unwrap().1;
    assert!(!db.windows(value.len()).any(|w| w == value.as_bytes()));

    // The API's bearer auth is unchanged: the cookie is not a token.
    let api = client()
        .get(server.url("/api/v1/runs"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    // Signing out ends this session only.
    let other = server.sign_in(TOKEN).await;
    let out = server
        .action(&cookie, "/ui/sign-out", Some(&server.base), &[])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.page(&cookie, "/ui/runs").await.0,
        StatusCode::SEE_OTHER
    );
    assert_eq!(server.page(&other, "/ui/runs").await.0, StatusCode::OK);

    // Revoking the token ends every session signed in with it.
    let store = server.exec.store();
    let token = store
        .active_token(&omniflow::api::hash_token(TOKEN))
        .await
        .unwrap()
        .unwrap();
    assert!(store.revoke_token(token.id).await.unwrap());
    assert_eq!(
        server.page(&other, "/ui/runs").await.0,
        StatusCode::SEE_OTHER
    );
    server.stop().await;
}

#[tokio::test]
async fn actions_must_come_from_the_consoles_own_origin() {
    let server = start(0).await; // no workers: runs stay queued
    server.create_workflow(&chain_workflow("chain")).await;
    let (_, run) = server
        .json(server.post("/api/v1/workflows/chain/runs", &json!({})))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let cookie = server.sign_in(TOKEN).await;
    let cancel = format!("/ui/runs/{id}/cancel");
    for origin in [None, Some("http://evil.example"), Some("null")] {
        let response = server.action(&cookie, &cancel, origin, &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "origin {origin:?}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains("cross-origin request refused"), "{text}");
    }
    assert_eq!(server.run(&id).await["status"], "queued");
    // Without a session an action is refused too (never redirected).
    let anonymous = client()
        .post(server.url(&cancel))
        .header(ORIGIN, &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    // From the console itself: done, back to the run page.
    let response = server
        .action(&cookie, &cancel, Some(&server.base), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], format!("/ui/runs/{id}"));
    assert_eq!(server.run(&id).await["status"], "cancelled");
    // Retry from the page: queued again.
    let response = server
        .action(
            &cookie,
            &format!("/ui/runs/{id}/retry"),
            Some(&server.base),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(server.run(&id).await["status"], "queued");
    server.stop().await;
}

#[tokio::test]
async fn the_run_page_draws_the_graph_timeline_and_step_details() {
    let server = start(2).await;
    server.create_workflow(&chain_workflow("chain")).await;
    let run = run_to_end(&server, "chain", json!({ "vars": { "who": "grace" } })).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().unwrap();
    let cookie = server.sign_in(TOKEN).await;
    let (status, html) = server.page(&cookie, &format!("/ui/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // One node per step, each with its state as data and as text.
    for step in ["greet", "check", "long"] {
        assert!(
            html.contains(&format!("data-step=\"{step}\" data-status=\"succeeded\"")),
            "node {step}: {html}"
        );
    }
    assert!(
        html.contains("class=\"edge-label\""),
        "the then-edge is labelled"
    );
    assert!(html.contains(">then</text>"));
    // The timeline: the queue row and a succeeded attempt per step.
    assert!(html.contains("data-step=\"queue\""));
    assert_eq!(html.matches("data-kind=\"succeeded\"").count(), 3, "{html}");
    // Step details: input and output rendered, vars and trigger shown.
    assert!(html.contains("hi grace"), "output shown");
    assert!(
        html.contains("&quot;who&quot;: &quot;grace&quot;"),
        "vars shown escaped"
    );
    // No cancel on a finished run, no retry on a succeeded one.
    assert!(!html.contains("/cancel\""));
    assert!(!html.contains("/retry\""));
    // The live fragment is the changing part only.
    let (status, fragment) = server
        .page(&cookie, &format!("/ui/runs/{id}?fragment=1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(fragment.contains("class=\"dag\"") && !fragment.contains("<html"));
    // Unknown and malformed ids.
    let (status, _) = server
        .page(&cookie, "/ui/runs/01900000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, html) = server.page(&cookie, "/ui/runs/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("is not a run id"));
    server.stop().await;
}

#[tokio::test]
async fn a_denied_request_shows_the_grant_to_add() {
    let server = start(1).await;
    server
        .create_workflow(&json!({
            "name": "denied",
            "steps": [{ "id": "fetch", "piece": "http-request@^0.1", "action": "request",
                        "input": { "url": "http://127.0.0.1:9/x" }, "retry": { "max_attempts": 1 } }]
        }))
        .await;
    let run = run_to_end(&server, "denied", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let cookie = server.sign_in(TOKEN).await;
    let (_, html) = server.page(&cookie, &format!("/ui/runs/{id}")).await;
    assert!(html.contains("Capability denied."), "{html}");
    assert!(html.contains("grants.http"), "{html}");
    server.stop().await;
}

#[tokio::test]
async fn the_runs_list_filters_counts_and_pages_by_key() {
    let server = start(4).await;
    server.create_workflow(&chain_workflow("chain")).await;
    server
        .create_workflow(&json!({
            "name": "broken",
            "steps": [{ "id": "bad", "piece": "flaky", "action": "run",
                        "input": { "fail_times": 5, "value": 1 }, "retry": { "max_attempts": 1 } }]
        }))
        .await;
    let mut ids = Vec::new();
    for _ in 0..55 {
        ids.push(
            run_to_end(&server, "chain", json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let failed = run_to_end(&server, "broken", json!({})).await;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap().to_owned();
    let cookie = server.sign_in(TOKEN).await;

    let (_, html) = server.page(&cookie, "/ui/runs").await;
    assert!(html.contains("data-count=\"succeeded\">55<"), "{html}");
    assert!(html.contains("data-count=\"failed\">1<"));
    assert_eq!(html.matches("<tr data-run=").count(), 50);
    // Newest first: the failed run, then the chain runs from the newest.
    let first = html.find("<tr data-run=").unwrap();
    assert!(html[first..].starts_with(&format!(
        "<tr data-run=\"{}\"",
        failed["id"].as_str().unwrap()
    )));
    // The next page continues after the last row shown.
    let pager = &html[html.find("class=\"pager\"").expect("a pager")..];
    let next = pager
        .split("href=\"")
        .nth(1)
        .and_then(|h| h.split('"').next())
        .map(|h| h.replace("&amp;", "&").replace("&#x2f;", "/"))
        .unwrap_or_else(|| panic!("no next link: {pager}"));
    assert!(next.starts_with("/ui/runs?before="), "{next}");
    let (_, page2) = server.page(&cookie, &next).await;
    assert_eq!(page2.matches("<tr data-run=").count(), 6, "{next}");
    assert!(
        page2.contains(&format!("data-run=\"{}\"", ids[0])),
        "the oldest run is on page 2"
    );

    let (_, only_failed) = server.page(&cookie, "/ui/runs?status=failed").await;
    assert_eq!(only_failed.matches("<tr data-run=").count(), 1);
    let words: String = error
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let query = format!(
        "/ui/runs?q={}",
        url::form_urlencoded::byte_serialize(words.to_uppercase().as_bytes()).collect::<String>()
    );
    let (_, by_error) = server.page(&cookie, &query).await;
    assert_eq!(
        by_error.matches("<tr data-run=").count(),
        1,
        "error text {words:?}"
    );
    let (_, by_workflow) = server.page(&cookie, "/ui/runs?workflow=broken").await;
    assert_eq!(by_workflow.matches("<tr data-run=").count(), 1);
    let (_, future) = server
        .page(&cookie, "/ui/runs?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future.matches("<tr data-run=").count(), 0);
    let (_, past) = server
        .page(&cookie, "/ui/runs?until=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(past.matches("<tr data-run=").count(), 0);
    let (_, recent) = server.page(&cookie, "/ui/runs?range=1h").await;
    assert_eq!(recent.matches("<tr data-run=").count(), 50);
    let (status, bad) = server.page(&cookie, "/ui/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        bad.contains("since=&quot;yesterday&quot; is not a time"),
        "{bad}"
    );
    let (status, _) = server.page(&cookie, "/ui/runs?status=sleepy").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The live fragment and stream exist.
    let (status, fragment) = server.page(&cookie, "/ui/runs?fragment=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!fragment.contains("<html"));
    server.stop().await;
}

#[tokio::test]
async fn workflow_pieces_and_queue_pages_and_the_test_run_form() {
    let server = start(2).await;
    server.create_workflow(&chain_workflow("chain")).await;
    let cookie = server.sign_in(TOKEN).await;
    let (status, html) = server.page(&cookie, "/ui/workflows").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("href=\"/ui/workflows/chain\""));
    let (status, html) = server.page(&cookie, "/ui/workflows/chain").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // The form is pre-filled with the workflow's vars; the pins are listed.
    assert!(html.contains("&quot;who&quot;: &quot;ada&quot;"), "{html}");
    assert!(html.contains("<code>transform@^0.1</code>"), "pins: {html}");
    assert_eq!(
        server.page(&cookie, "/ui/workflows/nope").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.page(&cookie, "/ui/workflows/bad%20name").await.0,
        StatusCode::BAD_REQUEST
    );

    // Bad form input: 422 naming the field, nothing queued.
    for (vars, rate, seed, says) in [
        ("[1]", "0.3", "7", "vars: must be a JSON object"),
        ("{", "0.3", "7", "vars: not JSON"),
        ("{}", "1.5", "7", "simulate failures"),
        ("{}", "lots", "7", "simulate failures"),
        ("{}", "0.3", "-1", "seed"),
    ] {
        let response = server
            .action(
                &cookie,
                "/ui/workflows/chain/test",
                Some(&server.base),
                &[("vars", vars), ("simulate_failures", rate), ("seed", seed)],
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{vars} {rate} {seed}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{says}: {text}");
    }
    let (_, list) = server.json(server.get("/api/v1/runs")).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 0);

    // A good one: a test run opens, with faults injected and recovered.
    let response = server
        .action(
            &cookie,
            "/ui/workflows/chain/test",
            Some(&server.base),
            &[
                ("vars", "{\"who\": \"linus\"}"),
                ("simulate_failures", "1"),
                ("seed", "7"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let id = location.strip_prefix("/ui/runs/").unwrap().to_owned();
    let run = server.wait_finished(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["vars"]["who"], "linus");
    let (_, html) = server.page(&cookie, &location).await;
    // Rate 1: every attempt but each step's last is a simulated fault.
    assert_eq!(html.matches("data-kind=\"simulated\"").count(), 6, "{html}");
    assert_eq!(html.matches("data-kind=\"retry-wait\"").count(), 6);
    assert!(html.contains("class=\"badge test\""));
    let (_, tests_only) = server.page(&cookie, "/ui/runs?test=true").await;
    assert_eq!(tests_only.matches("<tr data-run=").count(), 1);
    let (_, production) = server.page(&cookie, "/ui/runs?test=false").await;
    assert_eq!(production.matches("<tr data-run=").count(), 0);

    let (status, html) = server.page(&cookie, "/ui/pieces").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"piece-transform-"), "{html}");
    assert!(
        html.contains("<code>template</code>"),
        "schema fields as rows"
    );
    let (status, html) = server.page(&cookie, "/ui/queue").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Finished per minute"));
    assert!(
        html.contains("UTC: 1 runs"),
        "this minute's finished run is charted: {html}"
    );
    // Assets are served from the binary.
    let css = client()
        .get(server.url("/ui/assets/console.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let missing = client()
        .get(server.url("/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

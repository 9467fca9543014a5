//! The operator console (docs/console.md): the page under its CSP, server-side sessions in an
//! `HttpOnly`, `SameSite=Strict` cookie with the `Origin` check, the saved viewport, and the
//! whole page driven in a real browser.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::{
    events::connect,
    helpers::{Options, Reply, TestApp, spawn_app, spawn_app_with},
    interop::run_python,
};

/// Signs in with `credential` and returns the reply and the cookie's `name=value`.
async fn sign_in(app: &TestApp, credential: &str) -> (Reply, Option<String>) {
    let reply = app
        .call(
            Method::POST,
            "/console/session",
            None,
            Some(json!({"token": credential})),
        )
        .await;
    let cookie = reply.headers.get(header::SET_COOKIE).map(|value| {
        value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    });
    (reply, cookie)
}

/// A request carrying the session cookie and, when given, an `Origin`.
async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.rest))
        .header(header::COOKIE, cookie);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    app.raw(request).await
}

/// Signs out the session in `cookie`, as the console at `origin` does.
async fn sign_out(app: &TestApp, cookie: &str, origin: &str) -> Reply {
    with_cookie(
        app,
        Method::DELETE,
        "/console/session",
        cookie,
        Some(origin),
        None,
    )
    .await
}

/// The `Origin` a page served by `app` sends.
fn own_origin(app: &TestApp) -> String {
    app.rest.clone()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // No inline script or style: the policy would refuse them.
    assert!(!page.text.contains("<script>") && !page.text.contains("style="));
    for asset in ["app.js", "api.js", "tree.js", "panel.js", "app.css"] {
        let reply = app.get(&format!("/console/{asset}"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(!reply.text.is_empty(), "{asset}");
    }
    let missing = app.get("/console/secrets.txt", None).await;
    assert_eq!(
        (missing.status, missing.body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );
}

#[tokio::test]
async fn a_session_is_a_cookie_the_server_can_end() {
    let app = spawn_app().await;
    let (wrong, cookie) = sign_in(&app, "not-a-token").await;
    assert_eq!(
        (wrong.status, wrong.body, cookie),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid admin auth token"}),
            None
        )
    );
    let (missing, _) = sign_in(&app, "").await;
    assert_eq!(
        (missing.status, missing.body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "admin auth required"})
        )
    );
    // A workspace's token is not an operator credential.
    let (_, agent_token) = app.registered_agent("agent", None).await;
    let (refused, _) = sign_in(&app, &agent_token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let (signed_in, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.text);
    assert_eq!(signed_in.body["principal"], "admin");
    let set_cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    let cookie = cookie.unwrap();
    assert!(!signed_in.text.contains(cookie.split('=').nth(1).unwrap()));

    let current = with_cookie(&app, Method::GET, "/console/session", &cookie, None, None).await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(current.body["id"], signed_in.body["id"]);
    let listed = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(listed.status, StatusCode::OK);

    let origin = own_origin(&app);
    let out = sign_out(&app, &cookie, &origin).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let dead = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(
        (dead.status, dead.body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid admin auth token"})
        )
    );

    // Behind TLS (the proxy says so), the cookie is `Secure`.
    let request = app
        .http
        .post(format!("{}/console/session", app.rest))
        .header("x-forwarded-proto", "https")
        .json(&json!({"token": app.admin_token}));
    let secure = app.raw(request).await;
    assert!(
        secure.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
}

/// Audit N10: an origin in `CORS_ORIGINS` (`Allow-Credentials: true`) read the operator's data
/// through the console cookie. Audit N18: behind a TLS proxy that sends no
/// `X-Forwarded-Proto`, the cookie lacked `Secure`; the public URL says the scheme.
#[tokio::test]
async fn the_session_cookie_is_same_origin_and_secure_behind_a_public_https_url() {
    let app = spawn_app_with(Options {
        public_url: Some("https://molecule.example"),
        ..Options::default()
    })
    .await;
    let (signed_in, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    let set_cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    let cookie = cookie.unwrap();
    app.create_workspace(json!({"name": "private"})).await;

    let allowed_by_cors = Some("http://localhost:3000");
    let cross = with_cookie(
        &app,
        Method::GET,
        "/workspaces",
        &cookie,
        allowed_by_cors,
        None,
    )
    .await;
    assert_eq!(
        (cross.status, cross.body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "admin auth required"})
        )
    );
    let origin = own_origin(&app);
    for from in [None, Some(origin.as_str())] {
        let own = with_cookie(&app, Method::GET, "/workspaces", &cookie, from, None).await;
        assert_eq!(own.status, StatusCode::OK, "{from:?}");
        assert_eq!(own.body[0]["name"], "private");
    }
}

#[tokio::test]
async fn sessions_expire_and_die_with_their_org_key() {
    let app = spawn_app_with(Options {
        session_ttl: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let (_, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    let cookie = cookie.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);

    let app = spawn_app().await;
    let key = app
        .admin(Method::POST, "/org/tokens", Some(json!({"name": "ops"})))
        .await;
    let (plaintext, key_id) = (
        key.body["auth_token"].as_str().unwrap().to_owned(),
        key.body["id"].as_str().unwrap().to_owned(),
    );
    let (signed_in, cookie) = sign_in(&app, &plaintext).await;
    assert_eq!(
        signed_in.body["principal"],
        format!("org:{}", key.body["prefix"].as_str().unwrap())
    );
    let cookie = cookie.unwrap();
    let alive = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(alive.status, StatusCode::OK);
    let revoked = app
        .admin(Method::DELETE, &format!("/org/tokens/{key_id}"), None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let dead = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(dead.status, StatusCode::UNAUTHORIZED);
    // A session cannot open another session.
    let (chained, _) = sign_in(&app, cookie.split('=').nth(1).unwrap()).await;
    assert_eq!(chained.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_open_socket_closes_when_its_session_ends() {
    let app = spawn_app_with(Options {
        ws_recheck: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let (_, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    let cookie = cookie.unwrap();
    let origin = own_origin(&app);
    let mut socket = connect(&app, &[("cookie", &cookie), ("origin", &origin)])
        .await
        .unwrap();
    let out = sign_out(&app, &cookie, &origin).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 5s");
    let frame = closed.expect("a close frame with a reason");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (1008, "credential no longer valid")
    );
}

#[tokio::test]
async fn state_changes_with_the_cookie_need_the_console_origin() {
    let app = spawn_app().await;
    let (_, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    let cookie = cookie.unwrap();
    let body = json!({"name": "from-a-page"});
    for origin in [Some("http://evil.example"), None] {
        let refused = with_cookie(
            &app,
            Method::POST,
            "/workspaces",
            &cookie,
            origin,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (refused.status, refused.body),
            (
                StatusCode::FORBIDDEN,
                json!({"error": "origin not allowed"})
            ),
            "{origin:?}"
        );
    }
    assert_eq!(app.admin_get("/workspaces").await.body, json!([]));
    let origin = own_origin(&app);
    let created = with_cookie(
        &app,
        Method::POST,
        "/workspaces",
        &cookie,
        Some(&origin),
        Some(body),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    // The event stream too: a page elsewhere cannot open it with the operator's cookie.
    let foreign = connect(
        &app,
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    )
    .await;
    assert!(foreign.is_err(), "a foreign page's socket must be refused");
    let own = connect(&app, &[("cookie", &cookie), ("origin", &origin)]).await;
    assert!(own.is_ok(), "{own:?}");
    // A sign-in posted by another site's page is refused too.
    let request = app
        .http
        .post(format!("{}/console/session", app.rest))
        .header(header::ORIGIN, "http://evil.example")
        .json(&json!({"token": app.admin_token}));
    assert_eq!(app.raw(request).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_viewport_is_saved_per_operator() {
    let app = spawn_app().await;
    let default = app.admin_get("/canvas/viewport").await;
    assert_eq!(default.body, json!({"x": 0, "y": 0, "zoom": 1}));
    let viewport = json!({"x": 120.5, "y": -40, "zoom": 1.5});
    let saved = app
        .admin(Method::PUT, "/canvas/viewport", Some(viewport.clone()))
        .await;
    assert_eq!(saved.body, json!({"status": "saved"}));
    for bad in [
        json!({"x": 1, "y": 2, "zoom": 0}),
        json!({"x": 1, "y": 2, "zoom": 1000}),
        json!({"x": "left", "y": 2, "zoom": 1}),
    ] {
        let refused = app.admin(Method::PUT, "/canvas/viewport", Some(bad)).await;
        assert_eq!(
            (refused.status, refused.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid viewport data"})
            )
        );
    }
    assert_eq!(app.admin_get("/canvas/viewport").await.body, viewport);
    // The same operator through a session sees it; nobody else may read or write it.
    let (_, cookie) = sign_in(&app, &app.admin_token.clone()).await;
    let mine = with_cookie(
        &app,
        Method::GET,
        "/canvas/viewport",
        &cookie.unwrap(),
        None,
        None,
    )
    .await;
    assert_eq!(mine.body, viewport);
    let anonymous = app.get("/canvas/viewport", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let app = spawn_app_with(Options {
        liveness_ttl_seconds: 4,
        ..Options::default()
    })
    .await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let stdout = run_python(
        "console_browser.py",
        vec![
            app.rest.clone(),
            format!("http://{}", app.addr),
            app.admin_token.clone(),
            shots.display().to_string(),
        ],
    )
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "WRONG_TOKEN_REFUSED",
            "SIGNED_IN admin",
            "ONLINE_REMOTE within_1s=True",
            "ANSWER echo: hello from the console",
            "OFFLINE",
            "CONTROL PAUSED",
            "CONNECTED",
            "CROSS_ORIGIN_REFUSED",
            "SIGNED_OUT",
            "DONE"
        ]
    );
}

/// `molecule serve` on a free port of `dir` with `admin_token`; returns it and its base URL.
fn boot(dir: &std::path::Path, admin_token: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = crate::cli::molecule()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MOLECULE_DATA_DIR", dir)
        .env("ADMIN_TOKEN", admin_token)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines().map_while(Result::ok) {
        // Colour codes, if any, sit between the field name and its value.
        let plain: String = line
            .split('\x1b')
            .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
            .collect();
        if let Some(at) = plain.find("listen=") {
            let addr = plain[at + "listen=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            return (child, format!("http://{addr}"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server never said where it listens");
}

// The servers are child processes, so blocking on their output stalls nothing of theirs.
#[tokio::test]
async fn rotating_the_admin_token_ends_the_sessions_it_opened() {
    let dir = std::env::temp_dir().join(format!("molecule-rotate-{}", uuid::Uuid::new_v4()));
    let http = reqwest::Client::new();
    let first_token = "first-admin-token-0123456789abcdef";
    let (mut first, base) = boot(&dir, first_token);
    let signed_in = http
        .post(format!("{base}/console/session"))
        .json(&json!({"token": first_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    let cookie = signed_in.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let listed = |base: String| {
        let request = http
            .get(format!("{base}/workspaces"))
            .header(header::COOKIE, &cookie);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(listed(base).await, StatusCode::OK);
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, base) = boot(&dir, "second-admin-token-0123456789abcdef");
    assert_eq!(listed(base).await, StatusCode::UNAUTHORIZED);
    second.kill().unwrap();
    second.wait().unwrap();
}

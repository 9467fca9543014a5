//! The HTTP edge (docs/workspaces.md §7): health, security headers everywhere, CORS that never
//! rejects, the rate limiter, the body cap, the tenant guard, JSON 404s, metrics and the OpenAPI
//! document.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let app = spawn_app().await;
    let health = app.get("/health", None).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    for reply in [
        health,
        app.get("/workspaces", None).await,
        app.get("/no/such/route", None).await,
    ] {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains",
            ),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            (
                "permissions-policy",
                "camera=(), microphone=(), geolocation=()",
            ),
            ("content-security-policy", "default-src 'self'"),
        ] {
            assert_eq!(reply.headers[name], value, "{name} on {}", reply.status);
        }
        assert!(reply.headers.contains_key("x-request-id"));
    }
    let unknown = app.get("/no/such/route", None).await;
    assert_eq!(
        (unknown.status, unknown.body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );
    let request = app
        .http
        .get(format!("{}/health", app.rest))
        .header("x-request-id", "trace-me");
    assert_eq!(app.raw(request).await.headers["x-request-id"], "trace-me");
}

#[tokio::test]
async fn cors_decorates_allowed_origins_and_never_rejects_others() {
    let app = spawn_app_with(Options {
        cors_origins: Some("http://localhost:3000, https://canvas.example"),
        ..Options::default()
    })
    .await;
    let allowed = app
        .http
        .get(format!("{}/health", app.rest))
        .header("origin", "https://canvas.example");
    let reply = app.raw(allowed).await;
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://canvas.example"
    );
    assert_eq!(reply.headers["access-control-allow-credentials"], "true");
    // The SDK sends its platform URL as Origin: served, just without CORS headers.
    let other = app
        .http
        .get(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .header("origin", "https://sdk.example");
    let reply = app.raw(other).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
    let preflight = app
        .http
        .request(Method::OPTIONS, format!("{}/workspaces", app.rest))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST");
    let reply = app.raw(preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(
        reply.headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("X-Molecule-Org-Id")
    );
}

#[tokio::test]
async fn the_rate_limiter_counts_per_ip_and_answers_429() {
    // Any route but the probes (/health, /readyz, /metrics), which are never limited.
    let app = spawn_app_with(Options {
        rate_limit: 3,
        ..Options::default()
    })
    .await;
    let first = app.get("/openapi.json", None).await;
    assert_eq!(first.headers["x-ratelimit-limit"], "3");
    assert_eq!(first.headers["x-ratelimit-remaining"], "2");
    let reset: u64 = first.headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset));
    app.get("/openapi.json", None).await;
    app.get("/openapi.json", None).await;
    let limited = app.get("/openapi.json", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        limited.body,
        json!({"error": "rate limit exceeded", "retry_after": retry})
    );
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    assert_eq!(limited.headers["x-content-type-options"], "nosniff");

    let dev = spawn_app_with(Options {
        rate_limit: 1,
        env: "dev",
        admin_token: false,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let reply = dev.get("/openapi.json", None).await;
        assert_eq!(
            (
                reply.status,
                reply.headers["x-ratelimit-limit"].to_str().unwrap()
            ),
            (StatusCode::OK, "unlimited")
        );
    }
}

#[tokio::test]
async fn oversize_bodies_get_413_and_change_nothing() {
    let app = spawn_app().await;
    let huge = json!({"name": "x".repeat(1024 * 1024 + 10)});
    let reply = app.admin(Method::POST, "/workspaces", Some(huge)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body, json!({"error": "request body too large"}));
    // Without a declared length the cap applies while reading.
    let stream =
        futures_util::stream::iter((0..2048).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let request = app
        .http
        .post(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .body(reqwest::Body::wrap_stream(stream));
    let reply = app.raw(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.admin_get("/workspaces").await.body, json!([]));
}

#[tokio::test]
async fn the_tenant_guard_hides_other_tenants_behind_an_empty_404() {
    let app = spawn_app_with(Options {
        org_id: Some("org-123"),
        ..Options::default()
    })
    .await;
    let hidden = app.admin_get("/workspaces").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.text, "");
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
    let request = app
        .http
        .get(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .header("x-molecule-org-id", "org-123");
    assert_eq!(app.raw(request).await.status, StatusCode::OK);
    let replay = app
        .http
        .get(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .header("fly-replay-src", "instance=abc;state=org-123");
    assert_eq!(app.raw(replay).await.status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_describes_every_rest_route() {
    let app = spawn_app().await;
    let document = app.get("/openapi.json", None).await.body;
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/workspaces", "get"),
        ("/workspaces", "post"),
        ("/workspaces/{id}", "get"),
        ("/workspaces/{id}", "patch"),
        ("/workspaces/{id}", "delete"),
        ("/workspaces/{id}/state", "get"),
        ("/workspaces/{id}/pause", "post"),
        ("/workspaces/{id}/resume", "post"),
        ("/workspaces/{id}/restart", "post"),
        ("/workspaces/{id}/tokens", "get"),
        ("/workspaces/{id}/tokens", "post"),
        ("/workspaces/{id}/tokens/{token_id}", "delete"),
        ("/admin/workspaces/{id}/test-token", "get"),
        ("/org/tokens", "get"),
        ("/org/tokens", "post"),
        ("/org/tokens/{id}", "delete"),
        ("/events", "get"),
        ("/events/{workspace_id}", "get"),
        ("/ws", "get"),
        ("/workspaces/{id}/memories", "get"),
        ("/workspaces/{id}/memories", "post"),
        ("/workspaces/{id}/memories/{memory_id}", "delete"),
        ("/workspaces/{id}/approvals", "get"),
        ("/workspaces/{id}/approvals", "post"),
        ("/workspaces/{id}/approvals/{approval_id}", "get"),
        ("/workspaces/{id}/approvals/{approval_id}/decide", "post"),
        ("/approvals/pending", "get"),
        ("/workspaces/{id}/chat/uploads", "post"),
        ("/workspaces/{id}/chat/download", "get"),
        ("/workspaces/{id}/instructions/resolve", "get"),
        ("/instructions", "get"),
        ("/instructions", "post"),
        ("/instructions/{id}", "put"),
        ("/instructions/{id}", "delete"),
        ("/workspaces/{id}/checkpoints", "post"),
        ("/workspaces/{id}/checkpoints/latest", "get"),
        ("/workspaces/{id}/checkpoints/{workflow_id}", "get"),
        ("/workspaces/{id}/checkpoints/{workflow_id}", "delete"),
        ("/workspaces/{id}/shared-context", "get"),
        ("/workspaces/{id}/shared-context", "put"),
        ("/console/session", "post"),
        ("/console/session", "get"),
        ("/console/session", "delete"),
        ("/canvas/viewport", "get"),
        ("/canvas/viewport", "put"),
        ("/workspaces/{id}/route", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
}

#[tokio::test]
async fn metrics_are_exported_for_prometheus_with_bounded_labels() {
    let app = spawn_app().await;
    app.get("/health", None).await;
    let id = app.create_workspace(serde_json::json!({"name": "m"})).await;
    // Straight to the control plane, which serves the metrics (also when the suite runs the
    // REST calls through a standalone gateway).
    let direct = format!("http://{}", app.addr);
    app.raw(
        app.http
            .delete(format!(
                "{direct}/workspaces/{id}/secrets/METRICS_SECRET_NAME"
            ))
            .bearer_auth(&app.admin_token),
    )
    .await;
    app.raw(app.http.get(format!("{direct}/scanner/probe-metrics-7c1")))
        .await;
    let reply = app
        .raw(app.http.get(format!("http://{}/metrics", app.addr)))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text.contains("http_requests_total"), "{}", reply.text);
    assert!(
        reply
            .text
            .contains(r#"route="/workspaces/{id}/secrets/{key}""#),
        "{}",
        reply.text
    );
    assert!(reply.text.contains(r#"route="unmatched""#));
    for leaked in [id.as_str(), "METRICS_SECRET_NAME", "probe-metrics-7c1"] {
        assert!(!reply.text.contains(leaked), "{leaked} in a metrics label");
    }
}

/// Audit N8: every unknown gRPC path and every HTTP method token became a label of its own, so
/// 20,000 anonymous requests grew `/metrics` to 38.8 MB. They are now one `other` label each.
#[tokio::test]
async fn unknown_grpc_paths_and_methods_share_one_metrics_label() {
    // With a tenant guard, a path of another tenant is refused before any router sees it.
    let app = spawn_app_with(Options {
        org_id: Some("org-metrics"),
        ..Options::default()
    })
    .await;
    let direct = format!("http://{}", app.addr);
    let marker = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut grpc = tonic::client::Grpc::new(app.grpc_channel().await);
    for n in 0..50 {
        grpc.ready().await.unwrap();
        let path = format!("/molecule.v1.Probe{marker}{n}/Call")
            .parse()
            .unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let status = grpc
            .unary(tonic::Request::new(()), path, codec)
            .await
            .expect_err("no such tenant");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    for n in 0..50 {
        let method = Method::from_bytes(format!("M{marker}{n}").as_bytes()).unwrap();
        app.raw(app.http.request(method, format!("{direct}/health")))
            .await;
    }
    let metrics = app
        .raw(app.http.get(format!("{direct}/metrics")))
        .await
        .text;
    assert!(
        !metrics.contains(&marker),
        "a client-chosen label in /metrics"
    );
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
}

#[tokio::test]
async fn a_dev_server_refuses_bearerless_requests_from_foreign_web_pages() {
    let app = spawn_app_with(Options {
        env: "dev",
        admin_token: false,
        ..Options::default()
    })
    .await;
    let refused = json!({"error": "origin not allowed"});
    // What a page on another site can send without a preflight: a text/plain POST.
    for (path, body) in [
        ("/workspaces", r#"{"name":"drive-by"}"#),
        ("/settings/secrets", r#"{"key":"K","value":"v"}"#),
        ("/org/tokens", r#"{"name":"stolen"}"#),
    ] {
        let request = app
            .http
            .post(format!("{}{path}", app.rest))
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body(body);
        let reply = app.raw(request).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::FORBIDDEN, refused.clone()),
            "{path}"
        );
    }
    assert_eq!(app.get("/workspaces", None).await.body, json!([]));
    assert_eq!(app.get("/org/tokens", None).await.body["count"], 0);
    // gRPC-Web from that page is refused the same way.
    let origin = ("origin", "https://evil.example".to_owned());
    let web = crate::grpc::grpc_web_list(&app, &[origin]).await;
    assert_eq!(web.headers()["grpc-status"], "7");

    // curl and the SDK (no Origin), the server's own pages and the allowed canvas still work;
    // JSON is parsed whatever the declared content type.
    let allowed_origins = [
        None,
        Some("http://localhost:3000".to_owned()),
        Some(app.rest.clone()),
    ];
    for (n, origin) in allowed_origins.into_iter().enumerate() {
        let mut request = app
            .http
            .post(format!("{}/workspaces", app.rest))
            .header("content-type", "text/plain")
            .body(format!(r#"{{"name":"local-{n}","external":true}}"#));
        if let Some(origin) = &origin {
            request = request.header("origin", origin);
        }
        let reply = app.raw(request).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{origin:?}: {}",
            reply.text
        );
    }
}

/// Audit N7: "same origin" trusted `Host`, so a DNS-rebinding page (its name resolving to the
/// developer's machine) drove a dev server: `Host: evil.example` with `Origin:
/// http://evil.example`, or no `Origin` at all, passed; so did the WebSocket.
#[tokio::test]
async fn a_dev_server_takes_bearerless_requests_only_under_local_names() {
    let app = spawn_app_with(Options {
        env: "dev",
        admin_token: false,
        dev_hosts: "devbox.lan",
        ..Options::default()
    })
    .await;
    let port = app.addr.port();
    let refused = json!({"error": "host not allowed"});
    let rebound = format!("evil.example:{port}");
    for origin in [Some("http://evil.example"), None] {
        let mut request = app
            .http
            .post(format!("{}/settings/secrets", app.rest))
            .header("host", &rebound)
            .json(&json!({"key": "K", "value": "v"}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let reply = app.raw(request).await;
        assert_eq!(
            (reply.status, &reply.body),
            (StatusCode::FORBIDDEN, &refused),
            "{origin:?}"
        );
    }
    let read = app
        .raw(
            app.http
                .get(format!("{}/workspaces", app.rest))
                .header("host", &rebound),
        )
        .await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    let mut upgrade = crate::events::connect(&app, &[("host", rebound.as_str())]).await;
    assert!(
        upgrade.is_err(),
        "the WebSocket opened under a foreign name"
    );
    upgrade = crate::events::connect(&app, &[]).await;
    assert!(upgrade.is_ok(), "and opens under the server's own");
    // Native gRPC addressed to that name.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .origin(format!("http://{rebound}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    let status = molecule::pb::workspaces_client::WorkspacesClient::new(channel)
        .list_workspaces(molecule::pb::ListWorkspacesRequest {})
        .await
        .expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::PermissionDenied, "host not allowed")
    );
    let secrets = app.get("/settings/secrets", None).await;
    assert_eq!(secrets.body, json!([]), "nothing was written");
    // Loopback names, localhost and configured hosts work; so does any host with a bearer.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("devbox.lan:{port}"),
        format!("[::1]:{port}"),
    ] {
        let reply = app
            .raw(
                app.http
                    .get(format!("{}/workspaces", app.rest))
                    .header("host", &host),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
    }
}

#[tokio::test]
async fn every_error_the_framework_gives_is_json_too() {
    let app = spawn_app().await;
    let bad_segment = app
        .get("/workspaces/%ff%fe", Some(&app.admin_token.clone()))
        .await;
    assert_eq!(
        (bad_segment.status, bad_segment.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "malformed request"})
        )
    );
    let wrong_method = app.call(Method::PUT, "/workspaces", None, None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"})
        )
    );
    assert!(wrong_method.headers.contains_key("allow"));
    // Raw, since HTTP clients refuse to build such requests.
    for length in [9 * 1024, 70 * 1024] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = app.rest.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET /workspaces/{} HTTP/1.1\r\nhost: x\r\n\r\n",
            "a".repeat(length)
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut chunk = [0u8; 4096];
            while !answer.ends_with(b"}") {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 414"),
            "{length}: {}",
            &answer[..answer.len().min(200)]
        );
        assert!(
            answer.ends_with(r#"{"error":"request URI too long"}"#),
            "{length}"
        );
    }
    // The server still serves after refusing a request line.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
}

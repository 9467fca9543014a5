//! The A2A proxy (docs/a2a.md §1, §3, §4): delivery to an agent shaped like the Python SDK's
//! inbound server, caller classes and the hierarchy, upstream statuses, dial-time URL safety, caps,
//! timeouts, the poll mailbox, and records that land after the caller has gone.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    response::IntoResponse,
    routing::{any, post},
};
use molecule::pb;
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::{
    grpc::authed,
    helpers::{Backend, Options, TestApp, eventually, spawn_app, spawn_on},
};

/// What the fake agent saw: each request's headers and JSON body.
#[derive(Clone, Default)]
pub(crate) struct Seen(pub(crate) Arc<Mutex<Vec<(HeaderMap, Value)>>>);

/// An agent on loopback: `/a2a/inbound` answers like the Python SDK (`{"status":"ok","result":…}`),
/// the other routes misbehave on purpose.
pub(crate) async fn fake_agent() -> (String, Seen) {
    let seen = Seen::default();
    async fn inbound(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> impl IntoResponse {
        seen.0.lock().unwrap().push((headers, body.clone()));
        Json(json!({"status": "ok", "result": body}))
    }
    async fn failing() -> impl IntoResponse {
        (
            AxumStatus::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "internal error: boom"})),
        )
    }
    async fn missing() -> impl IntoResponse {
        (AxumStatus::NOT_FOUND, "no such thing")
    }
    async fn redirect(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
        let location = format!("http://{}/followed", headers["host"].to_str().unwrap());
        let _ = seen;
        (AxumStatus::TEMPORARY_REDIRECT, [("location", location)])
    }
    async fn followed(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
        seen.0.lock().unwrap().push((headers, json!("followed")));
        Json(json!({"followed": true}))
    }
    async fn slow(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> impl IntoResponse {
        // Recorded on arrival: a caller that times out drops the connection mid-sleep.
        seen.0.lock().unwrap().push((headers, body));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Json(
            json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "message", "parts": [{"kind": "text", "text": "late"}]}}),
        )
    }
    /// Answers like an A2A agent: the task's text back in a message part.
    async fn answer(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> impl IntoResponse {
        seen.0.lock().unwrap().push((headers, body.clone()));
        let text = body["params"]["message"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default();
        Json(
            json!({"jsonrpc": "2.0", "id": body["id"], "result": {"kind": "message", "role": "agent",
            "parts": [{"kind": "text", "text": format!("done: {text}")}]}}),
        )
    }
    /// Reports the usage the caller put in `params.metadata.usage`, in `result` or at the top.
    async fn usage(Json(body): Json<Value>) -> impl IntoResponse {
        let usage = body["params"]["metadata"]["usage"].clone();
        if body["params"]["metadata"]["top_level"] == true {
            return Json(json!({"jsonrpc": "2.0", "id": body["id"], "result": {}, "usage": usage}));
        }
        Json(
            json!({"jsonrpc": "2.0", "id": body["id"], "result": {"kind": "message", "usage": usage}}),
        )
    }
    async fn huge() -> impl IntoResponse {
        "x".repeat(10 * 1024 * 1024 + 1)
    }
    async fn sse() -> impl IntoResponse {
        let events = futures_util::stream::unfold(0usize, |index| async move {
            let (delay, event) = SSE_EVENTS.get(index)?;
            tokio::time::sleep(Duration::from_millis(*delay)).await;
            Some((Ok::<_, std::io::Error>(event.to_string()), index + 1))
        });
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(events),
        )
    }
    let app = Router::new()
        .route("/a2a/inbound", post(inbound))
        .route("/sse", post(sse))
        .route("/failing", post(failing))
        .route("/missing", post(missing))
        .route("/redirect", post(redirect))
        .route("/followed", any(followed))
        .route("/slow", post(slow))
        .route("/huge", post(huge))
        .route("/usage", post(usage))
        .route("/answer", post(answer))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

/// An external workspace registered at `url`; returns its id and token.
pub(crate) async fn agent_at(
    app: &TestApp,
    name: &str,
    parent: Option<&str>,
    url: &str,
) -> (String, String) {
    let id = app
        .create_workspace(json!({"name": name, "external": true, "parent_id": parent}))
        .await;
    let reply = app.register(&id, url, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    (id, reply.body["auth_token"].as_str().unwrap().to_owned())
}

/// `POST /workspaces/{target}/a2a` with optional caller id, bearer and extra headers.
pub(crate) async fn send(
    app: &TestApp,
    target: &str,
    caller: Option<&str>,
    bearer: Option<&str>,
    body: Value,
    headers: &[(&str, &str)],
) -> crate::helpers::Reply {
    let mut request = app
        .http
        .post(format!("{}/workspaces/{target}/a2a", app.rest))
        .json(&body);
    if let Some(caller) = caller {
        request = request.header("x-workspace-id", caller);
    }
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.raw(request).await
}

/// An agent's SSE answer: (delay before it, bytes), in order. Line endings vary on purpose.
const SSE_EVENTS: [(u64, &str); 4] = [
    (
        10,
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"kind\":\"status-update\",\"taskId\":\"t\",\"status\":{\"state\":\"working\"},\"final\":false}}\n\n",
    ),
    (
        300,
        "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"kind\":\"artifact-update\",\"taskId\":\"t\",\"artifact\":{\"artifactId\":\"a\",\"parts\":[{\"kind\":\"text\",\"text\":\"part one\"}]}}}\r\n\r\n",
    ),
    (
        300,
        ": a comment line\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\n",
    ),
    (
        300,
        "data: \"result\":{\"kind\":\"status-update\",\"taskId\":\"t\",\"status\":{\"state\":\"completed\"},\"final\":true}}\n\n",
    ),
];

fn streaming_hello() -> Value {
    json!({"method": "message/stream", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "stream please"}]}}})
}

/// The target's `a2a_receive` rows, newest first, once there are at least `count` (they are
/// written after the answer).
pub(crate) async fn received(app: &TestApp, id: &str, count: usize) -> Vec<Value> {
    eventually(10, || async {
        let rows = app
            .admin_get(&format!("/workspaces/{id}/activity?type=a2a_receive"))
            .await;
        rows.body
            .as_array()
            .filter(|rows| rows.len() >= count)
            .cloned()
    })
    .await
}

/// Caller id, bearer, target, expected status and body.
type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a str, u16, Value);

fn hello() -> Value {
    json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}, "metadata": {"big": 12345678901234567890u64}}})
}

#[tokio::test]
async fn a_user_call_reaches_an_sdk_agent_and_comes_back_unchanged() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "sdk-agent", None, &format!("{base}/a2a/inbound")).await;
    let reply = send(
        &app,
        &id,
        None,
        Some(&app.admin_token),
        hello(),
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("a2a-version", "0.3"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.body["status"], "ok");
    let (headers, envelope) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(reply.body["result"], envelope);
    assert_eq!(envelope["jsonrpc"], "2.0");
    assert!(envelope["id"].is_string());
    assert!(envelope["params"]["message"]["messageId"].is_string());
    assert!(
        reply.text.contains("12345678901234567890"),
        "big numbers survive"
    );
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["a2a-version"], "0.3");
    assert!(
        headers.get("authorization").is_none(),
        "credentials never reach the agent"
    );
    assert!(headers.get("x-source-workspace-id").is_none());

    let rows = received(&app, &id, 1).await;
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[0]["method"], "message/send");
    assert_eq!(rows[0]["summary"], "message/send → sdk-agent");
    assert!(rows[0]["source_id"].is_null());
}

#[tokio::test]
async fn agent_callers_use_their_own_token_within_the_hierarchy() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let url = format!("{base}/a2a/inbound");
    let (lead, lead_token) = agent_at(&app, "lead", None, &url).await;
    let (dev, dev_token) = agent_at(&app, "dev", Some(&lead), &url).await;
    let (other_root, _) = agent_at(&app, "other-root", None, &url).await;
    let (cousin, cousin_token) = agent_at(&app, "cousin", Some(&other_root), &url).await;

    let ok = send(&app, &dev, Some(&lead), Some(&lead_token), hello(), &[]).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(
        seen.0.lock().unwrap().last().unwrap().0["x-source-workspace-id"],
        lead.as_str()
    );
    let up = send(&app, &lead, Some(&dev), Some(&dev_token), hello(), &[]).await;
    assert_eq!(up.status, StatusCode::OK);
    // Written in the background, after the answer.
    eventually(10, || async {
        let caller_row = app.admin_get(&format!("/workspaces/{dev}")).await.body;
        caller_row["last_outbound_at"].is_string().then_some(())
    })
    .await;

    let denied =
        json!({"error": "access denied: workspaces cannot communicate per hierarchy rules"});
    let cases: Vec<Case<'_>> = vec![
        (
            Some(&cousin),
            Some(&cousin_token),
            dev.as_str(),
            403,
            denied.clone(),
        ),
        // An unknown target is denied the same way, so ids cannot be probed.
        (
            Some(&dev),
            Some(&dev_token),
            "00000000-0000-4000-8000-000000000000",
            403,
            denied,
        ),
        (
            Some("system:scheduler"),
            Some(&dev_token),
            lead.as_str(),
            403,
            json!({"error": "invalid caller ID"}),
        ),
        (
            Some("webhook:github"),
            None,
            lead.as_str(),
            403,
            json!({"error": "invalid caller ID"}),
        ),
        (
            Some("not-a-uuid"),
            Some(&dev_token),
            lead.as_str(),
            403,
            json!({"error": "invalid caller ID"}),
        ),
        (
            Some(&dev),
            None,
            lead.as_str(),
            401,
            json!({"error": "missing caller auth token"}),
        ),
        // Someone else's token, even the target's own, is not the caller's.
        (
            Some(&dev),
            Some(&lead_token),
            lead.as_str(),
            401,
            json!({"error": "invalid caller auth token"}),
        ),
        (
            Some(&dev),
            Some(&app.admin_token),
            lead.as_str(),
            401,
            json!({"error": "invalid caller auth token"}),
        ),
        (
            None,
            None,
            lead.as_str(),
            401,
            json!({"error": "admin auth required"}),
        ),
        (
            None,
            Some(&dev_token),
            lead.as_str(),
            401,
            json!({"error": "invalid admin auth token"}),
        ),
        (
            None,
            Some(&app.admin_token),
            "00000000-0000-4000-8000-000000000000",
            404,
            json!({"error": "workspace not found"}),
        ),
    ];
    for (caller, bearer, target, status, body) in cases {
        let reply = send(&app, target, caller, bearer, hello(), &[]).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{caller:?} → {target}: {}",
            reply.text
        );
        assert_eq!(reply.body, body, "{caller:?} → {target}");
    }

    // A revoked token stops working at once.
    let tokens = app.admin_get(&format!("/workspaces/{dev}/tokens")).await;
    let token_id = tokens.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    app.admin(
        Method::DELETE,
        &format!("/workspaces/{dev}/tokens/{token_id}"),
        None,
    )
    .await;
    let revoked = send(&app, &lead, Some(&dev), Some(&dev_token), hello(), &[]).await;
    assert_eq!(revoked.body, json!({"error": "invalid caller auth token"}));
}

#[tokio::test]
async fn upstream_answers_keep_their_status_and_redirects_are_not_followed() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    for (path, status, error) in [
        ("/failing", 500, "internal error: boom"),
        ("/missing", 404, "Not Found"),
        ("/redirect", 307, "Temporary Redirect"),
    ] {
        let (id, _) = agent_at(
            &app,
            path.trim_start_matches('/'),
            None,
            &format!("{base}{path}"),
        )
        .await;
        let reply = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{path}");
        assert_eq!(reply.body, json!({"error": error}), "{path}");
        let rows = received(&app, &id, 1).await;
        assert_eq!(rows[0]["status"], "error", "{path}");
    }
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "the redirect was followed"
    );

    let (huge, _) = agent_at(&app, "huge", None, &format!("{base}/huge")).await;
    let reply = send(&app, &huge, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body, json!({"error": "agent response too large"}));
}

#[tokio::test]
async fn the_dialled_address_must_pass_the_url_policy() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "moved", None, &format!("{base}/a2a/inbound")).await;
    // Registration checked the URL; the proxy checks the address it actually dials, so a
    // stored URL that no longer passes (or a name that now resolves elsewhere) is refused.
    let blocked = json!({"error": "workspace URL is not publicly routable"});
    let cases = [
        ("http://10.1.2.3:9/", &blocked),
        ("http://169.254.169.254/latest/meta-data", &blocked),
        ("http://167772161/", &blocked),
        ("http://[::ffff:10.0.0.1]:80/", &blocked),
        ("http://[fd00::1]/", &blocked),
        (
            "http://127.0.0.1:1/",
            &json!({"error": "failed to reach workspace agent"}),
        ),
    ];
    for (round, (url, expected)) in cases.into_iter().enumerate() {
        app.db
            .execute_unprepared(&format!(
                "UPDATE workspaces SET url = '{url}' WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        // Any change event drops the proxy's cached route on every replica.
        app.admin(
            Method::PATCH,
            &format!("/workspaces/{id}"),
            Some(json!({"name": format!("moved-{round}")})),
        )
        .await;
        eventually(10, || async {
            let reply = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
            (reply.status == StatusCode::BAD_GATEWAY && reply.body == *expected).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn bad_bodies_budgets_and_timeouts_get_the_documented_answers() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "target", None, &format!("{base}/a2a/inbound")).await;
    for body in ["[1]", "{not json", "\"x\""] {
        let reply = app
            .raw(
                app.http
                    .post(format!("{}/workspaces/{id}/a2a", app.rest))
                    .bearer_auth(&app.admin_token)
                    .body(body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.text, r#"{"error":"invalid JSON"}"#);
    }
    let too_big = app
        .raw(
            app.http
                .post(format!("{}/workspaces/{id}/a2a", app.rest))
                .bearer_auth(&app.admin_token)
                .body(vec![b' '; 1024 * 1024 + 1]),
        )
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.text, r#"{"error":"request body too large"}"#);

    app.db
        .execute_unprepared(&format!(
            "UPDATE workspaces SET budget_limit = 100, monthly_spend = 100 WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let broke = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(broke.text, r#"{"error":"workspace budget limit exceeded"}"#);
    assert!(seen.0.lock().unwrap().is_empty());

    // A streaming call is never queued: a busy agent is a 503 with Retry-After.
    let (slow, _) = agent_at(&app, "slow", None, &format!("{base}/slow")).await;
    let busy = send(
        &app,
        &slow,
        None,
        Some(&app.admin_token),
        streaming_hello(),
        &[("x-timeout", "1")],
    )
    .await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers["retry-after"], "30");
    assert_eq!(
        busy.body,
        json!({"error": "workspace agent busy — retry after a short backoff", "busy": true, "retry_after": 30})
    );
}

#[tokio::test]
async fn a_busy_agent_gets_the_call_again_when_its_heartbeat_shows_capacity() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (slow, slow_token) = agent_at(&app, "slow", None, &format!("{base}/slow")).await;
    let message = json!({"jsonrpc": "2.0", "id": 9, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "once-only", "parts": [{"kind": "text", "text": "hi"}]}}});
    let first = send(
        &app,
        &slow,
        None,
        Some(&app.admin_token),
        message.clone(),
        &[("x-timeout", "1")],
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["queued"], true);
    assert_eq!(first.body["queue_depth"], 1);
    assert_eq!(
        first.body["message"],
        "workspace agent busy — request queued, will dispatch when capacity available"
    );
    let queue_id = first.body["queue_id"].as_str().unwrap().to_owned();
    // The same message while it waits is not queued twice.
    let again = send(
        &app,
        &slow,
        None,
        Some(&app.admin_token),
        message,
        &[("x-timeout", "1")],
    )
    .await;
    assert_eq!(again.body["queue_id"], queue_id.as_str());
    assert_eq!(again.body["queue_depth"], 1);

    // A heartbeat with spare capacity drains it: delivered once more, then completed.
    let beat = app
        .heartbeat(&slow, &slow_token, json!({"active_tasks": 0}))
        .await;
    assert_eq!(beat.status, StatusCode::OK);
    let status = eventually(15, || async {
        let status: Option<String> = sea_orm::ConnectionTrait::query_one_raw(
            &app.db,
            sea_orm::Statement::from_string(
                app.db.get_database_backend(),
                format!("SELECT status FROM a2a_queue WHERE id = '{queue_id}'"),
            ),
        )
        .await
        .unwrap()
        .and_then(|row| row.try_get::<String>("", "status").ok());
        status.filter(|status| status == "completed")
    })
    .await;
    assert_eq!(status, "completed");
    // Two timed-out attempts reached the agent before the drain; every copy kept its messageId.
    let deliveries = seen.0.lock().unwrap().clone();
    assert!(deliveries.len() >= 3, "{}", deliveries.len());
    assert!(
        deliveries
            .iter()
            .all(|(_, body)| body["params"]["message"]["messageId"] == "once-only")
    );
    let rows = received(&app, &slow, 3).await;
    assert!(rows.iter().any(|row| row["status"] == "ok"));
    assert!(rows.iter().any(|row| row["status"] == "error"));
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_cancel_the_call_or_its_records() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "slow", None, &format!("{base}/slow")).await;
    let gone = app
        .http
        .post(format!("{}/workspaces/{id}/a2a", app.rest))
        .bearer_auth(&app.admin_token)
        .json(&hello())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up first");
    let row = received(&app, &id, 1).await.remove(0);
    assert_eq!(row["status"], "ok");
    assert_eq!(row["response_body"]["result"]["parts"][0]["text"], "late");
    assert_eq!(seen.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn agents_without_an_inbound_url_read_calls_from_their_mailbox() {
    let app = spawn_app().await;
    let (polling, polling_token) = app.registered_agent("poller", None).await;
    let (peer, peer_token) = app.registered_agent("peer", None).await;
    let reply = send(&app, &polling, Some(&peer), Some(&peer_token), hello(), &[]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["queued"], true);
    assert_eq!(reply.body["delivery"], "poll");
    assert_eq!(
        reply.body["message"],
        "target agent polls for messages; reply will arrive asynchronously"
    );
    let activity_id = reply.body["activity_id"].as_str().unwrap();
    let inbox = app
        .get(
            &format!("/workspaces/{polling}/activity?type=a2a_receive&order=asc"),
            Some(&polling_token),
        )
        .await;
    let entry = &inbox.body[0];
    assert_eq!(entry["id"], activity_id);
    assert_eq!(entry["status"], "queued");
    assert_eq!(entry["source_id"], peer.as_str());
    assert_eq!(entry["data"]["source"], "peer_agent");
    assert_eq!(entry["data"]["text"], "hi");
    assert_eq!(entry["request_body"]["jsonrpc"], "2.0");

    // The same mailbox over gRPC: AgentInbound.Poll with the cursor of the last read.
    let mut inbound = pb::agent_inbound_client::AgentInboundClient::new(app.grpc_channel().await);
    let poll = |since_id: &str| {
        authed(
            pb::PollRequest {
                workspace_id: polling.clone(),
                since_id: since_id.into(),
                ..Default::default()
            },
            &polling_token,
        )
    };
    let second = send(&app, &polling, Some(&peer), Some(&peer_token), hello(), &[]).await;
    let rows = inbound
        .poll(poll(activity_id))
        .await
        .unwrap()
        .into_inner()
        .rows;
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    assert_eq!(ids, [second.body["activity_id"].as_str().unwrap()]);
    let lost = inbound
        .poll(poll("00000000-0000-4000-8000-000000000000"))
        .await
        .unwrap_err();
    // docs/registry.md §7.2 words it so; the SDK only looks at the 410.
    assert_eq!(lost.message(), "since_id cursor no longer available");
}

#[tokio::test]
async fn the_grpc_send_returns_raw_upstream_answers() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (ok, _) = agent_at(&app, "ok", None, &format!("{base}/a2a/inbound")).await;
    let (failing, _) = agent_at(&app, "failing", None, &format!("{base}/failing")).await;
    let mut client = pb::a2a_client::A2aClient::new(app.grpc_channel().await);
    for (target, status) in [(&ok, 200), (&failing, 500)] {
        let reply = client
            .send(authed(
                pb::ProxyRequest {
                    target_workspace_id: target.clone(),
                    body: hello().to_string().into_bytes(),
                    timeout_seconds: None,
                    forward_headers: Default::default(),
                },
                &app.admin_token,
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(pb::proxy_reply::Outcome::Delivered(delivered)) = reply.outcome else {
            panic!("expected a delivery");
        };
        assert_eq!(delivered.upstream_status, status);
        let body: Value = serde_json::from_slice(&delivered.body).unwrap();
        if status == 500 {
            assert_eq!(body, json!({"error": "internal error: boom"}));
        } else {
            assert_eq!(body["status"], "ok");
        }
    }
    let denied = client
        .send(tonic::Request::new(pb::ProxyRequest {
            target_workspace_id: ok.clone(),
            body: b"{}".to_vec(),
            timeout_seconds: None,
            forward_headers: Default::default(),
        }))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_streamed_answer_is_relayed_event_by_event_byte_for_byte() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "streamer", None, &format!("{base}/sse")).await;
    let started = std::time::Instant::now();
    let response = app
        .http
        .post(format!("{}/workspaces/{id}/a2a", app.rest))
        .bearer_auth(&app.admin_token)
        .json(&streaming_hello())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut chunks = response.bytes_stream();
    let mut relayed = Vec::new();
    let mut first_at = None;
    while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
        first_at.get_or_insert_with(|| started.elapsed());
        relayed.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    let sent: String = SSE_EVENTS.iter().map(|(_, event)| *event).collect();
    assert_eq!(
        String::from_utf8(relayed).unwrap(),
        sent,
        "byte-identical, in order"
    );
    // The first event is not held back until the stream ends (900 ms later).
    assert!(
        first_at.unwrap() + Duration::from_millis(500) < total,
        "first event at {first_at:?}, stream ended at {total:?}"
    );
    let rows = received(&app, &id, 1).await;
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[0]["method"], "message/stream");
    assert_eq!(
        rows[0]["response_body"]["result"]["status"]["state"],
        "completed"
    );
}

#[tokio::test]
async fn a_streamed_call_over_grpc_and_a_caller_that_leaves_midway() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (id, _) = agent_at(&app, "streamer", None, &format!("{base}/sse")).await;
    let mut client = pb::a2a_client::A2aClient::new(app.grpc_channel().await);
    let request = || {
        authed(
            pb::ProxyRequest {
                target_workspace_id: id.clone(),
                body: streaming_hello().to_string().into_bytes(),
                timeout_seconds: None,
                forward_headers: Default::default(),
            },
            &app.admin_token,
        )
    };
    let mut stream = client.stream(request()).await.unwrap().into_inner();
    let mut parts = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        parts.push(message.part.unwrap());
    }
    use pb::proxy_stream_event::Part;
    assert!(
        matches!(&parts[0], Part::Opened(opened) if opened.upstream_status == 200 && opened.content_type == "text/event-stream")
    );
    let events: Vec<String> = parts[1..parts.len() - 1]
        .iter()
        .map(|part| match part {
            Part::Event(event) => String::from_utf8(event.clone()).unwrap(),
            other => panic!("expected an event, got {other:?}"),
        })
        .collect();
    assert_eq!(
        events.len(),
        3,
        "the split third event is joined with its end"
    );
    assert_eq!(
        events.concat(),
        SSE_EVENTS.iter().map(|(_, e)| *e).collect::<String>()
    );
    assert!(matches!(parts.last(), Some(Part::Closed(_))));

    // Leave after the first event: the agent's stream is still read to its end and recorded.
    let mut stream = client.stream(request()).await.unwrap().into_inner();
    stream.message().await.unwrap();
    drop(stream);
    let rows = received(&app, &id, 2).await;
    assert_eq!(rows[0]["response_body"]["result"]["final"], true);
}

/// Opens `AgentInbound.Attach` with the hello frame; returns the agent's sending side and the
/// platform's frames.
pub(crate) async fn attach(
    app: &TestApp,
    id: &str,
    token: &str,
    max_concurrent: u32,
) -> Result<
    (
        tokio::sync::mpsc::Sender<pb::AttachFrame>,
        tonic::Streaming<pb::PlatformFrame>,
    ),
    tonic::Status,
> {
    let (frames, outbound) = tokio::sync::mpsc::channel(16);
    frames
        .send(pb::AttachFrame {
            frame: Some(pb::attach_frame::Frame::Hello(pb::Hello {
                workspace_id: id.to_owned(),
                max_concurrent,
            })),
        })
        .await
        .unwrap();
    let mut client = pb::agent_inbound_client::AgentInboundClient::new(app.grpc_channel().await);
    let inbound = client
        .attach(authed(
            tokio_stream::wrappers::ReceiverStream::new(outbound),
            token,
        ))
        .await?
        .into_inner();
    Ok((frames, inbound))
}

/// An agent attached over `AgentInbound.Attach`: answers `message/send` whole and
/// `message/stream` in two chunks; with `hang_up`, drops the stream on its first delivery.
async fn attached_agent(
    app: &TestApp,
    id: &str,
    token: &str,
    hang_up: bool,
) -> Result<tokio::task::JoinHandle<()>, tonic::Status> {
    let (frames, mut inbound) = attach(app, id, token, 2).await?;
    Ok(tokio::spawn(async move {
        while let Ok(Some(frame)) = inbound.message().await {
            let Some(pb::platform_frame::Frame::Delivery(delivery)) = frame.frame else {
                continue;
            };
            if hang_up {
                return;
            }
            let request: Value = serde_json::from_slice(&delivery.body).unwrap();
            let reply = |frame| pb::AttachFrame { frame: Some(frame) };
            if delivery.method == "message/stream" {
                for (index, last) in [(0, false), (1, true)] {
                    let event = format!(
                        "data: {}\n\n",
                        json!({"jsonrpc": "2.0", "id": request["id"], "result": {"index": index, "final": last}})
                    );
                    frames
                        .send(reply(pb::attach_frame::Frame::Chunk(pb::ReplyChunk {
                            delivery_id: delivery.delivery_id.clone(),
                            event: event.into_bytes(),
                            last,
                        })))
                        .await
                        .unwrap();
                }
            } else {
                let body = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"echo": delivery.method, "caller": delivery.caller_kind}});
                frames
                    .send(reply(pb::attach_frame::Frame::Reply(pb::Reply {
                        delivery_id: delivery.delivery_id,
                        status: 0,
                        body: body.to_string().into_bytes(),
                        content_type: "application/json".into(),
                    })))
                    .await
                    .unwrap();
            }
        }
    }))
}

/// `message/stream` by the admin through `app`: the answer must be SSE; returns its text.
async fn streamed_text(app: &TestApp, id: &str) -> String {
    let streamed = app
        .http
        .post(format!("{}/workspaces/{id}/a2a", app.rest))
        .bearer_auth(&app.admin_token)
        .json(&streaming_hello())
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    streamed.text().await.unwrap()
}

/// Waits for an attachment's stream to end, superseded by a newer one.
async fn assert_superseded(stream: &mut tonic::Streaming<pb::PlatformFrame>) {
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (ended.code(), ended.message()),
        (tonic::Code::Aborted, "superseded")
    );
}

#[tokio::test]
async fn an_attached_agent_behind_nat_receives_calls_and_streamed_calls() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("behind-nat", None).await;
    let (_, other_token) = app.registered_agent("other", None).await;
    let denied = attached_agent(&app, &id, &other_token, false)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let route = |token: String| {
        let app = &app;
        let path = format!("/workspaces/{id}/route");
        async move { app.get(&path, Some(&token)).await }
    };
    let before = route(app.admin_token.clone()).await;
    assert_eq!(before.body["route"], "mailbox", "{}", before.text);

    let _agent = attached_agent(&app, &id, &token, false).await.unwrap();
    // The operator's console and the agent itself see where calls now go; a stranger does not.
    for caller in [app.admin_token.clone(), token.clone()] {
        assert_eq!(
            route(caller).await.body,
            json!({"route": "attached", "url": ""})
        );
    }
    assert_eq!(
        route(other_token.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body["result"],
        json!({"echo": "message/send", "caller": "user"})
    );

    let text = streamed_text(&app, &id).await;
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[1].contains(r#""final":true"#));
    let rows = received(&app, &id, 2).await;
    assert!(rows.iter().all(|row| row["status"] == "ok"), "{rows:?}");
}

#[tokio::test]
async fn an_attachment_that_drops_mid_call_and_a_superseded_one() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("flaky", None).await;
    let _agent = attached_agent(&app, &id, &token, true).await.unwrap();
    let reply = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.body,
        json!({"error": "failed to read agent response", "delivery_confirmed": true})
    );

    // Once the stream is gone, calls fall back to the mailbox.
    let queued = eventually(10, || async {
        let reply = send(&app, &id, None, Some(&app.admin_token), hello(), &[]).await;
        (reply.status == StatusCode::ACCEPTED).then_some(reply.body)
    })
    .await;
    assert_eq!(queued["delivery"], "poll");

    // A second attachment supersedes the first, which ends ABORTED.
    let (frames, mut first) = attach(&app, &id, &token, 1).await.unwrap();
    let _second = attached_agent(&app, &id, &token, false).await.unwrap();
    assert_superseded(&mut first).await;
    drop(frames);
}

#[tokio::test]
async fn an_agent_attached_to_one_replica_receives_calls_taken_by_another() {
    let backend = Backend::fresh().await.with_redis();
    let first = spawn_on(backend.clone(), Options::default()).await;
    let second = spawn_on(backend, Options::default()).await;
    let (id, token) = first.registered_agent("roaming", None).await;
    let _agent = attached_agent(&second, &id, &token, false).await.unwrap();

    // The call arrives at the first replica and is delivered on the second one's stream.
    let reply = eventually(10, || async {
        let reply = send(&first, &id, None, Some(&first.admin_token), hello(), &[]).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    assert_eq!(
        reply.body["result"],
        json!({"echo": "message/send", "caller": "user"})
    );
    let text = streamed_text(&first, &id).await;
    assert_eq!(text.split_terminator("\n\n").count(), 2, "{text}");
    assert!(text.contains(r#""final":true"#));

    // Attaching again on the first replica ends the second one's stream, and calls taken by
    // the second replica now reach the first.
    let (frames, mut old) = attach(&second, &id, &token, 1).await.unwrap();
    let _moved = attached_agent(&first, &id, &token, false).await.unwrap();
    assert_superseded(&mut old).await;
    drop(frames);
    let reply = eventually(10, || async {
        let reply = send(&second, &id, None, Some(&second.admin_token), hello(), &[]).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    assert_eq!(reply.body["result"]["echo"], "message/send");

    // An agent on the other replica that drops its stream mid-call: the delivery is confirmed.
    let _flaky = attached_agent(&second, &id, &token, true).await.unwrap();
    let dropped = eventually(10, || async {
        let reply = send(&first, &id, None, Some(&first.admin_token), hello(), &[]).await;
        (reply.status == StatusCode::BAD_GATEWAY).then_some(reply)
    })
    .await;
    assert_eq!(
        dropped.body,
        json!({"error": "failed to read agent response", "delivery_confirmed": true})
    );

    // Only replicas may use the relay.
    let mut relay = pb::replicas_client::ReplicasClient::new(second.grpc_channel().await);
    let denied = relay
        .release(authed(
            pb::ReleaseRequest {
                workspace_id: id.clone(),
            },
            &second.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn stale_queue_items_are_dropped_by_an_admin() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (slow, _) = agent_at(&app, "slow", None, &format!("{base}/slow")).await;
    let queued = send(
        &app,
        &slow,
        None,
        Some(&app.admin_token),
        hello(),
        &[("x-timeout", "1")],
    )
    .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    for bad in ["0", "-5", "soon"] {
        let reply = app
            .admin(
                Method::POST,
                &format!("/admin/a2a-queue/drop-stale?max_age_minutes={bad}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            reply.text,
            r#"{"error":"max_age_minutes must be a positive integer"}"#
        );
    }
    // Younger than the default hour: kept; an age before any representable time drops nothing.
    for query in ["", "?max_age_minutes=9223372036854775807"] {
        let kept = app
            .admin(
                Method::POST,
                &format!("/admin/a2a-queue/drop-stale{query}"),
                None,
            )
            .await;
        assert_eq!(kept.text, r#"{"dropped":0}"#, "{query}");
    }
    let two_hours_earlier = match app.db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            "UPDATE a2a_queue SET enqueued_at = enqueued_at - INTERVAL '2 hours'"
        }
        _ => "UPDATE a2a_queue SET enqueued_at = datetime(enqueued_at, '-2 hours')",
    };
    app.db.execute_unprepared(two_hours_earlier).await.unwrap();
    let dropped = app
        .admin(
            Method::POST,
            &format!("/admin/a2a-queue/drop-stale?max_age_minutes=60&workspace_id={slow}"),
            None,
        )
        .await;
    assert_eq!(dropped.text, r#"{"dropped":1}"#);
    let denied = app
        .call(Method::POST, "/admin/a2a-queue/drop-stale", None, None)
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_agent_with_a_native_session_retries_itself() {
    // The heartbeat lands on one replica and the call on the other.
    let backend = Backend::fresh().await.with_redis();
    let app = spawn_on(backend.clone(), Options::default()).await;
    let other = spawn_on(backend, Options::default()).await;
    let (base, _seen) = fake_agent().await;
    let (slow, token) = agent_at(&app, "session", None, &format!("{base}/slow")).await;
    let beat = other
        .heartbeat(
            &slow,
            &token,
            json!({"active_tasks": 1, "runtime_metadata": {"capabilities": {"session": true}}}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK);
    let busy = send(
        &app,
        &slow,
        None,
        Some(&app.admin_token),
        hello(),
        &[("x-timeout", "1")],
    )
    .await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers["retry-after"], "30");
    assert_eq!(
        busy.body,
        json!({"error": "workspace agent busy — adapter handles retry (native_session)", "busy": true, "retry_after": 30, "native_session": true})
    );
}

#[tokio::test]
async fn a_silent_agent_that_keeps_beating_is_not_idle() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (slow, token) = agent_at(&app, "thinker", None, &format!("{base}/slow")).await;
    // The agent asks for a 1 s idle timeout; its answer takes 1.5 s.
    let metadata = json!({"runtime_metadata": {"idle_timeout_seconds": 1}});
    app.heartbeat(&slow, &token, metadata.clone()).await;
    let beating = {
        let (app_url, http, slow, token) = (
            app.rest.clone(),
            app.http.clone(),
            slow.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..15 {
                let mut body = json!({"workspace_id": slow});
                body["runtime_metadata"] = json!({"idle_timeout_seconds": 1});
                let _ = http
                    .post(format!("{app_url}/registry/heartbeat"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let answered = send(&app, &slow, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
    beating.await.unwrap();

    // Silent and not beating: the idle timer ends the wait, and the call is queued.
    let queued = send(&app, &slow, None, Some(&app.admin_token), hello(), &[]).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text);
    assert_eq!(queued.body["queued"], true);
}

#[tokio::test]
async fn token_usage_reported_by_answers_adds_up_on_the_target() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (id, token) = agent_at(&app, "counted", None, &format!("{base}/usage")).await;
    let (other, other_token) = agent_at(&app, "other", None, &format!("{base}/usage")).await;
    let before = app.admin_get(&format!("/workspaces/{id}/usage")).await;
    assert_eq!(
        before.body,
        json!({"workspace_id": id, "input_tokens": 0, "output_tokens": 0, "calls": 0, "updated_at": null})
    );
    for metadata in [
        json!({"usage": {"input_tokens": 120, "output_tokens": 30}}),
        json!({"usage": {"input_tokens": 5, "output_tokens": 0}, "top_level": true}),
        // Zero, negative and missing counts add nothing.
        json!({"usage": {"input_tokens": 0, "output_tokens": 0}}),
        json!({"usage": {"input_tokens": -7}}),
        json!({}),
    ] {
        let body = json!({"method": "message/send", "params": {"message": {"role": "user", "parts": []}, "metadata": metadata}});
        let reply = send(&app, &id, None, Some(&app.admin_token), body, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    received(&app, &id, 5).await;
    let totals = eventually(10, || async {
        let reply = app.admin_get(&format!("/workspaces/{id}/usage")).await;
        (reply.body["calls"] == 2).then_some(reply)
    })
    .await;
    assert_eq!(totals.status, StatusCode::OK);
    assert_eq!(
        (&totals.body["input_tokens"], &totals.body["output_tokens"]),
        (&json!(125), &json!(30))
    );
    assert!(totals.body["updated_at"].is_string());
    // A later answer adds to the stored totals.
    let body = json!({"method": "message/send", "params": {"message": {"role": "user", "parts": []}, "metadata": {"usage": {"input_tokens": 1, "output_tokens": 1}}}});
    send(&app, &id, None, Some(&app.admin_token), body, &[]).await;
    let totals = eventually(10, || async {
        let reply = app.admin_get(&format!("/workspaces/{id}/usage")).await;
        (reply.body["calls"] == 3).then_some(reply)
    })
    .await;
    assert_eq!(
        (&totals.body["input_tokens"], &totals.body["output_tokens"]),
        (&json!(126), &json!(31))
    );

    // The workspace reads its own totals; another workspace's token cannot.
    let own = app
        .raw(
            app.http
                .get(format!("{}/workspaces/{id}/usage", app.rest))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(own.body, totals.body);
    let foreign = app
        .raw(
            app.http
                .get(format!("{}/workspaces/{id}/usage", app.rest))
                .bearer_auth(&other_token),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED);
    let untouched = app.admin_get(&format!("/workspaces/{other}/usage")).await;
    assert_eq!(untouched.body["calls"], 0);
    let unknown = app
        .admin_get(&format!("/workspaces/{}/usage", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        (unknown.status, unknown.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );

    let mut client = pb::a2a_client::A2aClient::new(app.grpc_channel().await);
    let usage = client
        .get_token_usage(authed(
            pb::TokenUsageRequest {
                workspace_id: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.calls),
        (126, 31, 3)
    );
    let malformed = client
        .get_token_usage(authed(
            pb::TokenUsageRequest {
                workspace_id: "not-a-uuid".into(),
            },
            &app.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
}

/// The Python SDK's `PollDelivery.run_once`, step for step: fetch `type=a2a_receive&limit=N`
/// (with `since_id` once it has a cursor), dispatch every row in the order given, and keep
/// the last row's id as the cursor. Returns the texts dispatched.
async fn sdk_poll_once(
    app: &TestApp,
    id: &str,
    token: &str,
    cursor: &mut Option<String>,
) -> Vec<String> {
    let mut path = format!("/workspaces/{id}/activity?type=a2a_receive&limit=100");
    if let Some(since) = cursor.as_deref() {
        path.push_str(&format!("&since_id={since}"));
    }
    let batch = app.get(&path, Some(token)).await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.text);
    let mut dispatched = Vec::new();
    for row in batch.body.as_array().unwrap() {
        dispatched.push(row["data"]["text"].as_str().unwrap_or("").to_owned());
        *cursor = Some(row["id"].as_str().unwrap().to_owned());
    }
    dispatched
}

#[tokio::test]
async fn a_fresh_sdk_agent_dispatches_its_queued_messages_once_and_in_order() {
    let app = spawn_app().await;
    let (polling, polling_token) = app.registered_agent("sdk-poller", None).await;
    let (peer, peer_token) = app.registered_agent("sender", None).await;
    let texts = ["first", "second", "third", "fourth"];
    for text in texts {
        let message = json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}}});
        let reply = send(&app, &polling, Some(&peer), Some(&peer_token), message, &[]).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    // The agent itself sent a notify: not an inbound message.
    let notified = app
        .call(
            Method::POST,
            &format!("/workspaces/{polling}/notify"),
            Some(&polling_token),
            Some(json!({"message": "to my user"})),
        )
        .await;
    assert_eq!(notified.status, StatusCode::OK, "{}", notified.text);

    let mut cursor = None;
    let mut dispatched = Vec::new();
    for _ in 0..3 {
        dispatched.extend(sdk_poll_once(&app, &polling, &polling_token, &mut cursor).await);
    }
    assert_eq!(dispatched, texts);
    // Later messages arrive after the cursor, once.
    let late = json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "fifth"}]}}});
    send(&app, &polling, Some(&peer), Some(&peer_token), late, &[]).await;
    assert_eq!(
        sdk_poll_once(&app, &polling, &polling_token, &mut cursor).await,
        ["fifth"]
    );
    assert!(
        sdk_poll_once(&app, &polling, &polling_token, &mut cursor)
            .await
            .is_empty()
    );

    // Operators (and the canvas) still read newest first.
    let operator = app
        .admin_get(&format!(
            "/workspaces/{polling}/activity?type=a2a_receive&limit=100"
        ))
        .await;
    let newest = &operator.body[0]["data"]["text"];
    assert_eq!(newest, "fifth");
}

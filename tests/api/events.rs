//! The event log and its live fan-out: `/events`, `/ws` for operators and agents, and two
//! replicas sharing Postgres/SQLite + Redis (docs/registry.md §6).

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::helpers::{Backend, Options, TestApp, spawn_app, spawn_on};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(
    app: &TestApp,
    headers: &[(&str, &str)],
) -> Result<Socket, tungstenite::Error> {
    let mut request = app.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    connect_async(request).await.map(|(socket, _)| socket)
}

/// The next event frame, parsed.
pub(crate) async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Asserts nothing arrives for a short while.
async fn assert_quiet(socket: &mut Socket) {
    let frame = tokio::time::timeout(Duration::from_millis(400), socket.next()).await;
    assert!(frame.is_err(), "unexpected frame: {frame:?}");
}

fn refused_status(error: tungstenite::Error) -> (u16, Value) {
    match error {
        tungstenite::Error::Http(response) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn the_event_log_is_newest_first_and_filterable() {
    let app = spawn_app().await;
    let a = app.create_workspace(json!({"name": "a"})).await;
    let b = app
        .create_workspace(json!({"name": "b", "external": true}))
        .await;
    let all = app.admin_get("/events").await;
    let types: Vec<_> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("WORKSPACE_AWAITING_AGENT"),
            json!("WORKSPACE_PROVISIONING"),
            json!("WORKSPACE_PROVISIONING")
        ]
    );
    let first = &all.body[2];
    assert_eq!(first["workspace_id"], a);
    assert_eq!(
        first["payload"],
        json!({"name": "a", "tier": 3, "runtime": "langgraph"})
    );
    assert!(all.text.starts_with(r#"[{"id":"#));
    let only_b = app.admin_get(&format!("/events/{b}")).await;
    assert_eq!(only_b.body.as_array().unwrap().len(), 2);
    let bad = app.admin_get("/events/not-a-uuid").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body, json!({"error": "invalid workspace ID"}));
}

#[tokio::test]
async fn an_operator_socket_sees_every_event_in_the_documented_envelope() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", app.admin_token);
    let mut socket = connect(&app, &[("authorization", &bearer)]).await.unwrap();
    let id = app
        .create_workspace(json!({"name": "watched", "external": true}))
        .await;
    let event = next_event(&mut socket).await;
    assert_eq!(event["event"], "WORKSPACE_PROVISIONING");
    assert_eq!(event["workspace_id"], id);
    assert_eq!(
        event["payload"],
        json!({"name": "watched", "tier": 3, "runtime": "external"})
    );
    let timestamp = event["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{timestamp}"
    );
    let keys: Vec<_> = event.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["event", "workspace_id", "timestamp", "payload"]);
    assert_eq!(
        next_event(&mut socket).await["event"],
        "WORKSPACE_AWAITING_AGENT"
    );
}

#[tokio::test]
async fn sockets_authenticate_before_upgrading() {
    let app = spawn_app().await;
    let (status, body) = refused_status(connect(&app, &[]).await.unwrap_err());
    assert_eq!(
        (status, body),
        (401, json!({"error": "admin auth required"}))
    );
    let id = app.create_workspace(json!({"name": "agent"})).await;
    let token = app.workspace_token(&id).await;
    // A workspace token is not an operator credential.
    let bearer = format!("Bearer {token}");
    let (status, _) = refused_status(
        connect(&app, &[("authorization", &bearer)])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    // An agent must present its own token.
    let (status, body) =
        refused_status(connect(&app, &[("x-workspace-id", &id)]).await.unwrap_err());
    assert_eq!(
        (status, body),
        (401, json!({"error": "missing workspace auth token"}))
    );
    let other = app.create_workspace(json!({"name": "other"})).await;
    let (status, body) = refused_status(
        connect(
            &app,
            &[("x-workspace-id", &other), ("authorization", &bearer)],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid workspace auth token"}))
    );
    let (status, body) = refused_status(
        connect(
            &app,
            &[("x-workspace-id", "nope"), ("authorization", &bearer)],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (status, body),
        (400, json!({"error": "invalid workspace ID"}))
    );
}

#[tokio::test]
async fn an_agent_socket_sees_itself_and_its_peers_only() {
    let app = spawn_app().await;
    let team = app.create_workspace(json!({"name": "team"})).await;
    let me = app
        .create_workspace(json!({"name": "me", "parent_id": team}))
        .await;
    let sibling = app
        .create_workspace(json!({"name": "sibling", "parent_id": team}))
        .await;
    let stranger_root = app.create_workspace(json!({"name": "stranger-root"})).await;
    let stranger = app
        .create_workspace(json!({"name": "stranger", "parent_id": stranger_root}))
        .await;
    let token = app.workspace_token(&me).await;
    let bearer = format!("Bearer {token}");
    let mut socket = connect(&app, &[("x-workspace-id", &me), ("authorization", &bearer)])
        .await
        .unwrap();

    for (id, visible) in [
        (&stranger, false),
        (&sibling, true),
        (&team, true),
        (&me, true),
    ] {
        app.admin(Method::POST, &format!("/workspaces/{id}/restart"), None)
            .await;
        if visible {
            let event = next_event(&mut socket).await;
            assert_eq!(
                (event["event"].as_str(), event["workspace_id"].as_str()),
                (Some("WORKSPACE_PROVISIONING"), Some(id.as_str()))
            );
        } else {
            assert_quiet(&mut socket).await;
        }
    }
}

#[tokio::test]
async fn an_event_on_one_replica_reaches_a_socket_on_the_other_exactly_once() {
    let backend = Backend::fresh().await.with_redis();
    let first = spawn_on(backend.clone(), Options::default()).await;
    let second = spawn_on(backend, Options::default()).await;
    let bearer = format!("Bearer {}", second.admin_token);
    let mut on_second = connect(&second, &[("authorization", &bearer)])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", first.admin_token);
    let mut on_first = connect(&first, &[("authorization", &bearer)])
        .await
        .unwrap();

    let id = first
        .create_workspace(json!({"name": "cross", "external": true}))
        .await;
    for socket in [&mut on_second, &mut on_first] {
        let event = next_event(socket).await;
        assert_eq!(
            (event["event"].as_str(), event["workspace_id"].as_str()),
            (Some("WORKSPACE_PROVISIONING"), Some(id.as_str()))
        );
        assert_eq!(
            next_event(socket).await["event"],
            "WORKSPACE_AWAITING_AGENT"
        );
        assert_quiet(socket).await;
    }
    // And back: the second replica's change reaches the first replica's socket, once.
    second
        .admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    for socket in [&mut on_first, &mut on_second] {
        assert_eq!(next_event(socket).await["event"], "WORKSPACE_PAUSED");
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_and_finishes_the_server() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", app.admin_token);
    let mut socket = connect(&app, &[("authorization", &bearer)]).await.unwrap();
    app.shutdown.cancel();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "socket closed on shutdown");
    let finished = tokio::time::timeout(Duration::from_secs(10), app.server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "server finished cleanly: {finished:?}"
    );
}

/// The next event of this type, skipping others (heartbeats, activity).
async fn next_of(socket: &mut Socket, event_type: &str) -> Value {
    loop {
        let event = next_event(socket).await;
        if event["event"] == event_type {
            return event;
        }
    }
}

#[tokio::test]
async fn conversation_text_reaches_operators_and_participants_only() {
    let app = spawn_app().await;
    let (base, _) = crate::a2a::fake_agent().await;
    let (target, target_token) =
        crate::a2a::agent_at(&app, "talker", None, &format!("{base}/a2a/inbound")).await;
    let (bystander, bystander_token) = app.registered_agent("bystander-root", None).await;
    let watch = |id: String, token: String| {
        let app = &app;
        async move {
            let bearer = format!("Bearer {token}");
            connect(app, &[("x-workspace-id", &id), ("authorization", &bearer)])
                .await
                .unwrap()
        }
    };
    let mut operator = connect(
        &app,
        &[("authorization", &format!("Bearer {}", app.admin_token))],
    )
    .await
    .unwrap();
    let mut participant = watch(target.clone(), target_token).await;
    let mut other_root = watch(bystander, bystander_token).await;

    let said = json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "the launch code is 1234"}]}}});
    let reply = crate::a2a::send(&app, &target, None, Some(&app.admin_token), said, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    for socket in [&mut operator, &mut participant] {
        let event = next_of(socket, "A2A_RESPONSE").await;
        assert!(event["payload"]["response_body"].is_object(), "{event}");
    }
    let seen = next_of(&mut other_root, "A2A_RESPONSE").await;
    assert_eq!(seen["workspace_id"], target.as_str());
    assert_eq!(seen["payload"]["method"], "message/send");
    assert!(seen["payload"].get("response_body").is_none(), "{seen}");
    assert!(!seen.to_string().contains("1234"), "{seen}");
}

/// The reference's AG-UI stream: a `: ping` first, then the workspace's own events as
/// `data: {"type","timestamp","data"}`, and none of another workspace's.
#[tokio::test]
async fn a_workspace_event_stream_speaks_ag_ui() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("streamed", None).await;
    let (other, _) = app.registered_agent("elsewhere", None).await;
    let response = app
        .http
        .get(format!("{}/workspaces/{id}/events/stream", app.rest))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut read_until = async |needle: &str, text: &mut String| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !text.contains(needle) {
                let chunk = body.next().await.unwrap().unwrap();
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in {text:?}"));
    };
    read_until(": ping", &mut text).await;
    app.admin(Method::POST, &format!("/workspaces/{other}/pause"), None)
        .await;
    app.admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    read_until("WORKSPACE_PAUSED", &mut text).await;
    let frame = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let frame: Value = serde_json::from_str(frame).unwrap();
    assert_eq!(frame["type"], "WORKSPACE_PAUSED");
    assert!(frame["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(frame["data"]["name"], "streamed");
    assert!(!text.contains("elsewhere"), "{text}");

    let refused = app
        .get(&format!("/workspaces/{other}/events/stream"), Some(&token))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

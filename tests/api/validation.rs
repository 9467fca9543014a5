//! Strings the API stores (docs/decisions.md D18): U+0000 anywhere — a string field, or an escape
//! in JSON text — gets a 400 naming the field, over REST and gRPC, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{grpc::authed, helpers::spawn_app};

#[tokio::test]
async fn u0000_is_refused_with_the_field_named_and_nothing_changes() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let before = app.admin_get(&format!("/workspaces/{id}")).await.body;
    let nul = "bad\u{0}byte";
    let cases: Vec<(Method, String, Option<&str>, Value, &str)> = vec![
        (
            Method::POST,
            "/workspaces".into(),
            None,
            json!({"name": nul}),
            "name",
        ),
        (
            Method::PATCH,
            format!("/workspaces/{id}"),
            None,
            json!({"role": nul}),
            "role",
        ),
        (
            Method::POST,
            "/registry/heartbeat".into(),
            Some(&token),
            json!({"workspace_id": id, "sample_error": nul}),
            "sample_error",
        ),
        (
            Method::POST,
            "/registry/heartbeat".into(),
            Some(&token),
            json!({"workspace_id": id, "current_task": nul}),
            "current_task",
        ),
        (
            Method::POST,
            "/registry/update-card".into(),
            Some(&token),
            json!({"workspace_id": id, "agent_card": {"name": nul}}),
            "agent_card",
        ),
        (
            Method::POST,
            "/registry/register".into(),
            Some(&token),
            json!({"id": id, "url": "remote://no-inbound", "agent_card": {"name": nul}}),
            "agent_card",
        ),
        (
            Method::POST,
            format!("/workspaces/{id}/activity"),
            Some(&token),
            json!({"activity_type": "task_update", "summary": nul}),
            "summary",
        ),
        (
            Method::POST,
            format!("/workspaces/{id}/notify"),
            Some(&token),
            json!({"message": nul}),
            "message",
        ),
        (
            Method::POST,
            format!("/workspaces/{id}/secrets"),
            None,
            json!({"key": "API_KEY", "value": nul}),
            "value",
        ),
        (
            Method::POST,
            "/org/tokens".into(),
            None,
            json!({"name": nul}),
            "name",
        ),
        (
            Method::POST,
            format!("/workspaces/{id}/a2a"),
            None,
            json!({"method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": nul}]}}}),
            "body",
        ),
    ];
    for (method, path, bearer, body, field) in cases {
        let bearer = bearer.map_or_else(|| app.admin_token.clone(), str::to_owned);
        let reply = app
            .call(method.clone(), &path, Some(&bearer), Some(body))
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("{field} must not contain U+0000")})
            ),
            "{method} {path}"
        );
    }
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body,
        before
    );
    assert_eq!(
        app.admin_get("/workspaces")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.admin_get("/org/tokens").await.body["count"], 0);
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}/secrets"))
            .await
            .body,
        json!([])
    );

    // The same rule over gRPC, with the REST body in the details.
    let mut client = molecule::pb::registry_client::RegistryClient::new(app.grpc_channel().await);
    let refused = client
        .heartbeat(authed(
            molecule::pb::HeartbeatRequest {
                workspace_id: id.clone(),
                sample_error: nul.into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(refused.message(), "sample_error must not contain U+0000");
    assert_eq!(crate::grpc::error_body(&refused).0, 400);
    // A clean beat after all that is still accepted, and the flush is not blocked.
    let clean = app
        .heartbeat(
            &id,
            &token,
            json!({"uptime_seconds": 42, "sample_error": "fine"}),
        )
        .await;
    assert_eq!(clean.status, StatusCode::OK, "{}", clean.text);
}

#[tokio::test]
async fn an_escaped_backslash_before_u0000_is_just_text() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let reply = app
        .call(
            Method::POST,
            "/registry/update-card",
            Some(&token),
            Some(json!({"workspace_id": id, "agent_card": {"name": "a\\u0000b"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let card = &app.admin_get(&format!("/workspaces/{id}")).await.body["agent_card"];
    assert_eq!(card["name"], "a\\u0000b");
}

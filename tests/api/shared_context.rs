//! Shared context (docs/runtime.md §6, M6): `200 []` when nothing is published, a parent's
//! published files readable by its descendants with their own tokens, and refusals that change
//! nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

/// What coordinator.py sends: the parent's path, its own id in `X-Workspace-ID`.
async fn read(app: &TestApp, parent: &str, caller: &str, token: &str) -> Reply {
    app.raw(
        app.http
            .get(format!("{}/workspaces/{parent}/shared-context", app.rest))
            .header("x-workspace-id", caller)
            .bearer_auth(token),
    )
    .await
}

async fn publish(app: &TestApp, id: &str, token: &str, body: Value) -> Reply {
    app.call(
        Method::PUT,
        &format!("/workspaces/{id}/shared-context"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn descendants_read_what_their_parent_publishes() {
    let app = spawn_app().await;
    let (lead, lead_token) = app.registered_agent("lead", None).await;
    let (child, child_token) = app.registered_agent("child", Some(&lead)).await;
    let (grandchild, grandchild_token) = app.registered_agent("grandchild", Some(&child)).await;
    let (_, stranger_token) = app.registered_agent("stranger", None).await;

    let empty = read(&app, &lead, &child, &child_token).await;
    assert_eq!((empty.status, empty.body), (StatusCode::OK, json!([])));

    let files = json!([{"path": "docs/conventions.md", "content": "Use snake_case."}, {"path": "GOALS.md", "content": "Ship 1.2."}]);
    let published = publish(&app, &lead, &lead_token, files.clone()).await;
    assert_eq!(
        (published.status, &published.body),
        (StatusCode::OK, &files)
    );
    for (caller, token) in [
        (&child, &child_token),
        (&grandchild, &grandchild_token),
        (&lead, &lead_token),
    ] {
        let reply = read(&app, &lead, caller, token).await;
        assert_eq!(
            (reply.status, &reply.body),
            (StatusCode::OK, &files),
            "{caller}"
        );
    }
    assert_eq!(
        app.admin_get(&format!("/workspaces/{lead}/shared-context"))
            .await
            .body,
        files
    );

    // Not a descendant, or a claim that is not the token's own workspace.
    let stranger = app
        .get(
            &format!("/workspaces/{lead}/shared-context"),
            Some(&stranger_token),
        )
        .await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    let upward = read(&app, &child, &lead, &lead_token).await;
    assert_eq!(
        upward.status,
        StatusCode::UNAUTHORIZED,
        "a parent does not read its child's context"
    );
    let impersonated = read(&app, &lead, &grandchild, &child_token).await;
    assert_eq!(impersonated.status, StatusCode::UNAUTHORIZED);

    // Republishing replaces the set; an empty set clears it.
    publish(&app, &lead, &lead_token, json!([])).await;
    assert_eq!(
        read(&app, &lead, &child, &child_token).await.body,
        json!([])
    );
}

#[tokio::test]
async fn bad_sets_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (lead, lead_token) = app.registered_agent("lead", None).await;
    let (child, child_token) = app.registered_agent("child", Some(&lead)).await;
    let kept = json!([{"path": "a.md", "content": "kept"}]);
    publish(&app, &lead, &lead_token, kept.clone()).await;
    let cases = [
        (
            json!([{"path": "../etc/passwd", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            json!([{"path": "/abs", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            json!([{"path": "", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        // Audit N14: other spellings of `a/b` would be a second entry for the same file.
        (
            json!([{"path": "a/./b", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            json!([{"path": "a//b", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            json!([{"path": "a/b/", "content": "x"}]),
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            json!([{"path": "a", "content": "x"}, {"path": "a", "content": "y"}]),
            StatusCode::BAD_REQUEST,
            "duplicate path",
        ),
        (
            json!([{"path": "big.md", "content": "x".repeat(256 * 1024)}]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "shared context too large",
        ),
        (
            json!({"path": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
    ];
    for (body, status, error) in cases {
        let reply = publish(&app, &lead, &lead_token, body).await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": error}))
        );
    }
    // Only the workspace itself (or an operator) publishes.
    let by_child = publish(&app, &lead, &child_token, json!([])).await;
    assert_eq!(by_child.status, StatusCode::UNAUTHORIZED);
    assert_eq!(read(&app, &lead, &child, &child_token).await.body, kept);
    let unknown = app
        .admin_get(&format!(
            "/workspaces/{}/shared-context",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

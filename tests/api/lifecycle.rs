//! Delete, state, pause, resume, restart and the provision-timeout sweep (docs/workspaces.md
//! §2.5–2.7, docs/registry.md §5.4).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, eventually, spawn_app, spawn_app_with};

#[tokio::test]
async fn delete_asks_for_confirmation_then_cascades_and_revokes_tokens() {
    let app = spawn_app().await;
    let root = app.create_workspace(json!({"name": "root"})).await;
    let child = app
        .create_workspace(json!({"name": "child", "parent_id": root}))
        .await;
    let grandchild = app
        .create_workspace(json!({"name": "grandchild", "parent_id": child}))
        .await;
    let token = app.workspace_token(&grandchild).await;

    let reply = app
        .admin(Method::DELETE, &format!("/workspaces/{root}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.body,
        json!({
            "status": "confirmation_required",
            "message": "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.",
            "children": [{"id": child, "name": "child"}],
            "children_count": 1
        })
    );
    assert_eq!(
        app.admin_get("/workspaces")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let reply = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{root}?confirm=true"),
            None,
        )
        .await;
    assert_eq!(
        reply.body,
        json!({"status": "removed", "cascade_deleted": 2})
    );
    assert_eq!(app.admin_get("/workspaces").await.body, json!([]));
    // Removed rows are still readable by admins, as removed.
    let view = app.admin_get(&format!("/workspaces/{child}")).await;
    assert_eq!(view.body["status"], "removed");
    // Their tokens are revoked, and the agent learns it was deleted.
    assert_eq!(
        app.get(&format!("/workspaces/{grandchild}"), Some(&token))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let state = app
        .get(&format!("/workspaces/{grandchild}/state"), Some(&token))
        .await;
    assert_eq!(state.status, StatusCode::NOT_FOUND);
    assert_eq!(
        state.body,
        json!({"workspace_id": grandchild, "status": "removed", "deleted": true})
    );
    assert_eq!(
        app.event_types(&root).await.last().unwrap(),
        "WORKSPACE_REMOVED"
    );
    let events = app.admin_get(&format!("/events/{root}")).await;
    assert_eq!(events.body[0]["payload"], json!({"cascade_deleted": 2}));
    assert_eq!(
        app.admin_get(&format!("/events/{child}")).await.body[0]["payload"],
        json!({})
    );

    // Idempotent.
    let again = app
        .admin(Method::DELETE, &format!("/workspaces/{root}"), None)
        .await;
    assert_eq!(
        again.body,
        json!({"status": "removed", "cascade_deleted": 0})
    );
    let unknown = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, json!({"error": "workspace not found"}));
}

#[tokio::test]
async fn purge_removes_every_row() {
    let app = spawn_app().await;
    let root = app.create_workspace(json!({"name": "root"})).await;
    let child = app
        .create_workspace(json!({"name": "child", "parent_id": root}))
        .await;
    let reply = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{root}?confirm=true&purge=true"),
            None,
        )
        .await;
    assert_eq!(
        reply.body,
        json!({"status": "purged", "cascade_deleted": 1})
    );
    for id in [&root, &child] {
        assert_eq!(
            app.admin_get(&format!("/workspaces/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
        let state = app.get(&format!("/workspaces/{id}/state"), None).await;
        assert_eq!(state.body, json!({"workspace_id": id, "deleted": true}));
    }
}

#[tokio::test]
async fn state_reports_status_and_pause_to_the_agent() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "w", "external": true}))
        .await;
    let token = app.workspace_token(&id).await;
    let path = format!("/workspaces/{id}/state");
    assert_eq!(
        app.get(&path, None).await.body,
        json!({"error": "missing workspace auth token"})
    );
    let state = app.get(&path, Some(&token)).await;
    assert_eq!(
        state.body,
        json!({"workspace_id": id, "status": "awaiting_agent", "paused": false, "deleted": false})
    );
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/pause"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        app.get(&path, Some(&token)).await.body["paused"],
        json!(true)
    );
    assert_eq!(
        app.get("/workspaces/zzz/state", None).await.body,
        json!({"error": "invalid workspace ID"})
    );
}

#[tokio::test]
async fn pause_cascades_and_resume_respects_paused_parents() {
    let app = spawn_app().await;
    let parent = app
        .create_workspace(json!({"name": "parent", "external": true}))
        .await;
    let child = app
        .create_workspace(json!({"name": "child", "parent_id": parent}))
        .await;
    let paused = app
        .admin(Method::POST, &format!("/workspaces/{parent}/pause"), None)
        .await;
    assert_eq!(paused.body, json!({"status": "paused", "paused_count": 2}));
    let again = app
        .admin(Method::POST, &format!("/workspaces/{parent}/pause"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.body,
        json!({"error": "workspace not found or already paused"})
    );
    assert_eq!(
        app.event_types(&child).await.last().unwrap(),
        "WORKSPACE_PAUSED"
    );

    let blocked = app
        .admin(Method::POST, &format!("/workspaces/{child}/resume"), None)
        .await;
    assert_eq!(blocked.status, StatusCode::CONFLICT);
    assert_eq!(
        blocked.body,
        json!({"error": "parent workspace \"parent\" is paused — resume it first"})
    );
    let restart = app
        .admin(Method::POST, &format!("/workspaces/{child}/restart"), None)
        .await;
    assert_eq!(
        restart.body,
        json!({"error": "parent workspace \"parent\" is paused — resume it first"})
    );

    let resumed = app
        .admin(Method::POST, &format!("/workspaces/{parent}/resume"), None)
        .await;
    assert_eq!(
        resumed.body,
        json!({"status": "awaiting_agent", "resumed_count": 2})
    );
    let child_view = app.admin_get(&format!("/workspaces/{child}")).await;
    assert_eq!(child_view.body["status"], "provisioning");
    let not_paused = app
        .admin(Method::POST, &format!("/workspaces/{parent}/resume"), None)
        .await;
    assert_eq!(
        not_paused.body,
        json!({"error": "workspace not found or not paused"})
    );
}

#[tokio::test]
async fn restart_is_for_platform_runtimes_only() {
    let app = spawn_app().await;
    let external = app
        .create_workspace(json!({"name": "ext", "external": true}))
        .await;
    let reply = app
        .admin(
            Method::POST,
            &format!("/workspaces/{external}/restart"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.body,
        json!({"error": "external workspaces are restarted by their operator, not the platform"})
    );
    let worker = app.create_workspace(json!({"name": "worker"})).await;
    let reply = app
        .admin(Method::POST, &format!("/workspaces/{worker}/restart"), None)
        .await;
    assert_eq!(reply.body, json!({"status": "provisioning"}));
    app.admin(Method::DELETE, &format!("/workspaces/{worker}"), None)
        .await;
    let removed = app
        .admin(Method::POST, &format!("/workspaces/{worker}/restart"), None)
        .await;
    assert_eq!(removed.status, StatusCode::NOT_FOUND);
    assert_eq!(removed.body, json!({"error": "workspace not found"}));
}

#[tokio::test]
async fn provisioning_past_the_timeout_is_marked_failed_once() {
    let app = spawn_app_with(Options {
        provision_timeout_seconds: 1,
        ..Options::default()
    })
    .await;
    let worker = app.create_workspace(json!({"name": "worker"})).await;
    let external = app
        .create_workspace(json!({"name": "ext", "external": true}))
        .await;
    let view = eventually(10, || async {
        let view = app.admin_get(&format!("/workspaces/{worker}")).await.body;
        (view["status"] == "failed").then_some(view)
    })
    .await;
    assert_eq!(view["status"], "failed");
    let listed = app.admin_get("/workspaces").await.body;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == worker.as_str())
        .unwrap();
    assert!(
        row["last_sample_error"]
            .as_str()
            .unwrap()
            .starts_with("provisioning timed out")
    );
    let events = app.admin_get(&format!("/events/{worker}")).await.body;
    let failed: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["payload"]["source"], "provision_timeout_sweep");
    assert_eq!(failed[0]["payload"]["timeout_secs"], 1);
    // Awaiting an external agent is not provisioning: no timeout.
    assert_eq!(
        app.admin_get(&format!("/workspaces/{external}")).await.body["status"],
        "awaiting_agent"
    );
}

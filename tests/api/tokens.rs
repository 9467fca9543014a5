//! Workspace tokens (docs/workspaces.md §3.7) and the test-token helper (§3.8).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn tokens_are_issued_listed_newest_first_and_revoked() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    let path = format!("/workspaces/{id}/tokens");
    let created = app.admin(Method::POST, &path, None).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let first = created.body["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body,
        json!({"auth_token": first, "workspace_id": id, "message": "Save this token now — it cannot be retrieved again."})
    );
    assert_eq!(first.len(), 43);
    // A workspace may mint further tokens for itself.
    let second = app.call(Method::POST, &path, Some(&first), None).await;
    let second = second.body["auth_token"].as_str().unwrap().to_owned();

    let listed = app.get(&path, Some(&first)).await;
    assert_eq!(listed.body["count"], 2);
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens[0]["prefix"], second[..8]);
    assert_eq!(tokens[1]["prefix"], first[..8]);
    assert!(tokens[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(listed.text.contains(r#""last_used_at":"#));
    let paged = app
        .get(&format!("{path}?limit=1&offset=1"), Some(&first))
        .await;
    assert_eq!(paged.body["tokens"][0]["prefix"], first[..8]);
    let ignored = app
        .get(&format!("{path}?limit=0&offset=abc"), Some(&first))
        .await;
    assert_eq!(ignored.body["count"], 2);

    let first_id = tokens[1]["id"].as_str().unwrap();
    let revoked = app
        .call(
            Method::DELETE,
            &format!("{path}/{first_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(revoked.body, json!({"status": "revoked"}));
    assert_eq!(
        app.get(&format!("/workspaces/{id}"), Some(&first))
            .await
            .body,
        json!({"error": "invalid workspace auth token"})
    );
    let again = app
        .call(
            Method::DELETE,
            &format!("{path}/{first_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.body,
        json!({"error": "token not found or already revoked"})
    );
    let junk = app
        .call(Method::DELETE, &format!("{path}/junk"), Some(&second), None)
        .await;
    assert_eq!(
        junk.body,
        json!({"error": "token not found or already revoked"})
    );
}

#[tokio::test]
async fn a_token_of_another_workspace_cannot_be_revoked_through_this_one() {
    let app = spawn_app().await;
    let a = app.create_workspace(json!({"name": "a"})).await;
    let b = app.create_workspace(json!({"name": "b"})).await;
    let token_b = app.workspace_token(&b).await;
    let listed = app.admin_get(&format!("/workspaces/{b}/tokens")).await;
    let b_token_id = listed.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    let reply = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{a}/tokens/{b_token_id}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/workspaces/{b}"), Some(&token_b))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn at_most_fifty_live_tokens_per_workspace() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    for _ in 0..50 {
        app.workspace_token(&id).await;
    }
    let reply = app
        .admin(Method::POST, &format!("/workspaces/{id}/tokens"), None)
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply.body,
        json!({"error": "maximum 50 active tokens per workspace"})
    );
    let listed = app
        .admin_get(&format!("/workspaces/{id}/tokens?limit=200"))
        .await;
    assert_eq!(listed.body["count"], 50);
}

#[tokio::test]
async fn test_tokens_need_the_admin_token_and_a_live_workspace() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    let path = format!("/admin/workspaces/{id}/test-token");
    assert_eq!(
        app.get(&path, None).await.body,
        json!({"error": "admin auth required"})
    );
    let minted = app.admin_get(&path).await;
    assert_eq!(minted.status, StatusCode::OK);
    let token = minted.body["auth_token"].as_str().unwrap();
    assert_eq!(
        minted.body,
        json!({"auth_token": token, "workspace_id": id})
    );
    assert_eq!(
        app.get(&format!("/workspaces/{id}"), Some(token))
            .await
            .status,
        StatusCode::OK
    );
    // Org keys are not enough here.
    let key = app.admin(Method::POST, "/org/tokens", None).await.body["auth_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(&path, Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let unknown = app
        .admin_get(&format!(
            "/admin/workspaces/{}/test-token",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(unknown.body, json!({"error": "workspace not found"}));
    app.admin(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    assert_eq!(
        app.admin_get(&path).await.body,
        json!({"error": "workspace not found"})
    );
}

#[tokio::test]
async fn test_tokens_are_hidden_in_production_unless_enabled() {
    let app = spawn_app_with(Options {
        env: "PROD",
        ..Options::default()
    })
    .await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    let path = format!("/admin/workspaces/{id}/test-token");
    let reply = app.admin_get(&path).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, json!({"error": "not found"}));

    let enabled = spawn_app_with(Options {
        env: "production",
        enable_test_tokens: "1",
        ..Options::default()
    })
    .await;
    let id = enabled.create_workspace(json!({"name": "w"})).await;
    let reply = enabled
        .admin_get(&format!("/admin/workspaces/{id}/test-token"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

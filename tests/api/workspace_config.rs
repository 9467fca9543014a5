//! A workspace's config.yaml kept platform-side (docs/operations.md O4): the reference's
//! `{"data": …}`, YAML replaced or JSON merged, validation with the line, versions, and the
//! CONFIG_CHANGED control frame on a streaming agent's heartbeat stream.

use molecule::pb::control::Kind;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    heartbeat_stream,
    helpers::{Reply, TestApp, spawn_app},
};

async fn put_yaml(app: &TestApp, id: &str, token: &str, yaml: &str) -> Reply {
    app.raw(
        app.http
            .patch(format!("{}/workspaces/{id}/config", app.rest))
            .bearer_auth(token)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned()),
    )
    .await
}

#[tokio::test]
async fn config_is_replaced_as_yaml_merged_as_json_and_pushed_to_the_agent() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("configured", None).await;
    let (_, stranger) = app.registered_agent("stranger", None).await;
    let path = format!("/workspaces/{id}/config");
    let empty = app.get(&path, Some(&token)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        (
            empty.body["data"].clone(),
            empty.body["content"].clone(),
            empty.body["version"].clone()
        ),
        (json!({}), json!(""), json!(0))
    );
    let mut stream = heartbeat_stream::open(&app, &id, &token).await.unwrap();
    stream.beat(1, Default::default()).await;

    let yaml = "# the runtime's settings\nmodel: claude-opus\ntools:\n  - git\n  - web\n";
    let replaced = put_yaml(&app, &id, &token, yaml).await;
    assert_eq!(
        (replaced.status, replaced.body),
        (StatusCode::OK, json!({"status": "updated", "version": 1}))
    );
    let control = stream.control_frame().await;
    assert_eq!(
        (
            Kind::try_from(control.kind).unwrap(),
            control.event.as_str()
        ),
        (Kind::ConfigChanged, "CONFIG_CHANGED")
    );
    let read = app.get(&path, Some(&token)).await;
    assert_eq!(
        read.body["content"], yaml,
        "the document is kept as written"
    );
    assert_eq!(
        read.body["data"],
        json!({"model": "claude-opus", "tools": ["git", "web"]})
    );
    assert_eq!(read.body["updated_by"], format!("workspace:{id}"));

    // The reference's PATCH: a JSON object merged into the top level.
    let merged = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.admin_token.clone()),
            Some(json!({"model": "sonnet", "temperature": 0.2})),
        )
        .await;
    assert_eq!(merged.body, json!({"status": "updated", "version": 2}));
    assert_eq!(stream.control().await, Kind::ConfigChanged);
    let read = app.get(&path, Some(&token)).await;
    assert_eq!(
        read.body["data"],
        json!({"model": "sonnet", "tools": ["git", "web"], "temperature": 0.2})
    );
    assert_eq!(read.body["updated_by"], "admin");

    // Refusals change nothing.
    let broken = put_yaml(&app, &id, &token, "model: opus\ntools: [git\n").await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(
        broken.body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid YAML at line "),
        "{}",
        broken.text
    );
    let list = put_yaml(&app, &id, &token, "- a\n- b\n").await;
    assert_eq!(
        list.body,
        json!({"error": "invalid YAML: the document must be a mapping"})
    );
    let array = app
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!(["not", "an", "object"])),
        )
        .await;
    assert_eq!(
        (array.status, array.body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid JSON"}))
    );
    let huge = put_yaml(
        &app,
        &id,
        &token,
        &format!("blob: {}\n", "x".repeat(300 * 1024)),
    )
    .await;
    assert_eq!(
        (huge.status, huge.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "body too large or unreadable"})
        )
    );
    let foreign = put_yaml(&app, &id, &stranger, "model: mine\n").await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get(&path, Some(&token)).await.body["version"], 2);
}

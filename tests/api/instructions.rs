//! Platform instructions (docs/runtime.md §4, M4): the runtime's resolve call (200 +
//! `instructions`), the operators' CRUD with its refusals, the order, and the change event that
//! reaches a streaming agent.

use molecule::pb::control::Kind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    heartbeat_stream,
    helpers::{TestApp, spawn_app},
};

async fn create(app: &TestApp, body: Value) -> String {
    let reply = app.admin(Method::POST, "/instructions", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn resolve(app: &TestApp, id: &str, token: &str) -> String {
    let reply = app
        .get(
            &format!("/workspaces/{id}/instructions/resolve"),
            Some(token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["workspace_id"], id);
    reply.body["instructions"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn rules_resolve_in_order_and_changes_reach_the_agent() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let (other, other_token) = app.registered_agent("other", None).await;
    assert_eq!(resolve(&app, &id, &token).await, "", "nothing applies yet");
    let mut stream = heartbeat_stream::open(&app, &id, &token).await.unwrap();

    create(
        &app,
        json!({"scope": "global", "title": "Be brief", "content": "Answer in one paragraph."}),
    )
    .await;
    let control = stream.control_frame().await;
    assert_eq!(
        Kind::try_from(control.kind).unwrap(),
        Kind::InstructionsUpdated
    );
    create(&app, json!({"scope": "global", "title": "Safety first", "content": "Never push to main.", "priority": 10})).await;
    let own = create(&app, json!({"scope": "workspace", "scope_target": id, "title": "Your role", "content": "You review code."})).await;
    assert_eq!(
        resolve(&app, &id, &token).await,
        "\n## Platform-Wide Rules\n\n### Safety first\nNever push to main.\n\n### Be brief\nAnswer in one paragraph.\n\n\
         \n## Role-Specific Rules\n\n### Your role\nYou review code.\n\n"
    );
    assert!(
        !resolve(&app, &other, &other_token)
            .await
            .contains("Your role")
    );

    // Disabled rules stop applying but stay listed for operators.
    let disabled = app
        .admin(
            Method::PUT,
            &format!("/instructions/{own}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.body, json!({"status": "updated"}));
    assert!(!resolve(&app, &id, &token).await.contains("Your role"));
    let all = app.admin_get("/instructions").await;
    let rows = all.body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let row = rows.iter().find(|row| row["id"] == own.as_str()).unwrap();
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "scope",
            "scope_target",
            "title",
            "content",
            "priority",
            "enabled",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(
        (row["enabled"].as_bool(), row["scope_target"].as_str()),
        (Some(false), Some(id.as_str()))
    );
    let for_workspace = app
        .admin_get(&format!("/instructions?workspace_id={id}"))
        .await;
    assert_eq!(for_workspace.body.as_array().unwrap().len(), 2);
    let globals = app.admin_get("/instructions?scope=global").await;
    assert_eq!(globals.body.as_array().unwrap().len(), 2);

    let deleted = app
        .admin(Method::DELETE, &format!("/instructions/{own}"), None)
        .await;
    assert_eq!(deleted.body, json!({"status": "deleted"}));
    let again = app
        .admin(Method::DELETE, &format!("/instructions/{own}"), None)
        .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "instruction not found"})
        )
    );
}

#[tokio::test]
async fn bad_rules_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let cases = [
        (
            json!({"scope": "global", "title": "t"}),
            "scope, title, and content are required",
        ),
        (
            json!({"scope": "global", "title": "", "content": "c"}),
            "scope, title, and content are required",
        ),
        (
            json!("not an object"),
            "scope, title, and content are required",
        ),
        (
            json!({"scope": "team", "title": "t", "content": "c"}),
            "scope must be global or workspace (team scope not yet supported)",
        ),
        (
            json!({"scope": "workspace", "title": "t", "content": "c"}),
            "scope_target required for workspace scope",
        ),
        (
            json!({"scope": "workspace", "scope_target": uuid::Uuid::new_v4().to_string(), "title": "t", "content": "c"}),
            "scope_target must be a live workspace",
        ),
        (
            json!({"scope": "global", "title": "t", "content": "c".repeat(8193)}),
            "content exceeds 8192 chars",
        ),
        (
            json!({"scope": "global", "title": "t".repeat(201), "content": "c"}),
            "title exceeds 200 chars",
        ),
    ];
    for (body, error) in cases {
        let reply = app
            .admin(Method::POST, "/instructions", Some(body.clone()))
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "{body}"
        );
    }
    // A workspace token is not an operator credential: no prompt injection into every agent.
    let by_agent = app
        .call(
            Method::POST,
            "/instructions",
            Some(&token),
            Some(json!({"scope": "global", "title": "t", "content": "c"})),
        )
        .await;
    assert_eq!(by_agent.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resolve(&app, &id, &token).await, "");
    assert_eq!(app.admin_get("/instructions").await.body, json!([]));

    let missing = app
        .admin(
            Method::PUT,
            &format!("/instructions/{}", uuid::Uuid::new_v4()),
            Some(json!({"title": "x"})),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "instruction not found"})
        )
    );
    let unreadable = app
        .admin(
            Method::PUT,
            "/instructions/whatever",
            Some(json!({"priority": "high"})),
        )
        .await;
    assert_eq!(unreadable.body, json!({"error": "invalid request"}));
}

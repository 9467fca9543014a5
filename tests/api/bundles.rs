//! Bundles (docs/workspaces.md §6): a round trip keeps name, role, tier, agent card, config files
//! and sub-workspaces under new ids, and never carries secrets or tokens; bad bundles change
//! nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// The bundle without its ids, for comparing a copy with its source.
fn without_ids(mut bundle: Value) -> Value {
    bundle.as_object_mut().unwrap().remove("id");
    if let Some(children) = bundle["sub_workspaces"].as_array_mut() {
        for child in children.iter_mut() {
            *child = without_ids(child.take());
        }
    }
    bundle
}

async fn export(app: &TestApp, id: &str) -> Value {
    let reply = app.admin_get(&format!("/bundles/export/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

async fn workspace_count(app: &TestApp) -> usize {
    app.admin_get("/workspaces")
        .await
        .body
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_round_trip_copies_the_tree_with_new_ids() {
    let app = spawn_app().await;
    let bundle = json!({
        "schema": "1.0", "id": "source-bundle", "name": "lead", "description": "leads research",
        "tier": 2, "model": "",
        "system_prompt": "You lead.\n",
        "skills": [{"id": "search", "name": "search", "description": "",
                    "files": {"SKILL.md": "---\nname: search\n---\n# Search\nFinds sources.\n", "scripts/run.py": "print('hi')\n"}}],
        "tools": [],
        "prompts": {"config.yaml": "name: lead\nruntime: claude-code\nmodel: minimax/M2\n"},
        "agent_card": {"name": "lead", "skills": [{"id": "search"}]},
        "sub_workspaces": [
            {"id": "child-bundle", "name": "analyst", "description": "reads", "tier": 3,
             "sub_workspaces": [{"name": "intern", "tier": 4}]}
        ],
        "author": "", "version": "1.0.0"
    });
    let imported = app
        .admin(Method::POST, "/bundles/import", Some(bundle))
        .await;
    assert_eq!(imported.status, StatusCode::CREATED, "{}", imported.text);
    assert_eq!(imported.body["name"], "lead");
    assert_eq!(imported.body["status"], "provisioning");
    let root = imported.body["workspace_id"].as_str().unwrap().to_owned();
    let child = imported.body["children"][0]["workspace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(imported.body["children"][0]["children"][0]["workspace_id"].is_string());
    assert!(
        imported.body["children"][0]["children"][0]
            .get("children")
            .is_none()
    );

    let row = app.admin_get(&format!("/workspaces/{root}")).await.body;
    assert_eq!(
        (&row["runtime"], &row["tier"], &row["role"]),
        (&json!("claude-code"), &json!(2), &json!("leads research"))
    );
    assert_eq!(
        app.admin_get(&format!("/workspaces/{child}")).await.body["parent_id"],
        root.as_str()
    );

    let first = export(&app, &root).await;
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "schema",
            "id",
            "name",
            "description",
            "tier",
            "model",
            "system_prompt",
            "skills",
            "tools",
            "prompts",
            "sub_workspaces",
            "agent_card",
            "author",
            "version"
        ]
    );
    assert_eq!(first["id"], root.as_str());
    assert_eq!(first["model"], "minimax/M2");
    assert_eq!(first["skills"][0]["description"], "Finds sources.");
    assert_eq!(
        first["skills"][0]["files"]["scripts/run.py"],
        "print('hi')\n"
    );
    assert_eq!(
        first["agent_card"],
        json!({"name": "lead", "skills": [{"id": "search"}]})
    );
    assert_eq!(
        first["sub_workspaces"][0]["sub_workspaces"][0]["name"],
        "intern"
    );

    // Importing the export makes a second, identical copy under new ids.
    let again = app
        .admin(Method::POST, "/bundles/import", Some(first.clone()))
        .await;
    let copy = again.body["workspace_id"].as_str().unwrap().to_owned();
    assert_ne!(copy, root);
    let second = export(&app, &copy).await;
    assert_eq!(without_ids(second), without_ids(first));
}

#[tokio::test]
async fn an_export_carries_no_secrets_tokens_or_removed_children() {
    let app = spawn_app().await;
    let (root, token) = app.registered_agent("root", None).await;
    let kept = app
        .create_workspace(
            json!({"name": "kept", "parent_id": root, "secrets": {"API_KEY": "sk-never-exported"}}),
        )
        .await;
    let gone = app
        .create_workspace(json!({"name": "gone", "parent_id": root}))
        .await;
    app.admin(
        Method::DELETE,
        &format!("/workspaces/{gone}?confirm=true"),
        None,
    )
    .await;
    let reply = app.admin_get(&format!("/bundles/export/{root}")).await;
    assert!(!reply.text.contains("sk-never-exported"));
    assert!(!reply.text.contains(&token));
    assert!(!reply.text.contains("API_KEY"));
    let children: Vec<&str> = reply.body["sub_workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["id"].as_str().unwrap())
        .collect();
    assert_eq!(children, [kept.as_str()]);
    // An external workspace exports empty config and its registered card.
    assert_eq!(reply.body["prompts"], json!({}));
    assert_eq!(
        reply.body["agent_card"],
        json!({"name": "agent", "skills": []})
    );
}

#[tokio::test]
async fn bad_bundles_are_refused_and_create_nothing() {
    let app = spawn_app().await;
    let before = workspace_count(&app).await;
    let cases = [
        (json!({"name": 5}), "invalid bundle"),
        (json!({"description": "no name"}), "invalid bundle"),
        (json!({"name": ""}), "invalid workspace payload"),
        (json!({"name": "a|b"}), "invalid workspace fields"),
        (json!({"name": "ok", "tier": 9}), "invalid tier"),
        (
            json!({"name": "ok", "sub_workspaces": [{"name": "bad\nname"}]}),
            "invalid workspace fields",
        ),
        (
            json!({"name": "ok", "skills": [{"id": "../etc", "files": {}}]}),
            "invalid skill path",
        ),
        (
            json!({"name": "ok", "skills": [{"id": "s", "files": {"../../x": "y"}}]}),
            "invalid skill path",
        ),
        (
            json!({"name": "ok", "skills": [{"id": "s", "files": {"/abs": "y"}}]}),
            "invalid skill path",
        ),
    ];
    for (bundle, error) in cases {
        let reply = app
            .admin(Method::POST, "/bundles/import", Some(bundle.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bundle}");
        assert_eq!(reply.body, json!({"error": error}), "{bundle}");
    }
    let not_json = app
        .raw(
            app.http
                .post(format!("{}/bundles/import", app.rest))
                .bearer_auth(&app.admin_token)
                .body("{"),
        )
        .await;
    assert_eq!(not_json.text, r#"{"error":"invalid bundle"}"#);
    assert_eq!(workspace_count(&app).await, before);

    for id in ["not-a-uuid", "00000000-0000-4000-8000-000000000000"] {
        let reply = app.admin_get(&format!("/bundles/export/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.text, r#"{"error":"bundle not found"}"#);
    }
    let (agent, token) = app.registered_agent("agent", None).await;
    let denied = app
        .get(&format!("/bundles/export/{agent}"), Some(&token))
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let denied = app
        .call(
            Method::POST,
            "/bundles/import",
            Some(&token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bundles_over_grpc_are_the_same_documents() {
    let app = spawn_app().await;
    let mut client = molecule::pb::bundles_client::BundlesClient::new(app.grpc_channel().await);
    let imported = client
        .import(crate::grpc::authed(
            molecule::pb::BundleDocument {
                bundle_json: json!({"name": "typed", "tier": 1}).to_string(),
            },
            &app.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let result: Value = serde_json::from_str(&imported.result_json).unwrap();
    let id = result["workspace_id"].as_str().unwrap();
    let exported = client
        .export(crate::grpc::authed(
            molecule::pb::ExportBundleRequest {
                workspace_id: id.to_owned(),
            },
            &app.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let rest = app.admin_get(&format!("/bundles/export/{id}")).await;
    assert_eq!(exported.bundle_json, rest.text);
    let invalid = client
        .import(crate::grpc::authed(
            molecule::pb::BundleDocument {
                bundle_json: "[]".into(),
            },
            &app.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (invalid.code(), invalid.message()),
        (tonic::Code::InvalidArgument, "invalid bundle")
    );
}

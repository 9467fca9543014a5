//! Workspace create, list, get and patch over REST (docs/workspaces.md §1–2.4).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_external_without_url_awaits_its_agent_and_mints_no_token() {
    let app = spawn_app().await;
    let reply = app
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "researcher", "external": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(reply.body["external"], json!(true));
    assert_eq!(reply.body["status"], "awaiting_agent");
    let connection = &reply.body["connection"];
    assert_eq!(connection["workspace_id"], id);
    assert_eq!(connection["auth_token"], "");
    let platform = connection["platform_url"].as_str().unwrap();
    assert!(platform.starts_with("http://127.0.0.1:"), "{platform}");
    assert_eq!(
        connection["registry_endpoint"],
        format!("{platform}/registry/register")
    );
    assert_eq!(
        connection["heartbeat_endpoint"],
        format!("{platform}/registry/heartbeat")
    );
    let snippet = connection["python_snippet"].as_str().unwrap();
    assert!(snippet.contains(&format!("RemoteAgentClient(workspace_id=\"{id}\"")));
    assert!(snippet.contains("register()"));
    assert!(
        connection["curl_register_template"]
            .as_str()
            .unwrap()
            .contains("/registry/register")
    );

    let tokens = app.admin_get(&format!("/workspaces/{id}/tokens")).await;
    assert_eq!(tokens.body, json!({"tokens": [], "count": 0}));
    let listed = app.admin_get("/workspaces").await;
    assert_eq!(listed.body[0]["runtime"], "external");
    assert_eq!(listed.body[0]["status"], "awaiting_agent");
    assert_eq!(
        app.event_types(id).await,
        ["WORKSPACE_PROVISIONING", "WORKSPACE_AWAITING_AGENT"]
    );
}

#[tokio::test]
async fn create_external_with_url_is_online_and_honours_forwarded_host() {
    let app = spawn_app().await;
    let reply = app
        .admin(
            Method::POST,
            "/workspaces",
            Some(
                json!({"name": "echo", "runtime": "external", "url": "https://93.184.215.14:8443"}),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.body,
        json!({"id": id, "external": true, "status": "online"})
    );
    assert_eq!(
        app.event_types(id).await,
        ["WORKSPACE_PROVISIONING", "WORKSPACE_ONLINE"]
    );

    let request = app
        .http
        .post(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "molecule.example.com")
        .json(&json!({"name": "remote", "external": true}));
    let reply = app.raw(request).await;
    assert_eq!(
        reply.body["connection"]["platform_url"],
        "https://molecule.example.com"
    );
}

#[tokio::test]
async fn create_non_external_stays_provisioning_with_defaults() {
    let app = spawn_app().await;
    let reply = app
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "worker", "canvas": {"x": 120.5, "y": 40}, "budget_limit": 500})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.body,
        json!({"id": id, "status": "provisioning", "awareness_namespace": format!("workspace:{id}"), "workspace_access": "none"})
    );
    let listed = app.admin_get("/workspaces").await;
    let expected = json!([{
        "id": id, "name": "worker", "role": null, "tier": 3, "status": "provisioning", "url": "",
        "parent_id": null, "agent_card": null, "active_tasks": 0, "max_concurrent_tasks": 1,
        "last_error_rate": 0, "last_sample_error": "", "uptime_seconds": 0, "current_task": "",
        "runtime": "langgraph", "workspace_dir": null, "monthly_spend": 0, "budget_limit": 500,
        "x": 120.5, "y": 40, "collapsed": false, "last_heartbeat_at": null
    }]);
    assert_eq!(listed.body, expected);
    // Key order is part of the byte-compatible contract.
    assert!(listed.text.starts_with(&format!(
        r#"[{{"id":"{id}","name":"worker","role":null,"tier":3,"#
    )));
}

#[tokio::test]
async fn create_rejects_bad_input_with_the_documented_message_and_writes_nothing() {
    let app = spawn_app().await;
    let parent = app.create_workspace(json!({"name": "parent"})).await;
    app.admin(Method::DELETE, &format!("/workspaces/{parent}"), None)
        .await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "invalid workspace payload"),
        (json!({"name": ""}), "invalid workspace payload"),
        (json!({"name": 42}), "invalid workspace payload"),
        (
            json!({"name": "a", "tier": "2"}),
            "invalid workspace payload",
        ),
        (json!({"name": "a\nb"}), "invalid workspace fields"),
        (json!({"name": "a{b}"}), "invalid workspace fields"),
        (json!({"name": "x".repeat(256)}), "invalid workspace fields"),
        (
            json!({"name": "a", "role": "r|x"}),
            "invalid workspace fields",
        ),
        (
            json!({"name": "a", "model": "m\r"}),
            "invalid workspace fields",
        ),
        (
            json!({"name": "a", "runtime": "r".repeat(101)}),
            "invalid workspace fields",
        ),
        (
            json!({"name": "a", "template": "/etc/tpl"}),
            "invalid template",
        ),
        (
            json!({"name": "a", "template": "../up"}),
            "invalid template",
        ),
        (
            json!({"name": "a", "workspace_dir": "relative"}),
            "invalid workspace directory",
        ),
        (
            json!({"name": "a", "workspace_dir": "/etc/agent"}),
            "invalid workspace directory",
        ),
        (
            json!({"name": "a", "workspace_dir": "/home/../usr"}),
            "invalid workspace directory",
        ),
        (
            json!({"name": "a", "workspace_access": "all"}),
            "invalid workspace access",
        ),
        (
            json!({"name": "a", "workspace_access": "read_only"}),
            "invalid workspace access",
        ),
        (json!({"name": "a", "tier": 5}), "invalid tier"),
        (json!({"name": "a", "tier": -1}), "invalid tier"),
        (
            json!({"name": "a", "parent_id": "nope"}),
            "invalid parent_id",
        ),
        (
            json!({"name": "a", "parent_id": uuid::Uuid::new_v4().to_string()}),
            "invalid parent_id",
        ),
        (
            json!({"name": "a", "parent_id": parent}),
            "invalid parent_id",
        ),
        (
            json!({"name": "a", "external": true, "url": "ftp://agent"}),
            "invalid url",
        ),
        (
            json!({"name": "a", "external": true, "url": "not a url"}),
            "invalid url",
        ),
    ];
    for (body, message) in cases {
        let reply = app
            .admin(Method::POST, "/workspaces", Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, json!({"error": message}), "{body}");
    }
    let request = app
        .http
        .post(format!("{}/workspaces", app.rest))
        .bearer_auth(&app.admin_token)
        .body("{not json");
    assert_eq!(
        app.raw(request).await.body,
        json!({"error": "invalid workspace payload"})
    );
    assert_eq!(app.admin_get("/workspaces").await.body, json!([]));
}

#[tokio::test]
async fn get_shows_the_single_view_and_hides_what_it_must() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(
            json!({"name": "solo", "role": "analyst", "tier": 2, "workspace_dir": "/home/solo"}),
        )
        .await;
    let reply = app.admin_get(&format!("/workspaces/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({
            "id": id, "name": "solo", "role": "analyst", "tier": 2, "status": "provisioning", "url": "",
            "parent_id": null, "agent_card": null, "active_tasks": 0, "max_concurrent_tasks": 1,
            "last_error_rate": 0, "uptime_seconds": 0, "runtime": "langgraph",
            "x": 0, "y": 0, "collapsed": false, "last_outbound_at": null,
            "last_heartbeat_at": null
        })
    );
    for hidden in [
        "budget_limit",
        "monthly_spend",
        "current_task",
        "last_sample_error",
        "workspace_dir",
        "awareness_namespace",
        "workspace_access",
        "created_at",
        "updated_at",
    ] {
        assert!(
            reply.body.get(hidden).is_none(),
            "{hidden} must not be exposed"
        );
    }
    let upper = id.to_uppercase();
    assert_eq!(
        app.admin_get(&format!("/workspaces/{upper}")).await.body["id"],
        id
    );
    assert_eq!(
        app.admin_get("/workspaces/not-a-uuid").await.body,
        json!({"error": "invalid workspace ID"})
    );
    let missing = app
        .admin_get(&format!("/workspaces/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"error": "workspace not found"}));
}

#[tokio::test]
async fn patch_applies_cosmetic_fields_for_the_workspace_and_sensitive_ones_for_admins() {
    let app = spawn_app().await;
    let parent = app.create_workspace(json!({"name": "parent"})).await;
    let id = app.create_workspace(json!({"name": "child"})).await;
    let token = app.workspace_token(&id).await;
    let path = format!("/workspaces/{id}");

    let reply = app
        .call(Method::PATCH, &path, Some(&token), Some(json!({"name": "renamed", "role": "lead", "x": 10, "y": 20.5, "collapsed": true, "unknown": 1})))
        .await;
    assert_eq!(reply.body, json!({"status": "updated"}), "{}", reply.text);
    let view = app.get(&path, Some(&token)).await.body;
    assert_eq!(
        (view["name"].clone(), view["role"].clone()),
        (json!("renamed"), json!("lead"))
    );
    assert_eq!(
        (
            view["x"].clone(),
            view["y"].clone(),
            view["collapsed"].clone()
        ),
        (json!(10), json!(20.5), json!(true))
    );

    // One coordinate alone is ignored.
    app.call(Method::PATCH, &path, Some(&token), Some(json!({"x": 99})))
        .await;
    assert_eq!(app.get(&path, Some(&token)).await.body["x"], json!(10));

    for (field, value) in [
        ("tier", json!(2)),
        ("parent_id", json!(parent)),
        ("runtime", json!("crewai")),
        ("workspace_dir", json!("/home/x")),
    ] {
        let reply = app
            .call(
                Method::PATCH,
                &path,
                Some(&token),
                Some(json!({field: value})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{field}");
        assert_eq!(
            reply.body,
            json!({"error": format!("admin credential required to change {field}")})
        );
    }
    let reply = app
        .admin(Method::PATCH, &path, Some(json!({"tier": 2, "parent_id": parent, "runtime": "crewai", "workspace_dir": "/home/x"})))
        .await;
    assert_eq!(
        reply.body,
        json!({"status": "updated", "needs_restart": true})
    );
    let view = app.admin_get(&path).await.body;
    assert_eq!(
        (
            view["tier"].clone(),
            view["parent_id"].clone(),
            view["runtime"].clone()
        ),
        (json!(2), json!(parent), json!("crewai"))
    );
    let reply = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"parent_id": null, "role": null})),
        )
        .await;
    assert_eq!(reply.body, json!({"status": "updated"}));
    let view = app.admin_get(&path).await.body;
    assert_eq!(
        (view["parent_id"].clone(), view["role"].clone()),
        (Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn patch_rejects_bad_input_and_changes_nothing() {
    let app = spawn_app().await;
    let root = app.create_workspace(json!({"name": "root"})).await;
    let child = app
        .create_workspace(json!({"name": "child", "parent_id": root}))
        .await;
    let grandchild = app
        .create_workspace(json!({"name": "grandchild", "parent_id": child}))
        .await;
    let path = format!("/workspaces/{root}");
    let before = app.admin_get(&path).await.body;
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "invalid request body"),
        (json!("text"), "invalid request body"),
        (
            json!({"name": "a\nb"}),
            "name must not contain newline characters",
        ),
        (json!({"name": "a*b"}), "name contains invalid characters"),
        (
            json!({"name": "x".repeat(256)}),
            "name must be at most 255 characters",
        ),
        (
            json!({"role": "r".repeat(1001)}),
            "role must be at most 1000 characters",
        ),
        (
            json!({"runtime": "r".repeat(101)}),
            "runtime must be at most 100 characters",
        ),
        (json!({"name": 5}), "invalid name"),
        (json!({"tier": "high"}), "invalid tier"),
        (json!({"tier": 9}), "invalid tier"),
        (json!({"collapsed": "yes"}), "invalid collapsed"),
        (json!({"x": "left", "y": 1}), "invalid x"),
        (
            json!({"workspace_dir": "/proc/1"}),
            "invalid workspace directory",
        ),
        (json!({"parent_id": root}), "invalid parent_id"),
        (json!({"parent_id": grandchild}), "invalid parent_id"),
        (json!({"parent_id": "garbage"}), "invalid parent_id"),
    ];
    for (body, message) in cases {
        let reply = app.admin(Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.body, json!({"error": message}), "{body}");
    }
    assert_eq!(app.admin_get(&path).await.body, before);
    let missing = app
        .admin(
            Method::PATCH,
            &format!("/workspaces/{}", uuid::Uuid::new_v4()),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.admin(Method::PATCH, "/workspaces/bad-id", Some(json!({})))
            .await
            .body,
        json!({"error": "invalid workspace ID"})
    );
}

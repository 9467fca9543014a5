//! Plugin management (docs/operations.md §6): installed plugins with their versions, what a
//! workspace may install, runtime compatibility, uninstalling, and each org's allowlist in the
//! database (the deployment's default until the org sets its own).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Options, TestApp, spawn_app_with},
    plugins::plugins_dir,
};

async fn app_with(allowlist: &'static str) -> TestApp {
    spawn_app_with(Options {
        plugins_dir: Some(plugins_dir()),
        plugin_allowlist: allowlist,
        ..Options::default()
    })
    .await
}

async fn install(app: &TestApp, id: &str, token: &str, source: &str) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/plugins"),
        Some(token),
        Some(json!({"source": source})),
    )
    .await
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|plugin| plugin["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn installed_plugins_carry_their_versions_and_runtimes_are_checked() {
    let app = app_with("").await;
    let (id, token) = app.registered_agent("tooled", None).await;
    for source in ["local://alpha", "github://acme/tools#v1"] {
        let reply = install(&app, &id, &token, source).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }

    let installed = app
        .get(&format!("/workspaces/{id}/plugins"), Some(&token))
        .await;
    assert_eq!(installed.status, StatusCode::OK, "{}", installed.text);
    let list = installed.body.as_array().unwrap();
    assert_eq!(names(&installed.body), ["alpha", "tools"]);
    let alpha = &list[0];
    assert_eq!(
        (&alpha["version"], &alpha["description"], &alpha["source"]),
        (
            &json!("1.2.0"),
            &json!("Research skills"),
            &json!("local://alpha")
        )
    );
    assert_eq!(alpha["runtimes"], json!(["claude-code"]));
    assert!(alpha["installed_at"].is_string());
    // An external agent's runtime is unknown to the platform.
    assert!(alpha.get("supported_on_runtime").is_none());
    assert_eq!(
        (&list[1]["version"], &list[1]["source"]),
        (&json!("v1"), &json!("github://acme/tools#v1"))
    );

    let available = app
        .get(&format!("/workspaces/{id}/plugins/available"), Some(&token))
        .await;
    assert_eq!(names(&available.body), ["alpha", "beta"]);

    let path = format!("/workspaces/{id}/plugins/compatibility");
    let missing = app.get(&path, Some(&token)).await;
    assert_eq!(
        (missing.status, missing.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "runtime query parameter is required"})
        )
    );
    let same = app
        .get(&format!("{path}?runtime=claude_code"), Some(&token))
        .await;
    assert_eq!(
        (
            &same.body["all_compatible"],
            names(&same.body["compatible"])
        ),
        (&json!(true), vec!["alpha", "tools"])
    );
    let other = app
        .get(&format!("{path}?runtime=langgraph"), Some(&token))
        .await;
    assert_eq!(other.body["target_runtime"], "langgraph");
    assert_eq!(names(&other.body["compatible"]), ["tools"]);
    assert_eq!(names(&other.body["incompatible"]), ["alpha"]);
    assert_eq!(other.body["all_compatible"], false);

    let removed = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/plugins/alpha"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        removed.body,
        json!({"status": "uninstalled", "plugin": "alpha"})
    );
    let again = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/plugins/alpha"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "plugin not installed"})
        )
    );
    let bad = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/plugins/a%5Cb"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(bad.body, json!({"error": "invalid plugin name"}));
    let left = app
        .get(&format!("/workspaces/{id}/plugins"), Some(&token))
        .await;
    assert_eq!(names(&left.body), ["tools"]);

    let (_, stranger) = app.registered_agent("stranger", None).await;
    let refused = app
        .get(&format!("/workspaces/{id}/plugins"), Some(&stranger))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let trail = app.admin_get(&format!("/workspaces/{id}/audit")).await;
    let operations: Vec<&str> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["operation"].as_str().unwrap())
        .collect();
    assert!(operations.ends_with(&["plugin.install", "plugin.install", "plugin.uninstall"]));
}

#[tokio::test]
async fn an_org_allowlist_replaces_the_default_for_its_tree_only() {
    let app = app_with("alpha").await;
    let org = app.create_workspace(json!({"name": "acme"})).await;
    let (child, child_token) = app.registered_agent("team", Some(&org)).await;
    let (grandchild, grandchild_token) = app.registered_agent("member", Some(&child)).await;
    let other_org = app.create_workspace(json!({"name": "globex"})).await;
    let (outsider, outsider_token) = app.registered_agent("outsider", Some(&other_org)).await;
    let allowlist = format!("/orgs/{org}/plugins/allowlist");

    let default = app.admin_get(&allowlist).await;
    assert_eq!(default.status, StatusCode::OK, "{}", default.text);
    assert_eq!(
        default.body,
        json!({"org_id": org, "allow_all": false, "source": "default", "plugins": [
            {"plugin_name": "alpha", "enabled_by": "MOLECULE_PLUGIN_ALLOWLIST", "enabled_at": null},
        ]})
    );
    assert_eq!(
        install(&app, &child, &child_token, "local://beta")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let put = app
        .admin(
            Method::PUT,
            &allowlist,
            Some(json!({"plugins": ["beta"], "enabled_by": "someone-else"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(
        put.body,
        json!({"org_id": org, "plugins": ["beta"], "allow_all": false, "source": "org"})
    );
    let listed = app.admin_get(&allowlist).await;
    // The entry names the credential, not what the body claimed.
    assert_eq!(listed.body["plugins"][0]["enabled_by"], "admin");
    assert!(listed.body["plugins"][0]["enabled_at"].is_string());

    // The whole tree follows its org's list: a grandchild included.
    let beta = install(&app, &grandchild, &grandchild_token, "local://beta").await;
    assert_eq!(beta.status, StatusCode::OK, "{}", beta.text);
    let alpha = install(&app, &grandchild, &grandchild_token, "local://alpha").await;
    assert_eq!(
        (alpha.status, alpha.body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "plugin \"alpha\" is not in the org plugin allowlist"})
        )
    );
    let available = app
        .get(
            &format!("/workspaces/{child}/plugins/available"),
            Some(&child_token),
        )
        .await;
    assert_eq!(names(&available.body), ["beta"]);
    // Another org keeps the default.
    let outside = install(&app, &outsider, &outsider_token, "local://alpha").await;
    assert_eq!(outside.status, StatusCode::OK, "{}", outside.text);

    // An empty list of its own allows everything.
    let open = app
        .admin(Method::PUT, &allowlist, Some(json!({"plugins": []})))
        .await;
    assert_eq!(
        (&open.body["allow_all"], &open.body["source"]),
        (&json!(true), &json!("org"))
    );
    let alpha = install(&app, &grandchild, &grandchild_token, "local://alpha").await;
    assert_eq!(alpha.status, StatusCode::OK, "{}", alpha.text);

    // Refusals change nothing.
    let by_agent = app
        .call(
            Method::PUT,
            &allowlist,
            Some(&child_token),
            Some(json!({"plugins": ["x"]})),
        )
        .await;
    assert_eq!(by_agent.status, StatusCode::UNAUTHORIZED);
    let bad = app
        .admin(
            Method::PUT,
            &allowlist,
            Some(json!({"plugins": ["ok", "../x"]})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid plugin name", "plugin_name": "../x"})
        )
    );
    let not_an_org = app
        .admin(
            Method::PUT,
            &format!("/orgs/{child}/plugins/allowlist"),
            Some(json!({"plugins": []})),
        )
        .await;
    assert_eq!(
        (not_an_org.status, not_an_org.body),
        (StatusCode::NOT_FOUND, json!({"error": "org not found"}))
    );
    let still_open = app.admin_get(&allowlist).await;
    assert_eq!(still_open.body["allow_all"], true);
}

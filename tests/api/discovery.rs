//! Discovery, peers and access checks (docs/registry.md §4, docs/decisions.md D7).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

async fn discover(
    app: &TestApp,
    caller: Option<&str>,
    token: Option<&str>,
    target: &str,
) -> crate::helpers::Reply {
    let mut request = app
        .http
        .get(format!("{}/registry/discover/{target}", app.rest));
    if let Some(caller) = caller {
        request = request.header("x-workspace-id", caller);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    app.raw(request).await
}

#[tokio::test]
async fn discovery_follows_the_hierarchy_and_returns_usable_urls() {
    let app = spawn_app().await;
    let (team, _) = app.registered_agent("team", None).await;
    let (me, token) = app.registered_agent("me", Some(&team)).await;
    let (sibling, sibling_token) = app.registered_agent("sibling", Some(&team)).await;
    app.register(&sibling, "http://127.0.0.1:9100/a2a", Some(&sibling_token))
        .await;
    let (other_root, _) = app.registered_agent("other-root", None).await;
    let (cousin, _) = app.registered_agent("cousin", Some(&other_root)).await;

    let found = discover(&app, Some(&me), Some(&token), &sibling).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    assert_eq!(
        found.body,
        json!({"id": sibling, "url": "http://127.0.0.1:9100/a2a", "name": "sibling"})
    );
    let parent = discover(&app, Some(&me), Some(&token), &team).await;
    assert_eq!(parent.body["url"], "remote://no-inbound");

    let denied = discover(&app, Some(&me), Some(&token), &cousin).await;
    assert_eq!(
        (denied.status, denied.body),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "not authorized to discover this workspace"})
        )
    );
    let unknown = discover(
        &app,
        Some(&me),
        Some(&token),
        &uuid::Uuid::new_v4().to_string(),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    let headerless = discover(&app, None, Some(&token), &sibling).await;
    assert_eq!(
        (headerless.status, headerless.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "X-Workspace-ID header is required"})
        )
    );
    let forged = discover(&app, Some(&sibling), Some(&token), &me).await;
    assert_eq!(
        forged.body,
        json!({"error": "invalid workspace auth token"})
    );
    let anonymous = discover(&app, Some(&me), None, &sibling).await;
    assert_eq!(
        anonymous.body,
        json!({"error": "missing workspace auth token"})
    );

    app.admin(Method::DELETE, &format!("/workspaces/{sibling}"), None)
        .await;
    let gone = discover(&app, Some(&me), Some(&token), &sibling).await;
    assert_eq!(
        (gone.status, gone.body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "workspace not available", "status": "removed"})
        )
    );
}

#[tokio::test]
async fn peers_are_direct_relations_with_the_documented_shape() {
    let app = spawn_app().await;
    let (team, _) = app.registered_agent("team", None).await;
    let (me, token) = app.registered_agent("me", Some(&team)).await;
    let (sibling, sibling_token) = app.registered_agent("Summarizer", Some(&team)).await;
    let (child, _) = app.registered_agent("child", Some(&me)).await;
    let (grandchild, _) = app.registered_agent("grandchild", Some(&child)).await;
    app.heartbeat(&sibling, &sibling_token, json!({"active_tasks": 4}))
        .await;
    let gone = app
        .create_workspace(json!({"name": "gone", "parent_id": team}))
        .await;
    app.admin(Method::DELETE, &format!("/workspaces/{gone}"), None)
        .await;

    let peers = app
        .get(&format!("/registry/{me}/peers"), Some(&token))
        .await;
    assert_eq!(peers.status, StatusCode::OK, "{}", peers.text);
    let ids: Vec<_> = peers
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [sibling.clone(), child, team.clone()]);
    assert!(!ids.contains(&grandchild));
    assert_eq!(
        peers.body[0],
        json!({"id": sibling, "name": "Summarizer", "role": null, "tier": 3, "status": "online",
               "agent_card": {"name": "agent", "skills": []}, "url": "remote://no-inbound",
               "parent_id": team, "active_tasks": 4})
    );
    let filtered = app
        .get(&format!("/registry/{me}/peers?q=%20summ%20"), Some(&token))
        .await;
    assert_eq!(filtered.body.as_array().unwrap().len(), 1);
    let roots = app
        .get(&format!("/registry/{team}/peers"), Some(&app.admin_token))
        .await;
    assert_eq!(
        roots.body.as_array().unwrap().len(),
        2,
        "children only: {}",
        roots.text
    );
    let refused = app
        .get(&format!("/registry/{me}/peers"), Some(&sibling_token))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn check_access_needs_a_credential() {
    let app = spawn_app().await;
    let (a, token) = app.registered_agent("a", None).await;
    let (b, _) = app.registered_agent("b", Some(&a)).await;
    let (c, _) = app.registered_agent("c", Some(&b)).await;
    let (d, _) = app.registered_agent("d", None).await;
    let (e, _) = app.registered_agent("e", Some(&d)).await;
    async fn check_as(
        app: &crate::helpers::TestApp,
        caller: &str,
        target: &str,
        token: Option<&str>,
    ) -> crate::helpers::Reply {
        let body = json!({"caller_id": caller, "target_id": target});
        app.call(Method::POST, "/registry/check-access", token, Some(body))
            .await
    }
    let check = |caller, target, token| check_as(&app, caller, target, token);
    assert_eq!(
        check(&a, &c, Some(&token)).await.body,
        json!({"allowed": true})
    );
    assert_eq!(
        check(&a, &e, Some(&token)).await.body,
        json!({"allowed": false})
    );
    assert_eq!(
        check(&c, &e, Some(&app.admin_token)).await.body,
        json!({"allowed": false})
    );
    assert_eq!(
        check(&a, &d, Some(&app.admin_token)).await.body,
        json!({"allowed": true})
    );
    assert_eq!(check(&a, &c, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        check(&c, &a, Some(&token)).await.status,
        StatusCode::UNAUTHORIZED,
        "only as itself"
    );
    let bad = app
        .call(
            Method::POST,
            "/registry/check-access",
            Some(&token),
            Some(json!({"caller_id": a})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid request body"})
        )
    );
}

#[tokio::test]
async fn urls_are_returned_as_registered_and_rewritten_only_for_container_callers_in_dev() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        env: "dev",
        admin_token: false,
        ..Default::default()
    })
    .await;
    let (host_agent, host_token) = app.registered_agent("host-agent", None).await;
    let registered = app
        .register(&host_agent, "http://127.0.0.1:9001", Some(&host_token))
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    // An external caller (another agent on the developer's machine) gets the URL verbatim.
    let (laptop, laptop_token) = app.registered_agent("laptop", None).await;
    let seen = discover(&app, Some(&laptop), Some(&laptop_token), &host_agent).await;
    assert_eq!(seen.body["url"], "http://127.0.0.1:9001", "{}", seen.text);
    // A container runtime reaches the host through Docker's host name.
    let container = app.create_workspace(json!({"name": "in-docker"})).await;
    let minted = app
        .call(
            Method::POST,
            &format!("/workspaces/{container}/tokens"),
            None,
            None,
        )
        .await;
    let container_token = minted.body["auth_token"].as_str().unwrap().to_owned();
    let seen = discover(&app, Some(&container), Some(&container_token), &host_agent).await;
    assert_eq!(
        seen.body["url"], "http://host.docker.internal:9001",
        "{}",
        seen.text
    );
    let peers = app
        .get(
            &format!("/registry/{container}/peers"),
            Some(&container_token),
        )
        .await;
    let listed: Vec<&str> = peers
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|peer| peer["id"] == host_agent.as_str())
        .map(|peer| peer["url"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["http://host.docker.internal:9001"]);
}

#[tokio::test]
async fn a_workspace_token_reads_its_ancestors_and_nobody_else() {
    let app = spawn_app().await;
    let (grandparent, _) = app.registered_agent("grandparent", None).await;
    let (parent, _) = app.registered_agent("parent", Some(&grandparent)).await;
    let (me, token) = app.registered_agent("me", Some(&parent)).await;
    let (child, _) = app.registered_agent("child", Some(&me)).await;
    let (sibling, _) = app.registered_agent("sibling", Some(&parent)).await;
    let (stranger, _) = app.registered_agent("stranger", None).await;
    let own_view = app.get(&format!("/workspaces/{me}"), Some(&token)).await;
    for ancestor in [&parent, &grandparent] {
        let read = app
            .get(&format!("/workspaces/{ancestor}"), Some(&token))
            .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        assert_eq!(
            read.body.as_object().unwrap().keys().collect::<Vec<_>>(),
            own_view
                .body
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            "the same view as of itself"
        );
    }
    assert_eq!(
        app.get(&format!("/workspaces/{parent}"), Some(&token))
            .await
            .body["name"],
        "parent"
    );
    for other in [&child, &sibling, &stranger] {
        let refused = app.get(&format!("/workspaces/{other}"), Some(&token)).await;
        assert_eq!(
            (refused.status, refused.body),
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid workspace auth token"})
            )
        );
    }
}

//! The auth matrix (docs/workspaces.md §3): who may call which route, with the exact 401/403
//! bodies, and failing closed when the datastore is down.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app, spawn_app_with};

/// Every route of workspace `id` behind WorkspaceAuth.
fn workspace_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/workspaces/{id}"), None),
        (
            Method::PATCH,
            format!("/workspaces/{id}"),
            Some(json!({"name": "hijacked"})),
        ),
        (Method::GET, format!("/workspaces/{id}/state"), None),
        (Method::POST, format!("/workspaces/{id}/pause"), None),
        (Method::POST, format!("/workspaces/{id}/resume"), None),
        (Method::POST, format!("/workspaces/{id}/restart"), None),
        (Method::GET, format!("/workspaces/{id}/tokens"), None),
        (Method::POST, format!("/workspaces/{id}/tokens"), None),
        (
            Method::DELETE,
            format!("/workspaces/{id}/tokens/{}", uuid::Uuid::new_v4()),
            None,
        ),
    ]
}

fn admin_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/workspaces".to_owned(), None),
        (
            Method::POST,
            "/workspaces".to_owned(),
            Some(json!({"name": "intruder"})),
        ),
        (Method::DELETE, format!("/workspaces/{id}"), None),
        (Method::GET, "/org/tokens".to_owned(), None),
        (
            Method::POST,
            "/org/tokens".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/org/tokens/{}", uuid::Uuid::new_v4()),
            None,
        ),
        (Method::GET, "/events".to_owned(), None),
        (Method::GET, format!("/events/{id}"), None),
    ]
}

#[tokio::test]
async fn a_token_of_workspace_a_gets_401_on_every_route_of_workspace_b() {
    let app = spawn_app().await;
    let a = app.create_workspace(json!({"name": "a"})).await;
    let b = app.create_workspace(json!({"name": "b"})).await;
    let token_a = app.workspace_token(&a).await;
    let before = app.admin_get(&format!("/workspaces/{b}")).await.body;
    for (method, path, body) in workspace_routes(&b) {
        let reply = app.call(method.clone(), &path, Some(&token_a), body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": "invalid workspace auth token"}),
            "{method} {path}"
        );
    }
    assert_eq!(
        app.admin_get(&format!("/workspaces/{b}")).await.body,
        before
    );
    // The same token works on its own workspace.
    assert_eq!(
        app.get(&format!("/workspaces/{a}"), Some(&token_a))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn workspace_routes_need_a_bearer_and_reject_forged_ones() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    for (method, path, body) in workspace_routes(&id) {
        let reply = app.call(method.clone(), &path, None, body.clone()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": "missing workspace auth token"}),
            "{method} {path}"
        );
        let forged = molecule::auth::MintedToken::generate().plaintext;
        let reply = app.call(method.clone(), &path, Some(&forged), body).await;
        assert_eq!(
            reply.body,
            json!({"error": "invalid workspace auth token"}),
            "{method} {path}"
        );
    }
    // Only the exact `Bearer ` prefix counts.
    let token = app.workspace_token(&id).await;
    let request = app
        .http
        .get(format!("{}/workspaces/{id}", app.rest))
        .header("authorization", format!("bearer {token}"));
    assert_eq!(
        app.raw(request).await.body,
        json!({"error": "missing workspace auth token"})
    );
}

#[tokio::test]
async fn admin_routes_refuse_missing_bad_and_workspace_bearers() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    let token = app.workspace_token(&id).await;
    for (method, path, body) in admin_routes(&id) {
        let reply = app.call(method.clone(), &path, None, body.clone()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": "admin auth required"}),
            "{method} {path}"
        );
        // A workspace token never grants admin.
        let reply = app.call(method.clone(), &path, Some(&token), body).await;
        assert_eq!(
            reply.body,
            json!({"error": "invalid admin auth token"}),
            "{method} {path}"
        );
    }
    // Malformed bodies on admin routes are judged after auth, so nothing leaks.
    let request = app.http.post(format!("{}/workspaces", app.rest)).body("{");
    assert_eq!(
        app.raw(request).await.body,
        json!({"error": "admin auth required"})
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
}

#[tokio::test]
async fn org_keys_act_as_admin_until_revoked() {
    let app = spawn_app().await;
    let minted = app
        .admin(Method::POST, "/org/tokens", Some(json!({"name": "ci-bot"})))
        .await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text);
    let key = minted.body["auth_token"].as_str().unwrap().to_owned();
    let key_id = minted.body["id"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 43);
    assert_eq!(minted.body["prefix"], key[..8]);
    assert_eq!(minted.body["name"], "ci-bot");
    assert_eq!(
        minted.body["warning"],
        "copy this token now; it will not be shown again"
    );
    assert!(minted.text.starts_with(r#"{"id":"#), "{}", minted.text);

    let id = app.create_workspace(json!({"name": "w"})).await;
    assert_eq!(
        app.get("/workspaces", Some(&key)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/workspaces/{id}"), Some(&key))
            .await
            .status,
        StatusCode::OK
    );

    // A key minted by a key records its creator.
    let second = app
        .call(Method::POST, "/org/tokens", Some(&key), None)
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert!(second.body.get("name").is_none());
    let listed = app.admin_get("/org/tokens").await;
    assert_eq!(listed.body["count"], 2);
    let first_listed = &listed.body["tokens"][0];
    assert_eq!(
        first_listed["created_by"],
        format!("org-token:{}", &key[..8])
    );
    assert!(first_listed.get("name").is_none());

    let revoked = app
        .admin(Method::DELETE, &format!("/org/tokens/{key_id}"), None)
        .await;
    assert_eq!(revoked.body, json!({"revoked": key_id}));
    let again = app
        .admin(Method::DELETE, &format!("/org/tokens/{key_id}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        again.body,
        json!({"error": "token not found or already revoked"})
    );
    assert_eq!(
        app.admin(Method::DELETE, "/org/tokens/not-a-uuid", None)
            .await
            .body,
        json!({"error": "token not found or already revoked"})
    );
    assert_eq!(
        app.get("/workspaces", Some(&key)).await.body,
        json!({"error": "invalid admin auth token"})
    );
    let long = app
        .admin(
            Method::POST,
            "/org/tokens",
            Some(json!({"name": "n".repeat(101)})),
        )
        .await;
    assert_eq!(long.body, json!({"error": "name too long (max 100 chars)"}));
}

#[tokio::test]
async fn dev_mode_lets_bearerless_requests_through() {
    let app = spawn_app_with(Options {
        admin_token: false,
        env: "development",
        ..Options::default()
    })
    .await;
    let created = app
        .call(
            Method::POST,
            "/workspaces",
            None,
            Some(json!({"name": "local"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/workspaces/{id}"), None).await.status,
        StatusCode::OK
    );
    let test_token = app
        .get(&format!("/admin/workspaces/{id}/test-token"), None)
        .await;
    assert_eq!(test_token.status, StatusCode::OK, "{}", test_token.text);
    // A wrong bearer is still wrong in dev mode.
    let reply = app.get(&format!("/workspaces/{id}"), Some("wrong")).await;
    assert_eq!(reply.body, json!({"error": "invalid workspace auth token"}));
}

#[tokio::test]
async fn a_datastore_outage_fails_closed_with_503() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "w"})).await;
    let token = app.workspace_token(&id).await;
    app.db
        .connection()
        .close_by_ref()
        .await
        .expect("pool closes");
    let unavailable = json!({"error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable"});
    let reply = app.get(&format!("/workspaces/{id}"), Some(&token)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.body, unavailable);
    let reply = app.admin_get("/workspaces").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.body, unavailable);
}

#[tokio::test]
async fn org_keys_are_minted_at_most_ten_times_an_hour_per_ip() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let reply = app.admin(Method::POST, "/org/tokens", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let limited = app.admin(Method::POST, "/org/tokens", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 60, "an hourly window: {retry}");
    assert_eq!(
        limited.body,
        json!({"error": "rate limit exceeded", "retry_after": retry})
    );
    assert_eq!(app.admin_get("/org/tokens").await.body["count"], 10);
}

/// The next message of a gRPC stream, or how it ended, within `seconds`.
async fn next_or_end<T>(
    stream: &mut tonic::Streaming<T>,
    seconds: u64,
) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(std::time::Duration::from_secs(seconds), stream.message())
        .await
        .expect("the stream answered in time")
}

/// Audit N5: revocation did not reach native gRPC streams. `WatchEvents` on a revoked org key
/// still received an operator's conversation 120 s later; an agent's watch and its `Attach`
/// stream outlived their revoked token.
#[tokio::test]
async fn revocation_ends_every_long_lived_grpc_stream() {
    use molecule::pb;

    use crate::grpc::authed;

    let app = spawn_app_with(Options {
        ws_recheck: Some(std::time::Duration::from_millis(500)),
        ..Options::default()
    })
    .await;
    let org = app
        .admin(
            Method::POST,
            "/org/tokens",
            Some(json!({"name": "watcher"})),
        )
        .await;
    let org_key = org.body["auth_token"].as_str().unwrap().to_owned();
    let org_key_id = org.body["id"].as_str().unwrap().to_owned();
    let (id, token) = app.registered_agent("agent", None).await;
    let mut client = app.grpc.clone();
    let mut operator = client
        .watch_events(authed(pb::WatchEventsRequest::default(), &org_key))
        .await
        .unwrap()
        .into_inner();
    let mut request = authed(pb::WatchEventsRequest::default(), &token);
    request
        .metadata_mut()
        .insert("x-workspace-id", id.parse().unwrap());
    let mut agent = client.watch_events(request).await.unwrap().into_inner();
    let (_frames, mut attached) = crate::a2a::attach(&app, &id, &token, 1).await.unwrap();

    // The org key is revoked: its watch ends at the next re-check and hears nothing after.
    let revoked = app
        .admin(Method::DELETE, &format!("/org/tokens/{org_key_id}"), None)
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    app.create_workspace(json!({"name": "after-revocation"}))
        .await;
    let ended = loop {
        match next_or_end(&mut operator, 5).await {
            Ok(Some(event)) => assert!(
                !event.payload_json.contains("after-revocation"),
                "a revoked key heard {event:?}"
            ),
            Ok(None) => panic!("the watch ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        (ended.code(), ended.message()),
        (tonic::Code::Unauthenticated, "credential no longer valid")
    );

    // The workspace token is revoked: its watch and its attach stream end at once.
    let tokens = app.admin_get(&format!("/workspaces/{id}/tokens")).await;
    let token_id = tokens.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    let revoked_at = std::time::Instant::now();
    app.admin(
        Method::DELETE,
        &format!("/workspaces/{id}/tokens/{token_id}"),
        None,
    )
    .await;
    let ended = loop {
        match next_or_end(&mut agent, 5).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the agent's watch ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.message(), "credential no longer valid");
    let ended = loop {
        match next_or_end(&mut attached, 5).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the attach stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        (ended.code(), ended.message()),
        (tonic::Code::Unauthenticated, "workspace token revoked")
    );
    assert!(revoked_at.elapsed() < std::time::Duration::from_secs(1));
    // Calls for the agent no longer reach the revoked stream.
    let route = app.admin_get(&format!("/workspaces/{id}/route")).await;
    assert_eq!(route.body["route"], "mailbox", "{}", route.text);
}

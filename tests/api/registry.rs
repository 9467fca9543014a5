//! Registration, heartbeats and liveness over REST (docs/registry.md §1–2, §5, docs/decisions.md
//! D1, D2, D5, D12).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, Options, eventually, spawn_app, spawn_app_with, spawn_on};

#[tokio::test]
async fn the_first_registration_mints_the_token_once() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "agent", "external": true}))
        .await;
    let first = app.register(&id, "http://127.0.0.1:9001", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let token = first.body["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(
        first.body,
        json!({"status": "registered", "auth_token": token})
    );
    assert_eq!(token.len(), 43);
    let view = app
        .get(&format!("/workspaces/{id}"), Some(&token))
        .await
        .body;
    assert_eq!(
        (view["status"].as_str(), view["url"].as_str()),
        (Some("online"), Some("http://127.0.0.1:9001"))
    );
    assert_eq!(view["agent_card"], json!({"name": "agent", "skills": []}));
    let events = app.admin_get(&format!("/events/{id}")).await.body;
    assert_eq!(events[0]["event_type"], "WORKSPACE_ONLINE");
    assert_eq!(
        events[0]["payload"],
        json!({"url": "http://127.0.0.1:9001", "agent_card": {"name": "agent", "skills": []}})
    );

    // docs/decisions.md D2: the SDK restarts without a bearer and the same URL: accepted, no new
    // token.
    let again = app.register(&id, "http://127.0.0.1:9001", None).await;
    assert_eq!(again.body, json!({"status": "registered"}));
    // A changed URL needs the token.
    let moved = app.register(&id, "http://127.0.0.1:9002", None).await;
    assert_eq!(
        (moved.status, moved.body.clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing workspace auth token"})
        )
    );
    let with_token = app
        .register(&id, "http://127.0.0.1:9002", Some(&token))
        .await;
    assert_eq!(with_token.body, json!({"status": "registered"}));
    // Audit N13: "registered" means the new URL is the one in force.
    let moved = app.admin_get(&format!("/workspaces/{id}")).await;
    assert_eq!(moved.body["url"], "http://127.0.0.1:9002");
    let forged = app
        .register(&id, "http://127.0.0.1:9003", Some("forged"))
        .await;
    assert_eq!(
        forged.body,
        json!({"error": "invalid workspace auth token"})
    );
    let listed = app.admin_get(&format!("/workspaces/{id}/tokens")).await;
    assert_eq!(listed.body["count"], 1);

    // Revoking every token never makes the workspace claimable again (Q7).
    let token_id = listed.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    app.admin(
        Method::DELETE,
        &format!("/workspaces/{id}/tokens/{token_id}"),
        None,
    )
    .await;
    let hijack = app.register(&id, "http://127.0.0.1:9666", None).await;
    assert_eq!(hijack.status, StatusCode::UNAUTHORIZED);
    // The admin recovers it, and a new token is minted because none is live.
    let recovered = app
        .register(&id, "http://127.0.0.1:9002", Some(&app.admin_token))
        .await;
    assert!(
        recovered.body["auth_token"].is_string(),
        "{}",
        recovered.text
    );
}

#[tokio::test]
async fn a_bearerless_re_register_refreshes_nothing() {
    let app = spawn_app_with(Options {
        liveness_ttl_seconds: 2,
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("quiet", None).await;
    assert_eq!(
        app.heartbeat(&id, &token, json!({})).await.status,
        StatusCode::OK
    );
    // Someone who knows only the id keeps re-registering; the agent itself is silent.
    let started = std::time::Instant::now();
    let went_offline = loop {
        let again = app.register(&id, "remote://no-inbound", None).await;
        assert_eq!(again.body, json!({"status": "registered"}));
        let status = app.admin_get(&format!("/workspaces/{id}")).await.body["status"].clone();
        if status == "offline" {
            break true;
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        went_offline,
        "a bearer-less re-register kept the workspace online"
    );
}

#[tokio::test]
async fn dev_mode_keeps_the_url_hijack_guard() {
    let app = spawn_app_with(Options {
        env: "dev",
        admin_token: false,
        ..Options::default()
    })
    .await;
    let id = app
        .create_workspace(json!({"name": "dev-agent", "external": true}))
        .await;
    let first = app.register(&id, "http://127.0.0.1:9001", None).await;
    assert!(first.body["auth_token"].is_string(), "{}", first.text);
    let same = app.register(&id, "http://127.0.0.1:9001", None).await;
    assert_eq!(same.body, json!({"status": "registered"}));
    let hijack = app.register(&id, "http://127.0.0.1:9666", None).await;
    assert_eq!(
        (hijack.status, hijack.body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing workspace auth token"})
        )
    );
    let view = app.get(&format!("/workspaces/{id}"), None).await.body;
    assert_eq!(view["url"], "http://127.0.0.1:9001");
}

#[tokio::test]
async fn ipv6_forms_of_blocked_ipv4_addresses_are_refused_at_registration() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "sneaky", "external": true}))
        .await;
    for url in [
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
    ] {
        let reply = app.register(&id, url, None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{url}: {}",
            reply.text
        );
    }
    let view = app.admin_get(&format!("/workspaces/{id}")).await.body;
    assert!(view["url"].as_str().unwrap_or("").is_empty(), "{view}");
}

#[tokio::test]
async fn concurrent_first_registrations_mint_exactly_one_token() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "racer", "external": true}))
        .await;
    let calls = (0..8).map(|_| app.register(&id, "remote://no-inbound", None));
    let replies = futures_util::future::join_all(calls).await;
    let minted = replies
        .iter()
        .filter(|reply| reply.body.get("auth_token").is_some())
        .count();
    assert!(
        replies.iter().all(|reply| reply.status == StatusCode::OK),
        "{replies:?}"
    );
    assert_eq!(minted, 1, "{replies:?}");
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}/tokens"))
            .await
            .body["count"],
        1
    );
}

#[tokio::test]
async fn registration_rejects_bad_input_and_unknown_or_removed_workspaces() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "agent", "external": true}))
        .await;
    let card = json!({"name": "a"});
    let cases = [
        (
            json!({"url": "http://127.0.0.1:1", "agent_card": card}),
            "invalid request body",
        ),
        (
            json!({"id": id, "agent_card": card}),
            "invalid request body",
        ),
        (
            json!({"id": id, "url": "", "agent_card": card}),
            "invalid request body",
        ),
        (
            json!({"id": id, "url": "http://127.0.0.1:1"}),
            "invalid request body",
        ),
        (
            json!({"id": id, "url": "http://127.0.0.1:1", "agent_card": [1]}),
            "invalid request body",
        ),
        (
            json!({"id": id, "url": "http://127.0.0.1:1", "agent_card": null}),
            "invalid request body",
        ),
        (
            json!({"id": "nope", "url": "http://127.0.0.1:1", "agent_card": card}),
            "invalid request body",
        ),
        (
            json!({"id": id, "workspace_id": uuid::Uuid::new_v4().to_string(), "url": "http://127.0.0.1:1", "agent_card": card}),
            "invalid request body",
        ),
        (
            json!({"id": id, "url": "ftp://x", "agent_card": card}),
            "url scheme must be http or https, got \"ftp\"",
        ),
        (
            json!({"id": id, "url": "http://169.254.169.254/", "agent_card": card}),
            "url targets a blocked address: link-local address (cloud metadata endpoint)",
        ),
        (
            json!({"id": id, "url": "http://100.64.0.1/", "agent_card": card}),
            "url targets a blocked address: carrier-grade NAT address (RFC-6598)",
        ),
    ];
    for (body, message) in cases {
        let reply = app
            .call(Method::POST, "/registry/register", None, Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body, json!({"error": message}), "{body}");
    }
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}/tokens"))
            .await
            .body["count"],
        0
    );
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "awaiting_agent"
    );

    let unknown = app
        .register(&uuid::Uuid::new_v4().to_string(), "remote://x", None)
        .await;
    assert_eq!(
        (unknown.status, unknown.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    app.admin(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    let removed = app.register(&id, "remote://x", None).await;
    assert_eq!(
        (removed.status, removed.body),
        (StatusCode::GONE, json!({"error": "workspace removed"}))
    );
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}/tokens"))
            .await
            .body["count"],
        0
    );
    // By alias, too.
    let alias = app
        .call(
            Method::POST,
            "/registry/register",
            None,
            Some(json!({"workspace_id": id, "url": "remote://x", "agent_card": {}})),
        )
        .await;
    assert_eq!(alias.status, StatusCode::GONE);
}

#[tokio::test]
async fn registration_keeps_a_paused_workspace_paused() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    app.admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    app.register(&id, "remote://no-inbound", Some(&token)).await;
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "paused"
    );
    let beat = app.heartbeat(&id, &token, json!({})).await;
    assert_eq!(beat.status, StatusCode::OK);
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "paused"
    );
}

#[tokio::test]
async fn heartbeats_drive_each_transition_once_and_show_at_once() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "runtime"})).await;
    let token = app.workspace_token(&id).await;
    let beat = app
        .heartbeat(
            &id,
            &token,
            json!({"active_tasks": 2, "uptime_seconds": 3600, "current_task": "Analyzing"}),
        )
        .await;
    assert_eq!(
        (beat.status, beat.body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let view = app.admin_get(&format!("/workspaces/{id}")).await.body;
    assert_eq!(
        (
            view["status"].as_str(),
            view["active_tasks"].as_i64(),
            view["uptime_seconds"].as_i64()
        ),
        (Some("online"), Some(2), Some(3600))
    );
    let listed = app.admin_get("/workspaces").await.body;
    assert_eq!(listed[0]["current_task"], "Analyzing");

    for _ in 0..3 {
        app.heartbeat(
            &id,
            &token,
            json!({"error_rate": 0.7, "sample_error": "boom"}),
        )
        .await;
    }
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "degraded"
    );
    app.heartbeat(&id, &token, json!({"error_rate": 0.2})).await;
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "degraded",
        "hysteresis"
    );
    app.heartbeat(&id, &token, json!({"error_rate": 0.01}))
        .await;
    app.heartbeat(
        &id,
        &token,
        json!({"runtime_state": "wedged", "sample_error": "stuck", "error_rate": 0.9}),
    )
    .await;
    assert_eq!(
        app.event_types(&id).await,
        [
            "WORKSPACE_PROVISIONING",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED"
        ]
    );
    let events = app.admin_get(&format!("/events/{id}")).await.body;
    assert_eq!(
        events[0]["payload"],
        json!({"runtime_state": "wedged", "sample_error": "stuck"})
    );
    assert_eq!(
        events[2]["payload"],
        json!({"error_rate": 0.7, "sample_error": "boom"})
    );
    assert_eq!(
        events[3]["payload"],
        json!({"recovered_from": "provisioning"})
    );
    // A native runtime manages its own status.
    app.heartbeat(
        &id,
        &token,
        json!({"error_rate": 0.0, "runtime_metadata": {"capabilities": {"status_mgmt": true}}}),
    )
    .await;
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "degraded"
    );
}

#[tokio::test]
async fn heartbeats_need_the_workspaces_own_token_and_a_live_workspace() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let (_, other_token) = app.registered_agent("other", None).await;
    let missing = app
        .call(
            Method::POST,
            "/registry/heartbeat",
            None,
            Some(json!({"workspace_id": id})),
        )
        .await;
    assert_eq!(
        missing.body,
        json!({"error": "missing workspace auth token"})
    );
    let foreign = app.heartbeat(&id, &other_token, json!({})).await;
    assert_eq!(
        foreign.body,
        json!({"error": "invalid workspace auth token"})
    );
    for body in [
        json!({}),
        json!({"workspace_id": 5}),
        json!({"workspace_id": id, "active_tasks": "two"}),
    ] {
        let reply = app
            .call(
                Method::POST,
                "/registry/heartbeat",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid request body"})
            ),
            "{body}"
        );
    }
    let bad_id = app.heartbeat("not-a-uuid", &token, json!({})).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let unknown = app
        .heartbeat(
            &uuid::Uuid::new_v4().to_string(),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );

    app.admin(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    let before = app.admin_get(&format!("/events/{id}")).await.body;
    let removed = app
        .heartbeat(&id, &app.admin_token, json!({"current_task": "zombie"}))
        .await;
    assert_eq!(
        (removed.status, removed.body),
        (StatusCode::GONE, json!({"error": "workspace removed"}))
    );
    assert_eq!(
        app.admin_get(&format!("/events/{id}")).await.body,
        before,
        "no events for a removed workspace"
    );
    let revoked = app.heartbeat(&id, &token, json!({})).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn silence_past_the_ttl_goes_offline_and_a_beat_brings_it_back() {
    let app = spawn_app_with(Options {
        liveness_ttl_seconds: 1,
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("agent", None).await;
    eventually(10, || async {
        (app.admin_get(&format!("/workspaces/{id}")).await.body["status"] == "offline")
            .then_some(())
    })
    .await;
    app.heartbeat(&id, &token, json!({})).await;
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "online"
    );
    let types = app.event_types(&id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "WORKSPACE_OFFLINE").count(),
        1,
        "{types:?}"
    );
    assert_eq!(types.last().unwrap(), "WORKSPACE_ONLINE");
}

#[tokio::test]
async fn with_two_replicas_each_expiry_yields_exactly_one_offline_event() {
    let backend = Backend::fresh().await.with_redis();
    let options = Options {
        liveness_ttl_seconds: 1,
        ..Options::default()
    };
    let first = spawn_on(backend.clone(), options.clone()).await;
    let second = spawn_on(backend, options).await;
    let (id, token) = first.registered_agent("agent", None).await;
    // Beats land on either replica.
    second
        .heartbeat(&id, &token, json!({"active_tasks": 1}))
        .await;
    assert_eq!(
        first.admin_get(&format!("/workspaces/{id}")).await.body["active_tasks"],
        1
    );
    eventually(10, || async {
        (second.admin_get(&format!("/workspaces/{id}")).await.body["status"] == "offline")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let types = first.event_types(&id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "WORKSPACE_OFFLINE").count(),
        1,
        "{types:?}"
    );
}

#[tokio::test]
async fn update_card_replaces_the_card_only() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let card = json!({"name": "v2", "skills": [{"id": "echo", "name": "Echo"}], "big": 12345678901234567890u64});
    let reply = app
        .call(
            Method::POST,
            "/registry/update-card",
            Some(&token),
            Some(json!({"workspace_id": id, "agent_card": card})),
        )
        .await;
    assert_eq!(reply.body, json!({"status": "updated"}));
    let view = app.get(&format!("/workspaces/{id}"), Some(&token)).await;
    assert!(
        view.text.contains(r#""big":12345678901234567890"#),
        "large integers survive: {}",
        view.text
    );
    assert_eq!(
        app.event_types(&id).await.last().unwrap(),
        "AGENT_CARD_UPDATED"
    );
    let bad = app
        .call(
            Method::POST,
            "/registry/update-card",
            Some(&token),
            Some(json!({"workspace_id": id, "agent_card": "x"})),
        )
        .await;
    assert_eq!(bad.body, json!({"error": "invalid request body"}));
    let none = app
        .call(
            Method::POST,
            "/registry/update-card",
            None,
            Some(json!({"workspace_id": id, "agent_card": {}})),
        )
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_clean_shutdown_persists_every_acknowledged_beat() {
    use molecule::store::entities::workspace;
    use sea_orm::EntityTrait;
    // Stops land at different points of the 2 s flush cycle.
    for round in 0..5u64 {
        let app = spawn_app().await;
        let (id, token) = app.registered_agent("last-words", None).await;
        let beat = |uptime: i64| app.heartbeat(&id, &token, json!({"uptime_seconds": uptime}));
        assert_eq!(beat(200).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(round * 450)).await;
        assert_eq!(beat(300).await.status, StatusCode::OK);
        let db = app.db.clone();
        app.stop().await;
        let row = workspace::Entity::find_by_id(id.clone())
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.uptime_seconds, 300, "round {round}");
    }
}

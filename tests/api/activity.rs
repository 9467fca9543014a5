//! Activity logs, the poll-mode cursor reads and notify (docs/registry.md §7).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn log(app: &TestApp, id: &str, token: &str, body: Value) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/activity"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn activity_is_validated_logged_and_listed_newest_first() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let (peer, _) = app.registered_agent("peer", None).await;
    let reply = log(&app, &id, &token, json!({"activity_type": "a2a_send", "method": "message/send", "summary": "Sent", "target_id": peer, "duration_ms": 150, "request_body": {"task": "x"}})).await;
    assert_eq!(reply.body, json!({"status": "logged"}), "{}", reply.text);
    log(&app, &id, &token, json!({"activity_type": "agent_log", "metadata": {"model": "gpt-4"}, "status": "error", "error_detail": "bad"})).await;

    let cases = [
        (
            json!({"method": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"activity_type": "dance"}),
            StatusCode::BAD_REQUEST,
            "invalid activity_type, must be one of: a2a_send, a2a_receive, task_update, agent_log, skill_promotion, memory_write, error",
        ),
        (
            json!({"activity_type": "agent_log", "source_id": peer}),
            StatusCode::FORBIDDEN,
            "source_id must match authenticated workspace",
        ),
        (
            json!({"activity_type": "agent_log", "target_id": "nope"}),
            StatusCode::BAD_REQUEST,
            "invalid target_id",
        ),
        (
            json!({"activity_type": 7}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
    ];
    for (body, status, message) in cases {
        let reply = log(&app, &id, &token, body.clone()).await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": message})),
            "{body}"
        );
    }
    let rows = app
        .get(&format!("/workspaces/{id}/activity"), Some(&token))
        .await
        .body;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["activity_type"], "agent_log");
    assert_eq!(rows[0]["request_body"], json!({"model": "gpt-4"}));
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["error_detail"].as_str()),
        (Some("error"), Some("bad"))
    );
    assert_eq!(rows[1]["source_id"], id);
    assert_eq!(rows[1]["target_id"], peer);
    assert_eq!(rows[1]["duration_ms"], 150);
    assert_eq!(rows[1]["type"], "a2a_send");
    assert_eq!(rows[1]["ts"], rows[1]["created_at"]);
    assert!(rows[1].get("response_body").is_none());

    let filtered = app
        .get(
            &format!("/workspaces/{id}/activity?type=a2a_send&source=agent&limit=abc"),
            Some(&token),
        )
        .await;
    assert_eq!(filtered.body.as_array().unwrap().len(), 1);
    let bad_source = app
        .get(
            &format!("/workspaces/{id}/activity?source=robot"),
            Some(&token),
        )
        .await;
    assert_eq!(
        bad_source.body,
        json!({"error": "source must be 'canvas' or 'agent'"})
    );
    let bad_ts = app
        .get(
            &format!("/workspaces/{id}/activity?before_ts=yesterday"),
            Some(&token),
        )
        .await;
    assert_eq!(bad_ts.status, StatusCode::BAD_REQUEST);
    let other = app
        .get(&format!("/workspaces/{peer}/activity"), Some(&token))
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
}

/// Inserts an inbound A2A message row the way the proxy records it.
async fn inbound(app: &TestApp, id: &str, from: Option<&str>, text: &str) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let backend = app.db.get_database_backend();
    let (sql, now) = match backend {
        DbBackend::Postgres => (
            "INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, method, request_body, status, created_at) VALUES ($1, $2, 'a2a_receive', $3, 'message/send', $4, 'ok', $5)",
            chrono::Utc::now(),
        ),
        _ => (
            "INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, method, request_body, status, created_at) VALUES (?, ?, 'a2a_receive', ?, 'message/send', ?, 'ok', ?)",
            chrono::Utc::now(),
        ),
    };
    let body = json!({"jsonrpc": "2.0", "method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}}});
    let values: Vec<sea_orm::Value> = vec![
        uuid::Uuid::new_v4().to_string().into(),
        id.to_owned().into(),
        from.map(str::to_owned).into(),
        body.to_string().into(),
        now.into(),
    ];
    app.db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

#[tokio::test]
async fn poll_mode_reads_a_cursor_oldest_first_without_self_notifications() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("poller", None).await;
    let (peer, _) = app.registered_agent("Peer", None).await;
    app.call(
        Method::PATCH,
        &format!("/workspaces/{peer}"),
        Some(&app.admin_token.clone()),
        Some(json!({"role": "helper"})),
    )
    .await;
    inbound(&app, &id, None, "first").await;
    let first = app
        .get(
            &format!("/workspaces/{id}/activity?type=a2a_receive&limit=100"),
            Some(&token),
        )
        .await
        .body;
    let cursor = first[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(first[0]["data"]["source"], "canvas_user");
    assert_eq!(first[0]["data"]["text"], "first");

    inbound(&app, &id, Some(&peer), "second").await;
    let notify = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/notify"),
            Some(&token),
            Some(json!({"message": "done"})),
        )
        .await;
    assert_eq!(notify.body, json!({"status": "sent"}));
    inbound(&app, &id, None, "third").await;

    let page = app
        .get(
            &format!("/workspaces/{id}/activity?type=a2a_receive&limit=100&since_id={cursor}"),
            Some(&token),
        )
        .await;
    let texts: Vec<_> = page
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["data"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("second"), json!("third")], "{}", page.text);
    let data = &page.body[0]["data"];
    assert_eq!(data["source"], "peer_agent");
    assert_eq!(data["kind"], "peer_agent");
    assert_eq!(data["peer_id"], peer);
    assert_eq!(data["peer_name"], "Peer");
    assert_eq!(data["peer_role"], "helper");
    assert_eq!(data["activity_id"], page.body[0]["id"]);
    assert!(
        data["agent_card_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/registry/discover/{peer}"))
    );

    let by_peer = app
        .get(
            &format!("/workspaces/{id}/activity?peer_id={peer}"),
            Some(&token),
        )
        .await;
    assert_eq!(by_peer.body.as_array().unwrap().len(), 1);
    // Without a cursor the canvas (an operator's credential) still sees the notify row, newest
    // first; the agent's own token reads it as a mailbox (docs/decisions.md D17, see a2a.rs).
    let all = app
        .admin_get(&format!("/workspaces/{id}/activity?type=a2a_receive"))
        .await
        .body;
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(all[1]["method"], "notify");
    assert_eq!(all[1]["summary"], "Agent message: done");
    assert_eq!(all[1]["response_body"], json!({"result": "done"}));

    let lost = app
        .get(
            &format!(
                "/workspaces/{id}/activity?since_id={}",
                uuid::Uuid::new_v4()
            ),
            Some(&token),
        )
        .await;
    assert_eq!(
        (lost.status, lost.body),
        (
            StatusCode::GONE,
            json!({"error": "since_id cursor no longer available"})
        )
    );
}

#[tokio::test]
async fn notify_validates_and_pushes_an_agent_message() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let path = format!("/workspaces/{id}/notify");
    for (body, message) in [
        (json!({}), "message is required"),
        (json!({"message": ""}), "message is required"),
        (
            json!({"message": "x", "attachments": [{"uri": "workspace:a"}]}),
            "attachment[0]: uri and name are required",
        ),
    ] {
        let reply = app
            .call(Method::POST, &path, Some(&token), Some(body.clone()))
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::BAD_REQUEST, json!({"error": message})),
            "{body}"
        );
    }
    let long = "é".repeat(100);
    let body = json!({"message": long, "attachments": [{"uri": "workspace:r.pdf", "name": "r.pdf", "mimeType": "application/pdf", "size": 12}]});
    assert_eq!(
        app.call(Method::POST, &path, Some(&token), Some(body))
            .await
            .body,
        json!({"status": "sent"})
    );
    let row = &app
        .get(&format!("/workspaces/{id}/activity"), Some(&token))
        .await
        .body[0];
    assert_eq!(
        row["summary"],
        format!("Agent message: {}…", "é".repeat(80))
    );
    assert_eq!(
        row["response_body"]["parts"],
        json!([{"kind": "file", "file": {"uri": "workspace:r.pdf", "name": "r.pdf", "mimeType": "application/pdf", "size": 12}}])
    );
    app.admin(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    let gone = app
        .call(
            Method::POST,
            &path,
            Some(&app.admin_token.clone()),
            Some(json!({"message": "x"})),
        )
        .await;
    assert_eq!(
        (gone.status, gone.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
}

/// The reference's session search: activity rows and the workspace's own memories, newest
/// first, matched in any case; `%` in the phrase is a character, not a wildcard.
#[tokio::test]
async fn session_search_finds_activity_and_memories_in_any_case() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("searcher", None).await;
    let (other, other_token) = app.registered_agent("other", None).await;
    log(
        &app,
        &id,
        &token,
        json!({"activity_type": "agent_log", "summary": "Deployed the Billing service", "status": "ok"}),
    )
    .await;
    log(
        &app,
        &id,
        &token,
        json!({"activity_type": "agent_log", "summary": "rolled back 50% of traffic"}),
    )
    .await;
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/memories"),
        Some(&token),
        Some(json!({"content": "billing runs on Tuesdays", "scope": "LOCAL"})),
    )
    .await;
    log(
        &app,
        &other,
        &other_token,
        json!({"activity_type": "agent_log", "summary": "billing elsewhere"}),
    )
    .await;

    let path = format!("/workspaces/{id}/session-search");
    let found = app.get(&format!("{path}?q=BILLING"), Some(&token)).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    let kinds: Vec<(&str, &str)> = found
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["kind"].as_str().unwrap(),
                item["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("memory", "billing runs on Tuesdays"),
            ("activity", "Deployed the Billing service")
        ]
    );
    let first = &found.body[1];
    assert_eq!(
        (&first["label"], &first["status"], &first["workspace_id"]),
        (&json!("agent_log"), &json!("ok"), &json!(id))
    );
    let literal = app.get(&format!("{path}?q=50%25"), Some(&token)).await;
    assert_eq!(literal.body.as_array().unwrap().len(), 1);
    let everything = app.get(&format!("{path}?limit=2"), Some(&token)).await;
    assert_eq!(everything.body.as_array().unwrap().len(), 2);
    let refused = app.get(&path, Some(&other_token)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

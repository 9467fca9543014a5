//! The audit trail (docs/operations.md O7): state changes append rows naming who, what, the
//! target and the request; the reference's filters; a changed row and a deleted row are found
//! by the API's `chain_valid` and by `molecule audit verify` straight from the database.

use molecule::store::entities::audit_event;
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::{
    cli::molecule,
    helpers::{Backend, Options, TestApp, spawn_app, spawn_app_with, spawn_on},
};

async fn audit(app: &TestApp, id: &str, query: &str) -> Value {
    let reply = app
        .admin_get(&format!("/workspaces/{id}/audit{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

fn operations(page: &Value) -> Vec<&str> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["operation"].as_str().unwrap())
        .collect()
}

/// A workspace with a history: created, keyed, given a secret, a schedule and a config, an
/// approval decided, paused and resumed. Returns its id and its token.
async fn workspace_with_history(app: &TestApp) -> (String, String) {
    let id = app.create_workspace(json!({"name": "audited"})).await;
    let token = app.workspace_token(&id).await;
    let secret = app
        .http
        .post(format!("{}/workspaces/{id}/secrets", app.rest))
        .bearer_auth(&app.admin_token)
        .header("x-request-id", "req-secret-1")
        .json(&json!({"key": "API_KEY", "value": "s3cr3t-never-in-the-trail"}));
    assert!(app.raw(secret).await.status.is_success());
    let schedule = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/schedules"),
            Some(&token),
            Some(json!({"name": "nightly", "cron_expr": "0 3 * * *", "prompt": "tidy up"})),
        )
        .await;
    assert_eq!(schedule.status, StatusCode::CREATED, "{}", schedule.text);
    let config = app
        .admin(
            Method::PATCH,
            &format!("/workspaces/{id}/config"),
            Some(json!({"model": "small"})),
        )
        .await;
    assert_eq!(config.status, StatusCode::OK, "{}", config.text);
    let approval = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/approvals"),
            Some(&token),
            Some(json!({"action": "deploy", "reason": "release"})),
        )
        .await;
    let approval_id = approval.body["approval_id"].as_str().unwrap().to_owned();
    let decided = app
        .admin(
            Method::POST,
            &format!("/workspaces/{id}/approvals/{approval_id}/decide"),
            Some(json!({"decision": "approved"})),
        )
        .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.text);
    for action in ["pause", "resume"] {
        let reply = app
            .admin(Method::POST, &format!("/workspaces/{id}/{action}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    (id, token)
}

#[tokio::test]
async fn state_changes_are_recorded_with_who_and_never_a_secret_value() {
    let app = spawn_app().await;
    let (id, token) = workspace_with_history(&app).await;

    let page = audit(&app, &id, "").await;
    assert_eq!(
        operations(&page),
        [
            "workspace.create",
            "token.mint",
            "secret.set",
            "schedule.create",
            "config.update",
            "approval.decide",
            "workspace.pause",
            "workspace.resume",
        ]
    );
    assert_eq!(page["total"], 8);
    assert_eq!(page["chain_valid"], true);
    assert_eq!(page["chain_problems"], json!([]));
    assert!(!page.to_string().contains("s3cr3t"), "{page}");

    let events = page["events"].as_array().unwrap();
    let secret = &events[2];
    assert_eq!(secret["actor"], "admin");
    assert_eq!(secret["target"], "API_KEY");
    assert_eq!(secret["request_id"], "req-secret-1");
    assert_eq!(secret["workspace_id"], id.as_str());
    // The runtime created the schedule with the workspace's own token.
    assert_eq!(events[3]["actor"], format!("workspace:{id}"));
    assert_eq!(events[5]["details"], json!({"decision": "approved"}));
    for (position, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], position as i64 + 1);
        let previous = position
            .checked_sub(1)
            .map(|before| &events[before]["hmac"]);
        assert_eq!(&event["prev_hmac"], previous.unwrap_or(&Value::Null));
    }

    // The reference's filters: agent_id is the actor, session_id the request id.
    let by_actor = audit(&app, &id, &format!("?agent_id=workspace:{id}")).await;
    assert_eq!(operations(&by_actor), ["schedule.create"]);
    let by_request = audit(&app, &id, "?session_id=req-secret-1").await;
    assert_eq!(operations(&by_request), ["secret.set"]);
    let paged = audit(&app, &id, "?limit=2&offset=6&operation=").await;
    assert_eq!(
        (operations(&paged), &paged["total"]),
        (vec!["workspace.pause", "workspace.resume"], &json!(8))
    );
    let at = events[4]["timestamp"].as_str().unwrap();
    let window = audit(&app, &id, &format!("?from={}", urlencode(at))).await;
    assert_eq!(operations(&window)[0], "config.update");
    let before = audit(&app, &id, &format!("?to={}", urlencode(at))).await;
    assert!(!operations(&before).contains(&"config.update"));
    let bad = app
        .admin_get(&format!("/workspaces/{id}/audit?from=yesterday"))
        .await;
    assert_eq!(
        (bad.status, bad.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "from must be RFC 3339 (e.g. 2026-04-17T00:00:00Z)"})
        )
    );

    // The workspace reads its own trail; another workspace does not.
    let own = app
        .get(&format!("/workspaces/{id}/audit"), Some(&token))
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let (_, stranger) = app.registered_agent("stranger", None).await;
    let refused = app
        .get(&format!("/workspaces/{id}/audit"), Some(&stranger))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);

    // No route changes an audit row.
    for method in [Method::DELETE, Method::PATCH, Method::PUT, Method::POST] {
        let reply = app
            .admin(method.clone(), &format!("/workspaces/{id}/audit"), None)
            .await;
        assert!(
            matches!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND
            ),
            "{method} answered {}",
            reply.status
        );
    }
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn organisation_actions_join_the_org_chain_for_operators_only() {
    let app = spawn_app().await;
    let key = app
        .admin(Method::POST, "/org/tokens", Some(json!({"name": "ci"})))
        .await;
    assert!(key.status.is_success(), "{}", key.text);
    let global = app
        .admin(
            Method::PUT,
            "/settings/secrets",
            Some(json!({"key": "SHARED", "value": "global-value-never-in-the-trail"})),
        )
        .await;
    assert!(global.status.is_success(), "{}", global.text);
    let rotated = app
        .admin(Method::POST, "/admin/secrets/rotate-key", None)
        .await;
    assert!(rotated.status.is_success(), "{}", rotated.text);

    let page = app.admin_get("/admin/audit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(
        operations(&page.body),
        ["org_token.mint", "global_secret.set", "secrets.rotate_key"]
    );
    assert_eq!(page.body["chain_valid"], true);
    assert!(!page.text.contains("global-value"));

    let (_, token) = app.registered_agent("agent", None).await;
    let refused = app.get("/admin/audit", Some(&token)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
}

/// Edits one row and deletes another: the API's verdict and `molecule audit verify` (from the
/// database, keyed by the same salt) both name them; the wrong salt fails every row.
#[tokio::test]
async fn a_changed_row_and_a_deleted_row_are_found() {
    const SALT: &str = "ledger-salt-for-the-test";
    let backend = Backend::fresh().await;
    let options = Options {
        audit_salt: Some(SALT),
        ..Options::default()
    };
    let app = spawn_on(backend.clone(), options).await;
    let (id, _) = workspace_with_history(&app).await;
    let intact = audit(&app, &id, "").await;
    let events = intact["events"].as_array().unwrap();
    let edited = events[2]["id"].as_str().unwrap().to_owned();
    let deleted = events[5]["id"].as_str().unwrap().to_owned();

    let verify = |salt: &str| {
        molecule()
            .args(["audit", "verify", "--chain", &id])
            .env("DATABASE_URL", &backend.database_url)
            .env("AUDIT_LEDGER_SALT", salt)
            .output()
            .unwrap()
    };
    let clean = verify(SALT);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    audit_event::Entity::update_many()
        .col_expr(
            audit_event::Column::Details,
            Expr::value(r#"{"decision":"denied"}"#),
        )
        .filter(audit_event::Column::Id.eq(edited.clone()))
        .exec(&app.db)
        .await
        .unwrap();
    audit_event::Entity::delete_by_id(deleted.clone())
        .exec(&app.db)
        .await
        .unwrap();

    let page = audit(&app, &id, "").await;
    assert_eq!(page["chain_valid"], false);
    assert_eq!(
        page["chain_problems"],
        json!([
            {"seq": 3, "id": edited, "problem": "hash mismatch: the row was changed"},
            {"seq": 6, "id": null, "problem": "missing: the row was deleted"},
        ])
    );

    let broken = verify(SALT);
    assert!(!broken.status.success());
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert!(
        stdout.contains(&format!(
            "{id} seq 3 (row {edited}): hash mismatch: the row was changed"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{id} seq 6 (row -): missing: the row was deleted")),
        "{stdout}"
    );
    assert_eq!(
        String::from_utf8_lossy(&broken.stderr).trim(),
        "error: 1 of 1 chains fail verification"
    );

    // Without the key a forger cannot make rows that pass: nor can a verifier with another.
    let unkeyed = verify("another-salt");
    let stdout = String::from_utf8_lossy(&unkeyed.stdout);
    assert_eq!(stdout.matches("hash mismatch").count(), 7, "{stdout}");
}

/// A deleted tail (the newest rows) is found through the chain's head, and appends after the
/// damage keep the chain's positions going.
#[tokio::test]
async fn a_deleted_tail_is_found_and_the_chain_goes_on() {
    let app = spawn_app_with(Options::default()).await;
    let id = app.create_workspace(json!({"name": "tail"})).await;
    app.admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    audit_event::Entity::delete_many()
        .filter(audit_event::Column::Chain.eq(id.clone()))
        .filter(audit_event::Column::Seq.eq(2))
        .exec(&app.db)
        .await
        .unwrap();
    let page = audit(&app, &id, "").await;
    assert_eq!(
        page["chain_problems"],
        json!([{"seq": 2, "id": null, "problem": "missing: the row was deleted"}])
    );
    app.admin(Method::POST, &format!("/workspaces/{id}/resume"), None)
        .await;
    let page = audit(&app, &id, "").await;
    let seqs: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(page["chain_valid"], false);
}

/// Concurrent writers to one chain queue on its head: every row gets its own position and links
/// to the one before.
#[tokio::test]
async fn concurrent_appends_keep_one_unbroken_chain() {
    let app = spawn_app().await;
    let id = app.create_workspace(json!({"name": "busy"})).await;
    let path = format!("/workspaces/{id}/secrets");
    let writes = (0..30).map(|n| {
        app.admin(
            Method::POST,
            &path,
            Some(json!({"key": format!("KEY_{n}"), "value": "v"})),
        )
    });
    for reply in futures::future::join_all(writes).await {
        assert!(reply.status.is_success(), "{}", reply.text);
    }
    let page = audit(&app, &id, "?limit=500").await;
    assert_eq!(page["total"], 31);
    assert_eq!(page["chain_valid"], true, "{}", page["chain_problems"]);
    let seqs: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<_>>());
}

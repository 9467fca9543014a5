//! The key-value memory (docs/operations.md O3): the reference's shapes, versions, compare-and-
//! set (50 concurrent writers, one winner per version), expiry and the caps.

use std::time::Duration;

use molecule::store::entities::key_value;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

async fn set(app: &TestApp, id: &str, token: &str, body: Value) -> Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/memory"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn keys_are_written_read_listed_and_deleted_with_versions() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("rememberer", None).await;
    let (_, stranger) = app.registered_agent("stranger", None).await;

    let first = set(
        &app,
        &id,
        &token,
        json!({"key": "cursor", "value": {"page": 1, "big": 12345678901234567890u64}}),
    )
    .await;
    assert_eq!(
        (first.status, first.body),
        (
            StatusCode::OK,
            json!({"status": "ok", "key": "cursor", "version": 1})
        )
    );
    let second = set(
        &app,
        &id,
        &token,
        json!({"key": "cursor", "value": {"page": 2}}),
    )
    .await;
    assert_eq!(second.body["version"], 2);
    set(&app, &id, &token, json!({"key": "alpha", "value": null})).await;

    let got = app
        .get(&format!("/workspaces/{id}/memory/cursor"), Some(&token))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let keys: Vec<&str> = got
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["key", "value", "version", "updated_at"],
        "no expires_at without a TTL"
    );
    assert_eq!(
        (got.body["value"].clone(), got.body["version"].clone()),
        (json!({"page": 2}), json!(2))
    );
    let listed = app
        .get(&format!("/workspaces/{id}/memory"), Some(&token))
        .await;
    let names: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "cursor"]);
    assert_eq!(listed.body[0]["value"], Value::Null, "a null value is kept");
    // Large integers survive.
    let raw = set(
        &app,
        &id,
        &token,
        json!({"key": "n", "value": 12345678901234567890u64}),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK);
    let n = app
        .get(&format!("/workspaces/{id}/memory/n"), Some(&token))
        .await;
    assert!(n.text.contains("12345678901234567890"), "{}", n.text);

    for (body, status, error) in [
        (
            json!({"value": 1}),
            StatusCode::BAD_REQUEST,
            "key is required",
        ),
        (
            json!({"key": "k"}),
            StatusCode::BAD_REQUEST,
            "value is required",
        ),
        (
            json!({"key": "k", "value": 1, "ttl_seconds": 0}),
            StatusCode::BAD_REQUEST,
            "ttl_seconds must be positive",
        ),
        (
            json!({"key": "k".repeat(257), "value": 1}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "key too long (at most 256 bytes)",
        ),
        (
            json!({"key": "k", "value": "v".repeat(64 * 1024)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value too large (at most 64 KiB)",
        ),
    ] {
        let reply = set(&app, &id, &token, body).await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": error}))
        );
    }
    let refused = set(&app, &id, &stranger, json!({"key": "k", "value": 1})).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get(&format!("/workspaces/{id}/memory/k"), Some(&token))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let deleted = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/memory/cursor"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.body),
        (StatusCode::OK, json!({"status": "deleted"}))
    );
    let gone = app
        .get(&format!("/workspaces/{id}/memory/cursor"), Some(&token))
        .await;
    assert_eq!(
        (gone.status, gone.body),
        (StatusCode::NOT_FOUND, json!({"error": "key not found"}))
    );
}

#[tokio::test]
async fn compare_and_set_names_the_current_version_on_a_mismatch() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("cas", None).await;
    let created = set(
        &app,
        &id,
        &token,
        json!({"key": "lock", "value": "mine", "if_match_version": 0}),
    )
    .await;
    assert_eq!(created.body["version"], 1);
    let again = set(
        &app,
        &id,
        &token,
        json!({"key": "lock", "value": "theirs", "if_match_version": 0}),
    )
    .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::CONFLICT,
            json!({"error": "if_match_version mismatch", "expected_version": 0, "current_version": 1})
        )
    );
    let missing = set(
        &app,
        &id,
        &token,
        json!({"key": "nothing", "value": 1, "if_match_version": 4}),
    )
    .await;
    assert_eq!(
        missing.body,
        json!({"error": "if_match_version mismatch: key does not exist", "expected_version": 4, "current_version": null})
    );
    let moved = set(
        &app,
        &id,
        &token,
        json!({"key": "lock", "value": "next", "if_match_version": 1}),
    )
    .await;
    assert_eq!(moved.body["version"], 2);
    let got = app
        .get(&format!("/workspaces/{id}/memory/lock"), Some(&token))
        .await;
    assert_eq!(got.body["value"], "next");
}

#[tokio::test]
async fn fifty_concurrent_writers_of_one_version_have_exactly_one_winner() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("contended", None).await;
    set(&app, &id, &token, json!({"key": "counter", "value": 0})).await;
    for version in 1..=4 {
        let writes = (0..50).map(|writer| {
            set(
                &app,
                &id,
                &token,
                json!({"key": "counter", "value": writer, "if_match_version": version}),
            )
        });
        let replies = futures::future::join_all(writes).await;
        let winners: Vec<&Reply> = replies
            .iter()
            .filter(|reply| reply.status == StatusCode::OK)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "version {version}: {:?}",
            replies.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        assert_eq!(winners[0].body["version"], version + 1);
        for loser in replies
            .iter()
            .filter(|reply| reply.status != StatusCode::OK)
        {
            assert_eq!(
                (loser.status, loser.body["current_version"].clone()),
                (StatusCode::CONFLICT, json!(version + 1))
            );
        }
    }
    let got = app
        .get(&format!("/workspaces/{id}/memory/counter"), Some(&token))
        .await;
    assert_eq!(got.body["version"], 5);
}

#[tokio::test]
async fn an_expired_key_is_gone_at_once_and_starts_again_at_version_one() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("forgetful", None).await;
    set(&app, &id, &token, json!({"key": "session", "value": "a"})).await;
    let short = set(
        &app,
        &id,
        &token,
        json!({"key": "session", "value": "b", "ttl_seconds": 1}),
    )
    .await;
    assert_eq!(short.body["version"], 2);
    let live = app
        .get(&format!("/workspaces/{id}/memory/session"), Some(&token))
        .await;
    assert!(live.body["expires_at"].as_str().unwrap().ends_with('Z'));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let gone = app
        .get(&format!("/workspaces/{id}/memory/session"), Some(&token))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/workspaces/{id}/memory"), Some(&token))
            .await
            .body,
        json!([])
    );
    let stale = set(
        &app,
        &id,
        &token,
        json!({"key": "session", "value": "c", "if_match_version": 2}),
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::CONFLICT,
        "an expired version cannot be matched"
    );
    let fresh = set(&app, &id, &token, json!({"key": "session", "value": "c"})).await;
    assert_eq!(fresh.body["version"], 1);
}

#[tokio::test]
async fn a_workspace_holds_at_most_ten_thousand_keys() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("hoarder", None).await;
    let now = molecule::store::now();
    let rows: Vec<key_value::ActiveModel> = (0..9_999)
        .map(|n| key_value::ActiveModel {
            workspace_id: Set(id.clone()),
            key: Set(format!("k{n:05}")),
            value: Set("1".to_owned()),
            version: Set(1),
            expires_at: Set(None),
            updated_at: Set(now),
        })
        .collect();
    for chunk in rows.chunks(500) {
        key_value::Entity::insert_many(chunk.to_vec())
            .exec(&app.db)
            .await
            .unwrap();
    }
    let last = set(&app, &id, &token, json!({"key": "last", "value": 1})).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.text);
    let over = set(&app, &id, &token, json!({"key": "one-more", "value": 1})).await;
    assert_eq!(
        (over.status, over.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "too many keys (at most 10000)"})
        )
    );
    let rewrite = set(&app, &id, &token, json!({"key": "last", "value": 2})).await;
    assert_eq!(
        rewrite.body["version"], 2,
        "an existing key may still change"
    );
}

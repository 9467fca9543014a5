//! Secrets (docs/workspaces.md §4, D9): precedence, the own-token pull, isolation, bad input,
//! ciphertext at rest, row binding, wrong keys, rotation under load, and the control frame on
//! change.

use molecule::{crypto::SecretsKey, pb};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::{
    cli::molecule,
    grpc::authed,
    heartbeat_stream::open,
    helpers::{Backend, Options, TestApp, spawn_app, spawn_on},
};

async fn set(app: &TestApp, id: &str, token: &str, key: &str, value: &str) {
    let reply = app
        .call(
            Method::PUT,
            &format!("/workspaces/{id}/secrets"),
            Some(token),
            Some(json!({"key": key, "value": value})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

async fn set_global(app: &TestApp, key: &str, value: &str) {
    let reply = app
        .admin(
            Method::PUT,
            "/settings/secrets",
            Some(json!({"key": key, "value": value})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// The listed keys and scopes, in order.
fn listed(reply: &Value) -> Vec<(String, String)> {
    reply
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            assert_eq!(item["has_value"], true);
            (
                item["key"].as_str().unwrap().to_owned(),
                item["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn workspace_values_override_globals_everywhere() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("secretive", None).await;
    set_global(&app, "A_GLOBAL", "g1").await;
    set_global(&app, "SHARED", "g2").await;
    let reply = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/secrets"),
            Some(&token),
            Some(json!({"key": "SHARED", "value": "w2"})),
        )
        .await;
    assert_eq!(reply.text, r#"{"status":"saved","key":"SHARED"}"#);
    set(&app, &id, &token, "OWN", "w3").await;

    let list = app
        .get(&format!("/workspaces/{id}/secrets"), Some(&token))
        .await;
    assert_eq!(
        listed(&list.body),
        [
            ("OWN".into(), "workspace".into()),
            ("SHARED".into(), "workspace".into()),
            ("A_GLOBAL".into(), "global".into()),
        ]
    );
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"), Some(&token))
        .await;
    assert_eq!(values.text, r#"{"A_GLOBAL":"g1","SHARED":"w2","OWN":"w3"}"#);

    // Deleting the override makes the global value effective again.
    let path = format!("/workspaces/{id}/secrets/SHARED");
    let deleted = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.text, r#"{"status":"deleted","key":"SHARED"}"#);
    let again = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.text, r#"{"error":"secret not found"}"#);
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"), Some(&token))
        .await;
    assert_eq!(
        values.body,
        json!({"A_GLOBAL": "g1", "SHARED": "g2", "OWN": "w3"})
    );

    // Global routes and their legacy aliases.
    for path in ["/settings/secrets", "/admin/secrets"] {
        let list = app.admin_get(path).await;
        assert_eq!(
            listed(&list.body),
            [
                ("A_GLOBAL".into(), "global".into()),
                ("SHARED".into(), "global".into())
            ]
        );
        let first = list.body[0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["key", "has_value", "created_at", "updated_at", "scope"]
        );
    }
    let legacy = app
        .admin(
            Method::POST,
            "/admin/secrets",
            Some(json!({"key": "LEGACY", "value": "l"})),
        )
        .await;
    assert_eq!(
        legacy.text,
        r#"{"status":"saved","key":"LEGACY","scope":"global"}"#
    );
    let no_put = app
        .admin(
            Method::PUT,
            "/admin/secrets",
            Some(json!({"key": "LEGACY", "value": "x"})),
        )
        .await;
    assert_eq!(no_put.status, StatusCode::METHOD_NOT_ALLOWED);
    let removed = app
        .admin(Method::DELETE, "/admin/secrets/LEGACY", None)
        .await;
    assert_eq!(
        removed.text,
        r#"{"status":"deleted","key":"LEGACY","scope":"global"}"#
    );
    let missing = app
        .admin(Method::DELETE, "/settings/secrets/LEGACY", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // The model alias is the MODEL_PROVIDER secret.
    let model_path = format!("/workspaces/{id}/model");
    assert_eq!(
        app.get(&model_path, Some(&token)).await.text,
        r#"{"model":"","source":"default"}"#
    );
    let saved = app
        .call(
            Method::PUT,
            &model_path,
            Some(&token),
            Some(json!({"model": "minimax/MiniMax-M2.7"})),
        )
        .await;
    assert_eq!(
        saved.text,
        r#"{"status":"saved","model":"minimax/MiniMax-M2.7"}"#
    );
    assert_eq!(
        app.get(&model_path, Some(&token)).await.text,
        r#"{"model":"minimax/MiniMax-M2.7","source":"workspace_secrets"}"#
    );
    let values = app
        .get(&format!("/workspaces/{id}/secrets/values"), Some(&token))
        .await;
    assert_eq!(values.body["MODEL_PROVIDER"], "minimax/MiniMax-M2.7");
    let cleared = app
        .call(
            Method::PUT,
            &model_path,
            Some(&token),
            Some(json!({"model": ""})),
        )
        .await;
    assert_eq!(cleared.text, r#"{"status":"cleared"}"#);
    let bad = app
        .call(
            Method::PUT,
            &model_path,
            Some(&token),
            Some(json!({"model": 5})),
        )
        .await;
    assert_eq!(bad.text, r#"{"error":"invalid request body"}"#);
}

#[tokio::test]
async fn the_values_pull_takes_the_workspace_own_token_once_it_has_one() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("puller", None).await;
    let path = format!("/workspaces/{id}/secrets/values");
    let admin = app.admin_get(&path).await;
    assert_eq!(admin.status, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.text, r#"{"error":"invalid workspace auth token"}"#);
    assert_eq!(app.get(&path, Some(&token)).await.text, "{}");

    // A workspace without any token: WorkspaceAuth alone decides. Create-time secrets land.
    let tokenless = app
        .create_workspace(
            json!({"name": "runtime", "secrets": {"DB_URL": "postgres://x", "API": "k"}}),
        )
        .await;
    let pulled = app
        .admin_get(&format!("/workspaces/{tokenless}/secrets/values"))
        .await;
    assert_eq!(pulled.text, r#"{"API":"k","DB_URL":"postgres://x"}"#);
}

#[tokio::test]
async fn a_token_of_one_workspace_cannot_touch_another_workspaces_secrets() {
    let app = spawn_app().await;
    let (a, token_a) = app.registered_agent("a", None).await;
    let (b, token_b) = app.registered_agent("b", None).await;
    set(&app, &b, &token_b, "B_ONLY", "b-secret").await;
    let body = json!({"key": "B_ONLY", "value": "stolen"});
    let attempts = [
        (Method::GET, format!("/workspaces/{b}/secrets"), None),
        (Method::GET, format!("/workspaces/{b}/secrets/values"), None),
        (
            Method::POST,
            format!("/workspaces/{b}/secrets"),
            Some(body.clone()),
        ),
        (
            Method::PUT,
            format!("/workspaces/{b}/secrets"),
            Some(body.clone()),
        ),
        (
            Method::DELETE,
            format!("/workspaces/{b}/secrets/B_ONLY"),
            None,
        ),
        (Method::GET, format!("/workspaces/{b}/model"), None),
        (
            Method::PUT,
            format!("/workspaces/{b}/model"),
            Some(json!({"model": "x"})),
        ),
    ];
    for (method, path, body) in attempts {
        let reply = app.call(method.clone(), &path, Some(&token_a), body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(reply.text, r#"{"error":"invalid workspace auth token"}"#);
    }
    for (method, path) in [
        (Method::GET, "/settings/secrets"),
        (Method::PUT, "/settings/secrets"),
        (Method::DELETE, "/settings/secrets/B_ONLY"),
        (Method::POST, "/admin/secrets/rotate-key"),
    ] {
        let reply = app
            .call(method.clone(), path, Some(&token_a), Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(reply.text, r#"{"error":"invalid admin auth token"}"#);
    }
    let values = app
        .get(&format!("/workspaces/{b}/secrets/values"), Some(&token_b))
        .await;
    assert_eq!(values.text, r#"{"B_ONLY":"b-secret"}"#);
    let own = app
        .get(&format!("/workspaces/{a}/secrets"), Some(&token_a))
        .await;
    assert_eq!(own.text, "[]");
}

#[tokio::test]
async fn bad_input_gets_the_documented_400_and_changes_nothing() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("strict", None).await;
    let path = format!("/workspaces/{id}/secrets");
    let cases = [
        (json!({"value": "v"}), "invalid request body"),
        (json!({"key": "K"}), "invalid request body"),
        (json!({"key": "K", "value": ""}), "invalid request body"),
        (json!({"key": "K", "value": 7}), "invalid request body"),
        (json!({"key": "1BAD", "value": "v"}), "invalid secret key"),
        (
            json!({"key": "BAD-KEY", "value": "v"}),
            "invalid secret key",
        ),
        (
            json!({"key": "K".repeat(257), "value": "v"}),
            "invalid secret key",
        ),
        (
            json!({"key": "K", "value": "v".repeat(64 * 1024 + 1)}),
            "invalid secret value",
        ),
    ];
    for (body, error) in cases {
        for (target, bearer) in [
            (path.as_str(), &token),
            ("/settings/secrets", &app.admin_token),
        ] {
            let reply = app
                .call(Method::PUT, target, Some(bearer), Some(body.clone()))
                .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target} {body}");
            assert_eq!(reply.body, json!({"error": error}));
        }
    }
    let not_json = app
        .raw(
            app.http
                .put(format!("{}{path}", app.rest))
                .bearer_auth(&token)
                .body("{not json"),
        )
        .await;
    assert_eq!(not_json.text, r#"{"error":"invalid request body"}"#);
    let bad_id = app.admin_get("/workspaces/not-a-uuid/secrets").await;
    assert_eq!(bad_id.text, r#"{"error":"invalid workspace ID"}"#);
    let unknown = app
        .admin(
            Method::PUT,
            "/workspaces/00000000-0000-4000-8000-000000000000/secrets",
            Some(json!({"key": "K", "value": "v"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, Some(&token)).await.text, "[]");
    assert_eq!(app.admin_get("/settings/secrets").await.text, "[]");

    // On create, the first bad key (in key order) is named and no workspace is created.
    let before = app
        .admin_get("/workspaces")
        .await
        .body
        .as_array()
        .unwrap()
        .len();
    for (secrets, named) in [
        (json!({"OK": "v", "bad-key": "x"}), "bad-key"),
        (json!({"EMPTY": "", "Z": "v"}), "EMPTY"),
    ] {
        let reply = app
            .admin(
                Method::POST,
                "/workspaces",
                Some(json!({"name": "w", "secrets": secrets})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            reply.body,
            json!({"error": format!("invalid secret key: {named}")})
        );
    }
    let after = app
        .admin_get("/workspaces")
        .await
        .body
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

/// Every stored ciphertext of one table, with its versions.
async fn stored(app: &TestApp, table: &str) -> Vec<(String, Vec<u8>, i32, i64)> {
    let backend = app.db.get_database_backend();
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            backend,
            format!("SELECT key, encrypted_value, encryption_version, key_version FROM {table} ORDER BY key"),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get::<String>("", "key").unwrap(),
                row.try_get::<Vec<u8>>("", "encrypted_value").unwrap(),
                row.try_get::<i32>("", "encryption_version").unwrap(),
                i64::from(row.try_get::<i32>("", "key_version").unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn values_are_ciphertext_at_rest_and_bound_to_their_row() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("sealed", None).await;
    set(&app, &id, &token, "FIRST", "plaintext-sentinel-1").await;
    set(&app, &id, &token, "SECOND", "plaintext-sentinel-2").await;
    set_global(&app, "GLOBAL", "plaintext-sentinel-3").await;
    for table in ["workspace_secrets", "global_secrets"] {
        for (key, blob, version, _) in stored(&app, table).await {
            assert_eq!(version, 2, "{key}");
            assert!(
                !blob.windows(18).any(|w| w == b"plaintext-sentinel"),
                "{key} stored in plaintext"
            );
        }
    }

    // A ciphertext copied into another row does not open there.
    app.db
        .execute_unprepared(&format!(
            "UPDATE workspace_secrets SET encrypted_value = \
             (SELECT encrypted_value FROM workspace_secrets WHERE key = 'FIRST' AND workspace_id = '{id}') \
             WHERE key = 'SECOND' AND workspace_id = '{id}'"
        ))
        .await
        .unwrap();
    let pull = app
        .get(&format!("/workspaces/{id}/secrets/values"), Some(&token))
        .await;
    assert_eq!(pull.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        pull.text,
        r#"{"error":"one or more secrets failed to decrypt; refusing to return partial bundle","failed_keys":["workspace:SECOND"]}"#
    );
    assert!(!pull.text.contains("sentinel"));
}

#[tokio::test]
async fn a_wrong_key_refuses_the_whole_bundle() {
    let backend = Backend::fresh().await;
    let with_key = |key: &SecretsKey| Options {
        secrets_key: Some(key.to_base64()),
        ..Options::default()
    };
    let app = spawn_on(backend.clone(), with_key(&SecretsKey::generate())).await;
    let id = app
        .create_workspace(json!({"name": "w", "secrets": {"OWN": "v"}}))
        .await;
    set_global(&app, "GLOBAL", "g").await;
    app.stop().await;

    let app = spawn_on(backend, with_key(&SecretsKey::generate())).await;
    let pull = app
        .admin_get(&format!("/workspaces/{id}/secrets/values"))
        .await;
    assert_eq!(pull.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        pull.body["failed_keys"],
        json!(["global:GLOBAL", "workspace:OWN"])
    );
    // Listing needs no key.
    let list = app.admin_get(&format!("/workspaces/{id}/secrets")).await;
    assert_eq!(list.status, StatusCode::OK);
}

#[tokio::test]
async fn rotation_under_concurrent_reads_and_writes_loses_nothing() {
    let backend = Backend::fresh().await;
    let old = SecretsKey::generate();
    let new = SecretsKey::generate();
    let app = spawn_on(
        backend.clone(),
        Options {
            secrets_key: Some(old.to_base64()),
            ..Options::default()
        },
    )
    .await;
    let mut expected = serde_json::Map::new();
    let secrets: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("KEY_{i:02}"), json!(format!("value-{i}"))))
        .collect();
    let id = app
        .create_workspace(json!({"name": "rotating", "secrets": secrets}))
        .await;
    expected.extend(secrets);
    for i in 0..5 {
        set_global(&app, &format!("GLOBAL_{i}"), &format!("global-{i}")).await;
        expected.insert(format!("GLOBAL_{i}"), json!(format!("global-{i}")));
    }
    app.stop().await;

    // Every replica now seals with the new key and still opens the old one.
    let rotating = Options {
        secrets_key: Some(new.to_base64()),
        previous_secrets_key: Some(old.to_base64()),
        ..Options::default()
    };
    let app = std::sync::Arc::new(spawn_on(backend.clone(), rotating).await);
    let values_path = format!("/workspaces/{id}/secrets/values");
    let done = tokio_util::sync::CancellationToken::new();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (app, path, done, expected) = (
                app.clone(),
                values_path.clone(),
                done.clone(),
                expected.clone(),
            );
            tokio::spawn(async move {
                let mut pulls = 0;
                while !done.is_cancelled() || pulls == 0 {
                    let reply = app.admin_get(&path).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
                    let values = reply.body.as_object().unwrap();
                    for (key, value) in &expected {
                        // Writers only ever add keys, so every expected value stays.
                        assert_eq!(values.get(key), Some(value), "{key}");
                    }
                    pulls += 1;
                }
                pulls
            })
        })
        .collect();
    let writer = {
        let (app, id) = (app.clone(), id.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                let reply = app
                    .admin(
                        Method::PUT,
                        &format!("/workspaces/{id}/secrets"),
                        Some(json!({"key": format!("DURING_{i}"), "value": "written"})),
                    )
                    .await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        })
    };
    let report = app
        .admin(Method::POST, "/admin/secrets/rotate-key", None)
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    assert_eq!(report.body["rewritten"], 45, "{}", report.text);
    assert_eq!(report.body["failed"], json!([]));
    assert_eq!(report.body["key_version"], new.version());
    writer.await.unwrap();
    done.cancel();
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    for table in ["workspace_secrets", "global_secrets"] {
        for (key, _, version, key_version) in stored(&app, table).await {
            assert_eq!(
                (version, key_version),
                (2, i64::from(new.version())),
                "{key}"
            );
        }
    }
    let again = app
        .admin(Method::POST, "/admin/secrets/rotate-key", None)
        .await;
    assert_eq!(again.body["rewritten"], 0);
    assert_eq!(again.body["current"], 55);
    std::sync::Arc::into_inner(app).unwrap().stop().await;

    // The old key can go.
    let app = spawn_on(
        backend,
        Options {
            secrets_key: Some(new.to_base64()),
            ..Options::default()
        },
    )
    .await;
    let pull = app.admin_get(&values_path).await;
    assert_eq!(pull.status, StatusCode::OK, "{}", pull.text);
    assert_eq!(pull.body.as_object().unwrap().len(), 55);
}

#[tokio::test]
async fn a_secrets_change_reaches_the_heartbeat_stream() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("listening", None).await;
    let mut stream = open(&app, &id, &token).await.unwrap();
    let kind = pb::control::Kind::SecretsChanged as i32;

    set(&app, &id, &token, "OVERRIDDEN", "mine").await;
    let frame = stream.control_frame().await;
    assert_eq!(
        (frame.kind, frame.event.as_str()),
        (kind, "SECRETS_CHANGED")
    );
    set_global(&app, "FRESH", "g").await;
    let frame = stream.control_frame().await;
    assert_eq!(
        (frame.kind, frame.event.as_str()),
        (kind, "GLOBAL_SECRETS_CHANGED")
    );

    // A global the workspace overrides changes nothing for it: the next frame is its own.
    set_global(&app, "OVERRIDDEN", "theirs").await;
    let reply = app
        .call(
            Method::PUT,
            &format!("/workspaces/{id}/model"),
            Some(&token),
            Some(json!({"model": "m"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let frame = stream.control_frame().await;
    assert_eq!(
        (frame.kind, frame.event.as_str()),
        (kind, "SECRETS_CHANGED")
    );
}

#[tokio::test]
async fn secrets_over_grpc_follow_the_same_rules() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("typed", None).await;
    let mut client = pb::secrets_client::SecretsClient::new(app.grpc_channel().await);
    client
        .set_secret(authed(
            pb::SetSecretRequest {
                workspace_id: id.clone(),
                key: "TYPED".into(),
                value: "over-grpc".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    let values = client
        .pull_values(authed(
            pb::WorkspaceSecretsRequest {
                workspace_id: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        values.values,
        [pb::SecretValue {
            key: "TYPED".into(),
            value: "over-grpc".into()
        }]
    );
    let invalid = client
        .set_secret(authed(
            pb::SetSecretRequest {
                workspace_id: id.clone(),
                key: "no spaces".into(),
                value: "v".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (invalid.code(), invalid.message()),
        (tonic::Code::InvalidArgument, "invalid secret key")
    );
    let unauthenticated = client
        .rotate_key(authed(pb::RotateKeyRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
}

/// The embedded procedure of the README: move the key file aside, rotate, drop the old key.
#[tokio::test]
async fn the_rotate_key_command_moves_every_row_to_a_fresh_key_file() {
    let backend = Backend::fresh().await;
    let app = spawn_on(backend.clone(), Options::default()).await;
    let id = app
        .create_workspace(json!({"name": "w", "secrets": {"OWN": "v"}}))
        .await;
    set_global(&app, "GLOBAL", "g").await;
    app.stop().await;

    let key_file = backend.data_dir.join("secrets.key");
    let previous_file = backend.data_dir.join("secrets.key.previous");
    std::fs::rename(&key_file, &previous_file).unwrap();
    let output = molecule()
        .args(["secrets", "rotate-key"])
        .arg(format!("--data-dir={}", backend.data_dir.display()))
        .arg(format!("--database-url={}", backend.database_url))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let new_key = SecretsKey::parse(std::fs::read_to_string(&key_file).unwrap().trim())
        .unwrap()
        .unwrap();
    assert_eq!(
        stdout.trim(),
        format!(
            "key_version={} rewritten=2 current=0 failed=0",
            new_key.version()
        )
    );

    std::fs::remove_file(&previous_file).unwrap();
    let app = spawn_on(backend, Options::default()).await;
    let pull = app
        .admin_get(&format!("/workspaces/{id}/secrets/values"))
        .await;
    assert_eq!(pull.text, r#"{"GLOBAL":"g","OWN":"v"}"#);
}

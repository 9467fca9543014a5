//! Memories (docs/runtime.md §1, M1): the runtime's commit (201 exactly) and search, who reads
//! each scope, the delimiter on foreign rows, redaction, full-text ranking and stemming on every
//! backend, refusals that write nothing, seeding and purge.

use molecule::pb::{self, memories_client::MemoriesClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app};

async fn commit(app: &TestApp, id: &str, token: &str, body: Value) -> Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/memories"),
        Some(token),
        Some(body),
    )
    .await
}

/// Commits and checks the runtime's success condition: 201 and an id.
async fn remember(app: &TestApp, id: &str, token: &str, content: &str, scope: &str) -> String {
    // memory.py sends exactly these keys; a2a_tools.py adds workspace_id, which is ignored.
    let reply = commit(
        app,
        id,
        token,
        json!({"content": content, "scope": scope, "workspace_id": id}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn search(app: &TestApp, id: &str, token: &str, query: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/workspaces/{id}/memories?{query}"), Some(token))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body.as_array().expect("a list").clone()
}

fn contents(rows: &[Value]) -> Vec<String> {
    let mut contents: Vec<String> = rows
        .iter()
        .map(|row| row["content"].as_str().unwrap().to_owned())
        .collect();
    contents.sort();
    contents
}

#[tokio::test]
async fn a_commit_answers_201_and_reads_back_as_the_runtime_expects() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let reply = commit(
        &app,
        &id,
        &token,
        json!({"content": "the build uses cargo", "scope": "LOCAL"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let memory_id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.body,
        json!({"id": memory_id, "scope": "LOCAL", "namespace": "general"})
    );

    let rows = search(
        &app,
        &id,
        &token,
        "q=build&scope=LOCAL&workspace_id=ignored",
    )
    .await;
    assert_eq!(rows.len(), 1);
    let row = rows[0].as_object().unwrap();
    let keys: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "workspace_id",
            "content",
            "scope",
            "namespace",
            "created_at"
        ]
    );
    assert_eq!(
        row["content"], "the build uses cargo",
        "own rows carry no delimiter"
    );
    assert_eq!(row["workspace_id"], id.as_str());

    assert_eq!(
        search(&app, &id, &token, "q=nothing-like-it").await,
        Vec::<Value>::new()
    );
    let namespaced = remember(&app, &id, &token, "in a namespace", "LOCAL").await;
    let tagged = commit(
        &app,
        &id,
        &token,
        json!({"content": "tagged", "scope": "LOCAL", "namespace": "facts"}),
    )
    .await;
    assert_eq!(tagged.body["namespace"], "facts");
    assert_eq!(
        contents(&search(&app, &id, &token, "namespace=facts").await),
        ["tagged"]
    );
    assert!(!namespaced.is_empty());
    assert_eq!(search(&app, &id, &token, "limit=1abc").await.len(), 1);
    assert_eq!(search(&app, &id, &token, "limit=0").await.len(), 3);
}

#[tokio::test]
async fn refused_commits_write_nothing() {
    let app = spawn_app().await;
    let (root, root_token) = app.registered_agent("root", None).await;
    let (child, child_token) = app.registered_agent("child", Some(&root)).await;
    let cases = [
        (
            json!({"scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"content": "", "scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"content": "x", "scope": ""}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"content": 5, "scope": "LOCAL"}),
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"content": "x", "scope": "local"}),
            StatusCode::BAD_REQUEST,
            "scope must be LOCAL, TEAM, or GLOBAL",
        ),
        (
            json!({"content": "x", "scope": "LOCAL", "namespace": "n".repeat(51)}),
            StatusCode::BAD_REQUEST,
            "namespace must be <= 50 characters",
        ),
        (
            json!({"content": "x".repeat(100_001), "scope": "LOCAL"}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "content too large",
        ),
        (
            json!({"content": "x", "scope": "GLOBAL"}),
            StatusCode::FORBIDDEN,
            "only root workspaces can write GLOBAL memories",
        ),
    ];
    for (body, status, error) in cases {
        let reply = commit(&app, &child, &child_token, body.clone()).await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": error})),
            "{body}"
        );
    }
    let foreign = commit(
        &app,
        &child,
        &root_token,
        json!({"content": "x", "scope": "LOCAL"}),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED);
    let malformed = commit(
        &app,
        "nope",
        &child_token,
        json!({"content": "x", "scope": "LOCAL"}),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(search(&app, &child, &child_token, "").await.is_empty());
    // A root may write GLOBAL.
    remember(&app, &root, &root_token, "org-wide fact", "GLOBAL").await;
}

#[tokio::test]
async fn each_scope_reads_exactly_its_circle() {
    let app = spawn_app().await;
    // root ─ mid ─ leaf
    //      ├ sibling
    //      └ gone (removed)
    // other (an unrelated root), dead (a removed root)
    let (root, root_t) = app.registered_agent("root", None).await;
    let (mid, mid_t) = app.registered_agent("mid", Some(&root)).await;
    let (leaf, leaf_t) = app.registered_agent("leaf", Some(&mid)).await;
    let (sibling, sibling_t) = app.registered_agent("sibling", Some(&root)).await;
    let (gone, gone_t) = app.registered_agent("gone", Some(&root)).await;
    let (other, other_t) = app.registered_agent("other", None).await;
    let (dead, dead_t) = app.registered_agent("dead", None).await;
    let workspaces = [
        (&root, &root_t, "root"),
        (&mid, &mid_t, "mid"),
        (&leaf, &leaf_t, "leaf"),
        (&sibling, &sibling_t, "sibling"),
        (&gone, &gone_t, "gone"),
        (&other, &other_t, "other"),
    ];
    let mut names = std::collections::HashMap::new();
    for (id, token, name) in workspaces {
        names.insert(id.clone(), name);
        remember(&app, id, token, &format!("team note of {name}"), "TEAM").await;
        remember(&app, id, token, &format!("private note of {name}"), "LOCAL").await;
    }
    names.insert(dead.clone(), "dead");
    remember(&app, &root, &root_t, "global rule of root", "GLOBAL").await;
    remember(&app, &other, &other_t, "global rule of other", "GLOBAL").await;
    remember(&app, &dead, &dead_t, "global rule of dead", "GLOBAL").await;
    for id in [&gone, &dead] {
        let removed = app
            .admin(Method::DELETE, &format!("/workspaces/{id}"), None)
            .await;
        assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    }

    // Who each reader sees under TEAM: self, parent, siblings, own children; never removed.
    let team = [
        (&root, &root_t, vec!["mid", "root", "sibling"]),
        (&mid, &mid_t, vec!["leaf", "mid", "root", "sibling"]),
        (&leaf, &leaf_t, vec!["leaf", "mid"]),
        (&sibling, &sibling_t, vec!["mid", "root", "sibling"]),
        (&other, &other_t, vec!["other"]),
    ];
    for (reader, token, expected) in team {
        let rows = search(&app, reader, token, "scope=TEAM").await;
        let mut authors: Vec<&str> = rows
            .iter()
            .map(|row| names[row["workspace_id"].as_str().unwrap()])
            .collect();
        authors.sort();
        assert_eq!(authors, expected, "TEAM for {}", names[reader]);
        for row in &rows {
            let content = row["content"].as_str().unwrap();
            let author = row["workspace_id"].as_str().unwrap();
            if author == reader.as_str() {
                assert!(content.starts_with("team note"), "{content}");
            } else {
                let delimiter = format!(
                    "[MEMORY id={} scope=TEAM from={author}]: team note of ",
                    row["id"].as_str().unwrap()
                );
                assert!(content.starts_with(&delimiter), "{content}");
            }
        }
    }

    // GLOBAL: every live root's rule, always delimited, removed authors left out.
    let global = search(&app, &leaf, &leaf_t, "scope=GLOBAL").await;
    let mut rules: Vec<String> = global
        .iter()
        .map(|row| {
            let expected = format!(
                "[MEMORY id={} scope=GLOBAL from={}]: ",
                row["id"].as_str().unwrap(),
                row["workspace_id"].as_str().unwrap()
            );
            row["content"]
                .as_str()
                .unwrap()
                .strip_prefix(&expected)
                .expect("delimited")
                .to_owned()
        })
        .collect();
    rules.sort();
    assert_eq!(rules, ["global rule of other", "global rule of root"]);

    // The default and LOCAL scopes read only the caller's own rows.
    let own = search(&app, &mid, &mid_t, "").await;
    assert_eq!(contents(&own), ["private note of mid", "team note of mid"]);
    let local = search(&app, &mid, &mid_t, "scope=LOCAL").await;
    assert_eq!(contents(&local), ["private note of mid"]);
    let root_own = contents(&search(&app, &root, &root_t, "scope=bogus").await);
    assert_eq!(root_own.len(), 3);
    assert!(
        root_own[0].starts_with("[MEMORY id="),
        "own GLOBAL rows carry the delimiter too: {root_own:?}"
    );
}

#[tokio::test]
async fn search_ranks_by_relevance_and_stems_words() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    remember(
        &app,
        &id,
        &token,
        "the deployment of the billing api went out",
        "LOCAL",
    )
    .await;
    remember(
        &app,
        &id,
        &token,
        "deployment failed, the deployment was rolled back",
        "LOCAL",
    )
    .await;
    remember(&app, &id, &token, "cats sleep most of the day", "LOCAL").await;
    remember(&app, &id, &token, "50% of x_y", "LOCAL").await;

    let stemmed = search(&app, &id, &token, "q=deployments").await;
    let ranked: Vec<&str> = stemmed
        .iter()
        .map(|row| row["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        ranked,
        [
            "deployment failed, the deployment was rolled back",
            "the deployment of the billing api went out"
        ]
    );
    let both_words = search(&app, &id, &token, "q=deployment%20failing").await;
    assert_eq!(
        contents(&both_words),
        ["deployment failed, the deployment was rolled back"]
    );
    // One character: a case-insensitive substring, wildcards literal.
    assert_eq!(
        contents(&search(&app, &id, &token, "q=%25").await),
        ["50% of x_y"]
    );
    assert_eq!(
        contents(&search(&app, &id, &token, "q=_").await),
        ["50% of x_y"]
    );
    assert_eq!(
        contents(&search(&app, &id, &token, "q=G").await),
        ["the deployment of the billing api went out"]
    );
    // FTS syntax in a query is just words.
    assert!(
        search(&app, &id, &token, "q=deploy*%20OR%20NEAR(")
            .await
            .is_empty()
    );
    assert!(search(&app, &id, &token, "q=%22%22").await.is_empty());
}

#[tokio::test]
async fn secrets_are_redacted_and_hashes_kept() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    remember(
        &app,
        &id,
        &token,
        "OPENAI_API_KEY=sk-live-0123456789abcdef merged commit 3f2a9c1e4b5d6a7f8e9d0c1b2a3f4e5d6c7b8a9f",
        "TEAM",
    )
    .await;
    let rows = search(&app, &id, &token, "").await;
    assert_eq!(
        rows[0]["content"],
        "[REDACTED:API_KEY] merged commit 3f2a9c1e4b5d6a7f8e9d0c1b2a3f4e5d6c7b8a9f"
    );
}

#[tokio::test]
async fn only_the_author_deletes_and_purge_takes_the_rest() {
    let app = spawn_app().await;
    let (root, root_t) = app.registered_agent("root", None).await;
    let (child, child_t) = app.registered_agent("child", Some(&root)).await;
    let child_memory = remember(&app, &child, &child_t, "child's team note", "TEAM").await;

    let by_root = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{root}/memories/{child_memory}"),
            Some(&root_t),
            None,
        )
        .await;
    assert_eq!(by_root.status, StatusCode::NOT_FOUND);
    assert_eq!(
        by_root.body,
        json!({"error": "memory not found or not owned by this workspace"})
    );
    let malformed = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{child}/memories/not-a-uuid"),
            Some(&child_t),
            None,
        )
        .await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    let own = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{child}/memories/{child_memory}"),
            Some(&child_t),
            None,
        )
        .await;
    assert_eq!(
        (own.status, own.body),
        (StatusCode::OK, json!({"status": "deleted"}))
    );
    assert!(search(&app, &child, &child_t, "q=note").await.is_empty());

    // Seeded on create: the scope upper-cased, empty content and unknown scopes skipped.
    let seeded = app
        .create_workspace(
            json!({"name": "seeded", "external": true, "initial_memories": [
                {"content": "seeded team fact", "scope": "team"},
                {"content": "", "scope": "LOCAL"},
                {"content": "skipped", "scope": "bogus"},
                {"content": "local by default"},
            ]}),
        )
        .await;
    let admin = app.admin_token.clone();
    let rows = search(&app, &seeded, &admin, "").await;
    let mut seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|row| {
            (
                row["content"].as_str().unwrap(),
                row["scope"].as_str().unwrap(),
                row["namespace"].as_str().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("local by default", "LOCAL", "general"),
            ("seeded team fact", "TEAM", "general")
        ]
    );

    // gRPC reads what REST wrote.
    let mut client = MemoriesClient::new(app.grpc_channel().await);
    let mut request = tonic::Request::new(pb::SearchMemoriesRequest {
        workspace_id: seeded.clone(),
        q: "fact".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let found = client.search(request).await.unwrap().into_inner().memories;
    assert_eq!(found.len(), 1);

    let purged = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{seeded}?purge=true"),
            None,
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    use molecule::store::entities::memory;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let left = memory::Entity::find()
        .filter(memory::Column::WorkspaceId.eq(&seeded))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // SQLite's full-text index follows every delete (the triggers), purges included.
    use sea_orm::ConnectionTrait;
    if app.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        let count = |table: &'static str| {
            let db = app.db.clone();
            async move {
                let statement = sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Sqlite,
                    format!("SELECT count(*) AS n FROM {table}"),
                );
                let row = db.query_one_raw(statement).await.unwrap().unwrap();
                row.try_get::<i64>("", "n").unwrap()
            }
        };
        assert_eq!(
            count("agent_memories_fts").await,
            count("agent_memories").await
        );
    }
}

/// An operator's backup and restore: the export names each memory's workspace and redacts
/// credentials; the restore matches workspaces by name, keeps creation times, skips what is
/// held and what has no workspace, and refuses a GLOBAL memory for a child.
#[tokio::test]
async fn an_export_restores_into_workspaces_of_the_same_names() {
    let app = spawn_app().await;
    let (root, root_token) = app.registered_agent("keeper", None).await;
    let (child, child_token) = app.registered_agent("helper", Some(&root)).await;
    commit(&app, &root, &root_token, json!({"content": "the deploy key is sk-ant-abcdefghijklmnopqrstuvwxyz0123", "scope": "GLOBAL"})).await;
    commit(
        &app,
        &child,
        &child_token,
        json!({"content": "prefers short answers", "scope": "LOCAL", "namespace": "style"}),
    )
    .await;

    let export = app.admin_get("/admin/memories/export").await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    let entries = export.body.as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    assert!(
        !export
            .text
            .contains("sk-ant-abcdefghijklmnopqrstuvwxyz0123")
    );
    assert_eq!(
        (
            &entries[1]["workspace_name"],
            &entries[1]["namespace"],
            &entries[1]["scope"]
        ),
        (&json!("helper"), &json!("style"), &json!("LOCAL"))
    );

    // The same names on a fresh platform take the backup back.
    let fresh = spawn_app().await;
    fresh.registered_agent("keeper", None).await;
    let (keeper, _) = fresh.registered_agent("keeper-2", None).await;
    let (_, _) = fresh.registered_agent("helper", Some(&keeper)).await;
    let mut restore = entries.clone();
    restore
        .push(json!({"content": "no such workspace", "scope": "LOCAL", "workspace_name": "ghost"}));
    restore
        .push(json!({"content": "not for a child", "scope": "GLOBAL", "workspace_name": "helper"}));
    let report = fresh
        .admin(
            Method::POST,
            "/admin/memories/import",
            Some(Value::Array(restore.clone())),
        )
        .await;
    assert_eq!(
        report.body,
        json!({"imported": 2, "skipped": 1, "errors": 1, "total": 4})
    );
    let again = fresh
        .admin(
            Method::POST,
            "/admin/memories/import",
            Some(Value::Array(restore)),
        )
        .await;
    assert_eq!(again.body["imported"], 0);
    let back = fresh.admin_get("/admin/memories/export").await;
    let back = back.body.as_array().unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[1]["created_at"], entries[1]["created_at"]);

    let bad = fresh
        .admin(
            Method::POST,
            "/admin/memories/import",
            Some(json!({"not": "a list"})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body),
        (StatusCode::BAD_REQUEST, json!({"error": "invalid JSON"}))
    );
    assert_eq!(
        fresh
            .get("/admin/memories/export", Some(&child_token))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

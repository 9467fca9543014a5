//! Org templates and import (docs/operations.md §7): the repository's two example templates
//! import as whole trees, once per key; a malformed document names its line and field and
//! creates nothing; workspace templates seed what a workspace starts with; an outage in the
//! middle of an import leaves nothing behind.

use std::path::Path;

use molecule::store::entities::{memory, org_import, workspace, workspace_file};
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::{
    helpers::{Options, Reply, TestApp, spawn_app, spawn_on},
    outage::gated_postgres,
};

async fn import(app: &TestApp, body: Value) -> Reply {
    app.admin(Method::POST, "/org/import", Some(body)).await
}

async fn workspace_count(app: &TestApp) -> u64 {
    workspace::Entity::find().count(&app.db).await.unwrap()
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("templates/{name}/org.yaml")),
    )
    .unwrap()
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_example_templates_import_as_whole_trees_once() {
    let app = spawn_app().await;
    let listed = app.admin_get("/org/templates").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(
        listed.body,
        json!([
            {"dir": "research-team", "name": "Research team",
             "description": "A lead, three researchers and an editor that turn a question into a sourced brief.",
             "workspaces": 5, "required_env": [],
             "recommended_env": [{"any_of": ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]}]},
            {"dir": "support-desk", "name": "Support desk",
             "description": "Triage routes each customer request to billing or technical support.",
             "workspaces": 3, "required_env": [], "recommended_env": []},
        ])
    );

    let research = import(&app, json!({"dir": "research-team"})).await;
    assert_eq!(research.status, StatusCode::CREATED, "{}", research.text);
    assert_eq!(
        (
            &research.body["org"],
            &research.body["import_key"],
            &research.body["created"],
            &research.body["count"]
        ),
        (
            &json!("Research team"),
            &json!("research-team-v1"),
            &json!(true),
            &json!(5)
        )
    );
    let created = research.body["workspaces"].as_array().unwrap();
    let lead = created[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &created[0]["name"],
            &created[0]["parent_id"],
            &created[0]["tier"]
        ),
        (&json!("Research Lead"), &Value::Null, &json!(3))
    );
    for member in &created[1..] {
        assert_eq!(member["parent_id"], lead.as_str());
        assert_eq!(member["tier"], 2);
    }
    for workspace in created {
        assert_eq!(workspace["status"], "awaiting_agent");
        let connection = &workspace["connection"];
        assert_eq!(connection["workspace_id"], workspace["id"]);
        assert!(
            connection["registry_endpoint"]
                .as_str()
                .unwrap()
                .ends_with("/registry/register")
        );
    }

    // What each workspace starts with: its config.yaml, memories, schedules, events, audit.
    let config = app.admin_get(&format!("/workspaces/{lead}/config")).await;
    let data = &config.body["data"];
    assert_eq!(
        (
            &data["runtime"],
            &data["model"],
            &data["tier"],
            &data["plugins"]
        ),
        (
            &json!("claude-code"),
            &json!("sonnet"),
            &json!(3),
            &json!(["web-research"])
        )
    );
    assert!(
        data["system_prompt"]
            .as_str()
            .unwrap()
            .contains("research team")
    );
    let editor = created[4]["id"].as_str().unwrap();
    let editor_config = app.admin_get(&format!("/workspaces/{editor}/config")).await;
    assert_eq!(
        editor_config.body["data"]["plugins"],
        json!(["web-research", "citation-style"])
    );
    let seeded: Vec<(String, String)> = memory::Entity::find()
        .filter(memory::Column::WorkspaceId.eq(lead.clone()))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.scope.as_str().to_owned(), row.content))
        .collect();
    assert_eq!(seeded.len(), 2, "{seeded:?}");
    assert!(
        seeded
            .iter()
            .any(|(scope, content)| scope == "GLOBAL" && content.contains("cites its source"))
    );
    assert!(seeded.iter().any(|(scope, _)| scope == "TEAM"));
    let schedules = app
        .admin_get(&format!("/workspaces/{lead}/schedules"))
        .await;
    let schedule = &schedules.body[0];
    assert_eq!(
        (
            &schedule["name"],
            &schedule["timezone"],
            &schedule["source"]
        ),
        (
            &json!("weekly digest"),
            &json!("Europe/Berlin"),
            &json!("template")
        )
    );
    assert!(schedule["next_run_at"].is_string());
    assert!(
        app.event_types(editor)
            .await
            .contains(&"WORKSPACE_AWAITING_AGENT".to_owned())
    );
    let trail = app.admin_get(&format!("/workspaces/{lead}/audit")).await;
    assert_eq!(trail.body["events"][0]["operation"], "workspace.create");
    let org_trail = app.admin_get("/admin/audit?operation=org.import").await;
    assert_eq!(org_trail.body["events"][0]["target"], "research-team-v1");

    // The same key again: nothing new, and the same tree in the answer.
    let before = workspace_count(&app).await;
    let again = import(&app, json!({"dir": "research-team"})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["created"], false);
    assert_eq!(ids(&again), ids(&research));
    assert_eq!(workspace_count(&app).await, before);
    // The same document sent as YAML text is the same import.
    let as_text = import(&app, json!({"yaml": example("research-team")})).await;
    assert_eq!(
        (as_text.status, &as_text.body["created"]),
        (StatusCode::OK, &json!(false))
    );
    // Another document under a used key is refused.
    let clash = import(
        &app,
        json!({"template": {"name": "Impostor", "import_key": "research-team-v1",
                            "workspaces": [{"name": "solo"}]}}),
    )
    .await;
    assert_eq!(
        (clash.status, clash.body),
        (
            StatusCode::CONFLICT,
            json!({"error": "import key already used by a different document", "import_key": "research-team-v1"})
        )
    );

    // An imported workspace is connected like any external one.
    let registered = app.register(&lead, "remote://no-inbound", None).await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text);
    let support = import(&app, json!({"yaml": example("support-desk")})).await;
    assert_eq!(
        (support.status, &support.body["count"]),
        (StatusCode::CREATED, &json!(3))
    );
}

#[tokio::test]
async fn concurrent_imports_of_one_key_create_one_tree() {
    let app = spawn_app().await;
    let body = json!({"dir": "support-desk"});
    let replies = futures::future::join_all((0..6).map(|_| import(&app, body.clone()))).await;
    let statuses: Vec<StatusCode> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK)
    );
    assert_eq!(workspace_count(&app).await, 3);
    let first = ids(&replies[0]);
    assert!(replies.iter().all(|reply| ids(reply) == first));
}

#[tokio::test]
async fn a_malformed_document_names_its_line_and_field_and_creates_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"yaml": "name: team\nworkspaces:\n  - name: lead\n    children:\n      - name: helper\n        tier: high\n"}),
            StatusCode::BAD_REQUEST,
            "invalid org template: workspaces[0].children[0].tier: invalid type",
        ),
        (
            json!({"yaml": "name: team\nworkspaces:\n  - name: lead\n    schedules:\n      - cron_expr: '61 * * * *'\n        prompt: go\n"}),
            StatusCode::BAD_REQUEST,
            "invalid org template: workspaces[0].schedules[0].cron_expr: invalid cron expression",
        ),
        (
            json!({"template": {"name": "team", "workspaces": [{"name": "lead", "tier": 9}]}}),
            StatusCode::BAD_REQUEST,
            "invalid org template: workspaces[0].tier: must be 0-4",
        ),
        (
            json!({"template": {"name": "team", "workspaces": [{"name": "x", "template": "ghost"}]}}),
            StatusCode::BAD_REQUEST,
            "invalid org template: workspaces[0].template: no workspace template named \"ghost\"",
        ),
        (
            json!({}),
            StatusCode::BAD_REQUEST,
            "provide 'dir' or 'template'",
        ),
        (
            json!({"dir": "../etc"}),
            StatusCode::BAD_REQUEST,
            "invalid org directory",
        ),
        (
            json!({"dir": "nope"}),
            StatusCode::NOT_FOUND,
            "org template not found: nope",
        ),
    ];
    for (body, status, error) in cases {
        let reply = import(&app, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        let message = reply.body["error"].as_str().unwrap();
        assert!(message.starts_with(error), "{message}");
    }
    let syntax = import(&app, json!({"yaml": "name: team\nworkspaces: [\n"})).await;
    assert!(
        syntax.body["error"].as_str().unwrap().contains("line"),
        "{}",
        syntax.text
    );

    let needs_key = json!({"template": {"name": "keyed", "required_env": ["SEARCH_API_KEY", {"any_of": ["A_KEY", "B_KEY"]}],
                                          "workspaces": [{"name": "searcher"}]}});
    let refused = import(&app, needs_key.clone()).await;
    assert_eq!(
        refused.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        refused.text
    );
    assert_eq!(
        refused.body["missing_env"],
        json!(["SEARCH_API_KEY", {"any_of": ["A_KEY", "B_KEY"]}])
    );
    assert_eq!(workspace_count(&app).await, 0);
    assert_eq!(org_import::Entity::find().count(&app.db).await.unwrap(), 0);

    app.admin(
        Method::PUT,
        "/settings/secrets",
        Some(json!({"key": "SEARCH_API_KEY", "value": "k"})),
    )
    .await;
    app.admin(
        Method::PUT,
        "/settings/secrets",
        Some(json!({"key": "B_KEY", "value": "k"})),
    )
    .await;
    let met = import(&app, needs_key).await;
    assert_eq!(met.status, StatusCode::CREATED, "{}", met.text);
    let forced = import(
        &app,
        json!({"force": true, "template": {"name": "forced", "required_env": ["NEVER_SET"], "workspaces": [{"name": "w"}]}}),
    )
    .await;
    assert_eq!(forced.status, StatusCode::CREATED, "{}", forced.text);

    let (_, token) = app.registered_agent("agent", None).await;
    let by_agent = app
        .call(
            Method::POST,
            "/org/import",
            Some(&token),
            Some(json!({"dir": "support-desk"})),
        )
        .await;
    assert_eq!(by_agent.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn workspace_templates_seed_the_files_and_config_of_imported_workspaces() {
    let app = spawn_app().await;
    let body = json!({"name": "Code Reviewer", "files": {
        "system-prompt.md": "Review every change for correctness first.",
        "skills/review/SKILL.md": "# Review\n",
        "config.yaml": "name: Code Reviewer\ndescription: Reviews changes\nruntime: claude-code\nskills: [review]\nreview_depth: thorough\n",
    }});
    let imported = app
        .admin(Method::POST, "/templates/import", Some(body.clone()))
        .await;
    assert_eq!(
        (imported.status, imported.body),
        (
            StatusCode::CREATED,
            json!({"status": "imported", "id": "code-reviewer", "name": "Code Reviewer"})
        )
    );
    let again = app
        .admin(Method::POST, "/templates/import", Some(body))
        .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::CONFLICT,
            json!({"error": "template already exists", "id": "code-reviewer"})
        )
    );
    let escaping = app
        .admin(
            Method::POST,
            "/templates/import",
            Some(json!({"name": "bad", "files": {"../../etc/cron.d/x": "boom"}})),
        )
        .await;
    assert_eq!(escaping.body, json!({"error": "invalid request body"}));
    let files: serde_json::Map<String, Value> = (0..201)
        .map(|n| (format!("f{n}.txt"), json!("x")))
        .collect();
    let crowded = app
        .admin(
            Method::POST,
            "/templates/import",
            Some(json!({"name": "crowded", "files": files})),
        )
        .await;
    assert_eq!(
        crowded.body,
        json!({"error": "too many files (201), max 200"})
    );

    let listed = app.admin_get("/templates").await;
    let reviewer = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "code-reviewer")
        .unwrap()
        .clone();
    assert_eq!(
        reviewer,
        json!({"id": "code-reviewer", "name": "Code Reviewer", "description": "Reviews changes",
               "tier": 0, "runtime": "claude-code", "model": "", "skills": ["review"],
               "skill_count": 1, "origin": "imported"})
    );

    let org = import(
        &app,
        json!({"template": {"name": "reviewers", "workspaces": [
            {"name": "Reviewer", "template": "code-reviewer", "model": "opus"}]}}),
    )
    .await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.text);
    let id = ids(&org)[0].clone();
    let config = app.admin_get(&format!("/workspaces/{id}/config")).await;
    let data = &config.body["data"];
    assert_eq!(
        (&data["review_depth"], &data["model"], &data["name"]),
        (&json!("thorough"), &json!("opus"), &json!("Reviewer"))
    );
    let mut paths: Vec<String> = workspace_file::Entity::find()
        .filter(workspace_file::Column::WorkspaceId.eq(id))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|file| file.path)
        .collect();
    paths.sort();
    assert_eq!(paths, ["skills/review/SKILL.md", "system-prompt.md"]);
}

/// The datastore connection drops halfway through an import's transaction: the import fails
/// closed and leaves nothing; once the datastore is back the same import succeeds whole.
#[tokio::test]
async fn an_outage_halfway_through_an_import_leaves_nothing_behind() {
    let (backend, gate) = gated_postgres().await;
    let app = spawn_on(backend, Options::default()).await;
    let members: Vec<Value> = (0..150)
        .map(|n| json!({"name": format!("member {n}"), "initial_memories": [{"content": format!("fact {n}")}]}))
        .collect();
    let body = json!({"template": {"name": "big team", "workspaces": [{"name": "lead", "children": members}]}});

    // The whole import sends well over 100 KiB of statements; cut after 40 KiB of them.
    gate.cut_after(40 * 1024);
    let cut = import(&app, body.clone()).await;
    assert!(cut.status.is_server_error(), "{}: {}", cut.status, cut.text);
    gate.restore();

    let left = crate::helpers::eventually(30, || async {
        workspace::Entity::find()
            .count(&app.db)
            .await
            .ok()
            .map(|count| (count, org_import::Entity::find().count(&app.db)))
    })
    .await;
    assert_eq!(left.0, 0);
    assert_eq!(left.1.await.unwrap(), 0);

    let before = gate.sent();
    let whole = crate::helpers::eventually(30, || async {
        let reply = import(&app, body.clone()).await;
        (reply.status == StatusCode::CREATED).then_some(reply)
    })
    .await;
    assert_eq!(whole.body["count"], 151);
    assert_eq!(workspace_count(&app).await, 151);
    // The cut came before the import's midpoint: the whole of it sends more than twice as much.
    let whole_import = gate.sent() - before;
    assert!(whole_import > 80 * 1024, "{whole_import} bytes");
}

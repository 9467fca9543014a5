//! Checkpoints (docs/runtime.md §5): the runtime's save and latest calls, the stable id of an
//! upsert, the per-workflow list and delete, the payload cap and the retention.

use molecule::{
    config::RuntimeArgs,
    pb::{self, checkpoints_client::CheckpointsClient},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

async fn save(app: &TestApp, id: &str, token: &str, body: Value) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/checkpoints"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn the_runtime_saves_steps_and_reads_the_latest_back() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;

    let none = app
        .get(
            &format!("/workspaces/{id}/checkpoints/latest"),
            Some(&token),
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(
        none.body,
        json!({"error": "no checkpoints found for workspace"})
    );

    // What temporal_workflow.py sends: task_id as the workflow, two steps.
    let received = save(
        &app,
        &id,
        &token,
        json!({"workflow_id": "task-1", "step_name": "task_receive", "step_index": 0,
               "payload": {"task_id": "task-1", "status": "received"}}),
    )
    .await;
    assert_eq!(received.status, StatusCode::CREATED, "{}", received.text);
    let first_id = received.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        received.body,
        json!({"id": first_id, "workspace_id": id, "workflow_id": "task-1", "step_name": "task_receive"})
    );
    let llm = save(
        &app,
        &id,
        &token,
        json!({"workflow_id": "task-1", "step_name": "llm_call", "step_index": 1,
               "payload": {"success": true, "error": null}}),
    )
    .await;
    assert_eq!(llm.status, StatusCode::CREATED);

    let latest = app
        .get(
            &format!("/workspaces/{id}/checkpoints/latest"),
            Some(&token),
        )
        .await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.text);
    assert_eq!(latest.body["step_name"], "llm_call");
    assert_eq!(latest.body["step_index"], 1);
    assert_eq!(
        latest.body["payload"],
        json!({"success": true, "error": null})
    );
    assert!(latest.body["completed_at"].as_str().unwrap().ends_with('Z'));

    // Saving the same step again updates it in place: same id, new payload.
    let again = save(
        &app,
        &id,
        &token,
        json!({"workflow_id": "task-1", "step_name": "task_receive", "step_index": 0}),
    )
    .await;
    assert_eq!(again.body["id"], first_id.as_str());
    let list = app
        .get(
            &format!("/workspaces/{id}/checkpoints/task-1"),
            Some(&token),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let steps: Vec<(&str, Value)> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["step_name"].as_str().unwrap(), row["payload"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            ("llm_call", json!({"success": true, "error": null})),
            ("task_receive", Value::Null)
        ]
    );

    let deleted = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/checkpoints/task-1"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.body, json!({"deleted": 2, "workflow_id": "task-1"}));
    let gone = app
        .get(
            &format!("/workspaces/{id}/checkpoints/task-1"),
            Some(&token),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.body,
        json!({"error": "no checkpoints found for workflow"})
    );
}

#[tokio::test]
async fn bad_saves_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let (_, other_token) = app.registered_agent("other", None).await;
    let step = json!({"workflow_id": "w", "step_name": "s"});

    let cases = [
        (
            json!({"step_name": "s"}),
            &token,
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"workflow_id": "", "step_name": "s"}),
            &token,
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"workflow_id": "w", "step_name": "s", "step_index": "one"}),
            &token,
            StatusCode::BAD_REQUEST,
            "invalid request body",
        ),
        (
            json!({"workflow_id": "w", "step_name": "s", "payload": "x".repeat(64 * 1024)}),
            &token,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
        ),
        (
            step.clone(),
            &other_token,
            StatusCode::UNAUTHORIZED,
            "invalid workspace auth token",
        ),
    ];
    for (body, bearer, status, error) in cases {
        let reply = save(&app, &id, bearer, body.clone()).await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.body, json!({"error": error}), "{body}");
    }
    let malformed = save(&app, "not-a-uuid", &token, step).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let latest = app
        .get(
            &format!("/workspaces/{id}/checkpoints/latest"),
            Some(&token),
        )
        .await;
    assert_eq!(latest.status, StatusCode::NOT_FOUND, "nothing was written");
}

#[tokio::test]
async fn only_the_newest_checkpoints_are_kept_and_grpc_sees_the_same_rows() {
    let app = spawn_app_with(Options {
        runtime: RuntimeArgs {
            checkpoint_retention: 3,
            ..RuntimeArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("worker", None).await;
    for step in 0..5 {
        let reply = save(
            &app,
            &id,
            &token,
            json!({"workflow_id": "w", "step_name": format!("step-{step}"), "step_index": step}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let mut client = CheckpointsClient::new(app.grpc_channel().await);
    let mut request = tonic::Request::new(pb::WorkflowCheckpointsRequest {
        workspace_id: id.clone(),
        workflow_id: "w".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let kept = client.list_workflow(request).await.unwrap().into_inner();
    let names: Vec<&str> = kept
        .checkpoints
        .iter()
        .map(|row| row.step_name.as_str())
        .collect();
    assert_eq!(names, ["step-4", "step-3", "step-2"]);
    assert!(
        kept.checkpoints
            .iter()
            .all(|row| row.payload_json.is_none())
    );

    // Purged with the workspace.
    let purged = app
        .admin(
            Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            None,
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text);
    use sea_orm::{EntityTrait, PaginatorTrait};
    let left = molecule::store::entities::checkpoint::Entity::find()
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

//! Checkpoint routes (docs/runtime.md §5): save a workflow step, read the latest, list and delete
//! one workflow's steps. The payload travels as JSON text and comes back as it was sent.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, raw, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/checkpoints`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SaveCheckpointBody {
    #[schema(min_length = 1)]
    workflow_id: String,
    #[schema(min_length = 1)]
    step_name: String,
    #[serde(default)]
    step_index: i32,
    /// Any JSON value; stored as it is.
    #[schema(value_type = Option<serde_json::Value>)]
    payload: Option<Box<RawValue>>,
}

/// One checkpoint as the runtime reads it.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointEntry {
    id: String,
    workspace_id: String,
    workflow_id: String,
    step_name: String,
    step_index: i32,
    completed_at: Option<String>,
    #[schema(value_type = Option<serde_json::Value>)]
    payload: Option<Box<RawValue>>,
}

impl From<pb::Checkpoint> for CheckpointEntry {
    fn from(row: pb::Checkpoint) -> Self {
        Self {
            completed_at: timestamp_opt(row.completed_at.as_ref()),
            payload: raw(row.payload_json.as_deref()),
            id: row.id,
            workspace_id: row.workspace_id,
            workflow_id: row.workflow_id,
            step_name: row.step_name,
            step_index: row.step_index,
        }
    }
}

#[utoipa::path(post, path = "/workspaces/{id}/checkpoints", tag = "checkpoints",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = SaveCheckpointBody,
    responses((status = 201, body = Object, example = json!({"id": "…", "workspace_id": "…", "workflow_id": "task-1", "step_name": "llm_call"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn save(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: SaveCheckpointBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::SaveCheckpointRequest {
        workspace_id: id,
        workflow_id: body.workflow_id,
        step_name: body.step_name,
        step_index: body.step_index,
        payload_json: body.payload.map(|payload| payload.get().to_owned()),
    };
    let result = gateway
        .checkpoints
        .clone()
        .save(forwarded.request(request))
        .await;
    render(StatusCode::CREATED, result, |saved| {
        json!({"id": saved.id, "workspace_id": saved.workspace_id,
               "workflow_id": saved.workflow_id, "step_name": saved.step_name})
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/checkpoints/latest", tag = "checkpoints",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = CheckpointEntry),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn latest(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::LatestCheckpointRequest { workspace_id: id };
    let result = gateway
        .checkpoints
        .clone()
        .latest(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, CheckpointEntry::from)
}

#[utoipa::path(get, path = "/workspaces/{id}/checkpoints/{workflow_id}", tag = "checkpoints",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("workflow_id" = String, Path, description = "workflow id")),
    responses((status = 200, body = [CheckpointEntry]),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_workflow(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, workflow_id)): Path<(String, String)>,
) -> Response {
    let request = pb::WorkflowCheckpointsRequest {
        workspace_id: id,
        workflow_id,
    };
    let result = gateway
        .checkpoints
        .clone()
        .list_workflow(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.checkpoints
            .into_iter()
            .map(CheckpointEntry::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(delete, path = "/workspaces/{id}/checkpoints/{workflow_id}", tag = "checkpoints",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("workflow_id" = String, Path, description = "workflow id")),
    responses((status = 200, body = Object, example = json!({"deleted": 2, "workflow_id": "task-1"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_workflow(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, workflow_id)): Path<(String, String)>,
) -> Response {
    let request = pb::WorkflowCheckpointsRequest {
        workspace_id: id,
        workflow_id,
    };
    let result = gateway
        .checkpoints
        .clone()
        .delete_workflow(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |deleted| json!({"deleted": deleted.deleted, "workflow_id": deleted.workflow_id}),
    )
}

//! Delegation routes (docs/a2a.md §5): start a delegation, list them, and record or update
//! one the agent sent itself. Workspace auth on the source workspace; bodies as documented.

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/delegate`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct DelegateBody {
    /// Another workspace.
    #[schema(format = Uuid)]
    target_id: String,
    #[schema(min_length = 1)]
    task: String,
    idempotency_key: Option<String>,
}

/// `POST /workspaces/{id}/delegations/record`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RecordBody {
    #[schema(format = Uuid)]
    target_id: String,
    #[schema(min_length = 1)]
    task: String,
    #[schema(min_length = 1)]
    delegation_id: String,
}

/// `POST /workspaces/{id}/delegations/{delegation_id}/update`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateBody {
    #[serde(default)]
    #[schema(required, pattern = "^(completed|failed|queued)$")]
    status: String,
    error: Option<String>,
    response_preview: Option<String>,
}

#[utoipa::path(post, path = "/workspaces/{id}/delegate", tag = "delegations",
    params(("id" = String, Path, format = Uuid, description = "source workspace id")),
    request_body = DelegateBody,
    responses((status = 202, body = Object, example = json!({"delegation_id": "…", "status": "delegated", "target_id": "…"})),
        (status = 200, description = "idempotent hit", body = Object, example = json!({"delegation_id": "…", "status": "completed", "target_id": "…", "idempotent_hit": true})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delegate(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
    body: Body,
) -> Response {
    let body: DelegateBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(
                    &forwarded,
                    Some(&workspace_id),
                    err,
                    "invalid delegation request",
                )
                .await;
        }
    };
    let request = forwarded.request(pb::DelegateRequest {
        workspace_id,
        target_id: body.target_id,
        task: body.task,
        idempotency_key: body.idempotency_key,
    });
    match gateway.delegations.clone().delegate(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            if reply.idempotent_hit {
                let body = json!({"delegation_id": reply.delegation_id, "status": reply.status,
                    "target_id": reply.target_id, "idempotent_hit": true});
                return (StatusCode::OK, axum::Json(body)).into_response();
            }
            let mut body = json!({"delegation_id": reply.delegation_id, "status": reply.status,
                "target_id": reply.target_id});
            if let Some(warning) = reply.warning {
                body["warning"] = Value::String(warning);
            }
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err(status) => RestError::from(status).into_response(),
    }
}

#[utoipa::path(get, path = "/workspaces/{id}/delegations", tag = "delegations",
    params(("id" = String, Path, format = Uuid, description = "source workspace id")),
    responses((status = 200, description = "the newest 50 delegation rows, newest first", body = [Object]),
        (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
) -> Response {
    let request = forwarded.request(pb::ListDelegationsRequest { workspace_id });
    let result = gateway.delegations.clone().list_delegations(request).await;
    render(StatusCode::OK, result, |reply| {
        reply
            .delegations
            .into_iter()
            .map(|entry| {
                let mut item = json!({
                    "id": entry.id, "type": "delegation", "source_id": entry.source_id,
                    "target_id": entry.target_id, "summary": entry.summary, "status": entry.status,
                    "created_at": timestamp_opt(entry.created_at.as_ref()),
                });
                for (key, value) in [
                    ("delegation_id", entry.delegation_id),
                    ("error", entry.error),
                    ("response_preview", entry.response_preview),
                ] {
                    if let Some(value) = value {
                        item[key] = Value::String(value);
                    }
                }
                item
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(post, path = "/workspaces/{id}/delegations/record", tag = "delegations",
    params(("id" = String, Path, format = Uuid, description = "source workspace id")),
    request_body = RecordBody,
    responses((status = 202, body = Object, example = json!({"delegation_id": "…", "status": "recorded"})),
        (status = 409, body = ErrorBody, description = "the delegation_id names another workspace's row"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn record(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
    body: Body,
) -> Response {
    let body: RecordBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&workspace_id), err, "invalid request body")
                .await;
        }
    };
    let request = forwarded.request(pb::RecordDelegationRequest {
        workspace_id,
        target_id: body.target_id,
        task: body.task,
        delegation_id: body.delegation_id,
    });
    let result = gateway.delegations.clone().record_delegation(request).await;
    render(
        StatusCode::ACCEPTED,
        result,
        |reply| json!({"delegation_id": reply.delegation_id, "status": reply.status}),
    )
}

#[utoipa::path(post, path = "/workspaces/{id}/delegations/{delegation_id}/update", tag = "delegations",
    params(("id" = String, Path, format = Uuid, description = "source workspace id"),
        ("delegation_id" = String, Path, description = "the delegation")),
    request_body = UpdateBody,
    responses((status = 200, body = Object, example = json!({"status": "completed", "delegation_id": "…"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((workspace_id, delegation_id)): Path<(String, String)>,
    body: Body,
) -> Response {
    let body: UpdateBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&workspace_id), err, "invalid request body")
                .await;
        }
    };
    let request = forwarded.request(pb::UpdateDelegationRequest {
        workspace_id,
        delegation_id,
        status: body.status,
        error: body.error,
        response_preview: body.response_preview,
    });
    let result = gateway.delegations.clone().update_delegation(request).await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": reply.status, "delegation_id": reply.delegation_id}),
    )
}

//! Instruction routes (docs/runtime.md §4): the runtime's resolve call and the operators' CRUD,
//! with the reference's shapes and words.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /instructions`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateInstructionBody {
    #[schema(pattern = "^(global|workspace)$")]
    scope: String,
    /// The workspace id, required for workspace scope (ignored for global scope).
    scope_target: Option<String>,
    /// At most 200 bytes.
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// At most 8192 bytes.
    #[schema(min_length = 1, max_length = 8192)]
    content: String,
    #[serde(default)]
    priority: i32,
}

/// `PUT /instructions/{id}`: only the fields sent change.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateInstructionBody {
    /// At most 200 bytes.
    #[schema(max_length = 200)]
    title: Option<String>,
    /// At most 8192 bytes.
    #[schema(max_length = 8192)]
    content: Option<String>,
    priority: Option<i32>,
    enabled: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// The enabled rules that apply to this workspace, in resolve order.
    workspace_id: Option<String>,
    /// Otherwise every rule (disabled too), optionally of one scope.
    scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct InstructionEntry {
    id: String,
    scope: String,
    scope_target: Option<String>,
    title: String,
    content: String,
    priority: i32,
    enabled: bool,
    created_at: Option<String>,
    updated_at: Option<String>,
}

#[utoipa::path(get, path = "/workspaces/{id}/instructions/resolve", tag = "instructions",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"workspace_id": "…", "instructions": "\n## Platform-Wide Rules\n\n### Be brief\n…\n\n"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn resolve(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::ResolveInstructionsRequest { workspace_id: id };
    let result = gateway
        .instructions
        .clone()
        .resolve(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |resolved| json!({"workspace_id": resolved.workspace_id, "instructions": resolved.instructions}),
    )
}

#[utoipa::path(get, path = "/instructions", tag = "instructions",
    params(ListParams),
    responses((status = 200, body = [InstructionEntry]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Query(params): Query<ListParams>,
) -> Response {
    let request = pb::ListInstructionsRequest {
        workspace_id: params.workspace_id,
        scope: params.scope,
    };
    let result = gateway
        .instructions
        .clone()
        .list(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.instructions
            .into_iter()
            .map(|row| InstructionEntry {
                created_at: timestamp_opt(row.created_at.as_ref()),
                updated_at: timestamp_opt(row.updated_at.as_ref()),
                id: row.id,
                scope: row.scope,
                scope_target: row.scope_target,
                title: row.title,
                content: row.content,
                priority: row.priority,
                enabled: row.enabled,
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(post, path = "/instructions", tag = "instructions",
    request_body = CreateInstructionBody,
    responses((status = 201, body = Object, example = json!({"id": "…"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: CreateInstructionBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(
                    &forwarded,
                    None,
                    err,
                    "scope, title, and content are required",
                )
                .await;
        }
    };
    let request = pb::CreateInstructionRequest {
        scope: body.scope,
        scope_target: body.scope_target,
        title: body.title,
        content: body.content,
        priority: body.priority,
    };
    let result = gateway
        .instructions
        .clone()
        .create(forwarded.request(request))
        .await;
    render(
        StatusCode::CREATED,
        result,
        |created| json!({"id": created.id}),
    )
}

#[utoipa::path(put, path = "/instructions/{id}", tag = "instructions",
    params(("id" = String, Path, format = Uuid, description = "instruction id")),
    request_body = UpdateInstructionBody,
    responses((status = 200, body = Object, example = json!({"status": "updated"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: UpdateInstructionBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid request")
                .await;
        }
    };
    let request = pb::UpdateInstructionRequest {
        id,
        title: body.title,
        content: body.content,
        priority: body.priority,
        enabled: body.enabled,
    };
    let result = gateway
        .instructions
        .clone()
        .update(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "updated"}))
}

#[utoipa::path(delete, path = "/instructions/{id}", tag = "instructions",
    params(("id" = String, Path, format = Uuid, description = "instruction id")),
    responses((status = 200, body = Object, example = json!({"status": "deleted"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::DeleteInstructionRequest { id };
    let result = gateway
        .instructions
        .clone()
        .delete(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "deleted"}))
}

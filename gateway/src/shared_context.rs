//! Shared-context routes (docs/runtime.md §6): a child's runtime reads its parent's published
//! files; a workspace publishes its own. Nothing published answers `200 []`.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    Gateway, error::ErrorBody, forward::Forwarded, json::parse_list_body, pb, workspaces::render,
};

/// One published file.
#[derive(Deserialize, Serialize, ToSchema)]
pub(crate) struct ContextEntry {
    /// Relative, without `..` segments or backslashes; unique within the set.
    #[schema(pattern = r"^(?!\.\.?(/|$))[^/\\]+(/(?!\.\.?(/|$))[^/\\]+)*$")]
    path: String,
    content: String,
}

fn entries(reply: pb::SharedContextEntries) -> Vec<ContextEntry> {
    reply
        .entries
        .into_iter()
        .map(|entry| ContextEntry {
            path: entry.path,
            content: entry.content,
        })
        .collect()
}

#[utoipa::path(get, path = "/workspaces/{id}/shared-context", tag = "shared-context",
    description = "Readable by the workspace itself and its descendants (each with its own token and X-Workspace-ID), and by operators.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = [ContextEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::GetSharedContextRequest { workspace_id: id };
    let result = gateway
        .shared_context
        .clone()
        .get(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, entries)
}

#[utoipa::path(put, path = "/workspaces/{id}/shared-context", tag = "shared-context",
    description = "Replaces the published set: at most 256 KiB of paths and contents.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = [ContextEntry],
    responses((status = 200, body = [ContextEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn publish(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: Vec<ContextEntry> = match parse_list_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::PublishSharedContextRequest {
        workspace_id: id,
        entries: body
            .into_iter()
            .map(|entry| pb::SharedContextEntry {
                path: entry.path,
                content: entry.content,
            })
            .collect(),
    };
    let result = gateway
        .shared_context
        .clone()
        .publish(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, entries)
}

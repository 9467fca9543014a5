//! Bundle routes (docs/workspaces.md §6): export a workspace tree, import one as a fresh copy. The
//! documents travel as JSON text, so their documented key order reaches the caller unchanged.

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use utoipa::ToSchema;

use crate::{Gateway, error::ErrorBody, error::RestError, forward::Forwarded, json::read_body, pb};

/// A JSON text produced by the control plane, sent as it is.
fn json_text(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[utoipa::path(get, path = "/bundles/export/{id}", tag = "bundles",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"schema": "1.0", "id": "…", "name": "…", "sub_workspaces": []})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn export(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::ExportBundleRequest { workspace_id: id };
    match gateway
        .bundles
        .clone()
        .export(forwarded.request(request))
        .await
    {
        Ok(reply) => json_text(StatusCode::OK, reply.into_inner().bundle_json),
        Err(status) => RestError::from(status).into_response(),
    }
}

/// A bundle as `GET /bundles/export/{id}` writes it and the import reads it (the service
/// parses the text itself; this is its documented shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BundleDocument {
    #[schema(required = false)]
    id: String,
    /// A workspace name: at most 255 bytes, no line breaks or markup characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\r\n{}\[\]|>*&!]*$")]
    name: String,
    /// Becomes the role: at most 1000 bytes, the same characters as a name.
    #[schema(
        required = false,
        max_length = 1000,
        pattern = r"^[^\r\n{}\[\]|>*&!]*$"
    )]
    description: String,
    /// 0–4.
    #[schema(required = false, minimum = 0, maximum = 4)]
    tier: i32,
    #[schema(required = false)]
    system_prompt: String,
    /// Skill ids and file paths are relative, without `..`.
    #[schema(required = false)]
    skills: Vec<BundleSkill>,
    #[schema(required = false)]
    prompts: std::collections::BTreeMap<String, String>,
    /// Nested at most a few levels deep.
    #[schema(required = false, no_recursion)]
    sub_workspaces: Vec<BundleDocument>,
    /// Any JSON; an exported card is an object.
    agent_card: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BundleSkill {
    id: String,
    #[schema(required = false)]
    files: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/bundles/import", tag = "bundles",
    request_body(content = BundleDocument, description = "a bundle, as exported"),
    responses((status = 201, body = Object, example = json!({"workspace_id": "…", "name": "…", "status": "provisioning"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn import(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let bundle_json = match read_body(body).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid bundle")
                .await;
        }
    };
    let request = pb::BundleDocument { bundle_json };
    match gateway
        .bundles
        .clone()
        .import(forwarded.request(request))
        .await
    {
        Ok(reply) => json_text(StatusCode::CREATED, reply.into_inner().result_json),
        Err(status) => RestError::from(status).into_response(),
    }
}

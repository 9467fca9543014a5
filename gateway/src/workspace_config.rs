//! Workspace config routes (docs/operations.md O4): the workspace's config.yaml, read as the
//! reference's `{"data": …}` (and its YAML text and version), replaced by a YAML body or merged
//! with a JSON one.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde_json::{json, value::RawValue};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{read_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// The workspace's config.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConfigEntry {
    /// The document's top-level mapping (`{}` before the first write).
    #[schema(value_type = Object)]
    data: Option<Box<RawValue>>,
    /// The YAML document as stored.
    content: String,
    /// 0 before the first write; one more per change.
    version: i64,
    updated_at: Option<String>,
    updated_by: Option<String>,
}

fn entry(config: pb::WorkspaceConfig) -> ConfigEntry {
    ConfigEntry {
        data: RawValue::from_string(config.data_json).ok(),
        content: config.content,
        version: config.version,
        updated_at: timestamp_opt(config.updated_at.as_ref()),
        updated_by: config.updated_by,
    }
}

/// A YAML media type (`application/yaml`, `text/yaml`, `application/x-yaml`).
fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().to_ascii_lowercase().ends_with("yaml"))
}

#[utoipa::path(get, path = "/workspaces/{id}/config", tag = "workspaces",
    description = "The workspace's config.yaml, kept by the platform.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = ConfigEntry),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::GetConfigRequest { workspace_id: id };
    let result = gateway
        .workspaces
        .clone()
        .get_config(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, entry)
}

#[utoipa::path(patch, path = "/workspaces/{id}/config", tag = "workspaces",
    description = "A YAML body (`Content-Type: application/yaml`) replaces the document; a JSON object is merged into its top level. Each change raises the version and reaches a streaming agent as a CONFIG_CHANGED control frame. At most 256 KiB.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body(content = Object, description = "a JSON object to merge, or a YAML document", content_type = "application/json"),
    responses((status = 200, body = Object, example = json!({"status": "updated", "version": 3})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid JSON")
                .await;
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let change = if is_yaml(&headers) {
        pb::update_config_request::Change::Yaml(text)
    } else {
        pb::update_config_request::Change::MergeJson(text)
    };
    let request = pb::UpdateConfigRequest {
        workspace_id: id,
        change: Some(change),
    };
    let result = gateway
        .workspaces
        .clone()
        .update_config(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |config| json!({"status": "updated", "version": config.version}),
    )
}

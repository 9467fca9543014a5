//! Key-value memory routes (docs/operations.md O3): a workspace's keys with versions,
//! compare-and-set and expiry, in the reference's shapes.

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
    json::{parse_body, present, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/memory`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SetKeyValueBody {
    /// At most 256 bytes.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 256)]
    key: String,
    /// Any JSON value (`null` included); at most 64 KiB.
    #[serde(default, deserialize_with = "present")]
    #[schema(required = true, value_type = serde_json::Value)]
    value: Option<Box<RawValue>>,
    /// Seconds until the key expires; absent means never.
    #[schema(minimum = 1)]
    ttl_seconds: Option<i64>,
    /// Write only over this version; 0 means only if the key does not exist (409 otherwise).
    #[schema(minimum = 0)]
    if_match_version: Option<i64>,
}

/// One live key.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyValueEntry {
    key: String,
    #[schema(value_type = serde_json::Value)]
    value: Option<Box<RawValue>>,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    updated_at: Option<String>,
}

impl From<pb::KeyValue> for KeyValueEntry {
    fn from(row: pb::KeyValue) -> Self {
        Self {
            value: RawValue::from_string(row.value_json).ok(),
            expires_at: timestamp_opt(row.expires_at.as_ref()),
            updated_at: timestamp_opt(row.updated_at.as_ref()),
            key: row.key,
            version: row.version,
        }
    }
}

const ID: &str = "workspace id";

#[utoipa::path(get, path = "/workspaces/{id}/memory", tag = "memory",
    description = "The workspace's live keys, by key.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = [KeyValueEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::ListKeyValuesRequest { workspace_id: id };
    let result = gateway
        .key_values
        .clone()
        .list(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.entries
            .into_iter()
            .map(KeyValueEntry::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/memory/{key}", tag = "memory",
    params(("id" = String, Path, format = Uuid, description = ID), ("key" = String, Path, description = "the key")),
    responses((status = 200, body = KeyValueEntry),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, key)): Path<(String, String)>,
) -> Response {
    let request = pb::KeyValueRef {
        workspace_id: id,
        key,
    };
    let result = gateway
        .key_values
        .clone()
        .get(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, KeyValueEntry::from)
}

#[utoipa::path(post, path = "/workspaces/{id}/memory", tag = "memory",
    description = "Writes a key; its version goes up by one. With `if_match_version`, only over that version (0: only a new key), else 409 with the current version.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    request_body = SetKeyValueBody,
    responses((status = 200, body = Object, example = json!({"status": "ok", "key": "cursor", "version": 3})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = Object, example = json!({"error": "if_match_version mismatch", "expected_version": 2, "current_version": 3})),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn set(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: SetKeyValueBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::SetKeyValueRequest {
        workspace_id: id,
        key: body.key,
        value_json: body.value.map(|value| value.get().to_owned()),
        ttl_seconds: body.ttl_seconds,
        if_match_version: body.if_match_version,
    };
    let result = gateway
        .key_values
        .clone()
        .set(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |set| json!({"status": "ok", "key": set.key, "version": set.version}),
    )
}

#[utoipa::path(delete, path = "/workspaces/{id}/memory/{key}", tag = "memory",
    params(("id" = String, Path, format = Uuid, description = ID), ("key" = String, Path, description = "the key")),
    responses((status = 200, body = Object, example = json!({"status": "deleted"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, key)): Path<(String, String)>,
) -> Response {
    let request = pb::KeyValueRef {
        workspace_id: id,
        key,
    };
    let result = gateway
        .key_values
        .clone()
        .delete(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "deleted"}))
}

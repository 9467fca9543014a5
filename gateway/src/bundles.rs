//! Bundle routes (docs/workspaces.md §6): export a workspace tree, import one as a fresh copy. The
//! documents travel as JSON text, so their documented key order reaches the caller unchanged.

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};

use crate::{Gateway, error::ErrorBody, error::RestError, forward::Forwarded, json::read_body, pb};

/// A JSON text produced by the control plane, sent as it is.
fn json_text(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[utoipa::path(get, path = "/bundles/export/{id}", tag = "bundles",
    params(("id" = String, Path, description = "workspace id")),
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

#[utoipa::path(post, path = "/bundles/import", tag = "bundles",
    request_body(content = Object, description = "a bundle, as exported"),
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

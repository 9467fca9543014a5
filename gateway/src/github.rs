//! GitHub App installation token routes (docs/operations.md §8), in the reference's shape
//! (`{"token","expires_at"}`), as the runtime's git credential helper reads them.

use axum::{
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde_json::json;

use crate::{Gateway, error::ErrorBody, forward::Forwarded, pb, workspaces::render};

/// `expires_at` in whole seconds, as the reference prints it.
fn token_body(token: pb::GithubToken) -> serde_json::Value {
    let expires_at = token
        .expires_at
        .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({"token": token.token, "expires_at": expires_at})
}

async fn fetch(gateway: &Gateway, forwarded: &Forwarded, workspace_id: String) -> Response {
    let request = pb::GithubTokenRequest { workspace_id };
    let result = gateway
        .github
        .clone()
        .get_installation_token(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, token_body)
}

#[utoipa::path(get, path = "/workspaces/{id}/github-installation-token", tag = "workspaces",
    description = "A GitHub App installation token for the workspace's git credential helper; one token is shared until five minutes before it expires.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"token": "ghs_…", "expires_at": "2026-12-05T21:00:00Z"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub(crate) async fn workspace_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    fetch(&gateway, &forwarded, id).await
}

#[utoipa::path(get, path = "/admin/github-installation-token", tag = "workspaces",
    description = "The same token, for operators.",
    responses((status = 200, body = Object, example = json!({"token": "ghs_…", "expires_at": "2026-12-05T21:00:00Z"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(crate) async fn admin_token(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    fetch(&gateway, &forwarded, String::new()).await
}

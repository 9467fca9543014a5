//! Token routes: workspace tokens (`/workspaces/{id}/tokens`, docs/workspaces.md §3.7), the
//! test-token helper (docs/workspaces.md §3.8) and org API keys (`/org/tokens`, §3.9).

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
    edge::too_many_requests,
    error::ErrorBody,
    forward::Forwarded,
    json::{BodyError, read_body, timestamp, timestamp_opt},
    pb,
    workspaces::render,
};

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenItem {
    id: String,
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenList {
    tokens: Vec<TokenItem>,
    count: usize,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenPage {
    /// 1–200; other values mean 50.
    limit: Option<String>,
    /// At least 0.
    offset: Option<String>,
}

#[utoipa::path(get, path = "/workspaces/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), TokenPage),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(page): Query<TokenPage>,
) -> Response {
    let parse = |value: Option<String>| {
        value
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(0)
    };
    let request = pb::ListTokensRequest {
        workspace_id: id,
        limit: parse(page.limit),
        offset: parse(page.offset),
    };
    let result = gateway
        .workspaces
        .clone()
        .list_tokens(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        let tokens: Vec<_> = reply
            .tokens
            .into_iter()
            .map(|token| TokenItem {
                created_at: token.created_at.as_ref().map(timestamp).unwrap_or_default(),
                last_used_at: timestamp_opt(token.last_used_at.as_ref()),
                id: token.id,
                prefix: token.prefix,
            })
            .collect();
        TokenList {
            count: tokens.len(),
            tokens,
        }
    })
}

#[utoipa::path(post, path = "/workspaces/{id}/tokens", tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 201, body = Object, example = json!({"auth_token": "…", "workspace_id": "…", "message": "Save this token now — it cannot be retrieved again."})),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::CreateTokenRequest { workspace_id: id };
    let result = gateway
        .workspaces
        .clone()
        .create_token(forwarded.request(request))
        .await;
    render(StatusCode::CREATED, result, |reply| {
        json!({
            "auth_token": reply.auth_token,
            "workspace_id": reply.workspace_id,
            "message": "Save this token now — it cannot be retrieved again.",
        })
    })
}

#[utoipa::path(delete, path = "/workspaces/{id}/tokens/{token_id}", tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("token_id" = String, Path, format = Uuid, description = "token id")),
    responses((status = 200, body = Object, example = json!({"status": "revoked"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, token_id)): Path<(String, String)>,
) -> Response {
    let request = pb::RevokeTokenRequest {
        workspace_id: id,
        token_id,
    };
    let result = gateway
        .workspaces
        .clone()
        .revoke_token(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "revoked"}))
}

#[utoipa::path(get, path = "/admin/workspaces/{id}/test-token", tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"auth_token": "…", "workspace_id": "…"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn test_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::MintTestTokenRequest { workspace_id: id };
    let result = gateway
        .workspaces
        .clone()
        .mint_test_token(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"auth_token": reply.auth_token, "workspace_id": reply.workspace_id}),
    )
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OrgTokenItem {
    id: String,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OrgTokenList {
    tokens: Vec<OrgTokenItem>,
    count: usize,
}

#[utoipa::path(get, path = "/org/tokens", tag = "tokens",
    responses((status = 200, body = OrgTokenList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_org_tokens(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .list_org_tokens(forwarded.request(pb::ListOrgTokensRequest {}))
        .await;
    render(StatusCode::OK, result, |reply| {
        let tokens: Vec<_> = reply
            .tokens
            .into_iter()
            .map(|token| OrgTokenItem {
                created_at: token.created_at.as_ref().map(timestamp).unwrap_or_default(),
                last_used_at: timestamp_opt(token.last_used_at.as_ref()),
                id: token.id,
                prefix: token.prefix,
                name: token.name,
                org_id: token.org_id,
                created_by: token.created_by,
            })
            .collect();
        OrgTokenList {
            count: tokens.len(),
            tokens,
        }
    })
}

#[derive(Deserialize, Default, ToSchema)]
pub(crate) struct CreateOrgTokenBody {
    name: Option<String>,
}

#[utoipa::path(post, path = "/org/tokens", tag = "tokens",
    request_body(content = Option<CreateOrgTokenBody>, description = "optional"),
    responses((status = 200, body = Object, example = json!({"id": "…", "prefix": "abcd1234", "name": "ci-bot", "auth_token": "…", "warning": "copy this token now; it will not be shown again"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn create_org_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let decision = gateway
        .edge
        .org_key_mints
        .check(crate::client_ip::Caller::Address(forwarded.client_ip));
    if !decision.allowed {
        return too_many_requests(decision);
    }
    // The body is optional: empty or `null` means no name.
    let body = match read_body(body).await {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(CreateOrgTokenBody::default()),
        Ok(bytes) => serde_json::from_slice::<Option<CreateOrgTokenBody>>(&bytes)
            .map(Option::unwrap_or_default)
            .map_err(|_| BodyError::Invalid),
        Err(err) => Err(err),
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid request body")
                .await;
        }
    };
    let request = pb::CreateOrgTokenRequest {
        name: body.name.unwrap_or_default(),
    };
    let result = gateway
        .workspaces
        .clone()
        .create_org_token(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        let mut body = json!({"id": reply.id, "prefix": reply.prefix});
        if !reply.name.is_empty() {
            body["name"] = json!(reply.name);
        }
        body["auth_token"] = json!(reply.auth_token);
        body["warning"] = json!("copy this token now; it will not be shown again");
        body
    })
}

#[utoipa::path(delete, path = "/org/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, format = Uuid, description = "org token id")),
    responses((status = 200, body = Object, example = json!({"revoked": "…"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_org_token(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::RevokeOrgTokenRequest { id: id.clone() };
    let result = gateway
        .workspaces
        .clone()
        .revoke_org_token(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"revoked": id}))
}

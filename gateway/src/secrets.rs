//! Secret routes (docs/workspaces.md §4): workspace secrets and their values pull, the model alias,
//! and global secrets on `/settings/secrets` with the legacy `/admin/secrets` aliases. Bodies and
//! key order are the documented ones; values only ever appear in the pull's response.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

const INVALID_BODY: &str = "invalid request body";

/// `POST|PUT …/secrets`: one secret per call.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SecretBody {
    /// An environment variable name.
    #[serde(default)]
    #[schema(required, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$")]
    key: String,
    /// At most 64 KiB.
    #[serde(default)]
    #[schema(required, min_length = 1, max_length = 65536)]
    value: String,
}

/// `PUT /workspaces/{id}/model`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ModelBody {
    /// At most 64 KiB; empty clears the workspace's choice.
    #[schema(max_length = 65536)]
    model: String,
}

/// Which list shape to render: the two lists order their keys differently.
#[derive(Clone, Copy)]
enum Listing {
    Workspace,
    Global,
}

fn list_body(reply: pb::ListSecretsResponse, listing: Listing) -> Value {
    let items = reply.secrets.into_iter().map(|secret| {
        let created_at = timestamp_opt(secret.created_at.as_ref());
        let updated_at = timestamp_opt(secret.updated_at.as_ref());
        match listing {
            Listing::Workspace => json!({
                "key": secret.key, "has_value": true, "scope": secret.scope,
                "created_at": created_at, "updated_at": updated_at,
            }),
            Listing::Global => json!({
                "key": secret.key, "has_value": true,
                "created_at": created_at, "updated_at": updated_at, "scope": "global",
            }),
        }
    });
    Value::Array(items.collect())
}

#[utoipa::path(get, path = "/workspaces/{id}/secrets", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = [Object], example = json!([{"key": "API_KEY", "has_value": true, "scope": "workspace", "created_at": "…", "updated_at": "…"}])),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_secrets(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspaceSecretsRequest { workspace_id: id };
    let result = gateway
        .secrets
        .clone()
        .list_secrets(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        list_body(reply, Listing::Workspace)
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/secrets/values", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"OPENAI_API_KEY": "sk-…"})),
        (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(crate) async fn secret_values(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspaceSecretsRequest { workspace_id: id };
    let result = gateway
        .secrets
        .clone()
        .pull_values(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        let values: Map<String, Value> = reply
            .values
            .into_iter()
            .map(|secret| (secret.key, Value::String(secret.value)))
            .collect();
        Value::Object(values)
    })
}

#[utoipa::path(method(post, put), path = "/workspaces/{id}/secrets", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = SecretBody,
    responses((status = 200, body = Object, example = json!({"status": "saved", "key": "API_KEY"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn set_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: SecretBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, INVALID_BODY)
                .await;
        }
    };
    let request = pb::SetSecretRequest {
        workspace_id: id,
        key: body.key,
        value: body.value,
    };
    let result = gateway
        .secrets
        .clone()
        .set_secret(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": "saved", "key": reply.key}),
    )
}

#[utoipa::path(delete, path = "/workspaces/{id}/secrets/{key}", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("key" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$", description = "secret key")),
    responses((status = 200, body = Object, example = json!({"status": "deleted", "key": "API_KEY"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, key)): Path<(String, String)>,
) -> Response {
    let request = pb::DeleteSecretRequest {
        workspace_id: id,
        key,
    };
    let result = gateway
        .secrets
        .clone()
        .delete_secret(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": "deleted", "key": reply.key}),
    )
}

#[utoipa::path(get, path = "/workspaces/{id}/model", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"model": "", "source": "default"})),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn get_model(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspaceSecretsRequest { workspace_id: id };
    let result = gateway
        .secrets
        .clone()
        .get_model(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"model": reply.model, "source": reply.source}),
    )
}

#[utoipa::path(put, path = "/workspaces/{id}/model", tag = "secrets",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = ModelBody,
    responses((status = 200, body = Object, example = json!({"status": "saved", "model": "minimax/MiniMax-M2.7"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn set_model(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: ModelBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, INVALID_BODY)
                .await;
        }
    };
    let request = pb::SetModelRequest {
        workspace_id: id,
        model: body.model,
    };
    let result = gateway
        .secrets
        .clone()
        .set_model(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        if reply.cleared {
            json!({"status": "cleared"})
        } else {
            json!({"status": "saved", "model": reply.model})
        }
    })
}

impl Gateway {
    async fn list_global(&self, forwarded: &Forwarded) -> Response {
        let result = self
            .secrets
            .clone()
            .list_global_secrets(forwarded.request(pb::ListGlobalSecretsRequest {}))
            .await;
        render(StatusCode::OK, result, |reply| {
            list_body(reply, Listing::Global)
        })
    }

    async fn set_global(&self, forwarded: &Forwarded, body: Body) -> Response {
        let body: SecretBody = match parse_body(body).await {
            Ok(body) => body,
            Err(err) => return self.reject_body(forwarded, None, err, INVALID_BODY).await,
        };
        let request = pb::SetSecretRequest {
            workspace_id: String::new(),
            key: body.key,
            value: body.value,
        };
        let result = self
            .secrets
            .clone()
            .set_global_secret(forwarded.request(request))
            .await;
        render(
            StatusCode::OK,
            result,
            |reply| json!({"status": "saved", "key": reply.key, "scope": "global"}),
        )
    }

    async fn delete_global(&self, forwarded: &Forwarded, key: String) -> Response {
        let request = pb::DeleteSecretRequest {
            workspace_id: String::new(),
            key,
        };
        let result = self
            .secrets
            .clone()
            .delete_global_secret(forwarded.request(request))
            .await;
        render(
            StatusCode::OK,
            result,
            |reply| json!({"status": "deleted", "key": reply.key, "scope": "global"}),
        )
    }
}

#[utoipa::path(get, path = "/settings/secrets", tag = "secrets",
    responses((status = 200, body = [Object], example = json!([{"key": "GITHUB_TOKEN", "has_value": true, "created_at": "…", "updated_at": "…", "scope": "global"}])),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list_global_secrets(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
) -> Response {
    gateway.list_global(&forwarded).await
}

#[utoipa::path(method(put, post), path = "/settings/secrets", tag = "secrets",
    request_body = SecretBody,
    responses((status = 200, body = Object, example = json!({"status": "saved", "key": "GITHUB_TOKEN", "scope": "global"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn set_global_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    gateway.set_global(&forwarded, body).await
}

#[utoipa::path(delete, path = "/settings/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$", description = "secret key")),
    responses((status = 200, body = Object, example = json!({"status": "deleted", "key": "GITHUB_TOKEN", "scope": "global"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_global_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(key): Path<String>,
) -> Response {
    gateway.delete_global(&forwarded, key).await
}

#[utoipa::path(get, path = "/admin/secrets", tag = "secrets",
    responses((status = 200, body = [Object], example = json!([{"key": "GITHUB_TOKEN", "has_value": true, "created_at": "…", "updated_at": "…", "scope": "global"}])),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn legacy_list_global_secrets(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
) -> Response {
    gateway.list_global(&forwarded).await
}

/// There is no `PUT /admin/secrets` (docs/workspaces.md §4.5).
#[utoipa::path(post, path = "/admin/secrets", tag = "secrets",
    request_body = SecretBody,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn legacy_set_global_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    gateway.set_global(&forwarded, body).await
}

#[utoipa::path(delete, path = "/admin/secrets/{key}", tag = "secrets",
    params(("key" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,255}$", description = "secret key")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn legacy_delete_global_secret(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(key): Path<String>,
) -> Response {
    gateway.delete_global(&forwarded, key).await
}

#[utoipa::path(post, path = "/admin/secrets/rotate-key", tag = "secrets",
    responses((status = 200, body = Object, example = json!({"key_version": 123456789, "rewritten": 42, "current": 0, "failed": []})),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn rotate_key(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .secrets
        .clone()
        .rotate_key(forwarded.request(pb::RotateKeyRequest {}))
        .await;
    render(StatusCode::OK, result, |reply| {
        json!({
            "key_version": reply.key_version,
            "rewritten": reply.rewritten,
            "current": reply.current,
            "failed": reply.failed,
        })
    })
}

//! `/registry/*` and the activity routes (docs/registry.md §1–4, §7): what agents call to join,
//! stay live, find peers and report activity.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{BodyError, parse_body, raw, timestamp},
    pb,
    workspaces::render,
};

fn bad_body() -> Response {
    RestError::new(StatusCode::BAD_REQUEST, "invalid request body").into_response()
}

fn body_error(err: BodyError) -> Response {
    err.early_response().unwrap_or_else(bad_body)
}

/// `POST /registry/register`. `workspace_id` is accepted as an alias of `id`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterBody {
    /// The workspace registering; one of `id` and `workspace_id` is required, and when both
    /// are sent they must agree.
    #[schema(format = Uuid)]
    id: Option<String>,
    #[schema(format = Uuid)]
    workspace_id: Option<String>,
    /// Where the agent serves A2A (`http(s)://`, checked against the URL policy), or
    /// `remote://…` for an agent with no inbound endpoint.
    #[schema(min_length = 1)]
    url: String,
    /// A JSON object.
    #[schema(value_type = Object)]
    agent_card: Box<RawValue>,
}

#[utoipa::path(post, path = "/registry/register", tag = "registry",
    request_body = RegisterBody,
    responses((status = 200, body = Object, example = json!({"status": "registered", "auth_token": "…"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, body = ErrorBody)))]
pub(crate) async fn register(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: RegisterBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let id = match (body.id, body.workspace_id) {
        (Some(id), Some(alias)) if id != alias => return bad_body(),
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return bad_body(),
    };
    let request = pb::RegisterRequest {
        id,
        url: body.url,
        agent_card_json: body.agent_card.get().to_owned(),
    };
    let result = gateway
        .registry
        .clone()
        .register(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| match reply.auth_token {
        Some(token) => json!({"status": "registered", "auth_token": token}),
        None => json!({"status": "registered"}),
    })
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct RuntimeMetadataBody {
    #[schema(value_type = Option<Object>)]
    capabilities: Option<Value>,
    idle_timeout_seconds: Option<i64>,
}

/// `POST /registry/heartbeat`: absent numbers are 0 and absent strings "".
#[derive(Deserialize, ToSchema)]
pub(crate) struct HeartbeatBody {
    #[schema(format = Uuid)]
    workspace_id: String,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    sample_error: String,
    #[serde(default)]
    active_tasks: i32,
    #[serde(default)]
    uptime_seconds: i64,
    #[serde(default)]
    current_task: String,
    monthly_spend: Option<i64>,
    #[serde(default)]
    runtime_state: String,
    runtime_metadata: Option<RuntimeMetadataBody>,
}

#[utoipa::path(post, path = "/registry/heartbeat", tag = "registry",
    request_body = HeartbeatBody,
    responses((status = 200, body = Object, example = json!({"status": "ok"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn heartbeat(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: HeartbeatBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let request = pb::HeartbeatRequest {
        workspace_id: body.workspace_id,
        error_rate: body.error_rate,
        sample_error: body.sample_error,
        active_tasks: body.active_tasks,
        uptime_seconds: body.uptime_seconds,
        current_task: body.current_task,
        monthly_spend: body.monthly_spend,
        runtime_state: body.runtime_state,
        runtime_metadata: body.runtime_metadata.map(|metadata| pb::RuntimeMetadata {
            capabilities_json: metadata.capabilities.map(|c| c.to_string()),
            idle_timeout_seconds: metadata.idle_timeout_seconds,
        }),
    };
    let result = gateway
        .registry
        .clone()
        .heartbeat(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "ok"}))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateCardBody {
    #[schema(format = Uuid)]
    workspace_id: String,
    /// A JSON object.
    #[schema(value_type = Object)]
    agent_card: Box<RawValue>,
}

#[utoipa::path(post, path = "/registry/update-card", tag = "registry",
    request_body = UpdateCardBody,
    responses((status = 200, body = Object, example = json!({"status": "updated"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, body = ErrorBody)))]
pub(crate) async fn update_card(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: UpdateCardBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let request = pb::UpdateCardRequest {
        workspace_id: body.workspace_id,
        agent_card_json: body.agent_card.get().to_owned(),
    };
    let result = gateway
        .registry
        .clone()
        .update_card(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "updated"}))
}

#[utoipa::path(get, path = "/registry/discover/{id}", tag = "registry",
    params(("id" = String, Path, format = Uuid, description = "target workspace id"),
        ("X-Workspace-ID" = String, Header, format = Uuid, description = "the calling workspace")),
    responses((status = 200, body = Object, example = json!({"id": "…", "url": "https://agent.example.com", "name": "Echo"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn discover(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::DiscoverRequest { target_id: id };
    let result = gateway
        .registry
        .clone()
        .discover(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"id": reply.id, "url": reply.url, "name": reply.name}),
    )
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PeerItem {
    id: String,
    name: String,
    role: Option<String>,
    tier: i32,
    status: String,
    #[schema(value_type = Option<Object>)]
    agent_card: Option<Box<RawValue>>,
    url: String,
    parent_id: Option<String>,
    active_tasks: i32,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PeerQuery {
    /// Case-insensitive substring of name or role.
    q: Option<String>,
}

#[utoipa::path(get, path = "/registry/{id}/peers", tag = "registry",
    params(("id" = String, Path, format = Uuid, description = "the calling workspace"), PeerQuery),
    responses((status = 200, body = [PeerItem]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn peers(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(query): Query<PeerQuery>,
) -> Response {
    let request = pb::ListPeersRequest {
        workspace_id: id,
        query: query.q.unwrap_or_default(),
    };
    let result = gateway
        .registry
        .clone()
        .list_peers(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        reply
            .peers
            .into_iter()
            .map(|peer| PeerItem {
                agent_card: raw(peer.agent_card_json.as_deref()),
                id: peer.id,
                name: peer.name,
                role: peer.role,
                tier: peer.tier,
                status: peer.status,
                url: peer.url,
                parent_id: peer.parent_id,
                active_tasks: peer.active_tasks,
            })
            .collect::<Vec<_>>()
    })
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CheckAccessBody {
    #[schema(format = Uuid)]
    caller_id: String,
    #[schema(format = Uuid)]
    target_id: String,
}

#[utoipa::path(post, path = "/registry/check-access", tag = "registry",
    request_body = CheckAccessBody,
    responses((status = 200, body = Object, example = json!({"allowed": true})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn check_access(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: CheckAccessBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let request = pb::CheckAccessRequest {
        caller_id: body.caller_id,
        target_id: body.target_id,
    };
    let result = gateway
        .registry
        .clone()
        .check_access(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"allowed": reply.allowed}),
    )
}

/// `POST /workspaces/{id}/activity`; `null` and absent mean the same.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LogActivityBody {
    #[schema(
        pattern = "^(a2a_send|a2a_receive|task_update|agent_log|skill_promotion|memory_write|error)$"
    )]
    activity_type: String,
    method: Option<String>,
    summary: Option<String>,
    /// A workspace id.
    #[schema(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    target_id: Option<String>,
    /// The logging workspace itself, when sent.
    source_id: Option<String>,
    /// Defaults to `ok`.
    status: Option<String>,
    error_detail: Option<String>,
    duration_ms: Option<i32>,
    #[schema(value_type = Option<serde_json::Value>)]
    request_body: Option<Box<RawValue>>,
    #[schema(value_type = Option<serde_json::Value>)]
    response_body: Option<Box<RawValue>>,
    #[schema(value_type = Option<serde_json::Value>)]
    metadata: Option<Box<RawValue>>,
}

impl LogActivityBody {
    fn into_request(self, workspace_id: String) -> pb::LogActivityRequest {
        let raw = |value: Option<Box<RawValue>>| value.map(|value| value.get().to_owned());
        pb::LogActivityRequest {
            workspace_id,
            activity_type: self.activity_type,
            method: self.method.unwrap_or_default(),
            summary: self.summary.unwrap_or_default(),
            target_id: self.target_id.unwrap_or_default(),
            source_id: self.source_id.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            error_detail: self.error_detail.unwrap_or_default(),
            duration_ms: self.duration_ms,
            request_body_json: raw(self.request_body),
            response_body_json: raw(self.response_body),
            metadata_json: raw(self.metadata),
        }
    }
}

#[utoipa::path(post, path = "/workspaces/{id}/activity", tag = "activity",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = LogActivityBody,
    responses((status = 200, body = Object, example = json!({"status": "logged"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn log_activity(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let request = match parse_body::<LogActivityBody>(body).await {
        Ok(body) => body.into_request(id.clone()),
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let result = gateway
        .registry
        .clone()
        .log_activity(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "logged"}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ActivityQuery {
    /// Exact activity type.
    r#type: Option<String>,
    /// `canvas` or `agent`.
    #[param(pattern = "^(canvas|agent)?$")]
    source: Option<String>,
    /// 1–500, default 100.
    limit: Option<String>,
    /// Rows after this activity id, oldest first (410 when the cursor is gone).
    since_id: Option<String>,
    /// Only rows this workspace sent.
    #[param(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    peer_id: Option<String>,
    /// Only rows created before this RFC 3339 time.
    #[param(schema_with = crate::json::date_time_or_empty)]
    before_ts: Option<String>,
    /// `asc` or `desc`; the default is newest first, or oldest first after `since_id`.
    #[param(pattern = "^(asc|desc)?$")]
    order: Option<String>,
}

#[utoipa::path(get, path = "/workspaces/{id}/activity", tag = "activity",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ActivityQuery),
    responses((status = 200, body = [Object]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 410, body = ErrorBody)))]
pub(crate) async fn list_activity(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(query): Query<ActivityQuery>,
) -> Response {
    let request = pb::ListActivityRequest {
        workspace_id: id,
        r#type: query.r#type.unwrap_or_default(),
        source: query.source.unwrap_or_default(),
        limit: query
            .limit
            .and_then(|limit| limit.trim().parse().ok())
            .unwrap_or(0),
        since_id: query.since_id.unwrap_or_default(),
        peer_id: query.peer_id.unwrap_or_default(),
        before_ts: query.before_ts.unwrap_or_default(),
        order: query.order.unwrap_or_default(),
        platform_url: forwarded.platform_url(),
    };
    let result = gateway
        .registry
        .clone()
        .list_activity(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        reply.rows.into_iter().map(activity_row).collect::<Vec<_>>()
    })
}

fn activity_row(row: pb::ActivityRow) -> Value {
    let parse =
        |text: Option<String>| text.and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let created_at = row.created_at.as_ref().map(timestamp).unwrap_or_default();
    let mut body = json!({
        "id": row.id, "workspace_id": row.workspace_id, "activity_type": row.activity_type,
        "source_id": row.source_id, "target_id": row.target_id, "method": row.method,
        "summary": row.summary, "duration_ms": row.duration_ms, "status": row.status,
        "error_detail": row.error_detail, "created_at": created_at,
    });
    for (key, value) in [
        ("request_body", parse(row.request_body_json)),
        ("response_body", parse(row.response_body_json)),
        ("tool_trace", parse(row.tool_trace_json)),
    ] {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    body["type"] = json!(row.activity_type);
    body["ts"] = json!(created_at);
    if let Some(data) = parse(row.data_json) {
        body["data"] = data;
    }
    body
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct AttachmentBody {
    #[serde(default)]
    #[schema(required, min_length = 1)]
    uri: String,
    #[serde(default)]
    #[schema(required, min_length = 1)]
    name: String,
    #[serde(rename = "mimeType")]
    mime_type: Option<String>,
    size: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct NotifyBody {
    #[serde(default)]
    #[schema(required, min_length = 1)]
    message: String,
    #[serde(default)]
    attachments: Vec<AttachmentBody>,
}

#[utoipa::path(post, path = "/workspaces/{id}/notify", tag = "activity",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = NotifyBody,
    responses((status = 200, body = Object, example = json!({"status": "sent"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn notify(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: NotifyBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "message is required")
                .await;
        }
    };
    let request = pb::NotifyRequest {
        workspace_id: id,
        message: body.message,
        attachments: body
            .attachments
            .into_iter()
            .map(|a| pb::Attachment {
                uri: a.uri,
                name: a.name,
                mime_type: a.mime_type,
                size: a.size,
            })
            .collect(),
    };
    let result = gateway
        .registry
        .clone()
        .notify(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "sent"}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionSearchQuery {
    /// A phrase matched in any case against the text and bodies; empty matches everything.
    q: Option<String>,
    /// 1–200, default 50.
    limit: Option<String>,
}

#[utoipa::path(get, path = "/workspaces/{id}/session-search", tag = "activity",
    description = "The workspace's activity rows and its own memories, newest first, matching `q`.",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), SessionSearchQuery),
    responses((status = 200, body = [Object]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn session_search(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(query): Query<SessionSearchQuery>,
) -> Response {
    let request = pb::SessionSearchRequest {
        workspace_id: id,
        q: query.q.unwrap_or_default(),
        limit: query
            .limit
            .and_then(|limit| limit.trim().parse().ok())
            .unwrap_or(0),
    };
    let result = gateway
        .registry
        .clone()
        .session_search(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        reply
            .items
            .into_iter()
            .map(|item| {
                let mut body = json!({
                    "kind": item.kind, "id": item.id, "workspace_id": item.workspace_id,
                    "label": item.label, "content": item.content, "method": item.method,
                    "status": item.status,
                    "created_at": item.created_at.as_ref().map(timestamp),
                });
                for (key, text) in [
                    ("request_body", item.request_body_json),
                    ("response_body", item.response_body_json),
                ] {
                    if let Some(value) = raw(text.as_deref()) {
                        body[key] = serde_json::to_value(value).unwrap_or(Value::Null);
                    }
                }
                body
            })
            .collect::<Vec<_>>()
    })
}

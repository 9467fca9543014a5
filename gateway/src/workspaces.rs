//! `/workspaces` routes (docs/workspaces.md §1–2): the workspace resource and its lifecycle.

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json, value::RawValue};
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{BodyError, go_float, parse_body, raw, timestamp_opt},
    pb,
};

/// A workspace as `GET /workspaces` lists it.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkspaceItem {
    id: String,
    name: String,
    role: Option<String>,
    tier: i32,
    status: String,
    url: String,
    parent_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    agent_card: Option<Box<RawValue>>,
    active_tasks: i32,
    max_concurrent_tasks: i32,
    #[serde(serialize_with = "go_float")]
    last_error_rate: f64,
    last_sample_error: String,
    uptime_seconds: i32,
    current_task: String,
    runtime: String,
    workspace_dir: Option<String>,
    monthly_spend: i64,
    budget_limit: Option<i64>,
    #[serde(serialize_with = "go_float")]
    x: f64,
    #[serde(serialize_with = "go_float")]
    y: f64,
    collapsed: bool,
    /// The last recorded beat (an addition to the reference's shape, for the console).
    last_heartbeat_at: Option<String>,
}

impl From<pb::Workspace> for WorkspaceItem {
    fn from(w: pb::Workspace) -> Self {
        Self {
            agent_card: raw(w.agent_card_json.as_deref()),
            last_heartbeat_at: timestamp_opt(w.last_heartbeat_at.as_ref()),
            id: w.id,
            name: w.name,
            role: w.role,
            tier: w.tier,
            status: w.status,
            url: w.url,
            parent_id: w.parent_id,
            active_tasks: w.active_tasks,
            max_concurrent_tasks: w.max_concurrent_tasks,
            last_error_rate: w.last_error_rate,
            last_sample_error: w.last_sample_error,
            uptime_seconds: w.uptime_seconds,
            current_task: w.current_task,
            runtime: w.runtime,
            workspace_dir: w.workspace_dir,
            monthly_spend: w.monthly_spend,
            budget_limit: w.budget_limit,
            x: w.x,
            y: w.y,
            collapsed: w.collapsed,
        }
    }
}

/// A workspace as `GET /workspaces/{id}` shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkspaceDetail {
    id: String,
    name: String,
    role: Option<String>,
    tier: i32,
    status: String,
    url: String,
    parent_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    agent_card: Option<Box<RawValue>>,
    active_tasks: i32,
    max_concurrent_tasks: i32,
    #[serde(serialize_with = "go_float")]
    last_error_rate: f64,
    uptime_seconds: i32,
    runtime: String,
    #[serde(serialize_with = "go_float")]
    x: f64,
    #[serde(serialize_with = "go_float")]
    y: f64,
    collapsed: bool,
    last_outbound_at: Option<String>,
    last_heartbeat_at: Option<String>,
}

impl From<pb::Workspace> for WorkspaceDetail {
    fn from(w: pb::Workspace) -> Self {
        Self {
            agent_card: raw(w.agent_card_json.as_deref()),
            last_outbound_at: timestamp_opt(w.last_outbound_at.as_ref()),
            last_heartbeat_at: timestamp_opt(w.last_heartbeat_at.as_ref()),
            id: w.id,
            name: w.name,
            role: w.role,
            tier: w.tier,
            status: w.status,
            url: w.url,
            parent_id: w.parent_id,
            active_tasks: w.active_tasks,
            max_concurrent_tasks: w.max_concurrent_tasks,
            last_error_rate: w.last_error_rate,
            uptime_seconds: w.uptime_seconds,
            runtime: w.runtime,
            x: w.x,
            y: w.y,
            collapsed: w.collapsed,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CanvasBody {
    #[serde(default)]
    x: f64,
    #[serde(default)]
    y: f64,
}

/// `POST /workspaces`; every field but `name` is optional.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateWorkspaceBody {
    /// At most 255 bytes; no line breaks or markup characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\r\n{}\[\]|>*&!]*$")]
    name: String,
    /// At most 1000 bytes; no line breaks or markup characters.
    #[schema(max_length = 1000, pattern = r"^[^\r\n{}\[\]|>*&!]*$")]
    role: Option<String>,
    /// At most 100 bytes, one line; `external` (or an empty runtime with `external: true`)
    /// makes a workspace whose agent runs elsewhere.
    #[schema(max_length = 100, pattern = r"^[^\r\n]*$")]
    runtime: Option<String>,
    external: Option<bool>,
    /// An external agent's http(s) URL, checked against the URL policy.
    url: Option<String>,
    /// 1–4; 0 means the default (3).
    #[schema(minimum = 0, maximum = 4)]
    tier: Option<i32>,
    /// An existing workspace; empty means none.
    #[schema(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    parent_id: Option<String>,
    /// A relative template name (no `..`).
    template: Option<String>,
    /// At most 100 bytes, one line.
    #[schema(max_length = 100, pattern = r"^[^\r\n]*$")]
    model: Option<String>,
    /// An absolute host directory outside the system directories.
    workspace_dir: Option<String>,
    /// `none` (the default), `read_only` or `read_write`; the last two need `workspace_dir`.
    #[schema(pattern = "^(none|read_only|read_write)?$")]
    workspace_access: Option<String>,
    budget_limit: Option<i64>,
    max_concurrent_tasks: Option<i32>,
    canvas: Option<CanvasBody>,
    secrets: Option<std::collections::HashMap<String, String>>,
    /// Seeded into the workspace's memories (docs/runtime.md §1).
    initial_memories: Option<Vec<InitialMemoryBody>>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct InitialMemoryBody {
    #[serde(default)]
    content: String,
    /// LOCAL, TEAM or GLOBAL, any case; empty means LOCAL.
    #[serde(default)]
    scope: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionBody {
    workspace_id: String,
    platform_url: String,
    auth_token: String,
    registry_endpoint: String,
    heartbeat_endpoint: String,
    curl_register_template: String,
    python_snippet: String,
}

impl From<pb::ExternalConnection> for ConnectionBody {
    fn from(c: pb::ExternalConnection) -> Self {
        Self {
            workspace_id: c.workspace_id,
            platform_url: c.platform_url,
            auth_token: c.auth_token,
            registry_endpoint: c.registry_endpoint,
            heartbeat_endpoint: c.heartbeat_endpoint,
            curl_register_template: c.curl_register_template,
            python_snippet: c.python_snippet,
        }
    }
}

/// `201` of `POST /workspaces`: the external shape or the provisioning shape.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CreatedWorkspace {
    External {
        id: String,
        external: bool,
        status: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        connection: Option<ConnectionBody>,
    },
    Provisioning {
        id: String,
        status: String,
        awareness_namespace: String,
        workspace_access: String,
    },
}

impl From<pb::CreateWorkspaceResponse> for CreatedWorkspace {
    fn from(r: pb::CreateWorkspaceResponse) -> Self {
        if r.external {
            Self::External {
                id: r.id,
                external: true,
                status: r.status,
                connection: r.connection.map(ConnectionBody::from),
            }
        } else {
            Self::Provisioning {
                id: r.id,
                status: r.status,
                awareness_namespace: r.awareness_namespace,
                workspace_access: r.workspace_access,
            }
        }
    }
}

impl Gateway {
    /// A body the gateway cannot use still goes through the route's auth gate first, so an
    /// unauthenticated caller learns nothing from a malformed body.
    pub(crate) async fn reject_body(
        &self,
        forwarded: &Forwarded,
        workspace_id: Option<&str>,
        error: BodyError,
        message: &str,
    ) -> Response {
        if let Some(response) = error.early_response() {
            return response;
        }
        let request = forwarded.request(pb::WhoAmIRequest {
            workspace_id: workspace_id.map(str::to_owned),
            any_credential: false,
        });
        match self.workspaces.clone().who_am_i(request).await {
            Err(status) => RestError::from(status).into_response(),
            Ok(_) => RestError::new(StatusCode::BAD_REQUEST, message).into_response(),
        }
    }
}

/// Runs one unary call and renders its reply, or the documented error.
pub(crate) fn render<T, B: Serialize>(
    status: StatusCode,
    result: Result<tonic::Response<T>, tonic::Status>,
    body: impl FnOnce(T) -> B,
) -> Response {
    match result {
        Ok(reply) => (status, Json(body(reply.into_inner()))).into_response(),
        Err(status) => RestError::from(status).into_response(),
    }
}

#[utoipa::path(post, path = "/workspaces", tag = "workspaces",
    request_body = CreateWorkspaceBody,
    responses(
        (status = 201, body = CreatedWorkspace),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn create_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: CreateWorkspaceBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid workspace payload")
                .await;
        }
    };
    let request = pb::CreateWorkspaceRequest {
        name: body.name,
        role: body.role.unwrap_or_default(),
        runtime: body.runtime.unwrap_or_default(),
        external: body.external.unwrap_or(false),
        url: body.url.unwrap_or_default(),
        tier: body.tier.unwrap_or(0),
        parent_id: body.parent_id,
        template: body.template.unwrap_or_default(),
        model: body.model.unwrap_or_default(),
        workspace_dir: body.workspace_dir.unwrap_or_default(),
        workspace_access: body.workspace_access.unwrap_or_default(),
        budget_limit: body.budget_limit,
        max_concurrent_tasks: body.max_concurrent_tasks.unwrap_or(0),
        canvas: body.canvas.map(|c| pb::CanvasPosition { x: c.x, y: c.y }),
        platform_url: forwarded.platform_url(),
        secrets: body.secrets.unwrap_or_default(),
        initial_memories: body
            .initial_memories
            .unwrap_or_default()
            .into_iter()
            .map(|memory| pb::InitialMemory {
                content: memory.content,
                scope: memory.scope,
            })
            .collect(),
    };
    let result = gateway
        .workspaces
        .clone()
        .create_workspace(forwarded.request(request))
        .await;
    render(StatusCode::CREATED, result, CreatedWorkspace::from)
}

#[utoipa::path(get, path = "/workspaces", tag = "workspaces",
    responses((status = 200, body = [WorkspaceItem]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_workspaces(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .list_workspaces(forwarded.request(pb::ListWorkspacesRequest {}))
        .await;
    render(StatusCode::OK, result, |reply| {
        reply
            .workspaces
            .into_iter()
            .map(WorkspaceItem::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = WorkspaceDetail), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .get_workspace(forwarded.request(pb::GetWorkspaceRequest { id }))
        .await;
    render(StatusCode::OK, result, WorkspaceDetail::from)
}

/// Reads the PATCH object into the typed request, naming the first field of the wrong type.
fn patch_request(
    id: String,
    fields: &Map<String, Value>,
) -> Result<pb::UpdateWorkspaceRequest, String> {
    fn string(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(format!("invalid {key}")),
        }
    }
    fn nullable(
        fields: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<pb::NullableString>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(pb::NullableString { value: None })),
            Some(Value::String(value)) => Ok(Some(pb::NullableString {
                value: Some(value.clone()),
            })),
            Some(_) => Err(format!("invalid {key}")),
        }
    }
    fn number(fields: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("invalid {key}")),
        }
    }
    let tier = match fields.get("tier") {
        None => None,
        Some(value) => Some(
            value
                .as_i64()
                .and_then(|tier| i32::try_from(tier).ok())
                .ok_or("invalid tier")?,
        ),
    };
    let collapsed = match fields.get("collapsed") {
        None => None,
        Some(value) => Some(value.as_bool().ok_or("invalid collapsed")?),
    };
    Ok(pb::UpdateWorkspaceRequest {
        id,
        name: string(fields, "name")?,
        role: nullable(fields, "role")?,
        tier,
        parent_id: nullable(fields, "parent_id")?,
        runtime: string(fields, "runtime")?,
        workspace_dir: nullable(fields, "workspace_dir")?,
        collapsed,
        x: number(fields, "x")?,
        y: number(fields, "y")?,
    })
}

#[utoipa::path(patch, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body(content = Object, description = "any of name, role, tier, parent_id, runtime, workspace_dir, collapsed, x, y"),
    responses((status = 200, body = Object, example = json!({"status": "updated"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn patch_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let fields: Map<String, Value> = match parse_body(body).await {
        Ok(fields) => fields,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = match patch_request(id.clone(), &fields) {
        Ok(request) => request,
        Err(message) => {
            return gateway
                .reject_body(&forwarded, Some(&id), BodyError::Invalid, &message)
                .await;
        }
    };
    let result = gateway
        .workspaces
        .clone()
        .update_workspace(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        if reply.needs_restart {
            json!({"status": "updated", "needs_restart": true})
        } else {
            json!({"status": "updated"})
        }
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// `true` confirms a cascade over sub-workspaces.
    confirm: Option<String>,
    /// `true` hard-deletes every dependent row.
    purge: Option<String>,
}

#[utoipa::path(delete, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), DeleteQuery),
    responses((status = 200, body = Object, example = json!({"status": "removed", "cascade_deleted": 0})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = Object, description = "confirmation_required")))]
pub(crate) async fn delete_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    let request = pb::DeleteWorkspaceRequest {
        id,
        confirm: query.confirm.as_deref() == Some("true"),
        purge: query.purge.as_deref() == Some("true"),
    };
    let result = gateway
        .workspaces
        .clone()
        .delete_workspace(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": reply.status, "cascade_deleted": reply.cascade_deleted}),
    )
}

#[utoipa::path(get, path = "/workspaces/{id}/state", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"workspace_id": "…", "status": "online", "paused": false, "deleted": false})),
        (status = 401, body = ErrorBody),
        (status = 404, body = Object, description = "deleted (no auth needed)", example = json!({"workspace_id": "…", "deleted": true}))))]
pub(crate) async fn workspace_state(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .get_workspace_state(forwarded.request(pb::GetWorkspaceStateRequest { id }))
        .await;
    render(
        StatusCode::OK,
        result,
        |state| json!({"workspace_id": state.workspace_id, "status": state.status, "paused": state.paused, "deleted": state.deleted}),
    )
}

#[utoipa::path(post, path = "/workspaces/{id}/pause", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"status": "paused", "paused_count": 1})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn pause_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .pause_workspace(forwarded.request(pb::PauseWorkspaceRequest { id }))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": "paused", "paused_count": reply.paused_count}),
    )
}

#[utoipa::path(post, path = "/workspaces/{id}/resume", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"status": "awaiting_agent", "resumed_count": 1})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .resume_workspace(forwarded.request(pb::ResumeWorkspaceRequest { id }))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": reply.status, "resumed_count": reply.resumed_count}),
    )
}

#[utoipa::path(post, path = "/workspaces/{id}/restart", tag = "workspaces",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"status": "provisioning"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn restart_workspace(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .restart_workspace(forwarded.request(pb::RestartWorkspaceRequest { id }))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": reply.status}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_names_the_first_mistyped_field() {
        let fields = json!({"name": "n", "tier": "3"});
        let err = patch_request("id".into(), fields.as_object().unwrap()).unwrap_err();
        assert_eq!(err, "invalid tier");
        let fields = json!({"role": null, "workspace_dir": null, "x": 1, "y": 2.5});
        let request = patch_request("id".into(), fields.as_object().unwrap()).unwrap();
        assert_eq!(request.role, Some(pb::NullableString { value: None }));
        assert_eq!(request.x, Some(1.0));
        assert_eq!(request.y, Some(2.5));
        assert!(request.name.is_none());
    }

    #[test]
    fn floats_print_like_go() {
        #[derive(Serialize)]
        struct F(#[serde(serialize_with = "go_float")] f64);
        assert_eq!(serde_json::to_string(&F(0.0)).unwrap(), "0");
        assert_eq!(serde_json::to_string(&F(120.5)).unwrap(), "120.5");
    }
}

//! Schedule routes (docs/operations.md O1): a workspace's cron schedules, their history and
//! health, "run now", and the operators' health view, in the reference's shapes.

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
    json::{parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/schedules`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateScheduleBody {
    #[serde(default)]
    name: String,
    /// Five fields (minute hour day-of-month month day-of-week) or `@hourly`, `@daily`, …
    #[schema(pattern = r"^\s*(@[a-z]+|\S+(\s+\S+){4})\s*$", example = "0 9 * * 1-5")]
    cron_expr: String,
    /// An IANA zone name; default UTC.
    #[serde(default)]
    #[schema(example = "Europe/Berlin")]
    timezone: String,
    /// Sent to the workspace as a `message/send` when the schedule fires.
    #[schema(pattern = r"\S")]
    prompt: String,
    /// Default true.
    enabled: Option<bool>,
}

/// `PATCH /workspaces/{id}/schedules/{schedule_id}`: the fields sent change.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateScheduleBody {
    name: Option<String>,
    cron_expr: Option<String>,
    timezone: Option<String>,
    prompt: Option<String>,
    enabled: Option<bool>,
}

/// One schedule as its workspace lists it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleEntry {
    id: String,
    workspace_id: String,
    name: String,
    cron_expr: String,
    timezone: String,
    prompt: String,
    enabled: bool,
    last_run_at: Option<String>,
    next_run_at: Option<String>,
    run_count: i64,
    /// running, ok, mailbox, queued, error or skipped; empty before the first run.
    last_status: String,
    last_error: String,
    /// `runtime` (created through the API) or `template` (seeded by an org import).
    source: String,
    created_at: Option<String>,
    updated_at: Option<String>,
}

impl From<pb::Schedule> for ScheduleEntry {
    fn from(row: pb::Schedule) -> Self {
        Self {
            last_run_at: timestamp_opt(row.last_run_at.as_ref()),
            next_run_at: timestamp_opt(row.next_run_at.as_ref()),
            created_at: timestamp_opt(row.created_at.as_ref()),
            updated_at: timestamp_opt(row.updated_at.as_ref()),
            id: row.id,
            workspace_id: row.workspace_id,
            name: row.name,
            cron_expr: row.cron_expr,
            timezone: row.timezone,
            prompt: row.prompt,
            enabled: row.enabled,
            run_count: row.run_count,
            last_status: row.last_status,
            last_error: row.last_error,
            source: row.source,
        }
    }
}

/// One run in a schedule's history.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleRunEntry {
    id: String,
    /// When it started.
    timestamp: Option<String>,
    duration_ms: Option<i32>,
    status: String,
    error_detail: String,
    /// The schedule as it was fired: id, name, cron and the prompt's first 200 characters.
    #[schema(value_type = Object)]
    request: Option<Box<RawValue>>,
    /// `schedule` or `manual`.
    trigger: String,
    /// The slot a scheduled run was due at.
    due_at: Option<String>,
}

/// One schedule's execution state, without its prompt or cron.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleHealthEntry {
    id: String,
    name: String,
    enabled: bool,
    last_run_at: Option<String>,
    next_run_at: Option<String>,
    run_count: i64,
    last_status: String,
    last_error: String,
}

/// One schedule in the operators' health view.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminScheduleHealthEntry {
    workspace_id: String,
    workspace_name: String,
    schedule_id: String,
    schedule_name: String,
    cron_expr: String,
    last_run_at: Option<String>,
    expected_next_run: Option<String>,
    /// ok, stale (no run within twice its interval) or never_run.
    status: String,
    stale_threshold_seconds: i64,
}

const ID: &str = "workspace id";

#[utoipa::path(get, path = "/workspaces/{id}/schedules", tag = "schedules",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = [ScheduleEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspaceSchedulesRequest { workspace_id: id };
    let result = gateway
        .schedules
        .clone()
        .list(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.schedules
            .into_iter()
            .map(ScheduleEntry::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(post, path = "/workspaces/{id}/schedules", tag = "schedules",
    description = "Five-field cron or an `@` macro, in an IANA zone; the prompt goes to the workspace through the A2A proxy when it fires.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    request_body = CreateScheduleBody,
    responses((status = 201, body = Object, example = json!({"id": "…", "status": "created", "next_run_at": "2026-12-07T08:00:00Z"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: CreateScheduleBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(
                    &forwarded,
                    Some(&id),
                    err,
                    "cron_expr and prompt are required",
                )
                .await;
        }
    };
    let request = pb::CreateScheduleRequest {
        workspace_id: id,
        name: body.name,
        cron_expr: body.cron_expr,
        timezone: body.timezone,
        prompt: body.prompt,
        enabled: body.enabled,
    };
    let result = gateway
        .schedules
        .clone()
        .create(forwarded.request(request))
        .await;
    render(StatusCode::CREATED, result, |created| {
        json!({"id": created.id, "status": "created",
               "next_run_at": timestamp_opt(created.next_run_at.as_ref())})
    })
}

#[utoipa::path(patch, path = "/workspaces/{id}/schedules/{schedule_id}", tag = "schedules",
    description = "Changes the fields sent; a new cron or zone recomputes the next run.",
    params(("id" = String, Path, format = Uuid, description = ID), ("schedule_id" = String, Path, format = Uuid, description = "schedule id")),
    request_body = UpdateScheduleBody,
    responses((status = 200, body = Object, example = json!({"status": "updated"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, schedule_id)): Path<(String, String)>,
    body: Body,
) -> Response {
    let body: UpdateScheduleBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid JSON")
                .await;
        }
    };
    let request = pb::UpdateScheduleRequest {
        workspace_id: id,
        schedule_id,
        name: body.name,
        cron_expr: body.cron_expr,
        timezone: body.timezone,
        prompt: body.prompt,
        enabled: body.enabled,
    };
    let result = gateway
        .schedules
        .clone()
        .update(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "updated"}))
}

#[utoipa::path(delete, path = "/workspaces/{id}/schedules/{schedule_id}", tag = "schedules",
    params(("id" = String, Path, format = Uuid, description = ID), ("schedule_id" = String, Path, format = Uuid, description = "schedule id")),
    responses((status = 200, body = Object, example = json!({"status": "deleted"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, schedule_id)): Path<(String, String)>,
) -> Response {
    let request = pb::ScheduleRef {
        workspace_id: id,
        schedule_id,
    };
    let result = gateway
        .schedules
        .clone()
        .delete(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "deleted"}))
}

#[utoipa::path(post, path = "/workspaces/{id}/schedules/{schedule_id}/run", tag = "schedules",
    description = "Fires the schedule now, through the A2A proxy, and records the run; its next run is unchanged.",
    params(("id" = String, Path, format = Uuid, description = ID), ("schedule_id" = String, Path, format = Uuid, description = "schedule id")),
    responses((status = 200, body = Object, example = json!({"status": "fired", "workspace_id": "…", "prompt": "…", "run_id": "…"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn run(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, schedule_id)): Path<(String, String)>,
) -> Response {
    let request = pb::ScheduleRef {
        workspace_id: id,
        schedule_id,
    };
    let result = gateway
        .schedules
        .clone()
        .run(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |fired| {
        json!({"status": "fired", "workspace_id": fired.workspace_id,
               "prompt": fired.prompt, "run_id": fired.run_id})
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/schedules/{schedule_id}/history", tag = "schedules",
    description = "The newest 20 runs, newest first.",
    params(("id" = String, Path, format = Uuid, description = ID), ("schedule_id" = String, Path, format = Uuid, description = "schedule id")),
    responses((status = 200, body = [ScheduleRunEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn history(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, schedule_id)): Path<(String, String)>,
) -> Response {
    let request = pb::ScheduleRef {
        workspace_id: id,
        schedule_id,
    };
    let result = gateway
        .schedules
        .clone()
        .history(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |history| {
        history
            .runs
            .into_iter()
            .map(|run| ScheduleRunEntry {
                timestamp: timestamp_opt(run.started_at.as_ref()),
                due_at: timestamp_opt(run.due_at.as_ref()),
                request: RawValue::from_string(run.request_json).ok(),
                id: run.id,
                duration_ms: run.duration_ms,
                status: run.status,
                error_detail: run.error_detail,
                trigger: run.trigger,
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/schedules/health", tag = "schedules",
    description = "Execution state without prompts or cron: for the workspace itself, an operator, or a peer that may talk to it (`X-Workspace-ID` with its own token).",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = [ScheduleHealthEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn health(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspaceSchedulesRequest { workspace_id: id };
    let result = gateway
        .schedules
        .clone()
        .health(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.schedules
            .into_iter()
            .map(|row| ScheduleHealthEntry {
                last_run_at: timestamp_opt(row.last_run_at.as_ref()),
                next_run_at: timestamp_opt(row.next_run_at.as_ref()),
                id: row.id,
                name: row.name,
                enabled: row.enabled,
                run_count: row.run_count,
                last_status: row.last_status,
                last_error: row.last_error,
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/admin/schedules/health", tag = "schedules",
    description = "Every workspace's schedules, each judged against its cadence.",
    responses((status = 200, body = [AdminScheduleHealthEntry]), (status = 401, body = ErrorBody)))]
pub(crate) async fn admin_health(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let request = pb::AdminScheduleHealthRequest {};
    let result = gateway
        .schedules
        .clone()
        .admin_health(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.schedules
            .into_iter()
            .map(|row| AdminScheduleHealthEntry {
                last_run_at: timestamp_opt(row.last_run_at.as_ref()),
                expected_next_run: timestamp_opt(row.expected_next_run.as_ref()),
                workspace_id: row.workspace_id,
                workspace_name: row.workspace_name,
                schedule_id: row.schedule_id,
                schedule_name: row.schedule_name,
                cron_expr: row.cron_expr,
                status: row.status,
                stale_threshold_seconds: row.stale_threshold_seconds,
            })
            .collect::<Vec<_>>()
    })
}

//! Approval routes (docs/runtime.md §3): create, list and get for the requesting workspace,
//! decide for a human or an ancestor, and the operators' pending list. The reference's shapes;
//! a decision also names who made it.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, timestamp, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/approvals`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateApprovalBody {
    #[schema(min_length = 1)]
    action: String,
    reason: Option<String>,
    task_id: Option<String>,
    /// Kept for the audit trail; never returned.
    context: Option<Map<String, Value>>,
}

/// `POST /workspaces/{id}/approvals/{approval_id}/decide`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct DecideBody {
    #[schema(pattern = "^(approved|denied)$")]
    decision: String,
    /// A note only: the decider is named by the credential.
    decided_by: Option<String>,
}

/// One request as its workspace lists it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApprovalEntry {
    id: String,
    task_id: Option<String>,
    action: String,
    reason: Option<String>,
    /// pending, approved or denied.
    status: String,
    /// admin, org:<key prefix>, workspace:<ancestor id>, dev or auto-expired.
    decided_by: Option<String>,
    decided_at: Option<String>,
    created_at: Option<String>,
}

impl From<pb::Approval> for ApprovalEntry {
    fn from(row: pb::Approval) -> Self {
        Self {
            decided_at: timestamp_opt(row.decided_at.as_ref()),
            created_at: timestamp_opt(row.created_at.as_ref()),
            id: row.id,
            task_id: row.task_id,
            action: row.action,
            reason: row.reason,
            status: row.status,
            decided_by: row.decided_by,
        }
    }
}

/// One request in the operators' pending list.
#[derive(Serialize, ToSchema)]
pub(crate) struct PendingApproval {
    id: String,
    workspace_id: String,
    workspace_name: Option<String>,
    action: String,
    reason: Option<String>,
    status: String,
    created_at: String,
}

#[utoipa::path(post, path = "/workspaces/{id}/approvals", tag = "approvals",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = CreateApprovalBody,
    responses((status = 201, body = Object, example = json!({"approval_id": "…", "status": "pending"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: CreateApprovalBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::CreateApprovalRequest {
        workspace_id: id,
        action: body.action,
        reason: body.reason,
        task_id: body.task_id,
        context_json: body
            .context
            .map(|context| Value::Object(context).to_string()),
    };
    let result = gateway
        .approvals
        .clone()
        .create(forwarded.request(request))
        .await;
    render(
        StatusCode::CREATED,
        result,
        |created| json!({"approval_id": created.approval_id, "status": created.status}),
    )
}

#[utoipa::path(get, path = "/workspaces/{id}/approvals", tag = "approvals",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = [ApprovalEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::ListApprovalsRequest { workspace_id: id };
    let result = gateway
        .approvals
        .clone()
        .list(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.approvals
            .into_iter()
            .map(ApprovalEntry::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/approvals/{approval_id}", tag = "approvals",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("approval_id" = String, Path, format = Uuid, description = "approval id")),
    responses((status = 200, body = ApprovalEntry),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, approval_id)): Path<(String, String)>,
) -> Response {
    let request = pb::GetApprovalRequest {
        workspace_id: id,
        approval_id,
    };
    let result = gateway
        .approvals
        .clone()
        .get(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, ApprovalEntry::from)
}

#[utoipa::path(post, path = "/workspaces/{id}/approvals/{approval_id}/decide", tag = "approvals",
    description = "Needs an operator credential or the token of an ancestor of the workspace; the workspace's own token gets 403.",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("approval_id" = String, Path, format = Uuid, description = "approval id")),
    request_body = DecideBody,
    responses((status = 200, body = Object, example = json!({"status": "approved", "approval_id": "…", "decided_by": "admin"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn decide(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, approval_id)): Path<(String, String)>,
    body: Body,
) -> Response {
    // An unreadable body is decided as an empty decision, so the decider gate (not the
    // workspace gate) answers first and the documented 400 follows.
    let body = match parse_body::<DecideBody>(body).await {
        Ok(body) => Some(body),
        Err(err) => match err.early_response() {
            Some(response) => return response,
            None => None,
        },
    };
    let (decision, note) = body.map_or_else(Default::default, |body| {
        (body.decision, body.decided_by.unwrap_or_default())
    });
    let request = pb::DecideApprovalRequest {
        workspace_id: id,
        approval_id,
        decision,
        note,
    };
    let result = gateway
        .approvals
        .clone()
        .decide(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |decided| json!({"status": decided.status, "approval_id": decided.approval_id, "decided_by": decided.decided_by}),
    )
}

#[utoipa::path(get, path = "/approvals/pending", tag = "approvals",
    responses((status = 200, body = [PendingApproval]), (status = 401, body = ErrorBody)))]
pub(crate) async fn pending(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let request = pb::ListPendingApprovalsRequest {};
    let result = gateway
        .approvals
        .clone()
        .list_pending(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.approvals
            .into_iter()
            .map(|row| PendingApproval {
                created_at: row.created_at.as_ref().map(timestamp).unwrap_or_default(),
                id: row.id,
                workspace_id: row.workspace_id,
                workspace_name: row.workspace_name,
                action: row.action,
                reason: row.reason,
                status: row.status,
            })
            .collect::<Vec<_>>()
    })
}

//! Audit trail routes (docs/operations.md O7): a workspace's chain with the reference's filters
//! and `chain_valid`, and the organisation's chain for operators. Read-only: no route changes
//! or deletes an audit row.

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{raw, timestamp_opt},
    pb,
    workspaces::render,
};

/// The reference's filters, plus `operation`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only rows by this credential (`admin`, `org:<prefix>`, `workspace:<id>`, `dev`); the
    /// reference's name for the actor.
    agent_id: Option<String>,
    /// Only rows of this request id (`X-Request-Id`); the reference's name for it.
    session_id: Option<String>,
    /// Only rows of this operation (`workspace.create`, `secret.set`, …).
    operation: Option<String>,
    /// Inclusive lower bound, RFC 3339.
    #[param(schema_with = crate::json::date_time_or_empty)]
    from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    #[param(schema_with = crate::json::date_time_or_empty)]
    to: Option<String>,
    /// 1–500, default 100; anything unreadable means the default.
    limit: Option<String>,
    /// Rows to skip, default 0.
    offset: Option<String>,
}

impl AuditQuery {
    fn request(self, workspace_id: String) -> pb::ListAuditRequest {
        let number = |text: Option<String>| text.and_then(|text| text.trim().parse().ok());
        pb::ListAuditRequest {
            workspace_id,
            actor: self.agent_id.unwrap_or_default(),
            request_id: self.session_id.unwrap_or_default(),
            operation: self.operation.unwrap_or_default(),
            from: self.from.unwrap_or_default(),
            to: self.to.unwrap_or_default(),
            limit: number(self.limit).unwrap_or(0),
            offset: number(self.offset).unwrap_or(0),
        }
    }
}

/// A page of one chain.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// Oldest first.
    events: Vec<AuditEvent>,
    /// Rows matching the filters, ignoring `limit` and `offset`.
    total: u64,
    /// The whole chain's verdict, whatever the filters: false when a row was changed or deleted.
    chain_valid: bool,
    /// Where the chain is broken, and how.
    chain_problems: Vec<ChainProblem>,
}

/// One action.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEvent {
    id: String,
    /// Position in the chain, from 1.
    seq: i64,
    timestamp: Option<String>,
    /// The credential that acted.
    actor: String,
    operation: String,
    /// What it acted on when not the workspace itself.
    target: Option<String>,
    workspace_id: Option<String>,
    request_id: Option<String>,
    /// What changed; never a secret value.
    #[schema(value_type = Object)]
    details: Option<Box<RawValue>>,
    /// The previous row's `hmac`; null on a chain's first row.
    prev_hmac: Option<String>,
    /// HMAC-SHA-256 of the row (keyed by `AUDIT_LEDGER_SALT`), or SHA-256 without a salt.
    hmac: String,
}

/// A place where the chain does not hold.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChainProblem {
    seq: i64,
    /// The row at `seq`; null when it was deleted.
    id: Option<String>,
    problem: String,
}

impl From<pb::AuditPage> for AuditPage {
    fn from(page: pb::AuditPage) -> Self {
        let given = |text: String| Some(text).filter(|text| !text.is_empty());
        Self {
            events: page
                .events
                .into_iter()
                .map(|row| AuditEvent {
                    timestamp: timestamp_opt(row.at.as_ref()),
                    details: raw(Some(&row.details_json)),
                    id: row.id,
                    seq: row.seq,
                    actor: row.actor,
                    operation: row.operation,
                    target: given(row.target),
                    workspace_id: given(row.workspace_id),
                    request_id: given(row.request_id),
                    prev_hmac: given(row.prev_hash),
                    hmac: row.hash,
                })
                .collect(),
            total: page.total,
            chain_valid: page.chain_valid,
            chain_problems: page
                .chain_problems
                .into_iter()
                .map(|problem| ChainProblem {
                    seq: problem.seq,
                    id: given(problem.id),
                    problem: problem.problem,
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/workspaces/{id}/audit", tag = "audit",
    description = "The workspace's audit chain, oldest first, with the verdict on the whole chain.",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), AuditQuery),
    responses((status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let request = query.request(id);
    let result = gateway.audit.clone().list(forwarded.request(request)).await;
    render(StatusCode::OK, result, AuditPage::from)
}

#[utoipa::path(get, path = "/admin/audit", tag = "audit",
    description = "The organisation's audit chain (org keys, global secrets, imports, key rotation). Operators only.",
    params(AuditQuery),
    responses((status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_org(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Query(query): Query<AuditQuery>,
) -> Response {
    let request = query.request(String::new());
    let result = gateway
        .audit
        .clone()
        .list_org(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, AuditPage::from)
}

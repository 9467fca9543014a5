//! The Approvals gRPC service (docs/runtime.md §3, M3): a workspace asks before it acts, and a
//! human (an operator credential) or an ancestor's token decides; never the requesting workspace
//! itself. Owns the request's lifecycle (pending → approved | denied, or denied as
//! `auto-expired` after the TTL), who may decide, and the events each step emits.

use chrono::TimeDelta;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};
use serde_json::{Value, json};
use tonic::{Request, metadata::MetadataMap};
use tracing::info;

use crate::{
    audit::Action,
    auth::{self, AuthError, Principal},
    domain::{ApprovalStatus, EventType, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    events::Envelope,
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{approval, workspace},
    },
};

/// The newest decided requests a list shows besides every pending one.
const LIST_DECIDED: u64 = 50;
/// Pending requests the operators' list shows at most.
const LIST_PENDING: u64 = 500;
/// Who denies a request nobody decided in time.
const EXPIRED_BY: &str = "auto-expired";

/// Every way an approval call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApprovalError {
    InvalidBody,
    InvalidDecision,
    NotFound,
    NotPending,
    OwnApproval,
}

impl From<ApprovalError> for ApiError {
    fn from(err: ApprovalError) -> Self {
        let (code, message) = match err {
            ApprovalError::InvalidBody => (ErrorCode::BadRequest, "invalid request body"),
            ApprovalError::InvalidDecision => (
                ErrorCode::BadRequest,
                "decision must be 'approved' or 'denied'",
            ),
            ApprovalError::NotFound => (ErrorCode::NotFound, "approval not found"),
            ApprovalError::NotPending => {
                (ErrorCode::NotFound, "approval not found or already decided")
            }
            ApprovalError::OwnApproval => (
                ErrorCode::Forbidden,
                "a workspace cannot decide its own approval",
            ),
        };
        ApiError::new(code, message)
    }
}

pub struct ApprovalsService {
    state: Platform,
}

impl ApprovalsService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::approvals_server::Approvals for ApprovalsService {
    async fn create(
        &self,
        request: Request<pb::CreateApprovalRequest>,
    ) -> RpcResult<pb::CreateApprovalResponse> {
        reply(self.create(request.metadata(), request.get_ref()).await)
    }

    async fn list(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> RpcResult<pb::ListApprovalsResponse> {
        reply(
            self.list(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn get(&self, request: Request<pb::GetApprovalRequest>) -> RpcResult<pb::Approval> {
        reply(self.get(request.metadata(), request.get_ref()).await)
    }

    async fn decide(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> RpcResult<pb::DecideApprovalResponse> {
        reply(self.decide(request.metadata(), request.get_ref()).await)
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingApprovalsRequest>,
    ) -> RpcResult<pb::ListApprovalsResponse> {
        reply(self.list_pending(request.metadata()).await)
    }
}

impl ApprovalsService {
    async fn create(
        &self,
        metadata: &MetadataMap,
        request: &pb::CreateApprovalRequest,
    ) -> ApiResult<pb::CreateApprovalResponse> {
        let requester = self
            .state
            .auth
            .live_workspace_row(metadata, &request.workspace_id)
            .await?;
        let context_is_object = request.context_json.as_deref().is_none_or(|text| {
            matches!(
                serde_json::from_str(text),
                Ok(Value::Object(_) | Value::Null)
            )
        });
        if request.action.is_empty() || !context_is_object {
            return Err(ApprovalError::InvalidBody.into());
        }
        const FAILED: &str = "failed to create approval";
        let id = uuid::Uuid::new_v4().to_string();
        let txn = self.state.db.begin().await.context(FAILED)?;
        approval::Entity::insert(approval::ActiveModel {
            id: Set(id.clone()),
            workspace_id: Set(requester.id.clone()),
            task_id: Set(request.task_id.clone()),
            action: Set(request.action.clone()),
            reason: Set(request.reason.clone()),
            context: Set(request.context_json.clone()),
            status: Set(ApprovalStatus::Pending),
            decided_by: Set(None),
            decision_note: Set(None),
            decided_at: Set(None),
            created_at: Set(store::now()),
        })
        .exec_without_returning(&txn)
        .await
        .context(FAILED)?;
        let events = &self.state.events;
        let mut recorded = vec![
            events
                .insert(
                    &txn,
                    EventType::ApprovalRequested,
                    Some(&requester.id),
                    json!({"approval_id": id, "action": request.action,
                           "reason": request.reason, "task_id": request.task_id}),
                )
                .await
                .context(FAILED)?,
        ];
        if let Some(parent) = &requester.parent_id {
            recorded.push(
                events
                    .insert(
                        &txn,
                        EventType::ApprovalEscalated,
                        Some(parent),
                        json!({"approval_id": id, "from_workspace_id": requester.id,
                               "action": request.action, "reason": request.reason}),
                    )
                    .await
                    .context(FAILED)?,
            );
        }
        txn.commit().await.context(FAILED)?;
        events.publish_all(recorded);
        Ok(pb::CreateApprovalResponse {
            approval_id: id,
            status: ApprovalStatus::Pending.as_str().to_owned(),
        })
    }

    async fn list(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ListApprovalsResponse> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let db = &self.state.db;
        // Every pending request (expiry bounds them), so a poller never loses one behind 50
        // newer decisions; then the newest decided ones.
        let mut rows = approval::Entity::find()
            .filter(approval::Column::WorkspaceId.eq(&id))
            .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
            .order_by_desc(approval::Column::CreatedAt)
            .limit(LIST_PENDING)
            .all(db)
            .await
            .context("query failed")?;
        rows.extend(
            approval::Entity::find()
                .filter(approval::Column::WorkspaceId.eq(&id))
                .filter(approval::Column::Status.ne(ApprovalStatus::Pending))
                .order_by_desc(approval::Column::CreatedAt)
                .limit(LIST_DECIDED)
                .all(db)
                .await
                .context("query failed")?,
        );
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(pb::ListApprovalsResponse {
            approvals: rows
                .into_iter()
                .map(|row| approval_message(row, None))
                .collect(),
        })
    }

    async fn get(
        &self,
        metadata: &MetadataMap,
        request: &pb::GetApprovalRequest,
    ) -> ApiResult<pb::Approval> {
        let id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let approval_id =
            validate::parse_uuid(&request.approval_id).ok_or(ApprovalError::NotFound)?;
        approval::Entity::find_by_id(approval_id)
            .filter(approval::Column::WorkspaceId.eq(id))
            .one(&self.state.db)
            .await
            .context("query failed")?
            .map(|row| approval_message(row, None))
            .ok_or_else(|| ApprovalError::NotFound.into())
    }

    /// Who may decide for `workspace_id`: an operator credential, or the token of one of its
    /// ancestors; its own token is refused (403) and any other workspace's is not a
    /// credential here (401).
    async fn decider(&self, metadata: &MetadataMap, workspace_id: &str) -> ApiResult<Principal> {
        let auth = &self.state.auth;
        let Some(bearer) = auth::bearer(metadata) else {
            return if auth.dev_mode() {
                Ok(Principal::Dev)
            } else {
                Err(AuthError::MissingWorkspaceToken.into())
            };
        };
        match auth.identify(bearer).await? {
            Some(Principal::Workspace(caller)) if caller == workspace_id => {
                Err(ApprovalError::OwnApproval.into())
            }
            Some(Principal::Workspace(caller))
                if self
                    .state
                    .hierarchy
                    .is_ancestor_of(&caller, workspace_id)
                    .await =>
            {
                Ok(Principal::Workspace(caller))
            }
            Some(Principal::Workspace(_)) | None => Err(AuthError::InvalidWorkspaceToken.into()),
            Some(operator) => Ok(operator),
        }
    }

    async fn decide(
        &self,
        metadata: &MetadataMap,
        request: &pb::DecideApprovalRequest,
    ) -> ApiResult<pb::DecideApprovalResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        let decider = self.decider(metadata, &id).await?;
        store::live_workspace(&self.state.db, &id).await?;
        if request.decision.is_empty() {
            return Err(ApprovalError::InvalidBody.into());
        }
        let decision =
            ApprovalStatus::decision(&request.decision).ok_or(ApprovalError::InvalidDecision)?;
        let approval_id =
            validate::parse_uuid(&request.approval_id).ok_or(ApprovalError::NotPending)?;
        let decided_by = decider.audit_name();
        let note = Some(request.note.clone()).filter(|note| !note.is_empty());
        // Bound to the path's workspace: a credential that may decide for one workspace settles
        // that workspace's requests and no other's.
        let txn = self.state.db.begin().await.context("failed to update")?;
        let decided = settle(
            &txn,
            &self.state,
            &id,
            &approval_id,
            decision,
            &decided_by,
            note,
        )
        .await
        .context("failed to update")?;
        if !decided {
            return Err(ApprovalError::NotPending.into());
        }
        let action = Action {
            operation: "approval.decide",
            workspace_id: Some(&id),
            target: Some(approval_id.clone()),
            details: json!({"decision": decision.as_str()}),
        };
        self.state
            .audit
            .append(&txn, &decider, metadata, action)
            .await
            .context("failed to update")?;
        txn.commit().await.context("failed to update")?;
        announce(&self.state, &id, &approval_id, decision, &decided_by).await;
        info!(workspace_id = %id, approval_id = %approval_id, decision = decision.as_str(), decided_by = %decided_by, "approval decided");
        Ok(pb::DecideApprovalResponse {
            status: decision.as_str().to_owned(),
            approval_id,
            decided_by,
        })
    }

    async fn list_pending(&self, metadata: &MetadataMap) -> ApiResult<pb::ListApprovalsResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = approval::Entity::find()
            .find_also_related(workspace::Entity)
            .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
            .filter(approval::Column::CreatedAt.gte(expiry_cutoff(&self.state)))
            .order_by_desc(approval::Column::CreatedAt)
            .limit(LIST_PENDING)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        Ok(pb::ListApprovalsResponse {
            approvals: rows
                .into_iter()
                .map(|(row, owner)| approval_message(row, owner.map(|owner| owner.name)))
                .collect(),
        })
    }
}

/// Requests created before this are past their TTL.
fn expiry_cutoff(state: &Platform) -> chrono::DateTime<chrono::Utc> {
    store::now()
        - TimeDelta::from_std(state.settings.runtime.approval_ttl).unwrap_or(TimeDelta::MAX)
}

/// Decides `workspace_id`'s pending, unexpired request; false when it was not (any more)
/// pending or belongs to another workspace. A conditional update, so of two deciders (or a
/// decider and the sweeper) exactly one wins.
async fn settle(
    db: &impl ConnectionTrait,
    state: &Platform,
    workspace_id: &str,
    approval_id: &str,
    decision: ApprovalStatus,
    decided_by: &str,
    note: Option<String>,
) -> Result<bool, sea_orm::DbErr> {
    let mut update = approval::Entity::update_many()
        .col_expr(approval::Column::Status, Expr::value(decision))
        .col_expr(approval::Column::DecidedBy, Expr::value(decided_by))
        .col_expr(approval::Column::DecisionNote, Expr::value(note))
        .col_expr(approval::Column::DecidedAt, Expr::value(store::now()))
        .filter(approval::Column::Id.eq(approval_id))
        .filter(approval::Column::WorkspaceId.eq(workspace_id))
        .filter(approval::Column::Status.eq(ApprovalStatus::Pending));
    if decided_by != EXPIRED_BY {
        update = update.filter(approval::Column::CreatedAt.gte(expiry_cutoff(state)));
    }
    Ok(update.exec(db).await?.rows_affected == 1)
}

/// The events of a decision: the recorded `APPROVAL_APPROVED|DENIED` (which also reaches a
/// streaming agent as a control frame) and the live `APPROVAL_DECIDED` frame the runtime's
/// WebSocket waits for.
async fn announce(
    state: &Platform,
    workspace_id: &str,
    approval_id: &str,
    decision: ApprovalStatus,
    decided_by: &str,
) {
    let event = match decision {
        ApprovalStatus::Approved => EventType::ApprovalApproved,
        _ => EventType::ApprovalDenied,
    };
    let payload = json!({"approval_id": approval_id, "decision": decision.as_str(), "decided_by": decided_by});
    state
        .events
        .record(&state.db, event, Some(workspace_id), payload)
        .await;
    state.events.publish_all([std::sync::Arc::new(Envelope::new(
        EventType::ApprovalDecided,
        Some(workspace_id),
        json!({"approval_id": approval_id, "status": decision.as_str(), "decided_by": decided_by}),
    ))]);
}

/// Denies, as `auto-expired`, every request pending longer than the TTL (the sweeper's pass).
pub async fn expire_pending(state: &Platform) -> Result<(), sea_orm::DbErr> {
    let expired: Vec<(String, String)> = approval::Entity::find()
        .select_only()
        .column(approval::Column::Id)
        .column(approval::Column::WorkspaceId)
        .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
        .filter(approval::Column::CreatedAt.lt(expiry_cutoff(state)))
        .limit(100)
        .into_tuple()
        .all(&state.db)
        .await?;
    for (approval_id, workspace_id) in expired {
        if settle(
            &state.db,
            state,
            &workspace_id,
            &approval_id,
            ApprovalStatus::Denied,
            EXPIRED_BY,
            None,
        )
        .await?
        {
            info!(workspace_id = %workspace_id, approval_id = %approval_id, "approval expired");
            announce(
                state,
                &workspace_id,
                &approval_id,
                ApprovalStatus::Denied,
                EXPIRED_BY,
            )
            .await;
        }
    }
    Ok(())
}

fn approval_message(row: approval::Model, workspace_name: Option<String>) -> pb::Approval {
    pb::Approval {
        id: row.id,
        workspace_id: row.workspace_id,
        task_id: row.task_id,
        action: row.action,
        reason: row.reason,
        status: row.status.as_str().to_owned(),
        decided_by: row.decided_by,
        decided_at: row.decided_at.map(pb::timestamp),
        created_at: Some(pb::timestamp(row.created_at)),
        workspace_name,
    }
}

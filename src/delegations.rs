//! Delegations (docs/a2a.md §5): a workspace hands a task to a peer and follows its
//! outcome. Delegations are `activity_logs` rows of type `delegation`: the `delegate` row is the
//! request (its id is the delegation id) and `delegate_result` rows are outcomes. The task is
//! sent through the A2A proxy core with the source as caller, so the hierarchy rule, the busy
//! queue and the records of docs/a2a.md §1.11 apply; this module never talks to an agent itself.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use serde_json::{Value, json};
use tonic::{Request, metadata::MetadataMap};
use tracing::warn;

use crate::{
    a2a::{self, A2aState, Caller, Outcome, ProxyCall, ProxyError},
    domain::{DelegationStatus, EventType, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{self, Db, DbContext, entities::activity_log},
};

const ACTIVITY_TYPE: &str = "delegation";
const REQUEST: &str = "delegate";
const RESULT: &str = "delegate_result";
/// The worker's budget for one delegation (the proxy's ceiling for agent callers).
const WORKER_BUDGET_SECONDS: u32 = 30 * 60;
/// A target that was unreachable gets one more try after this long.
const RETRY_AFTER: Duration = Duration::from_secs(8);
const LIST_LIMIT: u64 = 50;

/// Every way a delegation call is refused, each naming its code and documented words once
/// (docs/a2a.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DelegationError {
    InvalidRequest,
    InvalidBody,
    InvalidTarget,
    SelfDelegation,
    InvalidStatus,
    NotFound,
    /// The id names another workspace's activity row.
    IdInUse,
}

impl From<DelegationError> for ApiError {
    fn from(err: DelegationError) -> Self {
        match err {
            DelegationError::InvalidRequest => ApiError::bad_request("invalid delegation request"),
            DelegationError::InvalidBody => ApiError::bad_request("invalid request body"),
            DelegationError::InvalidTarget => {
                ApiError::bad_request("target_id must be a valid UUID")
            }
            DelegationError::SelfDelegation => {
                ApiError::bad_request("self-delegation not permitted")
            }
            DelegationError::InvalidStatus => {
                ApiError::bad_request("status must be 'completed' or 'failed'")
            }
            DelegationError::NotFound => ApiError::not_found("delegation not found"),
            DelegationError::IdInUse => ApiError::conflict("delegation_id already in use"),
        }
    }
}

/// The first `n` characters (not bytes, so UTF-8 is never split).
fn preview(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

fn completed_summary(text: &str) -> String {
    format!("Delegation completed ({}...)", preview(text, 80))
}

/// What a delegation row says about itself, for every row this module writes.
struct Row<'a> {
    source: &'a str,
    target: &'a str,
    method: &'static str,
    status: DelegationStatus,
    summary: String,
}

impl Row<'_> {
    fn model(&self, id: String) -> activity_log::ActiveModel {
        activity_log::ActiveModel {
            id: Set(id),
            workspace_id: Set(self.source.to_owned()),
            activity_type: Set(ACTIVITY_TYPE.to_owned()),
            source_id: Set(Some(self.source.to_owned())),
            target_id: Set(Some(self.target.to_owned())),
            method: Set(Some(self.method.to_owned())),
            summary: Set(Some(self.summary.clone())),
            request_body: Set(None),
            response_body: Set(None),
            tool_trace: Set(None),
            duration_ms: Set(None),
            status: Set(self.status.as_str().to_owned()),
            error_detail: Set(None),
            idempotency_key: Set(None),
            created_at: Set(store::now()),
        }
    }
}

pub struct DelegationsService {
    state: A2aState,
}

impl DelegationsService {
    pub fn new(state: A2aState) -> Self {
        Self { state }
    }

    /// WorkspaceAuth on the source workspace, which must exist.
    async fn authorize(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<String> {
        self.state.auth.live_workspace(metadata, raw_id).await
    }

    async fn delegate(
        &self,
        metadata: &MetadataMap,
        request: pb::DelegateRequest,
    ) -> ApiResult<pb::DelegateReply> {
        let source = self.authorize(metadata, &request.workspace_id).await?;
        if request.target_id.is_empty() || request.task.is_empty() {
            return Err(DelegationError::InvalidRequest.into());
        }
        let target =
            validate::parse_uuid(&request.target_id).ok_or(DelegationError::InvalidTarget)?;
        if target == source {
            return Err(DelegationError::SelfDelegation.into());
        }
        let key = request.idempotency_key.filter(|key| !key.is_empty());
        let db = &self.state.db;
        if let Some(key) = &key {
            match find_by_key(db, &source, key)
                .await
                .context("query failed")?
            {
                // A failed attempt may be retried under the same key.
                Some(row) if row.status == DelegationStatus::Failed.as_str() => {
                    activity_log::Entity::delete_by_id(row.id)
                        .exec(db)
                        .await
                        .context("query failed")?;
                }
                Some(row) => return Ok(idempotent_hit(row)),
                None => {}
            }
        }
        let delegation_id = activity_log::new_id();
        let row = activity_log::ActiveModel {
            request_body: Set(Some(
                json!({"task": request.task, "delegation_id": delegation_id}).to_string(),
            )),
            idempotency_key: Set(key.clone()),
            ..Row {
                source: &source,
                target: &target,
                method: REQUEST,
                status: DelegationStatus::Pending,
                summary: format!("Delegating to {target}"),
            }
            .model(delegation_id.clone())
        };
        let mut warning = None;
        if let Err(err) = activity_log::Entity::insert(row).exec(db).await {
            // A concurrent request with the same key won: answer with its delegation.
            if let Some(key) = &key
                && let Ok(Some(winner)) = find_by_key(db, &source, key).await
            {
                return Ok(idempotent_hit(winner));
            }
            warn!(workspace_id = %source, error = %err, "delegation row not written");
            warning = Some("delegation dispatched but status tracking unavailable".to_owned());
        }
        let worker = Worker {
            state: self.state.clone(),
            source: source.clone(),
            target: target.clone(),
            delegation_id: delegation_id.clone(),
        };
        let task = request.task;
        self.state
            .events
            .record(
                db,
                EventType::DelegationSent,
                Some(&source),
                json!({"delegation_id": delegation_id, "target_id": target, "task_preview": preview(&task, 100)}),
            )
            .await;
        tokio::spawn(async move { worker.run(&task).await });
        Ok(pb::DelegateReply {
            delegation_id,
            status: "delegated".to_owned(),
            target_id: target,
            idempotent_hit: false,
            warning,
        })
    }

    async fn list(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ListDelegationsResponse> {
        let source = self.authorize(metadata, raw_id).await?;
        let rows = rows_of(&source)
            .filter(activity_log::Column::Method.is_in([REQUEST, RESULT]))
            .order_by_desc(activity_log::Column::CreatedAt)
            .order_by_desc(activity_log::Column::Id)
            .limit(LIST_LIMIT)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        Ok(pb::ListDelegationsResponse {
            delegations: rows.into_iter().map(entry).collect(),
        })
    }

    async fn record(
        &self,
        metadata: &MetadataMap,
        request: pb::RecordDelegationRequest,
    ) -> ApiResult<pb::RecordDelegationReply> {
        let source = self.authorize(metadata, &request.workspace_id).await?;
        if request.target_id.is_empty()
            || request.task.is_empty()
            || request.delegation_id.is_empty()
        {
            return Err(DelegationError::InvalidBody.into());
        }
        let target =
            validate::parse_uuid(&request.target_id).ok_or(DelegationError::InvalidTarget)?;
        let row = activity_log::ActiveModel {
            request_body: Set(Some(
                json!({"task": request.task, "delegation_id": request.delegation_id}).to_string(),
            )),
            ..Row {
                source: &source,
                target: &target,
                method: REQUEST,
                status: DelegationStatus::Dispatched,
                summary: format!("Delegating to {target}"),
            }
            .model(request.delegation_id.clone())
        };
        // The agent picks the id: a retried record is the same delegation (recorded once, no
        // second event); an id that names someone else's row is refused, not overwritten.
        let inserted = activity_log::Entity::insert(row)
            .on_conflict(
                OnConflict::column(activity_log::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.state.db)
            .await
            .context("failed to record delegation")?;
        if inserted == 0 {
            let existing = activity_log::Entity::find_by_id(request.delegation_id.clone())
                .one(&self.state.db)
                .await
                .context("failed to record delegation")?;
            let same = existing.is_some_and(|row| {
                row.workspace_id == source && row.method.as_deref() == Some(REQUEST)
            });
            if !same {
                return Err(DelegationError::IdInUse.into());
            }
        } else {
            self.state
                .events
                .record(
                    &self.state.db,
                    EventType::DelegationSent,
                    Some(&source),
                    json!({"delegation_id": request.delegation_id, "target_id": target, "task_preview": preview(&request.task, 100)}),
                )
                .await;
        }
        Ok(pb::RecordDelegationReply {
            delegation_id: request.delegation_id,
            status: "recorded".to_owned(),
        })
    }

    async fn update(
        &self,
        metadata: &MetadataMap,
        request: pb::UpdateDelegationRequest,
    ) -> ApiResult<pb::UpdateDelegationReply> {
        let source = self.authorize(metadata, &request.workspace_id).await?;
        // `queued` is what the Python runtime reports while a peer is busy: it only moves the row.
        let Some(reported) = DelegationStatus::reported(&request.status) else {
            return Err(DelegationError::InvalidStatus.into());
        };
        let db = &self.state.db;
        let delegation = rows_of(&source)
            .filter(activity_log::Column::Id.eq(request.delegation_id.as_str()))
            .filter(activity_log::Column::Method.eq(REQUEST))
            .one(db)
            .await
            .context("query failed")?
            .ok_or(DelegationError::NotFound)?;
        let target = delegation.target_id.clone().unwrap_or_default();
        let delegation_id = request.delegation_id;
        let outcome = Ending::from_update(reported, request.error, request.response_preview);
        finish(&self.state, &source, &target, &delegation_id, outcome)
            .await
            .context("query failed")?;
        Ok(pb::UpdateDelegationReply {
            status: request.status,
            delegation_id,
        })
    }
}

/// The source's delegation rows (requests and outcomes), to be narrowed further.
fn rows_of(source: &str) -> sea_orm::Select<activity_log::Entity> {
    activity_log::Entity::find()
        .filter(activity_log::Column::WorkspaceId.eq(source))
        .filter(activity_log::Column::ActivityType.eq(ACTIVITY_TYPE))
}

async fn find_by_key(
    db: &Db,
    source: &str,
    key: &str,
) -> Result<Option<activity_log::Model>, DbErr> {
    rows_of(source)
        .filter(activity_log::Column::Method.eq(REQUEST))
        .filter(activity_log::Column::IdempotencyKey.eq(key))
        .one(db)
        .await
}

fn idempotent_hit(row: activity_log::Model) -> pb::DelegateReply {
    pb::DelegateReply {
        delegation_id: row.id,
        status: row.status,
        target_id: row.target_id.unwrap_or_default(),
        idempotent_hit: true,
        warning: None,
    }
}

fn entry(row: activity_log::Model) -> pb::DelegationEntry {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .unwrap_or(Value::Null)
    };
    let body = if row.method.as_deref() == Some(REQUEST) {
        parse(&row.request_body)
    } else {
        parse(&row.response_body)
    };
    pb::DelegationEntry {
        kind: row.method.unwrap_or_default(),
        source_id: row.source_id.unwrap_or_default(),
        target_id: row.target_id.unwrap_or_default(),
        summary: row.summary.unwrap_or_default(),
        status: row.status,
        created_at: Some(pb::timestamp(row.created_at)),
        delegation_id: body["delegation_id"].as_str().map(str::to_owned),
        error: row.error_detail,
        response_preview: body["text"].as_str().map(|text| preview(text, 300)),
        id: row.id,
    }
}

/// How a delegation ended, or that it waits.
enum Ending {
    Completed(String),
    /// The send failed: the outcome row carries the error.
    Failed(String),
    /// The agent reports a failure of a call it sent itself: the request row and the event.
    ReportedFailure(String),
    Queued,
    /// An agent-reported `queued`: the request row moves, nothing else.
    ReportedQueued,
}

impl Ending {
    fn from_update(
        status: DelegationStatus,
        error: Option<String>,
        response_preview: Option<String>,
    ) -> Self {
        match status {
            DelegationStatus::Completed => Self::Completed(response_preview.unwrap_or_default()),
            DelegationStatus::Failed => Self::ReportedFailure(error.unwrap_or_default()),
            _ => Self::ReportedQueued,
        }
    }
}

/// Moves the request row and writes the outcome's row and event.
async fn finish(
    state: &Platform,
    source: &str,
    target: &str,
    delegation_id: &str,
    outcome: Ending,
) -> Result<(), DbErr> {
    let db = &state.db;
    let (status, error) = match &outcome {
        Ending::Completed(_) => (DelegationStatus::Completed, None),
        Ending::Failed(error) | Ending::ReportedFailure(error) => {
            (DelegationStatus::Failed, Some(error.clone()))
        }
        Ending::Queued | Ending::ReportedQueued => (DelegationStatus::Queued, None),
    };
    let mut update = activity_log::Entity::update_many()
        .col_expr(activity_log::Column::Status, Expr::value(status.as_str()))
        .filter(activity_log::Column::Id.eq(delegation_id))
        .filter(activity_log::Column::WorkspaceId.eq(source));
    if let Some(error) = &error {
        update = update.col_expr(
            activity_log::Column::ErrorDetail,
            Expr::value(error.clone()),
        );
    }
    update.exec(db).await?;
    let result = |status, summary| Row {
        source,
        target,
        method: RESULT,
        status,
        summary,
    };
    let ids = json!({"delegation_id": delegation_id, "target_id": target});
    let reported = matches!(outcome, Ending::ReportedFailure(_));
    let (event, payload) = match outcome {
        Ending::Completed(text) => {
            let row = activity_log::ActiveModel {
                response_body: Set(Some(
                    json!({"text": text, "delegation_id": delegation_id}).to_string(),
                )),
                ..result(DelegationStatus::Completed, completed_summary(&text))
                    .model(activity_log::new_id())
            };
            activity_log::Entity::insert(row).exec(db).await?;
            let mut payload = ids;
            payload["response_preview"] = json!(preview(&text, 200));
            (EventType::DelegationComplete, payload)
        }
        Ending::Failed(error) | Ending::ReportedFailure(error) => {
            // The agent's own report moves only its request row (docs/a2a.md §5).
            if !reported {
                let row = activity_log::ActiveModel {
                    response_body: Set(Some(json!({"delegation_id": delegation_id}).to_string())),
                    error_detail: Set(Some(error.clone())),
                    ..result(
                        DelegationStatus::Failed,
                        format!("Delegation failed: {}", preview(&error, 200)),
                    )
                    .model(activity_log::new_id())
                };
                activity_log::Entity::insert(row).exec(db).await?;
            }
            let mut payload = ids;
            payload["error"] = json!(error);
            (EventType::DelegationFailed, payload)
        }
        Ending::Queued => {
            let row = activity_log::ActiveModel {
                response_body: Set(Some(
                    json!({"delegation_id": delegation_id, "queued": true}).to_string(),
                )),
                ..result(
                    DelegationStatus::Queued,
                    "Delegation queued — target at capacity".to_owned(),
                )
                .model(activity_log::new_id())
            };
            activity_log::Entity::insert(row).exec(db).await?;
            let mut payload = ids;
            payload["status"] = json!(DelegationStatus::Queued.as_str());
            (EventType::DelegationStatus, payload)
        }
        Ending::ReportedQueued => return Ok(()),
    };
    state.events.record(db, event, Some(source), payload).await;
    Ok(())
}

/// Sends one delegation and records how it ended.
struct Worker {
    state: A2aState,
    source: String,
    target: String,
    delegation_id: String,
}

impl Worker {
    async fn run(self, task: &str) {
        let db = &self.state.db;
        let dispatched = activity_log::Entity::update_many()
            .col_expr(
                activity_log::Column::Status,
                Expr::value(DelegationStatus::Dispatched.as_str()),
            )
            .filter(activity_log::Column::Id.eq(self.delegation_id.as_str()))
            .exec(db)
            .await;
        if let Err(err) = dispatched {
            warn!(delegation_id = %self.delegation_id, error = %err, "delegation status not written");
        }
        self.state
            .events
            .record(
                db,
                EventType::DelegationStatus,
                Some(&self.source),
                json!({"delegation_id": self.delegation_id, "target_id": self.target, "status": DelegationStatus::Dispatched.as_str()}),
            )
            .await;
        let body = json!({"method": "message/send", "params": {"message": {
            "role": "user", "messageId": self.delegation_id,
            "parts": [{"kind": "text", "text": task}],
            "metadata": {"delegation_id": self.delegation_id},
        }}})
        .to_string();
        let mut result = self.send(&body).await;
        if worth_retrying(&result) {
            tokio::time::sleep(RETRY_AFTER).await;
            result = self.send(&body).await;
        }
        let outcome = match result {
            Ok(Outcome::Delivered { status, body, .. }) if status < 400 => {
                Ending::Completed(answer_text(&body))
            }
            Ok(Outcome::Delivered { status, body, .. }) => {
                Ending::Failed(upstream_error(status, &body))
            }
            Ok(Outcome::Queued { .. } | Outcome::Mailbox { .. }) => Ending::Queued,
            Err(err) => Ending::Failed(err.to_string()),
        };
        if let Err(err) = finish(
            &self.state,
            &self.source,
            &self.target,
            &self.delegation_id,
            outcome,
        )
        .await
        {
            warn!(delegation_id = %self.delegation_id, error = %err, "delegation outcome not written");
        }
    }

    async fn send(&self, body: &str) -> Result<Outcome, ProxyError> {
        let call = ProxyCall {
            target: self.target.clone(),
            body: bytes::Bytes::from(body.to_owned()),
            timeout_seconds: Some(WORKER_BUDGET_SECONDS),
            forward_headers: Vec::new(),
        };
        a2a::proxy(&self.state, Caller::Workspace(self.source.clone()), call).await
    }
}

/// A 502, from the agent or about it. (The reference also retries its "restarting" 503; this
/// platform restarts no containers, so nothing answers that: see docs/a2a.md.)
fn worth_retrying(result: &Result<Outcome, ProxyError>) -> bool {
    match result {
        Ok(Outcome::Delivered { status, .. }) => *status == 502,
        Err(err) => err.code() == ErrorCode::BadGateway,
        Ok(_) => false,
    }
}

/// The first text part of `result.parts`, else of `result.artifacts[].parts`, else the raw body.
fn answer_text(body: &[u8]) -> String {
    let raw = || String::from_utf8_lossy(body).into_owned();
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return raw();
    };
    let result = &answer["result"];
    let first_text = |parts: &Value| {
        parts.as_array()?.iter().find_map(|part| {
            let is_text = part["kind"] == "text" || part["type"] == "text";
            is_text
                .then(|| part["text"].as_str().map(str::to_owned))
                .flatten()
        })
    };
    first_text(&result["parts"])
        .or_else(|| {
            result["artifacts"]
                .as_array()?
                .iter()
                .find_map(|artifact| first_text(&artifact["parts"]))
        })
        .unwrap_or_else(raw)
}

/// The agent's error string, else the status's reason phrase (as the proxy relays it).
fn upstream_error(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|status| status.canonical_reason())
                .unwrap_or("error");
            format!("agent answered {status}: {reason}")
        })
}

/// What the busy queue is given to call when a queued call reaches its agent: a delegation's
/// queued call completes that delegation.
pub fn redelivery_hook(platform: Platform) -> a2a::queue::RedeliveryHook {
    Arc::new(move |call: a2a::queue::Redelivered| {
        let platform = platform.clone();
        Box::pin(async move {
            let Ok(request) = serde_json::from_str::<Value>(&call.request) else {
                return;
            };
            let Some(delegation_id) =
                request["params"]["message"]["metadata"]["delegation_id"].as_str()
            else {
                return;
            };
            let completed = complete_from_queue(
                &platform,
                &call.source,
                &call.target,
                delegation_id,
                &call.answer,
            )
            .await;
            if let Err(err) = completed {
                warn!(delegation_id, error = %err, "delegation not completed from the queue");
            }
        })
    })
}

/// The busy-queue drain delivered a queued delegation (docs/a2a.md §1.12): its `queued` outcome row
/// becomes `completed`, and the source hears `DELEGATION_COMPLETE`.
async fn complete_from_queue(
    state: &Platform,
    source: &str,
    target: &str,
    delegation_id: &str,
    answer: &[u8],
) -> Result<(), DbErr> {
    let db = &state.db;
    let queued = rows_of(source)
        .filter(activity_log::Column::Method.eq(RESULT))
        .filter(activity_log::Column::TargetId.eq(target))
        .filter(activity_log::Column::Status.eq(DelegationStatus::Queued.as_str()))
        .all(db)
        .await?
        .into_iter()
        .find(|row| {
            row.response_body
                .as_deref()
                .and_then(|body| serde_json::from_str::<Value>(body).ok())
                .is_some_and(|body| body["delegation_id"] == delegation_id)
        });
    let Some(queued) = queued else {
        return Ok(());
    };
    let text = answer_text(answer);
    activity_log::Entity::update_many()
        .col_expr(
            activity_log::Column::Status,
            Expr::value(DelegationStatus::Completed.as_str()),
        )
        .col_expr(
            activity_log::Column::Summary,
            Expr::value(completed_summary(&text)),
        )
        .col_expr(
            activity_log::Column::ResponseBody,
            Expr::value(json!({"text": text, "delegation_id": delegation_id}).to_string()),
        )
        .filter(activity_log::Column::Id.eq(queued.id))
        .exec(db)
        .await?;
    activity_log::Entity::update_many()
        .col_expr(
            activity_log::Column::Status,
            Expr::value(DelegationStatus::Completed.as_str()),
        )
        .filter(activity_log::Column::Id.eq(delegation_id))
        .filter(activity_log::Column::WorkspaceId.eq(source))
        .exec(db)
        .await?;
    state
        .events
        .record(
            db,
            EventType::DelegationComplete,
            Some(source),
            json!({"delegation_id": delegation_id, "target_id": target, "response_preview": preview(&text, 200), "via": "queue_drain"}),
        )
        .await;
    Ok(())
}

#[tonic::async_trait]
impl pb::delegations_server::Delegations for DelegationsService {
    async fn delegate(
        &self,
        request: Request<pb::DelegateRequest>,
    ) -> RpcResult<pb::DelegateReply> {
        let (metadata, _, request) = request.into_parts();
        reply(self.delegate(&metadata, request).await)
    }

    async fn list_delegations(
        &self,
        request: Request<pb::ListDelegationsRequest>,
    ) -> RpcResult<pb::ListDelegationsResponse> {
        let (metadata, _, request) = request.into_parts();
        reply(self.list(&metadata, &request.workspace_id).await)
    }

    async fn record_delegation(
        &self,
        request: Request<pb::RecordDelegationRequest>,
    ) -> RpcResult<pb::RecordDelegationReply> {
        let (metadata, _, request) = request.into_parts();
        reply(self.record(&metadata, request).await)
    }

    async fn update_delegation(
        &self,
        request: Request<pb::UpdateDelegationRequest>,
    ) -> RpcResult<pb::UpdateDelegationReply> {
        let (metadata, _, request) = request.into_parts();
        reply(self.update(&metadata, request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(status: u16) -> Result<Outcome, ProxyError> {
        Ok(Outcome::Delivered {
            status,
            body: bytes::Bytes::new(),
            content_type: "application/json".to_owned(),
            duration_ms: 1,
        })
    }

    #[test]
    fn only_bad_gateways_are_retried() {
        assert!(worth_retrying(&delivered(502)));
        assert!(worth_retrying(&Err(ProxyError::Unreachable)));
        assert!(worth_retrying(&Err(ProxyError::ReadFailed {
            delivery_confirmed: false
        })));
        assert!(!worth_retrying(&delivered(200)));
        assert!(!worth_retrying(&delivered(503)));
        assert!(!worth_retrying(&Err(ProxyError::Busy {
            native_session: false
        })));
        assert!(!worth_retrying(&Err(ProxyError::AccessDenied)));
        assert!(!worth_retrying(&Ok(Outcome::Queued {
            queue_id: "q".to_owned(),
            queue_depth: 1
        })));
    }

    #[test]
    fn the_answer_text_is_the_first_text_part() {
        let answer = br#"{"result":{"parts":[{"kind":"data"},{"kind":"text","text":"done"}]}}"#;
        assert_eq!(answer_text(answer), "done");
        let artifact = br#"{"result":{"artifacts":[{"parts":[{"type":"text","text":"a"}]}]}}"#;
        assert_eq!(answer_text(artifact), "a");
        assert_eq!(answer_text(b"not json"), "not json");
    }

    #[test]
    fn an_upstream_error_prefers_the_agents_own_words() {
        assert_eq!(upstream_error(500, br#"{"error":"boom"}"#), "boom");
        assert_eq!(
            upstream_error(503, b"<html>"),
            "agent answered 503: Service Unavailable"
        );
    }
}

//! The heartbeat hot path: a cached credential and state, one liveness write, the status rules
//! of `transitions`, and a datastore write only on a transition or a new `current_task`.

use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tracing::info;

use crate::{
    domain::{EventType, WorkspaceStatus, validate},
    error::{ApiError, ApiResult},
    liveness::BeatSnapshot,
    pb,
    state::Platform,
    store::{self, DbContext, entities::workspace},
    telemetry,
};

use super::{
    RegistryService, invalid_body,
    transitions::{self, BeatFacts},
};

impl RegistryService {
    /// One heartbeat, whatever the transport. Returns the status after it.
    pub(crate) async fn beat(
        &self,
        id: &str,
        request: &pb::HeartbeatRequest,
    ) -> ApiResult<WorkspaceStatus> {
        let cached = self.live_workspace_state(id).await?;
        let error_rate = if request.error_rate.is_finite() {
            request.error_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let overrides = self
            .state
            .hot
            .overrides(id, request.runtime_metadata.as_ref());
        let snapshot = BeatSnapshot {
            at: store::now(),
            active_tasks: request.active_tasks,
            uptime_seconds: request.uptime_seconds,
            error_rate,
            sample_error: request.sample_error.clone(),
            monthly_spend: request
                .monthly_spend
                .filter(|spend| *spend > 0)
                .map(|spend| spend.min(1_000_000_000_000)),
            native_session: overrides.native_session,
        };
        self.state
            .liveness
            .beat(id, &snapshot)
            .await
            // The liveness store logs its outage once, not once per refused beat.
            .map_err(|_| ApiError::datastore_unavailable())?;

        let facts = BeatFacts {
            error_rate,
            runtime_state: &request.runtime_state,
            sample_error: &request.sample_error,
            native: overrides.status_mgmt,
        };
        let mut status = cached.status;
        if let Some((to, payload)) = transitions::evaluate(cached.status, facts)
            && self.transition(id, cached.status, to, payload).await?
        {
            status = to;
        }
        if request.current_task != cached.current_task {
            self.write_current_task(id, request).await?;
            self.state.events.broadcast_only(
                EventType::TaskUpdated,
                Some(id),
                json!({"current_task": request.current_task, "active_tasks": request.active_tasks}),
            );
        }
        self.state.hot.defer(id, snapshot);
        (self.on_beat)(id, request.active_tasks, cached.max_concurrent_tasks);
        self.state.events.broadcast_only(
            EventType::WorkspaceHeartbeat,
            Some(id),
            json!({"active_tasks": request.active_tasks, "uptime_seconds": request.uptime_seconds}),
        );
        Ok(status)
    }

    /// A conditional status change with its event, in one transaction. False when another
    /// writer changed the status first (the cache is then dropped).
    pub(super) async fn transition(
        &self,
        id: &str,
        from: WorkspaceStatus,
        to: WorkspaceStatus,
        payload: Value,
    ) -> ApiResult<bool> {
        let event = transition_in(&self.state, id, &[from], to, payload)
            .await
            .context("failed to update")?;
        self.state.hot.forget_workspace(id);
        match event {
            Some(event) => {
                self.state.events.publish_all([event]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(super) async fn write_current_task(
        &self,
        id: &str,
        request: &pb::HeartbeatRequest,
    ) -> ApiResult<()> {
        workspace::Entity::update_many()
            .col_expr(
                workspace::Column::CurrentTask,
                Expr::value(Some(request.current_task.clone()).filter(|task| !task.is_empty())),
            )
            .col_expr(
                workspace::Column::ActiveTasks,
                Expr::value(request.active_tasks),
            )
            .filter(workspace::Column::Id.eq(id.to_owned()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .exec(&self.state.db)
            .await
            .context("failed to update")?;
        if let Some(mut state) = self.state.hot.workspace(id) {
            state.current_task = request.current_task.clone();
            self.state.hot.remember_workspace(id, state);
        }
        Ok(())
    }

    pub(super) async fn heartbeat(
        &self,
        metadata: &MetadataMap,
        request: pb::HeartbeatRequest,
    ) -> ApiResult<pb::HeartbeatResponse> {
        if request.workspace_id.is_empty() {
            return Err(invalid_body());
        }
        let id = validate::workspace_id(&request.workspace_id)?;
        let beaten = match self.authenticate_agent(metadata, &id).await {
            Ok(_) => self.beat(&id, &request).await,
            Err(err) => Err(err),
        };
        telemetry::heartbeat("unary", beat_result(&beaten));
        Ok(pb::HeartbeatResponse {
            status: beaten?.to_string(),
        })
    }
}

/// A beat's outcome as the heartbeat metric labels it.
pub(super) fn beat_result<T>(beaten: &ApiResult<T>) -> &'static str {
    match beaten {
        Ok(_) => "ok",
        Err(err) => err.code.label(),
    }
}

/// `UPDATE … SET status = to WHERE id = ? AND status IN (from…)` plus its event row, in one
/// transaction. The event is returned for publishing after the commit, only if a row changed.
pub(crate) async fn transition_in(
    state: &Platform,
    id: &str,
    from: &[WorkspaceStatus],
    to: WorkspaceStatus,
    payload: Value,
) -> Result<Option<std::sync::Arc<crate::events::Envelope>>, DbErr> {
    let txn = state.db.begin().await?;
    let now = store::now();
    let changed = workspace::Entity::update_many()
        .col_expr(workspace::Column::Status, Expr::value(to))
        .col_expr(workspace::Column::UpdatedAt, Expr::value(now))
        .filter(workspace::Column::Id.eq(id.to_owned()))
        .filter(workspace::Column::Status.is_in(from.iter().copied()))
        .exec(&txn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(None);
    }
    let event_type = match to {
        WorkspaceStatus::Online => EventType::WorkspaceOnline,
        WorkspaceStatus::Degraded => EventType::WorkspaceDegraded,
        WorkspaceStatus::Offline => EventType::WorkspaceOffline,
        other => return Err(DbErr::Custom(format!("no event for status {other}"))),
    };
    let event = state
        .events
        .insert(&txn, event_type, Some(id), payload)
        .await?;
    txn.commit().await?;
    Ok(Some(event))
}

/// Liveness ran out (expiry, sweep or goodbye): online/degraded → offline, once fleet-wide.
pub(crate) async fn mark_offline(state: &Platform, id: &str) -> Result<bool, DbErr> {
    let event = transition_in(
        state,
        id,
        &[WorkspaceStatus::Online, WorkspaceStatus::Degraded],
        WorkspaceStatus::Offline,
        json!({}),
    )
    .await?;
    state.hot.forget_workspace(id);
    Ok(match event {
        Some(event) => {
            info!(workspace_id = %id, "workspace offline");
            state.events.publish_all([event]);
            true
        }
        None => false,
    })
}

//! Schedules (docs/operations.md O1): a workspace's cron schedules as a gRPC service, the
//! scheduler that fires each due run exactly once across replicas, and the history of runs. A
//! run is an A2A call through the proxy, as the scheduler's; this module never talks to an agent
//! itself.

mod cron;
mod runs;
pub mod scheduler;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, sea_query::Expr,
};
use serde_json::json;
use tokio::sync::Notify;
use tonic::{Request, metadata::MetadataMap};
use tracing::info;

pub use self::cron::{Timing, TimingError};
use crate::{
    a2a::A2aState,
    audit::Action,
    auth::{self, Principal},
    domain::{WorkspaceStatus, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    store::{
        self, DbContext,
        entities::{schedule, schedule_run, workspace},
    },
    supervision::SCHEDULER,
};

/// Runs a history shows.
const HISTORY_LIMIT: u64 = 20;

/// Every way a schedule call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScheduleError {
    Required,
    InvalidTimezone(String),
    InvalidCron,
    NotFound,
    AccessDenied,
}

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> Self {
        match err {
            ScheduleError::Required => ApiError::bad_request("cron_expr and prompt are required"),
            ScheduleError::InvalidTimezone(zone) => {
                ApiError::bad_request(format!("invalid timezone: {zone}"))
            }
            // The reference's words for an expression it cannot read.
            ScheduleError::InvalidCron => ApiError::bad_request("invalid request body"),
            ScheduleError::NotFound => ApiError::new(ErrorCode::NotFound, "schedule not found"),
            ScheduleError::AccessDenied => ApiError::forbidden("access denied"),
        }
    }
}

impl From<TimingError> for ScheduleError {
    fn from(err: TimingError) -> Self {
        match err {
            TimingError::Expression => Self::InvalidCron,
            TimingError::Zone(zone) => Self::InvalidTimezone(zone),
        }
    }
}

pub struct SchedulesService {
    state: A2aState,
    /// Wakes this replica's scheduler when a schedule changes, so a new next run is not late.
    wake: Arc<Notify>,
}

impl SchedulesService {
    pub fn new(state: A2aState, wake: Arc<Notify>) -> Self {
        Self { state, wake }
    }
}

#[tonic::async_trait]
impl pb::schedules_server::Schedules for SchedulesService {
    async fn list(
        &self,
        request: Request<pb::WorkspaceSchedulesRequest>,
    ) -> RpcResult<pb::ScheduleList> {
        reply(
            self.list(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn create(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> RpcResult<pb::CreateScheduleResponse> {
        reply(self.create(request.metadata(), request.get_ref()).await)
    }

    async fn update(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> RpcResult<pb::ScheduleStatusResponse> {
        reply(self.update(request.metadata(), request.get_ref()).await)
    }

    async fn delete(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> RpcResult<pb::ScheduleStatusResponse> {
        reply(self.delete(request.metadata(), request.get_ref()).await)
    }

    async fn run(&self, request: Request<pb::ScheduleRef>) -> RpcResult<pb::RunScheduleResponse> {
        reply(self.run_now(request.metadata(), request.get_ref()).await)
    }

    async fn history(&self, request: Request<pb::ScheduleRef>) -> RpcResult<pb::ScheduleHistory> {
        reply(self.history(request.metadata(), request.get_ref()).await)
    }

    async fn health(
        &self,
        request: Request<pb::WorkspaceSchedulesRequest>,
    ) -> RpcResult<pb::ScheduleHealthList> {
        reply(
            self.health(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn admin_health(
        &self,
        request: Request<pb::AdminScheduleHealthRequest>,
    ) -> RpcResult<pb::AdminScheduleHealthList> {
        reply(self.admin_health(request.metadata()).await)
    }
}

/// Org-template files written on Windows carry `\r\n`, which agents answer with nothing (the
/// reference's issue #958).
fn clean_prompt(prompt: &str) -> String {
    prompt.replace('\r', "")
}

/// What a new schedule is made of.
pub struct NewSchedule<'a> {
    pub name: &'a str,
    pub cron_expr: &'a str,
    /// An IANA zone name.
    pub timezone: &'a str,
    pub prompt: &'a str,
    pub enabled: bool,
    /// `runtime` (made through the API) or `template` (an org import).
    pub source: &'static str,
}

/// A new schedule's row, its first run computed from now.
pub fn new_schedule(
    workspace_id: &str,
    new: NewSchedule<'_>,
) -> Result<schedule::ActiveModel, TimingError> {
    let cron_expr = new.cron_expr.trim();
    let timing = Timing::parse(cron_expr, new.timezone)?;
    let now = store::now();
    Ok(schedule::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        workspace_id: Set(workspace_id.to_owned()),
        name: Set(new.name.to_owned()),
        cron_expr: Set(cron_expr.to_owned()),
        timezone: Set(new.timezone.to_owned()),
        prompt: Set(clean_prompt(new.prompt)),
        enabled: Set(new.enabled),
        next_run_at: Set(timing.next_after(now)),
        last_run_at: Set(None),
        run_count: Set(0),
        last_status: Set(String::new()),
        last_error: Set(String::new()),
        source: Set(new.source.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    })
}

impl SchedulesService {
    async fn list(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::ScheduleList> {
        let workspace_id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let rows = schedule::Entity::find()
            .filter(schedule::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(schedule::Column::CreatedAt)
            .order_by_asc(schedule::Column::Id)
            .all(&self.state.db)
            .await
            .context("failed to query schedules")?;
        Ok(pb::ScheduleList {
            schedules: rows.into_iter().map(schedule_message).collect(),
        })
    }

    async fn create(
        &self,
        metadata: &MetadataMap,
        request: &pb::CreateScheduleRequest,
    ) -> ApiResult<pb::CreateScheduleResponse> {
        let (workspace_id, principal) = self
            .state
            .auth
            .live_workspace_as(metadata, &request.workspace_id)
            .await?;
        if request.cron_expr.trim().is_empty() || request.prompt.trim().is_empty() {
            return Err(ScheduleError::Required.into());
        }
        let timezone = Some(request.timezone.trim())
            .filter(|zone| !zone.is_empty())
            .unwrap_or("UTC");
        let row = new_schedule(
            &workspace_id,
            NewSchedule {
                name: &request.name,
                cron_expr: &request.cron_expr,
                timezone,
                prompt: &request.prompt,
                enabled: request.enabled.unwrap_or(true),
                source: "runtime",
            },
        )
        .map_err(ScheduleError::from)?;
        let (id, next_run_at) = (row.id.clone().unwrap(), row.next_run_at.clone().unwrap());
        let failed = "failed to create schedule";
        let txn = self.state.db.begin().await.context(failed)?;
        schedule::Entity::insert(row)
            .exec_without_returning(&txn)
            .await
            .context(failed)?;
        let details = json!({"name": request.name, "cron_expr": request.cron_expr.trim(), "timezone": timezone});
        self.audit(
            &txn,
            &principal,
            metadata,
            "schedule.create",
            &workspace_id,
            &id,
            details,
        )
        .await
        .context(failed)?;
        txn.commit().await.context(failed)?;
        self.wake.notify_one();
        info!(workspace_id = %workspace_id, schedule_id = %id, "schedule created");
        Ok(pb::CreateScheduleResponse {
            id,
            next_run_at: next_run_at.map(pb::timestamp),
        })
    }

    /// The schedule `raw_schedule` of the workspace `raw_workspace`, after WorkspaceAuth.
    async fn owned(
        &self,
        metadata: &MetadataMap,
        raw_workspace: &str,
        raw_schedule: &str,
    ) -> ApiResult<(schedule::Model, Principal)> {
        let (workspace_id, principal) = self
            .state
            .auth
            .live_workspace_as(metadata, raw_workspace)
            .await?;
        let schedule_id = validate::parse_uuid(raw_schedule).ok_or(ScheduleError::NotFound)?;
        let schedule = schedule::Entity::find_by_id(schedule_id)
            .filter(schedule::Column::WorkspaceId.eq(workspace_id))
            .one(&self.state.db)
            .await
            .context("failed to read schedule")?
            .ok_or(ScheduleError::NotFound)?;
        Ok((schedule, principal))
    }

    /// Appends a change to schedule `schedule_id` to the audit trail, inside `txn`.
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        txn: &impl ConnectionTrait,
        principal: &Principal,
        metadata: &MetadataMap,
        operation: &'static str,
        workspace_id: &str,
        schedule_id: &str,
        details: serde_json::Value,
    ) -> Result<(), sea_orm::DbErr> {
        let action = Action {
            operation,
            workspace_id: Some(workspace_id),
            target: Some(schedule_id.to_owned()),
            details,
        };
        self.state
            .audit
            .append(txn, principal, metadata, action)
            .await
    }

    async fn update(
        &self,
        metadata: &MetadataMap,
        request: &pb::UpdateScheduleRequest,
    ) -> ApiResult<pb::ScheduleStatusResponse> {
        let (current, principal) = self
            .owned(metadata, &request.workspace_id, &request.schedule_id)
            .await?;
        let blank = |value: &Option<String>| value.as_deref().is_some_and(|v| v.trim().is_empty());
        if blank(&request.cron_expr) || blank(&request.prompt) {
            return Err(ScheduleError::Required.into());
        }
        let cron_expr = request
            .cron_expr
            .as_deref()
            .map_or(current.cron_expr.clone(), |expr| expr.trim().to_owned());
        let timezone = request
            .timezone
            .as_deref()
            .map(str::trim)
            .filter(|zone| !zone.is_empty())
            .map_or(current.timezone.clone(), str::to_owned);
        let timing = Timing::parse(&cron_expr, &timezone).map_err(ScheduleError::from)?;
        let now = store::now();
        let mut update = schedule::Entity::update_many()
            .col_expr(schedule::Column::UpdatedAt, Expr::value(now))
            .filter(schedule::Column::Id.eq(current.id.clone()));
        if request.cron_expr.is_some() || request.timezone.is_some() {
            update = update
                .col_expr(schedule::Column::CronExpr, Expr::value(cron_expr))
                .col_expr(schedule::Column::Timezone, Expr::value(timezone))
                .col_expr(
                    schedule::Column::NextRunAt,
                    Expr::value(timing.next_after(now)),
                );
        }
        if let Some(name) = &request.name {
            update = update.col_expr(schedule::Column::Name, Expr::value(name.clone()));
        }
        if let Some(prompt) = &request.prompt {
            update = update.col_expr(schedule::Column::Prompt, Expr::value(clean_prompt(prompt)));
        }
        if let Some(enabled) = request.enabled {
            update = update.col_expr(schedule::Column::Enabled, Expr::value(enabled));
            if enabled && !current.enabled {
                // Runs missed while disabled are not made up.
                update = update.col_expr(
                    schedule::Column::NextRunAt,
                    Expr::value(timing.next_after(now)),
                );
            }
        }
        let failed = "failed to update schedule";
        let txn = self.state.db.begin().await.context(failed)?;
        let updated = update.exec(&txn).await.context(failed)?;
        if updated.rows_affected == 0 {
            return Err(ScheduleError::NotFound.into());
        }
        let details = json!({
            "name": request.name,
            "cron_expr": request.cron_expr,
            "timezone": request.timezone,
            "prompt_changed": request.prompt.is_some(),
            "enabled": request.enabled,
        });
        let (workspace_id, schedule_id) = (&current.workspace_id, &current.id);
        self.audit(
            &txn,
            &principal,
            metadata,
            "schedule.update",
            workspace_id,
            schedule_id,
            details,
        )
        .await
        .context(failed)?;
        txn.commit().await.context(failed)?;
        self.wake.notify_one();
        Ok(pb::ScheduleStatusResponse {})
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        request: &pb::ScheduleRef,
    ) -> ApiResult<pb::ScheduleStatusResponse> {
        let (current, principal) = self
            .owned(metadata, &request.workspace_id, &request.schedule_id)
            .await?;
        let failed = "failed to delete schedule";
        let txn = self.state.db.begin().await.context(failed)?;
        let deleted = schedule::Entity::delete_by_id(current.id.clone())
            .exec(&txn)
            .await
            .context(failed)?;
        if deleted.rows_affected == 0 {
            return Err(ScheduleError::NotFound.into());
        }
        let details = json!({"name": current.name});
        self.audit(
            &txn,
            &principal,
            metadata,
            "schedule.delete",
            &current.workspace_id,
            &current.id,
            details,
        )
        .await
        .context(failed)?;
        txn.commit().await.context(failed)?;
        Ok(pb::ScheduleStatusResponse {})
    }

    async fn run_now(
        &self,
        metadata: &MetadataMap,
        request: &pb::ScheduleRef,
    ) -> ApiResult<pb::RunScheduleResponse> {
        let (current, principal) = self
            .owned(metadata, &request.workspace_id, &request.schedule_id)
            .await?;
        let run = runs::begin_manual(&self.state, &current)
            .await
            .context("failed to fire schedule")?;
        let action = Action {
            operation: "schedule.run",
            workspace_id: Some(&current.workspace_id),
            target: Some(current.id.clone()),
            details: json!({"run_id": run.id}),
        };
        self.state
            .audit
            .record(&self.state.db, &principal, metadata, action)
            .await;
        let response = pb::RunScheduleResponse {
            workspace_id: current.workspace_id.clone(),
            prompt: current.prompt.clone(),
            run_id: run.id.clone(),
        };
        let state = self.state.clone();
        tokio::spawn(async move { runs::fire(&state, run).await });
        Ok(response)
    }

    async fn history(
        &self,
        metadata: &MetadataMap,
        request: &pb::ScheduleRef,
    ) -> ApiResult<pb::ScheduleHistory> {
        let (current, _) = self
            .owned(metadata, &request.workspace_id, &request.schedule_id)
            .await?;
        let rows = schedule_run::Entity::find()
            .filter(schedule_run::Column::ScheduleId.eq(current.id))
            .order_by_desc(schedule_run::Column::StartedAt)
            .order_by_desc(schedule_run::Column::Id)
            .limit(HISTORY_LIMIT)
            .all(&self.state.db)
            .await
            .context("failed to query history")?;
        Ok(pb::ScheduleHistory {
            runs: rows.into_iter().map(run_message).collect(),
        })
    }

    /// Readers of the health view: the workspace itself or an operator (WorkspaceAuth), or a
    /// peer that names itself in `X-Workspace-ID`, with its own token, and may talk to it.
    async fn health_reader(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<String> {
        let target = validate::workspace_id(raw_id)?;
        match auth::claimed_workspace(metadata) {
            Some(raw_caller) => {
                let caller = validate::workspace_id(raw_caller)?;
                self.state.auth.workspace(metadata, &caller).await?;
                if caller != target && !self.state.hierarchy.can_communicate(&caller, &target).await
                {
                    return Err(ScheduleError::AccessDenied.into());
                }
            }
            None => {
                self.state.auth.workspace(metadata, &target).await?;
            }
        }
        store::live_workspace(&self.state.db, &target).await?;
        Ok(target)
    }

    async fn health(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ScheduleHealthList> {
        let workspace_id = self.health_reader(metadata, raw_id).await?;
        let rows = schedule::Entity::find()
            .filter(schedule::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(schedule::Column::CreatedAt)
            .order_by_asc(schedule::Column::Id)
            .all(&self.state.db)
            .await
            .context("failed to query schedules")?;
        Ok(pb::ScheduleHealthList {
            schedules: rows
                .into_iter()
                .map(|row| pb::ScheduleHealth {
                    id: row.id,
                    name: row.name,
                    enabled: row.enabled,
                    last_run_at: row.last_run_at.map(pb::timestamp),
                    next_run_at: row.next_run_at.map(pb::timestamp),
                    run_count: row.run_count,
                    last_status: row.last_status,
                    last_error: row.last_error,
                })
                .collect(),
        })
    }

    async fn admin_health(&self, metadata: &MetadataMap) -> ApiResult<pb::AdminScheduleHealthList> {
        self.state.auth.admin(metadata).await?;
        let rows = schedule::Entity::find()
            .find_also_related(workspace::Entity)
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .order_by_asc(workspace::Column::Name)
            .order_by_asc(schedule::Column::Name)
            .order_by_asc(schedule::Column::Id)
            .all(&self.state.db)
            .await
            .context("failed to query schedules")?;
        let now = store::now();
        let schedules = rows
            .into_iter()
            .filter_map(|(row, owner)| Some((row, owner?)))
            .map(|(row, owner)| {
                let threshold = stale_threshold(&row, now);
                pb::AdminScheduleHealth {
                    status: health_status(row.last_run_at, threshold, now).to_owned(),
                    stale_threshold_seconds: threshold.map_or(0, |gap| gap.num_seconds()),
                    workspace_id: owner.id,
                    workspace_name: owner.name,
                    schedule_id: row.id,
                    schedule_name: row.name,
                    cron_expr: row.cron_expr,
                    last_run_at: row.last_run_at.map(pb::timestamp),
                    expected_next_run: row.next_run_at.map(pb::timestamp),
                }
            })
            .collect();
        Ok(pb::AdminScheduleHealthList {
            schedules,
            scheduler_healthy: !self.state.supervision.stalled(SCHEDULER),
        })
    }
}

/// Twice the schedule's interval (the gap between its next two runs): a schedule whose last run
/// is older than this is stale.
fn stale_threshold(row: &schedule::Model, now: DateTime<Utc>) -> Option<chrono::TimeDelta> {
    let timing = Timing::parse(&row.cron_expr, &row.timezone).ok()?;
    let first = timing.next_after(now)?;
    let second = timing.next_after(first)?;
    Some((second - first) * 2)
}

fn health_status(
    last_run_at: Option<DateTime<Utc>>,
    threshold: Option<chrono::TimeDelta>,
    now: DateTime<Utc>,
) -> &'static str {
    match (last_run_at, threshold) {
        (None, _) => "never_run",
        (Some(last), Some(threshold)) if now - last > threshold => "stale",
        _ => "ok",
    }
}

fn schedule_message(row: schedule::Model) -> pb::Schedule {
    pb::Schedule {
        id: row.id,
        workspace_id: row.workspace_id,
        name: row.name,
        cron_expr: row.cron_expr,
        timezone: row.timezone,
        prompt: row.prompt,
        enabled: row.enabled,
        last_run_at: row.last_run_at.map(pb::timestamp),
        next_run_at: row.next_run_at.map(pb::timestamp),
        run_count: row.run_count,
        last_status: row.last_status,
        last_error: row.last_error,
        source: row.source,
        created_at: Some(pb::timestamp(row.created_at)),
        updated_at: Some(pb::timestamp(row.updated_at)),
    }
}

fn run_message(row: schedule_run::Model) -> pb::ScheduleRun {
    pb::ScheduleRun {
        id: row.id,
        started_at: Some(pb::timestamp(row.started_at)),
        duration_ms: row.duration_ms,
        status: row.status,
        error_detail: row.error_detail,
        request_json: row.request,
        trigger: row.trigger,
        due_at: row.due_at.map(pb::timestamp),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_schedule_is_stale_after_twice_its_interval_and_never_run_before_its_first() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let hourly = chrono::TimeDelta::hours(2);
        assert_eq!(health_status(None, Some(hourly), now), "never_run");
        let recent = now - chrono::TimeDelta::minutes(90);
        assert_eq!(health_status(Some(recent), Some(hourly), now), "ok");
        let old = now - chrono::TimeDelta::minutes(121);
        assert_eq!(health_status(Some(old), Some(hourly), now), "stale");
    }

    #[test]
    fn prompts_lose_carriage_returns() {
        assert_eq!(
            clean_prompt("line one\r\nline two\r\n"),
            "line one\nline two\n"
        );
    }
}

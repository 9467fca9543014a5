//! One run of a schedule: claimed (a due slot by one conditional update, so one replica fires
//! it; or a manual "run now"), fired through the A2A proxy as the scheduler, and recorded in the
//! run's history row and on its schedule. A run whose replica stopped before it finished is
//! recorded as failed by whichever replica notices, never fired again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::Expr,
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    a2a::{self, A2aState, Caller, Outcome, ProxyCall},
    domain::{EventType, WorkspaceStatus},
    store::{
        self,
        entities::{schedule, schedule_run, workspace},
    },
};

use super::Timing;

/// A run that was claimed and is about to fire.
pub(super) struct Claimed {
    pub(super) id: String,
    schedule: schedule::Model,
    started_at: DateTime<Utc>,
}

/// What became of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ending {
    /// ok, mailbox, queued, error, skipped.
    status: &'static str,
    detail: String,
}

/// Run statuses.
const RUNNING: &str = "running";
const SKIPPED: &str = "skipped";
const ERROR: &str = "error";

/// The schedule as the history records it: its prompt cut to 200 characters.
fn request_json(row: &schedule::Model) -> String {
    let prompt: String = row.prompt.chars().take(200).collect();
    json!({"schedule_id": row.id, "schedule_name": row.name,
           "cron_expr": row.cron_expr, "prompt": prompt})
    .to_string()
}

fn run_row(
    row: &schedule::Model,
    trigger: &str,
    due_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> schedule_run::ActiveModel {
    schedule_run::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        schedule_id: Set(row.id.clone()),
        workspace_id: Set(row.workspace_id.clone()),
        trigger: Set(trigger.to_owned()),
        due_at: Set(due_at),
        started_at: Set(now),
        finished_at: Set(None),
        duration_ms: Set(None),
        status: Set(RUNNING.to_owned()),
        error_detail: Set(String::new()),
        request: Set(request_json(row)),
    }
}

/// Claims `row`'s due slot: one conditional update moves its next run past now (a slot missed
/// while every replica was down fires once, not once per slot), and the run's row is written in
/// the same transaction. `None` when another replica claimed it first, or it changed.
pub(super) async fn claim(
    state: &A2aState,
    row: schedule::Model,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, DbErr> {
    let Some(due) = row.next_run_at else {
        return Ok(None);
    };
    let next = Timing::parse(&row.cron_expr, &row.timezone)
        .ok()
        .and_then(|timing| timing.next_after(now.max(due)));
    let txn = state.db.begin().await?;
    let claimed = schedule::Entity::update_many()
        .col_expr(schedule::Column::NextRunAt, Expr::value(next))
        .col_expr(schedule::Column::LastRunAt, Expr::value(now))
        .col_expr(
            schedule::Column::RunCount,
            sea_orm::sea_query::ExprTrait::add(Expr::col(schedule::Column::RunCount), 1),
        )
        .col_expr(schedule::Column::LastStatus, Expr::value(RUNNING))
        .col_expr(schedule::Column::LastError, Expr::value(""))
        .col_expr(schedule::Column::UpdatedAt, Expr::value(now))
        .filter(schedule::Column::Id.eq(row.id.clone()))
        .filter(schedule::Column::Enabled.eq(true))
        .filter(schedule::Column::NextRunAt.eq(due))
        .exec(&txn)
        .await?;
    if claimed.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(None);
    }
    let run = run_row(&row, "schedule", Some(due), now);
    let id = run.id.clone().unwrap();
    schedule_run::Entity::insert(run)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(Claimed {
        id,
        schedule: row,
        started_at: now,
    }))
}

/// Begins a manual run ("run now"): recorded like a scheduled one; the next run is unchanged.
pub(super) async fn begin_manual(
    state: &A2aState,
    row: &schedule::Model,
) -> Result<Claimed, DbErr> {
    let now = store::now();
    let txn = state.db.begin().await?;
    schedule::Entity::update_many()
        .col_expr(schedule::Column::LastRunAt, Expr::value(now))
        .col_expr(
            schedule::Column::RunCount,
            sea_orm::sea_query::ExprTrait::add(Expr::col(schedule::Column::RunCount), 1),
        )
        .col_expr(schedule::Column::LastStatus, Expr::value(RUNNING))
        .col_expr(schedule::Column::LastError, Expr::value(""))
        .col_expr(schedule::Column::UpdatedAt, Expr::value(now))
        .filter(schedule::Column::Id.eq(row.id.clone()))
        .exec(&txn)
        .await?;
    let run = run_row(row, "manual", None, now);
    let id = run.id.clone().unwrap();
    schedule_run::Entity::insert(run)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(Claimed {
        id,
        schedule: row.clone(),
        started_at: now,
    })
}

/// Fires a claimed run and records how it ended.
pub(super) async fn fire(state: &A2aState, run: Claimed) {
    let started = tokio::time::Instant::now();
    let ending = deliver(state, &run.schedule).await;
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    if let Err(err) = record(state, &run, &ending, duration_ms).await {
        warn!(schedule_id = %run.schedule.id, run_id = %run.id, error = %err, "schedule run not recorded");
    }
    debug!(schedule_id = %run.schedule.id, run_id = %run.id, status = ending.status, "schedule fired");
}

/// Sends the prompt as the scheduler's `message/send`, unless the workspace cannot take it.
async fn deliver(state: &A2aState, row: &schedule::Model) -> Ending {
    let status: Result<Option<WorkspaceStatus>, DbErr> =
        workspace::Entity::find_by_id(row.workspace_id.clone())
            .select_only()
            .column(workspace::Column::Status)
            .into_tuple()
            .one(&state.db)
            .await;
    match status {
        Ok(Some(WorkspaceStatus::Online | WorkspaceStatus::Degraded)) => {}
        Ok(Some(status)) => {
            return Ending {
                status: SKIPPED,
                detail: format!("workspace {status}"),
            };
        }
        Ok(None) => {
            return Ending {
                status: SKIPPED,
                detail: "workspace removed".to_owned(),
            };
        }
        Err(err) => {
            return Ending {
                status: ERROR,
                detail: store::failure(err, "failed to read workspace")
                    .message
                    .into_owned(),
            };
        }
    }
    let message_id = format!(
        "cron-{}-{}",
        &row.id[..8],
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let body = json!({
        "jsonrpc": "2.0",
        "id": message_id,
        "method": "message/send",
        "params": {"message": {"role": "user", "messageId": message_id,
                               "parts": [{"kind": "text", "text": row.prompt}]}},
    });
    let timeout = state.settings.runtime.schedule_fire_timeout;
    let call = ProxyCall {
        target: row.workspace_id.clone(),
        body: bytes::Bytes::from(body.to_string()),
        timeout_seconds: Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1)),
        forward_headers: Vec::new(),
    };
    let proxied = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        a2a::proxy(state, Caller::System("scheduler"), call),
    )
    .await;
    match proxied {
        Ok(Ok(Outcome::Delivered { status, .. })) if (200..300).contains(&status) => Ending {
            status: "ok",
            detail: String::new(),
        },
        Ok(Ok(Outcome::Delivered { status, .. })) => Ending {
            status: ERROR,
            detail: format!("HTTP {status}"),
        },
        Ok(Ok(Outcome::Mailbox { .. })) => Ending {
            status: "mailbox",
            detail: String::new(),
        },
        Ok(Ok(Outcome::Queued { .. })) => Ending {
            status: "queued",
            detail: String::new(),
        },
        Ok(Err(err)) => Ending {
            status: ERROR,
            detail: err.to_string(),
        },
        Err(_) => Ending {
            status: ERROR,
            detail: "no answer within the fire timeout".to_owned(),
        },
    }
}

/// Writes the run's ending, on its row and (while it is still the latest run) on its schedule,
/// and the event.
async fn record(
    state: &A2aState,
    run: &Claimed,
    ending: &Ending,
    duration_ms: i32,
) -> Result<(), DbErr> {
    let now = store::now();
    schedule_run::Entity::update_many()
        .col_expr(schedule_run::Column::Status, Expr::value(ending.status))
        .col_expr(
            schedule_run::Column::ErrorDetail,
            Expr::value(ending.detail.clone()),
        )
        .col_expr(schedule_run::Column::FinishedAt, Expr::value(now))
        .col_expr(schedule_run::Column::DurationMs, Expr::value(duration_ms))
        .filter(schedule_run::Column::Id.eq(run.id.clone()))
        .filter(schedule_run::Column::Status.eq(RUNNING))
        .exec(&state.db)
        .await?;
    schedule::Entity::update_many()
        .col_expr(schedule::Column::LastStatus, Expr::value(ending.status))
        .col_expr(
            schedule::Column::LastError,
            Expr::value(ending.detail.clone()),
        )
        .col_expr(schedule::Column::UpdatedAt, Expr::value(now))
        .filter(schedule::Column::Id.eq(run.schedule.id.clone()))
        .filter(schedule::Column::LastRunAt.eq(run.started_at))
        .exec(&state.db)
        .await?;
    let row = &run.schedule;
    let (event, payload) = if ending.status == SKIPPED {
        (
            EventType::CronSkipped,
            json!({"schedule_id": row.id, "schedule_name": row.name, "run_id": run.id,
                   "reason": ending.detail}),
        )
    } else {
        (
            EventType::CronExecuted,
            json!({"schedule_id": row.id, "schedule_name": row.name, "run_id": run.id,
                   "status": ending.status}),
        )
    };
    state
        .events
        .record(&state.db, event, Some(&row.workspace_id), payload)
        .await;
    Ok(())
}

/// Records as failed every run still `running` long past the fire timeout: the replica that
/// fired it stopped. Returns how many.
pub(super) async fn fail_interrupted(state: &A2aState) -> Result<u64, DbErr> {
    // A live replica gives up on a run at the fire timeout and five seconds: one still running
    // at twice the timeout and ten seconds lost its replica.
    let timeout = state.settings.runtime.schedule_fire_timeout * 2 + Duration::from_secs(10);
    let now = store::now();
    let cutoff = now - chrono::TimeDelta::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX);
    const DETAIL: &str = "interrupted: the replica firing it stopped before it finished";
    let stuck: Vec<(String, String, DateTime<Utc>)> = schedule_run::Entity::find()
        .select_only()
        .column(schedule_run::Column::Id)
        .column(schedule_run::Column::ScheduleId)
        .column(schedule_run::Column::StartedAt)
        .filter(schedule_run::Column::Status.eq(RUNNING))
        .filter(schedule_run::Column::StartedAt.lt(cutoff))
        .into_tuple()
        .all(&state.db)
        .await?;
    let mut failed = 0;
    for (run_id, schedule_id, started_at) in stuck {
        let updated = schedule_run::Entity::update_many()
            .col_expr(schedule_run::Column::Status, Expr::value(ERROR))
            .col_expr(schedule_run::Column::ErrorDetail, Expr::value(DETAIL))
            .col_expr(schedule_run::Column::FinishedAt, Expr::value(now))
            .filter(schedule_run::Column::Id.eq(run_id))
            .filter(schedule_run::Column::Status.eq(RUNNING))
            .exec(&state.db)
            .await?;
        failed += updated.rows_affected;
        schedule::Entity::update_many()
            .col_expr(schedule::Column::LastStatus, Expr::value(ERROR))
            .col_expr(schedule::Column::LastError, Expr::value(DETAIL))
            .filter(schedule::Column::Id.eq(schedule_id))
            .filter(schedule::Column::LastRunAt.eq(started_at))
            .filter(schedule::Column::LastStatus.eq(RUNNING))
            .exec(&state.db)
            .await?;
    }
    if failed > 0 {
        warn!(
            failed,
            "schedule runs interrupted by a stopped replica recorded as failed"
        );
    }
    Ok(failed)
}

//! Background sweeps that change state on a clock: the provision-timeout sweep (registry
//! docs/registry.md §5.4) and the runtime's expiries (docs/runtime.md: approvals nobody decided
//! in time, chat uploads past their TTL) and console sessions that ended, and the workspace
//! status gauge. Each transition is a conditional update, so with several replicas sweeping at
//! once exactly one of them records the event.

use std::time::Duration;

use chrono::TimeDelta;
use sea_orm::{ColumnTrait, EntityTrait, Iterable, QueryFilter, QuerySelect, sea_query::Expr};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    console,
    domain::{EventType, WorkspaceStatus},
    runtime::{approvals, chat_files, key_values},
    state::Platform,
    store::{self, entities::workspace},
};

pub const PROVISION_TIMEOUT_ERROR: &str = "provisioning timed out — container started but never called /registry/register. Check container logs and network connectivity to the platform.";

/// Runs until shutdown.
pub async fn run_provision_timeout_sweep(state: Platform) {
    let timeout = state.settings.provision_timeout;
    let interval = (timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
    on_a_clock(
        state,
        interval,
        "provision_timeout_sweep",
        move |state| async move { sweep_provisioning(&state, timeout).await },
    )
    .await;
}

/// Runs until shutdown: approvals pending past their TTL are denied as `auto-expired`, chat
/// uploads past theirs are deleted.
pub async fn run_runtime_sweep(state: Platform) {
    // A tenth of the shortest of the TTLs it enforces, so each expires within 10% of its time.
    let settings = &state.settings;
    let shortest = [
        settings.runtime.approval_ttl,
        settings.runtime.upload_ttl,
        settings.session_ttl,
    ]
    .into_iter()
    .min()
    .unwrap_or_default();
    let interval = (shortest / 10).clamp(Duration::from_millis(200), Duration::from_secs(10));
    on_a_clock(
        state,
        interval,
        "runtime_expiry_sweep",
        |state| async move {
            approvals::expire_pending(&state).await?;
            console::expire_sessions(&state).await?;
            key_values::expire(&state).await?;
            chat_files::expire(&state).await
        },
    )
    .await;
}

/// Samples the workspaces by status for the `molecule_workspaces` gauge, every 15 s: one
/// grouped count, so its cost does not grow with the heartbeat rate.
pub async fn run_status_gauge(state: Platform) {
    on_a_clock(
        state,
        Duration::from_secs(15),
        "workspace_status_gauge",
        |state| async move {
            let counts: Vec<(WorkspaceStatus, i64)> = workspace::Entity::find()
                .select_only()
                .column(workspace::Column::Status)
                .column_as(workspace::Column::Id.count(), "count")
                .group_by(workspace::Column::Status)
                .into_tuple()
                .all(&state.db)
                .await?;
            for status in WorkspaceStatus::iter() {
                let count = counts
                    .iter()
                    .find_map(|(counted, count)| (*counted == status).then_some(*count))
                    .unwrap_or(0);
                crate::telemetry::workspaces(status.as_str(), u64::try_from(count).unwrap_or(0));
            }
            Ok(())
        },
    )
    .await;
}

/// Runs `pass` every `interval` until shutdown; a failure is logged (an outage quietly) and
/// the next tick tries again.
async fn on_a_clock<F, Fut>(state: Platform, interval: Duration, name: &'static str, mut pass: F)
where
    F: FnMut(Platform) -> Fut,
    Fut: Future<Output = Result<(), sea_orm::DbErr>>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        state.supervision.tick(name, interval);
        if let Err(err) = pass(state.clone()).await
            && !crate::store::is_unavailable(&err)
        {
            warn!(error = %err, sweep = name, "sweep failed");
        }
    }
}

async fn sweep_provisioning(state: &Platform, timeout: Duration) -> Result<(), sea_orm::DbErr> {
    let cutoff = store::now() - TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
    let stuck = workspace::Entity::find()
        .filter(workspace::Column::Status.eq(WorkspaceStatus::Provisioning))
        .filter(workspace::Column::UpdatedAt.lt(cutoff))
        .all(&state.db)
        .await?;
    for row in stuck {
        let changed = workspace::Entity::update_many()
            .col_expr(
                workspace::Column::Status,
                Expr::value(WorkspaceStatus::Failed),
            )
            .col_expr(
                workspace::Column::LastSampleError,
                Expr::value(PROVISION_TIMEOUT_ERROR),
            )
            .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.eq(row.id.clone()))
            .filter(workspace::Column::Status.eq(WorkspaceStatus::Provisioning))
            .filter(workspace::Column::UpdatedAt.lt(cutoff))
            .exec(&state.db)
            .await?;
        if changed.rows_affected == 1 {
            info!(workspace_id = %row.id, "provisioning timed out");
            let payload = json!({
                "error": PROVISION_TIMEOUT_ERROR,
                "timeout_secs": timeout.as_secs(),
                "runtime": row.runtime,
                "source": "provision_timeout_sweep",
            });
            state
                .events
                .record(
                    &state.db,
                    EventType::WorkspaceProvisionFailed,
                    Some(&row.id),
                    payload,
                )
                .await;
        }
    }
    Ok(())
}

//! The busy queue (docs/a2a.md §1.12): a call that reached a busy agent (connected, then no
//! answer in time) waits in `a2a_queue` and is delivered again when the agent's heartbeat shows
//! spare capacity. Claims are conditional updates, so concurrent drains (on any replica) never
//! take the same row; a reaper returns rows stranded in `dispatched` by a crash.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use tracing::{debug, warn};

use super::{A2aState, Caller, Outcome, ProxyCall, ProxyError, envelope::Envelope};
use crate::{
    domain::QueueStatus,
    store::{self, entities::a2a_queue},
};

const TASK_PRIORITY: i32 = 50;
const MAX_ATTEMPTS: i32 = 5;
/// A row `dispatched` longer than the 30-min ceiling plus 5 min was lost with its replica.
const STRANDED_AFTER: Duration = Duration::from_secs(35 * 60);
/// How often workspaces with waiting rows are re-read (rows queued on other replicas, or
/// before a restart) and stranded rows reaped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Workspaces known to have queued rows, so a heartbeat without any costs no query.
#[derive(Default)]
pub struct Waiting(Mutex<HashSet<String>>);

impl Waiting {
    fn insert(&self, id: &str) {
        self.0
            .lock()
            .expect("waiting set poisoned")
            .insert(id.to_owned());
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().expect("waiting set poisoned").contains(id)
    }

    fn remove(&self, id: &str) {
        self.0.lock().expect("waiting set poisoned").remove(id);
    }
}

/// Queues a busy call; the same message already waiting (or in flight) is not queued twice.
/// Returns the row's id and the number of rows now waiting for the target.
pub(super) async fn enqueue(
    state: &A2aState,
    caller: &Caller,
    target: &str,
    envelope: &Envelope,
) -> Result<(String, u32), DbErr> {
    let existing = match &envelope.message_id {
        Some(key) => {
            a2a_queue::Entity::find()
                .filter(a2a_queue::Column::WorkspaceId.eq(target))
                .filter(a2a_queue::Column::IdempotencyKey.eq(key.as_str()))
                .filter(
                    a2a_queue::Column::Status.is_in([QueueStatus::Queued, QueueStatus::Dispatched]),
                )
                .one(&state.db)
                .await?
        }
        None => None,
    };
    let id = match existing {
        Some(row) => row.id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            a2a_queue::Entity::insert(a2a_queue::ActiveModel {
                id: Set(id.clone()),
                workspace_id: Set(target.to_owned()),
                caller_id: Set(caller.source_id()),
                priority: Set(TASK_PRIORITY),
                body: Set(envelope.body.clone()),
                method: Set(Some(envelope.method.clone())),
                idempotency_key: Set(envelope.message_id.clone()),
                enqueued_at: Set(store::now()),
                dispatched_at: Set(None),
                completed_at: Set(None),
                expires_at: Set(None),
                attempts: Set(0),
                status: Set(QueueStatus::Queued),
                last_error: Set(None),
            })
            .exec_without_returning(&state.db)
            .await?;
            id
        }
    };
    state.waiting.insert(target);
    let depth = a2a_queue::Entity::find()
        .filter(a2a_queue::Column::WorkspaceId.eq(target))
        .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
        .count(&state.db)
        .await?;
    Ok((id, u32::try_from(depth).unwrap_or(u32::MAX)))
}

/// Called for every accepted heartbeat: drains up to the agent's spare capacity, in the
/// background, when it has rows waiting.
pub fn on_heartbeat(state: &A2aState, id: &str, active_tasks: i32, max_concurrent: i32) {
    let capacity = max_concurrent.max(1) - active_tasks.max(0);
    if capacity <= 0 || !state.waiting.contains(id) {
        return;
    }
    let (state, id) = (state.clone(), id.to_owned());
    tokio::spawn(async move {
        if let Err(err) = drain(&state, &id, capacity).await
            && !store::is_unavailable(&err)
        {
            warn!(workspace_id = %id, error = %err, "queue drain failed");
        }
    });
}

/// Claims and delivers up to `capacity` rows for `target`, oldest highest-priority first.
async fn drain(state: &A2aState, target: &str, capacity: i32) -> Result<(), DbErr> {
    let candidates = a2a_queue::Entity::find()
        .filter(a2a_queue::Column::WorkspaceId.eq(target))
        .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
        .order_by_desc(a2a_queue::Column::Priority)
        .order_by_asc(a2a_queue::Column::EnqueuedAt)
        .limit(u64::try_from(capacity).unwrap_or(1))
        .all(&state.db)
        .await?;
    if candidates.is_empty() {
        state.waiting.remove(target);
        return Ok(());
    }
    for row in candidates {
        let claimed = a2a_queue::Entity::update_many()
            .col_expr(
                a2a_queue::Column::Status,
                Expr::value(QueueStatus::Dispatched),
            )
            .col_expr(a2a_queue::Column::DispatchedAt, Expr::value(store::now()))
            .col_expr(
                a2a_queue::Column::Attempts,
                sea_orm::sea_query::ExprTrait::add(Expr::col(a2a_queue::Column::Attempts), 1),
            )
            .filter(a2a_queue::Column::Id.eq(row.id.as_str()))
            .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
            .exec(&state.db)
            .await?;
        if claimed.rows_affected != 1 {
            continue; // Another drain took it.
        }
        let state = state.clone();
        tokio::spawn(async move { redeliver(&state, row).await });
    }
    Ok(())
}

/// Runs the proxy core again for one claimed row (hierarchy again, no token check).
async fn redeliver(state: &A2aState, row: a2a_queue::Model) {
    let caller = match &row.caller_id {
        Some(id) => Caller::Workspace(id.clone()),
        None => Caller::User,
    };
    let call = ProxyCall {
        target: row.workspace_id.clone(),
        body: Bytes::from(row.body.clone()),
        timeout_seconds: None,
        forward_headers: Vec::new(),
    };
    let outcome = super::proxy_once(state, caller.clone(), call).await;
    if let (Caller::Workspace(source), Ok(Outcome::Delivered { status, body, .. })) =
        (&caller, &outcome)
        && *status < 400
    {
        (state.redelivered)(Redelivered {
            source: source.clone(),
            target: row.workspace_id.clone(),
            request: row.body.clone(),
            answer: body.clone(),
        })
        .await;
    }
    let attempts = row.attempts + 1;
    let (status, last_error) = match &outcome {
        Ok(Outcome::Delivered { .. } | Outcome::Mailbox { .. } | Outcome::Queued { .. }) => {
            (QueueStatus::Completed, None)
        }
        // A busy agent is not a failed attempt: the row waits for its next spare capacity.
        Err(err @ ProxyError::Busy { .. }) => (QueueStatus::Queued, Some(err.to_string())),
        Err(err) if attempts >= MAX_ATTEMPTS => (QueueStatus::Failed, Some(err.to_string())),
        Err(err) => (QueueStatus::Queued, Some(err.to_string())),
    };
    debug!(queue_id = %row.id, ?status, "queue row redelivered");
    let mut update = a2a_queue::Entity::update_many()
        .col_expr(a2a_queue::Column::Status, Expr::value(status))
        .col_expr(a2a_queue::Column::LastError, Expr::value(last_error))
        .filter(a2a_queue::Column::Id.eq(row.id.as_str()));
    if status == QueueStatus::Completed {
        update = update.col_expr(a2a_queue::Column::CompletedAt, Expr::value(store::now()));
    }
    if let Err(err) = update.exec(&state.db).await {
        warn!(queue_id = %row.id, error = %err, "queue row not updated");
    }
    if status == QueueStatus::Queued {
        state.waiting.insert(&row.workspace_id);
    }
}

/// A queued call from one workspace to another that finally reached its agent.
pub struct Redelivered {
    pub source: String,
    pub target: String,
    /// The JSON-RPC request as it was queued.
    pub request: String,
    /// The agent's (successful) answer.
    pub answer: Bytes,
}

/// What the wiring gives the queue to tell about redeliveries (delegations complete on it);
/// the queue itself knows no feature above the proxy.
pub type RedeliveryHook =
    Arc<dyn Fn(Redelivered) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Re-reads which workspaces have waiting rows, and returns stranded `dispatched` rows to the
/// queue, until shutdown.
pub async fn sweep(state: A2aState) {
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let stranded_before = store::now()
            - chrono::Duration::from_std(STRANDED_AFTER)
                .unwrap_or_else(|_| chrono::Duration::minutes(35));
        let reaped = a2a_queue::Entity::update_many()
            .col_expr(a2a_queue::Column::Status, Expr::value(QueueStatus::Queued))
            .filter(a2a_queue::Column::Status.eq(QueueStatus::Dispatched))
            .filter(a2a_queue::Column::DispatchedAt.lt(stranded_before))
            .exec(&state.db)
            .await;
        if let Err(err) = reaped
            && !store::is_unavailable(&err)
        {
            warn!(error = %err, "queue reaper failed");
        }
        let waiting: Result<Vec<String>, DbErr> = a2a_queue::Entity::find()
            .select_only()
            .column(a2a_queue::Column::WorkspaceId)
            .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
            .distinct()
            .into_tuple()
            .all(&state.db)
            .await;
        match waiting {
            Ok(ids) => ids.iter().for_each(|id| state.waiting.insert(id)),
            Err(err) if store::is_unavailable(&err) => {}
            Err(err) => warn!(error = %err, "queue sweep failed"),
        }
    }
}

/// Marks rows queued longer than `max_age_minutes` as dropped, appending the reason to
/// `last_error` (docs/a2a.md §1.12, admin cleanup). Conditional, so a row claimed meanwhile stays.
pub async fn drop_stale(
    state: &A2aState,
    max_age_minutes: i64,
    workspace_id: Option<&str>,
) -> Result<u64, DbErr> {
    let now = store::now();
    // An age beyond chrono's range reaches back before any row: nothing is that stale.
    let Some(cutoff) =
        chrono::Duration::try_minutes(max_age_minutes).and_then(|age| now.checked_sub_signed(age))
    else {
        return Ok(0);
    };
    let mut stale = a2a_queue::Entity::find()
        .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
        .filter(a2a_queue::Column::EnqueuedAt.lt(cutoff));
    if let Some(id) = workspace_id {
        stale = stale.filter(a2a_queue::Column::WorkspaceId.eq(id));
    }
    let note = format!(
        "[DropStaleQueueItems] auto-dropped: queue item age exceeded the post-incident TTL. Dropped at {}",
        crate::events::rfc3339(now)
    );
    let mut dropped = 0;
    for row in stale.all(&state.db).await? {
        let last_error = match row.last_error.as_deref() {
            Some(previous) if !previous.is_empty() => format!("{previous}\n{note}"),
            _ => note.clone(),
        };
        let updated = a2a_queue::Entity::update_many()
            .col_expr(a2a_queue::Column::Status, Expr::value(QueueStatus::Dropped))
            .col_expr(a2a_queue::Column::LastError, Expr::value(last_error))
            .filter(a2a_queue::Column::Id.eq(row.id.as_str()))
            .filter(a2a_queue::Column::Status.eq(QueueStatus::Queued))
            .exec(&state.db)
            .await?;
        dropped += updated.rows_affected;
    }
    Ok(dropped)
}

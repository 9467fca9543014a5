//! The scheduler loop, one per replica: it sleeps until the earliest next run (at most a second,
//! so other replicas' schedules are seen), claims every due run (each by one conditional update,
//! so of all replicas exactly one fires it), fires the claimed ones in tasks of their own, and
//! records runs left unfinished by a stopped replica as failed. Each pass is a heartbeat: a
//! stalled loop fails readiness.

use std::{sync::Arc, time::Duration};

use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{Notify, Semaphore};
use tracing::warn;

use crate::{
    a2a::A2aState,
    store::{self, entities::schedule},
    supervision::SCHEDULER,
};

use super::runs;

/// The longest sleep between passes.
const PASS_EVERY: Duration = Duration::from_secs(1);
/// Due schedules claimed per query; a full batch is followed by another at once.
const BATCH: u64 = 200;
/// Runs in flight at once on this replica.
const IN_FLIGHT: usize = 256;
/// The shortest sleep between passes that found nothing to claim.
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// How often runs interrupted by a stopped replica are looked for, at most.
const RECOVER_EVERY: Duration = Duration::from_secs(15);

/// Runs until shutdown.
pub async fn run(state: A2aState, wake: Arc<Notify>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let recover_every = state
        .settings
        .runtime
        .schedule_fire_timeout
        .clamp(PASS_EVERY, RECOVER_EVERY);
    let mut recovered_at: Option<tokio::time::Instant> = None;
    loop {
        state.supervision.tick(SCHEDULER, PASS_EVERY);
        if recovered_at.is_none_or(|at| at.elapsed() >= recover_every) {
            if let Err(err) = runs::fail_interrupted(&state).await {
                warn!(error = %err, "interrupted schedule runs not checked");
            }
            recovered_at = Some(tokio::time::Instant::now());
        }
        let pause = match pass(&state, &in_flight).await {
            Ok(pause) => pause,
            Err(err) => {
                warn!(error = %err, "scheduler pass failed");
                PASS_EVERY
            }
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Claims and fires what is due; how long to sleep before the next pass.
async fn pass(state: &A2aState, in_flight: &Arc<Semaphore>) -> Result<Duration, DbErr> {
    let now = store::now();
    let due = schedule::Entity::find()
        .filter(schedule::Column::Enabled.eq(true))
        .filter(schedule::Column::NextRunAt.lte(now))
        .order_by_asc(schedule::Column::NextRunAt)
        .limit(BATCH)
        .all(&state.db)
        .await?;
    let full = due.len() as u64 == BATCH;
    for row in due {
        let Some(run) = runs::claim(state, row, now).await? else {
            continue;
        };
        let permit = in_flight.clone().acquire_owned().await;
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            runs::fire(&state, run).await;
        });
    }
    if full {
        return Ok(Duration::ZERO);
    }
    let next: Option<Option<chrono::DateTime<chrono::Utc>>> = schedule::Entity::find()
        .select_only()
        .column_as(schedule::Column::NextRunAt.min(), "next")
        .filter(schedule::Column::Enabled.eq(true))
        .into_tuple()
        .one(&state.db)
        .await?;
    let until_next = next
        .flatten()
        .map(|at| (at - store::now()).to_std().unwrap_or(Duration::ZERO));
    // A floor, so a slot that is due but not ours (another replica is claiming it) never spins.
    Ok(until_next.map_or(PASS_EVERY, |until| until.clamp(MIN_PAUSE, PASS_EVERY)))
}

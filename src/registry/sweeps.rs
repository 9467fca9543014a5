//! Going offline: liveness expirations as they are reported, and a periodic sweep as the
//! backstop, which waits a full TTL after a liveness outage so beating agents never flap.

use std::{collections::HashMap, time::Duration};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use tracing::warn;

use crate::{
    domain::WorkspaceStatus,
    liveness::BeatSnapshot,
    state::Platform,
    store::{self, entities::workspace},
};

use super::heartbeat::mark_offline;

pub(super) async fn handle_expirations(state: Platform) {
    let mut expired = state.liveness.expirations();
    loop {
        let id = tokio::select! {
            () = state.shutdown.cancelled() => return,
            id = expired.recv() => id,
        };
        let id = match id {
            Ok(id) => id,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "expiry reports dropped; the sweep will catch them");
                continue;
            }
            Err(_) => return,
        };
        // A late expiry report must not undo a beat that re-created the key.
        let alive = state.liveness.snapshots(std::slice::from_ref(&id)).await;
        if alive.is_ok_and(|alive| alive.contains_key(&id)) {
            continue;
        }
        // During a datastore outage the sweep judges this agent later; the store reports it.
        if let Err(err) = mark_offline(&state, &id).await
            && !store::is_unavailable(&err)
        {
            warn!(workspace_id = %id, error = %err, "offline transition failed");
        }
    }
}

/// The backstop for lost expiry events: online/degraded workspaces without a liveness entry go
/// offline — but only once the liveness backend and the datastore have both been healthy for a
/// whole TTL, so a restart, or a Redis or database recovery, never causes an offline storm for
/// agents that kept beating (or were refused while they could not be checked).
pub(super) async fn sweep_liveness(state: Platform) {
    let ttl = state.liveness.ttl();
    let every = (ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(15));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if state.liveness.healthy_since().elapsed() < ttl
            || state.db.healthy_since().elapsed() < ttl
        {
            continue;
        }
        if let Err(err) = sweep_once(&state).await
            && state.db.down_since().is_none()
        {
            warn!(error = %err, "liveness sweep failed");
        }
    }
}

async fn sweep_once(state: &Platform) -> Result<(), String> {
    let ids: Vec<String> = workspace::Entity::find()
        .select_only()
        .column(workspace::Column::Id)
        .filter(
            workspace::Column::Status.is_in([WorkspaceStatus::Online, WorkspaceStatus::Degraded]),
        )
        .into_tuple()
        .all(&state.db)
        .await
        .map_err(|err| err.to_string())?;
    for chunk in ids.chunks(1000) {
        let alive: HashMap<String, BeatSnapshot> = state
            .liveness
            .snapshots(chunk)
            .await
            .map_err(|err| err.to_string())?;
        for id in chunk.iter().filter(|id| !alive.contains_key(*id)) {
            mark_offline(state, id)
                .await
                .map_err(|err| err.to_string())?;
        }
    }
    Ok(())
}

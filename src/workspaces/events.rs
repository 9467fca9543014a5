//! The event log: the persisted page for a reader, and the live watch stream, filtered to
//! what the watcher may see and ended when the watcher's credential no longer stands.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::MetadataMap;

use crate::{
    auth::{AuthError, StreamCredential},
    domain::validate,
    error::{ApiError, ApiResult},
    events::{Envelope, WatcherGuard},
    pb,
    state::Platform,
    store::{DbContext, entities::structure_event},
};

use super::{WorkspacesService, error::WorkspaceError};

const EVENTS_PAGE: u64 = 100;

impl WorkspacesService {
    pub(super) async fn events(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListEventsRequest,
    ) -> ApiResult<pb::ListEventsResponse> {
        self.state.auth.admin(metadata).await?;
        let mut query = structure_event::Entity::find();
        if let Some(workspace_id) = &request.workspace_id {
            let id = validate::workspace_id(workspace_id)?;
            query = query.filter(structure_event::Column::WorkspaceId.eq(id));
        }
        let rows = query
            .order_by(structure_event::Column::CreatedAt, Order::Desc)
            .order_by(structure_event::Column::Id, Order::Desc)
            .limit(EVENTS_PAGE)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        let events = rows
            .into_iter()
            .map(|row| pb::Event {
                id: row.id,
                event: row.event_type,
                workspace_id: row.workspace_id,
                timestamp: Some(pb::timestamp(row.created_at)),
                payload_json: row.payload,
            })
            .collect();
        Ok(pb::ListEventsResponse { events })
    }

    pub(super) async fn watch(
        &self,
        metadata: &MetadataMap,
        only: &str,
    ) -> ApiResult<<Self as pb::workspaces_server::Workspaces>::WatchEventsStream> {
        // One workspace's own stream: what it sees of the events about itself.
        let only = if only.is_empty() {
            None
        } else {
            Some(self.state.auth.live_workspace(metadata, only).await?)
        };
        // An agent sees itself and the peers it may talk to; an operator sees everything.
        let agent = match crate::auth::claimed_workspace(metadata).filter(|_| only.is_none()) {
            Some(raw) => {
                let id = validate::workspace_id(raw)?;
                self.state.auth.workspace(metadata, &id).await?;
                Some(id)
            }
            None if only.is_some() => only.clone(),
            None => {
                self.state.auth.admin(metadata).await?;
                None
            }
        };
        let (events, guard) = self.state.events.watch();
        let credential = self.state.auth.stream_credential(metadata).await;
        let lapsed = CancellationToken::new();
        let done = CancellationToken::new();
        tokio::spawn(recheck(
            self.state.clone(),
            credential.clone(),
            lapsed.clone(),
            done.clone(),
        ));
        let watch = Watch {
            events,
            _guard: guard,
            agent,
            only,
            credential,
            lapsed,
            _done: done.drop_guard(),
            state: self.state.clone(),
            ended: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            watch,
            |mut watch| async move {
                let item = watch.next().await?;
                Some((item, watch))
            },
        )))
    }
}

/// Re-checks a watch's credential every `credential_recheck` until the watch ends, and cancels
/// `lapsed` when it no longer stands. Its own task: a watch relayed in-process is polled only
/// by its reader, and a datastore call pending inside that poll would hold SQLite's one
/// connection while the reader waits for it.
async fn recheck(
    state: Platform,
    credential: StreamCredential,
    lapsed: CancellationToken,
    done: CancellationToken,
) {
    let period = state.settings.credential_recheck;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if !state.auth.still_stands(&credential).await {
            lapsed.cancel();
            return;
        }
    }
}

/// One open watch: the events its watcher may see, until its credential no longer stands.
struct Watch {
    events: broadcast::Receiver<Arc<Envelope>>,
    _guard: WatcherGuard,
    /// The agent watching; `None` for an operator.
    agent: Option<String>,
    /// The one workspace whose events are wanted, if only one's.
    only: Option<String>,
    credential: StreamCredential,
    /// Cancelled by the re-check when the credential lapsed.
    lapsed: CancellationToken,
    /// Ends the re-check with the watch.
    _done: DropGuard,
    state: Platform,
    ended: bool,
}

impl Watch {
    /// The next event to send, or the error that ends the watch, or `None` once it ended.
    async fn next(&mut self) -> Option<Result<pb::Event, tonic::Status>> {
        if self.ended {
            return None;
        }
        loop {
            let received = tokio::select! {
                () = self.state.shutdown.cancelled() => return None,
                () = self.lapsed.cancelled() => {
                    return self.end(AuthError::CredentialLapsed.into());
                }
                received = self.events.recv() => received,
            };
            let envelope = match received {
                Ok(envelope) => envelope,
                Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(missed)) => {
                    crate::telemetry::events_dropped("watcher", missed);
                    tracing::warn!(missed, "event watcher too slow; disconnecting");
                    return self.end(WorkspaceError::WatcherBehind.into());
                }
            };
            if self.credential.ended_by(&envelope) {
                return self.end(AuthError::CredentialLapsed.into());
            }
            if let Some(visible) = self.as_seen(envelope).await {
                return Some(Ok(event_message(&visible)));
            }
        }
    }

    /// `envelope` as the watcher may see it, if at all.
    async fn as_seen(&self, envelope: Arc<Envelope>) -> Option<Arc<Envelope>> {
        if let Some(only) = &self.only
            && envelope.workspace_id.as_deref() != Some(only.as_str())
        {
            return None;
        }
        let Some(watcher) = &self.agent else {
            return Some(envelope);
        };
        let subject = envelope.workspace_id.as_deref()?;
        let hierarchy = &self.state.hierarchy;
        if !hierarchy.can_communicate(watcher, subject).await {
            return None;
        }
        let party = envelope.names(watcher)
            || (envelope.event.ancestors_take_part()
                && hierarchy.is_ancestor_of(watcher, subject).await);
        Some(envelope.seen_as(party))
    }

    fn end(&mut self, error: ApiError) -> Option<Result<pb::Event, tonic::Status>> {
        self.ended = true;
        Some(Err(error.into()))
    }
}

fn event_message(envelope: &Envelope) -> pb::Event {
    pb::Event {
        id: envelope.id.clone(),
        event: envelope.event.to_string(),
        workspace_id: envelope.workspace_id.clone(),
        timestamp: Some(pb::timestamp(envelope.timestamp)),
        payload_json: envelope.payload.to_string(),
    }
}

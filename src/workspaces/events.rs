//! The event log: the persisted page for a reader, and the live watch stream, filtered to
//! what the watcher may see.

use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::broadcast::error::RecvError;
use tonic::metadata::MetadataMap;

use crate::{
    domain::validate,
    error::{ApiError, ApiResult},
    events::Envelope,
    pb,
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
    ) -> ApiResult<<Self as pb::workspaces_server::Workspaces>::WatchEventsStream> {
        // An agent sees itself and the peers it may talk to; an operator sees everything.
        let agent = match crate::auth::claimed_workspace(metadata) {
            Some(raw) => {
                let id = validate::workspace_id(raw)?;
                self.state.auth.workspace(metadata, &id).await?;
                Some(id)
            }
            None => {
                self.state.auth.admin(metadata).await?;
                None
            }
        };
        let (receiver, guard) = self.state.events.watch();
        let hierarchy = self.state.hierarchy.clone();
        let shutdown = self.state.shutdown.clone();
        let stream = futures::stream::unfold(
            (receiver, hierarchy, agent, shutdown, false, guard),
            |(mut receiver, hierarchy, agent, shutdown, ended, guard)| async move {
                if ended {
                    return None;
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        received = receiver.recv() => received,
                    };
                    let envelope = match received {
                        Ok(envelope) => envelope,
                        Err(RecvError::Closed) => return None,
                        Err(RecvError::Lagged(missed)) => {
                            crate::telemetry::events_dropped("watcher", missed);
                            tracing::warn!(missed, "event watcher too slow; disconnecting");
                            let behind = ApiError::from(WorkspaceError::WatcherBehind);
                            return Some((
                                Err(behind.into()),
                                (receiver, hierarchy, agent, shutdown, true, guard),
                            ));
                        }
                    };
                    let visible = match (&agent, &envelope.workspace_id) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(caller), Some(subject)) => {
                            hierarchy.can_communicate(caller, subject).await
                        }
                    };
                    if visible {
                        let envelope = match &agent {
                            Some(watcher) => {
                                let party = envelope.names(watcher)
                                    || (envelope.event.ancestors_take_part()
                                        && hierarchy
                                            .is_ancestor_of(
                                                watcher,
                                                envelope.workspace_id.as_deref().unwrap_or(""),
                                            )
                                            .await);
                                envelope.seen_as(party)
                            }
                            None => envelope,
                        };
                        return Some((
                            Ok(event_message(&envelope)),
                            (receiver, hierarchy, agent, shutdown, false, guard),
                        ));
                    }
                }
            },
        );
        Ok(Box::pin(stream))
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

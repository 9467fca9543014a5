//! Reading workspaces: the list and one workspace with the live heartbeat overlaid, who may
//! read which, and the unauthenticated `/state` probe.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tonic::metadata::MetadataMap;

use crate::{
    auth,
    domain::{
        WorkspaceStatus,
        validate::{self},
    },
    error::ApiResult,
    pb,
    store::{
        DbContext,
        entities::{canvas_layout, workspace},
    },
};

use super::{WorkspaceView, WorkspacesService, error::WorkspaceError};

impl WorkspacesService {
    pub(super) async fn list(
        &self,
        metadata: &MetadataMap,
    ) -> ApiResult<pb::ListWorkspacesResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = workspace::Entity::find()
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .order_by_asc(workspace::Column::CreatedAt)
            .order_by_asc(workspace::Column::Id)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        let mut layouts: HashMap<String, canvas_layout::Model> = canvas_layout::Entity::find()
            .all(&self.state.db)
            .await
            .context("query failed")?
            .into_iter()
            .map(|layout| (layout.workspace_id.clone(), layout))
            .collect();
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut beats = self.live_snapshots(&ids).await;
        let workspaces = rows
            .into_iter()
            .map(|row| {
                let layout = layouts.remove(&row.id);
                let beat = beats.remove(&row.id);
                WorkspaceView { row, layout, beat }.into()
            })
            .collect();
        Ok(pb::ListWorkspacesResponse { workspaces })
    }

    pub(super) async fn get(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::Workspace> {
        let id = validate::workspace_id(raw_id)?;
        self.reader_of(metadata, &id).await?;
        let row = self
            .find(&self.state.db, &id)
            .await?
            .ok_or(WorkspaceError::NotFound)?;
        let layout = canvas_layout::Entity::find_by_id(id.clone())
            .one(&self.state.db)
            .await
            .context("query failed")?;
        let beat = self.live_snapshots(&[id]).await.into_values().next();
        Ok(WorkspaceView { row, layout, beat }.into())
    }

    /// WorkspaceAuth for reading `id`, widened by docs/decisions.md D15: a workspace's own token
    /// also reads its ancestors (the runtime reads its parent's name); any other workspace stays
    /// 401.
    pub(super) async fn reader_of(&self, metadata: &MetadataMap, id: &str) -> ApiResult<()> {
        let refused = match self.state.auth.workspace(metadata, id).await {
            Ok(_) => return Ok(()),
            Err(err) if err.is_refusal() => err,
            Err(err) => return Err(err.into()),
        };
        let Some(bearer) = auth::bearer(metadata) else {
            return Err(refused.into());
        };
        match self.state.auth.workspace_token(bearer).await? {
            Some(owner)
                if self
                    .state
                    .hierarchy
                    .is_ancestor_of(id, &owner.workspace_id)
                    .await =>
            {
                Ok(())
            }
            _ => Err(refused.into()),
        }
    }

    pub(super) async fn state_of(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::WorkspaceState> {
        let id = validate::workspace_id(raw_id)?;
        // Deliberately before auth: a deleted agent's token is revoked, and it must still learn
        // that it was deleted (the SDK exits only on 404).
        let row = self.find(&self.state.db, &id).await?;
        let Some(row) = row else {
            return Err(WorkspaceError::Deleted { id, removed: false }.into());
        };
        if row.status == WorkspaceStatus::Removed {
            return Err(WorkspaceError::Deleted { id, removed: true }.into());
        }
        self.state.auth.workspace(metadata, &id).await?;
        Ok(pb::WorkspaceState {
            workspace_id: id,
            paused: row.status == WorkspaceStatus::Paused,
            status: row.status.to_string(),
            deleted: false,
        })
    }
}

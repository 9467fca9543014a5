//! Pause, resume and restart: conditional status changes with their events; a paused parent
//! keeps its children paused.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    domain::{
        EventType, WorkspaceStatus,
        validate::{self},
    },
    error::{ApiError, ApiResult},
    pb,
    store::{self, DbContext, entities::workspace},
};

use super::{WorkspacesService, error::WorkspaceError, is_external};

impl WorkspacesService {
    pub(super) async fn pause(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::PauseWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        let db = &self.state.db;
        let target = self
            .find(db, &id)
            .await?
            .filter(|row| {
                !matches!(
                    row.status,
                    WorkspaceStatus::Removed | WorkspaceStatus::Paused
                )
            })
            .ok_or(WorkspaceError::NotPausable)?;
        let mut rows = vec![target];
        rows.extend(self.descendants(db, &id).await?);

        let txn = db.begin().await.context("failed to pause workspace")?;
        let mut recorded = Vec::new();
        for row in rows {
            let changed = workspace::Entity::update_many()
                .col_expr(
                    workspace::Column::Status,
                    Expr::value(WorkspaceStatus::Paused),
                )
                .col_expr(workspace::Column::Url, Expr::value(""))
                .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
                .filter(workspace::Column::Id.eq(row.id.clone()))
                .filter(
                    workspace::Column::Status
                        .is_not_in([WorkspaceStatus::Removed, WorkspaceStatus::Paused]),
                )
                .exec(&txn)
                .await
                .context("failed to pause workspace")?;
            if changed.rows_affected == 1 {
                recorded.push(
                    self.state
                        .events
                        .insert(
                            &txn,
                            EventType::WorkspacePaused,
                            Some(&row.id),
                            json!({"name": row.name}),
                        )
                        .await
                        .context("failed to pause workspace")?,
                );
            }
        }
        let details = json!({"paused_count": recorded.len()});
        self.audited(
            &txn,
            &principal,
            metadata,
            "workspace.pause",
            &id,
            None,
            details,
            "failed to pause workspace",
        )
        .await?;
        txn.commit().await.context("failed to pause workspace")?;
        let paused_count = recorded.len() as i32;
        let paused: Vec<String> = recorded
            .iter()
            .filter_map(|e| e.workspace_id.clone())
            .collect();
        self.state.events.publish_all(recorded);
        self.forget_liveness(&paused).await;
        Ok(pb::PauseWorkspaceResponse { paused_count })
    }

    pub(super) async fn resume(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ResumeWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        let db = &self.state.db;
        let target = self
            .find(db, &id)
            .await?
            .filter(|row| row.status == WorkspaceStatus::Paused)
            .ok_or(WorkspaceError::NotPaused)?;
        if let Some(parent) = self.paused_ancestor(&target).await? {
            return Err(paused_parent(&parent.name));
        }
        let target_status = resumed_status(&target.runtime);
        let mut rows = vec![target];
        rows.extend(self.descendants(db, &id).await?);

        let txn = db.begin().await.context("failed to resume workspace")?;
        let mut recorded = Vec::new();
        for row in rows {
            let changed = workspace::Entity::update_many()
                .col_expr(
                    workspace::Column::Status,
                    Expr::value(resumed_status(&row.runtime)),
                )
                .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
                .filter(workspace::Column::Id.eq(row.id.clone()))
                .filter(workspace::Column::Status.eq(WorkspaceStatus::Paused))
                .exec(&txn)
                .await
                .context("failed to resume workspace")?;
            if changed.rows_affected == 1 {
                let payload = json!({"name": row.name, "tier": row.tier, "runtime": row.runtime});
                recorded.push(
                    self.state
                        .events
                        .insert(
                            &txn,
                            EventType::WorkspaceProvisioning,
                            Some(&row.id),
                            payload,
                        )
                        .await
                        .context("failed to resume workspace")?,
                );
            }
        }
        let details = json!({"resumed_count": recorded.len()});
        self.audited(
            &txn,
            &principal,
            metadata,
            "workspace.resume",
            &id,
            None,
            details,
            "failed to resume workspace",
        )
        .await?;
        txn.commit().await.context("failed to resume workspace")?;
        let resumed_count = recorded.len() as i32;
        self.state.events.publish_all(recorded);
        Ok(pb::ResumeWorkspaceResponse {
            status: target_status.to_string(),
            resumed_count,
        })
    }

    pub(super) async fn restart(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::RestartWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        let db = &self.state.db;
        let row = store::live_workspace(db, &id).await?;
        if let Some(parent) = self.paused_ancestor(&row).await? {
            return Err(paused_parent(&parent.name));
        }
        if is_external(&row.runtime) {
            return Err(WorkspaceError::ExternalRestart.into());
        }
        let txn = db.begin().await.context("failed to restart workspace")?;
        let changed = workspace::Entity::update_many()
            .col_expr(
                workspace::Column::Status,
                Expr::value(WorkspaceStatus::Provisioning),
            )
            .col_expr(workspace::Column::Url, Expr::value(""))
            .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.eq(id.clone()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .exec(&txn)
            .await
            .context("failed to restart workspace")?;
        if changed.rows_affected == 0 {
            return Err(WorkspaceError::NotFound.into());
        }
        let payload = json!({"name": row.name, "tier": row.tier, "runtime": row.runtime});
        let event = self
            .state
            .events
            .insert(&txn, EventType::WorkspaceProvisioning, Some(&id), payload)
            .await
            .context("failed to restart workspace")?;
        self.audited(
            &txn,
            &principal,
            metadata,
            "workspace.restart",
            &id,
            None,
            json!({}),
            "failed to restart workspace",
        )
        .await?;
        txn.commit().await.context("failed to restart workspace")?;
        self.state.events.publish_all([event]);
        Ok(pb::RestartWorkspaceResponse {
            status: WorkspaceStatus::Provisioning.to_string(),
        })
    }
}

fn resumed_status(runtime: &str) -> WorkspaceStatus {
    if is_external(runtime) {
        WorkspaceStatus::AwaitingAgent
    } else {
        WorkspaceStatus::Provisioning
    }
}

fn paused_parent(name: &str) -> ApiError {
    WorkspaceError::ParentPaused {
        name: name.to_owned(),
    }
    .into()
}

//! Deleting a workspace and its descendants: rows become `removed` (or are purged), tokens
//! die, liveness is forgotten, one `WORKSPACE_REMOVED` per workspace.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    domain::{
        EventType, WorkspaceStatus,
        validate::{self},
    },
    error::ApiResult,
    pb,
    store::{
        self, DbContext,
        entities::{canvas_layout, workspace, workspace_token},
    },
};

use super::{WorkspacesService, error::WorkspaceError};

impl WorkspacesService {
    pub(super) async fn delete(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteWorkspaceRequest,
    ) -> ApiResult<pb::DeleteWorkspaceResponse> {
        let id = validate::workspace_id(&request.id)?;
        let principal = self.state.auth.admin(metadata).await?;
        let db = &self.state.db;
        let root = self.find(db, &id).await?.ok_or(WorkspaceError::NotFound)?;
        let descendants = self.descendants(db, &id).await?;
        if root.status == WorkspaceStatus::Removed && !request.purge {
            return Ok(pb::DeleteWorkspaceResponse {
                status: WorkspaceStatus::Removed.to_string(),
                cascade_deleted: 0,
            });
        }
        let live_children: Vec<_> = descendants
            .iter()
            .filter(|row| {
                row.parent_id.as_deref() == Some(id.as_str())
                    && row.status != WorkspaceStatus::Removed
            })
            .collect();
        if !live_children.is_empty() && !request.confirm {
            let children: Vec<_> = live_children
                .iter()
                .map(|child| json!({"id": child.id, "name": child.name}))
                .collect();
            return Err(WorkspaceError::ConfirmationRequired { children }.into());
        }
        let live_descendants: Vec<_> = descendants
            .iter()
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .collect();
        let cascade_deleted = live_descendants.len() as i32;
        let targets: Vec<String> = std::iter::once(id.clone())
            .chain(live_descendants.iter().map(|row| row.id.clone()))
            .collect();

        let txn = db.begin().await.context("failed to delete workspace")?;
        let now = store::now();
        let mut recorded = Vec::new();
        for target in &targets {
            // Status first, so a late heartbeat or register cannot resurrect the row.
            let changed = workspace::Entity::update_many()
                .col_expr(
                    workspace::Column::Status,
                    Expr::value(WorkspaceStatus::Removed),
                )
                .col_expr(workspace::Column::Url, Expr::value(""))
                .col_expr(workspace::Column::UpdatedAt, Expr::value(now))
                .filter(workspace::Column::Id.eq(target.clone()))
                .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
                .exec(&txn)
                .await
                .context("failed to delete workspace")?;
            if changed.rows_affected == 1 {
                let payload = if *target == id {
                    json!({"cascade_deleted": cascade_deleted})
                } else {
                    json!({})
                };
                recorded.push(
                    self.state
                        .events
                        .insert(&txn, EventType::WorkspaceRemoved, Some(target), payload)
                        .await
                        .context("failed to delete workspace")?,
                );
            }
        }
        canvas_layout::Entity::delete_many()
            .filter(canvas_layout::Column::WorkspaceId.is_in(targets.clone()))
            .exec(&txn)
            .await
            .context("failed to delete workspace")?;
        workspace_token::Entity::update_many()
            .col_expr(workspace_token::Column::RevokedAt, Expr::value(now))
            .filter(workspace_token::Column::WorkspaceId.is_in(targets.clone()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await
            .context("failed to delete workspace")?;
        let details = json!({"cascade_deleted": cascade_deleted, "purge": request.purge});
        self.audited(
            &txn,
            &principal,
            metadata,
            "workspace.delete",
            &id,
            None,
            details,
            "failed to delete workspace",
        )
        .await?;
        txn.commit().await.context("failed to delete workspace")?;
        self.state.events.publish_all(recorded);
        self.forget_liveness(&targets).await;

        if request.purge {
            let every: Vec<String> = std::iter::once(id.clone())
                .chain(descendants.iter().map(|row| row.id.clone()))
                .collect();
            workspace::Entity::delete_many()
                .filter(workspace::Column::Id.is_in(every))
                .exec(db)
                .await
                .context("purge failed")?;
            self.state.hierarchy.invalidate().await;
            return Ok(pb::DeleteWorkspaceResponse {
                status: "purged".to_owned(),
                cascade_deleted: descendants.len() as i32,
            });
        }
        Ok(pb::DeleteWorkspaceResponse {
            status: WorkspaceStatus::Removed.to_string(),
            cascade_deleted,
        })
    }
}

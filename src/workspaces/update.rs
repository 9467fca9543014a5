//! Changing a workspace's fields: who may change what, the same input rules as create, and
//! one `WORKSPACE_UPDATED` per change.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr,
};
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
        entities::{canvas_layout, workspace},
    },
};

use super::{WorkspacesService, error::WorkspaceError};

impl WorkspacesService {
    pub(super) async fn update(
        &self,
        metadata: &MetadataMap,
        request: pb::UpdateWorkspaceRequest,
    ) -> ApiResult<pb::UpdateWorkspaceResponse> {
        let id = validate::workspace_id(&request.id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        if !principal.is_admin_level() {
            let sensitive = [
                ("tier", request.tier.is_some()),
                ("parent_id", request.parent_id.is_some()),
                ("runtime", request.runtime.is_some()),
                ("workspace_dir", request.workspace_dir.is_some()),
            ];
            if let Some((field, _)) = sensitive.iter().find(|(_, present)| *present) {
                return Err(WorkspaceError::OperatorField(field).into());
            }
        }
        if let Some(name) = &request.name {
            if name.is_empty() {
                return Err(WorkspaceError::InvalidField("name").into());
            }
            validate::patch_text_field("name", name)?;
        }
        if let Some(role) = request.role.as_ref().and_then(|role| role.value.as_ref()) {
            validate::patch_text_field("role", role)?;
        }
        if let Some(runtime) = &request.runtime {
            if runtime.is_empty() {
                return Err(WorkspaceError::InvalidField("runtime").into());
            }
            validate::patch_text_field("runtime", runtime)?;
        }
        if let Some(tier) = request.tier
            && !(1..=4).contains(&tier)
        {
            return Err(WorkspaceError::InvalidTier.into());
        }
        if let Some(dir) = request
            .workspace_dir
            .as_ref()
            .and_then(|dir| dir.value.as_ref())
            && !validate::workspace_dir(dir)
        {
            return Err(WorkspaceError::InvalidDirectory.into());
        }
        for (field, value) in [("x", request.x), ("y", request.y)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(WorkspaceError::InvalidField(field).into());
            }
        }
        store::live_workspace(&self.state.db, &id).await?;
        let parent_id = match request
            .parent_id
            .as_ref()
            .map(|parent| parent.value.as_deref())
        {
            Some(Some(parent)) => Some(Some(self.check_parent(parent, Some(&id)).await?)),
            Some(None) => Some(None),
            None => None,
        };

        let changed_fields: Vec<&str> = [
            ("name", request.name.is_some()),
            ("role", request.role.is_some()),
            ("tier", request.tier.is_some()),
            ("parent_id", request.parent_id.is_some()),
            ("runtime", request.runtime.is_some()),
            ("workspace_dir", request.workspace_dir.is_some()),
            ("collapsed", request.collapsed.is_some()),
            ("position", request.x.is_some() && request.y.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, present)| present.then_some(field))
        .collect();
        let mut update = workspace::Entity::update_many()
            .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.eq(id.clone()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed));
        if let Some(name) = request.name {
            update = update.col_expr(workspace::Column::Name, Expr::value(name));
        }
        if let Some(role) = request.role {
            update = update.col_expr(
                workspace::Column::Role,
                Expr::value(role.value.filter(|role| !role.is_empty())),
            );
        }
        if let Some(tier) = request.tier {
            update = update.col_expr(workspace::Column::Tier, Expr::value(tier));
        }
        if let Some(parent_id) = &parent_id {
            update = update.col_expr(workspace::Column::ParentId, Expr::value(parent_id.clone()));
        }
        if let Some(runtime) = request.runtime {
            update = update.col_expr(workspace::Column::Runtime, Expr::value(runtime));
        }
        let needs_restart = request.workspace_dir.is_some();
        if let Some(dir) = request.workspace_dir {
            update = update.col_expr(
                workspace::Column::WorkspaceDir,
                Expr::value(dir.value.filter(|dir| !dir.is_empty())),
            );
        }

        let txn = self
            .state
            .db
            .begin()
            .await
            .context("failed to update workspace")?;
        let changed = update
            .exec(&txn)
            .await
            .context("failed to update workspace")?;
        if changed.rows_affected == 0 {
            return Err(WorkspaceError::NotFound.into());
        }
        let position = request.x.zip(request.y);
        if position.is_some() || request.collapsed.is_some() {
            let existing = canvas_layout::Entity::find_by_id(id.clone())
                .one(&txn)
                .await
                .context("failed to update workspace")?;
            let (x, y) =
                position.unwrap_or_else(|| existing.as_ref().map_or((0.0, 0.0), |l| (l.x, l.y)));
            let collapsed = request
                .collapsed
                .unwrap_or_else(|| existing.as_ref().is_some_and(|l| l.collapsed));
            let layout = canvas_layout::ActiveModel {
                workspace_id: Set(id.clone()),
                x: Set(x),
                y: Set(y),
                collapsed: Set(collapsed),
            };
            let saved = if existing.is_some() {
                canvas_layout::Entity::update(layout)
                    .exec(&txn)
                    .await
                    .map(drop)
            } else {
                canvas_layout::Entity::insert(layout)
                    .exec(&txn)
                    .await
                    .map(drop)
            };
            saved.context("failed to update workspace")?;
        }
        let event = self
            .state
            .events
            .insert(
                &txn,
                EventType::WorkspaceUpdated,
                Some(&id),
                json!({"fields": changed_fields}),
            )
            .await
            .context("failed to update workspace")?;
        // Moving or folding a node on the canvas is layout, not a change worth a trail row.
        let audited: Vec<&str> = changed_fields
            .iter()
            .copied()
            .filter(|field| !matches!(*field, "collapsed" | "position"))
            .collect();
        if !audited.is_empty() {
            let details = json!({"fields": audited});
            self.audited(
                &txn,
                &principal,
                metadata,
                "workspace.update",
                &id,
                None,
                details,
                "failed to update workspace",
            )
            .await?;
        }
        txn.commit().await.context("failed to update workspace")?;
        self.state.events.publish_all([event]);
        if parent_id.is_some() {
            self.state.hierarchy.invalidate().await;
        }
        Ok(pb::UpdateWorkspaceResponse { needs_restart })
    }
}

//! A workspace's plugins (docs/operations.md §6): what its agent recorded installing, what it
//! may install, which installed plugins a runtime supports, and forgetting an install. The
//! platform keeps records; the files live on the agent's side.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    audit::Action,
    error::{ApiError, ApiResult, ErrorCode},
    pb,
    store::{DbContext, entities::workspace_plugin},
};

use super::{PluginError, PluginsService, allowlist, source, supports};

/// The runtime of agents that run elsewhere: the platform does not know what they run.
const EXTERNAL: &str = "external";

#[derive(Debug, Clone, PartialEq, Eq)]
enum InstalledError {
    RuntimeRequired,
    NotInstalled,
}

impl From<InstalledError> for ApiError {
    fn from(err: InstalledError) -> Self {
        match err {
            InstalledError::RuntimeRequired => {
                ApiError::bad_request("runtime query parameter is required")
            }
            InstalledError::NotInstalled => {
                ApiError::new(ErrorCode::NotFound, "plugin not installed")
            }
        }
    }
}

impl PluginsService {
    /// The install records of `raw_id`, by name, each with its catalogue manifest (when the
    /// plugin is still in the catalogue) and the version recorded.
    async fn installed(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<(String, String, Vec<pb::InstalledPlugin>)> {
        let row = self.state.auth.live_workspace_row(metadata, raw_id).await?;
        let id = row.id.clone();
        let records = workspace_plugin::Entity::find()
            .filter(workspace_plugin::Column::WorkspaceId.eq(id.clone()))
            .order_by_asc(workspace_plugin::Column::Plugin)
            .all(&self.state.db)
            .await
            .context("failed to list installed plugins")?;
        let catalogue = self.catalogue().await;
        let plugins = records
            .into_iter()
            .map(|record| {
                let mut info = catalogue
                    .iter()
                    .find(|info| info.name == record.plugin)
                    .cloned()
                    .unwrap_or_else(|| pb::PluginInfo {
                        name: record.plugin.clone(),
                        ..Default::default()
                    });
                info.version = record.version.unwrap_or_default();
                pb::InstalledPlugin {
                    supported_on_runtime: (row.runtime != EXTERNAL)
                        .then(|| supports(&info, &row.runtime)),
                    info: Some(info),
                    source: record.source,
                    installed_at: Some(pb::timestamp(record.installed_at)),
                }
            })
            .collect();
        Ok((id, row.runtime, plugins))
    }

    pub(super) async fn list_installed(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::InstalledPlugins> {
        let (_, _, plugins) = self.installed(metadata, raw_id).await?;
        Ok(pb::InstalledPlugins { plugins })
    }

    /// The catalogue filtered to the workspace's runtime (any, for an external agent) and to
    /// what its org allows.
    pub(super) async fn list_available(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ListPluginsResponse> {
        let row = self.state.auth.live_workspace_row(metadata, raw_id).await?;
        let id = row.id.clone();
        let runtime = if row.runtime == EXTERNAL {
            ""
        } else {
            &row.runtime
        };
        let mut plugins = Vec::new();
        for info in self.list(runtime).await.plugins {
            if allowlist::allows(&self.state, &id, &info.name)
                .await
                .context("failed to read the plugin allowlist")?
            {
                plugins.push(info);
            }
        }
        Ok(pb::ListPluginsResponse { plugins })
    }

    pub(super) async fn check_compatibility(
        &self,
        metadata: &MetadataMap,
        request: &pb::CompatibilityRequest,
    ) -> ApiResult<pb::CompatibilityReport> {
        let (_, _, plugins) = self.installed(metadata, &request.workspace_id).await?;
        let target = request.runtime.trim();
        if target.is_empty() {
            return Err(InstalledError::RuntimeRequired.into());
        }
        let (compatible, incompatible): (Vec<_>, Vec<_>) = plugins
            .into_iter()
            .filter_map(|plugin| plugin.info)
            .partition(|info| supports(info, target));
        Ok(pb::CompatibilityReport {
            target_runtime: target.to_owned(),
            all_compatible: incompatible.is_empty(),
            compatible,
            incompatible,
        })
    }

    pub(super) async fn uninstall(
        &self,
        metadata: &MetadataMap,
        request: &pb::UninstallRequest,
    ) -> ApiResult<pb::UninstallResponse> {
        let (id, principal) = self
            .state
            .auth
            .live_workspace_as(metadata, &request.workspace_id)
            .await?;
        let name = request.name.as_str();
        if name.chars().count() > 128 || !source::valid_requested_name(name) {
            return Err(PluginError::InvalidName.into());
        }
        const FAILED: &str = "failed to remove plugin";
        let txn = self.state.db.begin().await.context(FAILED)?;
        let removed = workspace_plugin::Entity::delete_by_id((id.clone(), name.to_owned()))
            .exec(&txn)
            .await
            .context(FAILED)?;
        if removed.rows_affected == 0 {
            return Err(InstalledError::NotInstalled.into());
        }
        let action = Action {
            operation: "plugin.uninstall",
            workspace_id: Some(&id),
            target: Some(name.to_owned()),
            details: json!({}),
        };
        self.state
            .audit
            .append(&txn, &principal, metadata, action)
            .await
            .context(FAILED)?;
        txn.commit().await.context(FAILED)?;
        Ok(pb::UninstallResponse {
            plugin: name.to_owned(),
        })
    }
}

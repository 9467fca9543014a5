//! Each org's plugin allowlist (docs/operations.md §6). An org is a root workspace; its list
//! covers every workspace in its tree. An org that never set one gets the deployment's
//! default, `MOLECULE_PLUGIN_ALLOWLIST`; an empty list allows every plugin. It decides and
//! stores; downloads and installs ask it.

use std::collections::BTreeSet;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    TransactionTrait, sea_query::OnConflict,
};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    audit::Action,
    domain::{WorkspaceStatus, validate},
    error::{ApiError, ApiResult, ErrorCode},
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{org_plugin_allowed, org_plugin_policy, workspace},
    },
};

use super::{PluginsService, source};

/// Names one list may hold.
const MAX_PLUGINS: usize = 1_000;
/// What the default's entries name as their author.
const DEFAULT_AUTHOR: &str = "MOLECULE_PLUGIN_ALLOWLIST";

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowlistError {
    OrgNotFound,
    InvalidName(String),
    TooMany,
}

impl From<AllowlistError> for ApiError {
    fn from(err: AllowlistError) -> Self {
        match err {
            AllowlistError::OrgNotFound => ApiError::new(ErrorCode::NotFound, "org not found"),
            AllowlistError::InvalidName(name) => ApiError::bad_request("invalid plugin name")
                .with_fields(json!({"plugin_name": name})),
            AllowlistError::TooMany => ApiError::bad_request("too many plugins (at most 1000)"),
        }
    }
}

/// Whether the deployment's default list allows `name`.
pub fn default_allows(state: &Platform, name: &str) -> bool {
    let default = &state.settings.plugins.allowlist;
    default.is_empty() || default.iter().any(|allowed| allowed == name)
}

/// Whether `workspace`'s org allows `name`.
pub async fn allows(state: &Platform, workspace: &str, name: &str) -> Result<bool, DbErr> {
    let org = state.hierarchy.root_of(workspace).await?;
    if org_plugin_policy::Entity::find_by_id(org.clone())
        .one(&state.db)
        .await?
        .is_none()
    {
        return Ok(default_allows(state, name));
    }
    let listed = org_plugin_allowed::Entity::find()
        .filter(org_plugin_allowed::Column::OrgId.eq(org.clone()))
        .count(&state.db)
        .await?;
    if listed == 0 {
        return Ok(true);
    }
    Ok(
        org_plugin_allowed::Entity::find_by_id((org, name.to_owned()))
            .one(&state.db)
            .await?
            .is_some(),
    )
}

impl PluginsService {
    pub(super) async fn get_allowlist(
        &self,
        metadata: &MetadataMap,
        request: &pb::AllowlistRequest,
    ) -> ApiResult<pb::Allowlist> {
        self.state.auth.admin(metadata).await?;
        let org = self.org(&request.org_id).await?;
        self.allowlist(&self.state.db, &org).await
    }

    pub(super) async fn put_allowlist(
        &self,
        metadata: &MetadataMap,
        request: &pb::PutAllowlistRequest,
    ) -> ApiResult<pb::Allowlist> {
        let operator = self.state.auth.admin(metadata).await?;
        if let Some(bad) = request
            .plugins
            .iter()
            .find(|name| name.chars().count() > 128 || !source::valid_requested_name(name))
        {
            return Err(AllowlistError::InvalidName(bad.clone()).into());
        }
        let names: BTreeSet<&String> = request.plugins.iter().collect();
        if names.len() > MAX_PLUGINS {
            return Err(AllowlistError::TooMany.into());
        }
        let org = self.org(&request.org_id).await?;
        const FAILED: &str = "failed to update allowlist";
        let (by, now) = (operator.audit_name(), store::now());
        let txn = self.state.db.begin().await.context(FAILED)?;
        org_plugin_policy::Entity::insert(org_plugin_policy::ActiveModel {
            org_id: Set(org.clone()),
            updated_by: Set(by.clone()),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(org_plugin_policy::Column::OrgId)
                .update_columns([
                    org_plugin_policy::Column::UpdatedBy,
                    org_plugin_policy::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .context(FAILED)?;
        org_plugin_allowed::Entity::delete_many()
            .filter(org_plugin_allowed::Column::OrgId.eq(org.clone()))
            .exec(&txn)
            .await
            .context(FAILED)?;
        if !names.is_empty() {
            org_plugin_allowed::Entity::insert_many(names.iter().map(|name| {
                org_plugin_allowed::ActiveModel {
                    org_id: Set(org.clone()),
                    plugin_name: Set((*name).clone()),
                    enabled_by: Set(by.clone()),
                    enabled_at: Set(now),
                }
            }))
            .exec_without_returning(&txn)
            .await
            .context(FAILED)?;
        }
        let action = Action {
            operation: "plugins.allowlist",
            workspace_id: Some(&org),
            target: None,
            details: json!({"plugins": names}),
        };
        self.state
            .audit
            .append(&txn, &operator, metadata, action)
            .await
            .context(FAILED)?;
        let allowlist = self.allowlist(&txn, &org).await?;
        txn.commit().await.context(FAILED)?;
        Ok(allowlist)
    }

    /// `raw`, when it names a live root workspace.
    async fn org(&self, raw: &str) -> ApiResult<String> {
        let id = validate::parse_uuid(raw).ok_or(AllowlistError::OrgNotFound)?;
        let row = workspace::Entity::find_by_id(id.clone())
            .one(&self.state.db)
            .await
            .context("failed to verify org")?;
        match row {
            Some(row) if row.status != WorkspaceStatus::Removed && row.parent_id.is_none() => {
                Ok(id)
            }
            _ => Err(AllowlistError::OrgNotFound.into()),
        }
    }

    async fn allowlist(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        org: &str,
    ) -> ApiResult<pb::Allowlist> {
        const FAILED: &str = "failed to fetch allowlist";
        let own = org_plugin_policy::Entity::find_by_id(org.to_owned())
            .one(db)
            .await
            .context(FAILED)?;
        let plugins: Vec<pb::AllowedPlugin> = match own {
            Some(_) => org_plugin_allowed::Entity::find()
                .filter(org_plugin_allowed::Column::OrgId.eq(org))
                .order_by_asc(org_plugin_allowed::Column::PluginName)
                .all(db)
                .await
                .context(FAILED)?
                .into_iter()
                .map(|row| pb::AllowedPlugin {
                    plugin_name: row.plugin_name,
                    enabled_by: row.enabled_by,
                    enabled_at: Some(pb::timestamp(row.enabled_at)),
                })
                .collect(),
            None => self
                .state
                .settings
                .plugins
                .allowlist
                .iter()
                .map(|name| pb::AllowedPlugin {
                    plugin_name: name.clone(),
                    enabled_by: DEFAULT_AUTHOR.to_owned(),
                    enabled_at: None,
                })
                .collect(),
        };
        Ok(pb::Allowlist {
            org_id: org.to_owned(),
            allow_all: plugins.is_empty(),
            plugins,
            source: if own.is_some() { "org" } else { "default" }.to_owned(),
        })
    }
}

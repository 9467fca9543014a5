//! A workspace's `config.yaml`, kept platform-side (docs/operations.md O4): read, replaced as a
//! YAML document, or merged with a JSON object at its top level (the reference's PATCH). Every
//! change raises the version and records `CONFIG_CHANGED`, which reaches a streaming agent as a
//! control frame. It validates YAML; it does not know what a runtime reads from it.

use sea_orm::{
    ActiveValue::Set, EntityTrait, QuerySelect, TransactionTrait, sea_query::OnConflict,
};
use serde_json::{Map, Value, json};
use tonic::metadata::MetadataMap;

use crate::{
    domain::{EventType, validate},
    error::{ApiError, ApiResult, ErrorCode},
    pb,
    store::{
        self, DbContext,
        entities::{workspace, workspace_config},
    },
};

use super::WorkspacesService;

/// The largest document kept (the reference's PATCH cap).
const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Every way a config call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConfigError {
    /// The YAML does not parse, or its top level is not a mapping.
    InvalidYaml(String),
    /// The merge body is not a JSON object.
    InvalidJson,
    TooLarge,
    NoChange,
}

impl From<ConfigError> for ApiError {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::InvalidYaml(why) => ApiError::bad_request(why),
            ConfigError::InvalidJson => ApiError::bad_request("invalid JSON"),
            ConfigError::TooLarge => {
                ApiError::new(ErrorCode::PayloadTooLarge, "body too large or unreadable")
            }
            ConfigError::NoChange => ApiError::bad_request("invalid request body"),
        }
    }
}

/// A document's top-level mapping; an empty document is an empty mapping.
fn mapping(yaml: &str) -> Result<Map<String, Value>, ConfigError> {
    if yaml.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_yaml_ng::from_str::<Value>(yaml) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ConfigError::InvalidYaml(
            "invalid YAML: the document must be a mapping".to_owned(),
        )),
        Err(err) => Err(ConfigError::InvalidYaml(match err.location() {
            Some(at) => format!("invalid YAML at line {}: {err}", at.line()),
            None => format!("invalid YAML: {err}"),
        })),
    }
}

impl WorkspacesService {
    pub(super) async fn get_config(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::WorkspaceConfig> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let row = workspace_config::Entity::find_by_id(id.clone())
            .one(&self.state.db)
            .await
            .context("query failed")?;
        Ok(config_message(&id, row))
    }

    pub(super) async fn update_config(
        &self,
        metadata: &MetadataMap,
        request: &pb::UpdateConfigRequest,
    ) -> ApiResult<pb::WorkspaceConfig> {
        let id = validate::workspace_id(&request.workspace_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        store::live_workspace(&self.state.db, &id).await?;
        let change = request.change.as_ref().ok_or(ConfigError::NoChange)?;
        let size = match change {
            pb::update_config_request::Change::Yaml(text)
            | pb::update_config_request::Change::MergeJson(text) => text.len(),
        };
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge.into());
        }
        const FAILED: &str = "failed to update config";
        let db = &self.state.db;
        let txn = db.begin().await.context(FAILED)?;
        // One writer at a time per workspace: a merge reads the document it changes.
        workspace::Entity::find_by_id(id.clone())
            .select_only()
            .column(workspace::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .one(&txn)
            .await
            .context(FAILED)?;
        let current = workspace_config::Entity::find_by_id(id.clone())
            .one(&txn)
            .await
            .context(FAILED)?;
        let content = match change {
            pb::update_config_request::Change::Yaml(yaml) => {
                mapping(yaml)?;
                yaml.clone()
            }
            pb::update_config_request::Change::MergeJson(patch) => {
                let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(patch) else {
                    return Err(ConfigError::InvalidJson.into());
                };
                let stored = current.as_ref().map_or("", |row| row.content.as_str());
                // A stored document always parsed when it was written.
                let mut merged = mapping(stored).unwrap_or_default();
                merged.extend(patch);
                serde_yaml_ng::to_string(&Value::Object(merged))
                    .map_err(|_| ConfigError::InvalidJson)?
            }
        };
        if content.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge.into());
        }
        let version = current.as_ref().map_or(0, |row| row.version) + 1;
        let row = workspace_config::ActiveModel {
            workspace_id: Set(id.clone()),
            content: Set(content),
            version: Set(version),
            updated_at: Set(store::now()),
            updated_by: Set(Some(principal.audit_name())),
        };
        workspace_config::Entity::insert(row)
            .on_conflict(
                OnConflict::column(workspace_config::Column::WorkspaceId)
                    .update_columns([
                        workspace_config::Column::Content,
                        workspace_config::Column::Version,
                        workspace_config::Column::UpdatedAt,
                        workspace_config::Column::UpdatedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .context(FAILED)?;
        let event = self
            .state
            .events
            .insert(
                &txn,
                EventType::ConfigChanged,
                Some(&id),
                json!({"version": version}),
            )
            .await
            .context(FAILED)?;
        self.audited(
            &txn,
            &principal,
            metadata,
            "config.update",
            &id,
            None,
            json!({"version": version}),
            FAILED,
        )
        .await?;
        let written = workspace_config::Entity::find_by_id(id.clone())
            .one(&txn)
            .await
            .context(FAILED)?;
        txn.commit().await.context(FAILED)?;
        self.state.events.publish_all([event]);
        Ok(config_message(&id, written))
    }
}

fn config_message(workspace_id: &str, row: Option<workspace_config::Model>) -> pb::WorkspaceConfig {
    let Some(row) = row else {
        return pb::WorkspaceConfig {
            workspace_id: workspace_id.to_owned(),
            data_json: "{}".to_owned(),
            ..Default::default()
        };
    };
    let data = mapping(&row.content).unwrap_or_default();
    pb::WorkspaceConfig {
        workspace_id: row.workspace_id,
        data_json: Value::Object(data).to_string(),
        content: row.content,
        version: row.version,
        updated_at: Some(pb::timestamp(row.updated_at)),
        updated_by: row.updated_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_must_be_a_mapping_and_errors_name_the_line() {
        assert_eq!(mapping("").unwrap(), Map::new());
        assert_eq!(
            mapping("model: opus\ntools:\n  - git\n").unwrap()["tools"],
            json!(["git"])
        );
        let Err(ConfigError::InvalidYaml(why)) = mapping("model: opus\nbroken: [unclosed\n") else {
            panic!("refused");
        };
        assert!(why.starts_with("invalid YAML at line "), "{why}");
        assert!(matches!(
            mapping("- a list"),
            Err(ConfigError::InvalidYaml(_))
        ));
    }
}

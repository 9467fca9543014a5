//! The Bundles gRPC service (docs/workspaces.md §6): a workspace tree exported as a portable
//! document and imported as a fresh copy with new ids. Config files travel through
//! `workspace_files` (`system-prompt.md`, `config.yaml`, `skills/<id>/<path>`). A bundle never
//! carries secrets, tokens, canvas positions, memories or the runtime column.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    audit::Action,
    domain::{EventType, WorkspaceStatus, validate},
    error::{ApiError, ApiResult, RpcResult, reply},
    events::Envelope,
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{canvas_layout, workspace, workspace_file},
    },
};

const BUNDLE_NOT_FOUND: &str = "bundle not found";

/// Every way a bundle call is refused, each naming its code and documented words once
/// (docs/workspaces.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BundleError {
    NotFound,
    Invalid,
    InvalidPayload,
    InvalidFields,
    InvalidTier,
    InvalidSkillPath,
}

impl From<BundleError> for ApiError {
    fn from(err: BundleError) -> Self {
        match err {
            BundleError::NotFound => ApiError::not_found(BUNDLE_NOT_FOUND),
            BundleError::Invalid => ApiError::bad_request("invalid bundle"),
            BundleError::InvalidPayload => ApiError::bad_request("invalid workspace payload"),
            BundleError::InvalidFields => ApiError::bad_request("invalid workspace fields"),
            BundleError::InvalidTier => ApiError::bad_request("invalid tier"),
            BundleError::InvalidSkillPath => ApiError::bad_request("invalid skill path"),
        }
    }
}
const SYSTEM_PROMPT: &str = "system-prompt.md";
const CONFIG: &str = "config.yaml";
/// Deeper trees are refused on import and cut on export (parents are checked acyclic, so
/// this only bounds work).
const MAX_DEPTH: usize = 32;

/// A bundle as imported. Unknown keys are ignored; missing ones are empty.
#[derive(Debug, Deserialize)]
struct Bundle {
    #[serde(default)]
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tier: i32,
    #[serde(default)]
    system_prompt: String,
    #[serde(default)]
    skills: Vec<Skill>,
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    sub_workspaces: Vec<Bundle>,
    #[serde(default)]
    agent_card: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Skill {
    id: String,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

pub struct BundlesService {
    state: Platform,
}

impl BundlesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::bundles_server::Bundles for BundlesService {
    async fn export(
        &self,
        request: Request<pb::ExportBundleRequest>,
    ) -> RpcResult<pb::BundleDocument> {
        let bundle = self
            .export(request.metadata(), &request.get_ref().workspace_id)
            .await;
        reply(bundle.map(|bundle| pb::BundleDocument {
            bundle_json: bundle.to_string(),
        }))
    }

    async fn import(
        &self,
        request: Request<pb::BundleDocument>,
    ) -> RpcResult<pb::ImportBundleResponse> {
        let result = self
            .import(request.metadata(), &request.get_ref().bundle_json)
            .await;
        reply(result.map(|result| pb::ImportBundleResponse {
            result_json: result.to_string(),
        }))
    }
}

/// A skill id or file path inside a skill: relative, no `..`, no `\`, nothing empty.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The value of a top-level `key: value` line of a config.yaml.
fn config_line<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then_some(value)
    })
}

/// The first line of a SKILL.md body: after any front matter, skipping blanks and headings.
fn skill_description(skill_md: &str) -> String {
    let mut lines = skill_md.lines().peekable();
    if lines.peek().map(|line| line.trim()) == Some("---") {
        lines.next();
        for line in lines.by_ref() {
            if line.trim() == "---" {
                break;
            }
        }
    }
    lines
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_default()
        .to_owned()
}

impl BundlesService {
    async fn export(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<Value> {
        self.state.auth.admin(metadata).await?;
        let not_found = || ApiError::from(BundleError::NotFound);
        let id = validate::parse_uuid(raw_id).ok_or_else(not_found)?;
        let root = workspace::Entity::find_by_id(id)
            .one(&self.state.db)
            .await
            .context(BUNDLE_NOT_FOUND)?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or_else(not_found)?;
        self.export_tree(root, 0).await.context(BUNDLE_NOT_FOUND)
    }

    /// One workspace and its non-removed children, recursively.
    async fn export_tree(&self, row: workspace::Model, depth: usize) -> Result<Value, DbErr> {
        let db = &self.state.db;
        let files: BTreeMap<String, String> = if row.runtime == "external" {
            BTreeMap::new()
        } else {
            workspace_file::Entity::find()
                .filter(workspace_file::Column::WorkspaceId.eq(&row.id))
                .all(db)
                .await?
                .into_iter()
                .map(|file| (file.path, file.content))
                .collect()
        };
        let mut skills: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        for (path, content) in &files {
            if let Some((id, file)) = path
                .strip_prefix("skills/")
                .and_then(|rest| rest.split_once('/'))
            {
                skills
                    .entry(id)
                    .or_default()
                    .insert(file.to_owned(), Value::String(content.clone()));
            }
        }
        let skills: Vec<Value> = skills
            .into_iter()
            .map(|(id, files)| {
                let description = files
                    .get("SKILL.md")
                    .and_then(Value::as_str)
                    .map(skill_description)
                    .unwrap_or_default();
                json!({"id": id, "name": id, "description": description, "files": files})
            })
            .collect();
        let config = files.get(CONFIG);
        let prompts: Map<String, Value> = config
            .map(|text| (CONFIG.to_owned(), Value::String(text.clone())))
            .into_iter()
            .collect();
        let mut children = Vec::new();
        if depth < MAX_DEPTH {
            let rows = workspace::Entity::find()
                .filter(workspace::Column::ParentId.eq(&row.id))
                .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
                .order_by_asc(workspace::Column::CreatedAt)
                .order_by_asc(workspace::Column::Id)
                .all(db)
                .await?;
            for child in rows {
                children.push(Box::pin(self.export_tree(child, depth + 1)).await?);
            }
        }
        let agent_card = row
            .agent_card
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .unwrap_or(Value::Null);
        Ok(json!({
            "schema": "1.0",
            "id": row.id,
            "name": row.name,
            "description": row.role.unwrap_or_default(),
            "tier": row.tier,
            "model": config.and_then(|text| config_line(text, "model")).unwrap_or_default(),
            "system_prompt": files.get(SYSTEM_PROMPT).cloned().unwrap_or_default(),
            "skills": skills,
            "tools": [],
            "prompts": prompts,
            "sub_workspaces": children,
            "agent_card": agent_card,
            "author": "",
            "version": "1.0.0",
        }))
    }

    async fn import(&self, metadata: &MetadataMap, text: &str) -> ApiResult<Value> {
        let operator = self.state.auth.admin(metadata).await?;
        let bundle: Bundle =
            serde_json::from_str(text).map_err(|_| ApiError::from(BundleError::Invalid))?;
        check(&bundle, 0)?;
        let txn = self
            .state
            .db
            .begin()
            .await
            .context("failed to import bundle")?;
        let mut events = Vec::new();
        let result = self
            .import_tree(&txn, &bundle, None, &mut events)
            .await
            .context("failed to import bundle")?;
        let action = Action {
            operation: "bundle.import",
            workspace_id: None,
            target: result["workspace_id"].as_str().map(str::to_owned),
            details: json!({"name": bundle.name, "source_bundle_id": bundle.id}),
        };
        self.state
            .audit
            .append(&txn, &operator, metadata, action)
            .await
            .context("failed to import bundle")?;
        txn.commit().await.context("failed to import bundle")?;
        self.state.events.publish_all(events);
        self.state.hierarchy.invalidate().await;
        Ok(result)
    }

    /// Inserts one bundle and its sub-workspaces under `parent`, in the caller's transaction.
    async fn import_tree(
        &self,
        txn: &impl ConnectionTrait,
        bundle: &Bundle,
        parent: Option<&str>,
        events: &mut Vec<std::sync::Arc<Envelope>>,
    ) -> Result<Value, DbErr> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = store::now();
        let config = bundle.prompts.get(CONFIG);
        let runtime = config
            .and_then(|text| config_line(text, "runtime"))
            .unwrap_or("langgraph");
        let tier = if bundle.tier == 0 { 3 } else { bundle.tier };
        workspace::Entity::insert(workspace::ActiveModel {
            role: Set(Some(bundle.description.clone()).filter(|role| !role.is_empty())),
            tier: Set(tier),
            runtime: Set(runtime.to_owned()),
            agent_card: Set(bundle
                .agent_card
                .as_ref()
                .filter(|card| card.is_object())
                .map(Value::to_string)),
            parent_id: Set(parent.map(str::to_owned)),
            source_bundle_id: Set(Some(bundle.id.clone()).filter(|id| !id.is_empty())),
            ..workspace::ActiveModel::fresh(&id, &bundle.name, now)
        })
        .exec_without_returning(txn)
        .await?;
        canvas_layout::Entity::insert(canvas_layout::ActiveModel {
            workspace_id: Set(id.clone()),
            x: Set(0.0),
            y: Set(0.0),
            collapsed: Set(false),
        })
        .exec_without_returning(txn)
        .await?;
        let mut files: Vec<(String, &String)> = Vec::new();
        if !bundle.system_prompt.is_empty() {
            files.push((SYSTEM_PROMPT.to_owned(), &bundle.system_prompt));
        }
        if let Some(config) = config {
            files.push((CONFIG.to_owned(), config));
        }
        for skill in &bundle.skills {
            for (path, content) in &skill.files {
                files.push((format!("skills/{}/{path}", skill.id), content));
            }
        }
        for (path, content) in files {
            workspace_file::Entity::insert(workspace_file::ActiveModel {
                workspace_id: Set(id.clone()),
                path: Set(path),
                content: Set(content.clone()),
                updated_at: Set(now),
            })
            .exec_without_returning(txn)
            .await?;
        }
        events.push(
            self.state
                .events
                .insert(
                    txn,
                    EventType::WorkspaceProvisioning,
                    Some(&id),
                    json!({"name": bundle.name, "tier": tier, "runtime": runtime}),
                )
                .await?,
        );
        let mut children = Vec::new();
        for child in &bundle.sub_workspaces {
            children.push(Box::pin(self.import_tree(txn, child, Some(&id), events)).await?);
        }
        let mut result = json!({"workspace_id": id, "name": bundle.name, "status": WorkspaceStatus::Provisioning});
        if !children.is_empty() {
            result["children"] = Value::Array(children);
        }
        Ok(result)
    }
}

/// The create-time rules for every workspace of the tree, before anything is written.
fn check(bundle: &Bundle, depth: usize) -> ApiResult<()> {
    if depth > MAX_DEPTH {
        return Err(BundleError::Invalid.into());
    }
    if bundle.name.is_empty() {
        return Err(BundleError::InvalidPayload.into());
    }
    if validate::text_field("name", &bundle.name).is_err()
        || validate::text_field("role", &bundle.description).is_err()
    {
        return Err(BundleError::InvalidFields.into());
    }
    if !(0..=4).contains(&bundle.tier) {
        return Err(BundleError::InvalidTier.into());
    }
    let unsafe_skill = bundle.skills.iter().any(|skill| {
        !safe_relative(&skill.id)
            || skill.id.contains('/')
            || skill.files.keys().any(|path| !safe_relative(path))
    });
    if unsafe_skill {
        return Err(BundleError::InvalidSkillPath.into());
    }
    bundle
        .sub_workspaces
        .iter()
        .try_for_each(|child| check(child, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_paths_stay_inside_the_skill() {
        for good in ["SKILL.md", "scripts/run.py"] {
            assert!(safe_relative(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "a//b",
            "./x",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn config_lines_and_skill_descriptions() {
        let config = "name: x\nruntime: claude-code\nmodel: \"minimax/M2\"\n";
        assert_eq!(config_line(config, "runtime"), Some("claude-code"));
        assert_eq!(config_line(config, "model"), Some("minimax/M2"));
        assert_eq!(config_line(config, "tier"), None);
        assert_eq!(
            skill_description("---\nname: s\n---\n# Title\n\nDoes things.\nMore.\n"),
            "Does things."
        );
        assert_eq!(skill_description(""), "");
    }
}

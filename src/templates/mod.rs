//! The Templates gRPC service (docs/operations.md §7): org templates read from
//! `MOLECULE_TEMPLATES_DIR` and imported as whole workspace trees, and workspace templates (the
//! directory's and those imported through the API, kept in the database so every replica sees
//! them). Operators only. It creates workspaces; it never provisions anything.

pub mod document;
mod import;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use serde::Deserialize;
use serde_json::json;
use tonic::{Request, metadata::MetadataMap};
use tracing::warn;

use self::document::OrgTemplate;
use crate::{
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    plugins::source,
    state::Platform,
    store::{self, DbContext, entities::workspace_template},
};

/// Files a workspace template may hold (the reference's cap).
const MAX_TEMPLATE_FILES: usize = 200;
/// The largest org.yaml read.
const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;
const ORG_FILE: &str = "org.yaml";
const CONFIG_FILE: &str = "config.yaml";

/// Every way a template call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq)]
enum TemplateError {
    NoDocument,
    InvalidDir,
    OrgTemplateNotFound(String),
    Invalid(String),
    MissingEnv {
        missing: serde_json::Value,
        required: serde_json::Value,
        template: String,
    },
    KeyReused(String),
    UnknownWorkspaceTemplate {
        field: String,
        name: String,
    },
    TemplateNameRequired,
    TooManyFiles(usize),
    InvalidFilePath,
    TemplateExists(String),
}

impl From<TemplateError> for ApiError {
    fn from(err: TemplateError) -> Self {
        use TemplateError::*;
        match err {
            NoDocument => ApiError::bad_request("provide 'dir' or 'template'"),
            InvalidDir => ApiError::bad_request("invalid org directory"),
            OrgTemplateNotFound(dir) => {
                ApiError::new(ErrorCode::NotFound, format!("org template not found: {dir}"))
            }
            Invalid(why) => ApiError::bad_request(format!("invalid org template: {why}")),
            MissingEnv {
                missing,
                required,
                template,
            } => ApiError::new(
                ErrorCode::PreconditionFailed,
                "missing required environment variables",
            )
            .with_fields(json!({
                "missing_env": missing,
                "required_env": required,
                "template": template,
                "suggestion": "set these as global secrets (POST /settings/secrets) or pass force=true to override",
            })),
            KeyReused(key) => ApiError::new(
                ErrorCode::Conflict,
                "import key already used by a different document",
            )
            .with_fields(json!({"import_key": key})),
            UnknownWorkspaceTemplate { field, name } => ApiError::bad_request(format!(
                "invalid org template: {field}: no workspace template named {name:?}"
            )),
            TemplateNameRequired => ApiError::bad_request("invalid request body"),
            TooManyFiles(count) => ApiError::bad_request(format!(
                "too many files ({count}), max {MAX_TEMPLATE_FILES}"
            )),
            InvalidFilePath => ApiError::bad_request("invalid request body"),
            TemplateExists(id) => ApiError::new(ErrorCode::Conflict, "template already exists")
                .with_fields(json!({"id": id})),
        }
    }
}

pub struct TemplatesService {
    state: Platform,
}

impl TemplatesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }

    fn dir(&self) -> &Path {
        &self.state.settings.templates_dir
    }
}

#[tonic::async_trait]
impl pb::templates_server::Templates for TemplatesService {
    async fn list_org_templates(
        &self,
        request: Request<pb::ListOrgTemplatesRequest>,
    ) -> RpcResult<pb::OrgTemplateList> {
        reply(self.list_org_templates(request.metadata()).await)
    }

    async fn import_org(
        &self,
        request: Request<pb::ImportOrgRequest>,
    ) -> RpcResult<pb::ImportOrgResponse> {
        reply(self.import_org(request.metadata(), request.get_ref()).await)
    }

    async fn list_workspace_templates(
        &self,
        request: Request<pb::ListWorkspaceTemplatesRequest>,
    ) -> RpcResult<pb::WorkspaceTemplateList> {
        reply(self.list_workspace_templates(request.metadata()).await)
    }

    async fn import_workspace_template(
        &self,
        request: Request<pb::ImportWorkspaceTemplateRequest>,
    ) -> RpcResult<pb::ImportWorkspaceTemplateResponse> {
        reply(
            self.import_workspace_template(request.metadata(), request.get_ref())
                .await,
        )
    }
}

/// The subdirectories of `root` that hold `file`, by name, with its text (unreadable ones are
/// skipped).
async fn directories_with(root: PathBuf, file: &'static str) -> Vec<(String, String)> {
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let mut found: Vec<(String, String)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let text = read_capped(&entry.path().join(file))?;
                Some((name, text))
            })
            .collect();
        found.sort();
        found
    })
    .await
    .unwrap_or_default()
}

/// A file's text, when it is a regular file (no symlink) of at most [`MAX_DOCUMENT_BYTES`].
fn read_capped(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_DOCUMENT_BYTES {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// What `GET /templates` reads of a config.yaml.
#[derive(Default, Deserialize)]
#[serde(default)]
struct TemplateConfig {
    name: String,
    description: String,
    tier: i32,
    runtime: String,
    model: String,
    skills: Vec<String>,
    runtime_config: RuntimeConfig,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RuntimeConfig {
    model: String,
    required_env: Vec<String>,
}

fn template_summary(id: String, config: &str, origin: &str) -> pb::WorkspaceTemplateSummary {
    let config: TemplateConfig = serde_yaml_ng::from_str(config).unwrap_or_default();
    pb::WorkspaceTemplateSummary {
        name: if config.name.is_empty() {
            id.clone()
        } else {
            config.name
        },
        id,
        description: config.description,
        tier: config.tier,
        runtime: config.runtime,
        model: if config.model.is_empty() {
            config.runtime_config.model
        } else {
            config.model
        },
        skills: config.skills,
        required_env: config.runtime_config.required_env,
        origin: origin.to_owned(),
    }
}

/// A template id from its name, as the reference normalises it: lowercase, runs of anything
/// but letters and digits as one `-`.
fn template_id(name: &str) -> String {
    let mut id = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_matches('-').to_owned()
}

impl TemplatesService {
    async fn list_org_templates(&self, metadata: &MetadataMap) -> ApiResult<pb::OrgTemplateList> {
        self.state.auth.admin(metadata).await?;
        let mut templates = Vec::new();
        for (dir, text) in directories_with(self.dir().to_owned(), ORG_FILE).await {
            let document = match OrgTemplate::from_yaml(&text) {
                Ok(document) => document,
                Err(err) => {
                    warn!(template = %dir, error = %err, "org template skipped");
                    continue;
                }
            };
            templates.push(pb::OrgTemplateSummary {
                dir,
                workspaces: document.walk().len() as u32,
                required_env_json: json!(document.env(true)).to_string(),
                recommended_env_json: json!(document.env(false)).to_string(),
                name: document.name,
                description: document.description,
            });
        }
        Ok(pb::OrgTemplateList { templates })
    }

    /// The org template in directory `dir` of the templates dir.
    async fn read_org_template(&self, dir: &str) -> ApiResult<String> {
        if !source::valid_requested_name(dir) || dir.starts_with('.') {
            return Err(TemplateError::InvalidDir.into());
        }
        let path = self.dir().join(dir).join(ORG_FILE);
        tokio::task::spawn_blocking(move || read_capped(&path))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| TemplateError::OrgTemplateNotFound(dir.to_owned()).into())
    }

    /// Every workspace template by id: the directory's, and the imported ones (which win).
    async fn workspace_templates(
        &self,
    ) -> ApiResult<BTreeMap<String, (String, BTreeMap<String, String>)>> {
        let mut templates = BTreeMap::new();
        let root = self.dir().to_owned();
        for (id, config) in directories_with(root.clone(), CONFIG_FILE).await {
            let files = BTreeMap::from([(CONFIG_FILE.to_owned(), config)]);
            templates.insert(id, ("dir".to_owned(), files));
        }
        let imported = workspace_template::Entity::find()
            .order_by_asc(workspace_template::Column::Id)
            .all(&self.state.db)
            .await
            .context("failed to list templates")?;
        for row in imported {
            let files = serde_json::from_str(&row.files).unwrap_or_default();
            templates.insert(row.id, ("imported".to_owned(), files));
        }
        Ok(templates)
    }

    async fn list_workspace_templates(
        &self,
        metadata: &MetadataMap,
    ) -> ApiResult<pb::WorkspaceTemplateList> {
        self.state.auth.admin(metadata).await?;
        let templates = self
            .workspace_templates()
            .await?
            .into_iter()
            .map(|(id, (origin, files))| {
                let config = files.get(CONFIG_FILE).map_or("", String::as_str);
                template_summary(id, config, &origin)
            })
            .collect();
        Ok(pb::WorkspaceTemplateList { templates })
    }

    async fn import_workspace_template(
        &self,
        metadata: &MetadataMap,
        request: &pb::ImportWorkspaceTemplateRequest,
    ) -> ApiResult<pb::ImportWorkspaceTemplateResponse> {
        let operator = self.state.auth.admin(metadata).await?;
        let id = template_id(&request.name);
        if id.is_empty() {
            return Err(TemplateError::TemplateNameRequired.into());
        }
        if request.files.len() > MAX_TEMPLATE_FILES {
            return Err(TemplateError::TooManyFiles(request.files.len()).into());
        }
        if request.files.keys().any(|path| !relative_path(path)) {
            return Err(TemplateError::InvalidFilePath.into());
        }
        if self.workspace_templates().await?.contains_key(&id) {
            return Err(TemplateError::TemplateExists(id).into());
        }
        let mut files: BTreeMap<String, String> = request
            .files
            .iter()
            .map(|(path, content)| (path.clone(), content.clone()))
            .collect();
        if !files.contains_key(CONFIG_FILE) {
            let config = default_config(&request.name, &files);
            files.insert(CONFIG_FILE.to_owned(), config);
        }
        let inserted = workspace_template::Entity::insert(workspace_template::ActiveModel {
            id: Set(id.clone()),
            name: Set(request.name.clone()),
            files: Set(json!(files).to_string()),
            created_by: Set(operator.audit_name()),
            created_at: Set(store::now()),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(workspace_template::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.state.db)
        .await
        .context("failed to import template")?;
        if inserted == 0 {
            return Err(TemplateError::TemplateExists(id).into());
        }
        let action = crate::audit::Action {
            operation: "template.import",
            workspace_id: None,
            target: Some(id.clone()),
            details: json!({"name": request.name, "files": files.len()}),
        };
        self.state
            .audit
            .record(&self.state.db, &operator, metadata, action)
            .await;
        Ok(pb::ImportWorkspaceTemplateResponse {
            id,
            name: request.name.clone(),
        })
    }
}

/// A relative file path inside a template: no absolute path, no `..`, no empty part.
fn relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && !path.starts_with(['/', '\\'])
        && path
            .split(['/', '\\'])
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The config.yaml of an imported template that brought none, as the reference writes it.
fn default_config(name: &str, files: &BTreeMap<String, String>) -> String {
    let skills: Vec<&str> = files
        .keys()
        .filter_map(|path| path.strip_prefix("skills/")?.split('/').next())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let config = json!({
        "name": name,
        "description": format!("Imported agent: {name}"),
        "version": "1.0.0",
        "tier": 2,
        "skills": skills,
    });
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_are_normalised_names() {
        assert_eq!(template_id("  Research Lead (v2) "), "research-lead-v2");
        assert_eq!(template_id("---"), "");
    }

    #[test]
    fn template_paths_stay_inside() {
        for good in ["config.yaml", "skills/search/SKILL.md"] {
            assert!(relative_path(good), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "\\\\x"] {
            assert!(!relative_path(bad), "{bad}");
        }
    }
}

//! Importing an org template (docs/operations.md §7): the whole tree in one transaction —
//! workspaces (external, awaiting their agents), layouts, config.yaml, files from workspace
//! templates, memories, schedules, events and audit rows — or nothing. The import key's row is
//! written first, so a second import of the same key, on any replica, waits for the first and
//! then creates nothing.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait, sea_query::OnConflict,
};
use serde_json::{Map, Value, json};
use tonic::metadata::MetadataMap;

use super::{
    CONFIG_FILE, TemplateError, TemplatesService,
    document::{OrgTemplate, OrgWorkspace},
};
use crate::{
    audit::Action,
    auth::Principal,
    domain::{EventType, WorkspaceStatus},
    error::ApiResult,
    events::Envelope,
    pb,
    runtime::memories,
    schedules::{NewSchedule, new_schedule},
    state::Platform,
    store::{
        self, DbContext,
        entities::{
            canvas_layout, global_secret, org_import, workspace, workspace_config, workspace_file,
        },
    },
    workspaces::connection_block,
};

const FAILED: &str = "failed to import org template";
/// The tier of a workspace that names none, here and in its defaults (the reference's).
const DEFAULT_TIER: i32 = 2;

/// Files of the workspace templates the document names, by template id.
type TemplateFiles = BTreeMap<String, BTreeMap<String, String>>;

/// What one import is writing.
struct Import<'a> {
    state: &'a Platform,
    txn: &'a DatabaseTransaction,
    document: &'a OrgTemplate,
    templates: &'a TemplateFiles,
    operator: &'a Principal,
    metadata: &'a MetadataMap,
    events: Vec<std::sync::Arc<Envelope>>,
    created: Vec<pb::ImportedWorkspace>,
}

impl TemplatesService {
    pub(super) async fn import_org(
        &self,
        metadata: &MetadataMap,
        request: &pb::ImportOrgRequest,
    ) -> ApiResult<pb::ImportOrgResponse> {
        use pb::import_org_request::Document;
        let operator = self.state.auth.admin(metadata).await?;
        let parsed = match &request.document {
            Some(Document::Dir(dir)) => OrgTemplate::from_yaml(&self.read_org_template(dir).await?),
            Some(Document::Yaml(text)) => OrgTemplate::from_yaml(text),
            Some(Document::TemplateJson(text)) => OrgTemplate::from_json(text),
            None => return Err(TemplateError::NoDocument.into()),
        };
        let document = parsed.map_err(|err| TemplateError::Invalid(err.0))?;
        document
            .check()
            .map_err(|err| TemplateError::Invalid(err.0))?;
        if !request.force {
            self.check_required_env(&document).await?;
        }
        let templates = self.referenced_templates(&document).await?;

        let key = document.key().to_owned();
        let digest = document.digest();
        let txn = self.state.db.begin().await.context(FAILED)?;
        let claimed = org_import::Entity::insert(org_import::ActiveModel {
            import_key: Set(key.clone()),
            template_name: Set(document.name.clone()),
            document_sha256: Set(digest.clone()),
            workspace_ids: Set("[]".to_owned()),
            created_by: Set(operator.audit_name()),
            created_at: Set(store::now()),
        })
        .on_conflict(
            OnConflict::column(org_import::Column::ImportKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .context(FAILED)?;
        if claimed == 0 {
            drop(txn);
            return self.earlier_import(&key, &digest, request).await;
        }

        let mut import = Import {
            state: &self.state,
            txn: &txn,
            document: &document,
            templates: &templates,
            operator: &operator,
            metadata,
            events: Vec::new(),
            created: Vec::new(),
        };
        for (index, top) in document.workspaces.iter().enumerate() {
            import.tree(top, None, index == 0).await.context(FAILED)?;
        }
        let Import {
            events, created, ..
        } = import;
        let ids: Vec<&str> = created.iter().map(|w| w.id.as_str()).collect();
        org_import::Entity::update_many()
            .col_expr(
                org_import::Column::WorkspaceIds,
                sea_orm::sea_query::Expr::value(json!(ids).to_string()),
            )
            .filter(org_import::Column::ImportKey.eq(key.clone()))
            .exec(&txn)
            .await
            .context(FAILED)?;
        let action = Action {
            operation: "org.import",
            workspace_id: None,
            target: Some(key.clone()),
            details: json!({"template": document.name, "workspaces": ids.len(), "force": request.force}),
        };
        self.state
            .audit
            .append(&txn, &operator, metadata, action)
            .await
            .context(FAILED)?;
        txn.commit().await.context(FAILED)?;
        self.state.events.publish_all(events);
        self.state.hierarchy.invalidate().await;
        tracing::info!(template = %document.name, import_key = %key, workspaces = created.len(), "org template imported");
        Ok(pb::ImportOrgResponse {
            org: document.name.clone(),
            import_key: key,
            created: true,
            workspaces: self.with_connections(created, &request.platform_url),
        })
    }

    /// The answer to a key imported before: its tree as it is now, or 409 for another document.
    async fn earlier_import(
        &self,
        key: &str,
        digest: &str,
        request: &pb::ImportOrgRequest,
    ) -> ApiResult<pb::ImportOrgResponse> {
        let row = org_import::Entity::find_by_id(key.to_owned())
            .one(&self.state.db)
            .await
            .context(FAILED)?
            .ok_or_else(|| TemplateError::KeyReused(key.to_owned()))?;
        if row.document_sha256 != digest {
            return Err(TemplateError::KeyReused(key.to_owned()).into());
        }
        let ids: Vec<String> = serde_json::from_str(&row.workspace_ids).unwrap_or_default();
        let rows: BTreeMap<String, workspace::Model> = workspace::Entity::find()
            .filter(workspace::Column::Id.is_in(ids.clone()))
            .all(&self.state.db)
            .await
            .context(FAILED)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let existing = ids
            .iter()
            .filter_map(|id| rows.get(id))
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .map(|row| pb::ImportedWorkspace {
                id: row.id.clone(),
                name: row.name.clone(),
                tier: row.tier,
                status: row.status.to_string(),
                parent_id: row.parent_id.clone(),
                connection: None,
            })
            .collect();
        Ok(pb::ImportOrgResponse {
            org: row.template_name,
            import_key: key.to_owned(),
            created: false,
            workspaces: self.with_connections(existing, &request.platform_url),
        })
    }

    /// Each workspace still awaiting its agent, with the instructions to connect one.
    fn with_connections(
        &self,
        mut workspaces: Vec<pb::ImportedWorkspace>,
        platform_url: &str,
    ) -> Vec<pb::ImportedWorkspace> {
        let base = self
            .state
            .settings
            .external_platform_url
            .clone()
            .unwrap_or_else(|| platform_url.to_owned());
        for workspace in &mut workspaces {
            if workspace.status == WorkspaceStatus::AwaitingAgent.to_string() {
                workspace.connection = Some(connection_block(
                    &workspace.id,
                    &workspace.name,
                    base.trim_end_matches('/'),
                ));
            }
        }
        workspaces
    }

    /// 412 unless every required global secret is set (the reference's preflight).
    async fn check_required_env(&self, document: &OrgTemplate) -> ApiResult<()> {
        let required = document.env(true);
        if required.is_empty() {
            return Ok(());
        }
        let configured: BTreeSet<String> = global_secret::Entity::find()
            .select_only()
            .column(global_secret::Column::Key)
            .into_tuple()
            .all(&self.state.db)
            .await
            .context("could not verify required environment variables")?
            .into_iter()
            .collect();
        let missing: Vec<_> = required
            .iter()
            .filter(|requirement| !requirement.is_met(&configured))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(TemplateError::MissingEnv {
            missing: json!(missing),
            required: json!(required),
            template: document.name.clone(),
        }
        .into())
    }

    /// The files of every workspace template the document names; 400 for an unknown one.
    async fn referenced_templates(&self, document: &OrgTemplate) -> ApiResult<TemplateFiles> {
        let named: Vec<(String, &str)> = document
            .walk()
            .into_iter()
            .filter(|(_, workspace)| !workspace.template.is_empty())
            .map(|(path, workspace)| (format!("{path}.template"), workspace.template.as_str()))
            .collect();
        if named.is_empty() {
            return Ok(TemplateFiles::new());
        }
        let mut available = self.workspace_templates().await?;
        let mut picked = TemplateFiles::new();
        for (field, name) in named {
            match available.remove(name) {
                Some((_, files)) => {
                    picked.insert(name.to_owned(), files);
                }
                None if picked.contains_key(name) => {}
                None => {
                    return Err(TemplateError::UnknownWorkspaceTemplate {
                        field,
                        name: name.to_owned(),
                    }
                    .into());
                }
            }
        }
        Ok(picked)
    }
}

impl Import<'_> {
    /// Creates `node` under `parent`, then its children.
    async fn tree(
        &mut self,
        node: &OrgWorkspace,
        parent: Option<String>,
        first_root: bool,
    ) -> Result<(), DbErr> {
        let id = self.workspace(node, parent.as_deref(), first_root).await?;
        for child in &node.children {
            Box::pin(self.tree(child, Some(id.clone()), false)).await?;
        }
        Ok(())
    }

    /// One workspace and everything that starts with it; returns its id.
    async fn workspace(
        &mut self,
        node: &OrgWorkspace,
        parent: Option<&str>,
        first_root: bool,
    ) -> Result<String, DbErr> {
        let txn = self.txn;
        let defaults = &self.document.defaults;
        let id = uuid::Uuid::new_v4().to_string();
        let now = store::now();
        let tier = [node.tier, defaults.tier, DEFAULT_TIER]
            .into_iter()
            .find(|tier| *tier != 0)
            .unwrap_or(DEFAULT_TIER);
        workspace::Entity::insert(workspace::ActiveModel {
            role: Set(Some(node.role.clone()).filter(|role| !role.is_empty())),
            tier: Set(tier),
            status: Set(WorkspaceStatus::AwaitingAgent),
            runtime: Set("external".to_owned()),
            parent_id: Set(parent.map(str::to_owned)),
            max_concurrent_tasks: Set(node.max_concurrent_tasks.max(1)),
            ..workspace::ActiveModel::fresh(&id, &node.name, now)
        })
        .exec_without_returning(txn)
        .await?;
        canvas_layout::Entity::insert(canvas_layout::ActiveModel {
            workspace_id: Set(id.clone()),
            x: Set(node.canvas.x),
            y: Set(node.canvas.y),
            collapsed: Set(false),
        })
        .exec_without_returning(txn)
        .await?;
        self.files_and_config(&id, node, tier, now).await?;

        let seeds = if node.initial_memories.is_empty() {
            &defaults.initial_memories
        } else {
            &node.initial_memories
        };
        let mut seeds: Vec<pb::InitialMemory> = seeds
            .iter()
            .map(|seed| pb::InitialMemory {
                content: seed.content.clone(),
                scope: seed.scope.clone(),
            })
            .collect();
        if first_root {
            seeds.extend(
                self.document
                    .global_memories
                    .iter()
                    .map(|seed| pb::InitialMemory {
                        content: seed.content.clone(),
                        scope: "GLOBAL".to_owned(),
                    }),
            );
        }
        memories::insert_initial(txn, &id, parent.is_none(), &seeds).await?;

        for schedule in &node.schedules {
            let zone = Some(schedule.timezone.trim())
                .filter(|zone| !zone.is_empty())
                .unwrap_or("UTC");
            let new = NewSchedule {
                name: &schedule.name,
                cron_expr: &schedule.cron_expr,
                timezone: zone,
                prompt: &schedule.prompt,
                enabled: schedule.enabled.unwrap_or(true),
                source: "template",
            };
            // Checked with the document: a timing that parses there parses here.
            let row = new_schedule(&id, new)
                .map_err(|_| DbErr::Custom(format!("schedule of {} did not parse", node.name)))?;
            crate::store::entities::schedule::Entity::insert(row)
                .exec_without_returning(txn)
                .await?;
        }

        self.record_creation(&id, node, tier).await?;
        self.created.push(pb::ImportedWorkspace {
            id: id.clone(),
            name: node.name.clone(),
            tier,
            status: WorkspaceStatus::AwaitingAgent.to_string(),
            parent_id: parent.map(str::to_owned),
            connection: None,
        });
        Ok(id)
    }

    /// The workspace's creation events and its audit row, as `POST /workspaces` records them.
    async fn record_creation(
        &mut self,
        id: &str,
        node: &OrgWorkspace,
        tier: i32,
    ) -> Result<(), DbErr> {
        let events = &self.state.events;
        let provisioning = json!({"name": node.name, "tier": tier, "runtime": "external"});
        let awaiting = json!({"name": node.name, "external": true});
        for (event, payload) in [
            (EventType::WorkspaceProvisioning, provisioning),
            (EventType::WorkspaceAwaitingAgent, awaiting),
        ] {
            self.events
                .push(events.insert(self.txn, event, Some(id), payload).await?);
        }
        let action = Action {
            operation: "workspace.create",
            workspace_id: Some(id),
            target: None,
            details: json!({"name": node.name, "external": true, "import_key": self.document.key()}),
        };
        self.state
            .audit
            .append(self.txn, self.operator, self.metadata, action)
            .await
    }

    /// config.yaml (the template's, with the document's fields over it) and the template's
    /// other files.
    async fn files_and_config(
        &self,
        id: &str,
        node: &OrgWorkspace,
        tier: i32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbErr> {
        let defaults = &self.document.defaults;
        let files = self.templates.get(&node.template);
        let mut config: Map<String, Value> = files
            .and_then(|files| files.get(CONFIG_FILE))
            .and_then(|text| serde_yaml_ng::from_str(text).ok())
            .unwrap_or_default();
        let first = |values: [&String; 2]| values.into_iter().find(|v| !v.is_empty()).cloned();
        config.insert("name".to_owned(), json!(node.name));
        config.insert("tier".to_owned(), json!(tier));
        if let Some(runtime) = first([&node.runtime, &defaults.runtime]) {
            config.insert("runtime".to_owned(), json!(runtime));
        }
        if let Some(model) = first([&node.model, &defaults.model]) {
            config.insert("model".to_owned(), json!(model));
        }
        for (key, value) in [
            ("system_prompt", &node.system_prompt),
            ("initial_prompt", &node.initial_prompt),
        ] {
            if !value.is_empty() {
                config.insert(key.to_owned(), json!(value));
            }
        }
        let plugins = if node.plugins.is_empty() {
            &defaults.plugins
        } else {
            &node.plugins
        };
        if !plugins.is_empty() {
            config.insert("plugins".to_owned(), json!(plugins));
        }
        let content = serde_yaml_ng::to_string(&config)
            .map_err(|err| DbErr::Custom(format!("config.yaml of {}: {err}", node.name)))?;
        workspace_config::Entity::insert(workspace_config::ActiveModel {
            workspace_id: Set(id.to_owned()),
            content: Set(content),
            version: Set(1),
            updated_at: Set(now),
            updated_by: Set(Some(self.operator.audit_name())),
        })
        .exec_without_returning(self.txn)
        .await?;
        let other_files: Vec<workspace_file::ActiveModel> = files
            .into_iter()
            .flatten()
            .filter(|(path, _)| path.as_str() != CONFIG_FILE)
            .map(|(path, content)| workspace_file::ActiveModel {
                workspace_id: Set(id.to_owned()),
                path: Set(path.clone()),
                content: Set(content.clone()),
                updated_at: Set(now),
            })
            .collect();
        if !other_files.is_empty() {
            workspace_file::Entity::insert_many(other_files)
                .exec_without_returning(self.txn)
                .await?;
        }
        Ok(())
    }
}

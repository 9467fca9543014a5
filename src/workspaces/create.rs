//! Creating a workspace: input rules, the parent check, the row with its layout, secrets and
//! first event in one transaction, and for an external workspace its token and connection
//! block (shown once).

use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    domain::{EventType, WorkspaceStatus, validate},
    error::{ApiError, ApiResult},
    pb,
    runtime::memories,
    secrets,
    store::{
        self, DbContext,
        entities::{canvas_layout, workspace},
    },
};

use super::{WorkspacesService, error::WorkspaceError, is_external};

impl WorkspacesService {
    /// A parent must exist, not be removed, and not be `child` or one of its descendants.
    pub(super) async fn check_parent(
        &self,
        parent_id: &str,
        child: Option<&str>,
    ) -> ApiResult<String> {
        let invalid = || ApiError::from(WorkspaceError::InvalidParent);
        let parent_id = validate::parse_uuid(parent_id).ok_or_else(invalid)?;
        if child == Some(parent_id.as_str()) {
            return Err(invalid());
        }
        let parent = self
            .find(&self.state.db, &parent_id)
            .await?
            .ok_or_else(invalid)?;
        if parent.status == WorkspaceStatus::Removed {
            return Err(invalid());
        }
        if let Some(child) = child {
            let mut ancestor = parent.parent_id;
            for _ in 0..32 {
                let Some(id) = ancestor else { break };
                if id == child {
                    return Err(invalid());
                }
                ancestor = self
                    .find(&self.state.db, &id)
                    .await?
                    .and_then(|row| row.parent_id);
            }
        }
        Ok(parent_id)
    }

    pub(super) async fn create(
        &self,
        metadata: &MetadataMap,
        request: pb::CreateWorkspaceRequest,
    ) -> ApiResult<pb::CreateWorkspaceResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        if request.name.is_empty() {
            return Err(WorkspaceError::InvalidPayload.into());
        }
        let fields = [
            ("name", &request.name),
            ("role", &request.role),
            ("model", &request.model),
            ("runtime", &request.runtime),
        ];
        if fields
            .iter()
            .any(|(field, value)| validate::text_field(field, value).is_err())
        {
            return Err(WorkspaceError::InvalidFields.into());
        }
        if !request.template.is_empty() && !validate::template(&request.template) {
            return Err(WorkspaceError::InvalidTemplate.into());
        }
        if !request.workspace_dir.is_empty() && !validate::workspace_dir(&request.workspace_dir) {
            return Err(WorkspaceError::InvalidDirectory.into());
        }
        let access = if request.workspace_access.is_empty() {
            "none"
        } else {
            request.workspace_access.as_str()
        };
        if !validate::WORKSPACE_ACCESS_VALUES.contains(&access)
            || (access != "none" && request.workspace_dir.is_empty())
        {
            return Err(WorkspaceError::InvalidAccess.into());
        }
        if !(0..=4).contains(&request.tier) {
            return Err(WorkspaceError::InvalidTier.into());
        }
        let parent_id = match request.parent_id.as_deref() {
            Some(parent) if !parent.is_empty() => Some(self.check_parent(parent, None).await?),
            _ => None,
        };
        let runtime = if request.external || is_external(&request.runtime) {
            "external".to_owned()
        } else if request.runtime.is_empty() {
            "langgraph".to_owned()
        } else {
            request.runtime.clone()
        };
        let external = is_external(&runtime);
        let url = (external && !request.url.is_empty()).then(|| request.url.clone());
        if let Some(url) = &url {
            let checked = self
                .state
                .url_policy
                .check_registration(url, self.state.resolver.as_ref())
                .await;
            if !matches!(checked, Ok(crate::url_safety::AgentUrl::Http(_))) {
                return Err(WorkspaceError::InvalidUrl.into());
            }
        }
        // Sorted, so the first failure reported is the same on every call.
        let mut secrets: Vec<(&String, &String)> = request.secrets.iter().collect();
        secrets.sort();
        if let Some((key, _)) = secrets
            .iter()
            .find(|(key, value)| !secrets::valid_key(key) || !secrets::valid_value(value))
        {
            return Err(WorkspaceError::InvalidSecretKey(key.to_string()).into());
        }

        let id = uuid::Uuid::new_v4().to_string();
        let tier = if request.tier == 0 { 3 } else { request.tier };
        let status = match (external, &url) {
            (true, Some(_)) => WorkspaceStatus::Online,
            (true, None) => WorkspaceStatus::AwaitingAgent,
            (false, _) => WorkspaceStatus::Provisioning,
        };
        let now = store::now();
        let awareness_namespace = format!("workspace:{id}");
        let (x, y) = request
            .canvas
            .map_or((0.0, 0.0), |canvas| (canvas.x, canvas.y));

        let txn = self
            .state
            .db
            .begin()
            .await
            .context("failed to create workspace")?;
        workspace::Entity::insert(workspace::ActiveModel {
            role: Set(Some(request.role.clone()).filter(|role| !role.is_empty())),
            tier: Set(tier),
            status: Set(status),
            runtime: Set(runtime.clone()),
            url: Set(url.clone()),
            parent_id: Set(parent_id.clone()),
            workspace_dir: Set(Some(request.workspace_dir.clone()).filter(|dir| !dir.is_empty())),
            workspace_access: Set(access.to_owned()),
            max_concurrent_tasks: Set(request.max_concurrent_tasks.max(1)),
            budget_limit: Set(request.budget_limit),
            ..workspace::ActiveModel::fresh(&id, &request.name, now)
        })
        .exec(&txn)
        .await
        .context("failed to create workspace")?;
        canvas_layout::Entity::insert(canvas_layout::ActiveModel {
            workspace_id: Set(id.clone()),
            x: Set(x),
            y: Set(y),
            collapsed: Set(false),
        })
        .exec(&txn)
        .await
        .context("failed to create workspace")?;
        secrets::insert_initial(&txn, &self.state.keyring, &id, &secrets)
            .await
            .map_err(|(key, err)| store::failure(err, format!("failed to save secret: {key}")))?;
        memories::insert_initial(&txn, &id, parent_id.is_none(), &request.initial_memories)
            .await
            .context("failed to create workspace")?;

        let events = &self.state.events;
        let mut recorded = vec![
            events
                .insert(
                    &txn,
                    EventType::WorkspaceProvisioning,
                    Some(&id),
                    json!({"name": request.name, "tier": tier, "runtime": runtime}),
                )
                .await
                .context("failed to create workspace")?,
        ];
        if external {
            let event = if url.is_some() {
                EventType::WorkspaceOnline
            } else {
                EventType::WorkspaceAwaitingAgent
            };
            recorded.push(
                events
                    .insert(
                        &txn,
                        event,
                        Some(&id),
                        json!({"name": request.name, "external": true}),
                    )
                    .await
                    .context("failed to create workspace")?,
            );
        }
        self.audited(
            &txn,
            &principal,
            metadata,
            "workspace.create",
            &id,
            None,
            json!({"name": request.name, "external": external, "runtime": runtime}),
            "failed to create workspace",
        )
        .await?;
        txn.commit().await.context("failed to create workspace")?;
        events.publish_all(recorded);
        self.state.hierarchy.invalidate().await;

        let connection = (external && url.is_none()).then(|| {
            let platform_url = self
                .state
                .settings
                .external_platform_url
                .clone()
                .unwrap_or(request.platform_url.clone());
            connection_block(&id, &request.name, platform_url.trim_end_matches('/'))
        });
        Ok(pb::CreateWorkspaceResponse {
            id,
            status: status.to_string(),
            external,
            awareness_namespace,
            workspace_access: access.to_owned(),
            connection,
        })
    }
}

/// How an operator connects the agent of a new external workspace: the first register mints
/// its token, so the snippets register without a bearer and keep the returned token.
pub(crate) fn connection_block(id: &str, name: &str, platform_url: &str) -> pb::ExternalConnection {
    let card = json!({"name": name, "skills": []}).to_string();
    let curl_register_template = format!(
        "curl -sS -X POST {platform_url}/registry/register \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"id\":\"{id}\",\"url\":\"'\"$AGENT_URL\"'\",\"agent_card\":{card}}}'"
    );
    let python_snippet = format!(
        "# pip install \"git+https://github.com/Molecule-AI/molecule-sdk-python\"\n\
         from molecule_agent import RemoteAgentClient\n\n\n\
         def handle(message, client):\n    \
             # Called once per inbound message; a returned string is sent back as the reply.\n    \
             return f\"received: {{message.text}}\"\n\n\n\
         client = RemoteAgentClient(workspace_id=\"{id}\", platform_url=\"{platform_url}\")\n\
         client.register()  # the first registration returns the workspace token; the SDK keeps it\n\
         client.run_agent_loop(handle)\n"
    );
    pb::ExternalConnection {
        workspace_id: id.to_owned(),
        platform_url: platform_url.to_owned(),
        auth_token: String::new(),
        registry_endpoint: format!("{platform_url}/registry/register"),
        heartbeat_endpoint: format!("{platform_url}/registry/heartbeat"),
        curl_register_template,
        python_snippet,
    }
}

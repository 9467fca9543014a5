//! The Workspaces gRPC service: the workspace resource and its lifecycle, tokens, org keys and
//! the event log (contract §1–3, registry §6). Every RPC authenticates first (except the
//! deliberate `/state` ordering) and changes state with conditional updates inside one
//! transaction, then publishes the events it recorded. It knows nothing about HTTP.

use std::{collections::HashMap, pin::Pin};

use futures::Stream;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait, sea_query::Expr,
};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Status, metadata::MetadataMap};

use crate::domain::EventType;
use crate::domain::WorkspaceStatus;
use crate::store::DbContext;
use crate::{
    auth::{self, MintedToken, Principal},
    domain::validate,
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    events::Envelope,
    liveness::BeatSnapshot,
    pb, secrets,
    state::Platform,
    store::{
        self,
        entities::{canvas_layout, org_token, structure_event, workspace, workspace_token},
    },
};

const WORKSPACE_NOT_FOUND: &str = "workspace not found";
const MAX_LIVE_TOKENS: u64 = 50;
const EVENTS_PAGE: u64 = 100;
const ORG_TOKENS_PAGE: u64 = 500;

pub struct WorkspacesService {
    state: Platform,
}

impl WorkspacesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::workspaces_server::Workspaces for WorkspacesService {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> RpcResult<pb::CreateWorkspaceResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(self.create(&metadata, body).await)
    }

    async fn list_workspaces(
        &self,
        request: Request<pb::ListWorkspacesRequest>,
    ) -> RpcResult<pb::ListWorkspacesResponse> {
        reply(self.list(request.metadata()).await)
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> RpcResult<pb::Workspace> {
        reply(self.get(request.metadata(), &request.get_ref().id).await)
    }

    async fn update_workspace(
        &self,
        request: Request<pb::UpdateWorkspaceRequest>,
    ) -> RpcResult<pb::UpdateWorkspaceResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(self.update(&metadata, body).await)
    }

    async fn delete_workspace(
        &self,
        request: Request<pb::DeleteWorkspaceRequest>,
    ) -> RpcResult<pb::DeleteWorkspaceResponse> {
        reply(self.delete(request.metadata(), request.get_ref()).await)
    }

    async fn get_workspace_state(
        &self,
        request: Request<pb::GetWorkspaceStateRequest>,
    ) -> RpcResult<pb::WorkspaceState> {
        reply(
            self.state_of(request.metadata(), &request.get_ref().id)
                .await,
        )
    }

    async fn pause_workspace(
        &self,
        request: Request<pb::PauseWorkspaceRequest>,
    ) -> RpcResult<pb::PauseWorkspaceResponse> {
        reply(self.pause(request.metadata(), &request.get_ref().id).await)
    }

    async fn resume_workspace(
        &self,
        request: Request<pb::ResumeWorkspaceRequest>,
    ) -> RpcResult<pb::ResumeWorkspaceResponse> {
        reply(self.resume(request.metadata(), &request.get_ref().id).await)
    }

    async fn restart_workspace(
        &self,
        request: Request<pb::RestartWorkspaceRequest>,
    ) -> RpcResult<pb::RestartWorkspaceResponse> {
        reply(
            self.restart(request.metadata(), &request.get_ref().id)
                .await,
        )
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> RpcResult<pb::ListTokensResponse> {
        reply(self.tokens(request.metadata(), request.get_ref()).await)
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> RpcResult<pb::CreateTokenResponse> {
        reply(
            self.create_token(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> RpcResult<pb::RevokeTokenResponse> {
        reply(
            self.revoke_token(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn mint_test_token(
        &self,
        request: Request<pb::MintTestTokenRequest>,
    ) -> RpcResult<pb::CreateTokenResponse> {
        reply(
            self.mint_test_token(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn list_org_tokens(
        &self,
        request: Request<pb::ListOrgTokensRequest>,
    ) -> RpcResult<pb::ListOrgTokensResponse> {
        reply(self.org_tokens(request.metadata()).await)
    }

    async fn create_org_token(
        &self,
        request: Request<pb::CreateOrgTokenRequest>,
    ) -> RpcResult<pb::CreateOrgTokenResponse> {
        reply(
            self.create_org_token(request.metadata(), &request.get_ref().name)
                .await,
        )
    }

    async fn revoke_org_token(
        &self,
        request: Request<pb::RevokeOrgTokenRequest>,
    ) -> RpcResult<pb::RevokeOrgTokenResponse> {
        reply(
            self.revoke_org_token(request.metadata(), &request.get_ref().id)
                .await,
        )
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> RpcResult<pb::WhoAmIResponse> {
        let metadata = request.metadata();
        if request.get_ref().any_credential {
            let principal = match auth::bearer(metadata) {
                Some(bearer) => self.state.auth.identify(bearer).await,
                None => Ok(None),
            };
            return reply(principal.and_then(|principal| {
                principal
                    .map(|principal| pb::WhoAmIResponse {
                        principal: principal.kind().to_owned(),
                    })
                    .ok_or_else(|| ApiError::unauthenticated(auth::INVALID_ADMIN_TOKEN))
            }));
        }
        let principal = match &request.get_ref().workspace_id {
            Some(id) => match validate::workspace_id(id) {
                Ok(id) => self.state.auth.workspace(metadata, &id).await,
                Err(err) => Err(err),
            },
            None => self.state.auth.admin(metadata).await,
        };
        reply(principal.map(|principal| pb::WhoAmIResponse {
            principal: principal.kind().to_owned(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> RpcResult<pb::ListEventsResponse> {
        reply(self.events(request.metadata(), request.get_ref()).await)
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> RpcResult<Self::WatchEventsStream> {
        reply(self.watch(request.metadata()).await)
    }
}

/// A workspace row with its canvas position and its latest beat (which is newer than the
/// row's write-behind columns), as both reads show it.
struct WorkspaceView {
    row: workspace::Model,
    layout: Option<canvas_layout::Model>,
    beat: Option<BeatSnapshot>,
}

impl From<WorkspaceView> for pb::Workspace {
    fn from(
        WorkspaceView {
            mut row,
            layout,
            beat,
        }: WorkspaceView,
    ) -> Self {
        let (x, y, collapsed) = layout.map_or((0.0, 0.0, false), |l| (l.x, l.y, l.collapsed));
        if let Some(beat) = beat.filter(|_| row.status != WorkspaceStatus::Removed) {
            row.active_tasks = beat.active_tasks;
            row.uptime_seconds = i32::try_from(beat.uptime_seconds).unwrap_or(i32::MAX);
            row.last_error_rate = beat.error_rate;
            row.last_sample_error = Some(beat.sample_error).filter(|e| !e.is_empty());
            row.monthly_spend = beat.monthly_spend.unwrap_or(row.monthly_spend);
        }
        Self {
            id: row.id,
            name: row.name,
            role: row.role.filter(|role| !role.is_empty()),
            tier: row.tier,
            status: row.status.to_string(),
            url: row.url.unwrap_or_default(),
            parent_id: row.parent_id,
            agent_card_json: row.agent_card,
            active_tasks: row.active_tasks,
            max_concurrent_tasks: row.max_concurrent_tasks,
            last_error_rate: row.last_error_rate,
            last_sample_error: row.last_sample_error.unwrap_or_default(),
            uptime_seconds: row.uptime_seconds,
            current_task: row.current_task.unwrap_or_default(),
            runtime: row.runtime,
            workspace_dir: row.workspace_dir.filter(|dir| !dir.is_empty()),
            monthly_spend: row.monthly_spend,
            budget_limit: row.budget_limit,
            x,
            y,
            collapsed,
            last_outbound_at: row.last_outbound_at.map(pb::timestamp),
        }
    }
}

fn event_message(envelope: &Envelope) -> pb::Event {
    pb::Event {
        id: envelope.id.clone(),
        event: envelope.event.to_string(),
        workspace_id: envelope.workspace_id.clone(),
        timestamp: Some(pb::timestamp(envelope.timestamp)),
        payload_json: envelope.payload.to_string(),
    }
}

fn is_external(runtime: &str) -> bool {
    runtime == "external"
}

impl WorkspacesService {
    /// The live heartbeat snapshots of `ids`; reads degrade to the stored columns when the
    /// liveness store cannot answer.
    async fn live_snapshots(&self, ids: &[String]) -> HashMap<String, BeatSnapshot> {
        self.state
            .liveness
            .snapshots(ids)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "live snapshot overlay unavailable");
                HashMap::new()
            })
    }

    /// Drops liveness for workspaces that stopped (pause, delete); the key must not expire
    /// later into an offline transition.
    async fn forget_liveness(&self, ids: &[String]) {
        for id in ids {
            if let Err(err) = self.state.liveness.forget(id).await {
                tracing::warn!(workspace_id = %id, error = %err, "liveness forget failed");
            }
        }
    }

    async fn find(
        &self,
        db: &impl ConnectionTrait,
        id: &str,
    ) -> ApiResult<Option<workspace::Model>> {
        workspace::Entity::find_by_id(id.to_owned())
            .one(db)
            .await
            .context("query failed")
    }

    /// Every descendant of `root` (not `root` itself), breadth first and cycle-safe.
    async fn descendants(
        &self,
        db: &impl ConnectionTrait,
        root: &str,
    ) -> ApiResult<Vec<workspace::Model>> {
        let mut found: Vec<workspace::Model> = Vec::new();
        let mut seen = std::collections::HashSet::from([root.to_owned()]);
        let mut frontier = vec![root.to_owned()];
        while !frontier.is_empty() {
            let children = workspace::Entity::find()
                .filter(workspace::Column::ParentId.is_in(frontier.clone()))
                .order_by_asc(workspace::Column::CreatedAt)
                .all(db)
                .await
                .context("failed to check children")?;
            frontier.clear();
            for child in children {
                if seen.insert(child.id.clone()) {
                    frontier.push(child.id.clone());
                    found.push(child);
                }
            }
        }
        Ok(found)
    }

    /// The nearest paused ancestor, if any (walks at most 32 links).
    async fn paused_ancestor(&self, row: &workspace::Model) -> ApiResult<Option<workspace::Model>> {
        let mut parent_id = row.parent_id.clone();
        for _ in 0..32 {
            let Some(id) = parent_id else { return Ok(None) };
            let Some(parent) = self.find(&self.state.db, &id).await? else {
                return Ok(None);
            };
            if parent.status == WorkspaceStatus::Paused {
                return Ok(Some(parent));
            }
            parent_id = parent.parent_id;
        }
        Ok(None)
    }

    /// A parent must exist, not be removed, and not be `child` or one of its descendants.
    async fn check_parent(&self, parent_id: &str, child: Option<&str>) -> ApiResult<String> {
        let invalid = || ApiError::bad_request("invalid parent_id");
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

    async fn create(
        &self,
        metadata: &MetadataMap,
        request: pb::CreateWorkspaceRequest,
    ) -> ApiResult<pb::CreateWorkspaceResponse> {
        self.state.auth.admin(metadata).await?;
        if request.name.is_empty() {
            return Err(ApiError::bad_request("invalid workspace payload"));
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
            return Err(ApiError::bad_request("invalid workspace fields"));
        }
        if !request.template.is_empty() && !validate::template(&request.template) {
            return Err(ApiError::bad_request("invalid template"));
        }
        if !request.workspace_dir.is_empty() && !validate::workspace_dir(&request.workspace_dir) {
            return Err(ApiError::bad_request("invalid workspace directory"));
        }
        let access = if request.workspace_access.is_empty() {
            "none"
        } else {
            request.workspace_access.as_str()
        };
        if !validate::WORKSPACE_ACCESS_VALUES.contains(&access)
            || (access != "none" && request.workspace_dir.is_empty())
        {
            return Err(ApiError::bad_request("invalid workspace access"));
        }
        if !(0..=4).contains(&request.tier) {
            return Err(ApiError::bad_request("invalid tier"));
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
                return Err(ApiError::bad_request("invalid url"));
            }
        }
        // Sorted, so the first failure reported is the same on every call.
        let mut secrets: Vec<(&String, &String)> = request.secrets.iter().collect();
        secrets.sort();
        if let Some((key, _)) = secrets
            .iter()
            .find(|(key, value)| !secrets::valid_key(key) || !secrets::valid_value(value))
        {
            return Err(ApiError::bad_request(format!("invalid secret key: {key}")));
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
            parent_id: Set(parent_id),
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
            .map_err(
                |(key, err)| match store::failure(err, "failed to save secret") {
                    failed if failed.code == ErrorCode::Internal => {
                        ApiError::internal(format!("failed to save secret: {key}"))
                    }
                    unavailable => unavailable,
                },
            )?;

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

    async fn list(&self, metadata: &MetadataMap) -> ApiResult<pb::ListWorkspacesResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = workspace::Entity::find()
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .order_by_asc(workspace::Column::CreatedAt)
            .order_by_asc(workspace::Column::Id)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        let mut layouts: HashMap<String, canvas_layout::Model> = canvas_layout::Entity::find()
            .all(&self.state.db)
            .await
            .context("query failed")?
            .into_iter()
            .map(|layout| (layout.workspace_id.clone(), layout))
            .collect();
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut beats = self.live_snapshots(&ids).await;
        let workspaces = rows
            .into_iter()
            .map(|row| {
                let layout = layouts.remove(&row.id);
                let beat = beats.remove(&row.id);
                WorkspaceView { row, layout, beat }.into()
            })
            .collect();
        Ok(pb::ListWorkspacesResponse { workspaces })
    }

    async fn get(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::Workspace> {
        let id = validate::workspace_id(raw_id)?;
        self.reader_of(metadata, &id).await?;
        let row = self
            .find(&self.state.db, &id)
            .await?
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
        let layout = canvas_layout::Entity::find_by_id(id.clone())
            .one(&self.state.db)
            .await
            .context("query failed")?;
        let beat = self.live_snapshots(&[id]).await.into_values().next();
        Ok(WorkspaceView { row, layout, beat }.into())
    }

    /// WorkspaceAuth for reading `id`, widened by D15: a workspace's own token also reads its
    /// ancestors (the runtime reads its parent's name); any other workspace stays 401.
    async fn reader_of(&self, metadata: &MetadataMap, id: &str) -> ApiResult<()> {
        let refused = match self.state.auth.workspace(metadata, id).await {
            Ok(_) => return Ok(()),
            Err(err) if err.code == ErrorCode::Unauthenticated => err,
            Err(err) => return Err(err),
        };
        let Some(bearer) = auth::bearer(metadata) else {
            return Err(refused);
        };
        match self.state.auth.workspace_token(bearer).await? {
            Some(owner)
                if self
                    .state
                    .hierarchy
                    .is_ancestor_of(id, &owner.workspace_id)
                    .await =>
            {
                Ok(())
            }
            _ => Err(refused),
        }
    }

    async fn update(
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
                return Err(ApiError::forbidden(format!(
                    "admin credential required to change {field}"
                )));
            }
        }
        if let Some(name) = &request.name {
            if name.is_empty() {
                return Err(ApiError::bad_request("invalid name"));
            }
            validate::patch_text_field("name", name)?;
        }
        if let Some(role) = request.role.as_ref().and_then(|role| role.value.as_ref()) {
            validate::patch_text_field("role", role)?;
        }
        if let Some(runtime) = &request.runtime {
            if runtime.is_empty() {
                return Err(ApiError::bad_request("invalid runtime"));
            }
            validate::patch_text_field("runtime", runtime)?;
        }
        if let Some(tier) = request.tier
            && !(1..=4).contains(&tier)
        {
            return Err(ApiError::bad_request("invalid tier"));
        }
        if let Some(dir) = request
            .workspace_dir
            .as_ref()
            .and_then(|dir| dir.value.as_ref())
            && !validate::workspace_dir(dir)
        {
            return Err(ApiError::bad_request("invalid workspace directory"));
        }
        for (field, value) in [("x", request.x), ("y", request.y)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(ApiError::bad_request(format!("invalid {field}")));
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
            return Err(ApiError::not_found(WORKSPACE_NOT_FOUND));
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
        txn.commit().await.context("failed to update workspace")?;
        self.state.events.publish_all([event]);
        if parent_id.is_some() {
            self.state.hierarchy.invalidate().await;
        }
        Ok(pb::UpdateWorkspaceResponse { needs_restart })
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteWorkspaceRequest,
    ) -> ApiResult<pb::DeleteWorkspaceResponse> {
        let id = validate::workspace_id(&request.id)?;
        self.state.auth.admin(metadata).await?;
        let db = &self.state.db;
        let root = self
            .find(db, &id)
            .await?
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
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
            let message =
                "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.";
            return Err(ApiError::conflict(message).with_body(json!({
                "status": "confirmation_required",
                "message": message,
                "children": children,
                "children_count": children.len(),
            })));
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

    async fn state_of(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::WorkspaceState> {
        let id = validate::workspace_id(raw_id)?;
        // Deliberately before auth: a deleted agent's token is revoked, and it must still learn
        // that it was deleted (the SDK exits only on 404).
        let row = self.find(&self.state.db, &id).await?;
        let Some(row) = row else {
            return Err(ApiError::not_found(WORKSPACE_NOT_FOUND)
                .with_body(json!({"workspace_id": id, "deleted": true})));
        };
        if row.status == WorkspaceStatus::Removed {
            return Err(ApiError::not_found(WORKSPACE_NOT_FOUND).with_body(
                json!({"workspace_id": id, "status": WorkspaceStatus::Removed, "deleted": true}),
            ));
        }
        self.state.auth.workspace(metadata, &id).await?;
        Ok(pb::WorkspaceState {
            workspace_id: id,
            paused: row.status == WorkspaceStatus::Paused,
            status: row.status.to_string(),
            deleted: false,
        })
    }

    async fn pause(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::PauseWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        self.state.auth.workspace(metadata, &id).await?;
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
            .ok_or_else(|| ApiError::not_found("workspace not found or already paused"))?;
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

    async fn resume(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ResumeWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        let db = &self.state.db;
        let target = self
            .find(db, &id)
            .await?
            .filter(|row| row.status == WorkspaceStatus::Paused)
            .ok_or_else(|| ApiError::not_found("workspace not found or not paused"))?;
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
        txn.commit().await.context("failed to resume workspace")?;
        let resumed_count = recorded.len() as i32;
        self.state.events.publish_all(recorded);
        Ok(pb::ResumeWorkspaceResponse {
            status: target_status.to_string(),
            resumed_count,
        })
    }

    async fn restart(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::RestartWorkspaceResponse> {
        let id = validate::workspace_id(raw_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        let db = &self.state.db;
        let row = store::live_workspace(db, &id).await?;
        if let Some(parent) = self.paused_ancestor(&row).await? {
            return Err(paused_parent(&parent.name));
        }
        if is_external(&row.runtime) {
            return Err(ApiError::conflict(
                "external workspaces are restarted by their operator, not the platform",
            ));
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
            return Err(ApiError::not_found(WORKSPACE_NOT_FOUND));
        }
        let payload = json!({"name": row.name, "tier": row.tier, "runtime": row.runtime});
        let event = self
            .state
            .events
            .insert(&txn, EventType::WorkspaceProvisioning, Some(&id), payload)
            .await
            .context("failed to restart workspace")?;
        txn.commit().await.context("failed to restart workspace")?;
        self.state.events.publish_all([event]);
        Ok(pb::RestartWorkspaceResponse {
            status: WorkspaceStatus::Provisioning.to_string(),
        })
    }

    async fn tokens(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListTokensRequest,
    ) -> ApiResult<pb::ListTokensResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        let limit = if (1..=200).contains(&request.limit) {
            request.limit
        } else {
            50
        };
        let rows = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(id))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .order_by(workspace_token::Column::CreatedAt, Order::Desc)
            .order_by(workspace_token::Column::Id, Order::Desc)
            .limit(limit as u64)
            .offset(request.offset.max(0) as u64)
            .all(&self.state.db)
            .await
            .context("failed to list tokens")?;
        let tokens = rows
            .into_iter()
            .map(|row| pb::TokenInfo {
                id: row.id,
                prefix: row.prefix,
                created_at: Some(pb::timestamp(row.created_at)),
                last_used_at: row.last_used_at.map(pb::timestamp),
            })
            .collect();
        Ok(pb::ListTokensResponse { tokens })
    }

    async fn create_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let live = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(id.clone()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .count(&self.state.db)
            .await
            .context("failed to create token")?;
        if live >= MAX_LIVE_TOKENS {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                "maximum 50 active tokens per workspace",
            ));
        }
        let auth_token = auth::issue_workspace_token(&self.state.db, &id)
            .await
            .context("failed to create token")?;
        Ok(pb::CreateTokenResponse {
            auth_token,
            workspace_id: id,
        })
    }

    async fn revoke_token(
        &self,
        metadata: &MetadataMap,
        request: &pb::RevokeTokenRequest,
    ) -> ApiResult<pb::RevokeTokenResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        let not_found = || ApiError::not_found("token not found or already revoked");
        let token_id = validate::parse_uuid(&request.token_id).ok_or_else(not_found)?;
        let revoked = workspace_token::Entity::update_many()
            .col_expr(
                workspace_token::Column::RevokedAt,
                Expr::value(store::now()),
            )
            .filter(workspace_token::Column::Id.eq(token_id.clone()))
            .filter(workspace_token::Column::WorkspaceId.eq(id.clone()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .exec(&self.state.db)
            .await
            .context("failed to revoke token")?;
        if revoked.rows_affected == 0 {
            return Err(not_found());
        }
        // Every replica drops the token from its caches and closes streams opened with it.
        self.state
            .events
            .record(
                &self.state.db,
                EventType::WorkspaceTokenRevoked,
                Some(&id),
                json!({"token_id": token_id}),
            )
            .await;
        Ok(pb::RevokeTokenResponse {})
    }

    async fn mint_test_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let hidden = || ApiError::not_found("not found");
        let auth = &self.state.auth;
        if !self.state.settings.test_tokens_enabled {
            return Err(hidden());
        }
        // Only the admin token itself (never an org key) mints test tokens, dev mode aside.
        if !auth.dev_mode() {
            if !auth.has_admin_token() {
                return Err(hidden());
            }
            if !auth::bearer(metadata).is_some_and(|bearer| auth.is_admin_token(bearer)) {
                return Err(ApiError::unauthenticated(auth::ADMIN_AUTH_REQUIRED));
            }
        }
        let id = validate::workspace_id(raw_id)?;
        let db = &self.state.db;
        self.find(db, &id)
            .await
            .map_err(|_| ApiError::internal("lookup failed"))?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
        let auth_token = auth::issue_workspace_token(db, &id)
            .await
            .context("token issue failed")?;
        Ok(pb::CreateTokenResponse {
            auth_token,
            workspace_id: id,
        })
    }

    async fn org_tokens(&self, metadata: &MetadataMap) -> ApiResult<pb::ListOrgTokensResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = org_token::Entity::find()
            .filter(org_token::Column::RevokedAt.is_null())
            .order_by(org_token::Column::CreatedAt, Order::Desc)
            .order_by(org_token::Column::Id, Order::Desc)
            .limit(ORG_TOKENS_PAGE)
            .all(&self.state.db)
            .await
            .context("failed to list tokens")?;
        let tokens = rows
            .into_iter()
            .map(|row| pb::OrgTokenInfo {
                id: row.id,
                prefix: row.prefix,
                name: row.name.filter(|name| !name.is_empty()),
                org_id: row.org_id,
                created_by: row.created_by.filter(|by| !by.is_empty()),
                created_at: Some(pb::timestamp(row.created_at)),
                last_used_at: row.last_used_at.map(pb::timestamp),
            })
            .collect();
        Ok(pb::ListOrgTokensResponse { tokens })
    }

    async fn create_org_token(
        &self,
        metadata: &MetadataMap,
        name: &str,
    ) -> ApiResult<pb::CreateOrgTokenResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        if name.chars().count() > 100 {
            return Err(ApiError::bad_request("name too long (max 100 chars)"));
        }
        let (created_by, org_id) = match &principal {
            Principal::Org(key) => (format!("org-token:{}", key.prefix), key.org_id.clone()),
            _ => ("admin-token".to_owned(), None),
        };
        let token = MintedToken::generate();
        let id = uuid::Uuid::new_v4().to_string();
        org_token::Entity::insert(org_token::ActiveModel {
            id: Set(id.clone()),
            token_hash: Set(token.hash),
            prefix: Set(token.prefix.clone()),
            name: Set(Some(name.to_owned()).filter(|name| !name.is_empty())),
            created_by: Set(Some(created_by)),
            org_id: Set(org_id),
            created_at: Set(store::now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        })
        .exec(&self.state.db)
        .await
        .context("failed to mint token")?;
        Ok(pb::CreateOrgTokenResponse {
            id,
            prefix: token.prefix,
            name: name.to_owned(),
            auth_token: token.plaintext,
        })
    }

    async fn revoke_org_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::RevokeOrgTokenResponse> {
        self.state.auth.admin(metadata).await?;
        let not_found = || ApiError::not_found("token not found or already revoked");
        let id = validate::parse_uuid(raw_id).ok_or_else(not_found)?;
        let revoked = org_token::Entity::update_many()
            .col_expr(org_token::Column::RevokedAt, Expr::value(store::now()))
            .filter(org_token::Column::Id.eq(id))
            .filter(org_token::Column::RevokedAt.is_null())
            .exec(&self.state.db)
            .await
            .context("failed to revoke token")?;
        if revoked.rows_affected == 0 {
            return Err(not_found());
        }
        Ok(pb::RevokeOrgTokenResponse {})
    }

    async fn events(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListEventsRequest,
    ) -> ApiResult<pb::ListEventsResponse> {
        self.state.auth.admin(metadata).await?;
        let mut query = structure_event::Entity::find();
        if let Some(workspace_id) = &request.workspace_id {
            let id = validate::workspace_id(workspace_id)?;
            query = query.filter(structure_event::Column::WorkspaceId.eq(id));
        }
        let rows = query
            .order_by(structure_event::Column::CreatedAt, Order::Desc)
            .order_by(structure_event::Column::Id, Order::Desc)
            .limit(EVENTS_PAGE)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        let events = rows
            .into_iter()
            .map(|row| pb::Event {
                id: row.id,
                event: row.event_type,
                workspace_id: row.workspace_id,
                timestamp: Some(pb::timestamp(row.created_at)),
                payload_json: row.payload,
            })
            .collect();
        Ok(pb::ListEventsResponse { events })
    }

    async fn watch(
        &self,
        metadata: &MetadataMap,
    ) -> ApiResult<<Self as pb::workspaces_server::Workspaces>::WatchEventsStream> {
        // An agent sees itself and the peers it may talk to; an operator sees everything.
        let agent = match crate::auth::claimed_workspace(metadata) {
            Some(raw) => {
                let id = validate::workspace_id(raw)?;
                self.state.auth.workspace(metadata, &id).await?;
                Some(id)
            }
            None => {
                self.state.auth.admin(metadata).await?;
                None
            }
        };
        let (receiver, guard) = self.state.events.watch();
        let hierarchy = self.state.hierarchy.clone();
        let shutdown = self.state.shutdown.clone();
        let stream = futures::stream::unfold(
            (receiver, hierarchy, agent, shutdown, false, guard),
            |(mut receiver, hierarchy, agent, shutdown, ended, guard)| async move {
                if ended {
                    return None;
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        received = receiver.recv() => received,
                    };
                    let envelope = match received {
                        Ok(envelope) => envelope,
                        Err(RecvError::Closed) => return None,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "event watcher too slow; disconnecting");
                            let behind = ApiError::new(
                                ErrorCode::TooManyRequests,
                                "event watcher fell behind; reconnect and rehydrate",
                            );
                            return Some((
                                Err(behind.into()),
                                (receiver, hierarchy, agent, shutdown, true, guard),
                            ));
                        }
                    };
                    let visible = match (&agent, &envelope.workspace_id) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(caller), Some(subject)) => {
                            hierarchy.can_communicate(caller, subject).await
                        }
                    };
                    if visible {
                        let envelope = match &agent {
                            Some(watcher) => envelope.seen_by(watcher),
                            None => envelope,
                        };
                        return Some((
                            Ok(event_message(&envelope)),
                            (receiver, hierarchy, agent, shutdown, false, guard),
                        ));
                    }
                }
            },
        );
        Ok(Box::pin(stream))
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
    ApiError::conflict(format!(
        "parent workspace \"{name}\" is paused — resume it first"
    ))
}

/// How an operator connects the agent of a new external workspace: the first register mints
/// its token, so the snippets register without a bearer and keep the returned token.
fn connection_block(id: &str, name: &str, platform_url: &str) -> pb::ExternalConnection {
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

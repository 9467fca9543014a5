//! The Workspaces gRPC service: the workspace resource and its lifecycle, tokens, org keys and the
//! event log (docs/workspaces.md §1–3, docs/registry.md §6). Every RPC authenticates first (except
//! the deliberate `/state` ordering) and changes state with conditional updates inside one
//! transaction, then publishes the events it recorded. It knows nothing about HTTP.

use std::{collections::HashMap, pin::Pin};

use futures::Stream;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use tonic::{Request, Status};

use crate::{
    auth,
    domain::{WorkspaceStatus, validate},
    error::{ApiResult, RpcResult, reply},
    liveness::BeatSnapshot,
    pb,
    state::Platform,
    store::{
        DbContext,
        entities::{canvas_layout, workspace},
    },
};

pub mod budget;
mod config;
mod create;
pub(crate) use create::connection_block;
mod delete;
mod error;
mod events;
mod lifecycle;
mod read;
mod tokens;
mod update;

pub struct WorkspacesService {
    state: Platform,
}

impl WorkspacesService {
    /// Appends `operation` to the audit trail after the change it records committed.
    async fn record(
        &self,
        principal: &auth::Principal,
        metadata: &tonic::metadata::MetadataMap,
        action: crate::audit::Action<'_>,
    ) {
        self.state
            .audit
            .record(&self.state.db, principal, metadata, action)
            .await;
    }

    /// Appends `operation` on workspace `id` to the audit trail inside `txn`, the transaction
    /// making the change.
    #[allow(clippy::too_many_arguments)]
    async fn audited(
        &self,
        txn: &impl ConnectionTrait,
        principal: &auth::Principal,
        metadata: &tonic::metadata::MetadataMap,
        operation: &'static str,
        id: &str,
        target: Option<String>,
        details: serde_json::Value,
        failed: &'static str,
    ) -> ApiResult<()> {
        let action = crate::audit::Action {
            operation,
            workspace_id: Some(id),
            target,
            details,
        };
        self.state
            .audit
            .append(txn, principal, metadata, action)
            .await
            .context(failed)
    }
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
                    .ok_or_else(|| auth::AuthError::InvalidAdminToken.into())
            }));
        }
        let principal: ApiResult<_> = match &request.get_ref().workspace_id {
            Some(id) => match validate::workspace_id(id) {
                Ok(id) => Ok(self.state.auth.workspace(metadata, &id).await?),
                Err(err) => Err(err),
            },
            None => Ok(self.state.auth.admin(metadata).await?),
        };
        reply(principal.map(|principal| pb::WhoAmIResponse {
            principal: principal.kind().to_owned(),
        }))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> RpcResult<pb::WorkspaceConfig> {
        reply(
            self.get_config(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn update_config(
        &self,
        request: Request<pb::UpdateConfigRequest>,
    ) -> RpcResult<pb::WorkspaceConfig> {
        reply(
            self.update_config(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn get_budget(&self, request: Request<pb::GetBudgetRequest>) -> RpcResult<pb::Budget> {
        reply(
            self.get_budget(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn update_budget(
        &self,
        request: Request<pb::UpdateBudgetRequest>,
    ) -> RpcResult<pb::Budget> {
        reply(
            self.update_budget(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> RpcResult<pb::WorkspaceMetrics> {
        reply(
            self.get_metrics(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn liveness(
        &self,
        request: Request<pb::LivenessRequest>,
    ) -> RpcResult<pb::LivenessResponse> {
        let admitted = self.state.auth.admin(request.metadata()).await;
        reply(admitted.map_err(Into::into).map(|_| {
            pb::LivenessResponse {
                subsystems: self
                    .state
                    .supervision
                    .snapshot()
                    .into_iter()
                    .map(|state| pb::LoopLiveness {
                        name: state.name.to_owned(),
                        last_tick_at: Some(pb::timestamp(state.last_tick_at)),
                        seconds_ago: state.seconds_ago,
                        stalled: state.stalled,
                    })
                    .collect(),
            }
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
        reply(
            self.watch(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
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
            row.last_heartbeat_at = Some(beat.at);
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
            last_heartbeat_at: row.last_heartbeat_at.map(pb::timestamp),
        }
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
}

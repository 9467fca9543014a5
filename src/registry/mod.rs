//! The Registry gRPC service (docs/registry.md §1–5, §7, docs/decisions.md D1, D2, D5, D7, D10,
//! D12): registration with the atomic first mint, heartbeats over unary calls and over a stream,
//! card updates, discovery, peers, access checks, activity, and the offline rules. The heartbeat is
//! the hot path: cached credentials and state, one liveness write, and a datastore write only on a
//! transition or a `current_task` change (everything else is flushed write-behind).

pub(crate) mod activity;
mod discovery;
mod error;
mod heartbeat;
mod register;
mod session_search;
mod stream;
mod sweeps;
pub mod transitions;
mod write_behind;

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use sea_orm::EntityTrait;
use tonic::{Request, Status, Streaming, metadata::MetadataMap};

use crate::{
    auth,
    domain::WorkspaceStatus,
    error::{ApiError, ApiResult, RpcResult, reply},
    hot::CachedWorkspace,
    pb,
    state::Platform,
    store::{self, entities::workspace},
};

use self::error::RegistryError;
pub use self::write_behind::flush_write_behind;

/// Which credential let an agent in; a stream closes when its token is revoked.
#[derive(Debug, Clone)]
pub(crate) struct AgentCredential {
    pub(crate) token_id: Option<String>,
}

/// The cached state of a workspace, loaded on a miss. Missing → 404.
async fn workspace_state(state: &Platform, id: &str) -> ApiResult<CachedWorkspace> {
    if let Some(cached) = state.hot.workspace(id) {
        return Ok(cached);
    }
    let row = match workspace::Entity::find_by_id(id.to_owned())
        .one(&state.db)
        .await
    {
        Ok(row) => row,
        // While the datastore is down, the last known state serves the heartbeat path: every
        // transition needs the datastore too, so nothing newer can exist (docs/decisions.md, the
        // hot paths).
        Err(err) if store::is_unavailable(&err) => {
            return state
                .hot
                .stale_workspace(id)
                .ok_or_else(ApiError::datastore_unavailable);
        }
        Err(err) => return Err(store::failure(err, "query failed")),
    }
    .ok_or(RegistryError::WorkspaceNotFound)?;
    let cached = CachedWorkspace {
        status: row.status,
        runtime: row.runtime,
        current_task: row.current_task.unwrap_or_default(),
        max_concurrent_tasks: row.max_concurrent_tasks,
    };
    state.hot.remember_workspace(id, cached.clone());
    Ok(cached)
}

/// What the wiring gives the registry to call when a beat reports `(workspace_id,
/// active_tasks, max_concurrent_tasks)`: the busy queue drains on spare capacity. The registry
/// itself knows no feature above it.
pub type BeatHook = Arc<dyn Fn(&str, i32, i32) + Send + Sync>;

#[derive(Clone)]
pub struct RegistryService {
    state: Platform,
    on_beat: BeatHook,
}

fn invalid_body() -> ApiError {
    RegistryError::InvalidBody.into()
}

impl RegistryService {
    pub fn new(state: Platform, on_beat: BeatHook) -> Self {
        Self { state, on_beat }
    }

    /// Heartbeat, update-card, discovery and streams: the workspace's own token or the admin
    /// token (dev mode aside). Validated tokens are cached briefly.
    pub(crate) async fn authenticate_agent(
        &self,
        metadata: &MetadataMap,
        id: &str,
    ) -> ApiResult<AgentCredential> {
        let auth = &self.state.auth;
        let Some(bearer) = auth::bearer(metadata) else {
            return if auth.dev_mode() {
                Ok(AgentCredential { token_id: None })
            } else {
                Err(auth::AuthError::MissingWorkspaceToken.into())
            };
        };
        if auth.is_admin_token(bearer) {
            return Ok(AgentCredential { token_id: None });
        }
        match auth.workspace_token(bearer).await? {
            Some(owner) if owner.workspace_id == id => Ok(AgentCredential {
                token_id: Some(owner.token_id),
            }),
            _ => Err(auth::AuthError::InvalidWorkspaceToken.into()),
        }
    }

    async fn workspace_state(&self, id: &str) -> ApiResult<CachedWorkspace> {
        workspace_state(&self.state, id).await
    }

    /// Like `workspace_state`, with removed workspaces answered 410 (docs/registry.md §1).
    async fn live_workspace_state(&self, id: &str) -> ApiResult<CachedWorkspace> {
        let state = self.workspace_state(id).await?;
        if state.status == WorkspaceStatus::Removed {
            return Err(ApiError::from(RegistryError::WorkspaceRemoved));
        }
        Ok(state)
    }
}

/// Background work of the registry: expiry handling, the liveness sweep, the write-behind
/// flusher, and cache invalidation plus control frames from events. Runs until shutdown.
pub fn spawn_background(state: &Platform) {
    tokio::spawn(stream::dispatch_events(state.clone()));
    tokio::spawn(sweeps::handle_expirations(state.clone()));
    tokio::spawn(sweeps::sweep_liveness(state.clone()));
    tokio::spawn(write_behind::run_flusher(state.clone()));
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> RpcResult<pb::RegisterResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(RegistryService::register(self, &metadata, body).await)
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> RpcResult<pb::HeartbeatResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(RegistryService::heartbeat(self, &metadata, body).await)
    }

    type HeartbeatStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

    async fn heartbeat_stream(
        &self,
        request: Request<Streaming<pb::AgentFrame>>,
    ) -> RpcResult<Self::HeartbeatStreamStream> {
        reply(stream::open(self.clone(), request).await)
    }

    async fn update_card(
        &self,
        request: Request<pb::UpdateCardRequest>,
    ) -> RpcResult<pb::UpdateCardResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(RegistryService::update_card(self, &metadata, body).await)
    }

    async fn discover(
        &self,
        request: Request<pb::DiscoverRequest>,
    ) -> RpcResult<pb::DiscoverResponse> {
        reply(RegistryService::discover(self, request.metadata(), request.get_ref()).await)
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> RpcResult<pb::ListPeersResponse> {
        reply(self.peers(request.metadata(), request.get_ref()).await)
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> RpcResult<pb::CheckAccessResponse> {
        reply(RegistryService::check_access(self, request.metadata(), request.get_ref()).await)
    }

    async fn log_activity(
        &self,
        request: Request<pb::LogActivityRequest>,
    ) -> RpcResult<pb::LogActivityResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(activity::log(&self.state, &metadata, body).await)
    }

    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> RpcResult<pb::ListActivityResponse> {
        reply(activity::list(&self.state, request.metadata(), request.get_ref()).await)
    }

    async fn session_search(
        &self,
        request: Request<pb::SessionSearchRequest>,
    ) -> RpcResult<pb::SessionSearchResponse> {
        reply(session_search::search(&self.state, request.metadata(), request.get_ref()).await)
    }

    async fn notify(&self, request: Request<pb::NotifyRequest>) -> RpcResult<pb::NotifyResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(activity::notify(&self.state, &metadata, body).await)
    }
}

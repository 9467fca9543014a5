//! The Registry gRPC service (registry contract §1–5, §7, design D1, D2, D5, D7, D10, D12):
//! registration with the atomic first mint, heartbeats over unary calls and over a stream, card
//! updates, discovery, peers, access checks, activity, and the offline rules. The heartbeat is
//! the hot path: cached credentials and state, one liveness write, and a datastore write only
//! on a transition or a `current_task` change (everything else is flushed write-behind).

pub(crate) mod activity;
mod stream;
pub mod transitions;

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, Statement, TransactionTrait, sea_query::Expr,
};
use serde_json::{Value, json};
use tonic::{Request, Status, Streaming, metadata::MetadataMap};
use tracing::{debug, info, warn};

use crate::{
    auth,
    domain::{
        EventType, WorkspaceStatus,
        validate::{self, WORKSPACE_NOT_FOUND},
    },
    error::{ApiError, ApiResult, RpcResult, reply},
    hot::CachedWorkspace,
    liveness::BeatSnapshot,
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{workspace, workspace_token},
    },
};
use transitions::BeatFacts;

const WORKSPACE_REMOVED: &str = "workspace removed";
/// How often the write-behind buffer is flushed (one statement per flush).
const FLUSH_EVERY: Duration = Duration::from_secs(2);
const FLUSH_BATCH: usize = 500;

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
        // transition needs the datastore too, so nothing newer can exist (design §5).
        Err(err) if store::is_unavailable(&err) => {
            return state
                .hot
                .stale_workspace(id)
                .ok_or_else(ApiError::datastore_unavailable);
        }
        Err(err) => return Err(store::failure(err, "query failed")),
    }
    .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
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
    ApiError::bad_request("invalid request body")
}

/// An agent card must be a JSON object.
fn parse_card(raw: &str) -> ApiResult<Value> {
    match serde_json::from_str::<Value>(raw) {
        Ok(card @ Value::Object(_)) => Ok(card),
        _ => Err(invalid_body()),
    }
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
                Err(ApiError::unauthenticated(auth::MISSING_WORKSPACE_TOKEN))
            };
        };
        if auth.is_admin_token(bearer) {
            return Ok(AgentCredential { token_id: None });
        }
        match auth.workspace_token(bearer).await? {
            Some(owner) if owner.workspace_id == id => Ok(AgentCredential {
                token_id: Some(owner.token_id),
            }),
            _ => Err(ApiError::unauthenticated(auth::INVALID_WORKSPACE_TOKEN)),
        }
    }

    async fn workspace_state(&self, id: &str) -> ApiResult<CachedWorkspace> {
        workspace_state(&self.state, id).await
    }

    /// Like `workspace_state`, with removed workspaces answered 410 (registry contract).
    async fn live_workspace_state(&self, id: &str) -> ApiResult<CachedWorkspace> {
        let state = self.workspace_state(id).await?;
        if state.status == WorkspaceStatus::Removed {
            return Err(ApiError::new(
                crate::error::ErrorCode::Gone,
                WORKSPACE_REMOVED,
            ));
        }
        Ok(state)
    }

    async fn register(
        &self,
        metadata: &MetadataMap,
        request: pb::RegisterRequest,
    ) -> ApiResult<pb::RegisterResponse> {
        let id = validate::parse_uuid(&request.id).ok_or_else(invalid_body)?;
        if request.url.is_empty() {
            return Err(invalid_body());
        }
        let card = parse_card(&request.agent_card_json)?;
        self.state
            .url_policy
            .check_registration(&request.url, self.state.resolver.as_ref())
            .await
            .map_err(ApiError::bad_request)?;
        let db = &self.state.db;
        let row = workspace::Entity::find_by_id(id.clone())
            .one(db)
            .await
            .context("registration failed")?
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
        if row.status == WorkspaceStatus::Removed {
            return Err(ApiError::new(
                crate::error::ErrorCode::Gone,
                WORKSPACE_REMOVED,
            ));
        }

        // D1/D2: a bearer must be this workspace's token or the admin token; without one, only
        // a workspace that never had a token, or an SDK restart with an unchanged URL, passes —
        // in dev mode too (D14: the URL-hijack guard stays on).
        let auth = &self.state.auth;
        let privileged = match auth::bearer(metadata) {
            Some(bearer) if auth.is_admin_token(bearer) => true,
            Some(_) => {
                self.authenticate_agent(metadata, &id).await?;
                true
            }
            None => false,
        };
        if !privileged {
            let ever_had_token = workspace_token::Entity::find()
                .filter(workspace_token::Column::WorkspaceId.eq(id.clone()))
                .count(db)
                .await
                .context("registration failed")?
                > 0;
            if ever_had_token {
                // Read after the count: a concurrent first registration may just have set it.
                let stored: Option<Option<String>> = workspace::Entity::find_by_id(id.clone())
                    .select_only()
                    .column(workspace::Column::Url)
                    .into_tuple()
                    .one(db)
                    .await
                    .context("registration failed")?;
                if same_url(stored.flatten().as_deref(), &request.url) {
                    // D14: nothing is refreshed; knowing an id must not keep a workspace shown
                    // online. Liveness comes from the agent's next authenticated heartbeat.
                    return Ok(pb::RegisterResponse { auth_token: None });
                }
                return Err(ApiError::unauthenticated(auth::MISSING_WORKSPACE_TOKEN));
            }
        }

        let stored = row.url.clone().unwrap_or_default();
        let effective_url = if stored.starts_with("http://127.0.0.1") {
            stored
        } else {
            request.url.clone()
        };
        let txn = db.begin().await.context("registration failed")?;
        // Serialises concurrent first registrations of this workspace (Postgres row lock;
        // SQLite has a single writer), so exactly one of them mints.
        let locked = workspace::Entity::find_by_id(id.clone())
            .lock_exclusive()
            .one(&txn)
            .await
            .context("registration failed")?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or_else(|| ApiError::new(crate::error::ErrorCode::Gone, WORKSPACE_REMOVED))?;
        let status = match locked.status {
            WorkspaceStatus::Paused | WorkspaceStatus::Hibernated => locked.status,
            _ => WorkspaceStatus::Online,
        };
        let now = store::now();
        workspace::Entity::update_many()
            .col_expr(
                workspace::Column::AgentCard,
                Expr::value(request.agent_card_json.clone()),
            )
            .col_expr(workspace::Column::Url, Expr::value(effective_url.clone()))
            .col_expr(workspace::Column::Status, Expr::value(status))
            .col_expr(workspace::Column::LastHeartbeatAt, Expr::value(now))
            .col_expr(workspace::Column::UpdatedAt, Expr::value(now))
            .filter(workspace::Column::Id.eq(id.clone()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .exec(&txn)
            .await
            .context("registration failed")?;
        let live_tokens = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(id.clone()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .count(&txn)
            .await
            .context("registration failed")?;
        let auth_token = if live_tokens == 0 {
            Some(
                auth::issue_workspace_token(&txn, &id)
                    .await
                    .context("registration failed")?,
            )
        } else {
            None
        };
        let event = self
            .state
            .events
            .insert(
                &txn,
                EventType::WorkspaceOnline,
                Some(&id),
                json!({"url": effective_url, "agent_card": card}),
            )
            .await
            .context("registration failed")?;
        txn.commit().await.context("registration failed")?;
        self.state.events.publish_all([event]);
        self.state.hot.forget_workspace(&id);
        self.refresh_liveness(&id).await;
        if auth_token.is_some() {
            info!(workspace_id = %id, "first registration minted the workspace token");
        }
        Ok(pb::RegisterResponse { auth_token })
    }

    /// Registration refreshes liveness best-effort: a liveness failure never fails it.
    async fn refresh_liveness(&self, id: &str) {
        let snapshot = BeatSnapshot {
            at: store::now(),
            active_tasks: 0,
            uptime_seconds: 0,
            error_rate: 0.0,
            sample_error: String::new(),
            monthly_spend: None,
            native_session: false,
        };
        if let Err(err) = self.state.liveness.beat(id, &snapshot).await {
            warn!(workspace_id = %id, error = %err, "liveness refresh on register failed");
        }
    }

    /// One heartbeat, whatever the transport. Returns the status after it.
    pub(crate) async fn beat(
        &self,
        id: &str,
        request: &pb::HeartbeatRequest,
    ) -> ApiResult<WorkspaceStatus> {
        let cached = self.live_workspace_state(id).await?;
        let error_rate = if request.error_rate.is_finite() {
            request.error_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let overrides = self
            .state
            .hot
            .overrides(id, request.runtime_metadata.as_ref());
        let snapshot = BeatSnapshot {
            at: store::now(),
            active_tasks: request.active_tasks,
            uptime_seconds: request.uptime_seconds,
            error_rate,
            sample_error: request.sample_error.clone(),
            monthly_spend: request
                .monthly_spend
                .filter(|spend| *spend > 0)
                .map(|spend| spend.min(1_000_000_000_000)),
            native_session: overrides.native_session,
        };
        self.state
            .liveness
            .beat(id, &snapshot)
            .await
            .map_err(|err| {
                warn!(workspace_id = %id, error = %err, "heartbeat rejected: liveness store down");
                ApiError::datastore_unavailable()
            })?;

        let facts = BeatFacts {
            error_rate,
            runtime_state: &request.runtime_state,
            sample_error: &request.sample_error,
            native: overrides.status_mgmt,
        };
        let mut status = cached.status;
        if let Some((to, payload)) = transitions::evaluate(cached.status, facts)
            && self.transition(id, cached.status, to, payload).await?
        {
            status = to;
        }
        if request.current_task != cached.current_task {
            self.write_current_task(id, request).await?;
            self.state.events.broadcast_only(
                EventType::TaskUpdated,
                Some(id),
                json!({"current_task": request.current_task, "active_tasks": request.active_tasks}),
            );
        }
        self.state.hot.defer(id, snapshot);
        (self.on_beat)(id, request.active_tasks, cached.max_concurrent_tasks);
        self.state.events.broadcast_only(
            EventType::WorkspaceHeartbeat,
            Some(id),
            json!({"active_tasks": request.active_tasks, "uptime_seconds": request.uptime_seconds}),
        );
        Ok(status)
    }

    /// A conditional status change with its event, in one transaction. False when another
    /// writer changed the status first (the cache is then dropped).
    async fn transition(
        &self,
        id: &str,
        from: WorkspaceStatus,
        to: WorkspaceStatus,
        payload: Value,
    ) -> ApiResult<bool> {
        let event = transition_in(&self.state, id, &[from], to, payload)
            .await
            .context("failed to update")?;
        self.state.hot.forget_workspace(id);
        match event {
            Some(event) => {
                self.state.events.publish_all([event]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn write_current_task(&self, id: &str, request: &pb::HeartbeatRequest) -> ApiResult<()> {
        workspace::Entity::update_many()
            .col_expr(
                workspace::Column::CurrentTask,
                Expr::value(Some(request.current_task.clone()).filter(|task| !task.is_empty())),
            )
            .col_expr(
                workspace::Column::ActiveTasks,
                Expr::value(request.active_tasks),
            )
            .filter(workspace::Column::Id.eq(id.to_owned()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .exec(&self.state.db)
            .await
            .context("failed to update")?;
        if let Some(mut state) = self.state.hot.workspace(id) {
            state.current_task = request.current_task.clone();
            self.state.hot.remember_workspace(id, state);
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        metadata: &MetadataMap,
        request: pb::HeartbeatRequest,
    ) -> ApiResult<pb::HeartbeatResponse> {
        if request.workspace_id.is_empty() {
            return Err(invalid_body());
        }
        let id = validate::parse_uuid(&request.workspace_id)
            .ok_or_else(|| ApiError::bad_request(validate::INVALID_WORKSPACE_ID))?;
        self.authenticate_agent(metadata, &id).await?;
        let status = self.beat(&id, &request).await?;
        Ok(pb::HeartbeatResponse {
            status: status.to_string(),
        })
    }

    async fn update_card(
        &self,
        metadata: &MetadataMap,
        request: pb::UpdateCardRequest,
    ) -> ApiResult<pb::UpdateCardResponse> {
        let id = validate::parse_uuid(&request.workspace_id).ok_or_else(invalid_body)?;
        let card = parse_card(&request.agent_card_json)?;
        self.authenticate_agent(metadata, &id).await?;
        self.live_workspace_state(&id).await?;
        let txn = self
            .state
            .db
            .begin()
            .await
            .context("failed to update card")?;
        let changed = workspace::Entity::update_many()
            .col_expr(
                workspace::Column::AgentCard,
                Expr::value(request.agent_card_json),
            )
            .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.eq(id.clone()))
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .exec(&txn)
            .await
            .context("failed to update card")?;
        if changed.rows_affected == 0 {
            return Err(ApiError::new(
                crate::error::ErrorCode::Gone,
                WORKSPACE_REMOVED,
            ));
        }
        let event = self
            .state
            .events
            .insert(
                &txn,
                EventType::AgentCardUpdated,
                Some(&id),
                json!({"agent_card": card}),
            )
            .await
            .context("failed to update card")?;
        txn.commit().await.context("failed to update card")?;
        self.state.events.publish_all([event]);
        Ok(pb::UpdateCardResponse {})
    }

    /// The caller named by `x-workspace-id`, authenticated (DiscoveryAuth).
    async fn discovery_caller(&self, metadata: &MetadataMap) -> ApiResult<String> {
        let raw = crate::auth::claimed_workspace(metadata)
            .ok_or_else(|| ApiError::bad_request("X-Workspace-ID header is required"))?;
        let caller = validate::workspace_id(raw)?;
        self.authenticate_agent(metadata, &caller).await?;
        Ok(caller)
    }

    async fn discover(
        &self,
        metadata: &MetadataMap,
        request: &pb::DiscoverRequest,
    ) -> ApiResult<pb::DiscoverResponse> {
        let caller = self.discovery_caller(metadata).await?;
        let target = validate::workspace_id(&request.target_id)?;
        if !self.state.hierarchy.can_communicate(&caller, &target).await {
            return Err(ApiError::forbidden(
                "not authorized to discover this workspace",
            ));
        }
        let row = workspace::Entity::find_by_id(target.clone())
            .one(&self.state.db)
            .await
            .context("lookup failed")?
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
        let caller_in_container = self.workspace_state(&caller).await?.runtime != "external";
        let url = self.reachable_url(&row, caller_in_container).await?;
        Ok(pb::DiscoverResponse {
            id: row.id,
            url,
            name: row.name,
        })
    }

    /// The URL a peer can use to reach `target` directly (registry contract §4.2), exactly as
    /// registered (D16) — but in dev mode a container caller gets a host-run agent's loopback
    /// URL as `host.docker.internal`, the name its container reaches the host by.
    async fn reachable_url(
        &self,
        target: &workspace::Model,
        caller_in_container: bool,
    ) -> ApiResult<String> {
        let unavailable = || {
            ApiError::new(
                crate::error::ErrorCode::Unavailable,
                "workspace not available",
            )
            .with_fields(json!({"status": target.status}))
        };
        if target.status == WorkspaceStatus::Removed {
            return Err(unavailable());
        }
        let stored = target.url.clone().unwrap_or_default();
        if stored.starts_with("remote://") {
            return Ok(stored);
        }
        if !stored.is_empty() {
            // The stored URL is what is judged: the Docker host name resolves in the
            // container, not necessarily here.
            let rewrite =
                self.state.auth.dev_mode() && target.runtime == "external" && caller_in_container;
            return self
                .state
                .url_policy
                .check_use(&stored, self.state.resolver.as_ref())
                .await
                .map(|_| if rewrite { rewrite_loopback_host(&stored) } else { stored })
                .map_err(|reason| {
                    debug!(workspace_id = %target.id, %reason, "discovered url failed the safety check");
                    ApiError::new(crate::error::ErrorCode::Unavailable, "workspace URL failed safety check")
                });
        }
        if target.status.is_live() && target.runtime != "external" {
            return Ok(format!("http://ws-{}:8000", &target.id[..12]));
        }
        Err(unavailable())
    }

    async fn peers(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListPeersRequest,
    ) -> ApiResult<pb::ListPeersResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.authenticate_agent(metadata, &id).await?;
        let db = &self.state.db;
        let me = workspace::Entity::find_by_id(id.clone())
            .one(db)
            .await
            .context("lookup failed")?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or_else(|| ApiError::not_found(WORKSPACE_NOT_FOUND))?;
        let caller_in_container = me.runtime != "external";
        let live = || {
            workspace::Entity::find().filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
        };
        let siblings = match &me.parent_id {
            Some(parent) => live().filter(workspace::Column::ParentId.eq(parent.clone())),
            None => live().filter(workspace::Column::ParentId.is_null()),
        }
        .filter(workspace::Column::Id.ne(id.clone()));
        let mut rows = query_ordered(siblings, db).await?;
        rows.extend(
            query_ordered(
                live().filter(workspace::Column::ParentId.eq(id.clone())),
                db,
            )
            .await?,
        );
        if let Some(parent) = &me.parent_id {
            rows.extend(
                query_ordered(live().filter(workspace::Column::Id.eq(parent.clone())), db).await?,
            );
        }
        let query = request.query.trim().to_lowercase();
        rows.retain(|row| {
            query.is_empty()
                || row.name.to_lowercase().contains(&query)
                || row
                    .role
                    .as_deref()
                    .is_some_and(|role| role.to_lowercase().contains(&query))
        });
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let live_snapshots = self
            .state
            .liveness
            .snapshots(&ids)
            .await
            .unwrap_or_default();
        let mut peers = Vec::with_capacity(rows.len());
        for row in rows {
            let url = self
                .reachable_url(&row, caller_in_container)
                .await
                .unwrap_or_default();
            let active_tasks = live_snapshots
                .get(&row.id)
                .map_or(row.active_tasks, |s| s.active_tasks);
            peers.push(pb::Peer {
                url,
                active_tasks,
                id: row.id,
                name: row.name,
                role: row.role.filter(|role| !role.is_empty()),
                tier: row.tier,
                status: row.status.to_string(),
                agent_card_json: row.agent_card,
                parent_id: row.parent_id,
            });
        }
        Ok(pb::ListPeersResponse { peers })
    }

    async fn check_access(
        &self,
        metadata: &MetadataMap,
        request: &pb::CheckAccessRequest,
    ) -> ApiResult<pb::CheckAccessResponse> {
        let caller = validate::parse_uuid(&request.caller_id).ok_or_else(invalid_body)?;
        let target = validate::parse_uuid(&request.target_id).ok_or_else(invalid_body)?;
        let is_admin =
            auth::bearer(metadata).is_some_and(|bearer| self.state.auth.is_admin_token(bearer));
        if !is_admin {
            self.authenticate_agent(metadata, &caller).await?;
        }
        Ok(pb::CheckAccessResponse {
            allowed: self.state.hierarchy.can_communicate(&caller, &target).await,
        })
    }
}

async fn query_ordered(
    select: sea_orm::Select<workspace::Entity>,
    db: &impl ConnectionTrait,
) -> ApiResult<Vec<workspace::Model>> {
    use sea_orm::QueryOrder;
    select
        .order_by_asc(workspace::Column::CreatedAt)
        .order_by_asc(workspace::Column::Id)
        .all(db)
        .await
        .context("lookup failed")
}

/// Both `remote://` counts as the same "no inbound endpoint".
fn same_url(stored: Option<&str>, requested: &str) -> bool {
    let stored = stored.unwrap_or("");
    stored == requested || (stored.starts_with("remote://") && requested.starts_with("remote://"))
}

/// Rewrites only the host component, never a substring elsewhere in the URL, and leaves the
/// rest of the text exactly as registered.
fn rewrite_loopback_host(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    if !(host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost")) {
        return raw.to_owned();
    }
    let userinfo = userinfo.map(|info| format!("{info}@")).unwrap_or_default();
    let port = port.map(|port| format!(":{port}")).unwrap_or_default();
    format!("{scheme}://{userinfo}host.docker.internal{port}{tail}")
}

/// `UPDATE … SET status = to WHERE id = ? AND status IN (from…)` plus its event row, in one
/// transaction. The event is returned for publishing after the commit, only if a row changed.
pub(crate) async fn transition_in(
    state: &Platform,
    id: &str,
    from: &[WorkspaceStatus],
    to: WorkspaceStatus,
    payload: Value,
) -> Result<Option<std::sync::Arc<crate::events::Envelope>>, DbErr> {
    let txn = state.db.begin().await?;
    let now = store::now();
    let changed = workspace::Entity::update_many()
        .col_expr(workspace::Column::Status, Expr::value(to))
        .col_expr(workspace::Column::UpdatedAt, Expr::value(now))
        .filter(workspace::Column::Id.eq(id.to_owned()))
        .filter(workspace::Column::Status.is_in(from.iter().copied()))
        .exec(&txn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(None);
    }
    let event_type = match to {
        WorkspaceStatus::Online => EventType::WorkspaceOnline,
        WorkspaceStatus::Degraded => EventType::WorkspaceDegraded,
        WorkspaceStatus::Offline => EventType::WorkspaceOffline,
        other => return Err(DbErr::Custom(format!("no event for status {other}"))),
    };
    let event = state
        .events
        .insert(&txn, event_type, Some(id), payload)
        .await?;
    txn.commit().await?;
    Ok(Some(event))
}

/// Liveness ran out (expiry, sweep or goodbye): online/degraded → offline, once fleet-wide.
pub(crate) async fn mark_offline(state: &Platform, id: &str) -> Result<bool, DbErr> {
    let event = transition_in(
        state,
        id,
        &[WorkspaceStatus::Online, WorkspaceStatus::Degraded],
        WorkspaceStatus::Offline,
        json!({}),
    )
    .await?;
    state.hot.forget_workspace(id);
    Ok(match event {
        Some(event) => {
            info!(workspace_id = %id, "workspace offline");
            state.events.publish_all([event]);
            true
        }
        None => false,
    })
}

/// Writes the buffered informational columns: one statement per batch of workspaces. One
/// flush runs at a time, so the last one on shutdown waits for any in flight and then writes
/// everything acknowledged. While the datastore is down the rows go back to the buffer (a
/// newer beat wins); a row the datastore refuses is dropped alone, never its batch.
pub async fn flush_write_behind(state: &Platform) -> Result<usize, DbErr> {
    let _one_at_a_time = state.hot.flushing.lock().await;
    let rows: Vec<(String, BeatSnapshot)> = state.hot.take_pending().into_iter().collect();
    let flushed = write_in_batches(&rows, |batch| write_beats(state, batch)).await;
    if let Some((from, err)) = flushed.unwritten {
        state.hot.requeue(rows[from..].iter().cloned());
        return Err(err);
    }
    Ok(flushed.written)
}

/// What a flush managed: rows written, and where it stopped when the datastore went away.
#[derive(Debug)]
struct Flushed {
    written: usize,
    unwritten: Option<(usize, DbErr)>,
}

/// Writes `rows` a batch per statement. A batch the datastore refuses is written row by row
/// and the refused rows are dropped, so one bad row cannot block the others; an outage stops
/// the flush and says from which row on nothing was written.
async fn write_in_batches<'a, W, F>(rows: &'a [(String, BeatSnapshot)], write: W) -> Flushed
where
    W: Fn(&'a [(String, BeatSnapshot)]) -> F,
    F: Future<Output = Result<(), DbErr>>,
{
    let mut written = 0;
    for (n, batch) in rows.chunks(FLUSH_BATCH).enumerate() {
        match write(batch).await {
            Ok(()) => written += batch.len(),
            Err(err) if store::is_unavailable(&err) => {
                return Flushed {
                    written,
                    unwritten: Some((n * FLUSH_BATCH, err)),
                };
            }
            Err(_) => {
                for (index, row) in batch.iter().enumerate() {
                    match write(std::slice::from_ref(row)).await {
                        Ok(()) => written += 1,
                        Err(err) if store::is_unavailable(&err) => {
                            return Flushed {
                                written,
                                unwritten: Some((n * FLUSH_BATCH + index, err)),
                            };
                        }
                        Err(err) => {
                            warn!(workspace_id = %row.0, error = %err, "heartbeat columns not written; dropped");
                        }
                    }
                }
            }
        }
    }
    Flushed {
        written,
        unwritten: None,
    }
}

async fn write_beats(state: &Platform, batch: &[(String, BeatSnapshot)]) -> Result<(), DbErr> {
    let backend = state.db.get_database_backend();
    let (sql, values) = flush_statement(backend, batch);
    state
        .db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map(drop)
}

fn flush_statement(
    backend: DbBackend,
    batch: &[(String, BeatSnapshot)],
) -> (String, Vec<sea_orm::Value>) {
    let postgres = backend == DbBackend::Postgres;
    let casts = [
        "::text",
        "::timestamptz",
        "::int",
        "::int",
        "::float8",
        "::text",
        "::bigint",
    ];
    let mut values = Vec::with_capacity(batch.len() * casts.len());
    let mut tuples = Vec::with_capacity(batch.len());
    for (id, snapshot) in batch {
        let placeholders: Vec<String> = casts
            .iter()
            .enumerate()
            .map(|(column, cast)| {
                let n = values.len() + column + 1;
                if postgres {
                    format!("${n}{cast}")
                } else {
                    "?".to_owned()
                }
            })
            .collect();
        tuples.push(format!("({})", placeholders.join(", ")));
        values.push(id.clone().into());
        values.push(snapshot.at.into());
        values.push(snapshot.active_tasks.into());
        values.push(
            i32::try_from(snapshot.uptime_seconds)
                .unwrap_or(i32::MAX)
                .into(),
        );
        values.push(snapshot.error_rate.into());
        values.push(
            Some(snapshot.sample_error.clone())
                .filter(|e| !e.is_empty())
                .into(),
        );
        values.push(snapshot.monthly_spend.into());
    }
    let sql = format!(
        "UPDATE workspaces SET last_heartbeat_at = v.column2, active_tasks = v.column3, \
         uptime_seconds = v.column4, last_error_rate = v.column5, last_sample_error = v.column6, \
         monthly_spend = COALESCE(v.column7, workspaces.monthly_spend) \
         FROM (VALUES {}) AS v WHERE workspaces.id = v.column1 AND workspaces.status <> 'removed'",
        tuples.join(", ")
    );
    (sql, values)
}

/// Background work of the registry: expiry handling, the liveness sweep, the write-behind
/// flusher, and cache invalidation plus control frames from events. Runs until shutdown.
pub fn spawn_background(state: &Platform) {
    tokio::spawn(stream::dispatch_events(state.clone()));
    tokio::spawn(handle_expirations(state.clone()));
    tokio::spawn(sweep_liveness(state.clone()));
    tokio::spawn(run_flusher(state.clone()));
}

async fn handle_expirations(state: Platform) {
    let mut expired = state.liveness.expirations();
    loop {
        let id = tokio::select! {
            () = state.shutdown.cancelled() => return,
            id = expired.recv() => id,
        };
        let id = match id {
            Ok(id) => id,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "expiry reports dropped; the sweep will catch them");
                continue;
            }
            Err(_) => return,
        };
        // A late expiry report must not undo a beat that re-created the key.
        let alive = state.liveness.snapshots(std::slice::from_ref(&id)).await;
        if alive.is_ok_and(|alive| alive.contains_key(&id)) {
            continue;
        }
        // During a datastore outage the sweep judges this agent later; the store reports it.
        if let Err(err) = mark_offline(&state, &id).await
            && !store::is_unavailable(&err)
        {
            warn!(workspace_id = %id, error = %err, "offline transition failed");
        }
    }
}

/// The backstop for lost expiry events: online/degraded workspaces without a liveness entry go
/// offline — but only once the liveness backend and the datastore have both been healthy for a
/// whole TTL, so a restart, or a Redis or database recovery, never causes an offline storm for
/// agents that kept beating (or were refused while they could not be checked).
async fn sweep_liveness(state: Platform) {
    let ttl = state.liveness.ttl();
    let every = (ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(15));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if state.liveness.healthy_since().elapsed() < ttl
            || state.db.healthy_since().elapsed() < ttl
        {
            continue;
        }
        if let Err(err) = sweep_once(&state).await
            && state.db.down_since().is_none()
        {
            warn!(error = %err, "liveness sweep failed");
        }
    }
}

async fn sweep_once(state: &Platform) -> Result<(), String> {
    let ids: Vec<String> = workspace::Entity::find()
        .select_only()
        .column(workspace::Column::Id)
        .filter(
            workspace::Column::Status.is_in([WorkspaceStatus::Online, WorkspaceStatus::Degraded]),
        )
        .into_tuple()
        .all(&state.db)
        .await
        .map_err(|err| err.to_string())?;
    for chunk in ids.chunks(1000) {
        let alive: HashMap<String, BeatSnapshot> = state
            .liveness
            .snapshots(chunk)
            .await
            .map_err(|err| err.to_string())?;
        for id in chunk.iter().filter(|id| !alive.contains_key(*id)) {
            mark_offline(state, id)
                .await
                .map_err(|err| err.to_string())?;
        }
    }
    Ok(())
}

/// Flushes the write-behind buffer every `FLUSH_EVERY` until shutdown; the final flush is the
/// server's, after the last request (see `Application::run_until_stopped`).
async fn run_flusher(state: Platform) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match flush_write_behind(&state).await {
            Ok(_) => {}
            // The store reports outages once; the rows wait in the buffer.
            Err(err) if store::is_unavailable(&err) => {}
            Err(err) => warn!(error = %err, "heartbeat write-behind flush failed"),
        }
    }
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

    async fn notify(&self, request: Request<pb::NotifyRequest>) -> RpcResult<pb::NotifyResponse> {
        let (metadata, _, body) = request.into_parts();
        reply(activity::notify(&self.state, &metadata, body).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(ids: &[&str]) -> Vec<(String, BeatSnapshot)> {
        ids.iter()
            .map(|id| {
                let snapshot = BeatSnapshot {
                    at: store::now(),
                    active_tasks: 0,
                    uptime_seconds: 1,
                    error_rate: 0.0,
                    sample_error: String::new(),
                    monthly_spend: None,
                    native_session: false,
                };
                ((*id).to_owned(), snapshot)
            })
            .collect()
    }

    #[tokio::test]
    async fn one_refused_row_is_dropped_alone_and_an_outage_keeps_the_rest() {
        let rows = beats(&["a", "bad", "c"]);
        let written = std::sync::Mutex::new(Vec::new());
        let flushed = write_in_batches(&rows, |batch| {
            let refused = batch.iter().any(|(id, _)| id == "bad");
            if !refused {
                written
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(|(id, _)| id.clone()));
            }
            async move {
                if refused {
                    Err(DbErr::Custom("invalid byte sequence".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(flushed.written, 2);
        assert!(flushed.unwritten.is_none());
        assert_eq!(*written.lock().unwrap(), ["a", "c"]);

        let down = write_in_batches(&rows, |_| async {
            Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))
        })
        .await;
        assert_eq!(down.written, 0);
        assert_eq!(
            down.unwritten.map(|(from, _)| from),
            Some(0),
            "all kept for later"
        );
    }

    #[test]
    fn only_the_host_is_rewritten() {
        assert_eq!(
            rewrite_loopback_host("http://127.0.0.1:8000/a?next=http://127.0.0.1"),
            "http://host.docker.internal:8000/a?next=http://127.0.0.1"
        );
        assert_eq!(
            rewrite_loopback_host("http://agent.example/localhost"),
            "http://agent.example/localhost"
        );
        assert_eq!(
            rewrite_loopback_host("http://LOCALHOST:9000"),
            "http://host.docker.internal:9000",
            "no slash is added"
        );
        assert_eq!(
            rewrite_loopback_host("http://user@127.0.0.1"),
            "http://user@host.docker.internal"
        );
    }

    #[test]
    fn remote_urls_are_all_the_same_no_inbound_endpoint() {
        assert!(same_url(Some("remote://no-inbound"), "remote://other"));
        assert!(same_url(Some("https://a"), "https://a"));
        assert!(!same_url(Some("https://a"), "https://b"));
        assert!(!same_url(None, "https://a"));
    }

    #[test]
    fn the_flush_is_one_statement_with_backend_placeholders() {
        let snapshot = BeatSnapshot {
            at: store::now(),
            active_tasks: 1,
            uptime_seconds: 2,
            error_rate: 0.0,
            sample_error: String::new(),
            monthly_spend: None,
            native_session: false,
        };
        let batch = vec![
            ("a".to_owned(), snapshot.clone()),
            ("b".to_owned(), snapshot),
        ];
        let (sql, values) = flush_statement(DbBackend::Postgres, &batch);
        assert!(
            sql.contains("($1::text, $2::timestamptz") && sql.contains("($8::text"),
            "{sql}"
        );
        assert_eq!(values.len(), 14);
        let (sql, _) = flush_statement(DbBackend::Sqlite, &batch);
        assert!(sql.contains("(?, ?, ?, ?, ?, ?, ?), (?,"), "{sql}");
    }
}

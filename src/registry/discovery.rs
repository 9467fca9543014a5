//! Discovery, peers and access checks: which URL a caller should use to reach a workspace
//! (loopback rewritten for containers), and who may see whom under the hierarchy rules.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use tonic::metadata::MetadataMap;
use tracing::debug;

use crate::{
    auth,
    domain::{
        WorkspaceStatus,
        validate::{self},
    },
    error::{ApiError, ApiResult},
    pb,
    store::{DbContext, entities::workspace},
};

use super::{RegistryService, error::RegistryError, invalid_body};

impl RegistryService {
    /// The caller named by `x-workspace-id`, authenticated (DiscoveryAuth).
    pub(super) async fn discovery_caller(&self, metadata: &MetadataMap) -> ApiResult<String> {
        let raw =
            crate::auth::claimed_workspace(metadata).ok_or(RegistryError::CallerHeaderRequired)?;
        let caller = validate::workspace_id(raw)?;
        self.authenticate_agent(metadata, &caller).await?;
        Ok(caller)
    }

    pub(super) async fn discover(
        &self,
        metadata: &MetadataMap,
        request: &pb::DiscoverRequest,
    ) -> ApiResult<pb::DiscoverResponse> {
        let caller = self.discovery_caller(metadata).await?;
        let target = validate::workspace_id(&request.target_id)?;
        if !self.state.hierarchy.can_communicate(&caller, &target).await {
            return Err(RegistryError::DiscoveryDenied.into());
        }
        let row = workspace::Entity::find_by_id(target.clone())
            .one(&self.state.db)
            .await
            .context("lookup failed")?
            .ok_or(RegistryError::WorkspaceNotFound)?;
        let caller_in_container = self.workspace_state(&caller).await?.runtime != "external";
        let url = self.reachable_url(&row, caller_in_container).await?;
        Ok(pb::DiscoverResponse {
            id: row.id,
            url,
            name: row.name,
        })
    }

    /// The URL a peer can use to reach `target` directly (docs/registry.md §4.2), exactly as
    /// registered (docs/decisions.md D16) — but in dev mode a container caller gets a host-run
    /// agent's loopback URL as `host.docker.internal`, the name its container reaches the host by.
    pub(super) async fn reachable_url(
        &self,
        target: &workspace::Model,
        caller_in_container: bool,
    ) -> ApiResult<String> {
        let unavailable = || -> ApiError {
            RegistryError::NotAvailable {
                status: target.status,
            }
            .into()
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
                    ApiError::from(RegistryError::UnsafeUrl)
                });
        }
        if target.status.is_live() && target.runtime != "external" {
            return Ok(format!("http://ws-{}:8000", &target.id[..12]));
        }
        Err(unavailable())
    }

    pub(super) async fn peers(
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
            .ok_or(RegistryError::WorkspaceNotFound)?;
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

    pub(super) async fn check_access(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

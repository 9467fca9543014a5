//! Registration and card updates: the agent's URL judged by the URL policy, the first token
//! minted atomically with the row's claim, re-registration with the same URL as a no-op.

use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::Expr,
};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tracing::{info, warn};

use crate::{
    auth,
    domain::{
        EventType, WorkspaceStatus,
        validate::{self},
    },
    error::{ApiError, ApiResult},
    liveness::BeatSnapshot,
    pb,
    store::{
        self, DbContext,
        entities::{workspace, workspace_token},
    },
};

use super::{RegistryService, error::RegistryError, invalid_body};

impl RegistryService {
    pub(super) async fn register(
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
            .map_err(RegistryError::InvalidUrl)?;
        let db = &self.state.db;
        let row = workspace::Entity::find_by_id(id.clone())
            .one(db)
            .await
            .context("registration failed")?
            .ok_or(RegistryError::WorkspaceNotFound)?;
        if row.status == WorkspaceStatus::Removed {
            return Err(ApiError::from(RegistryError::WorkspaceRemoved));
        }

        // docs/decisions.md D1/D2: a bearer must be this workspace's token or the admin token;
        // without one, only a workspace that never had a token, or an SDK restart with an unchanged
        // URL, passes — in dev mode too (docs/decisions.md D14: the URL-hijack guard stays on).
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
                    // docs/decisions.md D14: nothing is refreshed; knowing an id must not keep a
                    // workspace shown online. Liveness comes from the agent's next authenticated
                    // heartbeat.
                    return Ok(pb::RegisterResponse { auth_token: None });
                }
                return Err(auth::AuthError::MissingWorkspaceToken.into());
            }
        }

        // The agent's URL always wins: the reference kept a stored `http://127.0.0.1…` URL (its
        // container provisioner's host port), and there is no provisioner here (decisions D11).
        let effective_url = request.url.clone();
        let txn = db.begin().await.context("registration failed")?;
        // Serialises concurrent first registrations of this workspace (Postgres row lock;
        // SQLite has a single writer), so exactly one of them mints.
        let locked = workspace::Entity::find_by_id(id.clone())
            .lock_exclusive()
            .one(&txn)
            .await
            .context("registration failed")?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or_else(|| ApiError::from(RegistryError::WorkspaceRemoved))?;
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
    pub(super) async fn refresh_liveness(&self, id: &str) {
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

    pub(super) async fn update_card(
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
            return Err(ApiError::from(RegistryError::WorkspaceRemoved));
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
}

/// An agent card must be a JSON object.
fn parse_card(raw: &str) -> ApiResult<Value> {
    match serde_json::from_str::<Value>(raw) {
        Ok(card @ Value::Object(_)) => Ok(card),
        _ => Err(invalid_body()),
    }
}

/// Both `remote://` counts as the same "no inbound endpoint".
fn same_url(stored: Option<&str>, requested: &str) -> bool {
    let stored = stored.unwrap_or("");
    stored == requested || (stored.starts_with("remote://") && requested.starts_with("remote://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_all_the_same_no_inbound_endpoint() {
        assert!(same_url(Some("remote://no-inbound"), "remote://other"));
        assert!(same_url(Some("https://a"), "https://a"));
        assert!(!same_url(Some("https://a"), "https://b"));
        assert!(!same_url(None, "https://a"));
    }
}

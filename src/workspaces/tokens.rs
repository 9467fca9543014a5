//! Workspace tokens (at most 50 live per workspace, shown once), the test-token endpoint, and
//! org keys: mint, list, revoke.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    audit::Action,
    auth::{self, MintedToken, Principal},
    domain::{
        EventType, WorkspaceStatus,
        validate::{self},
    },
    error::{ApiError, ApiResult},
    pb,
    store::{
        self, DbContext,
        entities::{org_token, workspace, workspace_token},
    },
};

use super::{WorkspacesService, error::WorkspaceError};

const MAX_LIVE_TOKENS: u64 = 50;
const ORG_TOKENS_PAGE: u64 = 500;

impl WorkspacesService {
    pub(super) async fn tokens(
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

    pub(super) async fn create_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let (id, principal) = self.state.auth.live_workspace_as(metadata, raw_id).await?;
        let live = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(id.clone()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .count(&self.state.db)
            .await
            .context("failed to create token")?;
        if live >= MAX_LIVE_TOKENS {
            return Err(WorkspaceError::TooManyTokens.into());
        }
        let auth_token = auth::issue_workspace_token(&self.state.db, &id)
            .await
            .context("failed to create token")?;
        let action = Action {
            operation: "token.mint",
            workspace_id: Some(&id),
            target: None,
            details: json!({"prefix": auth_token.get(..8)}),
        };
        self.record(&principal, metadata, action).await;
        Ok(pb::CreateTokenResponse {
            auth_token,
            workspace_id: id,
        })
    }

    pub(super) async fn revoke_token(
        &self,
        metadata: &MetadataMap,
        request: &pb::RevokeTokenRequest,
    ) -> ApiResult<pb::RevokeTokenResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        let not_found = || ApiError::from(WorkspaceError::TokenNotFound);
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
        let action = Action {
            operation: "token.revoke",
            workspace_id: Some(&id),
            target: Some(token_id),
            details: json!({}),
        };
        self.record(&principal, metadata, action).await;
        Ok(pb::RevokeTokenResponse {})
    }

    pub(super) async fn mint_test_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let hidden = || ApiError::from(WorkspaceError::Hidden);
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
                return Err(auth::AuthError::AdminRequired.into());
            }
        }
        let id = validate::workspace_id(raw_id)?;
        let db = &self.state.db;
        workspace::Entity::find_by_id(id.clone())
            .one(db)
            .await
            .context("lookup failed")?
            .filter(|row| row.status != WorkspaceStatus::Removed)
            .ok_or(WorkspaceError::NotFound)?;
        let auth_token = auth::issue_workspace_token(db, &id)
            .await
            .context("token issue failed")?;
        let principal = if auth.dev_mode() {
            Principal::Dev
        } else {
            Principal::Admin
        };
        let action = Action {
            operation: "token.mint_test",
            workspace_id: Some(&id),
            target: None,
            details: json!({"prefix": auth_token.get(..8)}),
        };
        self.record(&principal, metadata, action).await;
        Ok(pb::CreateTokenResponse {
            auth_token,
            workspace_id: id,
        })
    }

    pub(super) async fn org_tokens(
        &self,
        metadata: &MetadataMap,
    ) -> ApiResult<pb::ListOrgTokensResponse> {
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

    pub(super) async fn create_org_token(
        &self,
        metadata: &MetadataMap,
        name: &str,
    ) -> ApiResult<pb::CreateOrgTokenResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        if name.chars().count() > 100 {
            return Err(WorkspaceError::OrgKeyNameTooLong.into());
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
        let action = Action {
            operation: "org_token.mint",
            workspace_id: None,
            target: Some(id.clone()),
            details: json!({"prefix": token.prefix, "name": name}),
        };
        self.record(&principal, metadata, action).await;
        Ok(pb::CreateOrgTokenResponse {
            id,
            prefix: token.prefix,
            name: name.to_owned(),
            auth_token: token.plaintext,
        })
    }

    pub(super) async fn revoke_org_token(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::RevokeOrgTokenResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        let not_found = || ApiError::from(WorkspaceError::TokenNotFound);
        let id = validate::parse_uuid(raw_id).ok_or_else(not_found)?;
        let revoked = org_token::Entity::update_many()
            .col_expr(org_token::Column::RevokedAt, Expr::value(store::now()))
            .filter(org_token::Column::Id.eq(id.clone()))
            .filter(org_token::Column::RevokedAt.is_null())
            .exec(&self.state.db)
            .await
            .context("failed to revoke token")?;
        if revoked.rows_affected == 0 {
            return Err(not_found());
        }
        // Every replica ends the streams opened with the key.
        self.state
            .events
            .record(
                &self.state.db,
                EventType::OrgTokenRevoked,
                None,
                json!({"token_id": id}),
            )
            .await;
        let action = Action {
            operation: "org_token.revoke",
            workspace_id: None,
            target: Some(id),
            details: json!({}),
        };
        self.record(&principal, metadata, action).await;
        Ok(pb::RevokeOrgTokenResponse {})
    }
}

//! Credentials and the two auth gates (contract §3): workspace tokens, org API keys, the admin
//! token and dev mode. Owns minting, hashing and validation; it never decides business rules
//! beyond "who is calling", and never logs or returns a token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, sea_query::Expr,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    config::Secret,
    error::{ApiError, ApiResult},
    store::{
        self,
        entities::{org_token, workspace, workspace_token},
    },
};

pub const MISSING_WORKSPACE_TOKEN: &str = "missing workspace auth token";
pub const INVALID_WORKSPACE_TOKEN: &str = "invalid workspace auth token";
pub const ADMIN_AUTH_REQUIRED: &str = "admin auth required";
pub const INVALID_ADMIN_TOKEN: &str = "invalid admin auth token";

/// `last_used_at` is written at most this often per token.
const LAST_USED_THROTTLE: Duration = Duration::from_secs(60);

/// Who is calling, once a gate has let them through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Org(OrgKey),
    Workspace(String),
    /// Dev mode, bearer-less.
    Dev,
}

impl Principal {
    pub fn is_admin_level(&self) -> bool {
        !matches!(self, Self::Workspace(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Org(_) => "org",
            Self::Workspace(_) => "workspace",
            Self::Dev => "dev",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKey {
    pub id: String,
    pub prefix: String,
    pub org_id: Option<String>,
}

/// A freshly minted credential: the plaintext is shown once; only the hash is stored.
pub struct MintedToken {
    pub plaintext: String,
    pub hash: Vec<u8>,
    pub prefix: String,
}

impl MintedToken {
    /// 32 bytes from a CSPRNG, base64url without padding: 43 characters.
    pub fn generate() -> Self {
        let plaintext = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Self {
            hash: hash_token(&plaintext),
            prefix: plaintext[..8].to_owned(),
            plaintext,
        }
    }
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The bearer of an `authorization: Bearer <token>` header; any other form is no bearer.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// Inserts a new live token for `workspace_id` and returns its plaintext.
pub async fn issue_workspace_token(
    db: &impl ConnectionTrait,
    workspace_id: &str,
) -> Result<String, sea_orm::DbErr> {
    let token = MintedToken::generate();
    workspace_token::Entity::insert(workspace_token::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        workspace_id: Set(workspace_id.to_owned()),
        token_hash: Set(token.hash),
        prefix: Set(token.prefix),
        created_at: Set(store::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    })
    .exec(db)
    .await?;
    Ok(token.plaintext)
}

#[derive(Clone)]
pub struct Authenticator {
    db: DatabaseConnection,
    admin_token_hash: Option<Vec<u8>>,
    dev_mode: bool,
    last_used_writes: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Authenticator {
    pub fn new(db: DatabaseConnection, admin_token: Option<&Secret>, dev_mode: bool) -> Self {
        Self {
            db,
            admin_token_hash: admin_token.map(|token| hash_token(token.expose())),
            dev_mode,
            last_used_writes: Arc::default(),
        }
    }

    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    pub fn has_admin_token(&self) -> bool {
        self.admin_token_hash.is_some()
    }

    /// Constant-time comparison of hashes, so neither content nor length leaks.
    pub fn is_admin_token(&self, bearer: &str) -> bool {
        self.admin_token_hash
            .as_ref()
            .is_some_and(|expected| bool::from(expected.ct_eq(&hash_token(bearer))))
    }

    /// AdminAuth (contract §3.3).
    pub async fn admin(&self, metadata: &MetadataMap) -> ApiResult<Principal> {
        if self.dev_mode {
            return Ok(Principal::Dev);
        }
        let Some(bearer) = bearer(metadata) else {
            return Err(ApiError::unauthenticated(ADMIN_AUTH_REQUIRED));
        };
        if self.is_admin_token(bearer) {
            return Ok(Principal::Admin);
        }
        if let Some(key) = self.org_key(bearer).await? {
            return Ok(Principal::Org(key));
        }
        Err(ApiError::unauthenticated(INVALID_ADMIN_TOKEN))
    }

    /// WorkspaceAuth (contract §3.4): the admin token, an org key, or this workspace's own token.
    pub async fn workspace(
        &self,
        metadata: &MetadataMap,
        workspace_id: &str,
    ) -> ApiResult<Principal> {
        let Some(bearer) = bearer(metadata) else {
            return if self.dev_mode {
                Ok(Principal::Dev)
            } else {
                Err(ApiError::unauthenticated(MISSING_WORKSPACE_TOKEN))
            };
        };
        if self.is_admin_token(bearer) {
            return Ok(Principal::Admin);
        }
        if let Some(key) = self.org_key(bearer).await? {
            return Ok(Principal::Org(key));
        }
        match self.workspace_token_owner(bearer).await? {
            Some(owner) if owner == workspace_id => Ok(Principal::Workspace(owner)),
            _ => Err(ApiError::unauthenticated(INVALID_WORKSPACE_TOKEN)),
        }
    }

    /// WorkspaceAuth on a raw id that must name a live (not removed) workspace: 400 for a
    /// malformed id, then the auth answer, then 404. Returns the canonical id.
    pub async fn live_workspace(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<String> {
        let id = crate::workspaces::validate::workspace_id(raw_id)?;
        self.workspace(metadata, &id).await?;
        store::live_workspace(&self.db, &id).await?;
        Ok(id)
    }

    /// WorkspaceAuth plus the own-token rule of §3.4 (`/secrets/values`, plugin download): once
    /// the workspace has a live token, only that workspace's own token passes.
    pub async fn own_token(
        &self,
        metadata: &MetadataMap,
        workspace_id: &str,
    ) -> ApiResult<Principal> {
        let principal = self.workspace(metadata, workspace_id).await?;
        if matches!(principal, Principal::Workspace(_)) {
            return Ok(principal);
        }
        let live_tokens = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(workspace_id))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .count(&self.db)
            .await
            .map_err(ApiError::datastore("auth check failed"))?;
        match (live_tokens, principal) {
            (0, principal) => Ok(principal),
            (_, Principal::Dev) => Err(ApiError::unauthenticated(MISSING_WORKSPACE_TOKEN)),
            _ => Err(ApiError::unauthenticated(INVALID_WORKSPACE_TOKEN)),
        }
    }

    /// Any live credential: the admin token, an org key, or some workspace's own token.
    pub async fn any_credential(&self, metadata: &MetadataMap) -> ApiResult<Principal> {
        let admin = self.admin(metadata).await;
        match (&admin, bearer(metadata)) {
            (Err(err), Some(bearer)) if err.code == crate::error::ErrorCode::Unauthenticated => {
                match self.workspace_token_owner(bearer).await? {
                    Some(owner) => Ok(Principal::Workspace(owner)),
                    None => admin,
                }
            }
            _ => admin,
        }
    }

    /// A live org key with this plaintext.
    async fn org_key(&self, bearer: &str) -> ApiResult<Option<OrgKey>> {
        let row = org_token::Entity::find()
            .filter(org_token::Column::TokenHash.eq(hash_token(bearer)))
            .filter(org_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await
            .map_err(|err| auth_datastore_error(&err))?;
        Ok(row.map(|row| {
            self.touch(TokenTable::Org, row.id.clone());
            OrgKey {
                id: row.id,
                prefix: row.prefix,
                org_id: row.org_id,
            }
        }))
    }

    /// The workspace a live token belongs to, when that workspace is not removed.
    pub async fn workspace_token_owner(&self, bearer: &str) -> ApiResult<Option<String>> {
        let token = workspace_token::Entity::find()
            .filter(workspace_token::Column::TokenHash.eq(hash_token(bearer)))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await
            .map_err(|err| auth_datastore_error(&err))?;
        let Some(token) = token else {
            return Ok(None);
        };
        let status: Option<String> = workspace::Entity::find_by_id(token.workspace_id.clone())
            .select_only()
            .column(workspace::Column::Status)
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|err| auth_datastore_error(&err))?;
        if status.as_deref().is_none_or(|status| status == "removed") {
            return Ok(None);
        }
        self.touch(TokenTable::Workspace, token.id);
        Ok(Some(token.workspace_id))
    }

    /// Bumps `last_used_at` in the background, at most once a minute per token; a failure is
    /// logged and never fails the request.
    fn touch(&self, table: TokenTable, token_id: String) {
        {
            let mut writes = self
                .last_used_writes
                .lock()
                .expect("last-used map poisoned");
            let now = Instant::now();
            if writes
                .get(&token_id)
                .is_some_and(|last| now.duration_since(*last) < LAST_USED_THROTTLE)
            {
                return;
            }
            writes.retain(|_, last| now.duration_since(*last) < LAST_USED_THROTTLE);
            writes.insert(token_id.clone(), now);
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            let result = match table {
                TokenTable::Workspace => {
                    workspace_token::Entity::update_many()
                        .col_expr(
                            workspace_token::Column::LastUsedAt,
                            Expr::value(store::now()),
                        )
                        .filter(workspace_token::Column::Id.eq(token_id))
                        .exec(&db)
                        .await
                }
                TokenTable::Org => {
                    org_token::Entity::update_many()
                        .col_expr(org_token::Column::LastUsedAt, Expr::value(store::now()))
                        .filter(org_token::Column::Id.eq(token_id))
                        .exec(&db)
                        .await
                }
            };
            if let Err(err) = result {
                warn!(error = %err, ?table, "last_used_at update failed");
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum TokenTable {
    Workspace,
    Org,
}

fn auth_datastore_error(err: &sea_orm::DbErr) -> ApiError {
    warn!(error = %err, "datastore error during auth");
    ApiError::datastore_unavailable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_chars_and_hash_to_32_bytes() {
        let token = MintedToken::generate();
        assert_eq!(token.plaintext.len(), 43);
        assert!(
            token
                .plaintext
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(token.hash.len(), 32);
        assert_eq!(token.prefix, token.plaintext[..8]);
        assert_ne!(MintedToken::generate().plaintext, token.plaintext);
    }

    #[test]
    fn bearer_requires_the_exact_prefix() {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&metadata), Some("abc"));
        metadata.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&metadata), None);
    }
}

//! Credentials and the two auth gates (docs/workspaces.md §3): workspace tokens, org API keys, the
//! admin token and dev mode. Owns minting, hashing and validation; it never decides business rules
//! beyond "who is calling", and never logs or returns a token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, sea_query::Expr,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    config::Secret,
    domain::{EventType, WorkspaceStatus},
    error::{ApiError, ApiResult},
    store::{
        self, Db, DbContext,
        entities::{console_session, org_token, workspace, workspace_token},
    },
};

const MISSING_WORKSPACE_TOKEN: &str = "missing workspace auth token";
const INVALID_WORKSPACE_TOKEN: &str = "invalid workspace auth token";
const ADMIN_AUTH_REQUIRED: &str = "admin auth required";
const INVALID_ADMIN_TOKEN: &str = "invalid admin auth token";

/// Why a gate did not let a caller through.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    AdminRequired,
    InvalidAdminToken,
    MissingWorkspaceToken,
    InvalidWorkspaceToken,
    /// A long-lived stream's credential was revoked, expired or signed out.
    CredentialLapsed,
    /// The datastore could not say (fail closed).
    Platform(ApiError),
}

impl AuthError {
    /// A credential was missing or wrong, as opposed to a platform failure: the rules that
    /// widen a gate (a workspace reading its ancestors) apply only then.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Platform(_))
    }
}

impl From<ApiError> for AuthError {
    fn from(err: ApiError) -> Self {
        Self::Platform(err)
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let message = match err {
            AuthError::AdminRequired => ADMIN_AUTH_REQUIRED,
            AuthError::InvalidAdminToken => INVALID_ADMIN_TOKEN,
            AuthError::MissingWorkspaceToken => MISSING_WORKSPACE_TOKEN,
            AuthError::InvalidWorkspaceToken => INVALID_WORKSPACE_TOKEN,
            AuthError::CredentialLapsed => "credential no longer valid",
            AuthError::Platform(err) => return err,
        };
        ApiError::unauthenticated(message)
    }
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        ApiError::from(err).into()
    }
}

/// What every console session token starts with, so a bearer is looked up in one table only.
pub const SESSION_PREFIX: &str = "mcs_";

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

    /// The principal as an audit trail names it: `admin`, `org:<key prefix>`,
    /// `workspace:<id>`, `dev`.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::Org(key) => format!("org:{}", key.prefix),
            Self::Workspace(id) => format!("workspace:{id}"),
            Self::Dev => "dev".to_owned(),
        }
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

/// A live console session and the operator it acts for.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub row: console_session::Model,
    pub principal: Principal,
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

/// The workspace a caller says it acts for (`X-Workspace-ID`, trimmed); empty is none. Only a
/// claim: callers check it against the bearer.
pub fn claimed_workspace(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("x-workspace-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
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

/// The live token a bearer was recognised as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub workspace_id: String,
    pub token_id: String,
}

/// The credential a long-lived stream (an event watch, an agent's attach stream) was opened
/// with, kept to end the stream when the credential no longer stands (audit N5). Holds the
/// bearer only to ask about it again; it is never printed (no `Debug`).
#[derive(Clone)]
pub struct StreamCredential {
    bearer: Option<String>,
    /// What ends it at once, as an event: a workspace token's revocation or its workspace's
    /// removal, an org key's revocation. Anything else (a session signed out or expired) is
    /// found by the periodic re-check.
    revoked_by: Option<Revocable>,
}

#[derive(Clone)]
enum Revocable {
    WorkspaceToken(TokenOwner),
    OrgKey(String),
}

impl StreamCredential {
    /// Whether `event` ends this credential.
    pub fn ended_by(&self, event: &crate::events::Envelope) -> bool {
        let token_id = event.payload["token_id"].as_str();
        match (&self.revoked_by, event.event) {
            (Some(Revocable::WorkspaceToken(token)), EventType::WorkspaceTokenRevoked) => {
                event.workspace_id.as_deref() == Some(token.workspace_id.as_str())
                    && token_id == Some(token.token_id.as_str())
            }
            (Some(Revocable::WorkspaceToken(token)), EventType::WorkspaceRemoved) => {
                event.workspace_id.as_deref() == Some(token.workspace_id.as_str())
            }
            (Some(Revocable::OrgKey(id)), EventType::OrgTokenRevoked) => {
                token_id == Some(id.as_str())
            }
            _ => false,
        }
    }
}

/// How long a validated workspace token is trusted without asking the datastore again.
/// Revocations and removals drop entries at once, fleet-wide, through their events.
const TOKEN_FRESH: Duration = Duration::from_secs(30);
/// While the datastore is down, a token validated this shortly before the outage began keeps
/// working: revoking a token or removing its workspace needs the datastore too, so nothing can have
/// invalidated it since (docs/decisions.md, the hot paths: agents must not flap offline over a
/// database outage).
const OUTAGE_GRACE: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most; beyond it, entries past the outage grace are dropped.
const TOKEN_CACHE_SIZE: usize = 200_000;

/// Workspace tokens recognised recently, by hash. The one token cache: every gate, the
/// heartbeat path, the A2A proxy and the pre-auth check read it.
#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, (TokenOwner, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &[u8]) -> Option<(TokenOwner, Instant)> {
        self.entries
            .lock()
            .expect("token cache poisoned")
            .get(hash)
            .cloned()
    }

    fn remember(&self, hash: Vec<u8>, owner: TokenOwner) {
        let mut entries = self.entries.lock().expect("token cache poisoned");
        if entries.len() >= TOKEN_CACHE_SIZE {
            entries.retain(|_, (_, validated)| validated.elapsed() < OUTAGE_GRACE);
        }
        entries.insert(hash, (owner, Instant::now()));
    }

    fn forget(&self, hash: &[u8]) {
        self.entries
            .lock()
            .expect("token cache poisoned")
            .remove(hash);
    }

    fn forget_workspace(&self, workspace_id: &str) {
        self.entries
            .lock()
            .expect("token cache poisoned")
            .retain(|_, (owner, _)| owner.workspace_id != workspace_id);
    }
}

#[derive(Clone)]
pub struct Authenticator {
    db: Db,
    admin_token_hash: Option<Vec<u8>>,
    dev_mode: bool,
    tokens: Arc<TokenCache>,
    last_used_writes: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Authenticator {
    pub fn new(db: Db, admin_token: Option<&Secret>, dev_mode: bool) -> Self {
        Self {
            db,
            admin_token_hash: admin_token.map(|token| hash_token(token.expose())),
            dev_mode,
            tokens: Arc::default(),
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

    /// AdminAuth (docs/workspaces.md §3.3).
    pub async fn admin(&self, metadata: &MetadataMap) -> Result<Principal, AuthError> {
        if self.dev_mode {
            return Ok(Principal::Dev);
        }
        let Some(bearer) = bearer(metadata) else {
            return Err(AuthError::AdminRequired);
        };
        if self.is_admin_token(bearer) {
            return Ok(Principal::Admin);
        }
        if bearer.starts_with(SESSION_PREFIX) {
            return self
                .session_principal(bearer, AuthError::InvalidAdminToken)
                .await;
        }
        if let Some(key) = self.org_key(bearer).await? {
            return Ok(Principal::Org(key));
        }
        Err(AuthError::InvalidAdminToken)
    }

    /// WorkspaceAuth (docs/workspaces.md §3.4): the admin token, an org key, or this workspace's
    /// own token.
    pub async fn workspace(
        &self,
        metadata: &MetadataMap,
        workspace_id: &str,
    ) -> Result<Principal, AuthError> {
        let Some(bearer) = bearer(metadata) else {
            return if self.dev_mode {
                Ok(Principal::Dev)
            } else {
                Err(AuthError::MissingWorkspaceToken)
            };
        };
        if self.is_admin_token(bearer) {
            return Ok(Principal::Admin);
        }
        if bearer.starts_with(SESSION_PREFIX) {
            return self
                .session_principal(bearer, AuthError::InvalidWorkspaceToken)
                .await;
        }
        // A workspace's own token is the common case (every agent call): the cache answers it.
        if let Some(owner) = self.workspace_token(bearer).await? {
            return if owner.workspace_id == workspace_id {
                Ok(Principal::Workspace(owner.workspace_id))
            } else {
                Err(AuthError::InvalidWorkspaceToken)
            };
        }
        if let Some(key) = self.org_key(bearer).await? {
            return Ok(Principal::Org(key));
        }
        Err(AuthError::InvalidWorkspaceToken)
    }

    /// WorkspaceAuth on a raw id that must name a live (not removed) workspace: 400 for a
    /// malformed id, then the auth answer, then 404. Returns the canonical id.
    pub async fn live_workspace(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<String> {
        Ok(self.live_workspace_row(metadata, raw_id).await?.id)
    }

    /// [`Self::live_workspace`], with the principal the gate admitted (for the audit trail).
    pub async fn live_workspace_as(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<(String, Principal)> {
        let id = crate::domain::validate::workspace_id(raw_id)?;
        let principal = self.workspace(metadata, &id).await?;
        store::live_workspace(&self.db, &id).await?;
        Ok((id, principal))
    }

    /// [`Self::live_workspace`], returning the workspace's row (for rules that depend on its
    /// parent).
    pub async fn live_workspace_row(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<workspace::Model> {
        let id = crate::domain::validate::workspace_id(raw_id)?;
        self.workspace(metadata, &id).await?;
        store::live_workspace(&self.db, &id).await
    }

    /// WorkspaceAuth plus the own-token rule of docs/workspaces.md §3.4 (`/secrets/values`, plugin
    /// download): once the workspace has a live token, only that workspace's own token passes.
    pub async fn own_token(
        &self,
        metadata: &MetadataMap,
        workspace_id: &str,
    ) -> Result<Principal, AuthError> {
        let principal = self.workspace(metadata, workspace_id).await?;
        if matches!(principal, Principal::Workspace(_)) {
            return Ok(principal);
        }
        let live_tokens = workspace_token::Entity::find()
            .filter(workspace_token::Column::WorkspaceId.eq(workspace_id))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .count(&self.db)
            .await
            .context("auth check failed")?;
        match (live_tokens, principal) {
            (0, principal) => Ok(principal),
            (_, Principal::Dev) => Err(AuthError::MissingWorkspaceToken),
            _ => Err(AuthError::InvalidWorkspaceToken),
        }
    }

    /// Any live credential: the admin token, an org key, or some workspace's own token.
    pub async fn any_credential(&self, metadata: &MetadataMap) -> Result<Principal, AuthError> {
        let admin = self.admin(metadata).await;
        match (&admin, bearer(metadata)) {
            (Err(err), Some(bearer)) if err.is_refusal() => {
                match self.workspace_token(bearer).await? {
                    Some(owner) => Ok(Principal::Workspace(owner.workspace_id)),
                    None => admin,
                }
            }
            _ => admin,
        }
    }

    /// Whether `bearer` is a live credential of any kind, dev mode or not: the pre-auth check
    /// run before a request body is read. Failures answer "no" (the request is then bounded).
    pub async fn recognizes(&self, bearer: &str) -> bool {
        matches!(self.identify(bearer).await, Ok(Some(_)))
    }

    /// The credential `metadata` carries, for a stream that must end with it.
    pub async fn stream_credential(&self, metadata: &MetadataMap) -> StreamCredential {
        let bearer = bearer(metadata).map(str::to_owned);
        let revoked_by = match &bearer {
            Some(bearer) if !self.is_admin_token(bearer) && !bearer.starts_with(SESSION_PREFIX) => {
                match self.workspace_token(bearer).await {
                    Ok(Some(owner)) => Some(Revocable::WorkspaceToken(owner)),
                    _ => self
                        .org_key(bearer)
                        .await
                        .ok()
                        .flatten()
                        .map(|key| Revocable::OrgKey(key.id)),
                }
            }
            _ => None,
        };
        StreamCredential { bearer, revoked_by }
    }

    /// Whether a stream's credential still stands: not revoked, expired or signed out, its
    /// workspace not removed. Dev mode's bearer-less streams always stand, and so does every
    /// credential while the datastore cannot say (nothing can be revoked during an outage).
    pub async fn still_stands(&self, credential: &StreamCredential) -> bool {
        let Some(bearer) = &credential.bearer else {
            return true;
        };
        !matches!(self.identify(bearer).await, Ok(None))
    }

    /// Which live credential `bearer` is, whatever the mode.
    pub async fn identify(&self, bearer: &str) -> ApiResult<Option<Principal>> {
        if self.is_admin_token(bearer) {
            return Ok(Some(Principal::Admin));
        }
        if bearer.starts_with(SESSION_PREFIX) {
            return Ok(self.session(bearer).await?.map(|session| session.principal));
        }
        if let Some(owner) = self.workspace_token(bearer).await? {
            return Ok(Some(Principal::Workspace(owner.workspace_id)));
        }
        Ok(self.org_key(bearer).await?.map(Principal::Org))
    }

    /// Which admin token this server holds, as an admin session records it: a prefix of its
    /// hash, enough to tell tokens apart and useless for recovering one.
    pub fn admin_fingerprint(&self) -> Option<Vec<u8>> {
        self.admin_token_hash
            .as_ref()
            .map(|hash| hash[..16].to_vec())
    }

    /// The operator a session bearer acts for, or `refusal` when it names no live session.
    async fn session_principal(
        &self,
        bearer: &str,
        refusal: AuthError,
    ) -> Result<Principal, AuthError> {
        match self.session(bearer).await? {
            Some(session) => Ok(session.principal),
            None => Err(refusal),
        }
    }

    /// The live console session `bearer` names, with the operator it acts for: unexpired, not
    /// signed out, and opened by a credential that is still good (an org key not revoked; a
    /// `dev` session only while dev mode is on).
    pub async fn session(&self, bearer: &str) -> ApiResult<Option<ConsoleSession>> {
        let row = console_session::Entity::find()
            .filter(console_session::Column::TokenHash.eq(hash_token(bearer)))
            .filter(console_session::Column::RevokedAt.is_null())
            .filter(console_session::Column::ExpiresAt.gt(store::now()))
            .one(&self.db)
            .await
            .context("auth check failed")?;
        let Some(row) = row else {
            return Ok(None);
        };
        let principal = match (row.principal_kind.as_str(), &row.org_token_id) {
            ("admin", _)
                if row.admin_fingerprint.is_some()
                    && row.admin_fingerprint == self.admin_fingerprint() =>
            {
                Principal::Admin
            }
            ("dev", _) if self.dev_mode => Principal::Dev,
            ("org", Some(key_id)) => {
                let key = org_token::Entity::find_by_id(key_id.clone())
                    .filter(org_token::Column::RevokedAt.is_null())
                    .one(&self.db)
                    .await
                    .context("auth check failed")?;
                match key {
                    Some(key) => Principal::Org(OrgKey {
                        id: key.id,
                        prefix: key.prefix,
                        org_id: key.org_id,
                    }),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(ConsoleSession { row, principal }))
    }

    /// A live org key with this plaintext.
    pub async fn org_key(&self, bearer: &str) -> ApiResult<Option<OrgKey>> {
        let row = org_token::Entity::find()
            .filter(org_token::Column::TokenHash.eq(hash_token(bearer)))
            .filter(org_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await
            .context("auth check failed")?;
        Ok(row.map(|row| {
            self.touch(TokenTable::Org, row.id.clone());
            OrgKey {
                id: row.id,
                prefix: row.prefix,
                org_id: row.org_id,
            }
        }))
    }

    /// The live token `bearer` is, when its workspace is not removed. Answered from the token
    /// cache when fresh, and from a stale entry while the datastore is down (see
    /// `OUTAGE_GRACE`).
    pub async fn workspace_token(&self, bearer: &str) -> ApiResult<Option<TokenOwner>> {
        let hash = hash_token(bearer);
        let cached = self.tokens.get(&hash);
        if let Some((owner, validated)) = &cached
            && validated.elapsed() < TOKEN_FRESH
        {
            return Ok(Some(owner.clone()));
        }
        match self.look_up_token(&hash).await {
            Ok(Some(owner)) => {
                self.tokens.remember(hash, owner.clone());
                self.touch(TokenTable::Workspace, owner.token_id.clone());
                Ok(Some(owner))
            }
            Ok(None) => {
                self.tokens.forget(&hash);
                Ok(None)
            }
            Err(err) if store::is_unavailable(&err) => match cached {
                Some((owner, validated)) if self.validated_before_outage(validated) => {
                    Ok(Some(owner))
                }
                _ => Err(ApiError::datastore_unavailable()),
            },
            Err(err) => Err(store::failure(err, "auth check failed")),
        }
    }

    fn validated_before_outage(&self, validated: Instant) -> bool {
        self.db
            .down_since()
            .is_some_and(|down_since| validated + OUTAGE_GRACE >= down_since)
    }

    async fn look_up_token(&self, hash: &[u8]) -> Result<Option<TokenOwner>, sea_orm::DbErr> {
        let token = workspace_token::Entity::find()
            .filter(workspace_token::Column::TokenHash.eq(hash.to_vec()))
            .filter(workspace_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        let Some(token) = token else {
            return Ok(None);
        };
        let status: Option<WorkspaceStatus> =
            workspace::Entity::find_by_id(token.workspace_id.clone())
                .select_only()
                .column(workspace::Column::Status)
                .into_tuple()
                .one(&self.db)
                .await?;
        if status.is_none_or(|status| status == WorkspaceStatus::Removed) {
            return Ok(None);
        }
        Ok(Some(TokenOwner {
            workspace_id: token.workspace_id,
            token_id: token.id,
        }))
    }

    /// Drops the cached tokens of a workspace (a token revoked, the workspace removed).
    pub fn forget_tokens_of(&self, workspace_id: &str) {
        self.tokens.forget_workspace(workspace_id);
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
            if let Err(err) = result
                && !store::is_unavailable(&err)
            {
                warn!(error = %err, ?table, "last_used_at update failed");
            }
        });
    }
}

impl gateway::preauth::CredentialCheck for Authenticator {
    fn recognizes<'a>(
        &'a self,
        bearer: &'a str,
        _client: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(Authenticator::recognizes(self, bearer))
    }
}

#[derive(Debug, Clone, Copy)]
enum TokenTable {
    Workspace,
    Org,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_401s_with_the_documented_words_and_outages_pass_through() {
        for (refusal, words) in [
            (AuthError::AdminRequired, "admin auth required"),
            (AuthError::InvalidAdminToken, "invalid admin auth token"),
            (
                AuthError::MissingWorkspaceToken,
                "missing workspace auth token",
            ),
            (
                AuthError::InvalidWorkspaceToken,
                "invalid workspace auth token",
            ),
        ] {
            assert!(refusal.is_refusal());
            let answer = ApiError::from(refusal);
            assert_eq!(
                (answer.code.http_status(), answer.message.as_ref()),
                (401, words)
            );
        }
        let outage = AuthError::from(ApiError::datastore_unavailable());
        assert!(!outage.is_refusal(), "an outage never widens a gate");
        assert_eq!(ApiError::from(outage), ApiError::datastore_unavailable());
    }

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

//! The Console gRPC service (docs/console.md): operator sign-in sessions kept in the database
//! and each operator's saved canvas viewport. It mints and ends sessions; checking a session
//! token on a request is the authenticator's job (`auth::Authenticator::session`), and the
//! cookie that carries it is the gateway's.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::TimeDelta;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr, sea_query::OnConflict,
};
use tonic::{Request, metadata::MetadataMap};
use tracing::info;

use crate::{
    auth::{self, AuthError, Principal, SESSION_PREFIX},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{console_session, console_viewport},
    },
};

/// A user agent longer than this is cut before it is stored.
const MAX_USER_AGENT_CHARS: usize = 256;
/// The viewport before an operator saves one (the reference canvas's default).
const DEFAULT_VIEWPORT: pb::Viewport = pb::Viewport {
    x: 0.0,
    y: 0.0,
    zoom: 1.0,
};
/// Zoom outside (0, MAX_ZOOM] is not a viewport a canvas can show.
const MAX_ZOOM: f64 = 100.0;

/// Every way a console call is refused beyond the auth gate, with its code and words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsoleError {
    InvalidViewport,
}

impl From<ConsoleError> for ApiError {
    fn from(err: ConsoleError) -> Self {
        match err {
            ConsoleError::InvalidViewport => {
                ApiError::new(ErrorCode::BadRequest, "invalid viewport data")
            }
        }
    }
}

pub struct ConsoleService {
    state: Platform,
}

impl ConsoleService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::console_server::Console for ConsoleService {
    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> RpcResult<pb::SignInResponse> {
        reply(self.sign_in(request.into_inner()).await)
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> RpcResult<pb::ConsoleSession> {
        reply(self.current(request.metadata()).await)
    }

    async fn sign_out(
        &self,
        request: Request<pb::SignOutRequest>,
    ) -> RpcResult<pb::SignOutResponse> {
        reply(self.sign_out(request.metadata()).await)
    }

    async fn get_viewport(
        &self,
        request: Request<pb::GetViewportRequest>,
    ) -> RpcResult<pb::Viewport> {
        reply(self.viewport(request.metadata()).await)
    }

    async fn save_viewport(
        &self,
        request: Request<pb::Viewport>,
    ) -> RpcResult<pb::SaveViewportResponse> {
        reply(
            self.save_viewport(request.metadata(), request.get_ref())
                .await,
        )
    }
}

impl ConsoleService {
    /// Who `credential` is, when it may open a session: the admin token, a live org key, or
    /// nothing at all in dev mode. Workspace tokens and other sessions may not.
    async fn operator(&self, credential: &str) -> Result<(Principal, Option<String>), AuthError> {
        let auth = &self.state.auth;
        if credential.is_empty() {
            return if auth.dev_mode() {
                Ok((Principal::Dev, None))
            } else {
                Err(AuthError::AdminRequired)
            };
        }
        if auth.is_admin_token(credential) {
            return Ok((Principal::Admin, None));
        }
        if !credential.starts_with(SESSION_PREFIX)
            && let Some(key) = auth.org_key(credential).await?
        {
            let key_id = key.id.clone();
            return Ok((Principal::Org(key), Some(key_id)));
        }
        Err(AuthError::InvalidAdminToken)
    }

    async fn sign_in(&self, request: pb::SignInRequest) -> ApiResult<pb::SignInResponse> {
        let (principal, org_token_id) = self.operator(request.credential.trim()).await?;
        let token = format!(
            "{SESSION_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let now = store::now();
        let ttl = TimeDelta::from_std(self.state.settings.session_ttl).unwrap_or(TimeDelta::MAX);
        let row = console_session::Model {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: auth::hash_token(&token),
            principal_kind: principal.kind().to_owned(),
            admin_fingerprint: matches!(principal, Principal::Admin)
                .then(|| self.state.auth.admin_fingerprint())
                .flatten(),
            org_token_id,
            user_agent: Some(
                request
                    .user_agent
                    .chars()
                    .take(MAX_USER_AGENT_CHARS)
                    .collect(),
            )
            .filter(|agent: &String| !agent.is_empty()),
            created_at: now,
            expires_at: now.checked_add_signed(ttl).unwrap_or(now),
            revoked_at: None,
        };
        console_session::Entity::insert(console_session::ActiveModel::from(row.clone()))
            .exec_without_returning(&self.state.db)
            .await
            .context("failed to create session")?;
        info!(session_id = %row.id, principal = %principal.audit_name(), "console session opened");
        Ok(pb::SignInResponse {
            token,
            session: Some(session_message(&row, &principal)),
        })
    }

    /// The live session the caller's bearer names.
    async fn session(&self, metadata: &MetadataMap) -> ApiResult<auth::ConsoleSession> {
        let bearer = auth::bearer(metadata).ok_or(AuthError::AdminRequired)?;
        if !bearer.starts_with(SESSION_PREFIX) {
            return Err(AuthError::InvalidAdminToken.into());
        }
        Ok(self
            .state
            .auth
            .session(bearer)
            .await?
            .ok_or(AuthError::InvalidAdminToken)?)
    }

    async fn current(&self, metadata: &MetadataMap) -> ApiResult<pb::ConsoleSession> {
        let session = self.session(metadata).await?;
        Ok(session_message(&session.row, &session.principal))
    }

    /// Ends the caller's session; a bearer that names no live session has nothing to end.
    async fn sign_out(&self, metadata: &MetadataMap) -> ApiResult<pb::SignOutResponse> {
        if let Some(bearer) = auth::bearer(metadata).filter(|b| b.starts_with(SESSION_PREFIX)) {
            let ended = console_session::Entity::update_many()
                .col_expr(
                    console_session::Column::RevokedAt,
                    Expr::value(store::now()),
                )
                .filter(console_session::Column::TokenHash.eq(auth::hash_token(bearer)))
                .filter(console_session::Column::RevokedAt.is_null())
                .exec(&self.state.db)
                .await
                .context("failed to end session")?;
            if ended.rows_affected > 0 {
                info!("console session ended");
            }
        }
        Ok(pb::SignOutResponse {})
    }

    async fn viewport(&self, metadata: &MetadataMap) -> ApiResult<pb::Viewport> {
        let principal = self.state.auth.admin(metadata).await?;
        let saved = console_viewport::Entity::find_by_id(principal.audit_name())
            .one(&self.state.db)
            .await
            .context("query failed")?;
        Ok(saved.map_or(DEFAULT_VIEWPORT, |row| pb::Viewport {
            x: row.x,
            y: row.y,
            zoom: row.zoom,
        }))
    }

    async fn save_viewport(
        &self,
        metadata: &MetadataMap,
        viewport: &pb::Viewport,
    ) -> ApiResult<pb::SaveViewportResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        let valid = viewport.x.is_finite()
            && viewport.y.is_finite()
            && viewport.zoom.is_finite()
            && viewport.zoom > 0.0
            && viewport.zoom <= MAX_ZOOM;
        if !valid {
            return Err(ConsoleError::InvalidViewport.into());
        }
        let row = console_viewport::ActiveModel {
            principal: Set(principal.audit_name()),
            x: Set(viewport.x),
            y: Set(viewport.y),
            zoom: Set(viewport.zoom),
            saved_at: Set(store::now()),
        };
        console_viewport::Entity::insert(row)
            .on_conflict(
                OnConflict::column(console_viewport::Column::Principal)
                    .update_columns([
                        console_viewport::Column::X,
                        console_viewport::Column::Y,
                        console_viewport::Column::Zoom,
                        console_viewport::Column::SavedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.state.db)
            .await
            .context("failed to save viewport")?;
        Ok(pb::SaveViewportResponse {})
    }
}

fn session_message(row: &console_session::Model, principal: &Principal) -> pb::ConsoleSession {
    pb::ConsoleSession {
        id: row.id.clone(),
        principal: principal.audit_name(),
        created_at: Some(pb::timestamp(row.created_at)),
        expires_at: Some(pb::timestamp(row.expires_at)),
    }
}

/// Deletes the sessions that expired or were ended (the sweeper's pass).
pub async fn expire_sessions(state: &Platform) -> Result<(), sea_orm::DbErr> {
    console_session::Entity::delete_many()
        .filter(
            sea_orm::Condition::any()
                .add(console_session::Column::ExpiresAt.lt(store::now()))
                .add(console_session::Column::RevokedAt.is_not_null()),
        )
        .exec(&state.db)
        .await?;
    Ok(())
}

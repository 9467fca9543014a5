//! GitHub App installation tokens (docs/operations.md §8): the Github gRPC service, the App's
//! RS256 JWT, the call that trades it for an installation token, and the cache that shares one
//! token — and one refresh — among every caller until five minutes before it expires. It never
//! logs a token or the key, and never hands out a token past its refresh point.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tonic::{Request, metadata::MetadataMap};
use tracing::{info, warn};

use crate::{
    config::GithubArgs,
    domain::validate,
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store,
};

/// A token is refreshed this long before it expires, so a git operation never starts on one
/// about to lapse.
const REFRESH_BEFORE: TimeDelta = TimeDelta::minutes(5);
/// How long GitHub may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from GitHub.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Every way a token request fails, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubError {
    NotConfigured,
    /// GitHub answered with this status, or (`None`) did not answer.
    Upstream(Option<u16>),
    Signing,
}

impl From<GithubError> for ApiError {
    fn from(err: GithubError) -> Self {
        match err {
            GithubError::NotConfigured => {
                ApiError::new(ErrorCode::NotFound, "github app not configured")
            }
            GithubError::Upstream(status) => {
                ApiError::new(ErrorCode::BadGateway, "github token request failed")
                    .with_fields(json!({"upstream_status": status}))
            }
            GithubError::Signing => {
                ApiError::new(ErrorCode::Internal, "github app jwt could not be signed")
            }
        }
    }
}

/// An installation token and when GitHub says it expires.
#[derive(Clone, Deserialize)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The configured App: its key, where to ask, and the shared token.
pub struct GithubApp {
    /// The JWT's `iss`: the numeric App id as a number, a client id as a string.
    issuer: Value,
    key: EncodingKey,
    endpoint: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Held across a refresh, so concurrent callers wait for the one refresh in flight.
    cached: Mutex<Option<InstallationToken>>,
}

impl GithubApp {
    /// The App the settings describe; `None` when none is configured. A partial or unreadable
    /// configuration is a start-up error naming what is wrong (never the key).
    pub fn from_args(args: &GithubArgs) -> Result<Option<Self>, String> {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let key = args
            .github_app_private_key
            .as_ref()
            .map(|key| key.expose().trim().to_owned())
            .filter(|key| !key.is_empty());
        let (app_id, installation, key) = match (
            given(&args.github_app_id),
            given(&args.github_app_installation_id),
            key,
        ) {
            (None, None, None) => return Ok(None),
            (Some(app_id), Some(installation), Some(key)) => (app_id, installation, key),
            _ => {
                return Err("GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and GITHUB_APP_INSTALLATION_ID are set together or not at all".to_owned());
            }
        };
        if !installation.bytes().all(|b| b.is_ascii_digit()) {
            return Err("GITHUB_APP_INSTALLATION_ID is not a number".to_owned());
        }
        let pem = if key.starts_with("-----BEGIN") {
            key.into_bytes()
        } else {
            std::fs::read(&key).map_err(|err| {
                format!("cannot read the GITHUB_APP_PRIVATE_KEY file {key}: {err}")
            })?
        };
        let key = EncodingKey::from_rsa_pem(&pem)
            .map_err(|_| "GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM".to_owned())?;
        let issuer = match app_id.parse::<u64>() {
            Ok(number) => json!(number),
            Err(_) => json!(app_id),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Some(Self {
            issuer,
            key,
            endpoint: format!(
                "{}/app/installations/{installation}/access_tokens",
                args.github_api_url.trim_end_matches('/')
            ),
            client: Client::builder(TokioExecutor::new()).build(connector),
            cached: Mutex::new(None),
        }))
    }

    /// The shared token, refreshed first when it is within [`REFRESH_BEFORE`] of expiring.
    pub async fn token(&self) -> Result<InstallationToken, GithubError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && token.expires_at - REFRESH_BEFORE > Utc::now()
        {
            return Ok(token.clone());
        }
        let fresh = self.fetch().await?;
        info!(expires_at = %fresh.expires_at, "github installation token refreshed");
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// The App's JWT: issued a minute back (clock skew), valid nine minutes (GitHub allows ten).
    fn jwt(&self) -> Result<String, GithubError> {
        let now = Utc::now().timestamp();
        let claims = json!({"iat": now - 60, "exp": now + 9 * 60, "iss": self.issuer});
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|_| GithubError::Signing)
    }

    async fn fetch(&self) -> Result<InstallationToken, GithubError> {
        let request = http::Request::post(&self.endpoint)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.jwt()?),
            )
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header(http::header::USER_AGENT, "molecule-control-plane")
            .header("x-github-api-version", "2022-11-28")
            .body(Full::new(Bytes::new()))
            .map_err(|_| GithubError::Upstream(None))?;
        let answer = async {
            let response = self.client.request(request).await.map_err(|err| {
                warn!(error = %err, "github api unreachable");
                GithubError::Upstream(None)
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| GithubError::Upstream(Some(status.as_u16())))?
                .to_bytes();
            if !status.is_success() {
                warn!(
                    status = status.as_u16(),
                    "github refused an installation token"
                );
                return Err(GithubError::Upstream(Some(status.as_u16())));
            }
            serde_json::from_slice::<InstallationToken>(&body)
                .ok()
                .filter(|token| !token.token.is_empty())
                .ok_or(GithubError::Upstream(Some(status.as_u16())))
        };
        tokio::time::timeout(UPSTREAM_TIMEOUT, answer)
            .await
            .unwrap_or(Err(GithubError::Upstream(None)))
    }
}

pub struct GithubService {
    state: Platform,
    app: Option<Arc<GithubApp>>,
}

impl GithubService {
    pub fn new(state: Platform, app: Option<Arc<GithubApp>>) -> Self {
        Self { state, app }
    }

    async fn installation_token(
        &self,
        metadata: &MetadataMap,
        request: &pb::GithubTokenRequest,
    ) -> ApiResult<pb::GithubToken> {
        if request.workspace_id.is_empty() {
            self.state.auth.admin(metadata).await?;
        } else {
            let id = validate::workspace_id(&request.workspace_id)?;
            self.state.auth.workspace(metadata, &id).await?;
            store::live_workspace(&self.state.db, &id).await?;
        }
        let app = self.app.as_ref().ok_or(GithubError::NotConfigured)?;
        let token = app.token().await?;
        Ok(pb::GithubToken {
            token: token.token,
            expires_at: Some(pb::timestamp(token.expires_at)),
        })
    }
}

#[tonic::async_trait]
impl pb::github_server::Github for GithubService {
    async fn get_installation_token(
        &self,
        request: Request<pb::GithubTokenRequest>,
    ) -> RpcResult<pb::GithubToken> {
        reply(
            self.installation_token(request.metadata(), request.get_ref())
                .await,
        )
    }
}

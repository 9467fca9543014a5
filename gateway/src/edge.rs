//! The HTTP edge every REST response passes through (docs/workspaces.md §7): request ids and
//! tracing spans, security headers, CORS that never rejects a client, the client address behind
//! trusted proxies, the per-IP rate limiter, the tenant guard, the body cap and the pre-auth
//! budget. It decides nothing about credentials. The gRPC routes get the same limiters and guard
//! from the control plane's own gRPC edge (docs/decisions.md D19).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, TraceLayer},
};

use crate::{
    client_ip::{Caller, TrustedProxies},
    error::RestError,
    preauth::{Framing, PreAuth, is_grpc},
};

/// Default cap on request bodies.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// A chat upload's body: 50 MiB of files and room for the multipart framing
/// (docs/runtime.md §2).
pub const UPLOAD_BODY_LIMIT: usize = 51 * 1024 * 1024;

/// The largest body a route reads: chat uploads take files, everything else JSON.
fn body_limit(path: &str) -> usize {
    let upload = path
        .strip_prefix("/workspaces/")
        .and_then(|rest| rest.strip_suffix("/chat/uploads"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    if upload {
        UPLOAD_BODY_LIMIT
    } else {
        BODY_LIMIT
    }
}
/// Default cap on plugin-install bodies.
pub const PLUGIN_INSTALL_BODY_MAX_BYTES: usize = 64 * 1024;
const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
    ("content-security-policy", "default-src 'self'"),
];

/// What orchestrators and scrapers poll: never rate-limited, so a busy client cannot make a
/// replica look dead.
const PROBE_PATHS: [&str; 3] = ["/health", "/readyz", "/metrics"];

const TENANT_EXEMPT_PATHS: [&str; 5] = [
    "/health",
    "/readyz",
    "/metrics",
    "/registry/register",
    "/registry/heartbeat",
];

/// Org API keys minted per client IP per hour (docs/workspaces.md §3.6), over REST and gRPC
/// together.
const ORG_KEY_MINTS_PER_HOUR: u32 = 10;

/// Requests of the tenant guard's exempt list, by gRPC method: the agent plumbing that the
/// REST list exempts (register, heartbeats), the agent's inbound stream, replica-to-replica
/// calls (authenticated on their own), health and reflection.
pub const TENANT_EXEMPT_GRPC_PREFIXES: [&str; 6] = [
    "/molecule.v1.Registry/Register",
    // Heartbeat and HeartbeatStream.
    "/molecule.v1.Registry/Heartbeat",
    "/molecule.v1.AgentInbound/",
    "/molecule.v1.Replicas/",
    "/grpc.health.",
    "/grpc.reflection.",
];

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Requests per minute per caller (credential, else client IP).
    pub rate_limit: u32,
    /// Off in dev mode (`X-RateLimit-Limit: unlimited`).
    pub rate_limiting: bool,
    /// Dev mode: bearer-less requests pass the auth gates, so foreign origins are refused.
    pub dev_mode: bool,
    pub cors_origins: Vec<String>,
    /// The tenant guard's org id; `None` disables the guard.
    pub org_id: Option<String>,
    /// Peers whose `Forwarded` or `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// The cap on `POST /workspaces/:id/plugins` bodies (docs/workspaces.md §7.7).
    pub plugin_install_body_max_bytes: usize,
    /// How often an open `/ws` re-checks its credential.
    pub ws_recheck: Duration,
    /// Host names (besides loopback, `localhost` and `host.docker.internal`) under which a dev
    /// server takes bearer-less requests, lowercase.
    pub dev_hosts: Vec<String>,
    /// The public URL is `https://…` (a TLS proxy in front): session cookies are `Secure` even
    /// when the proxy sends no `X-Forwarded-Proto`.
    pub public_https: bool,
}

/// The edge's configuration and the limiters it shares between REST and gRPC.
pub struct Edge {
    pub config: EdgeConfig,
    /// Requests per caller per minute.
    pub requests: RateLimiter,
    /// `POST /org/tokens` and `Workspaces/CreateOrgToken` (10 per hour per IP).
    pub org_key_mints: RateLimiter,
}

impl Edge {
    pub fn new(config: EdgeConfig) -> Self {
        Self {
            requests: RateLimiter::new(config.rate_limit, Duration::from_secs(60)),
            org_key_mints: RateLimiter::new(ORG_KEY_MINTS_PER_HOUR, Duration::from_secs(3600)),
            config,
        }
    }

    /// Whether the tenant guard lets this request through: exempt paths, or the org id in
    /// `X-Molecule-Org-Id` (or a Fly replay's state). Always when no org id is configured.
    pub fn tenant_passes(&self, path: &str, headers: &HeaderMap) -> bool {
        let Some(org_id) = &self.config.org_id else {
            return true;
        };
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let replay_state = header("fly-replay-src").and_then(|value| {
            value
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| *key == "state")
                .map(|(_, state)| state.to_owned())
        });
        TENANT_EXEMPT_PATHS.contains(&path)
            || path.starts_with("/cp/")
            || TENANT_EXEMPT_GRPC_PREFIXES
                .iter()
                .any(|prefix| path.starts_with(prefix))
            || header("x-molecule-org-id").map(str::trim) == Some(org_id.as_str())
            || replay_state.as_deref() == Some(org_id.as_str())
    }
}

impl EdgeConfig {
    pub fn new(
        rate_limit: u32,
        dev_mode: bool,
        cors_origins: &str,
        org_id: Option<&str>,
        trusted_proxies: TrustedProxies,
    ) -> Self {
        Self {
            trusted_proxies,
            plugin_install_body_max_bytes: PLUGIN_INSTALL_BODY_MAX_BYTES,
            ws_recheck: Duration::from_secs(30),
            dev_hosts: Vec::new(),
            public_https: false,
            rate_limit,
            rate_limiting: !dev_mode,
            dev_mode,
            cors_origins: cors_origins
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .map(str::to_owned)
                .collect(),
            org_id: org_id
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
        }
    }

    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        self.cors_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim()))
    }
}

/// The request's `Origin` is this server's own (`scheme://Host`).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    match (header(header::ORIGIN), header(header::HOST)) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        _ => false,
    }
}

impl Edge {
    /// Why dev mode refuses a bearer-less request, if it does (docs/decisions.md D20). Dev mode
    /// lets such requests through the auth gates, so they must come from this machine's own
    /// tools: addressed to a loopback host, `localhost`, `host.docker.internal` or a configured
    /// dev host (a DNS-rebinding page reaches a dev server under the attacker's name, and its
    /// browser then calls it "same-origin"), and not sent by a web page of another origin
    /// (browsers name it in `Origin`; curl and the SDK send none or the server's own).
    /// (A standalone gateway in front of a dev control plane addresses it by its upstream
    /// URL's host, which must then be a dev host too.)
    pub fn dev_refusal<B>(&self, request: &http::Request<B>) -> Option<&'static str> {
        let headers = request.headers();
        if !self.config.dev_mode || crate::preauth::bearer(headers).is_some() {
            return None;
        }
        if !request_host(request).is_some_and(|host| self.config.dev_host(host)) {
            return Some(HOST_NOT_ALLOWED);
        }
        let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or_default();
        (!same_origin(headers) && !self.config.origin_allowed(origin)).then_some(ORIGIN_NOT_ALLOWED)
    }
}

impl EdgeConfig {
    /// A host a dev server answers bearer-less requests under.
    fn dev_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => ip.is_loopback(),
            Err(_) => {
                host == "localhost"
                    || host.ends_with(".localhost")
                    || host == "host.docker.internal"
                    || self.dev_hosts.contains(&host)
            }
        }
    }
}

/// The host a request is addressed to, without its port: `Host`, or an h2 request's
/// `:authority`.
fn request_host<B>(request: &http::Request<B>) -> Option<&str> {
    let authority = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => &authority[..v6.find(']')? + 2],
        None => authority.split(':').next()?,
    };
    Some(host)
}

/// The documented refusal of a dev request addressed to a host that is not this machine's.
pub const HOST_NOT_ALLOWED: &str = "host not allowed";

/// The cookie that carries an operator console session (docs/console.md §1).
pub const SESSION_COOKIE: &str = "molecule_session";

/// The session token in the request's cookie, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Makes a session cookie the request's bearer (an explicit `Authorization` wins). The console
/// is same-origin: a request that changes state, or opens a WebSocket, with the cookie must
/// come from the console's own origin (otherwise a page elsewhere could ride the operator's
/// session), and a read from another origin, even one CORS allows, is served as if it carried
/// no cookie. Returns the refusal.
fn admit_session_cookie(request: &mut Request) -> Option<Response> {
    let headers = request.headers();
    if headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let token = session_cookie(headers)?;
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let upgrade = headers.contains_key(header::UPGRADE);
    if !same_origin(headers) {
        if !safe || upgrade {
            return Some(RestError::new(StatusCode::FORBIDDEN, ORIGIN_NOT_ALLOWED).into_response());
        }
        // Browsers name the page's origin on every cross-origin read; a same-origin read
        // (and a navigation) sends none.
        if headers.contains_key(header::ORIGIN) {
            return None;
        }
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    None
}

/// The documented refusal of a foreign origin.
pub const ORIGIN_NOT_ALLOWED: &str = "origin not allowed";

/// Longest request target served; beyond it, a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A response whose empty body is its documented form (the tenant guard's 404).
#[derive(Debug, Clone, Copy)]
struct EmptyByDesign;

/// Every error a client can get from the REST surface is JSON (docs/workspaces.md §7.7): the
/// framework's own answers — an unparsable path segment, a method the route does not take —
/// are given the documented shape, keeping their status and headers (`Allow`). Their text is
/// not echoed: it can quote the request.
fn json_shaped(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if json
        || !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<EmptyByDesign>().is_some()
        || response.headers().contains_key("grpc-status")
    {
        return response;
    }
    let message = match status {
        StatusCode::BAD_REQUEST => "malformed request",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed",
        StatusCode::NOT_FOUND => "not found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
        other => other.canonical_reason().unwrap_or("request failed"),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = RestError::new(status, &message.to_ascii_lowercase()).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, fresh.into_body())
}

/// The whole edge as one middleware, since each layer costs a boxed future and a service
/// clone per request: CORS (a preflight is answered here), the REST guards (gRPC-Web passes to
/// the gRPC edge, which applies the same rules after its translation), and on the way out the
/// security headers and, for an allowed origin, the CORS headers.
async fn edge_middleware(
    State((edge, preauth)): State<(Arc<Edge>, PreAuth)>,
    request: Request,
    next: Next,
) -> Response {
    let cors_origin = cors_origin(&edge, request.headers());
    let mut response = if cors_origin.is_some() && is_preflight(&request) {
        preflight()
    } else if is_grpc(request.headers()) {
        next.run(request).await
    } else {
        guard(&edge, &preauth, request, next).await
    };
    if let Some(origin) = cors_origin {
        add_cors_headers(&mut response, origin);
    }
    add_security_headers(&mut response);
    response
}

/// The REST guards, in order: the client address, the rate limiter, the request-target cap,
/// dev mode's origin rule, the tenant guard, the declared-body cap and the pre-auth budget;
/// then every error answer is given its JSON shape.
async fn guard(edge: &Edge, preauth: &PreAuth, mut request: Request, next: Next) -> Response {
    edge.config.trusted_proxies.settle(&mut request);
    let limited = edge.config.rate_limiting && !PROBE_PATHS.contains(&request.uri().path());
    let decision = if limited {
        Some(edge.requests.check(preauth.caller(&mut request).await))
    } else {
        None
    };
    let response = match decision {
        Some(decision) if !decision.allowed => too_many_requests(decision),
        _ => match refusal(edge, &mut request) {
            Some(refused) => refused,
            None => {
                let (request, settle) = preauth.admit(request, Framing::Raw).await;
                let response = next.run(request).await;
                drop(settle);
                json_shaped(response)
            }
        },
    };
    with_rate_headers(response, decision)
}

/// The answer to a REST request the edge refuses before any handler, if it does.
fn refusal(edge: &Edge, request: &mut Request) -> Option<Response> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(
            RestError::new(StatusCode::URI_TOO_LONG, "request URI too long").into_response(),
        );
    }
    if let Some(refused) = admit_session_cookie(request) {
        return Some(refused);
    }
    if let Some(refusal) = edge.dev_refusal(request) {
        return Some(RestError::new(StatusCode::FORBIDDEN, refusal).into_response());
    }
    // Multi-tenant routing (docs/workspaces.md §7.5): another tenant's request gets an empty 404,
    // so the tenant's existence does not leak.
    if !edge.tenant_passes(request.uri().path(), request.headers()) {
        let mut hidden = (StatusCode::NOT_FOUND, Body::empty()).into_response();
        hidden.extensions_mut().insert(EmptyByDesign);
        return Some(hidden);
    }
    // A request let in by a replay's state still names its tenant to the services behind.
    if let Some(org_id) = &edge.config.org_id
        && !request.headers().contains_key("x-molecule-org-id")
        && let Ok(value) = HeaderValue::from_str(org_id)
    {
        request.headers_mut().insert("x-molecule-org-id", value);
    }
    // Declared oversize bodies; bodies without a length are capped where they are read.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    declared
        .is_some_and(|length| length > body_limit(request.uri().path()))
        .then(payload_too_large)
}

/// `X-RateLimit-*` on every answer (`unlimited` in dev mode).
fn with_rate_headers(mut response: Response, decision: Option<Decision>) -> Response {
    let headers = response.headers_mut();
    match decision {
        None => {
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("unlimited"));
        }
        Some(decision) => {
            headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
            headers.insert(
                "x-ratelimit-remaining",
                HeaderValue::from(decision.remaining),
            );
            headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_secs));
        }
    }
    response
}

/// Wraps `app` in the edge middleware.
pub fn apply(app: Router, edge: Arc<Edge>, preauth: PreAuth) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    app.layer(middleware::from_fn_with_state(
        (edge, preauth),
        edge_middleware,
    ))
    .layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("");
                    let path = traced_path(request.uri().path());
                    tracing::info_span!("request", method = %request.method(), %path, request_id)
                })
                // A failing request is logged where it fails, once; during an outage the store
                // reports the outage instead of every refused request.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            .layer(PropagateRequestIdLayer::new(request_id)),
    )
}

/// The route template a request matched (`/workspaces/{id}/secrets/{key}`), left on the
/// response for metrics: labels stay bounded and never carry ids, key names or scanner noise.
#[derive(Debug, Clone)]
pub struct RouteTemplate(pub axum::extract::MatchedPath);

pub(crate) async fn tag_route(
    matched: axum::extract::MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(RouteTemplate(matched));
    response
}

/// The path as traces show it: a secret's key name (`…/secrets/{key}`) is redacted.
fn traced_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.split_once("/secrets/") {
        Some((prefix, rest)) if !matches!(rest, "values" | "rotate-key") => {
            format!("{prefix}/secrets/{{key}}").into()
        }
        _ => path.into(),
    }
}

/// The JSON 404 for unknown routes.
pub async fn not_found() -> Response {
    RestError::new(StatusCode::NOT_FOUND, "not found").into_response()
}

fn add_security_headers(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// An allowed origin gets the CORS headers; any other origin gets none but is still served, so
/// non-browser clients that send `Origin` (the SDK) are never rejected.
fn cors_origin(edge: &Edge, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    (!same_origin(headers) && edge.config.origin_allowed(origin))
        .then(|| HeaderValue::from_str(origin).ok())
        .flatten()
}

fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Origin, Content-Type, X-Workspace-ID, Authorization, X-Molecule-Org-Id, X-Grpc-Web, X-User-Agent, Grpc-Timeout",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

fn add_cors_headers(response: &mut Response, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-Id, Grpc-Status, Grpc-Message",
        ),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

type Cells = governor::RateLimiter<
    Caller,
    governor::state::keyed::DefaultKeyedStateStore<Caller>,
    governor::clock::DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

/// `limit` requests per `window` for each caller, as a GCRA (governor's): a burst of `limit`,
/// then one more every `window / limit`. Unlike a fixed window it never lets a caller spend
/// twice the limit across a window's edge.
pub struct RateLimiter {
    limit: u32,
    /// Time to earn back one request.
    period: Duration,
    cells: Cells,
    clock: governor::clock::DefaultClock,
    last_eviction: Mutex<Instant>,
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the window refills (at least 1).
    pub reset_secs: u64,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        let burst = std::num::NonZeroU32::new(limit.max(1)).expect("at least 1");
        let period = window / burst.get();
        let quota = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a period above zero")
            .allow_burst(burst);
        let clock = governor::clock::DefaultClock::default();
        Self {
            limit: burst.get(),
            period,
            cells: governor::RateLimiter::<_, _, _, governor::middleware::NoOpMiddleware<_>>::new(
                quota,
                Default::default(),
                clock.clone(),
            )
            .with_middleware::<governor::middleware::StateInformationMiddleware>(),
            clock,
            last_eviction: Mutex::new(Instant::now()),
        }
    }

    pub fn check(&self, caller: Caller) -> Decision {
        self.evict_idle();
        match self.cells.check_key(&caller) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: self.limit,
                    remaining,
                    reset_secs: whole_seconds(self.period * (self.limit - remaining)),
                }
            }
            Err(refused) => {
                use governor::clock::Clock;
                Decision {
                    allowed: false,
                    limit: self.limit,
                    remaining: 0,
                    reset_secs: whole_seconds(refused.wait_time_from(self.clock.now())),
                }
            }
        }
    }

    /// Forgets callers whose allowance is full again, once a minute, so the table holds only
    /// the recently active.
    fn evict_idle(&self) {
        let Ok(mut last) = self.last_eviction.try_lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(60) {
            self.cells.retain_recent();
            self.cells.shrink_to_fit();
            *last = Instant::now();
        }
    }
}

/// Whole seconds, at least 1, as the rate-limit headers carry them.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

/// The documented 429: `Retry-After` plus `{"error":"rate limit exceeded","retry_after":N}`.
pub(crate) fn too_many_requests(decision: Decision) -> Response {
    let mut response = RestError::with_body(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": "rate limit exceeded", "retry_after": decision.reset_secs}),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(decision.reset_secs));
    response
}

pub(crate) fn payload_too_large() -> Response {
    RestError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_paths_hide_secret_key_names() {
        assert_eq!(
            traced_path("/workspaces/w/secrets/OPENAI_API_KEY"),
            "/workspaces/w/secrets/{key}"
        );
        assert_eq!(
            traced_path("/settings/secrets/K"),
            "/settings/secrets/{key}"
        );
        assert_eq!(
            traced_path("/workspaces/w/secrets/values"),
            "/workspaces/w/secrets/values"
        );
        assert_eq!(
            traced_path("/workspaces/w/secrets"),
            "/workspaces/w/secrets"
        );
    }

    #[test]
    fn the_limiter_counts_down_per_caller_and_earns_requests_back() {
        let limiter = RateLimiter::new(2, Duration::from_millis(100));
        let ip = Caller::Address("10.0.0.1".parse().unwrap());
        let first = limiter.check(ip);
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert!(limiter.check(ip).allowed);
        let third = limiter.check(ip);
        assert!(!third.allowed);
        assert_eq!((third.remaining, third.reset_secs), (0, 1));
        assert!(
            limiter
                .check(Caller::Address("10.0.0.2".parse().unwrap()))
                .allowed,
            "each address has its own allowance"
        );
        assert!(
            limiter.check(Caller::credential("a-token")).allowed,
            "and so has each credential"
        );
        assert_eq!(Caller::credential("a-token"), Caller::credential("a-token"));
        assert_ne!(Caller::credential("a-token"), Caller::credential("b-token"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.check(ip).allowed, "one request earned back");
        assert!(!limiter.check(ip).allowed, "and only one");
    }

    #[test]
    fn cors_origins_are_trimmed_and_case_insensitive() {
        let config = EdgeConfig::new(
            600,
            false,
            " http://localhost:3000 , https://canvas.example ",
            None,
            TrustedProxies::default(),
        );
        assert!(config.origin_allowed("HTTP://LOCALHOST:3000"));
        assert!(config.origin_allowed("https://canvas.example"));
        assert!(!config.origin_allowed("https://evil.example"));
    }
}

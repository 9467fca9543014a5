//! The HTTP edge every response passes through (contract §7): request ids and tracing spans,
//! security headers, CORS that never rejects a client, the per-IP rate limiter, the tenant
//! guard and the body cap. It decides nothing about credentials.

use std::{
    collections::HashMap,
    net::IpAddr,
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
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    error::ApiError,
    preauth::{PreAuth, is_grpc},
};

/// Default cap on request bodies.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Buckets untouched this long are dropped.
const IDLE_BUCKET: Duration = Duration::from_secs(600);

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

const TENANT_EXEMPT_PATHS: [&str; 4] = [
    "/health",
    "/metrics",
    "/registry/register",
    "/registry/heartbeat",
];

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Requests per minute per client IP.
    pub rate_limit: u32,
    /// Off in dev mode (`X-RateLimit-Limit: unlimited`).
    pub rate_limiting: bool,
    pub cors_origins: Vec<String>,
    /// The tenant guard's org id; `None` disables the guard.
    pub org_id: Option<String>,
}

impl EdgeConfig {
    pub fn new(
        rate_limit: u32,
        rate_limiting: bool,
        cors_origins: &str,
        org_id: Option<&str>,
    ) -> Self {
        Self {
            rate_limit,
            rate_limiting,
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

/// Wraps `app` in the edge middleware. `limiter` is shared so tests and replicas can inspect it.
pub fn apply(
    app: Router,
    config: Arc<EdgeConfig>,
    limiter: Arc<RateLimiter>,
    preauth: PreAuth,
) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    app.layer(middleware::from_fn_with_state(
        preauth,
        crate::preauth::guard_rest,
    ))
    .layer(middleware::from_fn(body_cap))
    .layer(middleware::from_fn_with_state(config.clone(), tenant_guard))
    .layer(middleware::from_fn_with_state(
        (config.clone(), limiter),
        rate_limit,
    ))
    .layer(middleware::from_fn_with_state(config, cors))
    .layer(middleware::from_fn(security_headers))
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
                }),
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
    ApiError::new(StatusCode::NOT_FOUND, "not found").into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Allowed origins get the CORS headers; any other origin gets none but is still served, so
/// non-browser clients that send `Origin` (the SDK) are never rejected.
async fn cors(State(config): State<Arc<EdgeConfig>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let same_origin = origin.as_deref().is_some_and(|origin| {
        origin == format!("http://{host}") || origin == format!("https://{host}")
    });
    let allowed = origin
        .filter(|origin| !same_origin && config.origin_allowed(origin))
        .and_then(|origin| HeaderValue::from_str(&origin).ok());
    let Some(origin) = allowed else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
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
    } else {
        next.run(request).await
    };
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
    response
}

/// One fixed window per client IP.
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_ip: HashMap<IpAddr, Bucket>,
    last_eviction: Instant,
}

struct Bucket {
    count: u32,
    window_start: Instant,
    last_seen: Instant,
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
        Self {
            limit,
            window,
            buckets: Mutex::new(Buckets {
                by_ip: HashMap::new(),
                last_eviction: Instant::now(),
            }),
        }
    }

    pub fn check(&self, ip: IpAddr) -> Decision {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if now.duration_since(buckets.last_eviction) > Duration::from_secs(60) {
            buckets
                .by_ip
                .retain(|_, bucket| now.duration_since(bucket.last_seen) < IDLE_BUCKET);
            buckets.last_eviction = now;
        }
        let bucket = buckets.by_ip.entry(ip).or_insert(Bucket {
            count: 0,
            window_start: now,
            last_seen: now,
        });
        if now.duration_since(bucket.window_start) >= self.window {
            bucket.count = 0;
            bucket.window_start = now;
        }
        bucket.last_seen = now;
        bucket.count = bucket.count.saturating_add(1);
        let elapsed = now.duration_since(bucket.window_start);
        let reset = self.window.saturating_sub(elapsed);
        Decision {
            allowed: bucket.count <= self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(bucket.count),
            reset_secs: reset.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// The documented 429: `Retry-After` plus `{"error":"rate limit exceeded","retry_after":N}`.
pub(crate) fn too_many_requests(decision: Decision) -> Response {
    let mut response = ApiError::with_body(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": "rate limit exceeded", "retry_after": decision.reset_secs}),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(decision.reset_secs));
    response
}

async fn rate_limit(
    State((config, limiter)): State<(Arc<EdgeConfig>, Arc<RateLimiter>)>,
    request: Request,
    next: Next,
) -> Response {
    if is_grpc(request.headers()) {
        return next.run(request).await;
    }
    if !config.rate_limiting {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert("x-ratelimit-limit", HeaderValue::from_static("unlimited"));
        return response;
    }
    let (parts, body) = request.into_parts();
    let decision = limiter.check(crate::forward::client_ip(&parts));
    let mut response = if decision.allowed {
        next.run(Request::from_parts(parts, body)).await
    } else {
        too_many_requests(decision)
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_secs));
    response
}

/// Multi-tenant routing (contract §7.5): a request for another tenant gets an empty 404, so the
/// tenant's existence does not leak.
async fn tenant_guard(
    State(config): State<Arc<EdgeConfig>>,
    request: Request,
    next: Next,
) -> Response {
    // gRPC callers are runtimes and services (including a standalone gateway, which already
    // applied this guard); the guard routes REST traffic.
    let Some(org_id) = config
        .org_id
        .as_ref()
        .filter(|_| !is_grpc(request.headers()))
    else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let replay_state = header("fly-replay-src").and_then(|value| {
        value
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == "state")
            .map(|(_, state)| state.to_owned())
    });
    let passes = TENANT_EXEMPT_PATHS.contains(&path)
        || path.starts_with("/cp/")
        || header("x-molecule-org-id").map(str::trim) == Some(org_id.as_str())
        || replay_state.as_deref() == Some(org_id.as_str());
    if passes {
        next.run(request).await
    } else {
        (StatusCode::NOT_FOUND, Body::empty()).into_response()
    }
}

/// Rejects declared oversize REST bodies before any handler runs; bodies without a length are
/// capped where they are read.
async fn body_cap(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if !is_grpc(request.headers()) && declared.is_some_and(|length| length > BODY_LIMIT) {
        return payload_too_large();
    }
    next.run(request).await
}

pub(crate) fn payload_too_large() -> Response {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
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
    fn fixed_window_counts_down_and_refills() {
        let limiter = RateLimiter::new(2, Duration::from_millis(50));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limiter.check(ip);
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert!(limiter.check(ip).allowed);
        let third = limiter.check(ip);
        assert!(!third.allowed);
        assert_eq!(third.remaining, 0);
        assert!(
            limiter.check("10.0.0.2".parse().unwrap()).allowed,
            "buckets are per IP"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.check(ip).allowed, "the window refills");
    }

    #[test]
    fn cors_origins_are_trimmed_and_case_insensitive() {
        let config = EdgeConfig::new(
            600,
            true,
            " http://localhost:3000 , https://canvas.example ",
            None,
        );
        assert!(config.origin_allowed("HTTP://LOCALHOST:3000"));
        assert!(config.origin_allowed("https://canvas.example"));
        assert!(!config.origin_allowed("https://evil.example"));
    }
}

//! The edge for gRPC, native and gRPC-Web alike (design D19): the tenant guard, the per-IP
//! rate limiter and the org-key mint limiter, sharing their buckets with REST so a client is
//! counted once whichever transport it uses. Calls that did not come off a socket (the
//! in-process gateway's, already counted at the REST edge) pass untouched. It decides nothing
//! about credentials.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use gateway::{Edge, edge::Decision};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};

/// Probes are never limited.
const UNLIMITED_PREFIXES: [&str; 2] = ["/grpc.health.", "/grpc.reflection."];
const CREATE_ORG_TOKEN: &str = "/molecule.v1.Workspaces/CreateOrgToken";

pub async fn guard(State(edge): State<Arc<Edge>>, mut request: Request, next: Next) -> Response {
    let Some(client) = edge.config.trusted_proxies.settle(&mut request) else {
        return next.run(request).await;
    };
    if edge.refuses_browser(request.headers()) {
        return refuse(ApiError::forbidden(gateway::edge::ORIGIN_NOT_ALLOWED));
    }
    let path = request.uri().path();
    if !edge.tenant_passes(path, request.headers()) {
        // Like REST's empty 404: the tenant's existence does not leak.
        return refuse(ApiError::not_found(""));
    }
    let limited =
        edge.config.rate_limiting && !UNLIMITED_PREFIXES.iter().any(|p| path.starts_with(p));
    if limited {
        let decision = edge.requests.check(client);
        if !decision.allowed {
            return refuse(too_many_requests(decision));
        }
    }
    // Like REST's, the mint limiter holds in every mode.
    if path == CREATE_ORG_TOKEN {
        let decision = edge.org_key_mints.check(client);
        if !decision.allowed {
            return refuse(too_many_requests(decision));
        }
    }
    next.run(request).await
}

/// The documented 429 body, carried as the status details so gRPC-Web and REST clients of a
/// standalone gateway read the same answer.
fn too_many_requests(decision: Decision) -> ApiError {
    ApiError::new(ErrorCode::TooManyRequests, "rate limit exceeded")
        .with_fields(json!({"retry_after": decision.reset_secs}))
}

fn refuse(error: ApiError) -> Response {
    tonic::Status::from(error)
        .into_http::<axum::body::Body>()
        .into_response()
}

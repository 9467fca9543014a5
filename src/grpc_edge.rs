//! The edge for gRPC, native and gRPC-Web alike (docs/decisions.md D19), as one layer over the gRPC
//! routes: dev mode's origin rule, the tenant guard, the per-IP rate limiter and the org-key
//! mint limiter (sharing their buckets with REST, so a client is counted once whichever
//! transport it uses), the pre-auth budget, and the U+0000 scan of every request message.
//! Calls that did not come off a socket (the in-process gateway's, already judged at the REST
//! edge) get the scan only. It decides nothing about credentials.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use gateway::{
    Edge,
    client_ip::Caller,
    edge::Decision,
    preauth::{Framing, PreAuth},
};
use serde_json::json;

use crate::{
    error::{ApiError, ErrorCode},
    nul_guard,
};

/// Probes are never limited.
const UNLIMITED_PREFIXES: [&str; 2] = ["/grpc.health.", "/grpc.reflection."];
const CREATE_ORG_TOKEN: &str = "/molecule.v1.Workspaces/CreateOrgToken";
/// A standalone gateway asks this before it counts a caller by credential: its own check, not
/// the caller's request, so it is not counted when it comes from a trusted proxy.
const WHO_AM_I: &str = "/molecule.v1.Workspaces/WhoAmI";

/// What the gRPC edge applies.
#[derive(Clone)]
pub struct GrpcEdge {
    pub edge: Arc<Edge>,
    pub preauth: PreAuth,
    pub strings: Arc<nul_guard::Index>,
}

pub async fn guard(State(grpc): State<GrpcEdge>, mut request: Request, next: Next) -> Response {
    let Some(client) = grpc.edge.config.trusted_proxies.settle(&mut request) else {
        return next.run(grpc.strings.scan(request)).await;
    };
    let caller = grpc.preauth.caller(&mut request).await;
    if let Some(refused) = refusal(&grpc.edge, &request, client, caller) {
        return refused;
    }
    let (request, settle) = grpc.preauth.admit(request, Framing::Grpc).await;
    let response = next.run(grpc.strings.scan(request)).await;
    drop(settle);
    response
}

/// The answer to a gRPC call the edge refuses before any handler, if it does.
fn refusal(
    edge: &Edge,
    request: &Request,
    client: std::net::IpAddr,
    caller: Caller,
) -> Option<Response> {
    if let Some(refusal) = edge.dev_refusal(request) {
        return Some(refuse(ApiError::forbidden(refusal)));
    }
    let path = request.uri().path();
    if !edge.tenant_passes(path, request.headers()) {
        // Like REST's empty 404: the tenant's existence does not leak.
        return Some(refuse(ApiError::not_found("")));
    }
    let proxy_check = path == WHO_AM_I
        && gateway::client_ip::peer_ip(request.extensions())
            .is_some_and(|peer| edge.config.trusted_proxies.contains(peer));
    let limited = edge.config.rate_limiting
        && !proxy_check
        && !UNLIMITED_PREFIXES.iter().any(|p| path.starts_with(p));
    if limited {
        let decision = edge.requests.check(caller);
        if !decision.allowed {
            return Some(refuse(too_many_requests(decision)));
        }
    }
    // Like REST's, the mint limiter holds in every mode.
    if path == CREATE_ORG_TOKEN {
        let decision = edge.org_key_mints.check(Caller::Address(client));
        if !decision.allowed {
            return Some(refuse(too_many_requests(decision)));
        }
    }
    None
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

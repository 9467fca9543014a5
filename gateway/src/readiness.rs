//! `GET /readyz`: whether the control plane behind this gateway can serve, read from its gRPC
//! health (which `molecule serve` keeps following its datastore, Redis and migrations); 503
//! names the failing parts, or `upstream` when the control plane does not answer at all.
//! `/health` stays the liveness probe: it only says this process answers.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{Gateway, Transport};

/// The health names of the parts of readiness, as the control plane publishes them.
pub const DATASTORE: &str = "molecule.datastore";
pub const REDIS: &str = "molecule.redis";
pub const MIGRATIONS: &str = "molecule.migrations";

/// Each part's health name, and the word `/readyz` uses for it.
const PARTS: [(&str, &str); 3] = [
    (DATASTORE, "database"),
    (REDIS, "redis"),
    (MIGRATIONS, "migrations"),
];

/// A probe that waits longer than this has its answer: not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "ready to serve", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "not ready; the failing parts are named",
            body = Object, example = json!({"status": "unavailable", "failing": ["redis"]}))))]
pub(crate) async fn readyz(State(gateway): State<Gateway>) -> Response {
    let mut health = HealthClient::new(gateway.transport.clone());
    let failing = match tokio::time::timeout(PROBE_TIMEOUT, failing_parts(&mut health)).await {
        Ok(Ok(failing)) => failing,
        Ok(Err(_)) | Err(_) => vec!["upstream"],
    };
    if failing.is_empty() {
        return Json(json!({"status": "ready"})).into_response();
    }
    let body = json!({"status": "unavailable", "failing": failing});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The parts that are not serving; none when the whole server is.
async fn failing_parts(
    health: &mut HealthClient<Transport>,
) -> Result<Vec<&'static str>, tonic::Status> {
    if status_of(health, "").await? == Some(ServingStatus::Serving) {
        return Ok(Vec::new());
    }
    let mut failing = Vec::new();
    for (name, word) in PARTS {
        // A part the server does not run (Redis on the embedded default) is unknown to it.
        if let Some(status) = status_of(health, name).await?
            && status != ServingStatus::Serving
        {
            failing.push(word);
        }
    }
    if failing.is_empty() {
        // Not serving, yet every part is: the server is shutting down.
        failing.push("server");
    }
    Ok(failing)
}

async fn status_of(
    health: &mut HealthClient<Transport>,
    service: &str,
) -> Result<Option<ServingStatus>, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match health.check(request).await {
        Ok(reply) => Ok(Some(reply.into_inner().status())),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

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
pub const SCHEDULER: &str = "molecule.scheduler";

/// Each part's health name, and the word `/readyz` uses for it.
const PARTS: [(&str, &str); 4] = [
    (DATASTORE, "database"),
    (REDIS, "redis"),
    (MIGRATIONS, "migrations"),
    (SCHEDULER, "scheduler"),
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

#[utoipa::path(get, path = "/admin/liveness", tag = "meta",
    description = "Each background loop of the replica that answers (the scheduler, the sweeps) and its last pass: a loop stuck without having crashed shows here. Operators.",
    responses((status = 200, body = Object, example = json!({"subsystems": {"scheduler": {"last_tick_at": "2026-12-05T19:00:00Z", "seconds_ago": 0, "stalled": false}}})),
        (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn liveness(
    State(gateway): State<Gateway>,
    forwarded: crate::forward::Forwarded,
) -> Response {
    let result = gateway
        .workspaces
        .clone()
        .liveness(forwarded.request(crate::pb::LivenessRequest {}))
        .await;
    crate::workspaces::render(StatusCode::OK, result, |liveness| {
        let subsystems: serde_json::Map<String, serde_json::Value> = liveness
            .subsystems
            .into_iter()
            .map(|state| {
                let last_tick_at = crate::json::timestamp_opt(state.last_tick_at.as_ref());
                let entry = json!({"last_tick_at": last_tick_at,
                                   "seconds_ago": state.seconds_ago, "stalled": state.stalled});
                (state.name, entry)
            })
            .collect();
        json!({"subsystems": subsystems})
    })
}

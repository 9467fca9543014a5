//! `POST /workspaces/{id}/a2a` (docs/a2a.md §1): the REST face of the A2A proxy core. It
//! reads the capped body, passes `X-Timeout` and the allow-listed A2A headers on, and shapes
//! the core's outcome: an agent's 2xx answer unchanged, its other statuses as
//! `{"error": <its string error or the reason phrase>}`, the poll mailbox as 202.

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::{
    Gateway,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::read_body,
    pb,
};

/// Request headers the target receives unchanged.
const PASS_THROUGH: [&str; 4] = [
    "a2a-version",
    "x-a2a-extensions",
    "traceparent",
    "tracestate",
];

#[utoipa::path(post, path = "/workspaces/{id}/a2a", tag = "a2a",
    params(("id" = String, Path, format = Uuid, description = "target workspace id")),
    request_body(content = Object, description = "a JSON-RPC 2.0 A2A request, or a bare {method, params}"),
    responses((status = 200, description = "the agent's answer, unchanged", body = Object),
        (status = 202, body = Object, example = json!({"queued": true, "delivery": "poll", "activity_id": "…", "message": "target agent polls for messages; reply will arrive asynchronously"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn proxy(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return err.early_response().unwrap_or_else(|| {
                RestError::new(StatusCode::BAD_REQUEST, "failed to read request body")
                    .into_response()
            });
        }
    };
    let timeout_seconds = headers
        .get("x-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u32>().ok());
    let forward_headers = PASS_THROUGH
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    let streaming = looks_streaming(&body);
    let request = pb::ProxyRequest {
        target_workspace_id: id,
        body: body.to_vec(),
        timeout_seconds,
        forward_headers,
    };
    if streaming {
        return gateway.stream(&forwarded, request).await;
    }
    let reply = match gateway.a2a.clone().send(forwarded.request(request)).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return RestError::from(status).into_response(),
    };
    match reply.outcome {
        Some(pb::proxy_reply::Outcome::Delivered(delivered)) => relay(delivered),
        Some(pb::proxy_reply::Outcome::Queued(queued)) => accepted(queued),
        None => RestError::new(StatusCode::BAD_GATEWAY, "failed to reach workspace agent")
            .into_response(),
    }
}

/// An agent's answer: 2xx unchanged (as JSON); any other status kept, with the error shape.
fn relay(delivered: pb::Delivered) -> Response {
    let status =
        StatusCode::from_u16(delivered.upstream_status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_success() {
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            delivered.body,
        )
            .into_response();
    }
    let message = serde_json::from_slice::<Value>(&delivered.body)
        .ok()
        .and_then(|value| value["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Bad Gateway")
                .to_owned()
        });
    RestError::new(status, &message).into_response()
}

/// 202: queued for a busy agent, or left in a polling agent's mailbox.
fn accepted(queued: pb::Queued) -> Response {
    let body = if queued.delivery == "poll" {
        json!({"queued": true, "delivery": "poll", "activity_id": queued.activity_id, "message": queued.message})
    } else {
        json!({"queued": true, "queue_id": queued.queue_id, "queue_depth": queued.queue_depth, "message": queued.message})
    };
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// Whether the body may name a streaming method; a false positive only costs the streaming
/// RPC, which answers non-streaming calls as well.
fn looks_streaming(body: &[u8]) -> bool {
    const METHODS: [&[u8]; 4] = [
        b"message/stream",
        b"tasks/resubscribe",
        b"SendStreamingMessage",
        b"SubscribeToTask",
    ];
    METHODS
        .iter()
        .any(|method| body.windows(method.len()).any(|window| window == *method))
}

impl Gateway {
    /// A streaming call: an SSE answer is relayed event by event, each flushed as it arrives;
    /// any other answer is relayed whole.
    async fn stream(&self, forwarded: &Forwarded, request: pb::ProxyRequest) -> Response {
        use pb::proxy_stream_event::Part;
        let mut events = match self.a2a.clone().stream(forwarded.request(request)).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return RestError::from(status).into_response(),
        };
        let opened = match events.message().await {
            Ok(Some(pb::ProxyStreamEvent {
                part: Some(Part::Opened(opened)),
            })) => opened,
            Ok(Some(pb::ProxyStreamEvent {
                part: Some(Part::Queued(queued)),
            })) => return accepted(queued),
            Err(status) => return RestError::from(status).into_response(),
            Ok(_) => {
                return RestError::new(StatusCode::BAD_GATEWAY, "failed to read agent response")
                    .into_response();
            }
        };
        let status =
            StatusCode::from_u16(opened.upstream_status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_success() && opened.content_type.starts_with("text/event-stream") {
            let body = futures::stream::unfold(events, |mut events| async move {
                match events.message().await {
                    Ok(Some(pb::ProxyStreamEvent {
                        part: Some(Part::Event(event)),
                    })) => Some((Ok(bytes::Bytes::from(event)), events)),
                    Ok(_) => None,
                    // Ends the response mid-stream, so the client sees a broken stream.
                    Err(status) => Some((
                        Err(std::io::Error::other(status.message().to_owned())),
                        events,
                    )),
                }
            });
            return (
                status,
                [
                    (header::CONTENT_TYPE, opened.content_type.as_str()),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::HeaderName::from_static("x-accel-buffering"), "no"),
                ],
                Body::from_stream(body),
            )
                .into_response();
        }
        let mut body = Vec::new();
        loop {
            match events.message().await {
                Ok(Some(pb::ProxyStreamEvent {
                    part: Some(Part::Event(event)),
                })) => body.extend_from_slice(&event),
                Ok(_) => break,
                Err(status) => return RestError::from(status).into_response(),
            }
        }
        relay(pb::Delivered {
            upstream_status: opened.upstream_status,
            body,
            content_type: opened.content_type,
            duration_ms: 0,
        })
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DropStaleQuery {
    /// Minutes a row may wait; default 60.
    #[param(value_type = Option<i64>, minimum = 1)]
    max_age_minutes: Option<String>,
    /// Only this workspace's rows.
    #[param(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    workspace_id: Option<String>,
}

#[utoipa::path(post, path = "/admin/a2a-queue/drop-stale", tag = "a2a", params(DropStaleQuery),
    responses((status = 200, body = Object, example = json!({"dropped": 3})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn drop_stale(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    axum::extract::Query(query): axum::extract::Query<DropStaleQuery>,
) -> Response {
    // Text that is not an integer is refused by the service like a number below 1.
    let max_age_minutes = query
        .max_age_minutes
        .map(|raw| raw.trim().parse::<i64>().unwrap_or(0));
    let request = pb::DropStaleRequest {
        max_age_minutes,
        workspace_id: query.workspace_id,
    };
    let result = gateway
        .a2a
        .clone()
        .drop_stale_queue_items(forwarded.request(request))
        .await;
    crate::workspaces::render(
        StatusCode::OK,
        result,
        |reply| json!({"dropped": reply.dropped}),
    )
}

#[utoipa::path(get, path = "/workspaces/{id}/usage", tag = "a2a",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"workspace_id": "…", "input_tokens": 1200, "output_tokens": 340, "calls": 4, "updated_at": "2026-11-21T06:00:00Z"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn token_usage(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
) -> Response {
    let request = pb::TokenUsageRequest { workspace_id };
    let result = gateway
        .a2a
        .clone()
        .get_token_usage(forwarded.request(request))
        .await;
    crate::workspaces::render(StatusCode::OK, result, |usage| {
        json!({
            "workspace_id": usage.workspace_id,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "calls": usage.calls,
            "updated_at": crate::json::timestamp_opt(usage.updated_at.as_ref()),
        })
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/route", tag = "a2a",
    description = "How a call to the workspace would travel now: `attached` (its A2A stream is open), `url`, `mailbox` (poll) or `none`.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = Object, example = json!({"route": "attached", "url": ""})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn route(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
) -> Response {
    let request = pb::RouteRequest { workspace_id };
    let result = gateway
        .a2a
        .clone()
        .get_route(forwarded.request(request))
        .await;
    crate::workspaces::render(
        StatusCode::OK,
        result,
        |reply| json!({"route": reply.route, "url": reply.url}),
    )
}

//! Event routes: the structure event log (`/events`, docs/registry.md §6.3) and the live `/ws`
//! WebSocket (docs/registry.md §6.4), which relays the `WatchEvents` stream of the caller's
//! credentials.

use std::time::Duration;

use axum::{
    extract::{
        Path, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code},
    },
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value, value::RawValue};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{
    Gateway,
    edge::{ORIGIN_NOT_ALLOWED, same_origin},
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{raw, timestamp_opt},
    pb,
    workspaces::render,
};

/// A client that does not take a frame within this long is disconnected (it reconnects and
/// rehydrates) instead of silently losing events.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, ToSchema)]
pub(crate) struct EventRow {
    id: String,
    event_type: String,
    workspace_id: Option<String>,
    #[schema(value_type = Object)]
    payload: Option<Box<RawValue>>,
    created_at: Option<String>,
}

fn rows(reply: pb::ListEventsResponse) -> Vec<EventRow> {
    reply
        .events
        .into_iter()
        .map(|event| EventRow {
            payload: raw(Some(&event.payload_json)),
            created_at: timestamp_opt(event.timestamp.as_ref()),
            id: event.id,
            event_type: event.event,
            workspace_id: event.workspace_id,
        })
        .collect()
}

#[utoipa::path(get, path = "/events", tag = "events",
    responses((status = 200, body = [EventRow], description = "newest first, at most 100"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list_events(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let request = pb::ListEventsRequest { workspace_id: None };
    let result = gateway
        .workspaces
        .clone()
        .list_events(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, rows)
}

#[utoipa::path(get, path = "/events/{workspace_id}", tag = "events",
    params(("workspace_id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, body = [EventRow]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_workspace_events(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(workspace_id): Path<String>,
) -> Response {
    let request = pb::ListEventsRequest {
        workspace_id: Some(workspace_id),
    };
    let result = gateway
        .workspaces
        .clone()
        .list_events(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, rows)
}

#[derive(Serialize)]
struct WireEnvelope<'a> {
    event: &'a str,
    workspace_id: &'a str,
    timestamp: String,
    payload: Option<Box<RawValue>>,
    /// Payload fields a client reads at the top level (the runtime's approval wait).
    #[serde(flatten)]
    hoisted: Map<String, Value>,
}

/// The frame whose payload fields the workspace runtime reads at the top level
/// (docs/runtime.md M3), and those fields.
const APPROVAL_DECIDED: &str = "APPROVAL_DECIDED";
const APPROVAL_DECIDED_FIELDS: [&str; 3] = ["approval_id", "status", "decided_by"];

fn wire_json(event: &pb::Event) -> String {
    let mut hoisted = Map::new();
    if event.event == APPROVAL_DECIDED
        && let Ok(Value::Object(mut payload)) = serde_json::from_str(&event.payload_json)
    {
        for field in APPROVAL_DECIDED_FIELDS {
            if let Some(value) = payload.remove(field) {
                hoisted.insert(field.to_owned(), value);
            }
        }
    }
    let envelope = WireEnvelope {
        event: &event.event,
        workspace_id: event.workspace_id.as_deref().unwrap_or(""),
        timestamp: timestamp_opt(event.timestamp.as_ref()).unwrap_or_default(),
        payload: raw(Some(&event.payload_json)),
        hoisted,
    };
    serde_json::to_string(&envelope).unwrap_or_default()
}

#[utoipa::path(get, path = "/ws", tag = "events",
    description = "WebSocket of live events, one text frame per event: {\"event\",\"workspace_id\",\"timestamp\",\"payload\"}. \
        Operators authenticate with the admin bearer; agents send X-Workspace-ID and their own token.",
    responses((status = 101, description = "switching protocols"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn websocket(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    headers: http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    {
        let edge = &gateway.edge.config;
        if !same_origin(&headers) && !edge.cors_origins.is_empty() && !edge.origin_allowed(origin) {
            return RestError::new(StatusCode::FORBIDDEN, ORIGIN_NOT_ALLOWED).into_response();
        }
    }
    // Authenticate before upgrading, so a refused client gets a real HTTP status.
    let request = forwarded.request(pb::WatchEventsRequest::default());
    let events = match gateway.workspaces.clone().watch_events(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return RestError::from(status).into_response(),
    };
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| relay(socket, events, gateway, forwarded)),
        Err(_) => {
            RestError::new(StatusCode::BAD_REQUEST, "websocket upgrade required").into_response()
        }
    }
}

/// Whether the credential a socket was opened with has lapsed (signed out, expired, revoked).
/// A platform failure is not a lapse: an outage must not close every socket at once.
async fn credential_lapsed(gateway: &Gateway, forwarded: &Forwarded) -> bool {
    let request = forwarded.request(pb::WhoAmIRequest {
        workspace_id: None,
        any_credential: true,
    });
    match gateway.workspaces.clone().who_am_i(request).await {
        Ok(_) => false,
        Err(status) => matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
    }
}

/// The gauge of open `/ws` subscribers (described with the server's metrics).
pub const WEBSOCKET_CLIENTS: &str = "molecule_websocket_clients";

/// Counts one open `/ws` subscriber while it lives.
struct WebSocketClient;

impl WebSocketClient {
    fn open() -> Self {
        metrics::gauge!(WEBSOCKET_CLIENTS).increment(1.0);
        Self
    }
}

impl Drop for WebSocketClient {
    fn drop(&mut self) {
        metrics::gauge!(WEBSOCKET_CLIENTS).decrement(1.0);
    }
}

/// Reads the watch in a task of its own: relayed in-process, the watch runs only when polled,
/// and one left mid-query while the relay waits on another call (its credential re-check)
/// would hold SQLite's one connection against it.
fn pump(
    mut events: tonic::Streaming<pb::Event>,
) -> (
    tokio::sync::mpsc::Receiver<Result<Option<pb::Event>, tonic::Status>>,
    tokio_util::task::AbortOnDropHandle<()>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        loop {
            let next = events.message().await;
            let more = matches!(next, Ok(Some(_)));
            if sender.send(next).await.is_err() || !more {
                return;
            }
        }
    });
    (receiver, tokio_util::task::AbortOnDropHandle::new(task))
}

async fn relay(
    mut socket: WebSocket,
    events: tonic::Streaming<pb::Event>,
    gateway: Gateway,
    forwarded: Forwarded,
) {
    let _client = WebSocketClient::open();
    let (mut events, _pump) = pump(events);
    let close = |code, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let shutdown: CancellationToken = gateway.shutdown.clone();
    let period = gateway.edge.config.ws_recheck;
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = socket.send(close(close_code::AWAY, "server shutting down")).await;
                return;
            }
            _ = recheck.tick() => {
                if credential_lapsed(&gateway, &forwarded).await {
                    let _ = socket.send(close(close_code::POLICY, "credential no longer valid")).await;
                    return;
                }
            }
            next = events.recv() => {
                let frame = match next.unwrap_or(Ok(None)) {
                    Ok(Some(event)) => Message::Text(wire_json(&event).into()),
                    Ok(None) => close(close_code::AWAY, "event stream ended"),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        close(close_code::AGAIN, "too slow; reconnect")
                    }
                    // The watch itself found the credential revoked or signed out.
                    Err(status) if status.code() == tonic::Code::Unauthenticated => {
                        close(close_code::POLICY, "credential no longer valid")
                    }
                    Err(_) => close(close_code::ERROR, "event stream failed"),
                };
                let closing = matches!(frame, Message::Close(_));
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await {
                    Ok(Ok(())) if !closing => {}
                    Ok(_) => return,
                    Err(_) => {
                        tracing::warn!("websocket client too slow; disconnecting");
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                // Client frames are read and discarded; pings are answered by the library.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// How often an idle AG-UI stream sends a comment, so proxies keep it open.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as AG-UI frames it: `{"type","timestamp" (Unix ms),"data"}`.
fn agui_event(event: &pb::Event) -> axum::response::sse::Event {
    let millis = event
        .timestamp
        .as_ref()
        .map_or(0, |at| at.seconds * 1000 + i64::from(at.nanos) / 1_000_000);
    let frame = serde_json::json!({
        "type": event.event,
        "timestamp": millis,
        "data": raw(Some(&event.payload_json)),
    });
    axum::response::sse::Event::default().data(frame.to_string())
}

#[utoipa::path(get, path = "/workspaces/{id}/events/stream", tag = "events",
    description = "Server-Sent Events of the workspace's own events in the AG-UI envelope: `data: {\"type\",\"timestamp\",\"data\"}`, opening with a `: ping` comment and repeating it while idle. Ends when the credential is revoked or expires.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    responses((status = 200, content_type = "text/event-stream", description = "the event stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn stream(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let request = forwarded.request(pb::WatchEventsRequest { workspace_id: id });
    let events = match gateway.workspaces.clone().watch_events(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return RestError::from(status).into_response(),
    };
    let (receiver, pump) = pump(events);
    let shutdown = gateway.shutdown.clone();
    let opened = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(Event::default().comment("ping"))
    });
    let relayed = futures::stream::unfold(
        (receiver, pump, shutdown),
        |(mut receiver, pump, shutdown)| async move {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                next = receiver.recv() => next?,
            };
            match next {
                Ok(Some(event)) => Some((Ok(agui_event(&event)), (receiver, pump, shutdown))),
                // The watch ended: its credential lapsed, or the server is going away.
                _ => None,
            }
        },
    );
    let mut response = Sse::new(futures::StreamExt::chain(opened, relayed))
        .keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE).text("ping"))
        .into_response();
    // Reverse proxies (nginx) would otherwise buffer the stream.
    response.headers_mut().insert(
        http::HeaderName::from_static("x-accel-buffering"),
        http::HeaderValue::from_static("no"),
    );
    response
}

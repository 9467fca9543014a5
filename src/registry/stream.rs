//! The bidirectional heartbeat stream (docs/decisions.md D10): authenticated once, every beat
//! acked, a goodbye marks the workspace offline at once, and control frames are pushed when the
//! workspace is paused, resumed, removed, its token revoked, or its secrets or config change. One
//! dispatcher task routes events to streams, so a stream costs no work per foreign event.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::{debug, warn};

use crate::{
    domain::{EventType, WorkspaceStatus, validate},
    error::ApiResult,
    events::Envelope,
    hot::{OutboundFrame, StreamHandle},
    pb::{self, control::Kind},
    state::Platform,
    telemetry,
};

use super::{
    RegistryService,
    error::RegistryError,
    heartbeat::{beat_result, mark_offline},
};

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

/// Outbound frames buffered per stream; an agent this far behind is cut off.
const OUTBOUND: usize = 32;

pub(super) async fn open(
    service: RegistryService,
    request: Request<Streaming<pb::AgentFrame>>,
) -> ApiResult<FrameStream> {
    let (metadata, _, inbound) = request.into_parts();
    let raw =
        crate::auth::claimed_workspace(&metadata).ok_or(RegistryError::CallerHeaderRequired)?;
    let id = validate::workspace_id(raw)?;
    let credential = service.authenticate_agent(&metadata, &id).await?;
    let current = service.live_workspace_state(&id).await?;
    let (frames, outbound) = mpsc::channel(OUTBOUND);
    let serial = service.state.hot.open_stream(
        &id,
        StreamHandle {
            token_id: credential.token_id,
            frames: frames.clone(),
            paused: current.status == WorkspaceStatus::Paused,
            serial: 0,
        },
    );
    tokio::spawn(serve(service, id, serial, inbound, frames));
    Ok(Box::pin(ReceiverStream::new(outbound).map(|frame| *frame)))
}

async fn serve(
    service: RegistryService,
    id: String,
    serial: u64,
    mut inbound: Streaming<pb::AgentFrame>,
    frames: mpsc::Sender<OutboundFrame>,
) {
    let _open = telemetry::OpenStream::open("heartbeat");
    let state = service.state.clone();
    loop {
        let frame = tokio::select! {
            () = state.shutdown.cancelled() => break,
            () = frames.closed() => break,
            frame = inbound.message() => frame,
        };
        match frame {
            Ok(Some(pb::AgentFrame {
                frame: Some(pb::agent_frame::Frame::Beat(beat)),
            })) => {
                let heartbeat = beat.heartbeat.unwrap_or_default();
                let beaten = service.beat(&id, &heartbeat).await;
                telemetry::heartbeat("stream", beat_result(&beaten));
                let reply = match beaten {
                    Ok(status) => Ok(pb::ServerFrame {
                        frame: Some(pb::server_frame::Frame::Ack(pb::Ack {
                            sequence: beat.sequence,
                            status: status.to_string(),
                        })),
                    }),
                    Err(err) => Err(Status::from(err)),
                };
                let failed = reply.is_err();
                if frames.send(Box::new(reply)).await.is_err() || failed {
                    break;
                }
            }
            Ok(Some(pb::AgentFrame {
                frame: Some(pb::agent_frame::Frame::Goodbye(goodbye)),
            })) => {
                debug!(workspace_id = %id, reason = %goodbye.reason, "heartbeat stream goodbye");
                if let Err(err) = state.liveness.forget(&id).await {
                    warn!(workspace_id = %id, error = %err, "liveness forget failed");
                }
                if let Err(err) = mark_offline(&state, &id).await {
                    warn!(workspace_id = %id, error = %err, "offline on goodbye failed");
                }
                break;
            }
            Ok(Some(_)) => {}
            // Dropped without a goodbye: the liveness TTL decides.
            Ok(None) | Err(_) => break,
        }
    }
    state.hot.close_stream(&id, serial);
}

fn control(kind: Kind, envelope: &Envelope) -> pb::ServerFrame {
    pb::ServerFrame {
        frame: Some(pb::server_frame::Frame::Control(pb::Control {
            kind: kind as i32,
            event: envelope.event.to_string(),
            at: Some(pb::timestamp(envelope.timestamp)),
            approval: (kind == Kind::ApprovalDecided).then(|| pb::ApprovalDecision {
                approval_id: text(&envelope.payload["approval_id"]),
                status: text(&envelope.payload["decision"]),
                decided_by: text(&envelope.payload["decided_by"]),
            }),
        })),
    }
}

fn text(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Invalidates caches and pushes control frames, for events from every replica.
pub(super) async fn dispatch_events(state: Platform) {
    let mut events = state.events.subscribe();
    loop {
        let envelope = tokio::select! {
            () = state.shutdown.cancelled() => return,
            received = events.recv() => match received {
                Ok(envelope) => envelope,
                Err(RecvError::Lagged(missed)) => {
                    telemetry::events_dropped("registry_dispatcher", missed);
                    warn!(missed, "registry event dispatcher lagged");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        let Some(id) = envelope.workspace_id.as_deref() else {
            // A global secret changed: it names every workspace that does not override it.
            if envelope.event == EventType::GlobalSecretsChanged {
                let affected = envelope.payload["workspace_ids"].as_array();
                for id in affected.into_iter().flatten().filter_map(|id| id.as_str()) {
                    push_controls(&state, id, &envelope);
                }
            }
            // A global instruction changed: it applies to every workspace.
            if envelope.event == EventType::InstructionsUpdated {
                let open: Vec<String> = state
                    .hot
                    .streams
                    .lock()
                    .expect("streams poisoned")
                    .keys()
                    .cloned()
                    .collect();
                for id in &open {
                    push_controls(&state, id, &envelope);
                }
            }
            continue;
        };
        if envelope.event.is_informational() {
            continue;
        }
        state.hot.forget_workspace(id);
        if matches!(
            envelope.event,
            EventType::WorkspaceTokenRevoked | EventType::WorkspaceRemoved
        ) {
            state.auth.forget_tokens_of(id);
        }
        push_controls(&state, id, &envelope);
    }
}

fn push_controls(state: &Platform, id: &str, envelope: &Envelope) {
    let mut streams = state.hot.streams.lock().expect("streams poisoned");
    let Some(handles) = streams.get_mut(id) else {
        return;
    };
    handles.retain_mut(|handle| {
        let revoked_token = envelope.payload["token_id"].as_str();
        let (kind, close) = match envelope.event {
            EventType::WorkspacePaused => {
                handle.paused = true;
                (Kind::Paused, false)
            }
            EventType::WorkspaceProvisioning | EventType::WorkspaceAwaitingAgent
                if handle.paused =>
            {
                handle.paused = false;
                (Kind::Resumed, false)
            }
            EventType::WorkspaceRemoved => (Kind::Removed, true),
            EventType::WorkspaceTokenRevoked
                if handle.token_id.is_some() && handle.token_id.as_deref() == revoked_token =>
            {
                (Kind::TokenRevoked, true)
            }
            EventType::SecretsChanged | EventType::GlobalSecretsChanged => {
                (Kind::SecretsChanged, false)
            }
            EventType::WorkspaceUpdated
            | EventType::AgentCardUpdated
            | EventType::ConfigChanged => (Kind::ConfigChanged, false),
            EventType::ApprovalApproved | EventType::ApprovalDenied => {
                (Kind::ApprovalDecided, false)
            }
            EventType::InstructionsUpdated => (Kind::InstructionsUpdated, false),
            _ => return true,
        };
        let mut delivered = handle
            .frames
            .try_send(Box::new(Ok(control(kind, envelope))))
            .is_ok();
        if delivered && close {
            let reason = match kind {
                Kind::TokenRevoked => RegistryError::StreamTokenRevoked,
                _ => RegistryError::StreamWorkspaceRemoved,
            };
            delivered = handle.frames.try_send(Box::new(Err(reason.into()))).is_ok();
        }
        if !delivered {
            warn!(workspace_id = %id, "heartbeat stream not reading control frames; dropping it");
        }
        delivered && !close
    });
    if handles.is_empty() {
        streams.remove(id);
    }
}

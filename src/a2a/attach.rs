//! Attached agents (docs/a2a.md §6.3): an agent behind NAT holds one `Attach` stream and
//! receives proxied calls on it. This module owns the attachments of this replica, the
//! `AgentInbound` service, and delivery over an attachment with the same time limits as HTTP.
//! One attachment per workspace: a new one supersedes the old. A stream lives on the replica
//! that holds it; calls taken by other replicas reach it through [`super::replicas`].

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::Stream;
use http::StatusCode;
use tokio::{sync::mpsc, time::Instant};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{
    A2aState, Caller, InboundError,
    envelope::Envelope,
    upstream::{Answer, BodyFailure, DispatchError, Limits, MAX_RESPONSE_BYTES},
};
use crate::{domain::validate, pb};

const PING_EVERY: Duration = Duration::from_secs(30);
const PONG_WITHIN: Duration = Duration::from_secs(90);
/// Frames buffered towards one agent.
const OUTBOUND: usize = 64;

/// What comes back for one delivery, in order.
#[derive(Debug)]
pub(super) enum ReplyPart {
    Whole(pb::Reply),
    Chunk(pb::ReplyChunk),
    Busy,
}

/// One agent's open stream.
pub struct Attachment {
    serial: u64,
    /// The workspace token the stream was opened with: its revocation ends the stream.
    token_id: String,
    /// Cancelled when the stream's credential ended.
    ended: tokio_util::sync::CancellationToken,
    frames: mpsc::Sender<Result<pb::PlatformFrame, Status>>,
    pending: Mutex<HashMap<String, mpsc::Sender<ReplyPart>>>,
    in_flight: AtomicUsize,
    max_concurrent: usize,
}

/// The attachments of this replica, by workspace.
#[derive(Default)]
pub struct Attachments {
    by_workspace: Mutex<HashMap<String, Arc<Attachment>>>,
    next_serial: std::sync::atomic::AtomicU64,
}

impl Attachments {
    pub fn get(&self, workspace_id: &str) -> Option<Arc<Attachment>> {
        self.by_workspace
            .lock()
            .expect("attachments poisoned")
            .get(workspace_id)
            .cloned()
    }

    /// Registers a stream, ending the one it replaces with ABORTED "superseded".
    fn attach(&self, workspace_id: &str, attachment: Arc<Attachment>) {
        let previous = self
            .by_workspace
            .lock()
            .expect("attachments poisoned")
            .insert(workspace_id.to_owned(), attachment);
        if let Some(previous) = previous {
            previous.supersede();
        }
    }

    /// Ends the workspace's stream here: it attached again on another replica.
    pub(super) fn release(&self, workspace_id: &str) {
        let released = self
            .by_workspace
            .lock()
            .expect("attachments poisoned")
            .remove(workspace_id);
        if let Some(released) = released {
            released.supersede();
        }
    }

    /// Forgets a stream that ended; false when a newer one had already replaced it.
    fn detach(&self, workspace_id: &str, serial: u64) -> bool {
        let mut by_workspace = self.by_workspace.lock().expect("attachments poisoned");
        let current = by_workspace
            .get(workspace_id)
            .is_some_and(|current| current.serial == serial);
        if current {
            by_workspace.remove(workspace_id);
        }
        current
    }
}

/// A delivery in flight; frees its slot and its waiter when dropped.
pub(super) struct InFlight {
    attachment: Arc<Attachment>,
    delivery_id: String,
}

impl InFlight {
    /// Tells the agent to stop working on the delivery.
    pub(super) fn cancel(&self) {
        let _ = self.attachment.frames.try_send(Ok(pb::PlatformFrame {
            frame: Some(pb::platform_frame::Frame::Cancel(pb::Cancel {
                delivery_id: self.delivery_id.clone(),
            })),
        }));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.attachment.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.attachment
            .pending
            .lock()
            .expect("pending poisoned")
            .remove(&self.delivery_id);
    }
}

/// One call as an attached agent receives it, wherever the agent is attached.
fn delivery_of(
    target_id: &str,
    caller: &Caller,
    envelope: &Envelope,
    limits: &Limits,
) -> pb::RelayedDelivery {
    let (caller_workspace_id, caller_kind) = match caller {
        Caller::Workspace(id) => (id.clone(), "workspace"),
        Caller::User => (String::new(), "user"),
        Caller::System(_) => (String::new(), "system"),
    };
    let deadline_unix_ms = limits.deadline.map_or(0, |deadline| {
        let left = deadline.saturating_duration_since(Instant::now());
        chrono::Utc::now().timestamp_millis() + i64::try_from(left.as_millis()).unwrap_or(0)
    });
    pb::RelayedDelivery {
        workspace_id: target_id.to_owned(),
        caller_workspace_id,
        caller_kind: caller_kind.to_owned(),
        method: envelope.method.clone(),
        body: envelope.body.clone().into_bytes(),
        deadline_unix_ms,
    }
}

impl Attachment {
    /// Sends one delivery; busy when the agent is at its concurrency limit.
    pub(super) async fn begin(
        self: &Arc<Self>,
        request: pb::RelayedDelivery,
    ) -> Result<(InFlight, mpsc::Receiver<ReplyPart>), DispatchError> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_concurrent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(DispatchError::Busy("attached agent at capacity".to_owned()));
        }
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let guard = InFlight {
            attachment: self.clone(),
            delivery_id: delivery_id.clone(),
        };
        let (replies, receiver) = mpsc::channel(OUTBOUND);
        self.pending
            .lock()
            .expect("pending poisoned")
            .insert(delivery_id.clone(), replies);
        let delivery = pb::PlatformFrame {
            frame: Some(pb::platform_frame::Frame::Delivery(pb::Delivery {
                delivery_id,
                caller_workspace_id: request.caller_workspace_id,
                caller_kind: request.caller_kind,
                method: request.method,
                body: request.body,
                deadline_unix_ms: request.deadline_unix_ms,
            })),
        };
        self.frames
            .send(Ok(delivery))
            .await
            .map_err(|_| DispatchError::Unreachable("attachment closed".to_owned()))?;
        Ok((guard, receiver))
    }

    fn supersede(&self) {
        let _ = self.frames.try_send(Err(InboundError::Superseded.into()));
    }
}

/// An attached agent: its stream is on this replica or on another one.
pub(super) enum Attached {
    Here(Arc<Attachment>),
    Elsewhere(super::replicas::Remote),
}

/// One delivery in flight, and how to stop it.
pub(super) struct Flight {
    replies: mpsc::Receiver<ReplyPart>,
    guard: FlightGuard,
}

enum FlightGuard {
    Here(InFlight),
    /// Ending the relay RPC (by dropping it) cancels the delivery on the holding replica.
    Elsewhere {
        _relay: super::replicas::Relay,
    },
}

impl Flight {
    fn cancel(self) {
        if let FlightGuard::Here(flight) = &self.guard {
            flight.cancel();
        }
    }
}

impl Attached {
    /// The agent's stream, on this replica or, with several replicas, on the one holding it.
    pub(super) async fn find(state: &A2aState, workspace_id: &str) -> Option<Self> {
        if let Some(attachment) = state.attachments.get(workspace_id) {
            return Some(Self::Here(attachment));
        }
        state
            .replicas
            .as_ref()?
            .lookup(workspace_id)
            .await
            .map(Self::Elsewhere)
    }

    async fn begin(
        &self,
        target_id: &str,
        caller: &Caller,
        envelope: &Envelope,
        limits: &Limits,
    ) -> Result<Flight, DispatchError> {
        let request = delivery_of(target_id, caller, envelope, limits);
        match self {
            Self::Here(attachment) => {
                let (flight, replies) = attachment.begin(request).await?;
                Ok(Flight {
                    replies,
                    guard: FlightGuard::Here(flight),
                })
            }
            Self::Elsewhere(remote) => {
                let (relay, replies) = remote.begin(request).await?;
                Ok(Flight {
                    replies,
                    guard: FlightGuard::Elsewhere { _relay: relay },
                })
            }
        }
    }

    /// Delivers one call and waits for its whole answer (chunks are joined).
    pub(super) async fn call(
        &self,
        target_id: &str,
        caller: &Caller,
        envelope: &Envelope,
        limits: &Limits,
    ) -> Result<Answer, DispatchError> {
        let mut flight = self.begin(target_id, caller, envelope, limits).await?;
        let mut streamed: Option<(Vec<u8>, StatusCode)> = None;
        loop {
            match next(&mut flight.replies, limits).await {
                Next::Part(ReplyPart::Whole(reply)) => return Ok(whole(reply)),
                Next::Part(ReplyPart::Busy) => {
                    return Err(DispatchError::Busy("attached agent busy".to_owned()));
                }
                Next::Part(ReplyPart::Chunk(chunk)) => {
                    let (body, _) = streamed.get_or_insert_with(|| (Vec::new(), StatusCode::OK));
                    body.extend_from_slice(&chunk.event);
                    if body.len() > MAX_RESPONSE_BYTES {
                        return Ok(failed(StatusCode::OK, BodyFailure::TooLarge));
                    }
                    if chunk.last {
                        let (body, status) = streamed.take().unwrap_or_default();
                        return Ok(Answer {
                            status,
                            content_type: "text/event-stream".to_owned(),
                            body: Ok(Bytes::from(body)),
                        });
                    }
                }
                Next::Expired => {
                    flight.cancel();
                    return Err(DispatchError::Busy("no answer in time".to_owned()));
                }
                Next::Closed => {
                    return Ok(failed(
                        StatusCode::OK,
                        BodyFailure::Read("attachment closed".to_owned()),
                    ));
                }
            }
        }
    }

    /// Delivers one call whose answer may stream: `on_event` gets each chunk as it arrives.
    /// Returns the answer's status and its last event (or whole body).
    pub(super) async fn stream(
        &self,
        target_id: &str,
        caller: &Caller,
        envelope: &Envelope,
        limits: &Limits,
        mut on_event: impl FnMut(
            Option<(StatusCode, String)>,
            Bytes,
        ) -> futures::future::BoxFuture<'static, ()>,
    ) -> Result<Answer, DispatchError> {
        let mut flight = self.begin(target_id, caller, envelope, limits).await?;
        let mut opened = false;
        loop {
            match next(&mut flight.replies, limits).await {
                Next::Part(ReplyPart::Whole(reply)) if !opened => return Ok(whole(reply)),
                Next::Part(ReplyPart::Busy) if !opened => {
                    return Err(DispatchError::Busy("attached agent busy".to_owned()));
                }
                Next::Part(ReplyPart::Chunk(chunk)) => {
                    if chunk.event.len() > MAX_RESPONSE_BYTES {
                        return Ok(failed(StatusCode::OK, BodyFailure::TooLarge));
                    }
                    let head = (!opened).then(|| (StatusCode::OK, "text/event-stream".to_owned()));
                    opened = true;
                    let event = Bytes::from(chunk.event);
                    let data = Bytes::from(super::upstream::event_data(&event));
                    on_event(head, event).await;
                    if chunk.last {
                        // The record keeps the last event's JSON, as for HTTP streams.
                        return Ok(Answer {
                            status: StatusCode::OK,
                            content_type: "text/event-stream".to_owned(),
                            body: Ok(data),
                        });
                    }
                }
                Next::Part(_) => {}
                Next::Expired => {
                    flight.cancel();
                    return if opened {
                        Ok(failed(
                            StatusCode::OK,
                            BodyFailure::Read("agent stopped streaming".to_owned()),
                        ))
                    } else {
                        Err(DispatchError::Busy("no answer in time".to_owned()))
                    };
                }
                Next::Closed => {
                    return Ok(failed(
                        StatusCode::OK,
                        BodyFailure::Read("attachment closed".to_owned()),
                    ));
                }
            }
        }
    }
}

enum Next {
    Part(ReplyPart),
    Expired,
    Closed,
}

/// The next reply part within the idle timer and the deadline.
async fn next(replies: &mut mpsc::Receiver<ReplyPart>, limits: &Limits) -> Next {
    match super::upstream::within(limits, replies.recv()).await {
        Some(Some(part)) => Next::Part(part),
        Some(None) => Next::Closed,
        None => Next::Expired,
    }
}

fn whole(reply: pb::Reply) -> Answer {
    let status = match reply.status {
        0 => StatusCode::OK,
        code => StatusCode::from_u16(u16::try_from(code).unwrap_or(502))
            .unwrap_or(StatusCode::BAD_GATEWAY),
    };
    let body = if reply.body.len() > MAX_RESPONSE_BYTES {
        Err(BodyFailure::TooLarge)
    } else {
        Ok(Bytes::from(reply.body))
    };
    Answer {
        status,
        content_type: if reply.content_type.is_empty() {
            "application/json".to_owned()
        } else {
            reply.content_type
        },
        body,
    }
}

fn failed(status: StatusCode, failure: BodyFailure) -> Answer {
    Answer {
        status,
        content_type: String::new(),
        body: Err(failure),
    }
}

pub struct AgentInboundService {
    state: A2aState,
}

impl AgentInboundService {
    pub fn new(state: A2aState) -> Self {
        Self { state }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::PlatformFrame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_inbound_server::AgentInbound for AgentInboundService {
    type AttachStream = FrameStream;

    async fn poll(
        &self,
        request: Request<pb::PollRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let (metadata, _, poll) = request.into_parts();
        let listing = pb::ListActivityRequest {
            workspace_id: poll.workspace_id,
            r#type: "a2a_receive".to_owned(),
            limit: poll.limit,
            since_id: poll.since_id,
            peer_id: poll.peer_id,
            ..Default::default()
        };
        crate::error::reply(crate::registry::activity::list(&self.state, &metadata, &listing).await)
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (metadata, _, mut inbound) = request.into_parts();
        let hello = match inbound.message().await? {
            Some(pb::AttachFrame {
                frame: Some(pb::attach_frame::Frame::Hello(hello)),
            }) => hello,
            _ => return Err(InboundError::HelloRequired.into()),
        };
        let id =
            validate::parse_uuid(&hello.workspace_id).ok_or(InboundError::InvalidAgentToken)?;
        let owner = match crate::auth::bearer(&metadata) {
            Some(bearer) => self.state.auth.workspace_token(bearer).await?,
            None => None,
        };
        let Some(owner) = owner.filter(|owner| owner.workspace_id == id) else {
            return Err(InboundError::InvalidAgentToken.into());
        };
        let (frames, outbound) = mpsc::channel(OUTBOUND);
        let serial = self
            .state
            .attachments
            .next_serial
            .fetch_add(1, Ordering::Relaxed);
        let attachment = Arc::new(Attachment {
            serial,
            token_id: owner.token_id,
            ended: tokio_util::sync::CancellationToken::new(),
            frames: frames.clone(),
            pending: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_concurrent: usize::try_from(hello.max_concurrent.max(1)).unwrap_or(1),
        });
        self.state.attachments.attach(&id, attachment.clone());
        if let Some(replicas) = self.state.replicas.clone() {
            let id = id.clone();
            tokio::spawn(async move { replicas.claim(&id).await });
        }
        debug!(workspace_id = %id, "agent attached");
        tokio::spawn(serve(self.state.clone(), id, attachment, inbound));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(outbound),
        )))
    }
}

/// Ends attach streams whose credential ended (audit N5): a revoked token, a removed workspace.
/// One task for every attachment of this replica, fed by the events of every replica, so a
/// stream costs nothing per foreign event.
pub async fn close_on_revocation(state: A2aState) {
    let mut events = state.events.subscribe();
    loop {
        let envelope = tokio::select! {
            () = state.shutdown.cancelled() => return,
            received = events.recv() => match received {
                Ok(envelope) => envelope,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    crate::telemetry::events_dropped("attach_revocations", missed);
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(id) = envelope.workspace_id.as_deref() else {
            continue;
        };
        let ended = match envelope.event {
            crate::domain::EventType::WorkspaceTokenRevoked => InboundError::TokenRevoked,
            crate::domain::EventType::WorkspaceRemoved => InboundError::WorkspaceRemoved,
            _ => continue,
        };
        let Some(attachment) = state.attachments.get(id) else {
            continue;
        };
        let revoked = envelope.payload["token_id"].as_str();
        if ended == InboundError::WorkspaceRemoved || revoked == Some(attachment.token_id.as_str())
        {
            debug!(workspace_id = %id, "attach stream's credential ended");
            let _ = attachment.frames.try_send(Err(ended.into()));
            attachment.ended.cancel();
        }
    }
}

/// Routes the agent's replies to their waiting calls, and pings it, until the stream ends.
async fn serve(
    state: A2aState,
    id: String,
    attachment: Arc<Attachment>,
    mut inbound: Streaming<pb::AttachFrame>,
) {
    let _open = crate::telemetry::OpenStream::open("attach");
    let mut last_pong = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let frame = tokio::select! {
            () = state.shutdown.cancelled() => break,
            () = attachment.frames.closed() => break,
            () = attachment.ended.cancelled() => break,
            _ = ping.tick() => {
                if last_pong.elapsed() > PONG_WITHIN {
                    let _ = attachment.frames.try_send(Err(InboundError::NoPong.into()));
                    break;
                }
                if let Some(replicas) = &state.replicas
                    && !replicas.refresh(&id).await
                {
                    // Attached again elsewhere and the release did not reach us.
                    attachment.supersede();
                    break;
                }
                let _ = attachment.frames.try_send(Ok(pb::PlatformFrame {
                    frame: Some(pb::platform_frame::Frame::Ping(pb::Ping {})),
                }));
                continue;
            }
            frame = inbound.message() => frame,
        };
        let (delivery_id, part) = match frame {
            Ok(Some(pb::AttachFrame { frame: Some(frame) })) => match frame {
                pb::attach_frame::Frame::Reply(reply) => {
                    (reply.delivery_id.clone(), ReplyPart::Whole(reply))
                }
                pb::attach_frame::Frame::Chunk(chunk) => {
                    (chunk.delivery_id.clone(), ReplyPart::Chunk(chunk))
                }
                pb::attach_frame::Frame::Busy(busy) => (busy.delivery_id, ReplyPart::Busy),
                pb::attach_frame::Frame::Pong(_) => {
                    last_pong = Instant::now();
                    continue;
                }
                pb::attach_frame::Frame::Hello(_) => continue,
            },
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        let waiter = attachment
            .pending
            .lock()
            .expect("pending poisoned")
            .get(&delivery_id)
            .cloned();
        if let Some(waiter) = waiter {
            let _ = waiter.send(part).await;
        }
    }
    if state.attachments.detach(&id, attachment.serial)
        && let Some(replicas) = &state.replicas
    {
        replicas.release(&id).await;
    }
    // Waiters see their channel close: "failed to read agent response", delivery confirmed.
    attachment.pending.lock().expect("pending poisoned").clear();
    debug!(workspace_id = %id, "agent detached");
}

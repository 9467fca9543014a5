//! The A2A proxy core (contract a2a.md §1, §3.3, §4): caller classes and their auth, the
//! hierarchy rule, target resolution, body normalization, dispatch to the agent's URL (through
//! the dial-time URL-safety connector) or to its poll mailbox, and the side effects. REST
//! (`POST /workspaces/:id/a2a`) and the `A2A` gRPC service both run this one core; how an
//! answer is shaped for HTTP is the gateway's business.

pub mod attach;
pub mod envelope;
mod error;
pub mod queue;
pub mod records;
pub mod replicas;
pub mod upstream;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::warn;

pub use self::error::ProxyError;
use self::{
    envelope::Envelope,
    records::{Record, TokenUsage},
    upstream::{Answer, BodyFailure, DispatchError, Limits},
};

use crate::{
    auth,
    domain::{EventType, WorkspaceStatus, validate},
    error::{ApiError, ApiResult},
    hot::CachedRoute,
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{activity_log, token_usage, workspace},
    },
};

/// Headers a caller may pass through to the target (contract §1.1).
pub const FORWARDED_HEADERS: [&str; 4] = [
    "a2a-version",
    "x-a2a-extensions",
    "traceparent",
    "tracestate",
];
/// The ceiling for workspace and system callers; user callers have none.
const AGENT_CEILING: Duration = Duration::from_secs(30 * 60);
const FORGED_PREFIXES: [&str; 4] = ["webhook:", "system:", "test:", "channel:"];

/// The proxy's state: the platform, and the parts only the proxy uses.
#[derive(Clone)]
pub struct A2aState {
    platform: Platform,
    /// The pooled client to agents' URLs (dial-time URL safety built in).
    pub upstream: upstream::Upstream,
    /// The proxy's activity rows, written in batches.
    pub records: records::RecordWriter,
    /// Workspaces with calls waiting in the busy queue.
    pub waiting: Arc<queue::Waiting>,
    /// Agents attached to this replica by an `Attach` stream.
    pub attachments: Arc<attach::Attachments>,
    /// The other replicas, for agents attached to one of them; none on a single replica.
    pub replicas: Option<Arc<replicas::Replicas>>,
    /// Told when a queued call finally reaches its agent.
    pub redelivered: queue::RedeliveryHook,
}

impl A2aState {
    pub fn new(
        platform: Platform,
        replicas: Option<Arc<replicas::Replicas>>,
        redelivered: queue::RedeliveryHook,
    ) -> Self {
        Self {
            upstream: upstream::Upstream::new(platform.url_policy, platform.resolver.clone()),
            records: records::RecordWriter::start(platform.db.clone()),
            waiting: Arc::default(),
            attachments: Arc::default(),
            replicas,
            redelivered,
            platform,
        }
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }
}

/// The proxy reads the platform's handles as its own.
impl std::ops::Deref for A2aState {
    type Target = Platform;

    fn deref(&self) -> &Platform {
        &self.platform
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person: the canvas or another user client, with a user credential.
    User,
    /// An agent, authenticated with its own workspace token.
    Workspace(String),
    /// In-process callers (queue drain, scheduler); never from headers.
    System(&'static str),
}

impl Caller {
    fn source_id(&self) -> Option<String> {
        match self {
            Self::Workspace(id) => Some(id.clone()),
            Self::User | Self::System(_) => None,
        }
    }
}

/// What the proxy did with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agent answered; its status may be anything (the gateway shapes >= 300).
    Delivered {
        status: u16,
        body: Bytes,
        content_type: String,
        duration_ms: u32,
    },
    /// Left in the target's poll mailbox.
    Mailbox { activity_id: String },
    /// The agent was busy; the call waits in the queue for its capacity.
    Queued { queue_id: String, queue_depth: u32 },
}

/// One proxied request as the transports hand it over.
pub struct ProxyCall {
    pub target: String,
    pub body: Bytes,
    /// `X-Timeout` semantics.
    pub timeout_seconds: Option<u32>,
    pub forward_headers: Vec<(String, String)>,
}

pub struct A2AService {
    state: A2aState,
}

impl A2AService {
    pub fn new(state: A2aState) -> Self {
        Self { state }
    }
}

fn call_of(request: pb::ProxyRequest) -> ProxyCall {
    ProxyCall {
        target: request.target_workspace_id,
        body: Bytes::from(request.body),
        timeout_seconds: request.timeout_seconds,
        forward_headers: request.forward_headers.into_iter().collect(),
    }
}

fn mailbox_reply(activity_id: String) -> pb::Queued {
    pb::Queued {
        queue_id: String::new(),
        queue_depth: 0,
        message: "target agent polls for messages; reply will arrive asynchronously".to_owned(),
        delivery: "poll".to_owned(),
        activity_id,
    }
}

fn busy_reply(queue_id: String, queue_depth: u32) -> pb::Queued {
    pb::Queued {
        queue_id,
        queue_depth,
        message: "workspace agent busy — request queued, will dispatch when capacity available"
            .to_owned(),
        delivery: "busy_queue".to_owned(),
        activity_id: String::new(),
    }
}

/// The messages of one streamed item (a whole answer becomes opened, event, closed).
fn stream_messages(item: StreamItem) -> Vec<Result<pb::ProxyStreamEvent, Status>> {
    use pb::proxy_stream_event::Part;
    let message = |part| Ok(pb::ProxyStreamEvent { part: Some(part) });
    let opened = |status: u16, content_type| {
        Part::Opened(pb::Opened {
            upstream_status: u32::from(status),
            content_type,
        })
    };
    match item {
        StreamItem::Whole(Outcome::Mailbox { activity_id }) => {
            vec![message(Part::Queued(mailbox_reply(activity_id)))]
        }
        StreamItem::Whole(Outcome::Queued {
            queue_id,
            queue_depth,
        }) => vec![message(Part::Queued(busy_reply(queue_id, queue_depth)))],
        StreamItem::Whole(Outcome::Delivered {
            status,
            body,
            content_type,
            duration_ms,
        }) => vec![
            message(opened(status, content_type)),
            message(Part::Event(body.to_vec())),
            message(Part::Closed(pb::Closed { duration_ms })),
        ],
        StreamItem::Opened {
            status,
            content_type,
        } => vec![message(opened(status, content_type))],
        StreamItem::Event(event) => vec![message(Part::Event(event.to_vec()))],
        StreamItem::Closed { duration_ms } => {
            vec![message(Part::Closed(pb::Closed { duration_ms }))]
        }
        StreamItem::Failed(err) => vec![Err(Status::from(err))],
    }
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ProxyStreamEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::a2a_server::A2a for A2AService {
    async fn send(
        &self,
        request: Request<pb::ProxyRequest>,
    ) -> Result<Response<pb::ProxyReply>, Status> {
        let (metadata, _, request) = request.into_parts();
        let caller = authenticate(&self.state, &metadata).await?;
        let outcome = proxy(&self.state, caller, call_of(request)).await?;
        Ok(Response::new(pb::ProxyReply {
            outcome: Some(match outcome {
                Outcome::Delivered {
                    status,
                    body,
                    content_type,
                    duration_ms,
                } => pb::proxy_reply::Outcome::Delivered(pb::Delivered {
                    upstream_status: u32::from(status),
                    body: body.to_vec(),
                    content_type,
                    duration_ms,
                }),
                Outcome::Mailbox { activity_id } => {
                    pb::proxy_reply::Outcome::Queued(mailbox_reply(activity_id))
                }
                Outcome::Queued {
                    queue_id,
                    queue_depth,
                } => pb::proxy_reply::Outcome::Queued(busy_reply(queue_id, queue_depth)),
            }),
        }))
    }

    async fn drop_stale_queue_items(
        &self,
        request: Request<pb::DropStaleRequest>,
    ) -> Result<Response<pb::DropStaleResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.state.auth.admin(&metadata).await?;
        let max_age_minutes = request.max_age_minutes.unwrap_or(60);
        if max_age_minutes < 1 {
            return Err(ApiError::bad_request("max_age_minutes must be a positive integer").into());
        }
        let workspace_id = match request.workspace_id.as_deref().filter(|id| !id.is_empty()) {
            Some(raw) => Some(validate::workspace_id(raw)?),
            None => None,
        };
        let dropped = queue::drop_stale(&self.state, max_age_minutes, workspace_id.as_deref())
            .await
            .context("failed to drop stale items")?;
        Ok(Response::new(pb::DropStaleResponse { dropped }))
    }

    async fn get_token_usage(
        &self,
        request: Request<pb::TokenUsageRequest>,
    ) -> Result<Response<pb::TokenUsage>, Status> {
        let (metadata, _, request) = request.into_parts();
        let id = self
            .state
            .auth
            .live_workspace(&metadata, &request.workspace_id)
            .await?;
        let totals = token_usage::Entity::find_by_id(id.as_str())
            .one(&self.state.db)
            .await
            .context("query failed")?;
        Ok(Response::new(match totals {
            Some(row) => pb::TokenUsage {
                workspace_id: id,
                input_tokens: row.input_tokens,
                output_tokens: row.output_tokens,
                calls: row.calls,
                updated_at: Some(pb::timestamp(row.updated_at)),
            },
            None => pb::TokenUsage {
                workspace_id: id,
                ..Default::default()
            },
        }))
    }

    type StreamStream = EventStream;

    async fn stream(
        &self,
        request: Request<pb::ProxyRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        use futures::StreamExt;
        let (metadata, _, request) = request.into_parts();
        let caller = authenticate(&self.state, &metadata).await?;
        let mut receiver = proxy_stream(&self.state, caller, call_of(request)).await?;
        // A failure before the agent answered is the call's status, not an item of the stream.
        let first = match receiver.recv().await {
            Some(StreamItem::Failed(err)) => return Err(err.into()),
            Some(item) => item,
            None => return Err(ProxyError::Internal("failed to create proxy request").into()),
        };
        let rest = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .flat_map(|item| futures::stream::iter(stream_messages(item)));
        let stream = futures::stream::iter(stream_messages(first)).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// §1.2 steps 2–4: forged ids, user callers, agent callers (their own token, always).
pub async fn authenticate(state: &A2aState, metadata: &MetadataMap) -> Result<Caller, ProxyError> {
    let Some(header) = auth::claimed_workspace(metadata) else {
        state.auth.admin(metadata).await?;
        return Ok(Caller::User);
    };
    let lowered = header.to_ascii_lowercase();
    let Some(caller) = validate::parse_uuid(header).filter(|_| {
        !FORGED_PREFIXES
            .iter()
            .any(|prefix| lowered.starts_with(prefix))
    }) else {
        let remote = metadata
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        warn!(security_event = true, remote, caller_id = ?header, "a2a call with a forged caller id");
        return Err(ProxyError::InvalidCallerId);
    };
    let Some(bearer) = auth::bearer(metadata) else {
        return Err(ProxyError::MissingCallerToken);
    };
    match state.auth.workspace_token(bearer).await? {
        Some(owner) if owner.workspace_id == caller => Ok(Caller::Workspace(caller)),
        _ => Err(ProxyError::InvalidCallerToken),
    }
}

/// A request that passed every check and goes to an agent's URL.
struct Dispatch {
    caller: Caller,
    target: Arc<CachedRoute>,
    envelope: Envelope,
    destination: Destination,
    headers: HeaderMap,
    limits: Limits,
}

enum Prepared {
    Mailbox(Outcome),
    Http(Box<Dispatch>),
}

/// The pipeline of §1.4 after authentication. Delivery and its side effects run in their own
/// task, so a caller that goes away cancels neither the agent's work nor the records of it.
pub async fn proxy(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Outcome, ProxyError> {
    dispatch(state, caller, call, QueueWhenBusy::Yes).await
}

/// One more delivery attempt for a queued call: a busy agent is reported, not queued again.
pub(crate) async fn proxy_once(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Outcome, ProxyError> {
    dispatch(state, caller, call, QueueWhenBusy::No).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueWhenBusy {
    Yes,
    No,
}

async fn dispatch(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
    queue: QueueWhenBusy,
) -> Result<Outcome, ProxyError> {
    let dispatch = match prepare(state, caller, call).await? {
        Prepared::Mailbox(outcome) => return Ok(outcome),
        Prepared::Http(dispatch) => dispatch,
    };
    // A streaming call is never queued: its caller is waiting on a stream.
    let queue = if dispatch.envelope.is_streaming() {
        QueueWhenBusy::No
    } else {
        queue
    };
    let state = state.clone();
    tokio::spawn(async move { deliver(&state, *dispatch, queue).await })
        .await
        .map_err(|_| ProxyError::Internal("failed to create proxy request"))?
}

/// One item of a streamed call, in order: `Opened`, `Event`s, then the end of the channel;
/// or a single `Whole`/`Failed`.
#[derive(Debug)]
pub enum StreamItem {
    Whole(Outcome),
    Opened { status: u16, content_type: String },
    Event(Bytes),
    Closed { duration_ms: u32 },
    Failed(ProxyError),
}

/// Events buffered between the agent and a slow caller.
const STREAM_BUFFER: usize = 64;

/// The streaming form of [`proxy`]: SSE answers are relayed event by event as they arrive.
/// The upstream is read to its end by a task of its own, also after the receiver is dropped.
pub async fn proxy_stream(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<tokio::sync::mpsc::Receiver<StreamItem>, ProxyError> {
    let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    match prepare(state, caller, call).await? {
        Prepared::Mailbox(outcome) => {
            let _ = sender.try_send(StreamItem::Whole(outcome));
        }
        Prepared::Http(dispatch) => {
            let state = state.clone();
            tokio::spawn(async move { stream(&state, *dispatch, sender).await });
        }
    }
    Ok(receiver)
}

async fn prepare(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Prepared, ProxyError> {
    let envelope = envelope::normalize(&call.body)?;
    let target_id = validate::parse_uuid(&call.target).ok_or(ProxyError::WorkspaceNotFound)?;
    let target = target_route(state, &target_id)
        .await?
        .filter(|route| route.status != WorkspaceStatus::Removed);
    if let Caller::Workspace(caller_id) = &caller
        && *caller_id != target_id
    {
        // An unknown or removed target denies here, so agents cannot probe ids.
        if target.is_none() || !state.hierarchy.can_communicate(caller_id, &target_id).await {
            return Err(ProxyError::AccessDenied);
        }
    }
    let target = target.ok_or(ProxyError::WorkspaceNotFound)?;
    if target
        .budget_limit
        .is_some_and(|limit| target.monthly_spend >= limit)
    {
        return Err(ProxyError::BudgetExceeded);
    }
    let route = match target.url.as_deref().filter(|url| !url.is_empty()) {
        Some(url) if url.starts_with("remote://") => Route::Mailbox,
        Some(url) => Route::Http(url.to_owned()),
        None if target.runtime == "external" => Route::Mailbox,
        None => {
            return Err(ProxyError::NoUrl {
                status: target.status,
            });
        }
    };
    // Route (1): an attached stream goes first (contract §1.5).
    let destination = match (attach::Attached::find(state, &target.id).await, route) {
        (Some(attachment), _) => Destination::Attached(attachment),
        (None, Route::Http(url)) => Destination::Http(url),
        (None, Route::Mailbox) => {
            return deliver_to_mailbox(state, &caller, &target, &envelope)
                .await
                .map(Prepared::Mailbox)
                .map_err(ProxyError::from);
        }
    };
    let limits = Limits {
        idle: idle_timeout(state, &target.id),
        deadline: match (call.timeout_seconds, &caller) {
            (Some(0), _) | (None, Caller::User) => None,
            (Some(seconds), _) => Some(Instant::now() + Duration::from_secs(u64::from(seconds))),
            (None, _) => Some(Instant::now() + AGENT_CEILING),
        },
        alive: Some(beats_since(state, &target.id)),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &call.forward_headers {
        let name = name.to_ascii_lowercase();
        if FORWARDED_HEADERS.contains(&name.as_str())
            && let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
        {
            headers.insert(name, value);
        }
    }
    if let Some(source) = caller.source_id()
        && let Ok(value) = HeaderValue::try_from(source)
    {
        headers.insert("x-source-workspace-id", value);
    }
    Ok(Prepared::Http(Box::new(Dispatch {
        caller,
        target,
        envelope,
        destination,
        headers,
        limits,
    })))
}

fn elapsed_ms(started: std::time::Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// A whole-answer dispatch and its records.
async fn deliver(
    state: &A2aState,
    dispatch: Dispatch,
    queue: QueueWhenBusy,
) -> Result<Outcome, ProxyError> {
    let Dispatch {
        caller,
        target,
        envelope,
        destination,
        headers,
        limits,
    } = dispatch;
    let started = std::time::Instant::now();
    let result = match &destination {
        Destination::Http(url) => {
            state
                .upstream
                .post(url, envelope.body.clone(), headers, &limits)
                .await
        }
        Destination::Attached(attached) => {
            attached.call(&target.id, &caller, &envelope, &limits).await
        }
    };
    let duration_ms = elapsed_ms(started);
    let busy = match &result {
        Err(DispatchError::Busy(_)) => {
            busy_outcome(state, &caller, &target.id, &envelope, queue).await
        }
        _ => None,
    };
    // The attempt is recorded whatever follows, after the answer (contract §1.11).
    let recorded = result.clone();
    let background = state.clone();
    tokio::spawn(async move {
        record(
            &background,
            &caller,
            &target,
            &envelope,
            &recorded,
            duration_ms,
        )
        .await;
    });
    busy.unwrap_or_else(|| answer(result, duration_ms))
}

/// Whether the target's latest heartbeat, on whichever replica it landed, declared a native
/// session. Read only on the busy path; this replica's memory answers if the store cannot.
async fn declares_native_session(state: &A2aState, target: &str) -> bool {
    match state.liveness.snapshots(&[target.to_owned()]).await {
        Ok(snapshots) => snapshots
            .get(target)
            .is_some_and(|beat| beat.native_session),
        Err(_) => state.hot.native_session(target),
    }
}

/// What a busy agent's caller gets instead of the plain busy answer: the native-session
/// answer, or the call queued for the agent's next spare capacity. None: the plain answer.
async fn busy_outcome(
    state: &A2aState,
    caller: &Caller,
    target: &str,
    envelope: &Envelope,
    queue: QueueWhenBusy,
) -> Option<Result<Outcome, ProxyError>> {
    if declares_native_session(state, target).await {
        return Some(Err(ProxyError::Busy {
            native_session: true,
        }));
    }
    if queue == QueueWhenBusy::No {
        return None;
    }
    match queue::enqueue(state, caller, target, envelope).await {
        Ok((queue_id, queue_depth)) => Some(Ok(Outcome::Queued {
            queue_id,
            queue_depth,
        })),
        Err(err) => {
            warn!(workspace_id = %target, error = %err, "busy call not queued");
            None
        }
    }
}

/// A streamed dispatch: SSE answers event by event, anything else whole. The record is
/// written when the stream ends, with the last event's JSON as the response.
async fn stream(
    state: &A2aState,
    mut dispatch: Dispatch,
    sender: tokio::sync::mpsc::Sender<StreamItem>,
) {
    let started = std::time::Instant::now();
    let headers = std::mem::take(&mut dispatch.headers);
    let (result, relayed) = relay_events(state, &dispatch, headers, &sender).await;
    let duration_ms = elapsed_ms(started);
    let Dispatch {
        caller,
        target,
        envelope,
        ..
    } = &dispatch;
    record(state, caller, target, envelope, &result, duration_ms).await;
    let last = match (relayed, answer(result, duration_ms)) {
        (true, Ok(_)) => StreamItem::Closed { duration_ms },
        (_, outcome) => failed(outcome),
    };
    let _ = sender.send(last).await;
}

/// Sends the caller each event of an SSE answer as it arrives. Returns the answer to record
/// (for SSE, its last event's JSON) and whether its events were relayed; a send error only
/// means the caller left, and the agent's stream is still read to its end.
async fn relay_events(
    state: &A2aState,
    dispatch: &Dispatch,
    headers: HeaderMap,
    sender: &tokio::sync::mpsc::Sender<StreamItem>,
) -> (Result<Answer, DispatchError>, bool) {
    let Dispatch {
        caller,
        target,
        envelope,
        destination,
        limits,
        ..
    } = dispatch;
    let url = match destination {
        Destination::Http(url) => url,
        Destination::Attached(attached) => {
            let events = sender.clone();
            let result = attached
                .stream(&target.id, caller, envelope, limits, move |head, event| {
                    let events = events.clone();
                    Box::pin(async move {
                        if let Some((status, content_type)) = head {
                            let _ = events
                                .send(StreamItem::Opened {
                                    status: status.as_u16(),
                                    content_type,
                                })
                                .await;
                        }
                        let _ = events.send(StreamItem::Event(event)).await;
                    })
                })
                .await;
            let relayed =
                matches!(&result, Ok(answer) if answer.content_type == "text/event-stream");
            return (result, relayed);
        }
    };
    let response = match state
        .upstream
        .open(url, envelope.body.clone(), headers, limits)
        .await
    {
        Ok(response) => response,
        Err(err) => return (Err(err), false),
    };
    let status = response.status();
    let content_type = upstream::content_type(&response);
    if !(status.is_success() && content_type.starts_with("text/event-stream")) {
        return (Ok(upstream::read_answer(response, limits).await), false);
    }
    let _ = sender
        .send(StreamItem::Opened {
            status: status.as_u16(),
            content_type: content_type.clone(),
        })
        .await;
    let mut events = upstream::SseEvents::new(response.into_body(), limits);
    let mut last = Bytes::new();
    let body = loop {
        match events.next().await {
            Ok(Some(event)) => {
                last = Bytes::from(upstream::event_data(&event));
                let _ = sender.send(StreamItem::Event(event)).await;
            }
            Ok(None) => break Ok(last),
            Err(failure) => break Err(failure),
        }
    };
    let answer = Answer {
        status,
        content_type,
        body,
    };
    (Ok(answer), true)
}

fn failed(result: Result<Outcome, ProxyError>) -> StreamItem {
    match result {
        Ok(outcome) => StreamItem::Whole(outcome),
        Err(err) => StreamItem::Failed(err),
    }
}

/// Where a checked call goes.
enum Destination {
    Http(String),
    Attached(attach::Attached),
}

enum Route {
    Http(String),
    Mailbox,
}

/// The routing facts of a target, cached between events that change them.
async fn target_route(state: &A2aState, id: &str) -> ApiResult<Option<Arc<CachedRoute>>> {
    if let Some(route) = state.hot.route(id) {
        return Ok(Some(route));
    }
    let Some(row) = workspace::Entity::find_by_id(id.to_owned())
        .one(&state.db)
        .await
        .context("lookup failed")?
    else {
        return Ok(None);
    };
    let route = Arc::new(CachedRoute {
        id: row.id,
        name: row.name,
        status: row.status,
        runtime: row.runtime,
        url: row.url,
        budget_limit: row.budget_limit,
        monthly_spend: row.monthly_spend,
    });
    state.hot.remember_route(route.clone());
    Ok(Some(route))
}

/// Whether the target has beaten since a moment, from the liveness store (any replica).
fn beats_since(state: &A2aState, target: &str) -> upstream::Alive {
    let liveness = state.liveness.clone();
    let target = target.to_owned();
    Arc::new(move |since| {
        let (liveness, target) = (liveness.clone(), target.clone());
        Box::pin(async move {
            liveness
                .snapshots(std::slice::from_ref(&target))
                .await
                .ok()
                .and_then(|snapshots| snapshots.get(&target).map(|beat| beat.at > since))
                .unwrap_or(false)
        })
    })
}

/// The target's own idle timeout (from its heartbeat), else the platform's.
fn idle_timeout(state: &A2aState, target: &str) -> Duration {
    state
        .hot
        .idle_timeout(target)
        .map_or(state.settings.a2a_idle_timeout, |seconds| {
            Duration::from_secs(seconds.unsigned_abs())
        })
}

/// Turns a dispatch into the outcome or the documented failure.
fn answer(result: Result<Answer, DispatchError>, duration_ms: u32) -> Result<Outcome, ProxyError> {
    match result {
        Ok(Answer {
            status,
            content_type,
            body: Ok(body),
        }) => Ok(Outcome::Delivered {
            status: status.as_u16(),
            body,
            content_type,
            duration_ms,
        }),
        Ok(Answer {
            body: Err(BodyFailure::TooLarge),
            ..
        }) => Err(ProxyError::TooLarge),
        Ok(Answer {
            status,
            body: Err(BodyFailure::Read(_)),
            ..
        }) => Err(ProxyError::ReadFailed {
            delivery_confirmed: (200..400).contains(&status.as_u16()),
        }),
        Err(DispatchError::Blocked) => Err(ProxyError::UnsafeUrl),
        Err(DispatchError::Unreachable(_)) => Err(ProxyError::Unreachable),
        Err(DispatchError::Busy(_)) => Err(ProxyError::Busy {
            native_session: false,
        }),
    }
}

/// The activity row and events of §1.11 for one dispatch (success or failure).
async fn record(
    state: &A2aState,
    caller: &Caller,
    target: &CachedRoute,
    envelope: &Envelope,
    result: &Result<Answer, DispatchError>,
    duration_ms: u32,
) {
    let (status, response_body, error_detail, summary) = match result {
        Ok(answer) => {
            let json_body = answer
                .body
                .as_ref()
                .ok()
                .and_then(|body| serde_json::from_slice::<Value>(body).ok());
            // A redirect is an upstream error too: it is never followed (§1.7).
            let ok = answer.status.is_success() && answer.body.is_ok();
            (
                if ok { "ok" } else { "error" },
                json_body,
                None,
                format!("{} → {}", envelope.method, target.name),
            )
        }
        Err(err) => {
            let text = match err {
                DispatchError::Blocked => "workspace URL is not publicly routable".to_owned(),
                DispatchError::Unreachable(text) | DispatchError::Busy(text) => text.clone(),
            };
            (
                "error",
                None,
                Some(text.clone()),
                format!("A2A request to {} failed: {text}", target.name),
            )
        }
    };
    let tool_trace = response_body
        .as_ref()
        .map(|body| body["result"]["metadata"]["tool_trace"].clone())
        .filter(|trace| !trace.is_null());
    let duration = i32::try_from(duration_ms).unwrap_or(i32::MAX);
    let receipt = Receipt {
        caller,
        target,
        envelope,
        status,
        summary,
        duration_ms: duration,
    };
    let row = activity_log::ActiveModel {
        response_body: Set(response_body.as_ref().map(Value::to_string)),
        tool_trace: Set(tool_trace.as_ref().map(Value::to_string)),
        error_detail: Set(error_detail),
        ..receipt.row()
    };
    let delivered = status == "ok";
    let outbound = match caller {
        Caller::Workspace(caller_id) if delivered => Some(caller_id.clone()),
        _ => None,
    };
    let usage = response_body.as_ref().and_then(TokenUsage::reported_by);
    state
        .records
        .write(Record {
            row,
            outbound,
            usage,
        })
        .await;
    receipt.announce(state, tool_trace.as_ref());
    if delivered && *caller == Caller::User {
        state.events.broadcast_only(
            EventType::A2aResponse,
            Some(&target.id),
            json!({"response_body": response_body, "method": envelope.method, "duration_ms": duration}),
        );
    }
}

/// The `a2a_receive` row of one call on its target, and its `ACTIVITY_LOGGED` event.
struct Receipt<'a> {
    caller: &'a Caller,
    target: &'a CachedRoute,
    envelope: &'a Envelope,
    status: &'static str,
    summary: String,
    duration_ms: i32,
}

impl Receipt<'_> {
    /// The row, without an answer (callers add response, trace and error).
    fn row(&self) -> activity_log::ActiveModel {
        activity_log::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            workspace_id: Set(self.target.id.clone()),
            activity_type: Set("a2a_receive".to_owned()),
            source_id: Set(self.caller.source_id()),
            target_id: Set(Some(self.target.id.clone())),
            method: Set(Some(self.envelope.method.clone())),
            summary: Set(Some(self.summary.clone())),
            request_body: Set(Some(self.envelope.body.clone())),
            response_body: Set(None),
            tool_trace: Set(None),
            duration_ms: Set(Some(self.duration_ms)),
            status: Set(self.status.to_owned()),
            error_detail: Set(None),
            idempotency_key: Set(None),
            created_at: Set(store::now()),
        }
    }

    fn announce(&self, state: &A2aState, tool_trace: Option<&Value>) {
        let mut logged = json!({
            "activity_type": "a2a_receive", "method": self.envelope.method, "summary": self.summary,
            "status": self.status, "source_id": self.caller.source_id(), "target_id": self.target.id,
            "duration_ms": self.duration_ms,
        });
        if let Some(trace) = tool_trace {
            logged["tool_trace"] = trace.clone();
        }
        state
            .events
            .broadcast_only(EventType::ActivityLogged, Some(&self.target.id), logged);
    }
}

/// Route (3): the row is the delivery; the agent reads it through its activity cursor.
async fn deliver_to_mailbox(
    state: &A2aState,
    caller: &Caller,
    target: &CachedRoute,
    envelope: &Envelope,
) -> ApiResult<Outcome> {
    let receipt = Receipt {
        caller,
        target,
        envelope,
        status: "queued",
        summary: format!("{} → {}", envelope.method, target.name),
        duration_ms: 0,
    };
    let activity_id = uuid::Uuid::new_v4().to_string();
    let row = activity_log::ActiveModel {
        id: Set(activity_id.clone()),
        idempotency_key: Set(envelope.message_id.clone()),
        ..receipt.row()
    };
    activity_log::Entity::insert(row)
        .exec(&state.db)
        .await
        .context("failed to queue message")?;
    receipt.announce(state, None);
    Ok(Outcome::Mailbox { activity_id })
}

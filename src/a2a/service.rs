//! The `A2A` gRPC service: transport only. It authenticates the caller, runs the proxy
//! pipeline, and turns outcomes and stream items into messages; the REST route reaches the
//! same pipeline through the gateway.

use bytes::Bytes;
use sea_orm::EntityTrait;
use tonic::{Request, Response, Status};

use crate::{
    domain::validate,
    pb,
    store::{DbContext, entities::token_usage},
    telemetry,
};

use super::{
    A2aState, Caller, InboundError, Outcome, ProxyCall, ProxyError, StreamItem, authenticate,
    pipeline, proxy, proxy_stream, queue,
};

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

/// The outcome of a proxied call as the A2A metric labels it.
fn outcome_label(outcome: &Result<Outcome, ProxyError>) -> &'static str {
    match outcome {
        Ok(Outcome::Delivered { .. }) => "delivered",
        Ok(Outcome::Mailbox { .. }) => "mailbox",
        Ok(Outcome::Queued { .. }) => "queued",
        Err(err) => err.code().label(),
    }
}

/// A streamed call up to its first item. A failure before the agent answered is the call's
/// status, not an item of the stream.
async fn open_stream(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<(StreamItem, tokio::sync::mpsc::Receiver<StreamItem>), ProxyError> {
    let mut receiver = proxy_stream(state, caller, call).await?;
    match receiver.recv().await {
        Some(StreamItem::Failed(err)) => Err(err),
        Some(item) => Ok((item, receiver)),
        None => Err(ProxyError::Internal("failed to create proxy request")),
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
        let started = std::time::Instant::now();
        let outcome = proxy(&self.state, caller, call_of(request)).await;
        telemetry::a2a_call(outcome_label(&outcome), started.elapsed());
        let outcome = outcome?;
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
            return Err(InboundError::InvalidMaxAge.into());
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

    async fn get_route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteReply>, Status> {
        let (metadata, _, request) = request.into_parts();
        let id = self
            .state
            .auth
            .live_workspace(&metadata, &request.workspace_id)
            .await?;
        let (route, url) = pipeline::describe_route(&self.state, &id).await?;
        Ok(Response::new(pb::RouteReply {
            route: route.to_owned(),
            url,
        }))
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
        let started = std::time::Instant::now();
        let opened = open_stream(&self.state, caller, call_of(request)).await;
        let label = match &opened {
            Ok(_) => "streamed",
            Err(err) => err.code().label(),
        };
        // The time to the agent's answer (or the call's end, for a whole answer).
        telemetry::a2a_call(label, started.elapsed());
        let (first, receiver) = opened?;
        let rest = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .flat_map(|item| futures::stream::iter(stream_messages(item)));
        let stream = futures::stream::iter(stream_messages(first)).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }
}

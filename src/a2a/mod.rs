//! The A2A proxy core (docs/a2a.md §1, §3.3, §4): caller classes and their auth, the
//! hierarchy rule, target resolution, body normalization, dispatch to the agent's URL (through
//! the dial-time URL-safety connector) or to its poll mailbox, and the side effects. REST
//! (`POST /workspaces/:id/a2a`) and the `A2A` gRPC service both run this one core; how an
//! answer is shaped for HTTP is the gateway's business.

pub mod attach;
mod caller;
pub mod envelope;
mod error;
mod pipeline;
pub mod queue;
mod receipts;
pub mod records;
pub mod replicas;
mod service;
mod streaming;
pub mod upstream;

use std::sync::Arc;

use bytes::Bytes;

pub(crate) use self::pipeline::proxy_once;
pub use self::{
    caller::authenticate,
    error::{InboundError, ProxyError},
    pipeline::proxy,
    service::A2AService,
    streaming::{StreamItem, proxy_stream},
};

use crate::state::Platform;

/// Headers a caller may pass through to the target (docs/a2a.md §1.1).
pub const FORWARDED_HEADERS: [&str; 4] = [
    "a2a-version",
    "x-a2a-extensions",
    "traceparent",
    "tracestate",
];

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
            records: records::RecordWriter::start(
                platform.db.clone(),
                platform.settings.runtime.pricing,
            ),
            waiting: Arc::default(),
            attachments: Arc::default(),
            replicas,
            redelivered,
            platform,
        }
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

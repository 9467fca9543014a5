//! The Molecule REST + WebSocket gateway: the documented REST surface, byte for byte, over the
//! gRPC services. It owns HTTP concerns only (paths, JSON shapes, status codes, the edge
//! middleware) and forwards credentials as metadata; every auth and business rule is decided
//! behind gRPC, so REST and gRPC callers always get the same answer.

mod a2a;
mod approvals;
mod audit;
mod budget;
mod bundles;
mod chat_files;
mod checkpoints;
pub mod client_ip;
mod console;
mod delegations;
pub mod edge;
mod error;
mod events;
mod forward;
mod github;
mod instructions;
mod json;
mod key_values;
mod memories;
mod openapi;
mod plugin_management;
mod plugins;
pub mod preauth;
pub mod readiness;
mod registry;
mod schedules;
mod secrets;
mod shared_context;
mod templates;
mod tokens;
mod workspace_config;
mod workspaces;

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, util::BoxCloneSyncService};

pub use edge::{Edge, EdgeConfig, RateLimiter};
pub use events::WEBSOCKET_CLIENTS;

/// The wire contract, shared with the control plane and every client.
pub use ::pb;

/// Any gRPC transport: the in-process services of `molecule serve`, or a `Channel` to a remote
/// control plane for `molecule gateway`.
pub type Transport = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// A transport failure. A concrete type (rather than `BoxError`) keeps handler futures `Send`
/// for every lifetime, which axum requires.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl TransportError {
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

type WorkspacesClient = pb::workspaces_client::WorkspacesClient<Transport>;
type RegistryClient = pb::registry_client::RegistryClient<Transport>;
type SecretsClient = pb::secrets_client::SecretsClient<Transport>;
type PluginsClient = pb::plugins_client::PluginsClient<Transport>;
type BundlesClient = pb::bundles_client::BundlesClient<Transport>;
type A2aClient = pb::a2a_client::A2aClient<Transport>;
type DelegationsClient = pb::delegations_client::DelegationsClient<Transport>;
type SchedulesClient = pb::schedules_client::SchedulesClient<Transport>;
type KeyValuesClient = pb::key_values_client::KeyValuesClient<Transport>;
type AuditClient = pb::audit_client::AuditClient<Transport>;
type GithubClient = pb::github_client::GithubClient<Transport>;
type TemplatesClient = pb::templates_client::TemplatesClient<Transport>;
type CheckpointsClient = pb::checkpoints_client::CheckpointsClient<Transport>;
type MemoriesClient = pb::memories_client::MemoriesClient<Transport>;
type ApprovalsClient = pb::approvals_client::ApprovalsClient<Transport>;
type ChatFilesClient = pb::chat_files_client::ChatFilesClient<Transport>;
type InstructionsClient = pb::instructions_client::InstructionsClient<Transport>;
type SharedContextClient = pb::shared_context_client::SharedContextClient<Transport>;
type ConsoleClient = pb::console_client::ConsoleClient<Transport>;

/// The gateway's state: typed clients over one transport, behind one `Arc` so that handing it
/// to a handler costs a reference count, not a copy of every client.
#[derive(Clone)]
pub struct Gateway(Arc<Clients>);

pub struct Clients {
    workspaces: WorkspacesClient,
    registry: RegistryClient,
    secrets: SecretsClient,
    plugins: PluginsClient,
    bundles: BundlesClient,
    a2a: A2aClient,
    delegations: DelegationsClient,
    checkpoints: CheckpointsClient,
    memories: MemoriesClient,
    approvals: ApprovalsClient,
    chat_files: ChatFilesClient,
    instructions: InstructionsClient,
    shared_context: SharedContextClient,
    console: ConsoleClient,
    schedules: SchedulesClient,
    key_values: KeyValuesClient,
    audit: AuditClient,
    github: GithubClient,
    templates: TemplatesClient,
    /// The raw transport, for the standard services (gRPC health) behind `/readyz`.
    transport: Transport,
    /// Ends WebSocket sessions on shutdown.
    shutdown: CancellationToken,
    edge: Arc<Edge>,
}

impl std::ops::Deref for Gateway {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.0
    }
}

impl Gateway {
    pub fn new(transport: Transport, edge: Arc<Edge>, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Clients {
            workspaces: WorkspacesClient::new(transport.clone()),
            registry: RegistryClient::new(transport.clone()),
            secrets: SecretsClient::new(transport.clone()),
            plugins: PluginsClient::new(transport.clone()),
            bundles: BundlesClient::new(transport.clone()),
            delegations: DelegationsClient::new(transport.clone()),
            checkpoints: CheckpointsClient::new(transport.clone()),
            memories: MemoriesClient::new(transport.clone()),
            approvals: ApprovalsClient::new(transport.clone()),
            chat_files: ChatFilesClient::new(transport.clone()),
            instructions: InstructionsClient::new(transport.clone()),
            shared_context: SharedContextClient::new(transport.clone()),
            console: ConsoleClient::new(transport.clone()),
            schedules: SchedulesClient::new(transport.clone()),
            key_values: KeyValuesClient::new(transport.clone()),
            audit: AuditClient::new(transport.clone()),
            github: GithubClient::new(transport.clone()),
            templates: TemplatesClient::new(transport.clone()),
            // An agent's answer may be up to 10 MiB.
            a2a: A2aClient::new(transport.clone())
                .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(pb::MAX_MESSAGE_BYTES),
            transport,
            shutdown,
            edge,
        }))
    }
}

/// The REST router: every documented route, `/ws`, `/health` and `/openapi.json`. Apply
/// [`edge::apply`] around it (together with anything else sharing the port).
pub fn router(gateway: Gateway) -> Router {
    openapi::router().with_state(gateway)
}

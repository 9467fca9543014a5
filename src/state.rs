//! The application state every service shares: one `Clone` struct of cheap handles.

use std::{sync::Arc, time::Duration};

use crate::store::Db;
use tokio_util::sync::CancellationToken;

use crate::{
    a2a::{
        attach::Attachments, queue::Waiting, records::RecordWriter, replicas::Replicas,
        upstream::Upstream,
    },
    auth::Authenticator,
    crypto::Keyring,
    events::EventLog,
    hierarchy::Hierarchy,
    liveness::Liveness,
    registry::hot::HotState,
    url_safety::{Resolver, UrlPolicy},
};

/// Settings the services read at run time (the rest of the config is consumed at start-up).
#[derive(Debug, Clone)]
pub struct Settings {
    pub external_platform_url: Option<String>,
    pub test_tokens_enabled: bool,
    pub provision_timeout: Duration,
    pub plugins: PluginSettings,
    /// Silence from an agent after which a proxied call is given up (its heartbeat may
    /// override it).
    pub a2a_idle_timeout: Duration,
}

/// Where plugins come from and the limits on fetching them.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub dir: std::path::PathBuf,
    pub fetch_timeout: Duration,
    pub max_dir_bytes: u64,
    pub allow_unpinned: bool,
    /// Empty allows every plugin.
    pub allowlist: Vec<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: Authenticator,
    pub events: EventLog,
    pub hierarchy: Hierarchy,
    /// Seals and opens secrets at rest.
    pub keyring: Arc<Keyring>,
    pub liveness: Arc<dyn Liveness>,
    /// The heartbeat hot path's caches, write-behind buffer and open streams.
    pub hot: Arc<HotState>,
    pub url_policy: UrlPolicy,
    /// The A2A proxy's pooled client (dial-time URL safety built in).
    pub upstream: Upstream,
    /// The proxy's activity rows, written in batches.
    pub records: RecordWriter,
    /// Workspaces with calls waiting in the busy queue.
    pub waiting: Arc<Waiting>,
    /// Agents attached to this replica by an `Attach` stream.
    pub attachments: Arc<Attachments>,
    /// The other replicas, for agents attached to one of them; none on a single replica.
    pub replicas: Option<Arc<Replicas>>,
    pub resolver: Arc<dyn Resolver>,
    pub settings: Arc<Settings>,
    /// Cancelled on shutdown; long-lived streams end on it so shutdown never hangs.
    pub shutdown: CancellationToken,
}

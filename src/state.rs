//! The application state every service shares: one `Clone` struct of cheap handles.

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{
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
    pub db: DatabaseConnection,
    pub auth: Authenticator,
    pub events: EventLog,
    pub hierarchy: Hierarchy,
    /// Seals and opens secrets at rest.
    pub keyring: Arc<Keyring>,
    pub liveness: Arc<dyn Liveness>,
    /// The heartbeat hot path's caches, write-behind buffer and open streams.
    pub hot: Arc<HotState>,
    pub url_policy: UrlPolicy,
    pub resolver: Arc<dyn Resolver>,
    pub settings: Arc<Settings>,
    /// Cancelled on shutdown; long-lived streams end on it so shutdown never hangs.
    pub shutdown: CancellationToken,
}

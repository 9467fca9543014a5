//! The platform every feature stands on: one `Clone` struct of cheap handles to the store and
//! the infrastructure (auth, events, hierarchy, liveness, caches, sealing, URL policy). A
//! feature with parts of its own (the A2A proxy) wraps this in its own state; nothing here
//! knows any feature.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    audit::AuditTrail,
    auth::Authenticator,
    crypto::Keyring,
    events::EventLog,
    hierarchy::Hierarchy,
    hot::HotState,
    liveness::Liveness,
    store::Db,
    supervision::Supervision,
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
    pub runtime: RuntimeSettings,
    /// Org templates (`<dir>/org.yaml`) and workspace templates (`<dir>/config.yaml`).
    pub templates_dir: std::path::PathBuf,
    /// How long a console sign-in lasts.
    pub session_ttl: Duration,
    /// How often a long-lived stream re-checks the credential it was opened with.
    pub credential_recheck: Duration,
}

/// Limits and retention of what the workspace runtime stores (docs/runtime.md).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub approval_ttl: Duration,
    pub checkpoint_retention: u64,
    pub upload_quota_bytes: u64,
    pub upload_ttl: Duration,
    pub schedule_fire_timeout: Duration,
    pub pricing: crate::domain::usage::Pricing,
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
pub struct Platform {
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
    pub resolver: Arc<dyn Resolver>,
    pub settings: Arc<Settings>,
    /// Cancelled on shutdown; long-lived streams end on it so shutdown never hangs.
    pub shutdown: CancellationToken,
    /// Background loops' last passes.
    pub supervision: Arc<Supervision>,
    /// Appends state-changing actions to the audit chains.
    pub audit: AuditTrail,
}

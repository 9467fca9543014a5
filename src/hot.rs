//! The heartbeat hot path's memory: cached workspace states, runtime
//! overrides, the write-behind buffer of informational columns, and the open heartbeat streams
//! to push control frames to. Caches are short-lived and invalidated by events from every
//! replica; correctness never depends on them because every write is conditional.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{domain::WorkspaceStatus, liveness::BeatSnapshot, pb};

/// How long a workspace's state is trusted; every transition also invalidates it.
const STATE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct CachedWorkspace {
    pub status: WorkspaceStatus,
    pub runtime: String,
    pub current_task: String,
    pub max_concurrent_tasks: i32,
}

/// What the A2A proxy needs of a target; cached like the state and dropped with it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRoute {
    pub id: String,
    pub name: String,
    pub status: WorkspaceStatus,
    pub runtime: String,
    pub url: Option<String>,
    /// Whether calls are judged against a budget (the spend itself is read per call).
    pub budget_limit: Option<i64>,
}

/// Per-workspace runtime overrides from `runtime_metadata` (absent = unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeOverrides {
    pub status_mgmt: bool,
    /// The agent handles retries itself (`capabilities.session`): a busy call is not queued.
    pub native_session: bool,
    pub idle_timeout_seconds: Option<i64>,
}

/// An open heartbeat stream, as the control dispatcher sees it.
pub struct StreamHandle {
    pub token_id: Option<String>,
    /// Boxed: the channel allocates its slots in blocks of 32, so a small item keeps an idle
    /// stream small.
    pub frames: mpsc::Sender<OutboundFrame>,
    pub paused: bool,
    pub serial: u64,
}

/// One outbound frame of a heartbeat stream.
pub type OutboundFrame = Box<Result<pb::ServerFrame, tonic::Status>>;

#[derive(Default)]
pub struct HotState {
    workspaces: Mutex<HashMap<String, (CachedWorkspace, Instant)>>,
    routes: Mutex<HashMap<String, (std::sync::Arc<CachedRoute>, Instant)>>,
    overrides: Mutex<HashMap<String, RuntimeOverrides>>,
    pending: Mutex<HashMap<String, BeatSnapshot>>,
    /// Held by the flush in progress.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    pub(crate) streams: Mutex<HashMap<String, Vec<StreamHandle>>>,
    next_serial: std::sync::atomic::AtomicU64,
}

impl HotState {
    pub fn workspace(&self, id: &str) -> Option<CachedWorkspace> {
        let workspaces = self.workspaces.lock().expect("state cache poisoned");
        let (state, at) = workspaces.get(id)?;
        (at.elapsed() < STATE_TTL).then(|| state.clone())
    }

    /// The last state seen, however old (for when the datastore cannot be asked).
    pub fn stale_workspace(&self, id: &str) -> Option<CachedWorkspace> {
        let workspaces = self.workspaces.lock().expect("state cache poisoned");
        workspaces.get(id).map(|(state, _)| state.clone())
    }

    pub fn remember_workspace(&self, id: &str, state: CachedWorkspace) {
        let mut workspaces = self.workspaces.lock().expect("state cache poisoned");
        if workspaces.len() > 100_000 {
            workspaces.retain(|_, (_, at)| at.elapsed() < STATE_TTL);
        }
        workspaces.insert(id.to_owned(), (state, Instant::now()));
    }

    pub fn forget_workspace(&self, id: &str) {
        self.workspaces
            .lock()
            .expect("state cache poisoned")
            .remove(id);
        self.routes.lock().expect("route cache poisoned").remove(id);
    }

    pub fn route(&self, id: &str) -> Option<std::sync::Arc<CachedRoute>> {
        let routes = self.routes.lock().expect("route cache poisoned");
        let (route, at) = routes.get(id)?;
        (at.elapsed() < STATE_TTL).then(|| route.clone())
    }

    pub fn remember_route(&self, route: std::sync::Arc<CachedRoute>) {
        let mut routes = self.routes.lock().expect("route cache poisoned");
        if routes.len() > 100_000 {
            routes.retain(|_, (_, at)| at.elapsed() < STATE_TTL);
        }
        routes.insert(route.id.clone(), (route, Instant::now()));
    }

    /// Applies this beat's metadata (absent = unchanged) and returns the effective overrides.
    pub fn overrides(&self, id: &str, metadata: Option<&pb::RuntimeMetadata>) -> RuntimeOverrides {
        let mut overrides = self.overrides.lock().expect("overrides poisoned");
        let Some(metadata) = metadata else {
            return overrides.get(id).cloned().unwrap_or_default();
        };
        let entry = overrides.entry(id.to_owned()).or_default();
        {
            let capabilities: serde_json::Value = metadata
                .capabilities_json
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            entry.status_mgmt = capabilities["status_mgmt"].as_bool().unwrap_or(false);
            entry.native_session = capabilities["session"].as_bool().unwrap_or(false);
            entry.idle_timeout_seconds =
                metadata.idle_timeout_seconds.filter(|seconds| *seconds > 0);
        }
        entry.clone()
    }

    /// Whether a workspace's last heartbeat declared a native session (`capabilities.session`).
    pub fn native_session(&self, id: &str) -> bool {
        self.overrides
            .lock()
            .expect("overrides poisoned")
            .get(id)
            .is_some_and(|overrides| overrides.native_session)
    }

    /// The idle timeout a workspace's last heartbeat asked for.
    pub fn idle_timeout(&self, id: &str) -> Option<i64> {
        self.overrides
            .lock()
            .expect("overrides poisoned")
            .get(id)
            .and_then(|overrides| overrides.idle_timeout_seconds)
    }

    /// Queues the informational columns for the next flush (the newest beat wins).
    pub fn defer(&self, id: &str, snapshot: BeatSnapshot) {
        self.pending
            .lock()
            .expect("write-behind poisoned")
            .insert(id.to_owned(), snapshot);
    }

    pub fn take_pending(&self) -> HashMap<String, BeatSnapshot> {
        std::mem::take(&mut *self.pending.lock().expect("write-behind poisoned"))
    }

    /// Puts rows that could not be written back, unless a newer beat took their place.
    pub fn requeue(&self, rows: impl IntoIterator<Item = (String, BeatSnapshot)>) {
        let mut pending = self.pending.lock().expect("write-behind poisoned");
        for (id, snapshot) in rows {
            pending.entry(id).or_insert(snapshot);
        }
    }

    /// Registers a stream; returns its serial for removal.
    pub fn open_stream(&self, id: &str, mut handle: StreamHandle) -> u64 {
        let serial = self
            .next_serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        handle.serial = serial;
        self.streams
            .lock()
            .expect("streams poisoned")
            .entry(id.to_owned())
            .or_default()
            .push(handle);
        serial
    }

    pub fn close_stream(&self, id: &str, serial: u64) {
        let mut streams = self.streams.lock().expect("streams poisoned");
        if let Some(handles) = streams.get_mut(id) {
            handles.retain(|handle| handle.serial != serial);
            if handles.is_empty() {
                streams.remove(id);
            }
        }
    }
}

//! Liveness (docs/decisions.md D5): who beat within the TTL, with the latest beat's snapshot for
//! read overlays. Two backends behind one seam: an in-process TTL table (embedded default) and
//! Redis (`SET {ns}ws:{id} <snapshot> EX ttl`, keyspace expiry events). Expirations are reported to
//! whoever listens; deciding "offline" belongs to the registry, not here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The informational part of the latest heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeatSnapshot {
    pub at: DateTime<Utc>,
    pub active_tasks: i32,
    pub uptime_seconds: i64,
    pub error_rate: f64,
    pub sample_error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend: Option<i64>,
    /// The agent retries busy calls itself (`capabilities.session`), for every replica to see.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native_session: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("liveness store unavailable: {0}")]
pub struct LivenessError(String);

#[async_trait::async_trait]
pub trait Liveness: Send + Sync {
    /// Marks `id` live for the TTL and keeps `snapshot` for reads.
    async fn beat(&self, id: &str, snapshot: &BeatSnapshot) -> Result<(), LivenessError>;
    /// Drops `id` at once (goodbye, pause, delete) without an expiry report.
    async fn forget(&self, id: &str) -> Result<(), LivenessError>;
    /// The live snapshots among `ids`.
    async fn snapshots(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, BeatSnapshot>, LivenessError>;
    /// Ids whose liveness ran out.
    fn expirations(&self) -> broadcast::Receiver<String>;
    /// When the backend last (re)connected; a sweep must not judge missing keys before a full
    /// TTL has passed since, or every agent would flap offline after a restart.
    fn healthy_since(&self) -> Instant;
    fn ttl(&self) -> Duration;
}

/// The embedded default: a table with deadlines, swept a few times per TTL.
pub struct InProcessLiveness {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, BeatSnapshot)>>,
    expired: broadcast::Sender<String>,
    started: Instant,
}

impl InProcessLiveness {
    pub fn start(ttl: Duration, shutdown: CancellationToken) -> Arc<Self> {
        let liveness = Arc::new(Self {
            ttl,
            entries: Mutex::default(),
            expired: broadcast::channel(4096).0,
            started: Instant::now(),
        });
        let sweeper = Arc::downgrade(&liveness);
        let tick = (ttl / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let Some(liveness) = sweeper.upgrade() else {
                    return;
                };
                liveness.expire_due();
            }
        });
        liveness
    }

    fn expire_due(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        self.entries
            .lock()
            .expect("liveness table poisoned")
            .retain(|id, (deadline, _)| {
                let live = *deadline > now;
                if !live {
                    due.push(id.clone());
                }
                live
            });
        for id in due {
            let _ = self.expired.send(id);
        }
    }
}

#[async_trait::async_trait]
impl Liveness for InProcessLiveness {
    async fn beat(&self, id: &str, snapshot: &BeatSnapshot) -> Result<(), LivenessError> {
        let deadline = Instant::now() + self.ttl;
        self.entries
            .lock()
            .expect("liveness table poisoned")
            .insert(id.to_owned(), (deadline, snapshot.clone()));
        Ok(())
    }

    async fn forget(&self, id: &str) -> Result<(), LivenessError> {
        self.entries
            .lock()
            .expect("liveness table poisoned")
            .remove(id);
        Ok(())
    }

    async fn snapshots(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, BeatSnapshot>, LivenessError> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("liveness table poisoned");
        Ok(ids
            .iter()
            .filter_map(|id| {
                let (deadline, snapshot) = entries.get(id)?;
                (*deadline > now).then(|| (id.clone(), snapshot.clone()))
            })
            .collect())
    }

    fn expirations(&self) -> broadcast::Receiver<String> {
        self.expired.subscribe()
    }

    fn healthy_since(&self) -> Instant {
        self.started
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Several replicas: liveness keys in Redis, expiry via keyspace notifications.
pub struct RedisLiveness {
    ttl: Duration,
    prefix: String,
    /// One auto-reconnecting multiplexed connection: concurrent beats pipeline on it.
    connection: redis::aio::ConnectionManager,
    expired: broadcast::Sender<String>,
    healthy_since: Arc<Mutex<Instant>>,
}

impl RedisLiveness {
    pub async fn start(
        client: redis::Client,
        namespace: &str,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let mut connection =
            redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
        enable_expiry_events(&mut connection).await;
        let liveness = Arc::new(Self {
            ttl,
            prefix: format!("{namespace}ws:"),
            connection,
            expired: broadcast::channel(4096).0,
            healthy_since: Arc::new(Mutex::new(Instant::now())),
        });
        let db = client.get_connection_info().redis_settings().db();
        let listener = ExpiryListener {
            client,
            channel: format!("__keyevent@{db}__:expired"),
            prefix: liveness.prefix.clone(),
            expired: liveness.expired.clone(),
            healthy_since: liveness.healthy_since.clone(),
        };
        let first = listener.subscribe().await?;
        tokio::spawn(listener.run(first, shutdown));
        Ok(liveness)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// Turns on expired-key events (`E` + `x`) unless already on; managed Redis may refuse, and the
/// sweep remains the backstop then.
async fn enable_expiry_events(connection: &mut impl redis::aio::ConnectionLike) {
    let current: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(connection)
        .await;
    let flags = current
        .ok()
        .and_then(|pair| pair.get(1).cloned())
        .unwrap_or_default();
    let has = |c: char| flags.contains(c) || (c == 'x' && flags.contains('A'));
    if has('E') && has('x') {
        return;
    }
    let wanted = format!(
        "{flags}{}{}",
        if has('E') { "" } else { "E" },
        if has('x') { "" } else { "x" }
    );
    let set: Result<(), _> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async(connection)
        .await;
    match set {
        Ok(()) => info!(flags = %wanted, "enabled redis keyspace expiry events"),
        Err(err) => {
            warn!(error = %err, "cannot enable keyspace expiry events; relying on the sweep")
        }
    }
}

struct ExpiryListener {
    client: redis::Client,
    channel: String,
    prefix: String,
    expired: broadcast::Sender<String>,
    healthy_since: Arc<Mutex<Instant>>,
}

impl ExpiryListener {
    async fn subscribe(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        Ok(pubsub)
    }

    async fn run(self, first: redis::aio::PubSub, shutdown: CancellationToken) {
        let mut pubsub = Some(first);
        loop {
            let connection = match pubsub.take() {
                Some(connection) => Ok(connection),
                None => self.subscribe().await,
            };
            match connection {
                Ok(connection) => {
                    *self.healthy_since.lock().expect("poisoned") = Instant::now();
                    // A restarted Redis has lost the setting.
                    if let Ok(mut setup) = self.client.get_multiplexed_async_connection().await {
                        enable_expiry_events(&mut setup).await;
                    }
                    let mut messages = connection.into_on_message();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let Ok(key) = message.get_payload::<String>() else {
                            continue;
                        };
                        // Only `ws:{id}` itself, never longer keys under it.
                        if let Some(id) = key
                            .strip_prefix(&self.prefix)
                            .filter(|id| !id.contains(':'))
                        {
                            let _ = self.expired.send(id.to_owned());
                        }
                    }
                    warn!("liveness expiry subscription lost; reconnecting");
                }
                Err(err) => warn!(error = %err, "liveness expiry subscribe failed; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> LivenessError {
    LivenessError(err.to_string())
}

impl RedisLiveness {
    /// Any failure restarts the grace period: keys may have been lost with the server.
    fn failed(&self, err: impl std::fmt::Display) -> LivenessError {
        *self.healthy_since.lock().expect("poisoned") = Instant::now();
        unavailable(err)
    }
}

#[async_trait::async_trait]
impl Liveness for RedisLiveness {
    async fn beat(&self, id: &str, snapshot: &BeatSnapshot) -> Result<(), LivenessError> {
        let value = serde_json::to_string(snapshot).map_err(unavailable)?;
        let mut connection = self.connection.clone();
        connection
            .set_ex::<_, _, ()>(self.key(id), value, self.ttl.as_secs().max(1))
            .await
            .map_err(|err| self.failed(err))
    }

    async fn forget(&self, id: &str) -> Result<(), LivenessError> {
        let mut connection = self.connection.clone();
        connection
            .del::<_, ()>(self.key(id))
            .await
            .map_err(unavailable)
    }

    async fn snapshots(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, BeatSnapshot>, LivenessError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(ids
            .iter()
            .zip(values)
            .filter_map(|(id, value)| Some((id.clone(), serde_json::from_str(&value?).ok()?)))
            .collect())
    }

    fn expirations(&self) -> broadcast::Receiver<String> {
        self.expired.subscribe()
    }

    fn healthy_since(&self) -> Instant {
        *self.healthy_since.lock().expect("poisoned")
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> BeatSnapshot {
        BeatSnapshot {
            at: Utc::now(),
            active_tasks: 1,
            uptime_seconds: 5,
            error_rate: 0.0,
            sample_error: String::new(),
            monthly_spend: None,
            native_session: false,
        }
    }

    #[tokio::test]
    async fn in_process_entries_expire_and_are_reported_once() {
        let liveness =
            InProcessLiveness::start(Duration::from_millis(200), CancellationToken::new());
        let mut expired = liveness.expirations();
        liveness.beat("a", &snapshot()).await.unwrap();
        liveness.beat("b", &snapshot()).await.unwrap();
        liveness.forget("b").await.unwrap();
        let ids = [String::from("a"), String::from("b")];
        assert_eq!(liveness.snapshots(&ids).await.unwrap().len(), 1);
        let id = tokio::time::timeout(Duration::from_secs(2), expired.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id, "a");
        assert!(liveness.snapshots(&ids).await.unwrap().is_empty());
        assert!(
            tokio::time::timeout(Duration::from_millis(300), expired.recv())
                .await
                .is_err()
        );
    }
}

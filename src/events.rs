//! Structure events: the persisted log and the live fan-out. Owns the envelope, the bus seam
//! (in-process broadcast, or Redis pub/sub across replicas with instance-id dedupe) and the
//! recorder, and which payload fields carry conversation text (docs/decisions.md D13). It must not
//! decide who may see an event; watchers filter (see `watch`).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_redis::redis::{self, AsyncCommands};
use futures::StreamExt;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::{
    domain::EventType,
    store::{self, entities::structure_event},
};

/// The redis channel (after the deployment's namespace) every replica publishes to and listens on.
pub const REDIS_CHANNEL: &str = "events:broadcast";

/// Per-process fan-out capacity; a watcher further behind than this is disconnected.
const LOCAL_CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub event: EventType,
    pub workspace_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub payload: Value,
}

impl Envelope {
    pub fn new(event: EventType, workspace_id: Option<&str>, payload: Value) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            event,
            workspace_id: workspace_id.map(str::to_owned),
            timestamp: store::now(),
            payload,
        }
    }

    /// Whether the event names `watcher` as a party: its subject, or the source, target, caller
    /// or requester in its payload.
    pub fn names(&self, watcher: &str) -> bool {
        self.workspace_id.as_deref() == Some(watcher)
            || ["source_id", "target_id", "caller_id", "from_workspace_id"]
                .iter()
                .any(|key| self.payload[key].as_str() == Some(watcher))
    }

    /// The event as a watcher sees it (docs/decisions.md D13): in full for a party or when it
    /// carries nothing private; otherwise without the private fields.
    pub fn seen_as(self: &Arc<Self>, party: bool) -> Arc<Self> {
        let fields = self.event.private_fields();
        if party || !fields.iter().any(|field| self.payload.get(field).is_some()) {
            return self.clone();
        }
        let mut redacted = Self::clone(self);
        if let Value::Object(payload) = &mut redacted.payload {
            for field in fields {
                payload.remove(*field);
            }
        }
        Arc::new(redacted)
    }

    /// The documented wire form `{"event","workspace_id","timestamp","payload"}`.
    pub fn to_wire_json(&self) -> String {
        serde_json::json!({
            "event": self.event,
            "workspace_id": self.workspace_id.as_deref().unwrap_or(""),
            "timestamp": rfc3339(self.timestamp),
            "payload": self.payload,
        })
        .to_string()
    }
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The fan-out seam: every local subscriber sees every event published anywhere, once.
pub trait EventBus: Send + Sync {
    /// Never blocks and never fails the caller; delivery problems are logged.
    fn publish(&self, envelope: Arc<Envelope>);
    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>>;
}

/// The embedded default: one process, one broadcast channel.
pub struct InProcessBus {
    local: broadcast::Sender<Arc<Envelope>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self {
            local: broadcast::channel(LOCAL_CAPACITY).0,
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, envelope: Arc<Envelope>) {
        // No receivers is not an error: nobody is watching.
        let _ = self.local.send(envelope);
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }
}

#[derive(Serialize, Deserialize)]
struct RelayMessage {
    origin: String,
    envelope: Envelope,
}

/// Several replicas: local events go straight to local subscribers and, in order, to Redis;
/// a dedicated subscriber connection relays other replicas' events (its own are skipped by
/// instance id, so each replica delivers each event exactly once).
pub struct RedisBus {
    local: broadcast::Sender<Arc<Envelope>>,
    outbox: mpsc::UnboundedSender<Arc<Envelope>>,
}

impl RedisBus {
    /// Connects, and returns once the relay subscription is live.
    pub async fn start(
        pool: deadpool_redis::Pool,
        client: redis::Client,
        namespace: &str,
        instance_id: String,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, redis::RedisError> {
        let channel = format!("{namespace}{REDIS_CHANNEL}");
        let local = broadcast::channel(LOCAL_CAPACITY).0;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let pubsub = subscribe(&client, &channel).await?;
        let relay_target = Relay {
            client,
            channel: channel.clone(),
            local: local.clone(),
            instance_id: instance_id.clone(),
        };
        tokio::spawn(publisher(pool, outbox_rx, channel, instance_id));
        tokio::spawn(relay_target.run(pubsub, shutdown));
        Ok(Self { local, outbox })
    }
}

impl EventBus for RedisBus {
    fn publish(&self, envelope: Arc<Envelope>) {
        let _ = self.local.send(envelope.clone());
        if self.outbox.send(envelope).is_err() {
            warn!("event publisher stopped; event not relayed to other replicas");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }
}

async fn publisher(
    pool: deadpool_redis::Pool,
    mut outbox: mpsc::UnboundedReceiver<Arc<Envelope>>,
    channel: String,
    origin: String,
) {
    while let Some(envelope) = outbox.recv().await {
        let message = RelayMessage {
            origin: origin.clone(),
            envelope: (*envelope).clone(),
        };
        let Ok(text) = serde_json::to_string(&message) else {
            continue;
        };
        let result = match pool.get().await {
            Ok(mut conn) => conn
                .publish::<_, _, i64>(&channel, text)
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(error) = result {
            crate::telemetry::redis_error("events");
            warn!(%error, event = %envelope.event, "event relay publish failed");
        }
    }
}

/// The receiving half of the relay: other replicas' events into the local broadcast.
struct Relay {
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<Arc<Envelope>>,
    instance_id: String,
}

impl Relay {
    /// Relays until shutdown, resubscribing after a lost connection.
    async fn run(self, first: redis::aio::PubSub, shutdown: tokio_util::sync::CancellationToken) {
        let mut pubsub = Some(first);
        loop {
            let connection = match pubsub.take() {
                Some(connection) => Ok(connection),
                None => subscribe(&self.client, &self.channel).await,
            };
            match connection {
                Ok(connection) => {
                    let mut messages = connection.into_on_message();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        self.deliver(&payload);
                    }
                    warn!("event relay subscription ended; reconnecting");
                }
                Err(err) => {
                    crate::telemetry::redis_error("events");
                    warn!(error = %err, "event relay subscribe failed; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn deliver(&self, payload: &str) {
        match serde_json::from_str::<RelayMessage>(payload) {
            // Our own events were delivered locally when published.
            Ok(relayed) if relayed.origin == self.instance_id => {}
            Ok(relayed) => {
                let _ = self.local.send(Arc::new(relayed.envelope));
            }
            Err(err) => debug!(error = %err, "ignoring malformed relay message"),
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    info!(channel, "event relay subscribed");
    Ok(pubsub)
}

/// Writes events to the log and hands them to the bus.
#[derive(Clone)]
pub struct EventLog {
    bus: Arc<dyn EventBus>,
    /// Open watch streams (WebSocket and gRPC); live-only events are built only when some are.
    watchers: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a watcher for as long as it lives.
pub struct WatcherGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EventLog {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
            watchers: Arc::default(),
        }
    }

    /// Internal consumers (caches, control frames): they never need live-only events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.bus.subscribe()
    }

    /// A watch stream: every event, live-only ones included, while the guard lives.
    pub fn watch(&self) -> (broadcast::Receiver<Arc<Envelope>>, WatcherGuard) {
        self.watchers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.bus.subscribe(), WatcherGuard(self.watchers.clone()))
    }

    /// Inserts a persisted event on `db` (usually the transaction that made the change, so the
    /// event and the state it describes commit together). Publish it after the commit.
    pub async fn insert(
        &self,
        db: &impl ConnectionTrait,
        event: EventType,
        workspace_id: Option<&str>,
        payload: Value,
    ) -> Result<Arc<Envelope>, DbErr> {
        let envelope = Envelope::new(event, workspace_id, payload);
        structure_event::Entity::insert(structure_event::ActiveModel {
            id: Set(envelope.id.clone()),
            event_type: Set(envelope.event.as_str().to_owned()),
            workspace_id: Set(envelope.workspace_id.clone()),
            agent_id: Set(None),
            target_id: Set(None),
            payload: Set(envelope.payload.to_string()),
            created_at: Set(envelope.timestamp),
        })
        .exec(db)
        .await?;
        Ok(Arc::new(envelope))
    }

    pub fn publish_all(&self, envelopes: impl IntoIterator<Item = Arc<Envelope>>) {
        for envelope in envelopes {
            self.publish(envelope);
        }
    }

    fn publish(&self, envelope: Arc<Envelope>) {
        crate::telemetry::event_published(envelope.event.as_str());
        self.bus.publish(envelope);
    }

    /// Persists and publishes a standalone event; a failed insert is logged, and the event is
    /// still broadcast so live watchers are not left behind.
    pub async fn record(
        &self,
        db: &impl ConnectionTrait,
        event: EventType,
        workspace_id: Option<&str>,
        payload: Value,
    ) {
        match self.insert(db, event, workspace_id, payload.clone()).await {
            Ok(envelope) => self.publish(envelope),
            Err(err) => {
                warn!(error = %err, %event, "event insert failed; broadcasting only");
                self.broadcast_only(event, workspace_id, payload);
            }
        }
    }

    /// A live-only event (heartbeats, task updates): no row, no cross-replica relay guarantee
    /// beyond the bus itself.
    pub fn broadcast_only(&self, event: EventType, workspace_id: Option<&str>, payload: Value) {
        if self.watchers.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        self.publish(Arc::new(Envelope::new(event, workspace_id, payload)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_text_reaches_only_those_who_took_part() {
        let event = Arc::new(Envelope::new(
            EventType::A2aResponse,
            Some("target"),
            serde_json::json!({"response_body": {"text": "secret plans"}, "method": "message/send"}),
        ));
        assert!(event.names("target"));
        assert_eq!(event.seen_as(true).payload, event.payload);
        assert!(!event.names("sibling"));
        let bystander = event.seen_as(false);
        assert_eq!(
            bystander.payload,
            serde_json::json!({"method": "message/send"})
        );
        assert_eq!(
            (bystander.id.as_str(), bystander.event.as_str()),
            (event.id.as_str(), "A2A_RESPONSE")
        );
        let sent = Arc::new(Envelope::new(
            EventType::DelegationSent,
            Some("source"),
            serde_json::json!({"target_id": "target", "task_preview": "do it"}),
        ));
        assert!(sent.names("target") && !sent.names("other"));
        assert!(sent.seen_as(false).payload.get("task_preview").is_none());
        let escalated = Arc::new(Envelope::new(
            EventType::ApprovalEscalated,
            Some("parent"),
            serde_json::json!({"approval_id": "a", "from_workspace_id": "child", "action": "x"}),
        ));
        assert!(escalated.names("child") && escalated.names("parent"));
        assert_eq!(
            escalated.seen_as(false).payload,
            serde_json::json!({"from_workspace_id": "child"})
        );
        let online = Arc::new(Envelope::new(
            EventType::WorkspaceOnline,
            Some("w"),
            serde_json::json!({"url": "u"}),
        ));
        assert!(
            Arc::ptr_eq(&online.seen_as(false), &online),
            "nothing to hide: no copy"
        );
    }

    #[test]
    fn wire_json_has_the_documented_keys_in_order() {
        let envelope = Envelope::new(
            EventType::WorkspaceOnline,
            None,
            serde_json::json!({"a": 1}),
        );
        let wire = envelope.to_wire_json();
        assert!(wire.starts_with(r#"{"event":"WORKSPACE_ONLINE","workspace_id":"","timestamp":""#));
        assert!(wire.ends_with(r#""payload":{"a":1}}"#));
    }

    #[tokio::test]
    async fn in_process_bus_delivers_to_every_subscriber() {
        let bus = InProcessBus::new();
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        bus.publish(Arc::new(Envelope::new(
            EventType::TaskUpdated,
            Some("w"),
            Value::Null,
        )));
        assert_eq!(first.recv().await.unwrap().event, EventType::TaskUpdated);
        assert_eq!(second.recv().await.unwrap().event, EventType::TaskUpdated);
    }
}

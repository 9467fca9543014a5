//! Attachments held by other replicas. With several replicas an agent's `Attach` stream lives on
//! one of them while calls for it arrive at any: this module owns the Redis directory of which
//! replica holds each stream, the internal `Replicas` service that delivers to the agents
//! attached here, and the relay that carries a call to the holder and its reply parts back.
//! It never decides whether a call is allowed (the replica that took it did, and records it).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::Stream;
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tonic::{
    Request, Response, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::{Channel, Endpoint},
};
use tracing::{debug, warn};

use super::{A2aState, InboundError, attach::ReplyPart, upstream::DispatchError};
use crate::{
    crypto::Keyring,
    error::ApiError,
    pb::{self, replicas_client::ReplicasClient},
};

/// The metadata key replicas authenticate each other with.
const CREDENTIAL: &str = "x-molecule-replica";
/// A directory entry outlives its holder's refreshes (one per ping) by this much.
pub(super) const ENTRY_TTL: Duration = Duration::from_secs(90);
/// How long a lookup is reused: a call to an agent that just attached elsewhere may take this
/// long to find it; a busy proxy asks Redis once per target per interval, not once per call.
const LOOKUP_REUSE: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reply parts buffered between the holder and the waiting call.
const PARTS: usize = 64;

/// Owns the entry only while it still names this replica, so a late refresh or release never
/// touches a newer holder's entry.
const REFRESH: &str = "local v = redis.call('GET', KEYS[1]) \
     if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end \
     return 0";
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// This replica's view of the others.
pub struct Replicas {
    /// Where the others reach this replica.
    me: String,
    prefix: String,
    connection: redis::aio::ConnectionManager,
    credentials: AsciiMetadataValue,
    channels: Mutex<HashMap<String, Channel>>,
    lookups: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Replicas {
    pub async fn start(
        client: redis::Client,
        namespace: &str,
        me: String,
        keyring: &Keyring,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let connection = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        let credentials = AsciiMetadataValue::try_from(keyring.replica_credentials().join(","))
            .expect("hex credentials are valid metadata");
        Ok(Arc::new(Self {
            me,
            prefix: format!("{namespace}attach:"),
            connection,
            credentials,
            channels: Mutex::default(),
            lookups: Mutex::default(),
        }))
    }

    fn key(&self, workspace_id: &str) -> String {
        format!("{}{workspace_id}", self.prefix)
    }

    /// Records that the workspace's stream is now here, and ends it on the replica that held it
    /// before, so one agent never has two live attachments.
    pub(super) async fn claim(&self, workspace_id: &str) {
        let mut connection = self.connection.clone();
        let previous: Result<Option<String>, _> = redis::cmd("SET")
            .arg(self.key(workspace_id))
            .arg(&self.me)
            .arg("EX")
            .arg(ENTRY_TTL.as_secs())
            .arg("GET")
            .query_async(&mut connection)
            .await;
        self.forget(workspace_id);
        match previous {
            Ok(Some(holder)) if holder != self.me => {
                let request = self.authed(pb::ReleaseRequest {
                    workspace_id: workspace_id.to_owned(),
                });
                if let Err(status) = self.client(&holder).release(request).await {
                    debug!(workspace_id, code = ?status.code(), "previous holder not released");
                }
            }
            Ok(_) => {}
            Err(err) => warn!(workspace_id, error = %err, "attachment not published"),
        }
    }

    /// Keeps the entry alive; false when another replica has taken the workspace over.
    pub(super) async fn refresh(&self, workspace_id: &str) -> bool {
        let kept = self.run_owned(REFRESH, workspace_id).await;
        // Redis being away is not a takeover: keep the stream and try again next time.
        kept.map_or(true, |kept| kept == 1)
    }

    /// Removes the entry if it still names this replica.
    pub(super) async fn release(&self, workspace_id: &str) {
        if let Err(err) = self.run_owned(RELEASE, workspace_id).await {
            warn!(workspace_id, error = %err, "attachment entry not removed; it expires");
        }
    }

    /// Runs one of the compare-and-set scripts on the workspace's entry, with this replica
    /// and the TTL as arguments (RELEASE ignores the TTL).
    async fn run_owned(&self, script: &str, workspace_id: &str) -> redis::RedisResult<i64> {
        let mut connection = self.connection.clone();
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(self.key(workspace_id))
            .arg(&self.me)
            .arg(ENTRY_TTL.as_secs())
            .query_async(&mut connection)
            .await
    }

    /// The replica holding the workspace's stream, when it is another one.
    pub(super) async fn lookup(&self, workspace_id: &str) -> Option<Remote> {
        let cached = self
            .lookups
            .lock()
            .expect("lookups poisoned")
            .get(workspace_id)
            .filter(|(at, _)| at.elapsed() < LOOKUP_REUSE)
            .map(|(_, holder)| holder.clone());
        let holder = match cached {
            Some(holder) => holder,
            None => {
                let mut connection = self.connection.clone();
                let holder: Option<String> = connection
                    .get(self.key(workspace_id))
                    .await
                    .inspect_err(
                        |err| warn!(workspace_id, error = %err, "attachment lookup failed"),
                    )
                    .ok()
                    .flatten();
                self.lookups
                    .lock()
                    .expect("lookups poisoned")
                    .insert(workspace_id.to_owned(), (Instant::now(), holder.clone()));
                holder
            }
        };
        // An entry naming this replica with no local stream is stale: it is about to expire.
        let holder = holder.filter(|holder| *holder != self.me)?;
        Some(Remote {
            client: self.client(&holder),
            credentials: self.credentials.clone(),
        })
    }

    fn forget(&self, workspace_id: &str) {
        self.lookups
            .lock()
            .expect("lookups poisoned")
            .remove(workspace_id);
    }

    fn client(&self, replica: &str) -> ReplicasClient<Channel> {
        let channel = self
            .channels
            .lock()
            .expect("channels poisoned")
            .entry(replica.to_owned())
            .or_insert_with(|| {
                Endpoint::from_shared(replica.to_owned())
                    .unwrap_or_else(|_| Endpoint::from_static("http://invalid.invalid"))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .clone();
        ReplicasClient::new(channel).max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
    }

    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(CREDENTIAL, self.credentials.clone());
        request
    }
}

/// The replica holding an agent's stream, as a delivery destination.
pub(crate) struct Remote {
    client: ReplicasClient<Channel>,
    credentials: AsciiMetadataValue,
}

/// A relayed delivery in flight: dropping it ends the RPC, which cancels the delivery there.
pub(crate) struct Relay(tokio::task::AbortHandle);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Remote {
    /// Starts the delivery on the holding replica; its reply parts arrive on the receiver.
    pub(super) async fn begin(
        &self,
        request: pb::RelayedDelivery,
    ) -> Result<(Relay, mpsc::Receiver<ReplyPart>), DispatchError> {
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert(CREDENTIAL, self.credentials.clone());
        let mut parts = match self.client.clone().deliver(request).await {
            Ok(parts) => parts.into_inner(),
            // The agent left that replica (or it is gone): the connection is not confirmed.
            Err(status) => {
                return Err(DispatchError::Unreachable(format!(
                    "attached agent unreachable: {}",
                    status.message()
                )));
            }
        };
        let (sender, receiver) = mpsc::channel(PARTS);
        let pump = tokio::spawn(async move {
            // An error or a missing end closes the channel: "failed to read agent response".
            while let Ok(Some(pb::RelayedPart { part: Some(part) })) = parts.message().await {
                let part = match part {
                    pb::relayed_part::Part::Reply(reply) => ReplyPart::Whole(reply),
                    pb::relayed_part::Part::Chunk(chunk) => ReplyPart::Chunk(chunk),
                    pb::relayed_part::Part::Busy(_) => ReplyPart::Busy,
                };
                if sender.send(part).await.is_err() {
                    break;
                }
            }
        });
        Ok((Relay(pump.abort_handle()), receiver))
    }
}

/// The `Replicas` service: deliveries for the agents attached here, on behalf of other replicas.
pub struct ReplicasService {
    state: A2aState,
}

impl ReplicasService {
    pub fn new(state: A2aState) -> Self {
        Self { state }
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<(), ApiError> {
        let presented: Vec<&str> = metadata
            .get(CREDENTIAL)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(',').collect())
            .unwrap_or_default();
        if self.state.keyring.accepts_replica(&presented) {
            Ok(())
        } else {
            Err(InboundError::ReplicaCredentialRequired.into())
        }
    }
}

type PartStream = Pin<Box<dyn Stream<Item = Result<pb::RelayedPart, Status>> + Send>>;

#[tonic::async_trait]
impl pb::replicas_server::Replicas for ReplicasService {
    type DeliverStream = PartStream;

    async fn deliver(
        &self,
        request: Request<pb::RelayedDelivery>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.authenticate(&metadata)?;
        let attachment = self
            .state
            .attachments
            .get(&request.workspace_id)
            .ok_or(InboundError::NotAttachedHere)?;
        let (sender, receiver) = mpsc::channel(PARTS);
        match attachment.begin(request).await {
            Ok((flight, mut replies)) => {
                tokio::spawn(async move {
                    loop {
                        let part = tokio::select! {
                            part = replies.recv() => part,
                            // The calling replica gave up (deadline, idle, its caller's rules).
                            () = sender.closed() => {
                                flight.cancel();
                                break;
                            }
                        };
                        let Some(part) = part else { break };
                        let (part, last) = match part {
                            ReplyPart::Whole(reply) => (pb::relayed_part::Part::Reply(reply), true),
                            ReplyPart::Busy => {
                                (pb::relayed_part::Part::Busy(pb::Busy::default()), true)
                            }
                            ReplyPart::Chunk(chunk) => {
                                let last = chunk.last;
                                (pb::relayed_part::Part::Chunk(chunk), last)
                            }
                        };
                        if sender
                            .send(Ok(pb::RelayedPart { part: Some(part) }))
                            .await
                            .is_err()
                        {
                            flight.cancel();
                            break;
                        }
                        if last {
                            break;
                        }
                    }
                });
            }
            Err(DispatchError::Busy(_)) => {
                let busy = pb::relayed_part::Part::Busy(pb::Busy::default());
                let _ = sender.try_send(Ok(pb::RelayedPart { part: Some(busy) }));
            }
            Err(_) => {
                return Err(InboundError::AttachmentLost.into());
            }
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.authenticate(&metadata)?;
        self.state.attachments.release(&request.workspace_id);
        Ok(Response::new(pb::ReleaseResponse {}))
    }
}

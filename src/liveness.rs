//! Liveness (docs/decisions.md D5): who beat within the TTL, with the latest beat's snapshot for
//! read overlays. Two backends behind one seam: an in-process TTL table (embedded default) and
//! Redis (`SET {ns}ws:{id} <snapshot> PX ttl`, plus each deadline in the sorted set
//! `{ns}liveness:deadlines`, popped as it passes). Expirations are reported to whoever listens;
//! deciding "offline" belongs to the registry, not here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

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
        let tick = expiry_tick(ttl);
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
    /// Every live id scored by its deadline (ms since the epoch): what Redis' own expiry cannot
    /// give, since it finds an expired key only by sampling (1,000 expired among 100,000 live
    /// keys can linger for minutes) or when it is read.
    deadlines: String,
    /// Deadlines on their way into `deadlines`, written many per `ZADD`: one command per beat
    /// on top of its `SET` would halve the beats a Redis can take.
    scores: mpsc::Sender<(String, i64)>,
    /// One auto-reconnecting multiplexed connection: concurrent beats pipeline on it.
    connection: redis::aio::ConnectionManager,
    expired: broadcast::Sender<String>,
    healthy_since: Arc<Mutex<Instant>>,
    outage: OutageLog,
}

/// Pops the ids whose deadline passed by Redis' own clock, as one atomic step (so each is
/// reported by one replica only): an id whose key still lives (a beat raced the pop, or the
/// beating replica's clock is behind) is put back at its key's real deadline instead.
const POP_EXPIRED: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
local gone = {}
for _, id in ipairs(due) do
  local left = redis.call('PTTL', ARGV[1] .. id)
  if left > 0 then
    redis.call('ZADD', KEYS[1], now_ms + left, id)
  else
    redis.call('ZREM', KEYS[1], id)
    gone[#gone + 1] = id
  end
end
return gone
";

/// Deadlines waiting to be written; beyond it one is dropped, which only delays that agent's
/// report: a stale score is corrected when popped, a missing one is the sweep's.
const QUEUED_SCORES: usize = 65_536;

/// Writes queued deadlines, as many per `ZADD` as are waiting (at most `POP_BATCH`): without
/// waiting for more, so a lone beat's score is written at once.
async fn write_scores(
    mut connection: redis::aio::ConnectionManager,
    key: String,
    mut queued: mpsc::Receiver<(String, i64)>,
) {
    let mut batch = Vec::with_capacity(POP_BATCH);
    while queued.recv_many(&mut batch, POP_BATCH).await > 0 {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&key);
        for (id, deadline) in batch.drain(..) {
            zadd.arg(deadline).arg(id);
        }
        if let Err(err) = zadd.query_async::<()>(&mut connection).await {
            crate::telemetry::redis_error("liveness");
            tracing::debug!(error = %err, "liveness deadlines not written");
        }
    }
}

/// Ids popped per script run; a full batch is followed by another at once.
const POP_BATCH: usize = 1000;

/// How often expirations are looked for: an agent is reported within one tick of its TTL.
fn expiry_tick(ttl: Duration) -> Duration {
    (ttl / 64).clamp(Duration::from_millis(20), Duration::from_secs(1))
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
        let mut connection = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        let deadlines = format!("{namespace}liveness:deadlines");
        let (scores, queued) = mpsc::channel(QUEUED_SCORES);
        tokio::spawn(write_scores(connection.clone(), deadlines.clone(), queued));
        let liveness = Arc::new(Self {
            ttl,
            prefix: format!("{namespace}ws:"),
            deadlines,
            scores,
            connection,
            expired: broadcast::channel(4096).0,
            healthy_since: Arc::new(Mutex::new(Instant::now())),
            outage: OutageLog::default(),
        });
        let popper = Arc::downgrade(&liveness);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(expiry_tick(ttl));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let Some(liveness) = popper.upgrade() else {
                    return;
                };
                liveness.pop_expired().await;
            }
        });
        Ok(liveness)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Reports every id whose deadline passed. A failure restarts the grace period, like a
    /// failed beat: the registry's sweep waits a full TTL before judging missing keys.
    async fn pop_expired(&self) {
        loop {
            let mut connection = self.connection.clone();
            let popped: Result<Vec<String>, _> = redis::cmd("EVAL")
                .arg(POP_EXPIRED)
                .arg(1)
                .arg(&self.deadlines)
                .arg(&self.prefix)
                .arg(POP_BATCH)
                .query_async(&mut connection)
                .await;
            let ids = match popped {
                Ok(ids) => ids,
                Err(err) => {
                    tracing::debug!(error = %err, "liveness deadline pop failed");
                    let _ = self.failed(err);
                    return;
                }
            };
            let full = ids.len() == POP_BATCH;
            for id in ids {
                let _ = self.expired.send(id);
            }
            if !full {
                return;
            }
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> LivenessError {
    LivenessError(err.to_string())
}

/// Failed calls to the liveness store, logged as one line when an outage begins, one every
/// `REPORT_EVERY` while it lasts and one when it ends: not one per refused beat, which at
/// thousands of agents would bury the log (as the datastore's breaker does for Postgres).
#[derive(Default)]
struct OutageLog {
    /// Read on every successful call, so recovery costs no lock while all is well.
    down: std::sync::atomic::AtomicBool,
    state: Mutex<OutageState>,
}

#[derive(Default)]
struct OutageState {
    since: Option<Instant>,
    failed: u64,
    last_report: Option<Instant>,
}

/// What one failure or success adds to the log.
#[derive(Debug, PartialEq, Eq)]
enum OutageLine {
    Began,
    Lasting { failed: u64, down_for_secs: u64 },
    Ended { failed: u64, down_for_secs: u64 },
}

impl OutageLog {
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    fn failure(&self) -> Option<OutageLine> {
        let mut state = self.state.lock().expect("outage log poisoned");
        self.down.store(true, std::sync::atomic::Ordering::Relaxed);
        state.failed += 1;
        let now = Instant::now();
        let since = *state.since.get_or_insert(now);
        let due = state
            .last_report
            .is_none_or(|last| now.duration_since(last) >= Self::REPORT_EVERY);
        if !due {
            return None;
        }
        let first = state.last_report.is_none();
        state.last_report = Some(now);
        if first {
            return Some(OutageLine::Began);
        }
        let failed = std::mem::take(&mut state.failed);
        Some(OutageLine::Lasting {
            failed,
            down_for_secs: since.elapsed().as_secs(),
        })
    }

    fn success(&self) -> Option<OutageLine> {
        if !self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut state = self.state.lock().expect("outage log poisoned");
        self.down.store(false, std::sync::atomic::Ordering::Relaxed);
        let ended = std::mem::take(&mut *state);
        ended.since.map(|since| OutageLine::Ended {
            failed: ended.failed,
            down_for_secs: since.elapsed().as_secs(),
        })
    }

    fn log(line: Option<OutageLine>, error: &dyn std::fmt::Display) {
        match line {
            None => {}
            Some(OutageLine::Began) => {
                tracing::warn!(%error, "liveness store unreachable; heartbeats are refused until it answers");
            }
            Some(OutageLine::Lasting {
                failed,
                down_for_secs,
            }) => {
                tracing::warn!(%error, failed, down_for_secs, "liveness store still unreachable");
            }
            Some(OutageLine::Ended {
                failed,
                down_for_secs,
            }) => tracing::info!(failed, down_for_secs, "liveness store reachable again"),
        }
    }
}

impl RedisLiveness {
    /// Any failure restarts the grace period: keys may have been lost with the server.
    fn failed(&self, err: impl std::fmt::Display) -> LivenessError {
        crate::telemetry::redis_error("liveness");
        *self.healthy_since.lock().expect("poisoned") = Instant::now();
        OutageLog::log(self.outage.failure(), &err);
        unavailable(err)
    }

    fn answered(&self) {
        OutageLog::log(self.outage.success(), &"");
    }
}

#[async_trait::async_trait]
impl Liveness for RedisLiveness {
    async fn beat(&self, id: &str, snapshot: &BeatSnapshot) -> Result<(), LivenessError> {
        let value = serde_json::to_string(snapshot).map_err(unavailable)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let deadline = Utc::now()
            .timestamp_millis()
            .saturating_add_unsigned(ttl_ms);
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(self.key(id))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|err| self.failed(err))?;
        self.answered();
        let _ = self.scores.try_send((id.to_owned(), deadline));
        Ok(())
    }

    async fn forget(&self, id: &str) -> Result<(), LivenessError> {
        let mut connection = self.connection.clone();
        redis::pipe()
            .del(self.key(id))
            .ignore()
            .zrem(&self.deadlines, id)
            .ignore()
            .query_async::<()>(&mut connection)
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
        self.answered();
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

    #[test]
    fn an_outage_is_one_line_when_it_begins_not_one_per_refused_beat() {
        let log = OutageLog::default();
        assert_eq!(log.success(), None, "nothing to report while all is well");
        assert_eq!(log.failure(), Some(OutageLine::Began));
        for _ in 0..10_000 {
            assert_eq!(log.failure(), None);
        }
        log.state.lock().unwrap().last_report = Some(Instant::now() - OutageLog::REPORT_EVERY);
        assert!(matches!(
            log.failure(),
            Some(OutageLine::Lasting { failed: 10_002, .. })
        ));
        assert!(matches!(
            log.success(),
            Some(OutageLine::Ended { failed: 0, .. })
        ));
        assert_eq!(log.success(), None);
        assert_eq!(log.failure(), Some(OutageLine::Began), "a new outage");
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

//! Readiness, as opposed to liveness (`/health`): the datastore answers, Redis answers when it is
//! configured, every migration is applied, and the scheduler loop is passing. It is published through gRPC health — each part
//! under a name of its own ([`gateway::readiness::PARTS`]), and the whole server (the empty name
//! and every service) serving only while all parts are — which is what REST's `/readyz` reads.
//! It reports; it turns no traffic away.

use std::time::Duration;

use std::sync::Arc;

use gateway::readiness::{DATASTORE, MIGRATIONS, REDIS, SCHEDULER};
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    store::{self, Db},
    supervision::{self, Supervision},
};

/// How often the parts are checked, and how long one check may take.
const EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The checks and where their outcome is published.
pub struct Readiness {
    pub health: HealthReporter,
    /// Every gRPC service name, which follows the whole server's readiness.
    pub services: Vec<&'static str>,
    pub db: Db,
    pub redis: Option<redis::Client>,
    /// The background loops' heartbeats; a stalled scheduler is not ready.
    pub supervision: Arc<Supervision>,
}

impl Readiness {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut redis = None;
        let mut last: Option<Vec<&'static str>> = None;
        loop {
            let failing = self.failing(&mut redis).await;
            if last.as_ref() != Some(&failing) {
                self.publish(&failing).await;
                match failing.as_slice() {
                    [] if last.is_some() => info!("ready"),
                    [] => {}
                    parts => warn!(failing = ?parts, "not ready"),
                }
                last = Some(failing);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// The health names of the parts that fail now.
    async fn failing(
        &self,
        redis: &mut Option<redis::aio::MultiplexedConnection>,
    ) -> Vec<&'static str> {
        let mut failing = Vec::new();
        // One read answers both: the datastore is reachable, and nothing is left to apply.
        let status = tokio::time::timeout(CHECK_TIMEOUT, store::migration_status(&self.db)).await;
        match status {
            Ok(Ok(migrations)) if migrations.iter().all(|(_, applied)| *applied) => {}
            Ok(Ok(_)) => failing.push(MIGRATIONS),
            Ok(Err(_)) | Err(_) => failing.push(DATASTORE),
        }
        if let Some(client) = &self.redis
            && !redis_answers(client, redis).await
        {
            failing.push(REDIS);
        }
        if self.supervision.stalled(supervision::SCHEDULER) {
            failing.push(SCHEDULER);
        }
        failing
    }

    async fn publish(&self, failing: &[&'static str]) {
        let status = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let mut parts = vec![DATASTORE, MIGRATIONS, SCHEDULER];
        if self.redis.is_some() {
            parts.push(REDIS);
        }
        for part in parts {
            self.health
                .set_service_status(part, status(!failing.contains(&part)))
                .await;
        }
        for service in std::iter::once("").chain(self.services.iter().copied()) {
            self.health
                .set_service_status(service, status(failing.is_empty()))
                .await;
        }
    }
}

/// PING on a connection of its own, opened again after any failure.
async fn redis_answers(
    client: &redis::Client,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
) -> bool {
    let ping = async {
        let open = match connection {
            Some(open) => open,
            None => connection.insert(client.get_multiplexed_async_connection().await?),
        };
        redis::cmd("PING").query_async::<()>(open).await
    };
    let answered = matches!(tokio::time::timeout(CHECK_TIMEOUT, ping).await, Ok(Ok(())));
    if !answered {
        *connection = None;
    }
    answered
}

//! Redis outages: heartbeats fail closed with 503 while Redis is down, and after it comes back
//! empty, agents that kept beating are not swept offline.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, Options, spawn_on};

/// A private redis-server on a fixed port, so it can be killed and restarted.
pub(crate) fn start_redis(port: u16) -> Child {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (the suite needs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start on {port}");
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn heartbeats_fail_closed_while_redis_is_down_and_recover_without_an_offline_storm() {
    let port = free_port();
    let mut redis = start_redis(port);
    let mut backend = Backend::fresh().await;
    backend.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let app = spawn_on(
        backend,
        Options {
            liveness_ttl_seconds: 2,
            ..Options::default()
        },
    )
    .await;
    let (id, token) = app.registered_agent("steady", None).await;
    assert_eq!(
        app.heartbeat(&id, &token, json!({})).await.status,
        StatusCode::OK
    );

    redis.kill().unwrap();
    redis.wait().unwrap();
    let down = app
        .heartbeat(&id, &token, json!({"current_task": "during outage"}))
        .await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        down.body,
        json!({"error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable"})
    );
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "online",
        "nothing changed"
    );

    // Redis returns empty; the agent keeps beating every 300 ms for three TTLs.
    let mut redis = start_redis(port);
    let mut accepted = 0;
    for _ in 0..20 {
        if app.heartbeat(&id, &token, json!({})).await.status == StatusCode::OK {
            accepted += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(accepted >= 15, "beats accepted after recovery: {accepted}");
    let types = app.event_types(&id).await;
    assert!(
        !types.contains(&"WORKSPACE_OFFLINE".to_owned()),
        "{types:?}"
    );
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
        "online"
    );

    // Liveness works again: silence now does go offline.
    crate::helpers::eventually(15, || async {
        (app.admin_get(&format!("/workspaces/{id}")).await.body["status"] == "offline")
            .then_some(())
    })
    .await;
    redis.kill().unwrap();
    let _ = redis.wait();
}

/// A TCP forwarder in front of a real server that a test can cut (every connection dropped,
/// new ones refused) and restore: a datastore outage without stopping the shared server. It can
/// also cut itself once a number of bytes has gone towards the server, to land an outage in the
/// middle of a transaction.
pub(crate) struct Gate {
    pub(crate) port: u16,
    state: std::sync::Arc<std::sync::Mutex<(bool, tokio_util::sync::CancellationToken)>>,
    /// Bytes still allowed towards the server before the gate cuts itself; `u64::MAX`: unarmed.
    budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes forwarded towards the server so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Gate {
    pub(crate) async fn open(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new((
            true,
            tokio_util::sync::CancellationToken::new(),
        )));
        let budget = std::sync::Arc::new(AtomicU64::new(u64::MAX));
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let (shared, shared_budget, shared_sent) = (state.clone(), budget.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (open, cut) = shared.lock().unwrap().clone();
                if !open {
                    continue;
                }
                let (gate, budget, sent) =
                    (shared.clone(), shared_budget.clone(), shared_sent.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let towards_server = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let read = from_client.read(&mut buffer).await.unwrap_or(0);
                            if read == 0 {
                                return;
                            }
                            let left = budget.load(Ordering::SeqCst);
                            if left != u64::MAX {
                                if left < read as u64 {
                                    Gate::cut_shared(&gate);
                                    return;
                                }
                                budget.fetch_sub(read as u64, Ordering::SeqCst);
                            }
                            if to_server.write_all(&buffer[..read]).await.is_err() {
                                return;
                            }
                            sent.fetch_add(read as u64, Ordering::SeqCst);
                        }
                    };
                    tokio::select! {
                        () = towards_server => {}
                        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self {
            port,
            state,
            budget,
            sent,
        }
    }

    fn cut_shared(state: &std::sync::Mutex<(bool, tokio_util::sync::CancellationToken)>) {
        let mut state = state.lock().unwrap();
        state.0 = false;
        state.1.cancel();
        state.1 = tokio_util::sync::CancellationToken::new();
    }

    pub(crate) fn cut(&self) {
        Self::cut_shared(&self.state);
    }

    /// Cuts once `bytes` more have gone towards the server.
    pub(crate) fn cut_after(&self, bytes: u64) {
        self.budget
            .store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes forwarded towards the server so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn restore(&self) {
        self.budget
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        self.state.lock().unwrap().0 = true;
    }
}

/// A fresh Postgres database reached through a [`Gate`]: the configured test server, or the
/// machine's own (the suite's documented dependency).
pub(crate) async fn gated_postgres() -> (Backend, Gate) {
    let base = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut backend = Backend::fresh().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let direct = crate::helpers::create_postgres_database(&base, &suffix).await;
    let gate = Gate::open("127.0.0.1:5432".parse().unwrap()).await;
    backend.database_url =
        direct.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", gate.port), 1);
    (backend, gate)
}

#[tokio::test]
async fn a_database_outage_neither_flaps_agents_that_keep_beating_nor_waits_on_timeouts() {
    let (backend, gate) = gated_postgres().await;
    let app = std::sync::Arc::new(
        spawn_on(
            backend,
            Options {
                liveness_ttl_seconds: 3,
                ..Options::default()
            },
        )
        .await,
    );
    let mut agents = Vec::new();
    for n in 0..8 {
        agents.push(app.registered_agent(&format!("steady-{n}"), None).await);
    }
    let (silent, silent_token) = app.registered_agent("silent", None).await;
    assert_eq!(
        app.heartbeat(&silent, &silent_token, json!({}))
            .await
            .status,
        StatusCode::OK
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut beaters = Vec::new();
    for (id, token) in agents.clone() {
        let (app, stop, refused, accepted) =
            (app.clone(), stop.clone(), refused.clone(), accepted.clone());
        beaters.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let reply = app
                    .heartbeat(&id, &token, json!({"uptime_seconds": 1}))
                    .await;
                let counter = if reply.status == StatusCode::OK {
                    &accepted
                } else {
                    &refused
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Longer than the token cache's freshness (30 s): every token is revalidated while the
    // database cannot answer.
    gate.cut();
    let during = tokio::time::Instant::now();
    let unavailable = json!({"error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable"});
    let mut slowest = Duration::ZERO;
    while during.elapsed() < Duration::from_secs(34) {
        let asked = tokio::time::Instant::now();
        let reply = app.admin_get("/workspaces").await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            (reply.status, &reply.body),
            (StatusCode::SERVICE_UNAVAILABLE, &unavailable)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "requests fail fast during an outage, not after the pool timeout: {slowest:?}"
    );
    gate.restore();
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.cancel();
    for beater in beaters {
        beater.await.unwrap();
    }

    assert_eq!(
        refused.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "beats refused ({} accepted)",
        accepted.load(std::sync::atomic::Ordering::Relaxed)
    );
    for (id, _) in &agents {
        let types = app.event_types(id).await;
        assert!(
            !types.contains(&"WORKSPACE_OFFLINE".to_owned()),
            "{id}: {types:?}"
        );
        assert_eq!(
            app.admin_get(&format!("/workspaces/{id}")).await.body["status"],
            "online"
        );
    }
    // The agent that really went silent is still judged, once the database is back.
    crate::helpers::eventually(15, || async {
        (app.admin_get(&format!("/workspaces/{silent}")).await.body["status"] == "offline")
            .then_some(())
    })
    .await;
}

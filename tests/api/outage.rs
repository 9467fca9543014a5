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
fn start_redis(port: u16) -> Child {
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

fn free_port() -> u16 {
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

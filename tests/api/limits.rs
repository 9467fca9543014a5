//! What a client without a credential can make the server hold (docs/decisions.md D19), and the
//! listener's defences: connection caps, the header-read, idle and body-read timeouts.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::helpers::{Options, TestApp, spawn_app_with};
use molecule::config::ListenerArgs;

type Chunks = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type StreamedBody =
    StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// An h2c connection to the control plane's port, and the task driving it (it ends when the
/// server closes the connection).
async fn h2_connection(
    app: &TestApp,
) -> (
    hyper::client::conn::http2::SendRequest<StreamedBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(connection))
}

type Call = tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>;

/// A gRPC call to `path` from a client at `client` (an `X-Forwarded-For`, for a server that
/// trusts the test's loopback as its proxy) whose body stays open: the first message's 5-byte
/// header declaring `declared` bytes, then `sent` bytes of it. Returns the response future and
/// the body's sender.
async fn partial_message(
    sender: &mut hyper::client::conn::http2::SendRequest<StreamedBody>,
    path: &str,
    bearer: Option<&str>,
    client: Option<&str>,
    declared: u32,
    sent: usize,
) -> (Call, Chunks) {
    let (chunks, receiver) = mpsc::channel(4);
    let mut request = hyper::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    sender.ready().await.unwrap();
    let response = tokio::spawn(sender.send_request(request.body(body).unwrap()));
    let mut message = vec![0u8];
    message.extend_from_slice(&declared.to_be_bytes());
    message.resize(5 + sent, 7);
    chunks
        .send(Ok(Frame::data(Bytes::from(message))))
        .await
        .unwrap();
    (response, chunks)
}

const A2A_SEND: &str = "/molecule.v1.A2A/Send";
const REGISTER: &str = "/molecule.v1.Registry/Register";

/// The `grpc-status` of a response (in its headers for trailers-only answers, else its trailers).
async fn grpc_status(response: hyper::Response<hyper::body::Incoming>) -> Option<String> {
    if let Some(status) = response.headers().get("grpc-status") {
        return Some(status.to_str().unwrap().to_owned());
    }
    let collected = response.into_body().collect().await.ok()?;
    collected
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .map(|status| status.to_str().unwrap().to_owned())
}

const RESOURCE_EXHAUSTED: &str = "8";
const DEADLINE_EXCEEDED: &str = "4";
const OUT_OF_RANGE: &str = "11";

/// The `grpc-status` a call ended with, within `seconds`.
async fn ended_with(call: Call, seconds: u64) -> Option<String> {
    let answer = tokio::time::timeout(Duration::from_secs(seconds), call)
        .await
        .expect("the call ended in time")
        .unwrap()
        .unwrap();
    grpc_status(answer).await
}

/// Asserts a call was refused at once with RESOURCE_EXHAUSTED.
async fn assert_refused_at_once(call: Call) {
    assert_eq!(
        ended_with(call, 5).await.as_deref(),
        Some(RESOURCE_EXHAUSTED)
    );
}

/// A bearer-less `POST /registry/register` of a fresh external workspace, as the SDK sends it,
/// from `client`.
async fn sdk_register(app: &TestApp, client: &str) -> StatusCode {
    let id = app
        .create_workspace(json!({"name": "sdk", "external": true}))
        .await;
    let body = json!({"id": id, "url": "remote://no-inbound", "agent_card": {"name": "sdk", "skills": []}});
    app.raw(
        app.http
            .post(format!("{}/registry/register", app.rest))
            .header("x-forwarded-for", client)
            .json(&body),
    )
    .await
    .status
}

/// Audit N2: a gRPC message's declared length was charged when its header arrived and held for
/// the 30 s body timeout, so 6 connections of 14 header-only streams (2,554 bytes in 64 s) held
/// the whole 64 MiB, and every bearer-less register and console sign-in got 503.
#[tokio::test]
async fn a_header_only_flood_holds_nothing_and_registers_still_get_through() {
    let app = spawn_app_with(Options::default()).await;
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..6 {
        let (mut connection, _) = h2_connection(&app).await;
        for _ in 0..14 {
            held.push(partial_message(&mut connection, REGISTER, None, None, 1 << 20, 0).await);
        }
        connections.push(connection);
    }
    // The declarations reached the server, and each is only waiting for its bytes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held.iter().all(|(call, _)| !call.is_finished()));
    assert_eq!(sdk_register(&app, "127.0.0.1").await, StatusCode::OK);
    let signed_in = app
        .call(
            reqwest::Method::POST,
            "/console/session",
            None,
            Some(json!({"token": app.admin_token})),
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.text);
    // A declaration over what an unauthenticated call may send is refused at once.
    let (mut connection, _) = h2_connection(&app).await;
    let (call, _body) =
        partial_message(&mut connection, REGISTER, None, None, (1 << 20) + 1, 0).await;
    assert_refused_at_once(call).await;
}

/// Audit N2: each client address has its own share of the pre-auth budget, and a reserve keeps
/// room for small bodies, so neither one address nor many large bodies lock out a register.
#[tokio::test]
async fn each_address_has_its_share_and_small_bodies_a_reserve() {
    const KIB: usize = 1024;
    let app = spawn_app_with(Options {
        trusted_proxies: Some("127.0.0.1"),
        listener: ListenerArgs {
            preauth_buffer_bytes: 2048 * KIB,
            preauth_address_bytes: 512 * KIB,
            preauth_connection_bytes: 512 * KIB,
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    let mut connections = Vec::new();
    // Three addresses fill most of their shares: 4 × 120 KiB each.
    for client in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        let (mut connection, _) = h2_connection(&app).await;
        for _ in 0..4 {
            held.push(
                partial_message(
                    &mut connection,
                    REGISTER,
                    None,
                    Some(client),
                    1 << 20,
                    120 * KIB,
                )
                .await,
            );
        }
        connections.push(connection);
    }
    // A fourth address takes 360 KiB more: 1,800 of the 1,920 KiB that large bodies may hold.
    let (mut fourth, _) = h2_connection(&app).await;
    for _ in 0..3 {
        held.push(
            partial_message(
                &mut fourth,
                REGISTER,
                None,
                Some("10.0.0.4"),
                1 << 20,
                120 * KIB,
            )
            .await,
        );
    }
    // Every one of them is held, waiting for the rest of its message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held.iter().all(|(call, _)| !call.is_finished()));
    // Once the server holds it all, a fifth address's large body no longer fits...
    crate::helpers::eventually(5, || async {
        let (mut connection, _) = h2_connection(&app).await;
        let (call, _body) = partial_message(
            &mut connection,
            REGISTER,
            None,
            Some("10.0.0.5"),
            1 << 20,
            200 * KIB,
        )
        .await;
        let status = tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .ok()?;
        Some(grpc_status(status.unwrap().unwrap()).await)
            .filter(|status| status.as_deref() == Some(RESOURCE_EXHAUSTED))
    })
    .await;
    // ...an address over its share is refused...
    let (mut connection, _) = h2_connection(&app).await;
    let (call, _body) = partial_message(
        &mut connection,
        REGISTER,
        None,
        Some("10.0.0.1"),
        1 << 20,
        40 * KIB,
    )
    .await;
    assert_refused_at_once(call).await;
    // ...and a register from anywhere else gets through, in the reserve.
    assert_eq!(sdk_register(&app, "10.0.0.9").await, StatusCode::OK);
    drop((held, connections, fourth));
}

/// Audit N3: with any workspace token, one connection made the server hold 100 messages of
/// 10 MiB (RSS 63 → 1,145 MB) with no body deadline. A credential's unfinished messages now hold
/// at most its share, a message that stalls ends, and each service decodes only what its calls
/// need.
#[tokio::test]
async fn a_credential_holds_at_most_its_share_and_a_stalled_message_ends() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            credential_inflight_bytes: 32 << 20,
            body_read_timeout: Duration::from_secs(2),
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (_, token) = app.registered_agent("sender", None).await;
    let (mut connection, _) = h2_connection(&app).await;
    let mut calls = Vec::new();
    for _ in 0..10 {
        calls.push(
            partial_message(
                &mut connection,
                A2A_SEND,
                Some(&token),
                None,
                10 << 20,
                64 * 1024,
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut held = Vec::new();
    for (call, body) in calls {
        if call.is_finished() {
            assert_eq!(
                ended_with(call, 1).await.as_deref(),
                Some(RESOURCE_EXHAUSTED)
            );
        } else {
            held.push((call, body));
        }
    }
    assert_eq!(
        held.len(),
        3,
        "3 × 10 MiB fit a 32 MiB share; 7 were refused"
    );
    // Another credential has its own share.
    let (admin_call, _admin_body) = partial_message(
        &mut connection,
        A2A_SEND,
        Some(&app.admin_token),
        None,
        10 << 20,
        0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!admin_call.is_finished());
    // Silence ends the held messages, and the share is free again.
    let stalled = std::time::Instant::now();
    for (call, _body) in held {
        assert_eq!(
            ended_with(call, 10).await.as_deref(),
            Some(DEADLINE_EXCEEDED)
        );
    }
    assert!(stalled.elapsed() < Duration::from_secs(5));
    let (again, _again_body) =
        partial_message(&mut connection, A2A_SEND, Some(&token), None, 10 << 20, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!again.is_finished(), "the share came back");
    // The other services take what a REST body may be, not an A2A message.
    let (listing, _listing_body) = partial_message(
        &mut connection,
        "/molecule.v1.Workspaces/ListWorkspaces",
        Some(&app.admin_token),
        None,
        2 << 20,
        0,
    )
    .await;
    assert_eq!(ended_with(listing, 5).await.as_deref(), Some(OUT_OF_RANGE));
}

/// Audit N4: an h2 connection holding one gRPC call that sent only its HEADERS was never
/// closed (20 of 20 open after 600 s). The first message is due as a request head is, and the
/// connection, idle once the call ended, is closed.
#[tokio::test]
async fn a_call_that_never_sends_its_first_message_ends_and_its_connection_closes() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    for bearer in [None, Some(app.admin_token.as_str())] {
        let (mut sender, connection) = h2_connection(&app).await;
        let (chunks, receiver) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let mut request = hyper::Request::post(format!("http://localhost{REGISTER}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        sender.ready().await.unwrap();
        let opened = std::time::Instant::now();
        let call = tokio::spawn(sender.send_request(request.body(body).unwrap()));
        assert_eq!(
            ended_with(call, 5).await.as_deref(),
            Some(DEADLINE_EXCEEDED)
        );
        assert!(opened.elapsed() < Duration::from_secs(3), "{bearer:?}");
        tokio::time::timeout(Duration::from_secs(6), connection)
            .await
            .expect("the idle connection was closed")
            .ok();
        drop(chunks);
    }
}

#[tokio::test]
async fn unauthenticated_rest_bodies_are_bounded_before_they_are_read() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            preauth_connection_bytes: 64 * 1024,
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let big = json!({"id": uuid::Uuid::new_v4().to_string(), "url": "remote://no-inbound", "agent_card": {"pad": "x".repeat(200_000)}});
    let refused = app
        .call(
            reqwest::Method::POST,
            "/registry/register",
            None,
            Some(big.clone()),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(
        refused.body,
        json!({"error": "server busy — retry shortly", "retry_after": 1})
    );
    assert_eq!(refused.headers["retry-after"], "1");
    // With the admin token the same body is read and judged on its merits.
    let admin = app
        .call(
            reqwest::Method::POST,
            "/registry/register",
            Some(&app.admin_token.clone()),
            Some(big),
        )
        .await;
    assert_eq!(admin.status, StatusCode::NOT_FOUND, "{}", admin.text);
}

#[tokio::test]
async fn a_rest_body_must_arrive_within_the_body_read_timeout() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            body_read_timeout: Duration::from_secs(1),
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let mut tcp = TcpStream::connect(app.rest.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(
        b"POST /registry/heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"workspace",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            if answer.contains("timeout\"}") {
                break;
            }
        }
    })
    .await
    .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with(r#"{"error":"request body timeout"}"#),
        "{answer}"
    );
}

/// Reads until the server closes the connection; how long that took.
async fn closed_after(tcp: &mut TcpStream, within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await
    .expect("the server closed the connection");
    started.elapsed()
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let address = app.rest.trim_start_matches("http://").to_owned();
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    closed_after(&mut slow, Duration::from_secs(5)).await;
    // Connected and silent.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    closed_after(&mut silent, Duration::from_secs(5)).await;
    // Idle after a complete request: kept for the idle timeout, then closed.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let waited = closed_after(&mut idle, Duration::from_secs(6)).await;
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, not by the header timeout"
    );
    // A gRPC stream in flight is not idle: a heartbeat stream outlives the idle timeout.
    let (id, token) = app.registered_agent("streamer", None).await;
    let mut stream = crate::heartbeat_stream::open(&app, &id, &token)
        .await
        .unwrap();
    stream.beat(1, Default::default()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stream.beat(2, Default::default()).await.sequence, 2);
}

/// Opens connections that each complete one request, until one is refused (closed unanswered).
/// Returns those held and the attempt that was refused.
async fn hold_until_refused(address: &str, attempts: usize) -> (Vec<TcpStream>, Option<usize>) {
    let mut held = Vec::new();
    for attempt in 0..attempts {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let _ = tcp
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 1024];
        match tcp.read(&mut buf).await {
            Ok(n) if n > 0 => held.push(tcp),
            _ => return (held, Some(attempt)),
        }
    }
    (held, None)
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_in_total() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            max_connections_per_ip: 3,
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let address = app.rest.trim_start_matches("http://").to_owned();
    // The harness's own gRPC channel may hold one of the places already.
    let (mut held, refused_at) = hold_until_refused(&address, 5).await;
    assert!(
        refused_at.is_some_and(|at| (2..=3).contains(&at)),
        "{refused_at:?}"
    );
    held.pop();
    crate::helpers::eventually(5, || async {
        let reply = app
            .http
            .get(format!("{}/health", app.rest))
            .send()
            .await
            .ok()?;
        (reply.status() == StatusCode::OK).then_some(())
    })
    .await;

    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            max_connections: 2,
            max_connections_per_ip: 0,
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let address = app.rest.trim_start_matches("http://").to_owned();
    let (_held, refused_at) = hold_until_refused(&address, 4).await;
    assert!(
        refused_at.is_some_and(|at| (1..=2).contains(&at)),
        "{refused_at:?}"
    );
}

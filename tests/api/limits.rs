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

/// An h2c connection to the control plane's port.
async fn h2_connection(app: &TestApp) -> hyper::client::conn::http2::SendRequest<StreamedBody> {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// Starts an `A2A/Send` call whose first message declares `declared` bytes and sends only its
/// 5-byte header; the body stays open. Returns the response future and the body's sender.
async fn declare_message(
    sender: &mut hyper::client::conn::http2::SendRequest<StreamedBody>,
    bearer: Option<&str>,
    declared: u32,
) -> (
    tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
    Chunks,
) {
    let (chunks, receiver) = mpsc::channel(4);
    let mut request = hyper::Request::post("http://localhost/molecule.v1.A2A/Send")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    sender.ready().await.unwrap();
    let response = tokio::spawn(sender.send_request(request.body(body).unwrap()));
    let mut header = vec![0u8];
    header.extend_from_slice(&declared.to_be_bytes());
    chunks
        .send(Ok(Frame::data(Bytes::from(header))))
        .await
        .unwrap();
    (response, chunks)
}

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

/// Asserts a call was refused at once with RESOURCE_EXHAUSTED.
async fn assert_refused_at_once(
    call: tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) {
    let refused = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("refused promptly")
        .unwrap()
        .unwrap();
    assert_eq!(
        grpc_status(refused).await.as_deref(),
        Some(RESOURCE_EXHAUSTED)
    );
}

#[tokio::test]
async fn unauthenticated_grpc_messages_are_charged_their_declared_length_per_connection() {
    let app = spawn_app_with(Options::default()).await;
    let mut connection = h2_connection(&app).await;
    // The first 10 MiB declaration fits the connection's 11 MiB; the second does not, and is
    // refused at once, before any of its data was sent.
    let (first, _first_body) = declare_message(&mut connection, None, 10 << 20).await;
    let (second, _second_body) = declare_message(&mut connection, None, 10 << 20).await;
    assert_refused_at_once(second).await;
    assert!(
        !first.is_finished(),
        "the first call still waits for its data"
    );

    // A recognised credential is not charged: its call reads its whole message.
    let (call, body) = declare_message(&mut connection, Some(&app.admin_token), 1 << 20).await;
    body.send(Ok(Frame::data(Bytes::from(vec![0u8; 1 << 20]))))
        .await
        .unwrap();
    drop(body);
    let answered = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("answered")
        .unwrap()
        .unwrap();
    assert_ne!(
        grpc_status(answered).await.as_deref(),
        Some(RESOURCE_EXHAUSTED),
        "an admin's message is decoded (and rejected only as a malformed request)"
    );
}

#[tokio::test]
async fn unauthenticated_bytes_are_bounded_in_total_across_connections() {
    let app = spawn_app_with(Options {
        listener: ListenerArgs {
            preauth_buffer_bytes: 16 * 1024 * 1024,
            ..ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let mut one = h2_connection(&app).await;
    let mut two = h2_connection(&app).await;
    let (mut first, first_body) = declare_message(&mut one, None, 10 << 20).await;
    let (mut second, second_body) = declare_message(&mut two, None, 10 << 20).await;
    // The two declarations race to the server: whichever it charges second is refused at once,
    // while the other is held.
    let (refused, held, held_body) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            answer = &mut first => (answer, second, second_body),
            answer = &mut second => (answer, first, first_body),
        }
    })
    .await
    .expect("one of the two refused promptly");
    assert_eq!(
        grpc_status(refused.unwrap().unwrap()).await.as_deref(),
        Some(RESOURCE_EXHAUSTED)
    );
    assert!(!held.is_finished(), "the call within the budget is held");
    drop(held);
    drop(held_body);
    // The first call's charge is returned when it ends: the budget serves new calls again.
    crate::helpers::eventually(5, || async {
        let mut three = h2_connection(&app).await;
        let (call, _body) = declare_message(&mut three, None, 10 << 20).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (!call.is_finished()).then_some(())
    })
    .await;
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

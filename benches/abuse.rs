//! What a client without a credential can make one server hold: the attacks of the hardening
//! audit, replayed against a `molecule serve` binary on the embedded default, with the
//! server's resident memory read before and during each. Run through `bench/abuse.sh`, which
//! builds the release binary; `--server` points it at another build to compare.

use std::{
    convert::Infallible,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

mod common;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The `molecule` binary to attack.
    #[arg(long, default_value = "target/release/molecule")]
    server: String,
    #[command(flatten)]
    cpus: common::Cpus,
    /// h2 connections of the flood attacks.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Streams per connection.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Bytes each gRPC stream declares for its message.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    declared: u32,
    /// Bytes each stream actually sends before holding its body open.
    #[arg(long, default_value_t = 256 * 1024)]
    sent: usize,
    /// Idle TCP connections opened at once.
    #[arg(long, default_value_t = 15_000)]
    idle: usize,
    /// Which audit's attacks to replay: 2 (floods, idle connections, slowloris), 3 (the
    /// pre-auth fill, a credential's unfinished messages, header-only calls, metrics labels),
    /// or both.
    #[arg(long, default_value = "all")]
    round: String,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

type Chunks = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type Streamed =
    StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(cpus: &common::Cpus, binary: &str) -> Self {
        Self::start_with(cpus, binary, &[]).await
    }

    /// A server with these extra environment variables.
    async fn start_with(cpus: &common::Cpus, binary: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir =
            std::env::temp_dir().join(format!("molecule-abuse-{}", uuid::Uuid::new_v4().simple()));
        let child = cpus
            .server_command(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MOLECULE_DATA_DIR", &data_dir)
            .env("ADMIN_TOKEN", "a".repeat(43))
            .env("RATE_LIMIT", "1000000000")
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("the molecule binary starts");
        let server = Self { child, port };
        for _ in 0..200 {
            if server.health().await.is_some() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not come up");
    }

    /// Resident memory in MiB.
    fn rss_mib(&self) -> f64 {
        common::rss_kib(self.child.id()) as f64 / 1024.0
    }

    /// `/health` from a fresh connection of another client (127.0.0.2, not the attacker's
    /// address): its latency, or `None` within 3 s.
    async fn health(&self) -> Option<Duration> {
        let started = Instant::now();
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind("127.0.0.2:0".parse().ok()?).ok()?;
            let mut tcp = socket
                .connect(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
                .await
                .ok()?;
            tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await.ok()?;
            answer.starts_with(b"HTTP/1.1 200").then_some(())
        };
        tokio::time::timeout(Duration::from_secs(3), attempt)
            .await
            .ok()
            .flatten()
            .map(|()| started.elapsed())
    }

    async fn h2(&self) -> hyper::client::conn::http2::SendRequest<Streamed> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
    }
}

/// Opens `streams` calls on each of `connections` h2 connections, each sending `prefix` then
/// `sent` bytes and holding its body open. Returns the open bodies (dropping them ends the
/// calls) and how many calls the server already answered.
async fn flood(
    server: &Server,
    args: &Args,
    path: &str,
    content_type: &str,
    prefix: Vec<u8>,
) -> (Vec<Chunks>, usize) {
    let (held, answers) = flood_as(server, args, path, content_type, prefix, None).await;
    let answered = answers.iter().filter(|answer| answer.is_finished()).count();
    (held, answered)
}

type Answer = tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>;

/// [`flood`] with an optional bearer; returns the calls' answers too.
async fn flood_as(
    server: &Server,
    args: &Args,
    path: &str,
    content_type: &str,
    prefix: Vec<u8>,
    bearer: Option<&str>,
) -> (Vec<Chunks>, Vec<Answer>) {
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..args.connections {
        let mut sender = server.h2().await;
        for _ in 0..args.streams {
            let (chunks, receiver) = mpsc::channel(4);
            let mut request = hyper::Request::post(format!("http://localhost{path}"))
                .header("content-type", content_type)
                .header("te", "trailers");
            if let Some(bearer) = bearer {
                request = request.header("authorization", format!("Bearer {bearer}"));
            }
            let request = request
                .body(StreamBody::new(
                    tokio_stream::wrappers::ReceiverStream::new(receiver),
                ))
                .unwrap();
            if sender.ready().await.is_err() {
                break;
            }
            answers.push(tokio::spawn(sender.send_request(request)));
            let mut first = prefix.clone();
            first.resize(prefix.len() + args.sent, b' ');
            let sending = chunks.clone();
            tokio::spawn(async move {
                for part in first.chunks(16 * 1024) {
                    if sending
                        .send(Ok(Frame::data(Bytes::copy_from_slice(part))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            held.push(chunks);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    (held, answers)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    args.cpus.pin_client();
    let server = Server::start(&args.cpus, &args.server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_mib();
    println!("server: {} ({})", args.server, args.cpus.describe());
    println!("idle RSS: {idle_rss:.1} MiB");
    if args.round != "3" {
        second_round(&args, &server, idle_rss).await;
    }
    drop(server);
    if args.round != "2" {
        third_round(&args).await;
    }
}

/// The second audit's attacks, on one server.
async fn second_round(args: &Args, server: &Server, idle_rss: f64) {
    // 1. gRPC: unauthenticated A2A/Send calls declaring large messages.
    let mut header = vec![0u8];
    header.extend_from_slice(&args.declared.to_be_bytes());
    let (held, answered) = flood(
        server,
        args,
        "/molecule.v1.A2A/Send",
        "application/grpc",
        header,
    )
    .await;
    let rss = server.rss_mib();
    println!(
        "grpc flood ({}×{} calls declaring {} MiB, {} KiB sent each): RSS {rss:.1} MiB ({:.1}× idle), {answered} refused at once, /health {:?}",
        args.connections,
        args.streams,
        args.declared >> 20,
        args.sent >> 10,
        rss / idle_rss,
        server.health().await
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. REST over h2c: unauthenticated bodies of up to 1 MiB.
    let (held, answered) = flood(
        server,
        &Args {
            sent: 1024 * 1024 - 64,
            ..args.clone()
        },
        "/registry/register",
        "application/json",
        br#"{"id":"x","pad":""#.to_vec(),
    )
    .await;
    let rss = server.rss_mib();
    println!(
        "rest flood ({}×{} unauthenticated bodies): RSS {rss:.1} MiB ({:.1}× idle), {answered} refused at once, /health {:?}",
        args.connections,
        args.streams,
        rss / idle_rss,
        server.health().await
    );
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. Idle connections: as many as asked, then /health from a new one.
    let mut idle = Vec::new();
    for _ in 0..args.idle {
        match TcpStream::connect(("127.0.0.1", server.port)).await {
            Ok(tcp) => idle.push(tcp),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_now = still_open(&mut idle).await;
    println!(
        "idle flood ({} connections opened): {open_now} held by the server, RSS {:.1} MiB, /health {:?}",
        idle.len(),
        server.rss_mib(),
        server.health().await
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    println!(
        "  after 12 s: {} still held, /health {:?}",
        still_open(&mut idle).await,
        server.health().await
    );
    drop(idle);

    // 4. Slowloris: heads that never end, one byte every 2 s.
    let mut slow = Vec::new();
    for _ in 0..1000 {
        if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", server.port)).await {
            let _ = tcp.write_all(b"GET /health HTTP/1.1\r\nx-a: ").await;
            slow.push(tcp);
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        for tcp in &mut slow {
            let _ = tcp.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "slowloris ({} connections, a byte every 2 s for 15 s): {} still held, /health {:?}",
        slow.len(),
        still_open(&mut slow).await,
        server.health().await
    );
}

/// The third audit's attacks, each on a fresh server so its figures are its own.
async fn third_round(args: &Args) {
    preauth_fill(args).await;
    unfinished_messages(args).await;
    header_only_calls(args).await;
    metrics_labels(args).await;
}

const REGISTER: &str = "/molecule.v1.Registry/Register";
const ADMIN: &str = "Bearer aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A REST client that speaks from 127.0.0.2: another client than the attacker's.
fn victim() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An external workspace registered once, as the SDK does: its id, the register's status and
/// its token.
async fn sdk_register(server: &Server, client: &reqwest::Client) -> (u16, Option<String>) {
    let base = format!("http://127.0.0.1:{}", server.port);
    let created: serde_json::Value = client
        .post(format!("{base}/workspaces"))
        .header("authorization", ADMIN)
        .json(&serde_json::json!({"name": "sdk", "external": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let register = client
        .post(format!("{base}/registry/register"))
        .json(&serde_json::json!({"id": created["id"], "url": "remote://no-inbound", "agent_card": {"name": "sdk", "skills": []}}))
        .send()
        .await;
    match register {
        Ok(reply) => {
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            (status, body["auth_token"].as_str().map(str::to_owned))
        }
        Err(_) => (0, None),
    }
}

/// N2: 8 connections of 10 calls that send only a message header declaring 1 MiB less its
/// header (so 64 of them are exactly the default 64 MiB when charged as declared, within each
/// connection's former 11 MiB); then bearer-less registers and console sign-ins from another
/// client.
async fn preauth_fill(args: &Args) {
    let server = Server::start(&args.cpus, &args.server).await;
    let mut header = vec![0u8];
    header.extend_from_slice(&((1u32 << 20) - 5).to_be_bytes());
    let fill = Args {
        connections: 8,
        streams: 10,
        sent: 0,
        ..args.clone()
    };
    let (held, _) = flood(&server, &fill, REGISTER, "application/grpc", header).await;
    let client = victim();
    let mut refused = 0;
    for _ in 0..50 {
        if sdk_register(&server, &client).await.0 != 200 {
            refused += 1;
        }
    }
    let mut sign_ins_refused = 0;
    for _ in 0..20 {
        let signed_in = client
            .post(format!("http://127.0.0.1:{}/console/session", server.port))
            .json(&serde_json::json!({"token": &ADMIN["Bearer ".len()..]}))
            .send()
            .await
            .map(|reply| reply.status().as_u16());
        if signed_in.ok() != Some(201) {
            sign_ins_refused += 1;
        }
    }
    println!(
        "pre-auth fill (8×10 header-only calls declaring 1 MiB, 400 bytes sent in all): {refused}/50 registers and {sign_ins_refused}/20 sign-ins refused during it"
    );
    drop(held);
}

/// N3: one connection of 100 A2A calls, with a workspace token, each declaring 10 MiB and
/// sending all but 1 KiB of it; the server's memory, what was refused at once, and what is
/// still held after the body timeout (10 s here).
async fn unfinished_messages(args: &Args) {
    let server = Server::start_with(
        &args.cpus,
        &args.server,
        &[("MOLECULE_BODY_READ_TIMEOUT", "10s")],
    )
    .await;
    let idle = server.rss_mib();
    let (_, token) = sdk_register(&server, &victim()).await;
    let token = token.expect("a registered agent's token");
    let mut header = vec![0u8];
    header.extend_from_slice(&(10u32 << 20).to_be_bytes());
    let attack = Args {
        connections: 1,
        streams: 100,
        sent: (10 << 20) - 1024,
        ..args.clone()
    };
    let (held, answers) = flood_as(
        &server,
        &attack,
        "/molecule.v1.A2A/Send",
        "application/grpc",
        header,
        Some(&token),
    )
    .await;
    let refused = answers.iter().filter(|answer| answer.is_finished()).count();
    // The peak while the sends arrive (they take seconds through one connection's window).
    let mut peak = server.rss_mib();
    for _ in 0..54 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(server.rss_mib());
    }
    let still_held = answers
        .iter()
        .filter(|answer| !answer.is_finished())
        .count();
    println!(
        "a credential's unfinished messages (100 A2A calls declaring 10 MiB, 10 MiB − 1 KiB sent each): RSS {idle:.1} → peak {peak:.1} MiB, {refused} refused at once, {still_held} still held 30 s later (body timeout 10 s)"
    );
    drop(held);
}

/// N4: at MOLECULE_MAX_CONNECTIONS=1000, 1,000 h2 connections that each open one gRPC call
/// and send only its HEADERS; how many the server still holds, and /health, over time (idle
/// timeout 10 s here).
async fn header_only_calls(args: &Args) {
    let server = Server::start_with(
        &args.cpus,
        &args.server,
        &[
            ("MOLECULE_MAX_CONNECTIONS", "1000"),
            ("MOLECULE_IDLE_TIMEOUT", "10s"),
        ],
    )
    .await;
    let mut senders = Vec::new();
    let mut bodies = Vec::new();
    // Dropping a response future would reset its stream: they are kept.
    let mut calls = Vec::new();
    for _ in 0..1000 {
        let Ok(tcp) = TcpStream::connect(("127.0.0.1", server.port)).await else {
            break;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        let (chunks, receiver) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let request = hyper::Request::post(format!("http://localhost{REGISTER}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
            ))
            .unwrap();
        if sender.ready().await.is_ok() {
            calls.push(tokio::spawn(sender.send_request(request)));
        }
        senders.push(sender);
        bodies.push(chunks);
    }
    let open = |senders: &[hyper::client::conn::http2::SendRequest<Streamed>]| {
        senders.iter().filter(|sender| !sender.is_closed()).count()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "header-only calls ({} connections at a 1,000 cap, idle timeout 10 s): after 2 s {} held, /health {:?}",
        senders.len(),
        open(&senders),
        server.health().await
    );
    tokio::time::sleep(Duration::from_secs(28)).await;
    println!(
        "  after 30 s: {} held, /health {:?}",
        open(&senders),
        server.health().await
    );
    drop((bodies, calls));
}

/// N8: 10,000 requests to made-up gRPC paths and 10,000 with made-up HTTP methods, from a
/// client without a credential; the size of `/metrics` before and after.
async fn metrics_labels(args: &Args) {
    let server = Server::start(&args.cpus, &args.server).await;
    let client = victim();
    let base = format!("http://127.0.0.1:{}", server.port);
    let size = || async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len()
    };
    let before = size().await;
    for n in 0..10_000 {
        let _ = client
            .get(format!("{base}/molecule.v1.Probe{n}/Call"))
            .send()
            .await;
        let method = reqwest::Method::from_bytes(format!("M{n}").as_bytes()).unwrap();
        let _ = client
            .request(method, format!("{base}/health"))
            .send()
            .await;
    }
    let after = size().await;
    println!(
        "metrics labels (10,000 made-up gRPC paths, 10,000 made-up methods): /metrics {:.1} KiB → {:.1} KiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

/// How many of these connections the server has not closed.
async fn still_open(connections: &mut [TcpStream]) -> usize {
    let mut buffer = [0u8; 256];
    connections
        .iter()
        .filter(|tcp| match tcp.try_read(&mut buffer) {
            Ok(0) => false,
            Ok(_) => true,
            Err(err) => err.kind() == std::io::ErrorKind::WouldBlock,
        })
        .count()
}

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
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..args.connections {
        let mut sender = server.h2().await;
        for _ in 0..args.streams {
            let (chunks, receiver) = mpsc::channel(4);
            let request = hyper::Request::post(format!("http://localhost{path}"))
                .header("content-type", content_type)
                .header("te", "trailers")
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
    let answered = answers.iter().filter(|answer| answer.is_finished()).count();
    (held, answered)
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

    // 1. gRPC: unauthenticated A2A/Send calls declaring large messages.
    let mut header = vec![0u8];
    header.extend_from_slice(&args.declared.to_be_bytes());
    let (held, answered) = flood(
        &server,
        &args,
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
        &server,
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

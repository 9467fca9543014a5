//! A2A proxy load generator. Starts a fast echo agent (in this process), nginx in front of it
//! (`proxy_pass` with upstream keepalive), and `molecule serve` (the release binary) on Postgres
//! and Redis with the agent registered; then measures in one run, with the caller-token and
//! hierarchy checks on: requests/s through the proxy vs through nginx, the latency each adds
//! over a direct call, and SSE time-to-first-event through the proxy vs direct (the agent
//! emits its first event at 10 ms and its last at 5 s), checking the events are identical.
//!
//! Run it with `bench/a2a.sh` (which installs nginx if needed and builds the release binary).

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::post};
use clap::Parser;
use common::{Latencies, Services, cpu_seconds_between, cpu_ticks, median};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    services: Services,
    #[arg(long, default_value = "nginx")]
    nginx: String,
    /// Concurrent connections in the throughput phases.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per throughput phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of (direct, nginx, proxy); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Streamed calls per target in the SSE phase (each lasts ~5 s); medians are reported,
    /// since a 10 ms timer on either side moves one sample by up to a millisecond.
    #[arg(long, default_value_t = 7)]
    sse_runs: usize,
    /// Sequential requests per target in the latency phase.
    #[arg(long, default_value_t = 2000)]
    latency_requests: usize,
    /// The proxy's port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// nginx's port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    nginx_port: u16,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The SSE answer: the first event after 10 ms, then one every 499 ms, the last at ~5 s.
const SSE_EVENTS: usize = 11;

fn sse_event(index: usize) -> String {
    let last = index + 1 == SSE_EVENTS;
    format!(
        "data: {}\n\n",
        json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "status-update", "taskId": "t", "status": {"state": if last { "completed" } else { "working" }}, "final": last, "index": index}})
    )
}

/// The echo agent: `/` answers with the request body; `/sse` streams `SSE_EVENTS` events.
async fn start_agent() -> String {
    let app = Router::new()
        .route(
            "/",
            post(|body: axum::body::Bytes| async move {
                ([("content-type", "application/json")], body)
            }),
        )
        .route(
            "/sse",
            post(|| async {
                let events = futures_util::stream::unfold(0usize, |index| async move {
                    if index == SSE_EVENTS {
                        return None;
                    }
                    let delay = if index == 0 { 10 } else { 499 };
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Some((Ok::<_, std::io::Error>(sse_event(index)), index + 1))
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(events),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// nginx in the foreground with a config of its own; killed when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM, so the master takes its workers down (SIGKILL would orphan them, still bound).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

async fn start_nginx(cpus: &common::Cpus, binary: &str, port: u16, agent: &str) -> Nginx {
    let dir =
        std::env::temp_dir().join(format!("molecule-nginx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let upstream = agent.trim_start_matches("http://");
    let config = format!(
        "worker_processes auto;\n\
         error_log {dir}/logs/error.log warn;\n\
         pid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           upstream agent {{ server {upstream}; keepalive 128; }}\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location / {{\n\
               proxy_pass http://agent;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
               proxy_buffering off;\n\
             }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let child = cpus
        .server_command(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx starts (bench/a2a.sh installs it)");
    let nginx = Nginx(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not come up");
}

/// Where a request goes and what it carries.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
}

fn request(
    client: &reqwest::Client,
    target: &Target,
    body: &'static str,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(&target.url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in &target.headers {
        request = request.header(*name, value);
    }
    request
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":"1","method":"message/send","params":{"message":{"role":"user","messageId":"m-1","parts":[{"kind":"text","text":"ping"}]}}}"#;

/// Completed requests per second over `seconds` with `connections` concurrent clients.
async fn throughput(target: &Target, connections: usize, seconds: u64) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..connections).map(|_| {
        let (client, target) = (client.clone(), target.clone());
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = request(&client, &target, BODY).send().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{}: {}",
                    target.name,
                    response.status()
                );
                response.bytes().await.unwrap();
                done += 1;
            }
            done
        })
    });
    let total: u64 = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    total as f64 / seconds as f64
}

/// A throughput phase against `target`, with the CPU time per call of the processes that
/// `serving` picks (the proxy, or nginx's master and workers), in microseconds.
async fn with_cpu(
    serving: &impl Fn(u32, &str) -> bool,
    args: &Args,
    target: &Target,
) -> (f64, f64) {
    let before = cpu_ticks(serving);
    let rps = throughput(target, args.connections, args.seconds).await;
    let used = cpu_seconds_between(&before, &cpu_ticks(serving));
    (rps, used * 1e6 / (rps * args.seconds as f64).max(1.0))
}

/// Sequential latencies of one connection.
async fn latencies(target: &Target, count: usize) -> Latencies {
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = request(&client, target, BODY).send().await.unwrap();
        response.bytes().await.unwrap();
        samples.push(started.elapsed().as_micros() as u32);
    }
    Latencies(samples)
}

/// Time to the first SSE event, and every byte of the stream.
async fn first_event(target: &Target) -> (Duration, Vec<u8>) {
    let client = reqwest::Client::new();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"message/stream","params":{"message":{"role":"user","messageId":"s-1","parts":[{"kind":"text","text":"go"}]}}}"#;
    let started = Instant::now();
    let response = request(&client, target, body).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{}",
        target.name
    );
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        first.get_or_insert_with(|| started.elapsed());
        bytes.extend_from_slice(&chunk.unwrap());
    }
    (first.unwrap(), bytes)
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    for port in [&mut args.port, &mut args.nginx_port] {
        if *port == 0 {
            *port = free_port();
        }
    }
    let (database, server, admin_token) = args.services.start(args.port).await;
    let agent = start_agent().await;
    let nginx = start_nginx(&args.services.cpus, &args.nginx, args.nginx_port, &agent).await;
    let http = reqwest::Client::new();
    // Caller and target are sibling children of one root: the hierarchy check runs.
    let (root, _) = server
        .register_agent(&http, &admin_token, "root", None, "remote://no-inbound")
        .await;
    let (caller, caller_token) = server
        .register_agent(
            &http,
            &admin_token,
            "caller",
            Some(&root),
            "remote://no-inbound",
        )
        .await;
    let (echo, _) = server
        .register_agent(
            &http,
            &admin_token,
            "echo",
            Some(&root),
            &format!("{agent}/"),
        )
        .await;
    let (streamer, _) = server
        .register_agent(
            &http,
            &admin_token,
            "streamer",
            Some(&root),
            &format!("{agent}/sse"),
        )
        .await;
    let proxied = |target: &str| Target {
        name: "proxy",
        url: format!("{}/workspaces/{target}/a2a", server.base),
        headers: vec![
            ("x-workspace-id", caller.clone()),
            ("authorization", format!("Bearer {caller_token}")),
        ],
    };
    let direct = Target {
        name: "direct",
        url: format!("{agent}/"),
        headers: Vec::new(),
    };
    let via_nginx = Target {
        name: "nginx",
        url: format!("http://127.0.0.1:{}/", args.nginx_port),
        headers: Vec::new(),
    };
    let via_proxy = proxied(&echo);
    // Warm every path (pools, caches) before measuring.
    for target in [&direct, &via_nginx, &via_proxy] {
        latencies(target, 50).await;
    }

    let server_pid = server.child.id();
    let server_process = move |pid: u32, _: &str| pid == server_pid;
    let nginx_processes = |_: u32, comm: &str| comm == "nginx";
    let mut ratios = Vec::new();
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        println!("round {round}: throughput");
        let direct_rps = throughput(&direct, args.connections, args.seconds).await;
        let (nginx_rps, nginx_cpu) = with_cpu(&nginx_processes, &args, &via_nginx).await;
        let (proxy_rps, proxy_cpu) = with_cpu(&server_process, &args, &via_proxy).await;
        ratios.push(proxy_rps / nginx_rps);
        rounds.push(format!(
            "round {round}: direct {direct_rps:.0} req/s, nginx {nginx_rps:.0} req/s ({nginx_cpu:.1} µs CPU/call), \
             proxy {proxy_rps:.0} req/s ({proxy_cpu:.1} µs CPU/call) = {:.2}x nginx",
            proxy_rps / nginx_rps
        ));
    }

    println!("latency");
    let mut direct_latency = latencies(&direct, args.latency_requests).await;
    let mut nginx_latency = latencies(&via_nginx, args.latency_requests).await;
    let mut proxy_latency = latencies(&via_proxy, args.latency_requests).await;
    let base_p50 = direct_latency.percentile(0.5);
    let nginx_added = nginx_latency.percentile(0.5) - base_p50;
    let proxy_added = proxy_latency.percentile(0.5) - base_p50;

    println!("sse");
    let via_proxy_sse = proxied(&streamer);
    let direct_sse = Target {
        name: "direct",
        url: format!("{agent}/sse"),
        headers: Vec::new(),
    };
    let mut direct_first = Vec::new();
    let mut proxy_first = Vec::new();
    let mut identical = true;
    for _ in 0..args.sse_runs {
        let (direct_at, direct_bytes) = first_event(&direct_sse).await;
        let (proxy_at, proxy_bytes) = first_event(&via_proxy_sse).await;
        identical &= direct_bytes == proxy_bytes;
        direct_first.push(direct_at.as_secs_f64() * 1000.0);
        proxy_first.push(proxy_at.as_secs_f64() * 1000.0);
    }
    let direct_first = median(&mut direct_first);
    let proxy_first = median(&mut proxy_first);

    println!();
    println!("{}", args.services.describe());
    println!(
        "{} connections, {} s per phase, {} rounds; caller token and hierarchy checks on",
        args.connections, args.seconds, args.rounds
    );
    for line in &rounds {
        println!("{line}");
    }
    println!(
        "median throughput: proxy {:.2}x nginx (target >= 0.8)",
        median(&mut ratios)
    );
    println!(
        "latency over one connection ({} requests): direct p50 {:.3} ms p99 {:.3} ms; nginx p50 {:.3} ms p99 {:.3} ms (adds {:.3} ms); proxy p50 {:.3} ms p99 {:.3} ms (adds {:.3} ms) = {:.2}x nginx's added p50 (target <= 2)",
        args.latency_requests,
        base_p50,
        direct_latency.percentile(0.99),
        nginx_latency.percentile(0.5),
        nginx_latency.percentile(0.99),
        nginx_added,
        proxy_latency.percentile(0.5),
        proxy_latency.percentile(0.99),
        proxy_added,
        proxy_added / nginx_added.max(0.001),
    );
    println!(
        "sse time to first event (median of {}): direct {direct_first:.1} ms, proxy {proxy_first:.1} ms = {:.2}x (target <= 1.1); {} events byte-identical and in order: {identical}",
        args.sse_runs,
        proxy_first / direct_first,
        SSE_EVENTS
    );
    drop(server);
    drop(nginx);
    if let Some(database) = database {
        database.drop().await;
    }
}

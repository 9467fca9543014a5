//! Heartbeat load generator. Starts `molecule serve` (the release binary) on Postgres + Redis,
//! drives N simulated agents over gRPC heartbeat streams and then over REST, and reports acked
//! heartbeats/s, p50/p99 latency, Postgres row updates per heartbeat (pg_stat_user_tables),
//! server RSS per idle stream, and the same Redis measured by redis-benchmark in the same run.
//!
//! Run it with `bench/heartbeat.sh` (which builds the release binary first).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::future::join_all;
use molecule::pb::{self, registry_client::RegistryClient};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, transport::Channel};

mod common;

use common::{Latencies, Server, Services, median, rss_kib};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    services: Services,
    /// Simulated agents (workspaces).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// gRPC connections the stream phase spreads agents over.
    #[arg(long, default_value_t = 16)]
    grpc_connections: usize,
    /// Concurrent REST clients.
    #[arg(long, default_value_t = 50)]
    rest_clients: usize,
    /// Rounds of (redis-benchmark, gRPC, REST, redis-benchmark); the median ratio is reported,
    /// since other load on a shared machine moves absolute figures between runs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per load phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle streams for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Connections the idle streams are spread over.
    #[arg(long, default_value_t = 100)]
    idle_connections: usize,
    #[arg(long, default_value_t = 18123)]
    port: u16,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Row updates of `workspaces` so far, from Postgres' statistics; `None` on the embedded default,
/// whose SQLite keeps no such count.
async fn workspace_updates(db: Option<&DatabaseConnection>) -> Option<i64> {
    let db = db?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'workspaces'",
        ))
        .await
        .expect("pg_stat_user_tables readable")
        .expect("workspaces table has stats");
    Some(row.try_get_by_index::<i64>(0).unwrap_or(0))
}

/// Row updates per acknowledged beat between two readings, or `n/a`.
fn per_beat(before: Option<i64>, after: Option<i64>, beats: u64) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            format!("{:.4}", (after - before) as f64 / beats.max(1) as f64)
        }
        _ => "n/a".to_owned(),
    }
}

/// Waits for the write-behind flush (2 s) and Postgres' stats flush (idle backends: 10 s).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(12)).await;
}

/// SET with a TTL on the Redis at `--redis`: the baseline, on the embedded default too (there the
/// server does not use Redis; it is only the yardstick).
fn redis_benchmark(services: &Services) -> f64 {
    let url = url::Url::parse(&services.redis).expect("redis url");
    let output = services
        .cpus
        .client_command("redis-benchmark")
        .args(["-h", url.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &url.port().unwrap_or(6379).to_string()])
        .args(["-c", "50", "-n", "200000", "-r", "10000", "-q"])
        .args(["SET", "ws:__rand_int__", "online", "EX", "90"])
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&output.stdout);
    // "SET ws:__rand_int__ online EX 90: 98039.22 requests per second, p50=0.263 msec"
    text.split("requests per second")
        .next()
        .and_then(|head| head.rsplit(':').next())
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"))
}

/// Creates and registers `count` external workspaces; returns `(id, token)` pairs.
async fn create_agents(
    http: &reqwest::Client,
    server: &Server,
    admin: &str,
    count: usize,
) -> Vec<(String, String)> {
    let batches = (0..count).collect::<Vec<_>>();
    let mut agents = Vec::with_capacity(count);
    for chunk in batches.chunks(32) {
        let created = join_all(chunk.iter().map(|i| async move {
            let name = format!("agent-{i}");
            server
                .register_agent(http, admin, &name, None, "remote://no-inbound")
                .await
        }))
        .await;
        agents.extend(created);
    }
    agents
}

fn beat(sequence: u64) -> pb::AgentFrame {
    pb::AgentFrame {
        frame: Some(pb::agent_frame::Frame::Beat(pb::Beat {
            sequence,
            heartbeat: Some(pb::HeartbeatRequest {
                active_tasks: 1,
                uptime_seconds: sequence as i64,
                ..Default::default()
            }),
        })),
    }
}

async fn open_stream(
    channel: Channel,
    id: &str,
    token: &str,
) -> (
    mpsc::Sender<pb::AgentFrame>,
    tonic::Streaming<pb::ServerFrame>,
) {
    let (sender, receiver) = mpsc::channel(4);
    let mut request = Request::new(ReceiverStream::new(receiver));
    request
        .metadata_mut()
        .insert("x-workspace-id", id.parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let inbound = RegistryClient::new(channel)
        .heartbeat_stream(request)
        .await
        .expect("stream opens")
        .into_inner();
    (sender, inbound)
}

async fn channels(base: &str, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            tonic::transport::Endpoint::from_shared(base.to_owned())
                .unwrap()
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("grpc connects"),
        );
    }
    channels
}

/// Closed loop per agent: send a beat, wait for its ack, repeat until the deadline.
async fn grpc_phase(args: &Args, base: &str, agents: &[(String, String)]) -> (u64, Latencies) {
    let channels = channels(base, args.grpc_connections).await;
    let mut streams = Vec::with_capacity(agents.len());
    for (i, (id, token)) in agents.iter().enumerate() {
        streams.push(open_stream(channels[i % channels.len()].clone(), id, token).await);
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let results = join_all(streams.into_iter().map(|(sender, mut inbound)| {
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sequence = 0;
            while Instant::now() < deadline {
                sequence += 1;
                let sent = Instant::now();
                sender.send(beat(sequence)).await.unwrap();
                match inbound.message().await {
                    Ok(Some(pb::ServerFrame {
                        frame: Some(pb::server_frame::Frame::Ack(_)),
                    })) => {
                        latencies.push(sent.elapsed().as_micros() as u32);
                    }
                    Ok(Some(_)) => {}
                    other => panic!("stream failed: {other:?}"),
                }
            }
            latencies
        })
    }))
    .await;
    let all: Vec<u32> = results.into_iter().flat_map(Result::unwrap).collect();
    (all.len() as u64, Latencies(all))
}

async fn rest_phase(
    args: &Args,
    base: &str,
    agents: Arc<Vec<(String, String)>>,
) -> (u64, Latencies) {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients = args.rest_clients;
    let results = join_all((0..clients).map(|worker| {
        let agents = agents.clone();
        let base = base.to_owned();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut n = worker;
            while Instant::now() < deadline {
                let (id, token) = &agents[n % agents.len()];
                n += clients;
                let sent = Instant::now();
                let response = http
                    .post(format!("{base}/registry/heartbeat"))
                    .bearer_auth(token)
                    .json(&json!({"workspace_id": id, "active_tasks": 1, "uptime_seconds": n}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.bytes().await;
                latencies.push(sent.elapsed().as_micros() as u32);
            }
            latencies
        })
    }))
    .await;
    let all: Vec<u32> = results.into_iter().flat_map(Result::unwrap).collect();
    (all.len() as u64, Latencies(all))
}

/// Opens `idle_streams` streams that beat once and then stay open; returns the RSS growth.
async fn idle_phase(args: &Args, server: &Server, agents: &[(String, String)]) -> (u64, u64) {
    let pid = server.child.id();
    let channels = channels(&server.base, args.idle_connections).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(args.idle_streams);
    for i in 0..args.idle_streams {
        let (id, token) = &agents[i % agents.len()];
        let (sender, mut inbound) =
            open_stream(channels[i % channels.len()].clone(), id, token).await;
        sender.send(beat(1)).await.unwrap();
        inbound.message().await.unwrap();
        held.push((sender, inbound));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    drop(held);
    (before, after)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (database, server, admin_token) = args.services.start(args.port).await;
    let stats = match &database {
        Some(database) => Some(molecule::store::connect_url(&database.url).await.unwrap()),
        None => None,
    };
    let stats_db = stats.as_ref();
    println!("{}", args.services.describe());
    let http = reqwest::Client::new();

    println!("setting up {} agents…", args.agents);
    let agents = create_agents(&http, &server, &admin_token, args.agents).await;
    settle().await;

    let agents = Arc::new(agents);
    let seconds = args.seconds as f64;
    let mut grpc_ratios = Vec::new();
    let mut rest_ratios = Vec::new();
    let mut report = Vec::new();
    for round in 1..=args.rounds {
        let baseline_before = redis_benchmark(&args.services);
        let updates_before = workspace_updates(stats_db).await;
        println!(
            "round {round}: gRPC streams (server pid {})",
            server.child.id()
        );
        let (grpc_beats, mut grpc_latency) = grpc_phase(&args, &server.base, &agents).await;
        settle().await;
        let grpc_updates = per_beat(
            updates_before,
            workspace_updates(stats_db).await,
            grpc_beats,
        );

        let updates_before = workspace_updates(stats_db).await;
        println!("round {round}: REST");
        let (rest_beats, mut rest_latency) = rest_phase(&args, &server.base, agents.clone()).await;
        settle().await;
        let rest_updates = per_beat(
            updates_before,
            workspace_updates(stats_db).await,
            rest_beats,
        );
        let baseline = (baseline_before + redis_benchmark(&args.services)) / 2.0;

        let grpc_rate = grpc_beats as f64 / seconds;
        let rest_rate = rest_beats as f64 / seconds;
        grpc_ratios.push(grpc_rate / baseline);
        rest_ratios.push(rest_rate / baseline);
        report.push(format!(
            "round {round}: redis-benchmark {baseline:.0} req/s (mean of before and after)\n  \
             gRPC streams ({} connections): {grpc_rate:.0} acked beats/s = {:.2}x; p50 {:.2} ms, p99 {:.2} ms; postgres row updates/beat {grpc_updates}\n  \
             REST ({} clients): {rest_rate:.0} acked beats/s = {:.2}x; p50 {:.2} ms, p99 {:.2} ms; postgres row updates/beat {rest_updates}",
            args.grpc_connections,
            grpc_rate / baseline,
            grpc_latency.percentile(0.50),
            grpc_latency.percentile(0.99),
            args.rest_clients,
            rest_rate / baseline,
            rest_latency.percentile(0.50),
            rest_latency.percentile(0.99),
        ));
    }

    println!("phase: idle streams");
    let (rss_before, rss_after) = idle_phase(&args, &server, &agents).await;

    println!();
    println!(
        "agents: {}, phase length: {} s, rounds: {}; baseline: redis-benchmark -c 50 -n 200000 -r 10000 SET ws:__rand_int__ online EX 90",
        args.agents, args.seconds, args.rounds
    );
    for line in &report {
        println!("{line}");
    }
    println!(
        "median: gRPC {:.2}x redis-benchmark, REST {:.2}x redis-benchmark",
        median(&mut grpc_ratios),
        median(&mut rest_ratios)
    );
    println!(
        "idle streams: {} over {} connections: server RSS {} KiB -> {} KiB = {:.1} KiB per stream",
        args.idle_streams,
        args.idle_connections,
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before)) as f64 / args.idle_streams as f64
    );
    drop(server);
    if let Some(stats) = stats {
        stats.close().await.ok();
    }
    if let Some(database) = database {
        database.drop().await;
    }
}

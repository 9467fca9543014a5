//! Scale load generator (bench/scale.sh). N distinct workspaces each hold one gRPC heartbeat
//! stream and beat every `--interval` with jitter, beside R REST agents on the same cadence, on
//! one replica, held for `--hold` after the ramp-up. Then `--offline-agents` of the streaming
//! agents stop at known times and the generator measures how late each offline event arrives
//! against the TTL. It reports the ramp-up rate, ack latency, false offlines, offline lateness,
//! and the CPU and memory of the server, Postgres, Redis and itself.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::StreamExt;
use molecule::pb::{self, registry_client::RegistryClient, workspaces_client::WorkspacesClient};
use rand::Rng;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

mod common;

use common::{Latencies, Server, Services, cpu_seconds_between, cpu_ticks, rss_kib};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    services: Services,
    /// Workspaces that each hold one gRPC heartbeat stream.
    #[arg(long, default_value_t = 100_000)]
    agents: usize,
    /// Workspaces that beat over REST instead.
    #[arg(long, default_value_t = 10_000)]
    rest_agents: usize,
    /// Seconds between one agent's beats (each wait is jittered by ±10%).
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Seconds every agent keeps beating after the last one joined.
    #[arg(long, default_value_t = 300)]
    hold: u64,
    /// Streaming agents that stop (without a goodbye) after the hold, to time offline detection.
    #[arg(long, default_value_t = 1000)]
    offline_agents: usize,
    /// The server's liveness TTL in seconds (`LIVENESS_TTL_SECONDS`).
    #[arg(long, default_value_t = 90)]
    ttl: u64,
    /// Heartbeat streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Agents joining (create, register, first beat) at once during the ramp-up.
    #[arg(long, default_value_t = 64)]
    ramp_concurrency: usize,
    #[arg(long, default_value_t = 18127)]
    port: u16,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What every simulated agent reads and reports into.
struct Run {
    server: Arc<Server>,
    admin: String,
    http: reqwest::Client,
    interval: Duration,
    joining: Semaphore,
    /// Ack latencies are kept only during the hold.
    recording: AtomicBool,
    /// Agents picked to stop leave after their next beat once this is set.
    stopping: AtomicBool,
    failures: AtomicU64,
    /// Agents that finished joining (or failed to).
    joined: AtomicUsize,
    stopped: mpsc::UnboundedSender<(String, Instant)>,
    done: CancellationToken,
}

impl Run {
    fn jittered(&self) -> Duration {
        self.interval.mul_f64(rand::rng().random_range(0.9..1.1))
    }

    fn failed(&self, what: &str, error: impl std::fmt::Debug) {
        if self.failures.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("agent failure: {what}: {error:?}");
        }
    }
}

fn beat(sequence: u64) -> pb::AgentFrame {
    pb::AgentFrame {
        frame: Some(pb::agent_frame::Frame::Beat(pb::Beat {
            sequence,
            heartbeat: Some(pb::HeartbeatRequest {
                active_tasks: 0,
                uptime_seconds: sequence as i64,
                ..Default::default()
            }),
        })),
    }
}

struct Stream {
    outbound: mpsc::Sender<pb::AgentFrame>,
    inbound: tonic::Streaming<pb::ServerFrame>,
    sequence: u64,
}

impl Stream {
    async fn open(channel: Channel, id: &str, token: &str) -> Result<Self, tonic::Status> {
        let (outbound, receiver) = mpsc::channel(2);
        let mut request = Request::new(ReceiverStream::new(receiver));
        let metadata = request.metadata_mut();
        metadata.insert("x-workspace-id", id.parse().expect("uuid is ascii"));
        let bearer = format!("Bearer {token}");
        metadata.insert("authorization", bearer.parse().expect("token is ascii"));
        let inbound = RegistryClient::new(channel)
            .heartbeat_stream(request)
            .await?
            .into_inner();
        Ok(Self {
            outbound,
            inbound,
            sequence: 0,
        })
    }

    /// One beat; the time from sending it to its ack.
    async fn beat(&mut self) -> Result<Duration, String> {
        self.sequence += 1;
        let sent = Instant::now();
        self.outbound
            .send(beat(self.sequence))
            .await
            .map_err(|_| "stream closed".to_owned())?;
        loop {
            match self.inbound.message().await {
                Ok(Some(pb::ServerFrame {
                    frame: Some(pb::server_frame::Frame::Ack(_)),
                })) => return Ok(sent.elapsed()),
                Ok(Some(_)) => {}
                Ok(None) => return Err("stream ended".to_owned()),
                Err(status) => return Err(format!("{status:?}")),
            }
        }
    }
}

/// One agent's ramp-up step, holding a permit: create and register it, then `first_beat` with
/// its id and token. Counted as joined either way; a failure is reported and yields `None`.
async fn join<T, F, Fut>(run: &Run, name: &str, first_beat: F) -> Option<T>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let joined = {
        let _permit = run.joining.acquire().await.expect("semaphore open");
        let (id, token) = run
            .server
            .register_agent(&run.http, &run.admin, name, None, "remote://no-inbound")
            .await;
        first_beat(id, token).await
    };
    run.joined.fetch_add(1, Ordering::Relaxed);
    joined.map_err(|error| run.failed("join", error)).ok()
}

/// One streaming agent: joins, then beats until the run ends, or (if `leaves`) until stopping
/// is called, when its last beat's send time is reported and the stream drops without a goodbye.
async fn streaming_agent(run: Arc<Run>, channel: Channel, name: String, leaves: bool) -> Vec<u32> {
    let joined = join(&run, &name, |id, token| async move {
        match Stream::open(channel, &id, &token).await {
            Ok(mut stream) => stream.beat().await.map(|_| (id, stream)),
            Err(status) => Err(format!("{status:?}")),
        }
    });
    let Some((id, mut stream)) = joined.await else {
        return Vec::new();
    };
    let mut latencies = Vec::new();
    loop {
        tokio::select! {
            () = run.done.cancelled() => return latencies,
            () = tokio::time::sleep(run.jittered()) => {}
        }
        let sent = Instant::now();
        match stream.beat().await {
            Ok(latency) if run.recording.load(Ordering::Relaxed) => {
                latencies.push(latency.as_micros() as u32);
            }
            Ok(_) => {}
            Err(error) => {
                run.failed("beat", error);
                return latencies;
            }
        }
        if leaves && run.stopping.load(Ordering::Relaxed) {
            let _ = run.stopped.send((id, sent));
            return latencies;
        }
    }
}

async fn rest_beat(run: &Run, id: &str, token: &str, n: u64) -> Result<Duration, String> {
    let sent = Instant::now();
    let response = run
        .http
        .post(format!("{}/registry/heartbeat", run.server.base))
        .bearer_auth(token)
        .json(&json!({"workspace_id": id, "active_tasks": 0, "uptime_seconds": n}))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let _ = response.bytes().await;
    if status.is_success() {
        Ok(sent.elapsed())
    } else {
        Err(status.to_string())
    }
}

async fn rest_agent(run: Arc<Run>, name: String) -> Vec<u32> {
    let joined = join(&run, &name, |id, token| {
        let run = run.clone();
        async move { rest_beat(&run, &id, &token, 0).await.map(|_| (id, token)) }
    });
    let Some((id, token)) = joined.await else {
        return Vec::new();
    };
    let mut latencies = Vec::new();
    for n in 1.. {
        tokio::select! {
            () = run.done.cancelled() => break,
            () = tokio::time::sleep(run.jittered()) => {}
        }
        match rest_beat(&run, &id, &token, n).await {
            Ok(latency) if run.recording.load(Ordering::Relaxed) => {
                latencies.push(latency.as_micros() as u32);
            }
            Ok(_) => {}
            Err(error) => {
                run.failed("rest beat", error);
                break;
            }
        }
    }
    latencies
}

/// First `WORKSPACE_OFFLINE` per workspace, with when it arrived here.
type Offlines = Arc<Mutex<HashMap<String, Instant>>>;

async fn watch_offlines(server: &Server, admin: &str) -> Offlines {
    let mut request = Request::new(pb::WatchEventsRequest::default());
    let bearer = format!("Bearer {admin}");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("ascii"));
    let channel = channels(&server.base, 1).await.remove(0);
    let mut events = WorkspacesClient::new(channel)
        .watch_events(request)
        .await
        .expect("admin may watch events")
        .into_inner();
    let offlines = Offlines::default();
    let sink = offlines.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if event.event == "WORKSPACE_OFFLINE"
                && let Some(id) = event.workspace_id
            {
                sink.lock()
                    .expect("poisoned")
                    .entry(id)
                    .or_insert_with(Instant::now);
            }
        }
        eprintln!("event stream ended");
    });
    offlines
}

/// The processes a report line names, with their CPU ticks at the start of a window.
struct CpuWindow {
    groups: Vec<(&'static str, HashMap<u32, u64>)>,
    started: Instant,
}

fn process_groups(server_pid: u32, embedded: bool) -> Vec<(&'static str, HashMap<u32, u64>)> {
    let me = std::process::id();
    let mut groups = vec![
        ("server", cpu_ticks(|pid, _| pid == server_pid)),
        ("generator", cpu_ticks(|pid, _| pid == me)),
    ];
    if !embedded {
        groups.push(("postgres", cpu_ticks(|_, comm| comm == "postgres")));
        groups.push((
            "redis",
            cpu_ticks(|_, comm| comm.starts_with("redis-server")),
        ));
    }
    groups
}

impl CpuWindow {
    fn start(server_pid: u32, embedded: bool) -> Self {
        Self {
            groups: process_groups(server_pid, embedded),
            started: Instant::now(),
        }
    }

    /// Each group's CPU over the window, in percent of one core.
    fn finish(self, server_pid: u32, embedded: bool) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let now = process_groups(server_pid, embedded);
        self.groups
            .iter()
            .zip(now)
            .map(|((name, before), (_, after))| {
                let used = cpu_seconds_between(before, &after);
                format!("{name} {:.1}%", used / seconds * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

async fn channels(base: &str, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let endpoint = tonic::transport::Endpoint::from_shared(base.to_owned()).expect("url");
        channels.push(
            endpoint
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("grpc connects"),
        );
    }
    channels
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ttl = args.ttl.to_string();
    let (database, server, admin) = args
        .services
        .start_with(args.port, &[("LIVENESS_TTL_SECONDS", &ttl)])
        .await;
    let server = Arc::new(server);
    let server_pid = server.child.id();
    let embedded = args.services.embedded;
    println!("{}", args.services.describe());
    println!(
        "{} streaming agents ({} per connection) + {} REST agents, beating every {} s ±10%; \
         ttl {} s; hold {} s",
        args.agents,
        args.streams_per_connection,
        args.rest_agents,
        args.interval,
        args.ttl,
        args.hold
    );

    let offlines = watch_offlines(&server, &admin).await;
    let (stopped, mut stop_reports) = mpsc::unbounded_channel();
    let run = Arc::new(Run {
        server: server.clone(),
        admin,
        http: reqwest::Client::new(),
        interval: Duration::from_secs(args.interval),
        joining: Semaphore::new(args.ramp_concurrency),
        recording: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        failures: AtomicU64::new(0),
        joined: AtomicUsize::new(0),
        stopped,
        done: CancellationToken::new(),
    });

    let connections = args.agents.div_ceil(args.streams_per_connection.max(1));
    let channels = channels(&server.base, connections).await;
    let leave_every = (args.agents / args.offline_agents.max(1)).max(1);
    let ramp = Instant::now();
    let mut streaming = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let channel = channels[i / args.streams_per_connection.max(1)].clone();
        let leaves = i % leave_every == 0 && i / leave_every < args.offline_agents;
        let task = streaming_agent(run.clone(), channel, format!("stream-{i}"), leaves);
        streaming.push(tokio::spawn(task));
    }
    let rest: Vec<_> = (0..args.rest_agents)
        .map(|i| tokio::spawn(rest_agent(run.clone(), format!("rest-{i}"))))
        .collect();
    let total = args.agents + args.rest_agents;
    let mut last_report = Instant::now();
    loop {
        let joined = run.joined.load(Ordering::Relaxed);
        if joined >= total {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            println!("joined {joined} of {total}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_seconds = ramp.elapsed().as_secs_f64();
    println!(
        "ramp-up: {total} agents joined in {ramp_seconds:.1} s = {:.0} agents/s \
         (create + register + first beat, {} at once)",
        total as f64 / ramp_seconds,
        args.ramp_concurrency
    );

    run.recording.store(true, Ordering::Relaxed);
    let window = CpuWindow::start(server_pid, embedded);
    for elapsed in (0..args.hold).step_by(60) {
        println!(
            "holding: {elapsed} s, server RSS {:.0} MiB, false offlines so far {}",
            rss_mib(server_pid),
            offlines.lock().expect("poisoned").len()
        );
        tokio::time::sleep(Duration::from_secs((args.hold - elapsed).min(60))).await;
    }
    let cpu = window.finish(server_pid, embedded);
    let rss = rss_mib(server_pid);
    run.recording.store(false, Ordering::Relaxed);
    let false_during_hold = offlines.lock().expect("poisoned").len();

    let mut offline_report = String::from("offline detection: not measured");
    if args.offline_agents > 0 {
        println!(
            "stopping {} agents after their next beat",
            args.offline_agents
        );
        run.stopping.store(true, Ordering::Relaxed);
        let mut last_beats = HashMap::new();
        let stop_deadline = Instant::now() + run.interval.mul_f64(1.2) + Duration::from_secs(5);
        while last_beats.len() < args.offline_agents {
            match tokio::time::timeout_at(stop_deadline.into(), stop_reports.recv()).await {
                Ok(Some((id, sent))) => {
                    last_beats.insert(id, sent);
                }
                _ => break,
            }
        }
        let ttl = Duration::from_secs(args.ttl);
        tokio::time::sleep(ttl + ttl / 10 + Duration::from_secs(2)).await;
        let seen = offlines.lock().expect("poisoned").clone();
        let mut lateness = Vec::new();
        let mut early = 0;
        for (id, sent) in &last_beats {
            let Some(at) = seen.get(id) else { continue };
            match at.checked_duration_since(*sent + ttl) {
                Some(late) => lateness.push(late.as_micros() as u32),
                None => early += 1,
            }
        }
        let missed = last_beats.len() - lateness.len() - early;
        let mut lateness = Latencies(lateness);
        let ttl_ms = ttl.as_secs_f64() * 1000.0;
        let (p50, p99, max) = (
            lateness.percentile(0.50),
            lateness.percentile(0.99),
            lateness.percentile(1.0),
        );
        offline_report = format!(
            "offline detection: {} agents stopped; offline event − last beat − ttl: p50 {p50:.0} ms, \
             p99 {p99:.0} ms, max {max:.0} ms; p99 ÷ ttl = {:.4}; before the ttl: {early}; \
             never reported: {missed}",
            last_beats.len(),
            p99 / ttl_ms
        );
        let left: HashSet<&String> = last_beats.keys().collect();
        let false_offlines = seen.keys().filter(|id| !left.contains(id)).count();
        offline_report.push_str(&format!(
            "\nfalse offlines: {} (during the hold: {false_during_hold})",
            false_offlines + early
        ));
    } else {
        offline_report.push_str(&format!("\nfalse offlines: {false_during_hold}"));
    }

    run.done.cancel();
    let mut stream_latency = Latencies(Vec::new());
    for task in streaming {
        stream_latency.0.extend(task.await.unwrap_or_default());
    }
    let mut rest_latency = Latencies(Vec::new());
    for task in rest {
        rest_latency.0.extend(task.await.unwrap_or_default());
    }

    println!();
    println!("{}", args.services.describe());
    println!(
        "ramp-up: {total} agents in {ramp_seconds:.1} s = {:.0} agents/s",
        total as f64 / ramp_seconds
    );
    println!(
        "hold {} s: gRPC acks {} p50 {:.2} ms p99 {:.2} ms; REST beats {} p50 {:.2} ms p99 {:.2} ms",
        args.hold,
        stream_latency.0.len(),
        stream_latency.percentile(0.50),
        stream_latency.percentile(0.99),
        rest_latency.0.len(),
        rest_latency.percentile(0.50),
        rest_latency.percentile(0.99),
    );
    println!("cpu over the hold (100% = one core): {cpu}");
    println!(
        "server RSS after the hold: {rss:.0} MiB = {:.1} KiB per agent",
        rss * 1024.0 / total.max(1) as f64
    );
    println!("{offline_report}");
    println!("agent failures: {}", run.failures.load(Ordering::Relaxed));
    drop(run);
    drop(channels);
    drop(server);
    if let Some(database) = database {
        database.drop().await;
    }
}

//! The metrics this process exports at `/metrics` (Prometheus text): every family's name, help
//! and type written once here, the recorder (histograms with buckets, so replicas aggregate),
//! and the process figures read from `/proc` at scrape time. It records; it decides nothing.

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_DURATION: &str = "grpc_server_handling_seconds";
pub const HEARTBEATS: &str = "molecule_heartbeats_total";
pub const WORKSPACES: &str = "molecule_workspaces";
pub const OPEN_STREAMS: &str = "molecule_open_streams";
pub const A2A_CALLS: &str = "molecule_a2a_calls_total";
pub const A2A_DURATION: &str = "molecule_a2a_call_duration_seconds";
pub use gateway::WEBSOCKET_CLIENTS;
pub const EVENTS_PUBLISHED: &str = "molecule_events_published_total";
pub const EVENTS_DROPPED: &str = "molecule_events_dropped_total";
pub const FLUSHES: &str = "molecule_write_behind_flushes_total";
pub const FLUSHED_ROWS: &str = "molecule_write_behind_rows_total";
pub const FLUSH_DURATION: &str = "molecule_write_behind_flush_seconds";
pub const DATASTORE_ERRORS: &str = "molecule_datastore_errors_total";
pub const REDIS_ERRORS: &str = "molecule_redis_errors_total";
pub const CONNECTIONS_REFUSED: &str = "molecule_connections_refused_total";

/// Every family and its help text, as `/metrics` and the README describe them.
pub const CATALOGUE: [(&str, &str); 18] = [
    (
        HTTP_REQUESTS,
        "REST requests answered, by method, route template and status.",
    ),
    (
        HTTP_DURATION,
        "REST request latency, from arrival to the response head, by method, route and status.",
    ),
    (
        GRPC_HANDLED,
        "gRPC calls answered (native and gRPC-Web), by method and status code.",
    ),
    (
        GRPC_DURATION,
        "gRPC call latency, to the response head (a stream: to its opening), by method.",
    ),
    (
        HEARTBEATS,
        "Heartbeats, by transport (unary: REST or gRPC Heartbeat; stream) and result.",
    ),
    (WORKSPACES, "Workspaces by status, sampled every 15 s."),
    (
        OPEN_STREAMS,
        "Open long-lived agent streams, by kind (heartbeat, attach).",
    ),
    (
        A2A_CALLS,
        "A2A proxy calls, by outcome (delivered, streamed, queued, mailbox, or the error's code).",
    ),
    (A2A_DURATION, "A2A proxy call latency, by outcome."),
    (WEBSOCKET_CLIENTS, "Open /ws event subscribers."),
    (EVENTS_PUBLISHED, "Events published, by type."),
    (
        EVENTS_DROPPED,
        "Events a subscriber lagged past and never received, by subscriber kind.",
    ),
    (
        FLUSHES,
        "Heartbeat write-behind flushes, by result (ok, unavailable, failed).",
    ),
    (
        FLUSHED_ROWS,
        "Workspace rows written by write-behind flushes.",
    ),
    (FLUSH_DURATION, "Write-behind flush duration."),
    (
        DATASTORE_ERRORS,
        "Datastore statements that failed because the database was unreachable.",
    ),
    (
        REDIS_ERRORS,
        "Redis commands that failed, by use (liveness, events).",
    ),
    (
        CONNECTIONS_REFUSED,
        "Connections closed at accept, by reason (connection caps).",
    ),
];

/// Seconds: from a sub-millisecond heartbeat to a half-hour A2A call.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    600.0,
];

/// The process-wide recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed");
            }
            for (name, help) in CATALOGUE {
                describe(name, help);
            }
            handle
        })
        .clone()
}

fn describe(name: &'static str, help: &'static str) {
    if name.ends_with("_total") {
        metrics::describe_counter!(name, help);
    } else if name.ends_with("_seconds") {
        metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
    } else {
        metrics::describe_gauge!(name, help);
    }
}

/// The exposition: every recorded family, then the process's own figures.
pub fn render() -> String {
    let mut text = handle().render();
    process::append(&mut text);
    text
}

/// The label of an HTTP method: the standard ones by name, any other token `other`, so a
/// client cannot grow the exposition with made-up methods.
pub fn http_method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The label of a gRPC path: a method this server serves, else `other` (a path is
/// unauthenticated input, and each distinct label is a series kept for the process's life).
pub fn grpc_method_label(path: &str) -> &'static str {
    static SERVED: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            let mut served = std::collections::HashSet::new();
            for encoded in [
                crate::pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ] {
                let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded)
                else {
                    continue;
                };
                for file in &set.file {
                    for service in &file.service {
                        for method in &service.method {
                            served.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
            for version in ["v1", "v1alpha"] {
                served.insert(format!(
                    "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
                ));
            }
            served
        });
    SERVED.get(path).map_or("other", String::as_str)
}

pub fn heartbeat(transport: &'static str, result: &'static str) {
    counter!(HEARTBEATS, "transport" => transport, "result" => result).increment(1);
}

pub fn a2a_call(outcome: &'static str, took: Duration) {
    counter!(A2A_CALLS, "outcome" => outcome).increment(1);
    histogram!(A2A_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

pub fn event_published(event: &'static str) {
    counter!(EVENTS_PUBLISHED, "event" => event).increment(1);
}

pub fn events_dropped(subscriber: &'static str, missed: u64) {
    counter!(EVENTS_DROPPED, "subscriber" => subscriber).increment(missed);
}

pub fn flush(result: &'static str, rows: usize, took: Duration) {
    counter!(FLUSHES, "result" => result).increment(1);
    counter!(FLUSHED_ROWS).increment(rows as u64);
    histogram!(FLUSH_DURATION).record(took.as_secs_f64());
}

pub fn datastore_error() {
    counter!(DATASTORE_ERRORS).increment(1);
}

pub fn redis_error(used_for: &'static str) {
    counter!(REDIS_ERRORS, "use" => used_for).increment(1);
}

pub fn workspaces(status: &'static str, count: u64) {
    gauge!(WORKSPACES, "status" => status).set(count as f64);
}

/// Counts one open stream of `kind` in a gauge while it lives.
pub struct OpenStream(&'static str);

impl OpenStream {
    pub fn open(kind: &'static str) -> Self {
        gauge!(OPEN_STREAMS, "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(OPEN_STREAMS, "kind" => self.0).decrement(1.0);
    }
}

/// The `process_*` families Prometheus client libraries export, from `/proc/self`.
mod process {
    use std::fmt::Write;

    pub(super) fn append(text: &mut String) {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        // Fields after "pid (comm)": state is the 3rd field of the whole line.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        // SAFETY: sysconf reads constants of the running system.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as f64,
            )
        };
        let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = write!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            }
        };
        let cpu = field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / ticks);
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            field(24).map(|pages| pages * page),
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(23),
        );
        family(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            field(20),
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse::<f64>().ok())
        });
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot.zip(field(22))
                .map(|(boot, start)| boot + start / ticks),
        );
        let open = std::fs::read_dir("/proc/self/fd").map(|fds| fds.count() as f64);
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open.ok(),
        );
        let limit = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|line| line.starts_with("Max open files"))
                    .and_then(|line| line.split_whitespace().nth(3))
                    .and_then(|soft| soft.parse::<f64>().ok())
            });
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limit,
        );
    }
}

//! The listening socket: connections admitted under a global and a per-IP cap, served by hyper
//! (HTTP/1.1 and h2c on one port) under a header-read and an idle timeout with h2 settings
//! chosen for an internet-facing port, and drained on shutdown. It knows nothing of routes or
//! credentials; it hands each request its peer address and its connection's pre-auth budget.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use gateway::preauth::ConnectionBudget;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Streams one h2 connection may open at once (hyper's default, stated so it is reviewed).
const H2_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Unread request data h2 buffers per stream and per connection before the peer must wait.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Request headers, decoded, per h2 request (h1 is bounded by hyper's read buffer).
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams a client may reset before the server answers them (rapid-reset defence).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Pings find peers that vanished while holding long streams.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// File descriptors kept out of the connection cap: the database pool, Redis, plugin files.
const RESERVED_FDS: u64 = 512;
/// How long in-flight requests get to finish after shutdown began.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// An HTTP/1 request line longer than this is answered here, in JSON, before hyper would
/// answer it with an empty 414 of its own (at 64 KiB).
const MAX_REQUEST_LINE: usize = gateway::edge::MAX_URI_BYTES + 64;
const REQUEST_LINE_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: 32\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{\"error\":\"request URI too long\"}";

/// What the listener enforces, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Open connections at most; new ones are closed at once beyond it.
    pub max_connections: usize,
    /// Open connections per client IP at most; 0 means no per-IP cap.
    pub max_connections_per_ip: usize,
    /// An HTTP/1 request head (and a connection's first bytes) must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Bytes one connection's unauthenticated requests may have buffered at once.
    pub preauth_connection_bytes: usize,
}

impl ListenerSettings {
    /// Settings from the command line; a `max_connections` of 0 derives the cap from the file
    /// descriptor limit, raised to its hard limit first.
    pub fn resolve(args: &crate::config::ListenerArgs) -> Self {
        let fd_limit = raise_fd_limit();
        let derived =
            usize::try_from(fd_limit.saturating_sub(RESERVED_FDS).max(64)).unwrap_or(usize::MAX);
        let max_connections = match args.max_connections {
            0 => derived,
            configured if configured > derived => {
                warn!(
                    configured,
                    fd_limit, "MOLECULE_MAX_CONNECTIONS exceeds the file descriptor limit; capped"
                );
                derived
            }
            configured => configured,
        };
        Self {
            max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            preauth_connection_bytes: args.preauth_connection_bytes,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                debug!(
                    from = limit.rlim_cur,
                    to = limit.rlim_max,
                    "raised the file descriptor limit"
                );
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Open connections, in total and per client IP.
struct Admissions {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
}

/// One admitted connection; dropping it (with the socket) gives its place back.
struct Admission {
    admissions: Arc<Admissions>,
    ip: IpAddr,
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Total,
    PerIp,
}

impl Admissions {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().expect("admissions poisoned");
            let open = per_ip.entry(ip).or_default();
            if *open >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *open += 1;
        }
        Ok(Admission {
            admissions: self.clone(),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let admissions = &self.admissions;
        if admissions.max_per_ip > 0 {
            let mut per_ip = admissions.per_ip.lock().expect("admissions poisoned");
            if let Some(open) = per_ip.get_mut(&self.ip) {
                *open -= 1;
                if *open == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        admissions.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection is doing, for its timeouts: requests in flight, when it last became idle,
/// and when the bytes of a request head started arriving while idle.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `opened`.
    idle_since: AtomicU64,
    /// Milliseconds since `opened` plus one; 0 while no head is arriving.
    head_started: AtomicU64,
    /// The client spoke the h2 preface: pings keep arriving, so only the idle rule applies.
    h2: AtomicBool,
    /// Bytes of the current HTTP/1 request line seen so far; `usize::MAX` once it ended.
    request_line: AtomicUsize,
    any_bytes: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            request_line: AtomicUsize::new(0),
            any_bytes: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Notes bytes read; false when they make an HTTP/1 request line too long to serve.
    fn on_read(&self, bytes: &[u8]) -> bool {
        if !self.any_bytes.swap(true, Ordering::Relaxed) && bytes.starts_with(b"PRI ") {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
            self.request_line.store(0, Ordering::Relaxed);
            self.changed.notify_one();
        }
        let line = self.request_line.load(Ordering::Relaxed);
        if self.h2.load(Ordering::Relaxed) || line == usize::MAX {
            return true;
        }
        match bytes.iter().position(|byte| *byte == b'\n') {
            Some(_) => {
                self.request_line.store(usize::MAX, Ordering::Relaxed);
                true
            }
            None => {
                let line = line.saturating_add(bytes.len());
                self.request_line.store(line, Ordering::Relaxed);
                line <= MAX_REQUEST_LINE
            }
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// What to do next while nothing is in flight: a deadline and whether missing it aborts
    /// (a slow head) or closes gracefully (idle). `None` while a request is in flight.
    fn deadline(&self, settings: &ListenerSettings) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.h2.load(Ordering::Relaxed) {
            let head = self.head_started.load(Ordering::Relaxed);
            if head > 0 {
                return Some((
                    self.at(head - 1) + settings.header_read_timeout,
                    Expiry::SlowHead,
                ));
            }
            if !self.any_bytes.load(Ordering::Relaxed) {
                // Connected and silent: the first head is due as if it had started arriving.
                return Some((self.opened + settings.header_read_timeout, Expiry::SlowHead));
            }
        }
        let idle = self.at(self.idle_since.load(Ordering::Relaxed));
        Some((idle + settings.idle_timeout, Expiry::Idle))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    SlowHead,
    Idle,
}

/// A request in flight; dropped when its response body is done (or the request abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// The socket of an admitted connection: reports reads to its activity and holds its place
/// under the caps for as long as it is open (after a WebSocket upgrade too).
struct Socket {
    /// `None` only once handed to the lingering close.
    inner: Option<TcpStream>,
    activity: Arc<Activity>,
    admission: Option<Admission>,
    /// Answered here with an error: the client's remaining bytes are drained before closing,
    /// so the answer is not lost to a reset.
    refused: bool,
}

impl Socket {
    fn io(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.inner.as_mut().expect("socket open until dropped"))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if !self.refused {
            return;
        }
        let (Some(stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let admission = self.admission.take();
        runtime.spawn(async move {
            linger(stream).await;
            drop(admission);
        });
    }
}

/// Closes our side, then reads what the client still sends for a moment, so the kernel does
/// not answer it with a reset that would discard the response it has not read yet.
async fn linger(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut sink = [0u8; 8192];
        let mut drained = 0usize;
        while drained < 1 << 20 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.io().poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && !self.activity.on_read(&buf.filled()[before..])
        {
            // A fresh socket's send buffer takes these few bytes at once; if it does not, the
            // client only sees the connection close.
            if let Some(stream) = &self.inner {
                let _ = stream.try_write(REQUEST_LINE_TOO_LONG);
            }
            self.refused = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request line too long",
            )));
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `signal` resolves or `shutdown` is cancelled; then cancels
/// `shutdown` so long-lived streams end, and gives in-flight requests time to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    shutdown: CancellationToken,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let admissions = Arc::new(Admissions {
        total: AtomicUsize::new(0),
        per_ip: Mutex::default(),
        max_total: settings.max_connections,
        max_per_ip: settings.max_connections_per_ip,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .keep_alive(true)
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let connections = TaskTracker::new();
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal => {}
            () = stopping.cancelled() => {}
        }
        stopping.cancel();
    });
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors or a transient network error: back off instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admission = match admissions.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                refusals.record(refusal, peer.ip());
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let socket = Socket {
            inner: Some(stream),
            activity: activity.clone(),
            admission: Some(admission),
            refused: false,
        };
        connections.spawn(serve_connection(
            builder.clone(),
            socket,
            peer,
            app.clone(),
            activity,
            settings.clone(),
            shutdown.clone(),
        ));
    }
    info!("shutting down");
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    socket: Socket,
    peer: SocketAddr,
    app: Router,
    activity: Arc<Activity>,
    settings: Arc<ListenerSettings>,
    shutdown: CancellationToken,
) {
    let budget = ConnectionBudget::new(settings.preauth_connection_bytes);
    let requests = activity.clone();
    let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let in_flight = requests.begin();
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(peer));
        extensions.insert(budget.clone());
        let response = app.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| {
                Body::new(Counted {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(socket), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let deadline = activity.deadline(&settings).filter(|_| !closing);
        let expired = async {
            match deadline {
                Some((at, expiry)) => {
                    tokio::time::sleep_until(at.into()).await;
                    expiry
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(error = %err, %peer, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {}
            expiry = expired => {
                // Re-read: a request may have begun while the timer ran.
                let due = activity
                    .deadline(&settings)
                    .is_some_and(|(at, kind)| kind == expiry && at <= Instant::now());
                if due {
                    match expiry {
                        Expiry::SlowHead => {
                            debug!(%peer, "request head not received in time; closing");
                            return;
                        }
                        Expiry::Idle => {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        }
    }
}

/// Refused connections, logged as one line per interval rather than one per connection.
#[derive(Default)]
struct RefusalLog {
    since: Option<Instant>,
    total: u64,
    per_ip: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn record(&mut self, refusal: Refusal, ip: IpAddr) {
        metrics::counter!(
            crate::telemetry::CONNECTIONS_REFUSED,
            "reason" => match refusal { Refusal::Total => "total", Refusal::PerIp => "per_ip" }
        )
        .increment(1);
        match refusal {
            Refusal::Total => self.total += 1,
            Refusal::PerIp => self.per_ip += 1,
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Self::EVERY || self.total + self.per_ip == 1 {
            warn!(
                at_total_cap = self.total,
                at_per_ip_cap = self.per_ip,
                last_ip = %ip,
                "connections refused"
            );
            *self = Self {
                since: Some(Instant::now()),
                ..Self::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_cap_the_total_and_each_ip_and_give_places_back() {
        let admissions = Arc::new(Admissions {
            total: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            max_total: 3,
            max_per_ip: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admissions.admit(a).unwrap();
        let _second = admissions.admit(a).unwrap();
        assert!(matches!(admissions.admit(a), Err(Refusal::PerIp)));
        let _third = admissions.admit(b).unwrap();
        assert!(matches!(admissions.admit(b), Err(Refusal::Total)));
        drop(first);
        let _fourth = admissions
            .admit(a)
            .expect("a closed connection frees its place");
        assert_eq!(admissions.total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_fd_limit_is_at_its_hard_limit() {
        let soft = raise_fd_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_fd_limit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(soft, limit.rlim_max);
    }
}

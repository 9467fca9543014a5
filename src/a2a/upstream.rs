//! The outbound side of the proxy: a pooled HTTP(S) client whose connector resolves, filters
//! every address through the URL-safety policy and connects only to an address that passed (no
//! DNS-rebinding window), never follows redirects and ignores proxy variables; plus the relay
//! rules for the answer (caps, timeouts). It decides nothing about callers or routes.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpStream, time::Instant};

use crate::url_safety::{Resolver, UrlPolicy};

/// The most an agent's answer may be (docs/a2a.md §1.8).
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no address of the agent passes the URL-safety policy")]
    Blocked,
    #[error("agent unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("agent URL has no host")]
    NoHost,
}

/// Resolves, filters by policy, connects to the first address that passed and answered.
#[derive(Clone)]
pub struct SafeConnector {
    policy: UrlPolicy,
    resolver: Arc<dyn Resolver>,
}

impl tower::Service<Uri> for SafeConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoHost)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let addresses = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => connector
                    .resolver
                    .resolve(host, port)
                    .await
                    .map_err(ConnectError::Unreachable)?,
            };
            let allowed: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|address| connector.policy.check_ip(address.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(ConnectError::Blocked);
            }
            let mut last = None;
            for address in allowed {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(TokioIo::new(stream));
                    }
                    Ok(Err(err)) => last = Some(err),
                    Err(_) => {
                        last = Some(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        ));
                    }
                }
            }
            Err(ConnectError::Unreachable(last.unwrap_or_else(|| {
                std::io::Error::other("no address answered")
            })))
        })
    }
}

/// How a dispatch failed before a usable answer.
#[derive(Debug, Clone)]
pub enum DispatchError {
    /// The policy refused every address (at dial time).
    Blocked,
    /// Nothing answered: refused, DNS, TLS, connect timeout.
    Unreachable(String),
    /// Connected, then no answer in time (idle or ceiling): the agent is busy.
    Busy(String),
}

/// A complete answer of an agent.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Result<Bytes, BodyFailure>,
}

/// The headers arrived; the body did not.
#[derive(Debug, Clone)]
pub enum BodyFailure {
    TooLarge,
    Read(String),
}

/// The pooled outbound client.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<SafeConnector>, Full<Bytes>>,
}

/// Whether the target showed life (a heartbeat) after the given moment; a silent upstream
/// whose agent still beats has its idle timer restarted (docs/a2a.md §1.7).
pub type Alive =
    Arc<dyn Fn(chrono::DateTime<chrono::Utc>) -> BoxFuture<'static, bool> + Send + Sync>;

/// Time limits of one dispatch.
#[derive(Clone)]
pub struct Limits {
    /// Restarted by every chunk of the answer, and by the target's heartbeats.
    pub idle: Duration,
    /// None: no ceiling.
    pub deadline: Option<Instant>,
    pub alive: Option<Alive>,
}

impl Upstream {
    pub fn new(policy: UrlPolicy, resolver: Arc<dyn Resolver>) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(SafeConnector { policy, resolver });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self { client }
    }

    /// POSTs `body` to `url` exactly as registered and reads the whole answer within `limits`.
    pub async fn post(
        &self,
        url: &str,
        body: String,
        headers: HeaderMap,
        limits: &Limits,
    ) -> Result<Answer, DispatchError> {
        let response = self.open(url, body, headers, limits).await?;
        Ok(read_answer(response, limits).await)
    }

    /// POSTs and returns once the answer's headers have arrived.
    pub async fn open(
        &self,
        url: &str,
        body: String,
        headers: HeaderMap,
        limits: &Limits,
    ) -> Result<Response<Incoming>, DispatchError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| DispatchError::Unreachable("agent URL does not parse".to_owned()))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| DispatchError::Unreachable(err.to_string()))?;
        *request.headers_mut() = headers;
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match within(limits, self.client.request(request)).await {
            Some(Ok(response)) => Ok(response),
            Some(Err(err)) => Err(classify(&err)),
            None => Err(DispatchError::Busy("no answer in time".to_owned())),
        }
    }
}

pub fn content_type(response: &Response<Incoming>) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Reads a whole answer (capped at 10 MiB, declared or actual).
pub async fn read_answer(response: Response<Incoming>, limits: &Limits) -> Answer {
    let status = response.status();
    let content_type = content_type(&response);
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let body = if declared.is_some_and(|length| length > MAX_RESPONSE_BYTES) {
        Err(BodyFailure::TooLarge)
    } else {
        read_capped(response.into_body(), limits).await
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// Splits an SSE body into events as they arrive: each event is returned with its bytes
/// exactly as sent (field lines and the blank line that ends it). Every chunk restarts the
/// idle timer; one event may not exceed 10 MiB.
pub struct SseEvents {
    body: Incoming,
    buffer: BytesMut,
    limits: Limits,
    done: bool,
}

impl SseEvents {
    pub fn new(body: Incoming, limits: &Limits) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            limits: limits.clone(),
            done: false,
        }
    }

    pub async fn next(&mut self) -> Result<Option<Bytes>, BodyFailure> {
        loop {
            if let Some(end) = event_end(&self.buffer) {
                return Ok(Some(self.buffer.split_to(end).freeze()));
            }
            if self.done {
                // A last event without its blank line still counts.
                return Ok((!self.buffer.is_empty()).then(|| self.buffer.split().freeze()));
            }
            if self.buffer.len() > MAX_RESPONSE_BYTES {
                return Err(BodyFailure::TooLarge);
            }
            match within(&self.limits, self.body.frame()).await {
                None => return Err(BodyFailure::Read("agent stopped streaming".to_owned())),
                Some(None) => self.done = true,
                Some(Some(Err(err))) => return Err(BodyFailure::Read(err.to_string())),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Where the first complete event ends (after its terminating blank line), if any.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut index = 0;
    while index < buffer.len() {
        let rest = &buffer[index..];
        for terminator in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if rest.starts_with(terminator) {
                return Some(index + terminator.len());
            }
        }
        index += 1;
    }
    None
}

/// The JSON of an event's `data:` lines (joined by newlines, as SSE defines).
pub fn event_data(event: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(event);
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.strip_prefix(' ').unwrap_or(data))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// Reads a body chunk by chunk: each chunk restarts the idle timer; the total is capped.
async fn read_capped(mut body: Incoming, limits: &Limits) -> Result<Bytes, BodyFailure> {
    let mut collected = BytesMut::new();
    loop {
        match within(limits, body.frame()).await {
            None => return Err(BodyFailure::Read("agent stopped answering".to_owned())),
            Some(None) => return Ok(collected.freeze()),
            Some(Some(Err(err))) => return Err(BodyFailure::Read(err.to_string())),
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > MAX_RESPONSE_BYTES {
                        return Err(BodyFailure::TooLarge);
                    }
                    collected.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Runs `future` until the idle timer or the deadline, whichever is first; None on expiry.
/// An idle timer that runs out while the target still beats starts again.
pub(super) async fn within<F: std::future::Future>(
    limits: &Limits,
    future: F,
) -> Option<F::Output> {
    tokio::pin!(future);
    loop {
        let since = chrono::Utc::now();
        let idle_end = Instant::now() + limits.idle;
        let end = limits
            .deadline
            .map_or(idle_end, |deadline| deadline.min(idle_end));
        match tokio::time::timeout_at(end, &mut future).await {
            Ok(output) => return Some(output),
            Err(_)
                if limits
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline) =>
            {
                return None;
            }
            Err(_) => match &limits.alive {
                Some(alive) if alive(since).await => continue,
                _ => return None,
            },
        }
    }
}

/// Sorts a client error by type, never by its text: a refused dial is "unreachable"; a
/// connection that broke after it was made means the agent is busy.
fn classify(err: &hyper_util::client::legacy::Error) -> DispatchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return match connect {
                ConnectError::Blocked => DispatchError::Blocked,
                other => DispatchError::Unreachable(other.to_string()),
            };
        }
        source = cause.source();
    }
    if err.is_connect() {
        DispatchError::Unreachable(err.to_string())
    } else {
        DispatchError::Busy(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_their_blank_line_in_any_line_ending() {
        assert_eq!(event_end(b"data: 1\n\ndata: 2\n\n"), Some(9));
        assert_eq!(event_end(b"data: 1\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: partial\n"), None);
        assert_eq!(
            event_data(b"event: x\ndata: {\"a\":\ndata: 1}\n\n"),
            b"{\"a\":\n1}"
        );
    }
}

//! What a request without a recognised credential may make the server hold (docs/decisions.md D19).
//! Credentials are looked at before any body is read: a bearer the server knows passes
//! untouched; any other request has its body charged, byte by byte (gRPC: by each message's
//! declared length, which the decoder reserves up front), against its connection's budget and
//! a process-wide one, until its answer's head exists — by then the handler has decided who is
//! calling. A body that would overdraw either budget, or that arrives too slowly, fails.
//! Requests that did not come off a socket (the in-process gateway's calls) are not charged.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request};
use bytes::Buf;
use http::{HeaderMap, header};
use http_body::{Body as HttpBody, Frame};
use tokio::time::Sleep;

use crate::client_ip::Caller;

/// A bearer the server was asked about during this request, and its answer.
#[derive(Clone)]
struct Recognised {
    bearer: String,
    known: bool,
}

/// The message of the status a body fails with when a budget is spent.
pub const BUDGET_SPENT: &str = "server busy: too much unauthenticated data in flight";
/// The message of the status a body fails with when it arrives too slowly.
pub const BODY_TIMEOUT: &str = "request body not received in time";

/// Bytes in use against a limit.
#[derive(Debug)]
pub struct BufferPool {
    used: AtomicUsize,
    limit: usize,
}

impl BufferPool {
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes currently held.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One connection's budget; the listener puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionBudget(Arc<BufferPool>);

impl ConnectionBudget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BufferPool::new(limit)))
    }
}

/// Whether a bearer is a live credential of this deployment (any kind). Errors count as "no":
/// the request is then merely bounded, and its handler gives the real answer. `client` is
/// the caller's address, for a check that is itself a counted request.
pub trait CredentialCheck: Send + Sync + 'static {
    fn recognizes<'a>(
        &'a self,
        bearer: &'a str,
        client: std::net::IpAddr,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// A standalone gateway's check: asks the control plane (`WhoAmI` with `any_credential`) and
/// remembers the bearers it recognised for a few seconds.
pub struct RemoteCheck {
    workspaces: crate::WorkspacesClient,
    recognised: Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    hasher: std::hash::RandomState,
}

impl RemoteCheck {
    /// Remembered this long; a revoked credential is bounded again after it.
    const REMEMBER: Duration = Duration::from_secs(10);

    pub fn new(transport: crate::Transport) -> Self {
        Self {
            workspaces: crate::WorkspacesClient::new(transport),
            recognised: Mutex::default(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl CredentialCheck for RemoteCheck {
    fn recognizes<'a>(
        &'a self,
        bearer: &'a str,
        client: std::net::IpAddr,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            use std::hash::BuildHasher;
            // A keyed hash: the table never holds a credential, and a collision would only
            // spare one request the budget, never pass an auth gate.
            let key = self.hasher.hash_one(bearer);
            {
                let recognised = self.recognised.lock().expect("recognised poisoned");
                if recognised
                    .get(&key)
                    .is_some_and(|at| at.elapsed() < Self::REMEMBER)
                {
                    return true;
                }
            }
            let mut request = tonic::Request::new(crate::pb::WhoAmIRequest {
                workspace_id: None,
                any_credential: true,
            });
            let Ok(value) = format!("Bearer {bearer}").parse() else {
                return false;
            };
            request.metadata_mut().insert("authorization", value);
            if let Ok(client) = client.to_string().parse() {
                request.metadata_mut().insert("x-forwarded-for", client);
            }
            let known = self.workspaces.clone().who_am_i(request).await.is_ok();
            if known {
                let mut recognised = self.recognised.lock().expect("recognised poisoned");
                if recognised.len() > 100_000 {
                    recognised.retain(|_, at| at.elapsed() < Self::REMEMBER);
                }
                recognised.insert(key, std::time::Instant::now());
            }
            known
        })
    }
}

/// The pre-auth policy shared by the REST edge and the gRPC routes.
#[derive(Clone)]
pub struct PreAuth {
    check: Arc<dyn CredentialCheck>,
    pool: Arc<BufferPool>,
    body_timeout: Duration,
}

impl PreAuth {
    /// `total` bounds the bytes every unauthenticated request together may hold.
    pub fn new(check: Arc<dyn CredentialCheck>, total: usize, body_timeout: Duration) -> Self {
        Self {
            check,
            pool: Arc::new(BufferPool::new(total)),
            body_timeout,
        }
    }

    /// The process-wide pool, for tests and metrics.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }
}

/// The bearer of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

impl PreAuth {
    /// Who the rate limiter counts for a request: its credential when the server recognises
    /// it, else its client address.
    pub async fn caller(&self, request: &mut Request) -> Caller {
        if self.recognised(request).await
            && let Some(bearer) = bearer(request.headers())
        {
            return Caller::credential(bearer);
        }
        Caller::Address(crate::client_ip::of(request.extensions()))
    }

    /// Whether the server knows the request's bearer: asked once per request and bearer (the
    /// limiter and the budget both need it; a session cookie may still become the bearer in
    /// between), the answer kept in the request's extensions.
    async fn recognised(&self, request: &mut Request) -> bool {
        let Some(bearer) = bearer(request.headers()) else {
            return false;
        };
        if let Some(Recognised {
            bearer: asked,
            known,
        }) = request.extensions().get()
            && asked == bearer
        {
            return *known;
        }
        let client = crate::client_ip::of(request.extensions());
        let known = self.check.recognizes(bearer, client).await;
        let asked = Recognised {
            bearer: bearer.to_owned(),
            known,
        };
        request.extensions_mut().insert(asked);
        known
    }

    /// Looks at a request's credential before its body is read; a request without a
    /// recognised one has its body charged. Hold the returned guard until the answer's head
    /// exists: dropping it returns the charge. REST bodies also get the body-read timeout.
    pub async fn admit(&self, mut request: Request, framing: Framing) -> (Request, Option<Settle>) {
        let Some(ConnectionBudget(connection)) = request.extensions().get().cloned() else {
            return (request, None);
        };
        // Nothing to buffer, nothing to check.
        if request.body().is_end_stream() {
            return (request, None);
        }
        let known = self.recognised(&mut request).await;
        if known && framing == Framing::Grpc {
            return (request, None);
        }
        let charge = (!known).then(|| {
            Arc::new(Charge {
                pools: [connection, self.pool.clone()],
                held: Mutex::new(Some(0)),
            })
        });
        let timeout = self.body_timeout;
        let request = request.map(|body| {
            Body::new(ChargedBody {
                inner: body,
                charge: charge.clone(),
                framing,
                message: MessageState::Header {
                    have: 0,
                    header: [0; 5],
                },
                timeout,
                deadline: None,
            })
        });
        (request, charge.map(Settle))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Bytes as they arrive.
    Raw,
    /// Length-prefixed gRPC messages: each declared length is charged when its header arrives.
    Grpc,
}

/// One request's bytes against both pools; `None` once settled (nothing more is charged).
struct Charge {
    pools: [Arc<BufferPool>; 2],
    held: Mutex<Option<usize>>,
}

impl Charge {
    fn try_add(&self, bytes: usize) -> bool {
        let mut held = self.held.lock().expect("charge poisoned");
        let Some(total) = held.as_mut() else {
            return true;
        };
        let [connection, process] = &self.pools;
        if !connection.try_take(bytes) {
            return false;
        }
        if !process.try_take(bytes) {
            connection.give_back(bytes);
            return false;
        }
        *total += bytes;
        true
    }

    fn settled(&self) -> bool {
        self.held.lock().expect("charge poisoned").is_none()
    }

    fn settle(&self) {
        if let Some(total) = self.held.lock().expect("charge poisoned").take() {
            for pool in &self.pools {
                pool.give_back(total);
            }
        }
    }
}

/// Settles a charge when the answer's head exists, or the request is abandoned.
pub struct Settle(Arc<Charge>);

impl Drop for Settle {
    fn drop(&mut self) {
        self.0.settle();
    }
}

enum MessageState {
    Header { have: usize, header: [u8; 5] },
    Body { remaining: usize },
}

/// A request body read under a charge (when unauthenticated) and a deadline.
struct ChargedBody {
    inner: Body,
    charge: Option<Arc<Charge>>,
    framing: Framing,
    message: MessageState,
    timeout: Duration,
    /// Raw: the whole body's; gRPC: the current message's.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl ChargedBody {
    fn exempt(&self) -> bool {
        self.charge.as_ref().is_none_or(|charge| charge.settled())
    }

    /// Charges a data frame; false when a budget is spent.
    fn account(&mut self, mut data: &[u8]) -> bool {
        let Some(charge) = self.charge.clone() else {
            return true;
        };
        match self.framing {
            Framing::Raw => charge.try_add(data.len()),
            Framing::Grpc => {
                while !data.is_empty() {
                    match &mut self.message {
                        MessageState::Header { have, header } => {
                            let take = (5 - *have).min(data.len());
                            header[*have..*have + take].copy_from_slice(&data[..take]);
                            *have += take;
                            data = &data[take..];
                            if *have == 5 {
                                let declared = (&header[1..]).get_u32() as usize;
                                if !charge.try_add(declared + 5) {
                                    return false;
                                }
                                self.message = MessageState::Body {
                                    remaining: declared,
                                };
                            }
                        }
                        MessageState::Body { remaining } => {
                            let take = (*remaining).min(data.len());
                            *remaining -= take;
                            data = &data[take..];
                        }
                    }
                    if matches!(self.message, MessageState::Body { remaining: 0 }) {
                        self.message = MessageState::Header {
                            have: 0,
                            header: [0; 5],
                        };
                        self.deadline = None;
                    }
                }
                true
            }
        }
    }

    /// Whether bytes of a message (gRPC) or of the body (raw) are still due.
    fn awaiting(&self) -> bool {
        match self.framing {
            Framing::Raw => true,
            Framing::Grpc => !matches!(self.message, MessageState::Header { have: 0, .. }),
        }
    }
}

impl HttpBody for ChargedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // The clock starts when the body first makes us wait (a body already received
                // costs no timer). Streams that passed authentication, and authenticated gRPC,
                // run without a deadline.
                let timed = this.framing == Framing::Raw || !this.exempt();
                if timed && this.awaiting() {
                    let timeout = this.timeout;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(axum::Error::new(
                            tonic::Status::deadline_exceeded(BODY_TIMEOUT),
                        ))));
                    }
                }
                return Poll::Pending;
            }
        };
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && !this.exempt()
            && !this.account(data)
        {
            return Poll::Ready(Some(Err(axum::Error::new(
                tonic::Status::resource_exhausted(BUDGET_SPENT),
            ))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The status a body failed with, if it was one of ours (or any status in the chain).
pub(crate) fn status_of<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a tonic::Status> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(status) = err.downcast_ref::<tonic::Status>() {
            return Some(status);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn charged(
        limit_connection: usize,
        limit_total: usize,
        framing: Framing,
    ) -> (ChargedBody, Arc<Charge>) {
        let charge = Arc::new(Charge {
            pools: [
                Arc::new(BufferPool::new(limit_connection)),
                Arc::new(BufferPool::new(limit_total)),
            ],
            held: Mutex::new(Some(0)),
        });
        let body = ChargedBody {
            inner: Body::empty(),
            charge: Some(charge.clone()),
            framing,
            message: MessageState::Header {
                have: 0,
                header: [0; 5],
            },
            timeout: Duration::from_secs(5),
            deadline: None,
        };
        (body, charge)
    }

    #[test]
    fn a_grpc_header_is_charged_its_declared_length_across_split_frames() {
        let (mut body, charge) = charged(1 << 20, 1 << 20, Framing::Grpc);
        let mut message = vec![0u8];
        message.extend_from_slice(&1000u32.to_be_bytes());
        assert!(body.account(&message[..3]));
        assert_eq!(
            charge.pools[0].used(),
            0,
            "nothing until the header is whole"
        );
        assert!(body.account(&message[3..]));
        assert_eq!(charge.pools[0].used(), 1005);
        assert_eq!(charge.pools[1].used(), 1005);
        assert!(body.account(&[7; 1000]));
        assert!(matches!(body.message, MessageState::Header { have: 0, .. }));
        charge.settle();
        assert_eq!(charge.pools[0].used(), 0);
        assert_eq!(charge.pools[1].used(), 0);
    }

    #[test]
    fn a_declared_length_beyond_the_budget_fails_and_takes_nothing() {
        let (mut body, charge) = charged(1 << 20, 4 << 20, Framing::Grpc);
        let mut header = vec![0u8];
        header.extend_from_slice(&(10u32 << 20).to_be_bytes());
        assert!(!body.account(&header));
        assert_eq!(charge.pools[0].used(), 0);
        assert_eq!(charge.pools[1].used(), 0);
    }

    #[test]
    fn after_settling_nothing_is_charged() {
        let (mut body, charge) = charged(10, 10, Framing::Raw);
        assert!(body.account(&[0; 8]));
        charge.settle();
        assert!(body.exempt());
        assert!(body.account(&[0; 100]), "settled: unbounded");
        assert_eq!(charge.pools[0].used(), 0);
    }

    #[tokio::test]
    async fn a_raw_body_over_budget_fails_with_the_busy_status() {
        let charge = Arc::new(Charge {
            pools: [Arc::new(BufferPool::new(4)), Arc::new(BufferPool::new(100))],
            held: Mutex::new(Some(0)),
        });
        let body = ChargedBody {
            inner: Body::from("0123456789"),
            charge: Some(charge),
            framing: Framing::Raw,
            message: MessageState::Header {
                have: 0,
                header: [0; 5],
            },
            timeout: Duration::from_secs(5),
            deadline: None,
        };
        let err = body.collect().await.expect_err("over budget");
        let status = status_of(&err).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}

//! What a request may make the server hold, and for how long, before and after its credential
//! is known (docs/decisions.md D19). Credentials are looked at before any body is read.
//!
//! - Without a recognised credential, a body is charged as its bytes arrive, against its
//!   connection, its client address and the process, until the answer's head exists (by then the
//!   handler has decided who is calling). The process keeps a reserve that only small bodies may
//!   use, so no flood of large ones locks out a register or a sign-in. A gRPC message reaches the
//!   decoder only whole (the decoder reserves a message's declared length as soon as it reads
//!   the header, so passing headers on would let a few bytes reserve megabytes) and may declare
//!   at most [`UNAUTHENTICATED_MESSAGE_BYTES`]. Such a call must be answered within the body
//!   timeout of its opening; a REST body must arrive whole within it.
//! - With a recognised credential, each gRPC message still arriving is charged its declared
//!   length (what the decoder reserved) against that credential until it is whole.
//! - Every gRPC call's first message must begin within the first-message timeout of its
//!   opening, and a body or message under way may not stall for longer than the body timeout.
//!
//! Requests that did not come off a socket (the in-process gateway's calls) are not metered.

use std::{
    collections::{HashMap, VecDeque},
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
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep};

use crate::client_ip::Caller;

/// A bearer the server was asked about during this request, and its answer.
#[derive(Clone)]
struct Recognised {
    bearer: String,
    known: bool,
}

/// The message of the status a body fails with when a pre-auth budget is spent.
pub const BUDGET_SPENT: &str = "server busy: too much unauthenticated data in flight";
/// The message of the status a body fails with when its credential has too much under way.
pub const CREDENTIAL_BUDGET_SPENT: &str =
    "too many unfinished messages in flight for this credential";
/// The message of the status a body fails with when it arrives too slowly.
pub const BODY_TIMEOUT: &str = "request body not received in time";
/// The message of the status an unauthenticated gRPC message over the cap fails with.
pub const MESSAGE_TOO_LARGE: &str = "message too large for an unauthenticated call";

/// The largest gRPC message a call without a recognised credential may send: what REST takes
/// as a body (a register is ~150 bytes, an agent card a few KiB).
pub const UNAUTHENTICATED_MESSAGE_BYTES: usize = 1024 * 1024;
/// A body whose whole charge stays within this may use the process pool's reserve.
const SMALL_BODY: usize = 64 * 1024;
/// The share of the process pool kept for small bodies.
const RESERVE_DIVISOR: usize = 16;
/// Per-caller pools kept before idle ones are dropped.
const PRUNE_SHARES_AT: usize = 4096;

/// What the pre-auth policy allows; see the module's description.
#[derive(Debug, Clone, Copy)]
pub struct PreAuthLimits {
    /// Bytes every request without a recognised credential together may hold.
    pub total: usize,
    /// The same, per client address.
    pub per_address: usize,
    /// Declared bytes of a recognised credential's unfinished gRPC messages.
    pub per_credential: usize,
    /// A gRPC call's first message must begin within this of the call's opening.
    pub first_message: Duration,
    /// An unauthenticated call must be answered, and a REST body arrive, within this; a body
    /// or message under way may not stall longer than this.
    pub body: Duration,
}

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
        self.try_take_within(bytes, self.limit)
    }

    /// Takes `bytes` if the pool's use stays within `cap` (at most its limit).
    fn try_take_within(&self, bytes: usize, cap: usize) -> bool {
        let cap = cap.min(self.limit);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= cap)
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

/// A pool per client address and per recognised credential, created on first use.
#[derive(Default)]
struct Shares {
    pools: Mutex<HashMap<Caller, Arc<BufferPool>>>,
}

impl Shares {
    fn of(&self, caller: Caller, limit: usize) -> Arc<BufferPool> {
        let mut pools = self.pools.lock().expect("shares poisoned");
        if pools.len() >= PRUNE_SHARES_AT && !pools.contains_key(&caller) {
            pools.retain(|_, pool| Arc::strong_count(pool) > 1 || pool.used() > 0);
        }
        pools
            .entry(caller)
            .or_insert_with(|| Arc::new(BufferPool::new(limit)))
            .clone()
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
    recognised: Mutex<HashMap<u64, std::time::Instant>>,
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
    shares: Arc<Shares>,
    limits: PreAuthLimits,
}

impl PreAuth {
    pub fn new(check: Arc<dyn CredentialCheck>, limits: PreAuthLimits) -> Self {
        Self {
            check,
            pool: Arc::new(BufferPool::new(limits.total)),
            shares: Arc::default(),
            limits,
        }
    }

    /// The process-wide pool, for tests and metrics.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn body_timeout(&self) -> Duration {
        self.limits.body
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

    /// Looks at a request's credential before its body is read and meters the body by the
    /// module's rules. Hold the returned guard until the answer's head exists: dropping it
    /// returns an unauthenticated request's charge.
    pub async fn admit(&self, mut request: Request, framing: Framing) -> (Request, Option<Settle>) {
        let Some(ConnectionBudget(connection)) = request.extensions().get().cloned() else {
            return (request, None);
        };
        // Nothing to read, nothing to meter.
        if request.body().is_end_stream() {
            return (request, None);
        }
        let opened = Instant::now();
        let known = self.recognised(&mut request).await;
        let mode = match bearer(request.headers()) {
            Some(bearer) if known => Mode::Recognised {
                shares: self.shares.clone(),
                caller: Caller::credential(bearer),
                limit: self.limits.per_credential,
                pool: None,
            },
            _ => {
                let address = Caller::Address(crate::client_ip::of(request.extensions()));
                Mode::Unrecognised(Arc::new(Charge {
                    connection,
                    address: self.shares.of(address, self.limits.per_address),
                    process: self.pool.clone(),
                    held: Mutex::new(Some(0)),
                }))
            }
        };
        let settle = match &mode {
            Mode::Unrecognised(charge) => Some(Settle(charge.clone())),
            Mode::Recognised { .. } => None,
        };
        let limits = self.limits;
        let request = request.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                framing,
                mode,
                limits,
                opened,
                started: false,
                message: MessageState::Header {
                    have: 0,
                    header: [0; 5],
                },
                reserved: 0,
                held_back: BytesMut::new(),
                queued: VecDeque::new(),
                ended: false,
                clock: None,
            })
        });
        (request, settle)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Bytes as they arrive.
    Raw,
    /// Length-prefixed gRPC messages.
    Grpc,
}

/// An unauthenticated request's bytes against its pools; `None` once settled (nothing more is
/// charged).
struct Charge {
    connection: Arc<BufferPool>,
    address: Arc<BufferPool>,
    process: Arc<BufferPool>,
    held: Mutex<Option<usize>>,
}

impl Charge {
    fn try_add(&self, bytes: usize) -> bool {
        let mut held = self.held.lock().expect("charge poisoned");
        let Some(total) = held.as_mut() else {
            return true;
        };
        // Large bodies stop short of the reserve; small ones may use it.
        let whole = total.saturating_add(bytes);
        let process_cap = if whole <= SMALL_BODY {
            self.process.limit
        } else {
            self.process.limit - self.process.limit / RESERVE_DIVISOR
        };
        if !self.connection.try_take(bytes) {
            return false;
        }
        if !self.address.try_take(bytes) {
            self.connection.give_back(bytes);
            return false;
        }
        if !self.process.try_take_within(bytes, process_cap) {
            self.connection.give_back(bytes);
            self.address.give_back(bytes);
            return false;
        }
        *total = whole;
        true
    }

    fn settled(&self) -> bool {
        self.held.lock().expect("charge poisoned").is_none()
    }

    fn settle(&self) {
        if let Some(total) = self.held.lock().expect("charge poisoned").take() {
            for pool in [&self.connection, &self.address, &self.process] {
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

/// Who is sending a body, as far as metering goes.
enum Mode {
    Unrecognised(Arc<Charge>),
    /// A recognised credential: unfinished gRPC messages are charged to its pool, looked up
    /// the first time one is.
    Recognised {
        shares: Arc<Shares>,
        caller: Caller,
        limit: usize,
        pool: Option<Arc<BufferPool>>,
    },
}

enum MessageState {
    Header { have: usize, header: [u8; 5] },
    Body { declared: usize, remaining: usize },
}

/// Which deadline a body runs under while it waits for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// A gRPC call's first message has not begun.
    FirstMessage,
    /// An unauthenticated gRPC call, from its opening until it is answered.
    Lifetime,
    /// An unauthenticated REST body, from the first wait until it is whole.
    Whole,
    /// Bytes of a body or message under way: the longest silence allowed.
    Idle,
}

/// Why a body fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    BudgetSpent,
    CredentialBudgetSpent,
    TooLarge,
    TimedOut,
}

impl Refusal {
    fn into_error(self) -> axum::Error {
        let status = match self {
            Self::BudgetSpent => tonic::Status::resource_exhausted(BUDGET_SPENT),
            Self::CredentialBudgetSpent => {
                tonic::Status::resource_exhausted(CREDENTIAL_BUDGET_SPENT)
            }
            Self::TooLarge => tonic::Status::resource_exhausted(MESSAGE_TOO_LARGE),
            Self::TimedOut => tonic::Status::deadline_exceeded(BODY_TIMEOUT),
        };
        axum::Error::new(status)
    }
}

/// A request body read under the module's rules.
struct MeteredBody {
    inner: Body,
    framing: Framing,
    mode: Mode,
    limits: PreAuthLimits,
    opened: Instant,
    /// Some byte of the body arrived.
    started: bool,
    /// Where the gRPC framing stands.
    message: MessageState,
    /// Bytes of the current message charged to the credential's pool.
    reserved: usize,
    /// An unauthenticated call's bytes of a message not yet whole.
    held_back: BytesMut,
    /// Frames to pass on before reading more: held-back bytes, then the frame that ended them.
    queued: VecDeque<Frame<Bytes>>,
    /// The inner body ended; nothing more is read from it.
    ended: bool,
    clock: Option<(Clock, Pin<Box<Sleep>>)>,
}

impl MeteredBody {
    /// An unauthenticated call not yet answered.
    fn unanswered(&self) -> bool {
        matches!(&self.mode, Mode::Unrecognised(charge) if !charge.settled())
    }

    fn mid_message(&self) -> bool {
        !matches!(self.message, MessageState::Header { have: 0, .. })
    }

    /// The deadline that applies while the body waits, if any.
    fn due_clock(&self) -> Option<(Clock, Instant)> {
        let now = Instant::now();
        match self.framing {
            Framing::Grpc if !self.started => Some((
                Clock::FirstMessage,
                self.opened + self.limits.first_message.min(self.limits.body),
            )),
            Framing::Grpc if self.unanswered() => {
                Some((Clock::Lifetime, self.opened + self.limits.body))
            }
            Framing::Grpc => self
                .mid_message()
                .then(|| (Clock::Idle, now + self.limits.body)),
            Framing::Raw if self.unanswered() => Some((Clock::Whole, now + self.limits.body)),
            Framing::Raw => Some((Clock::Idle, now + self.limits.body)),
        }
    }

    /// Polls the deadline that applies now; true when it passed.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((clock, at)) = self.due_clock() else {
            self.clock = None;
            return false;
        };
        if self
            .clock
            .as_ref()
            .is_none_or(|(running, _)| *running != clock)
        {
            self.clock = Some((clock, Box::pin(tokio::time::sleep_until(at))));
        }
        let (_, sleep) = self.clock.as_mut().expect("set above");
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Bytes arrived: silence clocks start again.
    fn progressed(&mut self) {
        self.started = true;
        if matches!(self.clock, Some((Clock::Idle | Clock::FirstMessage, _))) {
            self.clock = None;
        }
    }

    /// Meters one data frame; what to pass on now (nothing while a message is held back).
    fn on_data(&mut self, data: Bytes) -> Result<Option<Bytes>, Refusal> {
        self.progressed();
        let unanswered = self.unanswered();
        if let (true, Mode::Unrecognised(charge)) = (unanswered, &self.mode) {
            if !charge.try_add(data.len()) {
                return Err(Refusal::BudgetSpent);
            }
            // A call that keeps sending never waits, so its lifetime is checked here too.
            if self.framing == Framing::Grpc && self.opened.elapsed() >= self.limits.body {
                return Err(Refusal::TimedOut);
            }
        }
        if self.framing == Framing::Raw {
            return Ok(Some(data));
        }
        let boundary = self.walk(&data, unanswered)?;
        if let Mode::Recognised { .. } = self.mode {
            self.reserve_unfinished()?;
        }
        if !unanswered {
            // Answered (or recognised): nothing is held back any more.
            if self.held_back.is_empty() {
                return Ok(Some(data));
            }
            self.held_back.extend_from_slice(&data);
            return Ok(Some(self.held_back.split().freeze()));
        }
        let before = self.held_back.len();
        self.held_back.extend_from_slice(&data);
        Ok(boundary.map(|end| self.held_back.split_to(before + end).freeze()))
    }

    /// Walks `data` through the gRPC framing; the offset just past the last message that
    /// ended in it, if any.
    fn walk(&mut self, data: &[u8], unanswered: bool) -> Result<Option<usize>, Refusal> {
        let mut offset = 0;
        let mut boundary = None;
        while offset < data.len() {
            match &mut self.message {
                MessageState::Header { have, header } => {
                    let take = (5 - *have).min(data.len() - offset);
                    header[*have..*have + take].copy_from_slice(&data[offset..offset + take]);
                    *have += take;
                    offset += take;
                    if *have == 5 {
                        let declared = (&header[1..]).get_u32() as usize;
                        if unanswered && declared > UNAUTHENTICATED_MESSAGE_BYTES {
                            return Err(Refusal::TooLarge);
                        }
                        self.message = MessageState::Body {
                            declared,
                            remaining: declared,
                        };
                    }
                }
                MessageState::Body { remaining, .. } => {
                    let take = (*remaining).min(data.len() - offset);
                    *remaining -= take;
                    offset += take;
                }
            }
            if matches!(self.message, MessageState::Body { remaining: 0, .. }) {
                self.message = MessageState::Header {
                    have: 0,
                    header: [0; 5],
                };
                self.release();
                boundary = Some(offset);
            }
        }
        Ok(boundary)
    }

    /// A recognised credential's message still arriving holds what the decoder reserved for
    /// it: its declared length.
    fn reserve_unfinished(&mut self) -> Result<(), Refusal> {
        let MessageState::Body { declared, .. } = self.message else {
            return Ok(());
        };
        if self.reserved > 0 {
            return Ok(());
        }
        let Mode::Recognised {
            shares,
            caller,
            limit,
            pool,
        } = &mut self.mode
        else {
            return Ok(());
        };
        let pool = pool.get_or_insert_with(|| shares.of(*caller, *limit));
        let bytes = declared + 5;
        if !pool.try_take(bytes) {
            return Err(Refusal::CredentialBudgetSpent);
        }
        self.reserved = bytes;
        Ok(())
    }

    fn flush_held_back(&mut self) {
        if !self.held_back.is_empty() {
            let rest = self.held_back.split().freeze();
            self.queued.push_back(Frame::data(rest));
        }
    }

    fn release(&mut self) {
        if let (
            Mode::Recognised {
                pool: Some(pool), ..
            },
            reserved @ 1..,
        ) = (&self.mode, self.reserved)
        {
            pool.give_back(reserved);
            self.reserved = 0;
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                // The peer's error ends the body as it is.
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    // What was held back goes on: an unfinished message then fails in the
                    // decoder, as it would have.
                    this.ended = true;
                    this.flush_held_back();
                    continue;
                }
                Poll::Pending => {
                    if this.timed_out(cx) {
                        return Poll::Ready(Some(Err(Refusal::TimedOut.into_error())));
                    }
                    return Poll::Pending;
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => {
                    this.flush_held_back();
                    this.queued.push_back(trailers);
                    continue;
                }
            };
            match this.on_data(data) {
                Ok(Some(pass)) => return Poll::Ready(Some(Ok(Frame::data(pass)))),
                Ok(None) => {}
                Err(refusal) => return Poll::Ready(Some(Err(refusal.into_error()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.ended || self.inner.is_end_stream())
            && self.held_back.is_empty()
            && self.queued.is_empty()
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
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    const LIMITS: PreAuthLimits = PreAuthLimits {
        total: 1 << 20,
        per_address: 1 << 20,
        per_credential: 1 << 20,
        first_message: Duration::from_secs(10),
        body: Duration::from_secs(30),
    };

    /// A body fed frame by frame from the test.
    fn fed() -> (mpsc::Sender<Bytes>, Body) {
        let (sender, receiver) = mpsc::channel::<Bytes>(16);
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .map(|bytes| Ok::<_, std::convert::Infallible>(Frame::data(bytes)));
        (sender, Body::new(StreamBody::new(stream)))
    }

    use futures::StreamExt;

    fn unrecognised(
        inner: Body,
        framing: Framing,
        pools: [usize; 3],
    ) -> (MeteredBody, Arc<Charge>) {
        let [connection, address, process] = pools.map(|limit| Arc::new(BufferPool::new(limit)));
        let charge = Arc::new(Charge {
            connection,
            address,
            process,
            held: Mutex::new(Some(0)),
        });
        (
            metered(inner, framing, Mode::Unrecognised(charge.clone())),
            charge,
        )
    }

    fn recognised(inner: Body, shares: &Arc<Shares>, limit: usize) -> MeteredBody {
        let mode = Mode::Recognised {
            shares: shares.clone(),
            caller: Caller::credential("a-token"),
            limit,
            pool: None,
        };
        metered(inner, Framing::Grpc, mode)
    }

    fn metered(inner: Body, framing: Framing, mode: Mode) -> MeteredBody {
        MeteredBody {
            inner,
            framing,
            mode,
            limits: LIMITS,
            opened: Instant::now(),
            started: false,
            message: MessageState::Header {
                have: 0,
                header: [0; 5],
            },
            reserved: 0,
            held_back: BytesMut::new(),
            queued: VecDeque::new(),
            ended: false,
            clock: None,
        }
    }

    fn grpc_header(declared: u32) -> Vec<u8> {
        let mut header = vec![0u8];
        header.extend_from_slice(&declared.to_be_bytes());
        header
    }

    /// The next frame's data, or the status it failed with.
    async fn next(body: &mut MeteredBody) -> Result<Option<Bytes>, tonic::Status> {
        match body.frame().await {
            Some(Ok(frame)) => Ok(frame.into_data().ok()),
            Some(Err(err)) => Err(status_of(err.into_inner().as_ref()).unwrap().clone()),
            None => Ok(None),
        }
    }

    #[tokio::test]
    async fn an_unauthenticated_message_is_charged_as_it_arrives_and_passed_on_whole() {
        let (feed, inner) = fed();
        let (mut body, charge) = unrecognised(inner, Framing::Grpc, [1 << 20; 3]);
        feed.send(Bytes::from(grpc_header(1000))).await.unwrap();
        feed.send(Bytes::from(vec![7u8; 400])).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), next(&mut body)).await;
        assert!(
            waiting.is_err(),
            "nothing reaches the decoder before the message is whole"
        );
        assert_eq!(
            charge.process.used(),
            405,
            "what arrived, not what was declared"
        );
        let mut rest = vec![7u8; 600];
        rest.extend_from_slice(&grpc_header(0));
        rest.extend_from_slice(&grpc_header(10)[..2]);
        feed.send(Bytes::from(rest)).await.unwrap();
        let whole = next(&mut body).await.unwrap().unwrap();
        assert_eq!(
            whole.len(),
            1005 + 5,
            "both whole messages, not the next one's start"
        );
        assert_eq!(charge.address.used(), 1012);
        drop(Settle(charge.clone()));
        assert_eq!(
            charge.connection.used() + charge.address.used() + charge.process.used(),
            0
        );
    }

    #[tokio::test]
    async fn an_unauthenticated_message_may_not_declare_more_than_the_cap() {
        let (feed, inner) = fed();
        let (mut body, charge) = unrecognised(inner, Framing::Grpc, [1 << 30; 3]);
        feed.send(Bytes::from(grpc_header(
            UNAUTHENTICATED_MESSAGE_BYTES as u32 + 1,
        )))
        .await
        .unwrap();
        let refused = next(&mut body).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::ResourceExhausted, MESSAGE_TOO_LARGE)
        );
        assert_eq!(charge.process.used(), 5);
    }

    #[test]
    fn large_bodies_leave_the_reserve_to_small_ones() {
        let limit = SMALL_BODY * RESERVE_DIVISOR;
        let reserve = limit / RESERVE_DIVISOR;
        let process = Arc::new(BufferPool::new(limit));
        let charge = |address| Charge {
            connection: Arc::new(BufferPool::new(usize::MAX)),
            address: Arc::new(BufferPool::new(address)),
            process: process.clone(),
            held: Mutex::new(Some(0)),
        };
        let large = charge(usize::MAX);
        assert!(large.try_add(limit - reserve - 10));
        assert!(!large.try_add(11), "a large body stops at the reserve");
        let small = charge(usize::MAX);
        assert!(small.try_add(SMALL_BODY), "a small one takes it");
        assert_eq!(process.used(), limit - 10);
        assert!(
            !charge(usize::MAX).try_add(11),
            "and the process pool is full"
        );
        assert!(!charge(100).try_add(101), "an address has its share");
    }

    #[tokio::test]
    async fn a_credentials_unfinished_messages_hold_their_declared_length() {
        let shares = Arc::new(Shares::default());
        let (feed, inner) = fed();
        let mut body = recognised(inner, &shares, 3000);
        let mut first = grpc_header(2000);
        first.extend_from_slice(&[1; 100]);
        feed.send(Bytes::from(first)).await.unwrap();
        assert_eq!(
            next(&mut body).await.unwrap().unwrap().len(),
            105,
            "passed on at once"
        );
        let pool = shares.of(Caller::credential("a-token"), 3000);
        assert_eq!(pool.used(), 2005);
        let (second_feed, second_inner) = fed();
        let mut second = recognised(second_inner, &shares, 3000);
        second_feed
            .send(Bytes::from(grpc_header(2000)))
            .await
            .unwrap();
        let refused = next(&mut second).await.unwrap_err();
        assert_eq!(refused.message(), CREDENTIAL_BUDGET_SPENT);
        feed.send(Bytes::from(vec![1; 1900])).await.unwrap();
        next(&mut body).await.unwrap();
        assert_eq!(pool.used(), 0, "a whole message is the handler's");
        feed.send(Bytes::from(grpc_header(500))).await.unwrap();
        next(&mut body).await.unwrap();
        assert_eq!(pool.used(), 505);
        drop(body);
        assert_eq!(pool.used(), 0, "an abandoned message gives its share back");
    }

    /// Short deadlines, so the clock tests run on real time.
    const QUICK: PreAuthLimits = PreAuthLimits {
        first_message: Duration::from_millis(200),
        body: Duration::from_millis(300),
        ..LIMITS
    };

    fn within(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed < expected + Duration::from_millis(150)
    }

    #[tokio::test]
    async fn the_first_message_is_due_and_a_message_under_way_may_not_stall() {
        let shares = Arc::new(Shares::default());
        let (_silent, inner) = fed();
        let mut silent = recognised(inner, &shares, 1 << 20);
        silent.limits = QUICK;
        let started = Instant::now();
        let refused = next(&mut silent).await.unwrap_err();
        assert_eq!(refused.message(), BODY_TIMEOUT);
        assert!(within(started.elapsed(), QUICK.first_message));

        let (feed, inner) = fed();
        let mut slow = recognised(inner, &shares, 1 << 20);
        slow.limits = QUICK;
        feed.send(Bytes::from(grpc_header(100))).await.unwrap();
        next(&mut slow).await.unwrap();
        let begun = Instant::now();
        for _ in 0..5 {
            tokio::time::sleep(QUICK.body / 2).await;
            feed.send(Bytes::from(vec![0; 10])).await.unwrap();
            next(&mut slow).await.unwrap();
        }
        assert!(
            begun.elapsed() > QUICK.body * 2,
            "longer than one silence in all"
        );
        let stalled = Instant::now();
        let refused = next(&mut slow).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
        assert!(within(stalled.elapsed(), QUICK.body), "silence is timed");

        // Between messages a stream may be quiet for as long as it likes.
        let (feed, inner) = fed();
        let mut idle = recognised(inner, &shares, 1 << 20);
        idle.limits = QUICK;
        feed.send(Bytes::from(grpc_header(0))).await.unwrap();
        next(&mut idle).await.unwrap();
        let quiet = tokio::time::timeout(QUICK.body * 3, next(&mut idle)).await;
        assert!(quiet.is_err());
    }

    #[tokio::test]
    async fn an_unauthenticated_call_has_a_lifetime_and_a_rest_body_a_deadline() {
        let (feed, inner) = fed();
        let (mut body, charge) = unrecognised(inner, Framing::Grpc, [1 << 20; 3]);
        body.limits = QUICK;
        let opened = Instant::now();
        // Small whole messages, each in time: the call still ends when its lifetime does.
        let refused = loop {
            let _ = feed.send(Bytes::from(grpc_header(0))).await;
            tokio::time::sleep(QUICK.body / 10).await;
            match tokio::time::timeout(QUICK.body / 5, next(&mut body)).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(status)) => break status,
            }
            assert!(
                opened.elapsed() < QUICK.body * 2,
                "still open after its lifetime"
            );
        };
        assert_eq!(refused.message(), BODY_TIMEOUT);
        assert!(within(opened.elapsed(), QUICK.body));
        drop(Settle(charge));

        let (feed, inner) = fed();
        let (mut rest, _charge) = unrecognised(inner, Framing::Raw, [1 << 20; 3]);
        rest.limits = QUICK;
        feed.send(Bytes::from_static(b"{\"id\":")).await.unwrap();
        next(&mut rest).await.unwrap();
        let refused = next(&mut rest).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_raw_body_over_budget_fails_with_the_busy_status() {
        let (mut body, _charge) =
            unrecognised(Body::from("0123456789"), Framing::Raw, [4, 100, 100]);
        let refused = next(&mut body).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }
}

//! The proxy pipeline after authentication: normalize the body, resolve the target (cached),
//! apply the hierarchy and budget rules, pick a route (attached stream, URL, poll mailbox),
//! deliver in a task of its own, and turn the answer or failure into an outcome. A busy agent's
//! call is queued unless the agent retries by itself.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
use sea_orm::EntityTrait;
use tokio::time::Instant;
use tracing::warn;

use crate::{
    domain::{WorkspaceStatus, validate},
    error::ApiResult,
    hot::CachedRoute,
    store::{DbContext, entities::workspace},
    workspaces::budget,
};

use super::{
    A2aState, Caller, FORWARDED_HEADERS, Outcome, ProxyCall, ProxyError, attach,
    envelope::{self, Envelope},
    queue,
    receipts::{deliver_to_mailbox, record},
    upstream::{self, Answer, BodyFailure, DispatchError, Limits},
};

/// The ceiling for workspace and system callers; user callers have none.
const AGENT_CEILING: Duration = Duration::from_secs(30 * 60);

/// A request that passed every check and goes to an agent's URL.
pub(super) struct Dispatch {
    pub(super) caller: Caller,
    pub(super) target: Arc<CachedRoute>,
    pub(super) envelope: Envelope,
    pub(super) destination: Destination,
    pub(super) headers: HeaderMap,
    pub(super) limits: Limits,
}

pub(super) enum Prepared {
    Mailbox(Outcome),
    Http(Box<Dispatch>),
}

/// The pipeline of docs/a2a.md §1.4 after authentication. Delivery and its side effects run in
/// their own task, so a caller that goes away cancels neither the agent's work nor the records of
/// it.
pub async fn proxy(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Outcome, ProxyError> {
    dispatch(state, caller, call, QueueWhenBusy::Yes).await
}

/// One more delivery attempt for a queued call: a busy agent is reported, not queued again.
pub(crate) async fn proxy_once(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Outcome, ProxyError> {
    dispatch(state, caller, call, QueueWhenBusy::No).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueWhenBusy {
    Yes,
    No,
}

pub(super) async fn dispatch(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
    queue: QueueWhenBusy,
) -> Result<Outcome, ProxyError> {
    let dispatch = match prepare(state, caller, call).await? {
        Prepared::Mailbox(outcome) => return Ok(outcome),
        Prepared::Http(dispatch) => dispatch,
    };
    // A streaming call is never queued: its caller is waiting on a stream.
    let queue = if dispatch.envelope.is_streaming() {
        QueueWhenBusy::No
    } else {
        queue
    };
    let state = state.clone();
    tokio::spawn(async move { deliver(&state, *dispatch, queue).await })
        .await
        .map_err(|_| ProxyError::Internal("failed to create proxy request"))?
}

pub(super) async fn prepare(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<Prepared, ProxyError> {
    let envelope = envelope::normalize(&call.body)?;
    let target_id = validate::parse_uuid(&call.target).ok_or(ProxyError::WorkspaceNotFound)?;
    let target = target_route(state, &target_id)
        .await?
        .filter(|route| route.status != WorkspaceStatus::Removed);
    if let Caller::Workspace(caller_id) = &caller
        && *caller_id != target_id
    {
        // An unknown or removed target denies here, so agents cannot probe ids.
        if target.is_none() || !state.hierarchy.can_communicate(caller_id, &target_id).await {
            return Err(ProxyError::AccessDenied);
        }
    }
    let target = target.ok_or(ProxyError::WorkspaceNotFound)?;
    // The limit is cached with the route (every replica drops it when the limit changes); the
    // spend is read fresh, as it moves with every answer.
    if target.budget_limit.is_some()
        && budget::spend(&state.db, &target.id)
            .await
            .context("lookup failed")?
            .is_some_and(|spend| spend.exhausted())
    {
        return Err(ProxyError::BudgetExceeded);
    }
    let Some(route) = Route::of(&target) else {
        return Err(ProxyError::NoUrl {
            status: target.status,
        });
    };
    // Route (1): an attached stream goes first (docs/a2a.md §1.5).
    let destination = match (attach::Attached::find(state, &target.id).await, route) {
        (Some(attachment), _) => Destination::Attached(attachment),
        (None, Route::Http(url)) => Destination::Http(url),
        (None, Route::Mailbox) => {
            return deliver_to_mailbox(state, &caller, &target, &envelope)
                .await
                .map(Prepared::Mailbox)
                .map_err(ProxyError::from);
        }
    };
    let limits = Limits {
        idle: idle_timeout(state, &target.id),
        deadline: match (call.timeout_seconds, &caller) {
            (Some(0), _) | (None, Caller::User) => None,
            (Some(seconds), _) => Some(Instant::now() + Duration::from_secs(u64::from(seconds))),
            (None, _) => Some(Instant::now() + AGENT_CEILING),
        },
        alive: Some(beats_since(state, &target.id)),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &call.forward_headers {
        let name = name.to_ascii_lowercase();
        if FORWARDED_HEADERS.contains(&name.as_str())
            && let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
        {
            headers.insert(name, value);
        }
    }
    if let Some(source) = caller.source_id()
        && let Ok(value) = HeaderValue::try_from(source)
    {
        headers.insert("x-source-workspace-id", value);
    }
    Ok(Prepared::Http(Box::new(Dispatch {
        caller,
        target,
        envelope,
        destination,
        headers,
        limits,
    })))
}

pub(super) fn elapsed_ms(started: std::time::Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// A whole-answer dispatch and its records.
pub(super) async fn deliver(
    state: &A2aState,
    dispatch: Dispatch,
    queue: QueueWhenBusy,
) -> Result<Outcome, ProxyError> {
    let Dispatch {
        caller,
        target,
        envelope,
        destination,
        headers,
        limits,
    } = dispatch;
    let started = std::time::Instant::now();
    let result = match &destination {
        Destination::Http(url) => {
            state
                .upstream
                .post(url, envelope.body.clone(), headers, &limits)
                .await
        }
        Destination::Attached(attached) => {
            attached.call(&target.id, &caller, &envelope, &limits).await
        }
    };
    let duration_ms = elapsed_ms(started);
    let busy = match &result {
        Err(DispatchError::Busy(_)) => {
            busy_outcome(state, &caller, &target.id, &envelope, queue).await
        }
        _ => None,
    };
    // The attempt is recorded whatever follows, after the answer (docs/a2a.md §1.11), in a
    // task of its own so that a caller who leaves cannot cancel it.
    let recorded = result.clone();
    let background = state.clone();
    let budgeted = target.budget_limit.is_some();
    let recording = tokio::spawn(async move {
        record(
            &background,
            &caller,
            &target,
            &envelope,
            &recorded,
            duration_ms,
        )
        .await;
    });
    if budgeted {
        // Its spend counts before the caller can send the next call.
        let _ = recording.await;
    }
    busy.unwrap_or_else(|| answer(result, duration_ms))
}

/// Whether the target's latest heartbeat, on whichever replica it landed, declared a native
/// session. Read only on the busy path; this replica's memory answers if the store cannot.
async fn declares_native_session(state: &A2aState, target: &str) -> bool {
    match state.liveness.snapshots(&[target.to_owned()]).await {
        Ok(snapshots) => snapshots
            .get(target)
            .is_some_and(|beat| beat.native_session),
        Err(_) => state.hot.native_session(target),
    }
}

/// What a busy agent's caller gets instead of the plain busy answer: the native-session
/// answer, or the call queued for the agent's next spare capacity. None: the plain answer.
async fn busy_outcome(
    state: &A2aState,
    caller: &Caller,
    target: &str,
    envelope: &Envelope,
    queue: QueueWhenBusy,
) -> Option<Result<Outcome, ProxyError>> {
    if declares_native_session(state, target).await {
        return Some(Err(ProxyError::Busy {
            native_session: true,
        }));
    }
    if queue == QueueWhenBusy::No {
        return None;
    }
    match queue::enqueue(state, caller, target, envelope).await {
        Ok((queue_id, queue_depth)) => Some(Ok(Outcome::Queued {
            queue_id,
            queue_depth,
        })),
        Err(err) => {
            warn!(workspace_id = %target, error = %err, "busy call not queued");
            None
        }
    }
}

/// Where a checked call goes.
pub(super) enum Destination {
    Http(String),
    Attached(attach::Attached),
}

pub(super) enum Route {
    Http(String),
    Mailbox,
}

impl Route {
    /// Where the target's row says a call goes, before attached streams are considered; `None`
    /// when it has no way to be reached yet.
    pub(super) fn of(target: &CachedRoute) -> Option<Self> {
        match target.url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) if url.starts_with("remote://") => Some(Self::Mailbox),
            Some(url) => Some(Self::Http(url.to_owned())),
            None if target.runtime == "external" => Some(Self::Mailbox),
            None => None,
        }
    }
}

/// How a call to `id` would travel now: `(route, url)` as `GetRoute` reports it.
pub(super) async fn describe_route(
    state: &A2aState,
    id: &str,
) -> ApiResult<(&'static str, String)> {
    let target = target_route(state, id).await?;
    let url = target
        .as_ref()
        .and_then(|target| target.url.clone())
        .filter(|url| !url.starts_with("remote://"))
        .unwrap_or_default();
    if attach::Attached::find(state, id).await.is_some() {
        return Ok(("attached", url));
    }
    Ok(match target.as_deref().and_then(Route::of) {
        Some(Route::Http(_)) => ("url", url),
        Some(Route::Mailbox) => ("mailbox", url),
        None => ("none", url),
    })
}

/// The routing facts of a target, cached between events that change them.
async fn target_route(state: &A2aState, id: &str) -> ApiResult<Option<Arc<CachedRoute>>> {
    if let Some(route) = state.hot.route(id) {
        return Ok(Some(route));
    }
    let Some(row) = workspace::Entity::find_by_id(id.to_owned())
        .one(&state.db)
        .await
        .context("lookup failed")?
    else {
        return Ok(None);
    };
    let route = Arc::new(CachedRoute {
        id: row.id,
        name: row.name,
        status: row.status,
        runtime: row.runtime,
        url: row.url,
        budget_limit: row.budget_limit,
    });
    state.hot.remember_route(route.clone());
    Ok(Some(route))
}

/// Whether the target has beaten since a moment, from the liveness store (any replica).
fn beats_since(state: &A2aState, target: &str) -> upstream::Alive {
    let liveness = state.liveness.clone();
    let target = target.to_owned();
    Arc::new(move |since| {
        let (liveness, target) = (liveness.clone(), target.clone());
        Box::pin(async move {
            liveness
                .snapshots(std::slice::from_ref(&target))
                .await
                .ok()
                .and_then(|snapshots| snapshots.get(&target).map(|beat| beat.at > since))
                .unwrap_or(false)
        })
    })
}

/// The target's own idle timeout (from its heartbeat), else the platform's.
fn idle_timeout(state: &A2aState, target: &str) -> Duration {
    state
        .hot
        .idle_timeout(target)
        .map_or(state.settings.a2a_idle_timeout, |seconds| {
            Duration::from_secs(seconds.unsigned_abs())
        })
}

/// Turns a dispatch into the outcome or the documented failure.
pub(super) fn answer(
    result: Result<Answer, DispatchError>,
    duration_ms: u32,
) -> Result<Outcome, ProxyError> {
    match result {
        Ok(Answer {
            status,
            content_type,
            body: Ok(body),
        }) => Ok(Outcome::Delivered {
            status: status.as_u16(),
            body,
            content_type,
            duration_ms,
        }),
        Ok(Answer {
            body: Err(BodyFailure::TooLarge),
            ..
        }) => Err(ProxyError::TooLarge),
        Ok(Answer {
            status,
            body: Err(BodyFailure::Read(_)),
            ..
        }) => Err(ProxyError::ReadFailed {
            delivery_confirmed: (200..400).contains(&status.as_u16()),
        }),
        Err(DispatchError::Blocked) => Err(ProxyError::UnsafeUrl),
        Err(DispatchError::Unreachable(_)) => Err(ProxyError::Unreachable),
        Err(DispatchError::Busy(_)) => Err(ProxyError::Busy {
            native_session: false,
        }),
    }
}

//! The streaming form of the pipeline: an SSE answer is relayed event by event while the
//! agent's stream is read to its end, also after the caller left; anything else arrives whole.

use bytes::Bytes;
use http::HeaderMap;

use super::{
    A2aState, Caller, Outcome, ProxyCall, ProxyError,
    pipeline::{Destination, Dispatch, Prepared, answer, elapsed_ms, prepare},
    receipts::record,
    upstream::{self, Answer, DispatchError},
};

/// One item of a streamed call, in order: `Opened`, `Event`s, then the end of the channel;
/// or a single `Whole`/`Failed`.
#[derive(Debug)]
pub enum StreamItem {
    Whole(Outcome),
    Opened { status: u16, content_type: String },
    Event(Bytes),
    Closed { duration_ms: u32 },
    Failed(ProxyError),
}

/// Events buffered between the agent and a slow caller.
const STREAM_BUFFER: usize = 64;

/// The streaming form of [`proxy`]: SSE answers are relayed event by event as they arrive.
/// The upstream is read to its end by a task of its own, also after the receiver is dropped.
pub async fn proxy_stream(
    state: &A2aState,
    caller: Caller,
    call: ProxyCall,
) -> Result<tokio::sync::mpsc::Receiver<StreamItem>, ProxyError> {
    let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    match prepare(state, caller, call).await? {
        Prepared::Mailbox(outcome) => {
            let _ = sender.try_send(StreamItem::Whole(outcome));
        }
        Prepared::Http(dispatch) => {
            let state = state.clone();
            tokio::spawn(async move { stream(&state, *dispatch, sender).await });
        }
    }
    Ok(receiver)
}

/// A streamed dispatch: SSE answers event by event, anything else whole. The record is
/// written when the stream ends, with the last event's JSON as the response.
pub(super) async fn stream(
    state: &A2aState,
    mut dispatch: Dispatch,
    sender: tokio::sync::mpsc::Sender<StreamItem>,
) {
    let started = std::time::Instant::now();
    let headers = std::mem::take(&mut dispatch.headers);
    let (result, relayed) = relay_events(state, &dispatch, headers, &sender).await;
    let duration_ms = elapsed_ms(started);
    let Dispatch {
        caller,
        target,
        envelope,
        ..
    } = &dispatch;
    record(state, caller, target, envelope, &result, duration_ms).await;
    let last = match (relayed, answer(result, duration_ms)) {
        (true, Ok(_)) => StreamItem::Closed { duration_ms },
        (_, outcome) => failed(outcome),
    };
    let _ = sender.send(last).await;
}

/// Sends the caller each event of an SSE answer as it arrives. Returns the answer to record
/// (for SSE, its last event's JSON) and whether its events were relayed; a send error only
/// means the caller left, and the agent's stream is still read to its end.
async fn relay_events(
    state: &A2aState,
    dispatch: &Dispatch,
    headers: HeaderMap,
    sender: &tokio::sync::mpsc::Sender<StreamItem>,
) -> (Result<Answer, DispatchError>, bool) {
    let Dispatch {
        caller,
        target,
        envelope,
        destination,
        limits,
        ..
    } = dispatch;
    let url = match destination {
        Destination::Http(url) => url,
        Destination::Attached(attached) => {
            let events = sender.clone();
            let result = attached
                .stream(&target.id, caller, envelope, limits, move |head, event| {
                    let events = events.clone();
                    Box::pin(async move {
                        if let Some((status, content_type)) = head {
                            let _ = events
                                .send(StreamItem::Opened {
                                    status: status.as_u16(),
                                    content_type,
                                })
                                .await;
                        }
                        let _ = events.send(StreamItem::Event(event)).await;
                    })
                })
                .await;
            let relayed =
                matches!(&result, Ok(answer) if answer.content_type == "text/event-stream");
            return (result, relayed);
        }
    };
    let response = match state
        .upstream
        .open(url, envelope.body.clone(), headers, limits)
        .await
    {
        Ok(response) => response,
        Err(err) => return (Err(err), false),
    };
    let status = response.status();
    let content_type = upstream::content_type(&response);
    if !(status.is_success() && content_type.starts_with("text/event-stream")) {
        return (Ok(upstream::read_answer(response, limits).await), false);
    }
    let _ = sender
        .send(StreamItem::Opened {
            status: status.as_u16(),
            content_type: content_type.clone(),
        })
        .await;
    let mut events = upstream::SseEvents::new(response.into_body(), limits);
    let mut last = Bytes::new();
    let body = loop {
        match events.next().await {
            Ok(Some(event)) => {
                last = Bytes::from(upstream::event_data(&event));
                let _ = sender.send(StreamItem::Event(event)).await;
            }
            Ok(None) => break Ok(last),
            Err(failure) => break Err(failure),
        }
    };
    let answer = Answer {
        status,
        content_type,
        body,
    };
    (Ok(answer), true)
}

pub(super) fn failed(result: Result<Outcome, ProxyError>) -> StreamItem {
    match result {
        Ok(outcome) => StreamItem::Whole(outcome),
        Err(err) => StreamItem::Failed(err),
    }
}

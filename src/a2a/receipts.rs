//! What a proxied call leaves behind: its activity row (batched), its events, token usage, and
//! for a poll-mailbox target the row that is the delivery itself.

use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};

use crate::{
    domain::EventType,
    error::ApiResult,
    hot::CachedRoute,
    store::{self, DbContext, entities::activity_log},
};

use super::{
    A2aState, Caller, Outcome,
    envelope::Envelope,
    records::{Record, TokenUsage},
    upstream::{Answer, DispatchError},
};

/// The activity row and events of docs/a2a.md §1.11 for one dispatch (success or failure).
pub(super) async fn record(
    state: &A2aState,
    caller: &Caller,
    target: &CachedRoute,
    envelope: &Envelope,
    result: &Result<Answer, DispatchError>,
    duration_ms: u32,
) {
    let (status, response_body, error_detail, summary) = match result {
        Ok(answer) => {
            let json_body = answer
                .body
                .as_ref()
                .ok()
                .and_then(|body| serde_json::from_slice::<Value>(body).ok());
            // A redirect is an upstream error too: it is never followed (docs/a2a.md §1.7).
            let ok = answer.status.is_success() && answer.body.is_ok();
            (
                if ok { "ok" } else { "error" },
                json_body,
                None,
                format!("{} → {}", envelope.method, target.name),
            )
        }
        Err(err) => {
            let text = match err {
                DispatchError::Blocked => "workspace URL is not publicly routable".to_owned(),
                DispatchError::Unreachable(text) | DispatchError::Busy(text) => text.clone(),
            };
            (
                "error",
                None,
                Some(text.clone()),
                format!("A2A request to {} failed: {text}", target.name),
            )
        }
    };
    let tool_trace = response_body
        .as_ref()
        .map(|body| body["result"]["metadata"]["tool_trace"].clone())
        .filter(|trace| !trace.is_null());
    let duration = i32::try_from(duration_ms).unwrap_or(i32::MAX);
    let receipt = Receipt {
        caller,
        target,
        envelope,
        status,
        summary,
        duration_ms: duration,
    };
    let row = activity_log::ActiveModel {
        response_body: Set(response_body.as_ref().map(Value::to_string)),
        tool_trace: Set(tool_trace.as_ref().map(Value::to_string)),
        error_detail: Set(error_detail),
        ..receipt.row()
    };
    let delivered = status == "ok";
    let outbound = match caller {
        Caller::Workspace(caller_id) if delivered => Some(caller_id.clone()),
        _ => None,
    };
    let usage = response_body.as_ref().and_then(TokenUsage::reported_by);
    let charged = usage.is_some() && target.budget_limit.is_some();
    state
        .records
        .write(Record {
            row,
            outbound,
            usage,
        })
        .await;
    if charged {
        // A budgeted workspace's spend is written before its answer is relayed, so the next
        // call, on any replica, is judged on it (docs/operations.md §5).
        state.records.flush().await;
    }
    receipt.announce(state, tool_trace.as_ref());
    if delivered && *caller == Caller::User {
        state.events.broadcast_only(
            EventType::A2aResponse,
            Some(&target.id),
            json!({"response_body": response_body, "method": envelope.method, "duration_ms": duration}),
        );
    }
}

/// The `a2a_receive` row of one call on its target, and its `ACTIVITY_LOGGED` event.
struct Receipt<'a> {
    caller: &'a Caller,
    target: &'a CachedRoute,
    envelope: &'a Envelope,
    status: &'static str,
    summary: String,
    duration_ms: i32,
}

impl Receipt<'_> {
    /// The row, without an answer (callers add response, trace and error).
    fn row(&self) -> activity_log::ActiveModel {
        activity_log::ActiveModel {
            id: Set(activity_log::new_id()),
            workspace_id: Set(self.target.id.clone()),
            activity_type: Set("a2a_receive".to_owned()),
            source_id: Set(self.caller.source_id()),
            target_id: Set(Some(self.target.id.clone())),
            method: Set(Some(self.envelope.method.clone())),
            summary: Set(Some(self.summary.clone())),
            request_body: Set(Some(self.envelope.body.clone())),
            response_body: Set(None),
            tool_trace: Set(None),
            duration_ms: Set(Some(self.duration_ms)),
            status: Set(self.status.to_owned()),
            error_detail: Set(None),
            idempotency_key: Set(None),
            created_at: Set(store::now()),
        }
    }

    fn announce(&self, state: &A2aState, tool_trace: Option<&Value>) {
        let mut logged = json!({
            "activity_type": "a2a_receive", "method": self.envelope.method, "summary": self.summary,
            "status": self.status, "source_id": self.caller.source_id(), "target_id": self.target.id,
            "duration_ms": self.duration_ms,
        });
        if let Some(trace) = tool_trace {
            logged["tool_trace"] = trace.clone();
        }
        state
            .events
            .broadcast_only(EventType::ActivityLogged, Some(&self.target.id), logged);
    }
}

/// Route (3): the row is the delivery; the agent reads it through its activity cursor.
pub(super) async fn deliver_to_mailbox(
    state: &A2aState,
    caller: &Caller,
    target: &CachedRoute,
    envelope: &Envelope,
) -> ApiResult<Outcome> {
    let receipt = Receipt {
        caller,
        target,
        envelope,
        status: "queued",
        summary: format!("{} → {}", envelope.method, target.name),
        duration_ms: 0,
    };
    let activity_id = activity_log::new_id();
    let row = activity_log::ActiveModel {
        id: Set(activity_id.clone()),
        idempotency_key: Set(envelope.message_id.clone()),
        ..receipt.row()
    };
    activity_log::Entity::insert(row)
        .exec(&state.db)
        .await
        .context("failed to queue message")?;
    receipt.announce(state, None);
    Ok(Outcome::Mailbox { activity_id })
}

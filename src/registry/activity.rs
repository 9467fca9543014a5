//! Activity logs (docs/registry.md §7): agents report what they did, the canvas and poll-mode
//! SDK agents read it back (cursor reads with `since_id`), and `notify` pushes an agent's
//! message to its user.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    domain::{EventType, validate},
    error::ApiResult,
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{activity_log, workspace},
    },
};

use super::error::RegistryError;

pub(super) const ACTIVITY_TYPES: [&str; 7] = [
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
];
const NOTIFY_PREVIEW_CHARS: usize = 80;

fn non_empty(value: String) -> Option<String> {
    Some(value).filter(|value| !value.is_empty())
}

pub(super) async fn log(
    state: &Platform,
    metadata: &MetadataMap,
    request: pb::LogActivityRequest,
) -> ApiResult<pb::LogActivityResponse> {
    let id = validate::workspace_id(&request.workspace_id)?;
    state.auth.workspace(metadata, &id).await?;
    if request.activity_type.is_empty() {
        return Err(RegistryError::InvalidBody.into());
    }
    if !ACTIVITY_TYPES.contains(&request.activity_type.as_str()) {
        return Err(RegistryError::InvalidActivityType.into());
    }
    if !request.source_id.is_empty()
        && validate::parse_uuid(&request.source_id).as_deref() != Some(id.as_str())
    {
        return Err(RegistryError::SourceMismatch.into());
    }
    let target_id = match non_empty(request.target_id) {
        Some(target) => Some(validate::parse_uuid(&target).ok_or(RegistryError::InvalidTargetId)?),
        None => None,
    };
    store::live_workspace(&state.db, &id).await?;
    let status = non_empty(request.status).unwrap_or_else(|| "ok".to_owned());
    let method = non_empty(request.method);
    let summary = non_empty(request.summary);
    let request_body = request.request_body_json.or(request.metadata_json);
    activity_log::Entity::insert(activity_log::ActiveModel {
        id: Set(activity_log::new_id()),
        workspace_id: Set(id.clone()),
        activity_type: Set(request.activity_type.clone()),
        source_id: Set(Some(id.clone())),
        target_id: Set(target_id.clone()),
        method: Set(method.clone()),
        summary: Set(summary.clone()),
        request_body: Set(request_body),
        response_body: Set(request.response_body_json),
        tool_trace: Set(None),
        duration_ms: Set(request.duration_ms),
        status: Set(status.clone()),
        error_detail: Set(non_empty(request.error_detail)),
        idempotency_key: Set(None),
        created_at: Set(store::now()),
    })
    .exec(&state.db)
    .await
    .context("failed to log activity")?;
    state.events.broadcast_only(
        EventType::ActivityLogged,
        Some(&id),
        json!({
            "activity_type": request.activity_type, "method": method, "summary": summary,
            "status": status, "source_id": id, "target_id": target_id, "duration_ms": request.duration_ms,
        }),
    );
    Ok(pb::LogActivityResponse {})
}

pub(crate) async fn list(
    state: &Platform,
    metadata: &MetadataMap,
    request: &pb::ListActivityRequest,
) -> ApiResult<pb::ListActivityResponse> {
    let id = validate::workspace_id(&request.workspace_id)?;
    let principal = state.auth.workspace(metadata, &id).await?;
    let mut query =
        activity_log::Entity::find().filter(activity_log::Column::WorkspaceId.eq(id.clone()));
    if !request.r#type.is_empty() {
        query = query.filter(activity_log::Column::ActivityType.eq(request.r#type.clone()));
    }
    match request.source.as_str() {
        "" => {}
        "canvas" => query = query.filter(activity_log::Column::SourceId.is_null()),
        "agent" => query = query.filter(activity_log::Column::SourceId.is_not_null()),
        _ => return Err(RegistryError::InvalidSource.into()),
    }
    if !request.peer_id.is_empty() {
        let peer = validate::parse_uuid(&request.peer_id).ok_or(RegistryError::InvalidPeerId)?;
        query = query.filter(activity_log::Column::SourceId.eq(peer));
    }
    if !request.before_ts.is_empty() {
        let before = chrono::DateTime::parse_from_rfc3339(&request.before_ts)
            .map_err(|_| RegistryError::InvalidBeforeTs)?
            .with_timezone(&chrono::Utc);
        query = query.filter(activity_log::Column::CreatedAt.lt(before));
    }
    let cursor_read = !request.since_id.is_empty();
    // docs/decisions.md D17: an agent reading its own mailbox without a cursor (the SDK's first
    // poll) gets the newest rows oldest-first, so the cursor it keeps — the batch's last row — is
    // the newest, and no message is dispatched twice. Operators and the canvas keep newest-first.
    let first_mailbox_poll = !cursor_read
        && request.r#type == "a2a_receive"
        && request.order.is_empty()
        && matches!(principal, crate::auth::Principal::Workspace(_));
    if cursor_read || first_mailbox_poll || !request.peer_id.is_empty() {
        // The agent's own notify rows are not inbound messages; delivering them back to a poll
        // consumer would make it answer itself.
        query = query.filter(
            Condition::any()
                .add(activity_log::Column::Method.is_null())
                .add(activity_log::Column::Method.ne("notify")),
        );
    }
    if cursor_read {
        let gone = || RegistryError::CursorGone;
        let cursor_id = validate::parse_uuid(&request.since_id).ok_or_else(gone)?;
        let cursor = activity_log::Entity::find_by_id(cursor_id.clone())
            .one(&state.db)
            .await
            .context("query failed")?
            .filter(|row| row.workspace_id == id)
            .ok_or_else(gone)?;
        query = query.filter(
            Condition::any()
                .add(activity_log::Column::CreatedAt.gt(cursor.created_at))
                .add(
                    Condition::all()
                        .add(activity_log::Column::CreatedAt.eq(cursor.created_at))
                        .add(activity_log::Column::Id.gt(cursor_id)),
                ),
        );
    }
    let ascending = match request.order.as_str() {
        "" => cursor_read,
        "asc" => true,
        "desc" => false,
        _ => return Err(RegistryError::InvalidOrder.into()),
    };
    let order = if ascending {
        sea_orm::Order::Asc
    } else {
        sea_orm::Order::Desc
    };
    let limit = if request.limit > 0 {
        request.limit.min(500)
    } else {
        100
    };
    let rows = query
        .order_by(activity_log::Column::CreatedAt, order.clone())
        .order_by(activity_log::Column::Id, order)
        .limit(limit as u64)
        .all(&state.db)
        .await
        .context("query failed")?;
    let rows = if first_mailbox_poll {
        rows.into_iter().rev().collect()
    } else {
        rows
    };
    let peers = peer_names(state, &rows).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            let data = (row.activity_type == "a2a_receive")
                .then(|| poll_envelope(&row, &peers, &request.platform_url).to_string());
            pb::ActivityRow {
                created_at: Some(pb::timestamp(row.created_at)),
                id: row.id,
                workspace_id: row.workspace_id,
                activity_type: row.activity_type,
                source_id: row.source_id,
                target_id: row.target_id,
                method: row.method,
                summary: row.summary,
                duration_ms: row.duration_ms,
                status: row.status,
                error_detail: row.error_detail,
                request_body_json: row.request_body,
                response_body_json: row.response_body,
                tool_trace_json: row.tool_trace,
                data_json: data,
            }
        })
        .collect();
    Ok(pb::ListActivityResponse { rows })
}

/// Names and roles of the peers that sent these rows.
async fn peer_names(
    state: &Platform,
    rows: &[activity_log::Model],
) -> ApiResult<std::collections::HashMap<String, (String, Option<String>)>> {
    let ids: Vec<String> = rows
        .iter()
        .filter(|row| row.activity_type == "a2a_receive")
        .filter_map(|row| row.source_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let peers: Vec<(String, String, Option<String>)> = workspace::Entity::find()
        .select_only()
        .column(workspace::Column::Id)
        .column(workspace::Column::Name)
        .column(workspace::Column::Role)
        .filter(workspace::Column::Id.is_in(ids))
        .into_tuple()
        .all(&state.db)
        .await
        .context("query failed")?;
    Ok(peers
        .into_iter()
        .map(|(id, name, role)| (id, (name, role)))
        .collect())
}

/// The `data` envelope the SDK's poll mode reads (docs/registry.md §7.2).
fn poll_envelope(
    row: &activity_log::Model,
    peers: &std::collections::HashMap<String, (String, Option<String>)>,
    platform_url: &str,
) -> Value {
    let source = if row.source_id.is_some() {
        "peer_agent"
    } else {
        "canvas_user"
    };
    let request: Value = row
        .request_body
        .as_deref()
        .and_then(|body| serde_json::from_str(body).ok())
        .unwrap_or_default();
    let text: String = request["params"]["message"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default();
    let mut data = json!({"source": source, "kind": source, "text": text, "activity_id": row.id});
    if let Some(peer) = &row.source_id {
        data["peer_id"] = json!(peer);
        if let Some((name, role)) = peers.get(peer) {
            data["peer_name"] = json!(name);
            data["peer_role"] = json!(role);
        }
        data["agent_card_url"] = json!(format!("{platform_url}/registry/discover/{peer}"));
    }
    data
}

/// The first `max` characters, with an ellipsis only when cut (never splits a character).
fn preview(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

pub(super) async fn notify(
    state: &Platform,
    metadata: &MetadataMap,
    request: pb::NotifyRequest,
) -> ApiResult<pb::NotifyResponse> {
    let id = validate::workspace_id(&request.workspace_id)?;
    state.auth.workspace(metadata, &id).await?;
    if request.message.is_empty() {
        return Err(RegistryError::MessageRequired.into());
    }
    if let Some(i) = request
        .attachments
        .iter()
        .position(|a| a.uri.is_empty() || a.name.is_empty())
    {
        return Err(RegistryError::AttachmentIncomplete { index: i }.into());
    }
    let row = store::live_workspace(&state.db, &id).await?;
    let attachments: Vec<Value> = request
        .attachments
        .iter()
        .map(|a| {
            let mut file = json!({"uri": a.uri, "name": a.name});
            if let Some(mime) = &a.mime_type {
                file["mimeType"] = json!(mime);
            }
            if let Some(size) = a.size {
                file["size"] = json!(size);
            }
            file
        })
        .collect();
    let mut payload = json!({"message": request.message, "workspace_id": id, "name": row.name});
    let mut response = json!({"result": request.message});
    if !attachments.is_empty() {
        payload["attachments"] = json!(attachments);
        response["parts"] = json!(
            attachments
                .iter()
                .map(|file| json!({"kind": "file", "file": file}))
                .collect::<Vec<_>>()
        );
    }
    state
        .events
        .broadcast_only(EventType::AgentMessage, Some(&id), payload);
    let inserted = activity_log::Entity::insert(activity_log::ActiveModel {
        id: Set(activity_log::new_id()),
        workspace_id: Set(id.clone()),
        activity_type: Set("a2a_receive".to_owned()),
        source_id: Set(None),
        target_id: Set(None),
        method: Set(Some("notify".to_owned())),
        summary: Set(Some(format!(
            "Agent message: {}",
            preview(&request.message, NOTIFY_PREVIEW_CHARS)
        ))),
        request_body: Set(None),
        response_body: Set(Some(response.to_string())),
        tool_trace: Set(None),
        duration_ms: Set(None),
        status: Set("ok".to_owned()),
        error_detail: Set(None),
        idempotency_key: Set(None),
        created_at: Set(store::now()),
    })
    .exec(&state.db)
    .await;
    if let Err(err) = inserted {
        warn!(workspace_id = %id, error = %err, "notify activity insert failed");
    }
    Ok(pb::NotifyResponse {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_character_boundaries() {
        assert_eq!(preview("short", 80), "short");
        let long = "é".repeat(81);
        assert_eq!(preview(&long, 80), format!("{}…", "é".repeat(80)));
    }
}

//! Memory routes (docs/runtime.md §1): commit, search and delete, with the reference's shapes
//! (201 on commit is what the runtime checks; search answers a list, never null).

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// `POST /workspaces/{id}/memories`. Unknown fields (the runtime sends `workspace_id`) are
/// ignored.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CommitMemoryBody {
    /// At most 100,000 bytes.
    #[schema(min_length = 1, max_length = 100000)]
    content: String,
    /// GLOBAL only from a root workspace.
    #[schema(pattern = "^(LOCAL|TEAM|GLOBAL)$")]
    scope: String,
    /// Defaults to `general`; at most 50 bytes.
    #[schema(max_length = 50)]
    namespace: Option<String>,
}

/// `GET /workspaces/{id}/memories`: every parameter optional, none ever an error.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// LOCAL, TEAM or GLOBAL; anything else reads the workspace's own rows of every scope.
    scope: Option<String>,
    /// Full-text query; one character matches as a substring.
    q: Option<String>,
    namespace: Option<String>,
    /// 1 to 50 (leading digits count); anything else means 50.
    limit: Option<String>,
}

/// One memory as a search returns it.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemoryEntry {
    id: String,
    /// The author.
    workspace_id: String,
    /// Prefixed `[MEMORY id=… scope=… from=…]: ` when another workspace wrote it, or GLOBAL.
    content: String,
    scope: String,
    namespace: String,
    created_at: Option<String>,
}

/// The limit as Go's `Sscanf("%d")` reads it: an optional sign and the leading digits.
fn leading_int(text: &str) -> i32 {
    let digits_from = usize::from(text.starts_with(['-', '+']));
    let end = text[digits_from..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |at| at + digits_from);
    text[..end].parse().unwrap_or(0)
}

#[utoipa::path(post, path = "/workspaces/{id}/memories", tag = "memories",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = CommitMemoryBody,
    responses((status = 201, body = Object, example = json!({"id": "…", "scope": "TEAM", "namespace": "general"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn commit(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: CommitMemoryBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::CommitMemoryRequest {
        workspace_id: id,
        content: body.content,
        scope: body.scope,
        namespace: body.namespace.unwrap_or_default(),
    };
    let result = gateway
        .memories
        .clone()
        .commit(forwarded.request(request))
        .await;
    render(
        StatusCode::CREATED,
        result,
        |stored| json!({"id": stored.id, "scope": stored.scope, "namespace": stored.namespace}),
    )
}

#[utoipa::path(get, path = "/workspaces/{id}/memories", tag = "memories",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), SearchParams),
    responses((status = 200, body = [MemoryEntry]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn search(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(params): Query<SearchParams>,
) -> Response {
    let request = pb::SearchMemoriesRequest {
        workspace_id: id,
        scope: params.scope.unwrap_or_default(),
        q: params.q.unwrap_or_default(),
        namespace: params.namespace.unwrap_or_default(),
        limit: params.limit.as_deref().map_or(0, leading_int),
    };
    let result = gateway
        .memories
        .clone()
        .search(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |found| {
        found
            .memories
            .into_iter()
            .map(|memory| MemoryEntry {
                created_at: timestamp_opt(memory.created_at.as_ref()),
                id: memory.id,
                workspace_id: memory.workspace_id,
                content: memory.content,
                scope: memory.scope,
                namespace: memory.namespace,
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(delete, path = "/workspaces/{id}/memories/{memory_id}", tag = "memories",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("memory_id" = String, Path, format = Uuid, description = "memory id")),
    responses((status = 200, body = Object, example = json!({"status": "deleted"})),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, memory_id)): Path<(String, String)>,
) -> Response {
    let request = pb::DeleteMemoryRequest {
        workspace_id: id,
        memory_id,
    };
    let result = gateway
        .memories
        .clone()
        .delete(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| json!({"status": "deleted"}))
}

#[cfg(test)]
mod tests {
    use super::leading_int;

    #[test]
    fn the_limit_reads_like_sscanf() {
        for (text, value) in [
            ("10", 10),
            ("10abc", 10),
            ("-3", -3),
            ("abc", 0),
            ("", 0),
            ("+7x", 7),
        ] {
            assert_eq!(leading_int(text), value, "{text}");
        }
    }
}

/// One entry of `POST /admin/memories/import`, as `/admin/memories/export` writes it.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ImportedMemoryBody {
    #[serde(default)]
    content: String,
    /// LOCAL, TEAM or GLOBAL, any case.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    namespace: String,
    /// RFC 3339; kept.
    #[serde(default)]
    created_at: String,
    /// The workspace is found by this name.
    #[serde(default)]
    workspace_name: String,
}

#[utoipa::path(get, path = "/admin/memories/export", tag = "memories",
    description = "Every memory, oldest first, with its author's name and credentials redacted: a JSON array, streamed.",
    responses((status = 200, body = [Object], example = json!([{"id": "…", "content": "…", "scope": "LOCAL", "namespace": "general", "created_at": "2026-12-05T10:00:00Z", "workspace_name": "researcher"}])),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn export(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let entries = match gateway
        .memories
        .clone()
        .export(forwarded.request(pb::ExportMemoriesRequest {}))
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return crate::error::RestError::from(status).into_response(),
    };
    // `[`, the entries comma-separated as they arrive, `]`: the whole backup is never held. A
    // failure midway ends the body early, so the client sees invalid JSON, not a short list.
    let body = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"[")) })
        .chain(entries.enumerate().map(|(index, entry)| {
            let entry = entry.map_err(std::io::Error::other)?;
            let json = json!({
                "id": entry.id, "content": entry.content, "scope": entry.scope,
                "namespace": entry.namespace,
                "created_at": timestamp_opt(entry.created_at.as_ref()),
                "workspace_name": entry.workspace_name,
            });
            let separator = if index == 0 { "" } else { "," };
            Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{separator}{json}")))
        }))
        .chain(futures::stream::once(async {
            Ok(bytes::Bytes::from_static(b"]"))
        }));
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

#[utoipa::path(post, path = "/admin/memories/import", tag = "memories",
    description = "Restores an export in one transaction, matching workspaces by name; what a workspace already holds is skipped. Bodies up to 1 MiB: send a large backup in parts.",
    request_body = [ImportedMemoryBody],
    responses((status = 200, body = Object, example = json!({"imported": 10, "skipped": 2, "errors": 0, "total": 12})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn import(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let entries: Vec<ImportedMemoryBody> = match crate::json::parse_list_body(body).await {
        Ok(entries) => entries,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid JSON")
                .await;
        }
    };
    let request = pb::ImportMemoriesRequest {
        memories: entries
            .into_iter()
            .map(|entry| pb::ImportedMemory {
                content: entry.content,
                scope: entry.scope,
                namespace: entry.namespace,
                created_at: entry.created_at,
                workspace_name: entry.workspace_name,
            })
            .collect(),
    };
    let result = gateway
        .memories
        .clone()
        .import(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |report| json!({"imported": report.imported, "skipped": report.skipped, "errors": report.errors, "total": report.total}),
    )
}

//! Session search (the reference's `GET /workspaces/:id/session-search`): one workspace's
//! activity rows and its own memories, newest first, matching a phrase in any case. Reads only.

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use tonic::metadata::MetadataMap;

use crate::{
    error::ApiResult,
    pb,
    state::Platform,
    store::{
        DbContext,
        entities::{activity_log, memory},
    },
};

const DEFAULT_LIMIT: i32 = 50;
const MAX_LIMIT: i32 = 200;

pub(super) async fn search(
    state: &Platform,
    metadata: &MetadataMap,
    request: &pb::SessionSearchRequest,
) -> ApiResult<pb::SessionSearchResponse> {
    let id = state
        .auth
        .live_workspace(metadata, &request.workspace_id)
        .await?;
    let limit = match request.limit {
        limit if limit > MAX_LIMIT => MAX_LIMIT,
        limit if limit > 0 => limit,
        _ => DEFAULT_LIMIT,
    } as u64;
    let pattern = like_pattern(request.q.trim());
    let matches = |columns: &[Expr]| {
        columns.iter().fold(Condition::any(), |any, column| {
            any.add(
                Expr::expr(Func::lower(column.clone()))
                    .like(LikeExpr::new(pattern.clone()).escape('\\')),
            )
        })
    };
    let mut activities =
        activity_log::Entity::find().filter(activity_log::Column::WorkspaceId.eq(id.clone()));
    let mut memories = memory::Entity::find().filter(memory::Column::WorkspaceId.eq(id.clone()));
    if !request.q.trim().is_empty() {
        use activity_log::Column as A;
        activities = activities.filter(matches(&[
            Expr::col(A::Summary),
            Expr::col(A::ActivityType),
            Expr::col(A::Method),
            Expr::col(A::Status),
            Expr::col(A::RequestBody),
            Expr::col(A::ResponseBody),
        ]));
        memories = memories.filter(matches(&[
            Expr::col(memory::Column::Content),
            Expr::col(memory::Column::Scope),
        ]));
    }
    let activities = activities
        .order_by_desc(activity_log::Column::CreatedAt)
        .limit(limit)
        .all(&state.db)
        .await
        .context("session search failed")?;
    let memories = memories
        .order_by_desc(memory::Column::CreatedAt)
        .limit(limit)
        .all(&state.db)
        .await
        .context("session search failed")?;
    let mut items: Vec<pb::SessionItem> = activities
        .into_iter()
        .map(|row| pb::SessionItem {
            kind: "activity".to_owned(),
            id: row.id,
            workspace_id: row.workspace_id,
            label: row.activity_type,
            content: row.summary.unwrap_or_default(),
            method: row.method.unwrap_or_default(),
            status: row.status,
            request_body_json: row.request_body,
            response_body_json: row.response_body,
            created_at: Some(pb::timestamp(row.created_at)),
        })
        .chain(memories.into_iter().map(|row| pb::SessionItem {
            kind: "memory".to_owned(),
            id: row.id,
            workspace_id: row.workspace_id,
            label: row.scope.as_str().to_owned(),
            content: row.content,
            created_at: Some(pb::timestamp(row.created_at)),
            ..Default::default()
        }))
        .collect();
    // Newest first across both kinds, as the reference's one UNION orders them.
    items.sort_by(|a, b| {
        let at = |item: &pb::SessionItem| item.created_at.map(|t| (t.seconds, t.nanos));
        at(b).cmp(&at(a))
    });
    items.truncate(limit as usize);
    Ok(pb::SessionSearchResponse { items })
}

/// `%phrase%` in lower case, with the phrase's own `%`, `_` and `\` taken literally.
fn like_pattern(phrase: &str) -> String {
    let mut pattern = String::from("%");
    for c in phrase.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_the_phrase_are_literal() {
        assert_eq!(like_pattern("50% Off_now"), "%50\\% off\\_now%");
    }
}

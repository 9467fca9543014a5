//! The Instructions gRPC service (docs/runtime.md §4, M4): rules operators write for every
//! workspace or one, and the text a runtime resolves from them at boot. Owns the rules' order
//! and rendering, and tells the affected workspaces when they change; it never edits a prompt.

use std::cmp::Reverse;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use serde_json::json;
use tonic::{Request, metadata::MetadataMap};

use crate::{
    domain::{EventType, InstructionScope, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{self, DbContext, entities::instruction},
};

const MAX_TITLE_BYTES: usize = 200;
const MAX_CONTENT_BYTES: usize = 8192;

/// Every way an instruction call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstructionError {
    MissingFields,
    InvalidScope,
    MissingTarget,
    UnknownTarget,
    ContentTooLong,
    TitleTooLong,
    NotFound,
}

impl From<InstructionError> for ApiError {
    fn from(err: InstructionError) -> Self {
        let (code, message) = match err {
            InstructionError::MissingFields => (
                ErrorCode::BadRequest,
                "scope, title, and content are required",
            ),
            InstructionError::InvalidScope => (
                ErrorCode::BadRequest,
                "scope must be global or workspace (team scope not yet supported)",
            ),
            InstructionError::MissingTarget => (
                ErrorCode::BadRequest,
                "scope_target required for workspace scope",
            ),
            InstructionError::UnknownTarget => (
                ErrorCode::BadRequest,
                "scope_target must be a live workspace",
            ),
            InstructionError::ContentTooLong => {
                (ErrorCode::BadRequest, "content exceeds 8192 chars")
            }
            InstructionError::TitleTooLong => (ErrorCode::BadRequest, "title exceeds 200 chars"),
            InstructionError::NotFound => (ErrorCode::NotFound, "instruction not found"),
        };
        ApiError::new(code, message)
    }
}

pub struct InstructionsService {
    state: Platform,
}

impl InstructionsService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::instructions_server::Instructions for InstructionsService {
    async fn resolve(
        &self,
        request: Request<pb::ResolveInstructionsRequest>,
    ) -> RpcResult<pb::ResolveInstructionsResponse> {
        reply(
            self.resolve(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn list(
        &self,
        request: Request<pb::ListInstructionsRequest>,
    ) -> RpcResult<pb::ListInstructionsResponse> {
        reply(self.list(request.metadata(), request.get_ref()).await)
    }

    async fn create(
        &self,
        request: Request<pb::CreateInstructionRequest>,
    ) -> RpcResult<pb::CreateInstructionResponse> {
        reply(self.create(request.metadata(), request.get_ref()).await)
    }

    async fn update(
        &self,
        request: Request<pb::UpdateInstructionRequest>,
    ) -> RpcResult<pb::UpdateInstructionResponse> {
        reply(self.update(request.metadata(), request.get_ref()).await)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteInstructionRequest>,
    ) -> RpcResult<pb::DeleteInstructionResponse> {
        reply(self.delete(request.metadata(), &request.get_ref().id).await)
    }
}

/// Resolve order: global rules before a workspace's own, then priority (highest first), then
/// age and id, so equal priorities always come out the same way.
fn resolve_order(rows: &mut [instruction::Model]) {
    rows.sort_by_key(|row| {
        (
            row.scope != InstructionScope::Global,
            Reverse(row.priority),
            row.created_at,
            row.id.clone(),
        )
    });
}

/// The Markdown a runtime prepends to its system prompt: a heading per scope, one section per
/// rule.
fn render(rows: &[instruction::Model]) -> String {
    let mut text = String::new();
    let mut current = None;
    for row in rows {
        if current != Some(row.scope) {
            current = Some(row.scope);
            let label = match row.scope {
                InstructionScope::Global => "Platform-Wide Rules",
                _ => "Role-Specific Rules",
            };
            text.push_str(&format!("\n## {label}\n\n"));
        }
        text.push_str(&format!("### {}\n{}\n\n", row.title, row.content));
    }
    text
}

fn check_lengths(title: Option<&str>, content: Option<&str>) -> Result<(), InstructionError> {
    if content.is_some_and(|content| content.len() > MAX_CONTENT_BYTES) {
        return Err(InstructionError::ContentTooLong);
    }
    if title.is_some_and(|title| title.len() > MAX_TITLE_BYTES) {
        return Err(InstructionError::TitleTooLong);
    }
    Ok(())
}

impl InstructionsService {
    /// The enabled rules that apply to a workspace, in resolve order.
    async fn applicable(&self, workspace_id: &str) -> ApiResult<Vec<instruction::Model>> {
        let mut rows = instruction::Entity::find()
            .filter(instruction::Column::Enabled.eq(true))
            .filter(
                Condition::any()
                    .add(instruction::Column::Scope.eq(InstructionScope::Global))
                    .add(
                        Condition::all()
                            .add(instruction::Column::Scope.eq(InstructionScope::Workspace))
                            .add(instruction::Column::ScopeTarget.eq(workspace_id)),
                    ),
            )
            .all(&self.state.db)
            .await
            .context("query failed")?;
        resolve_order(&mut rows);
        Ok(rows)
    }

    async fn resolve(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ResolveInstructionsResponse> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let rows = self.applicable(&id).await?;
        Ok(pb::ResolveInstructionsResponse {
            instructions: render(&rows),
            workspace_id: id,
        })
    }

    async fn list(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListInstructionsRequest,
    ) -> ApiResult<pb::ListInstructionsResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = match request.workspace_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => self.applicable(id).await?,
            None => {
                let mut query = instruction::Entity::find();
                if let Some(scope) = request.scope.as_deref().filter(|scope| !scope.is_empty()) {
                    query = query.filter(instruction::Column::Scope.eq(scope));
                }
                query
                    .order_by_asc(instruction::Column::Scope)
                    .order_by_desc(instruction::Column::Priority)
                    .order_by_asc(instruction::Column::CreatedAt)
                    .order_by_asc(instruction::Column::Id)
                    .all(&self.state.db)
                    .await
                    .context("query failed")?
            }
        };
        Ok(pb::ListInstructionsResponse {
            instructions: rows.into_iter().map(instruction_message).collect(),
        })
    }

    async fn create(
        &self,
        metadata: &MetadataMap,
        request: &pb::CreateInstructionRequest,
    ) -> ApiResult<pb::CreateInstructionResponse> {
        self.state.auth.admin(metadata).await?;
        if request.scope.is_empty() || request.title.is_empty() || request.content.is_empty() {
            return Err(InstructionError::MissingFields.into());
        }
        let scope =
            InstructionScope::writable(&request.scope).ok_or(InstructionError::InvalidScope)?;
        let target = match scope {
            InstructionScope::Workspace => {
                let raw = request
                    .scope_target
                    .as_deref()
                    .filter(|target| !target.is_empty())
                    .ok_or(InstructionError::MissingTarget)?;
                let id = validate::parse_uuid(raw).ok_or(InstructionError::UnknownTarget)?;
                store::live_workspace(&self.state.db, &id)
                    .await
                    .map_err(|err| match err.code {
                        ErrorCode::NotFound => InstructionError::UnknownTarget.into(),
                        _ => err,
                    })?;
                Some(id)
            }
            _ => None,
        };
        check_lengths(Some(&request.title), Some(&request.content))?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = store::now();
        instruction::Entity::insert(instruction::ActiveModel {
            id: Set(id.clone()),
            scope: Set(scope),
            scope_target: Set(target.clone()),
            title: Set(request.title.clone()),
            content: Set(request.content.clone()),
            priority: Set(request.priority),
            enabled: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_without_returning(&self.state.db)
        .await
        .context("insert failed")?;
        self.announce(&id, target.as_deref()).await;
        Ok(pb::CreateInstructionResponse { id })
    }

    async fn update(
        &self,
        metadata: &MetadataMap,
        request: &pb::UpdateInstructionRequest,
    ) -> ApiResult<pb::UpdateInstructionResponse> {
        self.state.auth.admin(metadata).await?;
        check_lengths(request.title.as_deref(), request.content.as_deref())?;
        let row = self.find(&request.id).await?;
        let mut update = instruction::Entity::update_many()
            .col_expr(instruction::Column::UpdatedAt, Expr::value(store::now()))
            .filter(instruction::Column::Id.eq(&row.id));
        if let Some(title) = &request.title {
            update = update.col_expr(instruction::Column::Title, Expr::value(title));
        }
        if let Some(content) = &request.content {
            update = update.col_expr(instruction::Column::Content, Expr::value(content));
        }
        if let Some(priority) = request.priority {
            update = update.col_expr(instruction::Column::Priority, Expr::value(priority));
        }
        if let Some(enabled) = request.enabled {
            update = update.col_expr(instruction::Column::Enabled, Expr::value(enabled));
        }
        let changed = update.exec(&self.state.db).await.context("update failed")?;
        if changed.rows_affected == 0 {
            return Err(InstructionError::NotFound.into());
        }
        self.announce(&row.id, row.scope_target.as_deref()).await;
        Ok(pb::UpdateInstructionResponse {})
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::DeleteInstructionResponse> {
        self.state.auth.admin(metadata).await?;
        let row = self.find(raw_id).await?;
        let deleted = instruction::Entity::delete_by_id(row.id.clone())
            .exec(&self.state.db)
            .await
            .context("delete failed")?;
        if deleted.rows_affected == 0 {
            return Err(InstructionError::NotFound.into());
        }
        self.announce(&row.id, row.scope_target.as_deref()).await;
        Ok(pb::DeleteInstructionResponse {})
    }

    async fn find(&self, raw_id: &str) -> ApiResult<instruction::Model> {
        let id = validate::parse_uuid(raw_id).ok_or(InstructionError::NotFound)?;
        instruction::Entity::find_by_id(id)
            .one(&self.state.db)
            .await
            .context("query failed")?
            .ok_or_else(|| InstructionError::NotFound.into())
    }

    /// `INSTRUCTIONS_UPDATED` to the workspace a rule targets, or to every workspace (no
    /// subject) for a global rule; streaming agents get it as a control frame.
    async fn announce(&self, instruction_id: &str, target: Option<&str>) {
        self.state
            .events
            .record(
                &self.state.db,
                EventType::InstructionsUpdated,
                target,
                json!({"instruction_id": instruction_id}),
            )
            .await;
    }
}

fn instruction_message(row: instruction::Model) -> pb::Instruction {
    pb::Instruction {
        scope: row.scope.as_str().to_owned(),
        scope_target: row.scope_target,
        title: row.title,
        content: row.content,
        priority: row.priority,
        enabled: row.enabled,
        created_at: Some(pb::timestamp(row.created_at)),
        updated_at: Some(pb::timestamp(row.updated_at)),
        id: row.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(scope: InstructionScope, title: &str, priority: i32, age: i64) -> instruction::Model {
        let at = chrono::DateTime::from_timestamp(1_700_000_000 + age, 0).unwrap();
        instruction::Model {
            id: title.to_owned(),
            scope,
            scope_target: None,
            title: title.to_owned(),
            content: format!("{title} body"),
            priority,
            enabled: true,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn global_rules_come_first_then_priority_then_age() {
        let mut rows = vec![
            rule(InstructionScope::Workspace, "own", 9, 0),
            rule(InstructionScope::Global, "later", 1, 2),
            rule(InstructionScope::Global, "earlier", 1, 1),
            rule(InstructionScope::Global, "urgent", 5, 3),
        ];
        resolve_order(&mut rows);
        assert_eq!(
            render(&rows),
            "\n## Platform-Wide Rules\n\n### urgent\nurgent body\n\n### earlier\nearlier body\n\n\
             ### later\nlater body\n\n\n## Role-Specific Rules\n\n### own\nown body\n\n"
        );
        assert_eq!(render(&[]), "");
    }
}

//! The Memories gRPC service (docs/runtime.md §1, M1): commit, search and delete a workspace's
//! memories. Owns who may write and read each scope, redaction before storage, and the delimiter
//! on every row another workspace wrote. It never changes a stored memory.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QuerySelect,
};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    domain::{MemoryScope, WorkspaceStatus, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{memory, workspace},
    },
};

mod admin;
mod redact;
pub mod search;

/// The namespace of a memory committed without one.
const DEFAULT_NAMESPACE: &str = "general";
const MAX_NAMESPACE_BYTES: usize = 50;
/// Larger content is refused on commit and cut when seeded.
const MAX_CONTENT_BYTES: usize = 100_000;
/// Rows one search returns at most (and by default).
const MAX_RESULTS: u64 = 50;

/// Every way a memory call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryError {
    InvalidBody,
    InvalidScope,
    NamespaceTooLong,
    ContentTooLarge,
    GlobalFromChild,
    NotFound,
}

impl From<MemoryError> for ApiError {
    fn from(err: MemoryError) -> Self {
        let (code, message) = match err {
            MemoryError::InvalidBody => (ErrorCode::BadRequest, "invalid request body"),
            MemoryError::InvalidScope => (
                ErrorCode::BadRequest,
                "scope must be LOCAL, TEAM, or GLOBAL",
            ),
            MemoryError::NamespaceTooLong => {
                (ErrorCode::BadRequest, "namespace must be <= 50 characters")
            }
            MemoryError::ContentTooLarge => (ErrorCode::PayloadTooLarge, "content too large"),
            MemoryError::GlobalFromChild => (
                ErrorCode::Forbidden,
                "only root workspaces can write GLOBAL memories",
            ),
            MemoryError::NotFound => (
                ErrorCode::NotFound,
                "memory not found or not owned by this workspace",
            ),
        };
        ApiError::new(code, message)
    }
}

pub struct MemoriesService {
    state: Platform,
}

impl MemoriesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::memories_server::Memories for MemoriesService {
    async fn commit(
        &self,
        request: Request<pb::CommitMemoryRequest>,
    ) -> RpcResult<pb::CommitMemoryResponse> {
        reply(self.commit(request.metadata(), request.get_ref()).await)
    }

    async fn search(
        &self,
        request: Request<pb::SearchMemoriesRequest>,
    ) -> RpcResult<pb::SearchMemoriesResponse> {
        let memories = self.search(request.metadata(), request.get_ref()).await;
        reply(memories.map(|memories| pb::SearchMemoriesResponse { memories }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteMemoryRequest>,
    ) -> RpcResult<pb::DeleteMemoryResponse> {
        reply(self.delete(request.metadata(), request.get_ref()).await)
    }

    type ExportStream = admin::ExportStream;

    async fn export(
        &self,
        request: Request<pb::ExportMemoriesRequest>,
    ) -> RpcResult<Self::ExportStream> {
        reply(self.export(request.metadata()).await)
    }

    async fn import(
        &self,
        request: Request<pb::ImportMemoriesRequest>,
    ) -> RpcResult<pb::ImportMemoriesResponse> {
        reply(self.import(request.metadata(), request.get_ref()).await)
    }
}

/// The stored form of a memory's content: credentials redacted and, where other workspaces
/// will read it, the delimiter defused.
fn stored_content(content: &str, scope: MemoryScope) -> String {
    let redacted = redact::redact(content);
    match scope {
        MemoryScope::Local => redacted,
        MemoryScope::Team | MemoryScope::Global => redact::defuse_delimiter(&redacted),
    }
}

async fn insert(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    content: String,
    scope: MemoryScope,
    namespace: &str,
) -> Result<String, DbErr> {
    let id = uuid::Uuid::new_v4().to_string();
    memory::Entity::insert(memory::ActiveModel {
        id: Set(id.clone()),
        workspace_id: Set(workspace_id.to_owned()),
        content: Set(content),
        scope: Set(scope),
        namespace: Set(namespace.to_owned()),
        created_at: Set(store::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(id)
}

/// Seeds a new workspace's `initial_memories` in its create transaction (docs/runtime.md §1):
/// the scope upper-cased (empty means LOCAL, unknown is skipped), empty content skipped, long
/// content cut, then redacted like any commit. GLOBAL seeds of a child are skipped: only roots
/// write GLOBAL.
pub async fn insert_initial(
    txn: &impl ConnectionTrait,
    workspace_id: &str,
    is_root: bool,
    memories: &[pb::InitialMemory],
) -> Result<(), DbErr> {
    for seed in memories {
        let scope = match seed.scope.to_ascii_uppercase().as_str() {
            "" => MemoryScope::Local,
            other => match MemoryScope::parse(other) {
                Some(scope) => scope,
                None => continue,
            },
        };
        if seed.content.is_empty() || (scope == MemoryScope::Global && !is_root) {
            continue;
        }
        let content = truncate(&seed.content, MAX_CONTENT_BYTES);
        let content = stored_content(content, scope);
        insert(txn, workspace_id, content, scope, DEFAULT_NAMESPACE).await?;
    }
    Ok(())
}

/// The live workspaces whose TEAM memories `id` reads (docs/runtime.md M1): itself, its own
/// children and, under a parent, the parent and its other children.
pub async fn team(
    db: &impl ConnectionTrait,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<String>, DbErr> {
    let mut circle = Condition::any()
        .add(workspace::Column::Id.eq(id))
        .add(workspace::Column::ParentId.eq(id));
    if let Some(parent) = parent {
        circle = circle
            .add(workspace::Column::Id.eq(parent))
            .add(workspace::Column::ParentId.eq(parent));
    }
    workspace::Entity::find()
        .select_only()
        .column(workspace::Column::Id)
        .filter(circle)
        .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
        .into_tuple()
        .all(db)
        .await
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl MemoriesService {
    async fn commit(
        &self,
        metadata: &MetadataMap,
        request: &pb::CommitMemoryRequest,
    ) -> ApiResult<pb::CommitMemoryResponse> {
        let writer = self
            .state
            .auth
            .live_workspace_row(metadata, &request.workspace_id)
            .await?;
        if request.content.is_empty() || request.scope.is_empty() {
            return Err(MemoryError::InvalidBody.into());
        }
        let scope = MemoryScope::parse(&request.scope).ok_or(MemoryError::InvalidScope)?;
        let namespace = match request.namespace.as_str() {
            "" => DEFAULT_NAMESPACE,
            namespace if namespace.len() > MAX_NAMESPACE_BYTES => {
                return Err(MemoryError::NamespaceTooLong.into());
            }
            namespace => namespace,
        };
        if request.content.len() > MAX_CONTENT_BYTES {
            return Err(MemoryError::ContentTooLarge.into());
        }
        if scope == MemoryScope::Global && writer.parent_id.is_some() {
            return Err(MemoryError::GlobalFromChild.into());
        }
        let content = stored_content(&request.content, scope);
        let id = insert(&self.state.db, &writer.id, content, scope, namespace)
            .await
            .context("failed to store memory")?;
        Ok(pb::CommitMemoryResponse {
            id,
            scope: scope.as_str().to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    async fn search(
        &self,
        metadata: &MetadataMap,
        request: &pb::SearchMemoriesRequest,
    ) -> ApiResult<Vec<pb::Memory>> {
        let reader = self
            .state
            .auth
            .live_workspace_row(metadata, &request.workspace_id)
            .await?;
        let limit = u64::try_from(request.limit)
            .ok()
            .filter(|limit| (1..=MAX_RESULTS).contains(limit))
            .unwrap_or(MAX_RESULTS);
        let query = search::Query {
            scope: MemoryScope::parse(&request.scope),
            text: &request.q,
            namespace: Some(request.namespace.as_str()).filter(|ns| !ns.is_empty()),
            limit,
        };
        let db = &self.state.db;
        let team = match query.scope {
            Some(MemoryScope::Team) => team(db, &reader.id, reader.parent_id.as_deref())
                .await
                .context("search failed")?,
            _ => Vec::new(),
        };
        let who = search::Reader {
            id: &reader.id,
            team: &team,
        };
        let Some(statement) = search::statement(db.get_database_backend(), &who, &query) else {
            return Ok(Vec::new());
        };
        let rows = memory::Entity::find()
            .from_raw_sql(statement)
            .all(db)
            .await
            .context("search failed")?;
        Ok(rows
            .into_iter()
            .map(|row| memory_message(row, &reader.id))
            .collect())
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteMemoryRequest,
    ) -> ApiResult<pb::DeleteMemoryResponse> {
        let author = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let memory_id = validate::parse_uuid(&request.memory_id).ok_or(MemoryError::NotFound)?;
        let deleted = memory::Entity::delete_many()
            .filter(memory::Column::Id.eq(memory_id))
            .filter(memory::Column::WorkspaceId.eq(author))
            .exec(&self.state.db)
            .await
            .context("delete failed")?;
        if deleted.rows_affected == 0 {
            return Err(MemoryError::NotFound.into());
        }
        Ok(pb::DeleteMemoryResponse {})
    }
}

/// A row as `reader` sees it: GLOBAL rows and every row another workspace wrote carry the
/// delimiter that names their author.
fn memory_message(row: memory::Model, reader: &str) -> pb::Memory {
    let scope = row.scope.as_str();
    let content = if row.scope == MemoryScope::Global || row.workspace_id != reader {
        redact::delimited(&row.id, scope, &row.workspace_id, &row.content)
    } else {
        row.content
    };
    pb::Memory {
        content,
        scope: scope.to_owned(),
        created_at: Some(pb::timestamp(row.created_at)),
        id: row.id,
        workspace_id: row.workspace_id,
        namespace: row.namespace,
    }
}

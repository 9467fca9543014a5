//! Memory backup and restore for operators (the reference's `/admin/memories/export|import`):
//! every memory with its author's name, streamed page by page; and a restore that matches
//! workspaces by name, skips what is already held, and writes in one transaction.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;

use super::{
    DEFAULT_NAMESPACE, MAX_CONTENT_BYTES, MAX_NAMESPACE_BYTES, MemoriesService, redact,
    stored_content,
};
use crate::{
    domain::{MemoryScope, WorkspaceStatus},
    error::{ApiError, ApiResult},
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{memory, workspace},
    },
};

/// Rows read per page of an export.
const EXPORT_PAGE: u64 = 500;

pub(super) type ExportStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::ExportedMemory, tonic::Status>>;

impl MemoriesService {
    pub(super) async fn export(&self, metadata: &MetadataMap) -> ApiResult<ExportStream> {
        self.state.auth.admin(metadata).await?;
        let (sender, receiver) = mpsc::channel(64);
        let state = self.state.clone();
        // Pages are read in a task of their own, so a slow reader holds no query open.
        tokio::spawn(async move {
            if let Err(err) = export_pages(&state, &sender).await {
                let _ = sender.send(Err(err.into())).await;
            }
        });
        Ok(ExportStream::new(receiver))
    }

    pub(super) async fn import(
        &self,
        metadata: &MetadataMap,
        request: &pb::ImportMemoriesRequest,
    ) -> ApiResult<pb::ImportMemoriesResponse> {
        self.state.auth.admin(metadata).await?;
        const FAILED: &str = "import failed";
        let txn = self.state.db.begin().await.context(FAILED)?;
        // The oldest live workspace of each name, with whether it is a root.
        let mut by_name: HashMap<String, (String, bool)> = HashMap::new();
        let live = workspace::Entity::find()
            .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
            .order_by_desc(workspace::Column::CreatedAt)
            .all(&txn)
            .await
            .context(FAILED)?;
        for row in live {
            by_name.insert(row.name, (row.id, row.parent_id.is_none()));
        }
        let mut report = pb::ImportMemoriesResponse {
            total: request.memories.len() as u32,
            ..Default::default()
        };
        for entry in &request.memories {
            let Some((workspace_id, is_root)) = by_name.get(&entry.workspace_name) else {
                report.skipped += 1;
                continue;
            };
            let Some(scope) = MemoryScope::parse(&entry.scope.to_ascii_uppercase()) else {
                report.errors += 1;
                continue;
            };
            if entry.content.is_empty()
                || entry.content.len() > MAX_CONTENT_BYTES
                || entry.namespace.len() > MAX_NAMESPACE_BYTES
                || (scope == MemoryScope::Global && !is_root)
            {
                report.errors += 1;
                continue;
            }
            let content = stored_content(&entry.content, scope);
            let held = memory::Entity::find()
                .filter(
                    Condition::all()
                        .add(memory::Column::WorkspaceId.eq(workspace_id.clone()))
                        .add(memory::Column::Content.eq(content.clone()))
                        .add(memory::Column::Scope.eq(scope)),
                )
                .one(&txn)
                .await
                .context(FAILED)?;
            if held.is_some() {
                report.skipped += 1;
                continue;
            }
            let created_at = chrono::DateTime::parse_from_rfc3339(&entry.created_at)
                .map(|at| at.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| store::now());
            let namespace = Some(entry.namespace.as_str())
                .filter(|ns| !ns.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE);
            memory::Entity::insert(memory::ActiveModel {
                id: Set(uuid::Uuid::new_v4().to_string()),
                workspace_id: Set(workspace_id.clone()),
                content: Set(content),
                scope: Set(scope),
                namespace: Set(namespace.to_owned()),
                created_at: Set(created_at),
            })
            .exec_without_returning(&txn)
            .await
            .context(FAILED)?;
            report.imported += 1;
        }
        txn.commit().await.context(FAILED)?;
        Ok(report)
    }
}

/// Sends every memory, oldest first, a page at a time (keyset on creation time and id).
async fn export_pages(
    state: &Platform,
    sender: &mpsc::Sender<Result<pb::ExportedMemory, tonic::Status>>,
) -> Result<(), ApiError> {
    let mut after: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    loop {
        let mut page = memory::Entity::find()
            .order_by_asc(memory::Column::CreatedAt)
            .order_by_asc(memory::Column::Id)
            .limit(EXPORT_PAGE);
        if let Some((at, id)) = &after {
            page = page.filter(
                Condition::any().add(memory::Column::CreatedAt.gt(*at)).add(
                    Condition::all()
                        .add(memory::Column::CreatedAt.eq(*at))
                        .add(memory::Column::Id.gt(id.clone())),
                ),
            );
        }
        let rows = page.all(&state.db).await.context("export query failed")?;
        let done = (rows.len() as u64) < EXPORT_PAGE;
        let authors: HashMap<String, String> = workspace::Entity::find()
            .select_only()
            .column(workspace::Column::Id)
            .column(workspace::Column::Name)
            .filter(workspace::Column::Id.is_in(rows.iter().map(|row| row.workspace_id.clone())))
            .into_tuple()
            .all(&state.db)
            .await
            .context("export query failed")?
            .into_iter()
            .collect();
        for row in rows {
            after = Some((row.created_at, row.id.clone()));
            let entry = pb::ExportedMemory {
                content: redact::redact(&row.content),
                scope: row.scope.as_str().to_owned(),
                namespace: row.namespace,
                created_at: Some(pb::timestamp(row.created_at)),
                workspace_name: authors.get(&row.workspace_id).cloned().unwrap_or_default(),
                id: row.id,
            };
            if sender.send(Ok(entry)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

//! The workspace runtime's tables (docs/runtime.md): memories with their full-text index,
//! approvals, platform instructions, workflow checkpoints, shared context and chat uploads. Every
//! row belongs to a workspace and goes with it when the workspace is purged (cascading keys).

use sea_orm_migration::{async_trait::async_trait, prelude::*, sea_orm::DatabaseBackend};

use crate::m20261120_000001_initial::{
    id, int_default, text, text_not_null, timestamp, timestamp_not_null, workspace_fk,
};

const MEMORY_SCOPES: [&str; 3] = ["LOCAL", "TEAM", "GLOBAL"];
const APPROVAL_STATUSES: [&str; 4] = ["pending", "approved", "denied", "escalated"];
const INSTRUCTION_SCOPES: [&str; 3] = ["global", "team", "workspace"];

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// The full-text index of `agent_memories`, per backend (docs/runtime.md §1). Postgres: a stored
/// generated `tsvector` with a GIN index. SQLite: an FTS5 table kept by triggers, keyed by the
/// memory id rather than the table's rowid (a text primary key's rowid may change on `VACUUM`;
/// the FTS5 row's own rowid is kept in `search_rowid` so a delete finds it at once), with the
/// author (`w` and the id's hex, one token) and the scope beside the content, so a search can
/// name the rows its reader may see inside the FTS5 query and only those are ranked.
const POSTGRES_MEMORY_SEARCH: &[&str] = &[
    "ALTER TABLE agent_memories ADD COLUMN content_tsv tsvector \
     GENERATED ALWAYS AS (to_tsvector('english', content)) STORED",
    "CREATE INDEX idx_memories_fts ON agent_memories USING GIN (content_tsv)",
];
const SQLITE_MEMORY_SEARCH: &[&str] = &[
    "CREATE VIRTUAL TABLE agent_memories_fts USING fts5(\
     memory_id UNINDEXED, author, scope, content, tokenize = 'porter unicode61')",
    "CREATE TRIGGER agent_memories_fts_insert AFTER INSERT ON agent_memories BEGIN \
     INSERT INTO agent_memories_fts (memory_id, author, scope, content) \
     VALUES (new.id, 'w' || replace(new.workspace_id, '-', ''), new.scope, new.content); \
     UPDATE agent_memories SET search_rowid = last_insert_rowid() WHERE id = new.id; END",
    "CREATE TRIGGER agent_memories_fts_delete AFTER DELETE ON agent_memories BEGIN \
     DELETE FROM agent_memories_fts WHERE rowid = old.search_rowid; END",
];

#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AgentMemories::Table)
                    .col(id(AgentMemories::Id))
                    .col(text_not_null(AgentMemories::WorkspaceId))
                    .col(text_not_null(AgentMemories::Content))
                    .col(
                        text_not_null(AgentMemories::Scope)
                            .check(Expr::col(AgentMemories::Scope).is_in(MEMORY_SCOPES))
                            .to_owned(),
                    )
                    .col(text_not_null(AgentMemories::Namespace))
                    .col(timestamp_not_null(AgentMemories::CreatedAt))
                    .col(
                        ColumnDef::new(AgentMemories::SearchRowid)
                            .big_integer()
                            .null(),
                    )
                    .foreign_key(&mut workspace_fk(
                        AgentMemories::Table,
                        AgentMemories::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApprovalRequests::Table)
                    .col(id(ApprovalRequests::Id))
                    .col(text_not_null(ApprovalRequests::WorkspaceId))
                    .col(text(ApprovalRequests::TaskId))
                    .col(text_not_null(ApprovalRequests::Action))
                    .col(text(ApprovalRequests::Reason))
                    .col(text(ApprovalRequests::Context))
                    .col(
                        text_not_null(ApprovalRequests::Status)
                            .check(Expr::col(ApprovalRequests::Status).is_in(APPROVAL_STATUSES))
                            .to_owned(),
                    )
                    .col(text(ApprovalRequests::DecidedBy))
                    .col(text(ApprovalRequests::DecisionNote))
                    .col(timestamp(ApprovalRequests::DecidedAt))
                    .col(timestamp_not_null(ApprovalRequests::CreatedAt))
                    .foreign_key(&mut workspace_fk(
                        ApprovalRequests::Table,
                        ApprovalRequests::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PlatformInstructions::Table)
                    .col(id(PlatformInstructions::Id))
                    .col(
                        text_not_null(PlatformInstructions::Scope)
                            .check(Expr::col(PlatformInstructions::Scope).is_in(INSTRUCTION_SCOPES))
                            .to_owned(),
                    )
                    .col(text(PlatformInstructions::ScopeTarget))
                    .col(text_not_null(PlatformInstructions::Title))
                    .col(text_not_null(PlatformInstructions::Content))
                    .col(int_default(PlatformInstructions::Priority, 0))
                    .col(
                        ColumnDef::new(PlatformInstructions::Enabled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(timestamp_not_null(PlatformInstructions::CreatedAt))
                    .col(timestamp_not_null(PlatformInstructions::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        PlatformInstructions::Table,
                        PlatformInstructions::ScopeTarget,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkflowCheckpoints::Table)
                    .col(id(WorkflowCheckpoints::Id))
                    .col(text_not_null(WorkflowCheckpoints::WorkspaceId))
                    .col(text_not_null(WorkflowCheckpoints::WorkflowId))
                    .col(text_not_null(WorkflowCheckpoints::StepName))
                    .col(int_default(WorkflowCheckpoints::StepIndex, 0))
                    .col(timestamp_not_null(WorkflowCheckpoints::CompletedAt))
                    .col(text(WorkflowCheckpoints::Payload))
                    .foreign_key(&mut workspace_fk(
                        WorkflowCheckpoints::Table,
                        WorkflowCheckpoints::WorkspaceId,
                    ))
                    .index(
                        Index::create()
                            .unique()
                            .col(WorkflowCheckpoints::WorkspaceId)
                            .col(WorkflowCheckpoints::WorkflowId)
                            .col(WorkflowCheckpoints::StepName),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SharedContext::Table)
                    .col(id(SharedContext::WorkspaceId))
                    .col(text_not_null(SharedContext::Entries))
                    .col(timestamp_not_null(SharedContext::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        SharedContext::Table,
                        SharedContext::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ChatUploads::Table)
                    .col(id(ChatUploads::Id))
                    .col(text_not_null(ChatUploads::WorkspaceId))
                    .col(text_not_null(ChatUploads::StoredName))
                    .col(text_not_null(ChatUploads::Name))
                    .col(text(ChatUploads::MimeType))
                    .col(ColumnDef::new(ChatUploads::Size).big_integer().not_null())
                    .col(ColumnDef::new(ChatUploads::Content).blob().not_null())
                    .col(timestamp_not_null(ChatUploads::CreatedAt))
                    .foreign_key(&mut workspace_fk(
                        ChatUploads::Table,
                        ChatUploads::WorkspaceId,
                    ))
                    .index(
                        Index::create()
                            .unique()
                            .col(ChatUploads::WorkspaceId)
                            .col(ChatUploads::StoredName),
                    )
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX idx_memories_workspace ON agent_memories (workspace_id, scope, created_at)",
            "CREATE INDEX idx_memories_scope ON agent_memories (scope, created_at)",
            "CREATE INDEX idx_approvals_workspace ON approval_requests (workspace_id, created_at)",
            "CREATE INDEX idx_approvals_pending ON approval_requests (created_at) WHERE status = 'pending'",
            "CREATE INDEX idx_instructions_enabled ON platform_instructions (scope, scope_target) WHERE enabled",
            "CREATE INDEX idx_checkpoints_latest ON workflow_checkpoints (workspace_id, completed_at)",
            "CREATE INDEX idx_uploads_created ON chat_uploads (created_at)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        let search = match manager.get_database_backend() {
            DatabaseBackend::Postgres => POSTGRES_MEMORY_SEARCH,
            _ => SQLITE_MEMORY_SEARCH,
        };
        for statement in search {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP TABLE IF EXISTS agent_memories_fts")
                .await?;
        }
        for table in [
            "chat_uploads",
            "workspace_shared_context",
            "workflow_checkpoints",
            "platform_instructions",
            "approval_requests",
            "agent_memories",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AgentMemories {
    Table,
    Id,
    WorkspaceId,
    Content,
    Scope,
    Namespace,
    CreatedAt,
    /// SQLite: the row's rowid in `agent_memories_fts`. Unused on Postgres.
    SearchRowid,
}

#[derive(DeriveIden)]
enum ApprovalRequests {
    Table,
    Id,
    WorkspaceId,
    TaskId,
    Action,
    Reason,
    /// The request's `context` object as JSON text (write-only in the contract).
    Context,
    Status,
    /// Who decided, derived from the credential (docs/runtime.md M3).
    DecidedBy,
    /// The `decided_by` the client sent, kept as a note only.
    DecisionNote,
    DecidedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PlatformInstructions {
    Table,
    Id,
    Scope,
    ScopeTarget,
    Title,
    Content,
    Priority,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowCheckpoints {
    Table,
    Id,
    WorkspaceId,
    WorkflowId,
    StepName,
    StepIndex,
    CompletedAt,
    /// Any JSON value, as text; NULL when the client sent none.
    Payload,
}

#[derive(DeriveIden)]
enum SharedContext {
    #[sea_orm(iden = "workspace_shared_context")]
    Table,
    WorkspaceId,
    /// The published `[{path, content}]` list as JSON text, replaced whole on each publish.
    Entries,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChatUploads {
    Table,
    /// The 32 hex characters of the stored name.
    Id,
    WorkspaceId,
    /// `<hex>-<sanitized name>`, the file name in the `workspace:` URI.
    StoredName,
    Name,
    MimeType,
    Size,
    Content,
    CreatedAt,
}

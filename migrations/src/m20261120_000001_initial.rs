//! The initial schema: workspaces and their layout, tokens, secrets, events, activity, the A2A
//! queue, plugin installs and config files. UUIDs and enums are text; timestamps are UTC.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

/// Every workspace status; the CHECK constraint makes any other value a write error.
const WORKSPACE_STATUSES: [&str; 10] = [
    "provisioning",
    "awaiting_agent",
    "online",
    "degraded",
    "offline",
    "failed",
    "paused",
    "hibernating",
    "hibernated",
    "removed",
];

const WORKSPACE_ACCESS: [&str; 3] = ["none", "read_only", "read_write"];
const QUEUE_STATUSES: [&str; 5] = ["queued", "dispatched", "completed", "dropped", "failed"];

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

pub(crate) fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string()
        .not_null()
        .primary_key()
        .to_owned()
}

pub(crate) fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string().null().to_owned()
}

pub(crate) fn text_not_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

pub(crate) fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

pub(crate) fn timestamp_not_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

pub(crate) fn int_default(col: impl IntoIden, value: i32) -> ColumnDef {
    ColumnDef::new(col)
        .integer()
        .not_null()
        .default(value)
        .to_owned()
}

pub(crate) fn workspace_fk(
    from_table: impl IntoIden,
    from_col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_col)
        .to(Workspaces::Table, Workspaces::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

// The trait's signatures elide the manager's lifetime; async_trait needs them to match.
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
                    .table(Workspaces::Table)
                    .col(id(Workspaces::Id))
                    .col(text_not_null(Workspaces::Name))
                    .col(text(Workspaces::Role))
                    .col(int_default(Workspaces::Tier, 3))
                    .col(
                        ColumnDef::new(Workspaces::Status)
                            .string()
                            .not_null()
                            .default("provisioning")
                            .check(Expr::col(Workspaces::Status).is_in(WORKSPACE_STATUSES)),
                    )
                    .col(
                        ColumnDef::new(Workspaces::Runtime)
                            .string()
                            .not_null()
                            .default("langgraph"),
                    )
                    .col(text(Workspaces::AgentCard))
                    .col(text(Workspaces::Url))
                    .col(text(Workspaces::ParentId))
                    .col(text(Workspaces::ForwardedTo))
                    .col(text(Workspaces::SourceBundleId))
                    .col(text(Workspaces::AwarenessNamespace))
                    .col(text(Workspaces::WorkspaceDir))
                    .col(
                        ColumnDef::new(Workspaces::WorkspaceAccess)
                            .string_len(20)
                            .not_null()
                            .default("none")
                            .check(Expr::col(Workspaces::WorkspaceAccess).is_in(WORKSPACE_ACCESS)),
                    )
                    .col(timestamp(Workspaces::LastHeartbeatAt))
                    .col(timestamp(Workspaces::LastOutboundAt))
                    .col(
                        ColumnDef::new(Workspaces::LastErrorRate)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(text(Workspaces::LastSampleError))
                    .col(text(Workspaces::CurrentTask))
                    .col(int_default(Workspaces::ActiveTasks, 0))
                    .col(int_default(Workspaces::UptimeSeconds, 0))
                    .col(int_default(Workspaces::MaxConcurrentTasks, 1))
                    .col(ColumnDef::new(Workspaces::BudgetLimit).big_integer().null())
                    .col(
                        ColumnDef::new(Workspaces::MonthlySpend)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Workspaces::HibernationIdleMinutes)
                            .integer()
                            .null(),
                    )
                    .col(text(Workspaces::InstanceId))
                    .col(text(Workspaces::RuntimeMetadata))
                    .col(timestamp_not_null(Workspaces::CreatedAt))
                    .col(timestamp_not_null(Workspaces::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Workspaces::Table, Workspaces::ParentId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Workspaces::Table, Workspaces::ForwardedTo)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CanvasLayouts::Table)
                    .col(id(CanvasLayouts::WorkspaceId))
                    .col(
                        ColumnDef::new(CanvasLayouts::X)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(
                        ColumnDef::new(CanvasLayouts::Y)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(
                        ColumnDef::new(CanvasLayouts::Collapsed)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .foreign_key(&mut workspace_fk(
                        CanvasLayouts::Table,
                        CanvasLayouts::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkspaceAuthTokens::Table)
                    .col(id(WorkspaceAuthTokens::Id))
                    .col(text_not_null(WorkspaceAuthTokens::WorkspaceId))
                    .col(
                        ColumnDef::new(WorkspaceAuthTokens::TokenHash)
                            .binary()
                            .not_null()
                            .unique_key(),
                    )
                    .col(text_not_null(WorkspaceAuthTokens::Prefix))
                    .col(timestamp_not_null(WorkspaceAuthTokens::CreatedAt))
                    .col(timestamp(WorkspaceAuthTokens::LastUsedAt))
                    .col(timestamp(WorkspaceAuthTokens::RevokedAt))
                    .foreign_key(&mut workspace_fk(
                        WorkspaceAuthTokens::Table,
                        WorkspaceAuthTokens::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrgApiTokens::Table)
                    .col(id(OrgApiTokens::Id))
                    .col(
                        ColumnDef::new(OrgApiTokens::TokenHash)
                            .binary()
                            .not_null()
                            .unique_key(),
                    )
                    .col(text_not_null(OrgApiTokens::Prefix))
                    .col(text(OrgApiTokens::Name))
                    .col(text(OrgApiTokens::CreatedBy))
                    .col(text(OrgApiTokens::OrgId))
                    .col(timestamp_not_null(OrgApiTokens::CreatedAt))
                    .col(timestamp(OrgApiTokens::LastUsedAt))
                    .col(timestamp(OrgApiTokens::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OrgApiTokens::Table, OrgApiTokens::OrgId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkspaceSecrets::Table)
                    .col(id(WorkspaceSecrets::Id))
                    .col(text_not_null(WorkspaceSecrets::WorkspaceId))
                    .col(text_not_null(WorkspaceSecrets::Key))
                    .col(
                        ColumnDef::new(WorkspaceSecrets::EncryptedValue)
                            .binary()
                            .not_null(),
                    )
                    .col(int_default(WorkspaceSecrets::EncryptionVersion, 0))
                    .col(int_default(WorkspaceSecrets::KeyVersion, 0))
                    .col(timestamp_not_null(WorkspaceSecrets::CreatedAt))
                    .col(timestamp_not_null(WorkspaceSecrets::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        WorkspaceSecrets::Table,
                        WorkspaceSecrets::WorkspaceId,
                    ))
                    .index(
                        Index::create()
                            .unique()
                            .col(WorkspaceSecrets::WorkspaceId)
                            .col(WorkspaceSecrets::Key),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(GlobalSecrets::Table)
                    .col(id(GlobalSecrets::Id))
                    .col(
                        ColumnDef::new(GlobalSecrets::Key)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(GlobalSecrets::EncryptedValue)
                            .binary()
                            .not_null(),
                    )
                    .col(int_default(GlobalSecrets::EncryptionVersion, 0))
                    .col(int_default(GlobalSecrets::KeyVersion, 0))
                    .col(timestamp_not_null(GlobalSecrets::CreatedAt))
                    .col(timestamp_not_null(GlobalSecrets::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        // No foreign key: the log outlives purged workspaces.
        manager
            .create_table(
                Table::create()
                    .table(StructureEvents::Table)
                    .col(id(StructureEvents::Id))
                    .col(text_not_null(StructureEvents::EventType))
                    .col(text(StructureEvents::WorkspaceId))
                    .col(text(StructureEvents::AgentId))
                    .col(text(StructureEvents::TargetId))
                    .col(text_not_null(StructureEvents::Payload))
                    .col(timestamp_not_null(StructureEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ActivityLogs::Table)
                    .col(id(ActivityLogs::Id))
                    .col(text_not_null(ActivityLogs::WorkspaceId))
                    .col(text_not_null(ActivityLogs::ActivityType))
                    .col(text(ActivityLogs::SourceId))
                    .col(text(ActivityLogs::TargetId))
                    .col(text(ActivityLogs::Method))
                    .col(text(ActivityLogs::Summary))
                    .col(text(ActivityLogs::RequestBody))
                    .col(text(ActivityLogs::ResponseBody))
                    .col(text(ActivityLogs::ToolTrace))
                    .col(ColumnDef::new(ActivityLogs::DurationMs).integer().null())
                    .col(
                        ColumnDef::new(ActivityLogs::Status)
                            .string()
                            .not_null()
                            .default("ok"),
                    )
                    .col(text(ActivityLogs::ErrorDetail))
                    .col(text(ActivityLogs::IdempotencyKey))
                    .col(timestamp_not_null(ActivityLogs::CreatedAt))
                    .foreign_key(&mut workspace_fk(
                        ActivityLogs::Table,
                        ActivityLogs::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(A2aQueue::Table)
                    .col(id(A2aQueue::Id))
                    .col(text_not_null(A2aQueue::WorkspaceId))
                    .col(text(A2aQueue::CallerId))
                    .col(int_default(A2aQueue::Priority, 50))
                    .col(text_not_null(A2aQueue::Body))
                    .col(text(A2aQueue::Method))
                    .col(text(A2aQueue::IdempotencyKey))
                    .col(timestamp_not_null(A2aQueue::EnqueuedAt))
                    .col(timestamp(A2aQueue::DispatchedAt))
                    .col(timestamp(A2aQueue::CompletedAt))
                    .col(timestamp(A2aQueue::ExpiresAt))
                    .col(int_default(A2aQueue::Attempts, 0))
                    .col(
                        ColumnDef::new(A2aQueue::Status)
                            .string()
                            .not_null()
                            .default("queued")
                            .check(Expr::col(A2aQueue::Status).is_in(QUEUE_STATUSES)),
                    )
                    .col(text(A2aQueue::LastError))
                    .foreign_key(&mut workspace_fk(A2aQueue::Table, A2aQueue::WorkspaceId))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkspacePlugins::Table)
                    .col(text_not_null(WorkspacePlugins::WorkspaceId))
                    .col(text_not_null(WorkspacePlugins::Plugin))
                    .col(text_not_null(WorkspacePlugins::Source))
                    .col(timestamp_not_null(WorkspacePlugins::InstalledAt))
                    .primary_key(
                        Index::create()
                            .col(WorkspacePlugins::WorkspaceId)
                            .col(WorkspacePlugins::Plugin),
                    )
                    .foreign_key(&mut workspace_fk(
                        WorkspacePlugins::Table,
                        WorkspacePlugins::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkspaceFiles::Table)
                    .col(text_not_null(WorkspaceFiles::WorkspaceId))
                    .col(text_not_null(WorkspaceFiles::Path))
                    .col(text_not_null(WorkspaceFiles::Content))
                    .col(timestamp_not_null(WorkspaceFiles::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(WorkspaceFiles::WorkspaceId)
                            .col(WorkspaceFiles::Path),
                    )
                    .foreign_key(&mut workspace_fk(
                        WorkspaceFiles::Table,
                        WorkspaceFiles::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;

        // Partial indexes have the same syntax on both backends, which sea-query's builder lacks.
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX idx_workspaces_status ON workspaces (status)",
            "CREATE INDEX idx_workspaces_parent ON workspaces (parent_id)",
            "CREATE INDEX idx_workspaces_created ON workspaces (created_at, id)",
            "CREATE INDEX idx_tokens_live ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL",
            "CREATE INDEX idx_org_tokens_live ON org_api_tokens (token_hash) WHERE revoked_at IS NULL",
            "CREATE INDEX idx_events_workspace ON structure_events (workspace_id, created_at)",
            "CREATE INDEX idx_events_created ON structure_events (created_at, id)",
            "CREATE INDEX idx_activity_workspace ON activity_logs (workspace_id, activity_type, created_at)",
            "CREATE INDEX idx_activity_created ON activity_logs (created_at)",
            "CREATE UNIQUE INDEX idx_activity_idempotency ON activity_logs (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX idx_queue_drain ON a2a_queue (workspace_id, priority DESC, enqueued_at) WHERE status = 'queued'",
            "CREATE UNIQUE INDEX idx_queue_idempotency ON a2a_queue (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched')",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "workspace_files",
            "workspace_plugins",
            "a2a_queue",
            "activity_logs",
            "structure_events",
            "global_secrets",
            "workspace_secrets",
            "org_api_tokens",
            "workspace_auth_tokens",
            "canvas_layouts",
            "workspaces",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    Role,
    Tier,
    Status,
    Runtime,
    AgentCard,
    Url,
    ParentId,
    ForwardedTo,
    SourceBundleId,
    AwarenessNamespace,
    WorkspaceDir,
    WorkspaceAccess,
    LastHeartbeatAt,
    LastOutboundAt,
    LastErrorRate,
    LastSampleError,
    CurrentTask,
    ActiveTasks,
    UptimeSeconds,
    MaxConcurrentTasks,
    BudgetLimit,
    MonthlySpend,
    HibernationIdleMinutes,
    InstanceId,
    RuntimeMetadata,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CanvasLayouts {
    Table,
    WorkspaceId,
    X,
    Y,
    Collapsed,
}

#[derive(DeriveIden)]
enum WorkspaceAuthTokens {
    Table,
    Id,
    WorkspaceId,
    TokenHash,
    Prefix,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
pub(crate) enum OrgApiTokens {
    Table,
    Id,
    TokenHash,
    Prefix,
    Name,
    CreatedBy,
    OrgId,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum WorkspaceSecrets {
    Table,
    Id,
    WorkspaceId,
    Key,
    EncryptedValue,
    EncryptionVersion,
    KeyVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GlobalSecrets {
    Table,
    Id,
    Key,
    EncryptedValue,
    EncryptionVersion,
    KeyVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StructureEvents {
    Table,
    Id,
    EventType,
    WorkspaceId,
    AgentId,
    TargetId,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ActivityLogs {
    Table,
    Id,
    WorkspaceId,
    ActivityType,
    SourceId,
    TargetId,
    Method,
    Summary,
    RequestBody,
    ResponseBody,
    ToolTrace,
    DurationMs,
    Status,
    ErrorDetail,
    IdempotencyKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum A2aQueue {
    Table,
    Id,
    WorkspaceId,
    CallerId,
    Priority,
    Body,
    Method,
    IdempotencyKey,
    EnqueuedAt,
    DispatchedAt,
    CompletedAt,
    ExpiresAt,
    Attempts,
    Status,
    LastError,
}

#[derive(DeriveIden)]
enum WorkspacePlugins {
    Table,
    WorkspaceId,
    Plugin,
    Source,
    InstalledAt,
}

#[derive(DeriveIden)]
enum WorkspaceFiles {
    Table,
    WorkspaceId,
    Path,
    Content,
    UpdatedAt,
}

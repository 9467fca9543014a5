//! The key-value memory (docs/operations.md O3): one JSON value per (workspace, key), versioned
//! for compare-and-set, with an optional expiry.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{text_not_null, timestamp, timestamp_not_null, workspace_fk};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

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
                    .table(WorkspaceMemory::Table)
                    .col(text_not_null(WorkspaceMemory::WorkspaceId))
                    .col(text_not_null(WorkspaceMemory::Key))
                    // JSON text.
                    .col(text_not_null(WorkspaceMemory::Value))
                    .col(
                        ColumnDef::new(WorkspaceMemory::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(timestamp(WorkspaceMemory::ExpiresAt))
                    .col(timestamp_not_null(WorkspaceMemory::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(WorkspaceMemory::WorkspaceId)
                            .col(WorkspaceMemory::Key),
                    )
                    .foreign_key(&mut workspace_fk(
                        WorkspaceMemory::Table,
                        WorkspaceMemory::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;
        // The sweep of expired keys.
        manager
            .create_index(
                Index::create()
                    .name("idx_workspace_memory_expires")
                    .table(WorkspaceMemory::Table)
                    .col(WorkspaceMemory::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkspaceMemory::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WorkspaceMemory {
    Table,
    WorkspaceId,
    Key,
    Value,
    Version,
    ExpiresAt,
    UpdatedAt,
}

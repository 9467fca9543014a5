//! A workspace's `config.yaml`, kept platform-side (docs/operations.md O4): there is no container
//! to read it from. One row per workspace, versioned.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{id, text, text_not_null, timestamp_not_null, workspace_fk};

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
                    .table(WorkspaceConfigs::Table)
                    .col(id(WorkspaceConfigs::WorkspaceId))
                    // The YAML document as written (or as a JSON merge left it).
                    .col(text_not_null(WorkspaceConfigs::Content))
                    .col(
                        ColumnDef::new(WorkspaceConfigs::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(timestamp_not_null(WorkspaceConfigs::UpdatedAt))
                    .col(text(WorkspaceConfigs::UpdatedBy))
                    .foreign_key(&mut workspace_fk(
                        WorkspaceConfigs::Table,
                        WorkspaceConfigs::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkspaceConfigs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WorkspaceConfigs {
    Table,
    WorkspaceId,
    Content,
    Version,
    UpdatedAt,
    UpdatedBy,
}

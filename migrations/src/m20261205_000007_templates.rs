//! Org imports and imported workspace templates (docs/operations.md §7). An import row per key
//! makes importing the same document twice create nothing the second time; imported workspace
//! templates live here rather than on one replica's disk.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{text_not_null, timestamp_not_null};

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
                    .table(OrgImports::Table)
                    .col(text_not_null(OrgImports::ImportKey).primary_key())
                    .col(text_not_null(OrgImports::TemplateName))
                    // SHA-256 of the document as parsed, so a different document under a used
                    // key is told apart from the same one again.
                    .col(text_not_null(OrgImports::DocumentSha256))
                    // JSON array of the created workspace ids, in the document's order.
                    .col(text_not_null(OrgImports::WorkspaceIds))
                    .col(text_not_null(OrgImports::CreatedBy))
                    .col(timestamp_not_null(OrgImports::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkspaceTemplates::Table)
                    .col(text_not_null(WorkspaceTemplates::Id).primary_key())
                    .col(text_not_null(WorkspaceTemplates::Name))
                    // JSON object: relative path → content.
                    .col(text_not_null(WorkspaceTemplates::Files))
                    .col(text_not_null(WorkspaceTemplates::CreatedBy))
                    .col(timestamp_not_null(WorkspaceTemplates::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkspaceTemplates::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OrgImports::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OrgImports {
    Table,
    ImportKey,
    TemplateName,
    DocumentSha256,
    WorkspaceIds,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WorkspaceTemplates {
    Table,
    Id,
    Name,
    Files,
    CreatedBy,
    CreatedAt,
}

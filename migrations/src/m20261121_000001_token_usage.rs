//! Token usage totals per workspace (docs/a2a.md §1.11 step 5): one row per workspace, summed
//! from the `usage` its answers report. A table of its own so the hot `workspaces` row is not
//! rewritten by accounting.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{id, timestamp_not_null, workspace_fk};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let count = |col: TokenUsage| {
            ColumnDef::new(col)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(TokenUsage::Table)
                    .col(id(TokenUsage::WorkspaceId))
                    .col(count(TokenUsage::InputTokens))
                    .col(count(TokenUsage::OutputTokens))
                    .col(count(TokenUsage::Calls))
                    .col(timestamp_not_null(TokenUsage::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        TokenUsage::Table,
                        TokenUsage::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TokenUsage::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum TokenUsage {
    #[sea_orm(iden = "workspace_token_usage")]
    Table,
    WorkspaceId,
    InputTokens,
    OutputTokens,
    Calls,
    UpdatedAt,
}

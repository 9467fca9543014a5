//! Token usage per workspace per UTC day, with its estimated cost (docs/operations.md §5): what
//! budgets (the month's days) and `/metrics` (today) are computed from. The all-time totals stay
//! in `workspace_token_usage`.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{text_not_null, timestamp_not_null, workspace_fk};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let count = |column: UsageDaily| {
            ColumnDef::new(column)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(UsageDaily::Table)
                    .col(text_not_null(UsageDaily::WorkspaceId))
                    // Midnight UTC of the day.
                    .col(timestamp_not_null(UsageDaily::Day))
                    .col(count(UsageDaily::InputTokens))
                    .col(count(UsageDaily::OutputTokens))
                    .col(count(UsageDaily::Calls))
                    // Millionths of a US dollar, at the prices in force when each call was recorded.
                    .col(count(UsageDaily::CostMicroUsd))
                    .primary_key(
                        Index::create()
                            .col(UsageDaily::WorkspaceId)
                            .col(UsageDaily::Day),
                    )
                    .foreign_key(&mut workspace_fk(
                        UsageDaily::Table,
                        UsageDaily::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageDaily::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum UsageDaily {
    #[sea_orm(iden = "workspace_usage_daily")]
    Table,
    WorkspaceId,
    Day,
    InputTokens,
    OutputTokens,
    Calls,
    CostMicroUsd,
}

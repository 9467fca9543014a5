//! The audit trail (docs/operations.md O7): append-only rows in chains (one per workspace, one
//! for the organisation), each with its position and the hash of the row before it, and one head
//! row per chain, locked by every append, that remembers the last position and hash. No foreign
//! keys: the trail outlives what it describes.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{id, text, text_not_null, timestamp_not_null};

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
                    .table(AuditEvents::Table)
                    .col(id(AuditEvents::Id))
                    .col(text_not_null(AuditEvents::Chain))
                    .col(ColumnDef::new(AuditEvents::Seq).big_integer().not_null())
                    .col(timestamp_not_null(AuditEvents::At))
                    .col(text_not_null(AuditEvents::Actor))
                    .col(text_not_null(AuditEvents::Operation))
                    .col(text(AuditEvents::Target))
                    .col(text(AuditEvents::WorkspaceId))
                    .col(text(AuditEvents::RequestId))
                    // JSON text.
                    .col(text_not_null(AuditEvents::Details))
                    .col(text(AuditEvents::PrevHash))
                    .col(text_not_null(AuditEvents::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_chain_seq")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::Chain)
                    .col(AuditEvents::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditChains::Table)
                    .col(id(AuditChains::Chain))
                    .col(
                        ColumnDef::new(AuditChains::LastSeq)
                            .big_integer()
                            .not_null(),
                    )
                    .col(text(AuditChains::LastHash))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditChains::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Chain,
    Seq,
    At,
    Actor,
    Operation,
    Target,
    WorkspaceId,
    RequestId,
    Details,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditChains {
    Table,
    Chain,
    LastSeq,
    LastHash,
}

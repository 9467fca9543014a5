//! The operator console's tables (docs/console.md): server-side sign-in sessions, so a session
//! works on every replica and can be revoked, and each operator's saved canvas viewport.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{
    OrgApiTokens, id, text, text_not_null, timestamp, timestamp_not_null,
};

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
                    .table(ConsoleSessions::Table)
                    .col(id(ConsoleSessions::Id))
                    .col(
                        ColumnDef::new(ConsoleSessions::TokenHash)
                            .binary()
                            .not_null()
                            .unique_key(),
                    )
                    // `admin`, `dev`, or `org` with the key in `org_token_id`.
                    .col(text_not_null(ConsoleSessions::PrincipalKind))
                    .col(text(ConsoleSessions::OrgTokenId))
                    // For `admin`: which admin token opened it (a prefix of its SHA-256), so
                    // rotating ADMIN_TOKEN ends the sessions the old one opened.
                    .col(
                        ColumnDef::new(ConsoleSessions::AdminFingerprint)
                            .binary()
                            .null(),
                    )
                    .col(text(ConsoleSessions::UserAgent))
                    .col(timestamp_not_null(ConsoleSessions::CreatedAt))
                    .col(timestamp_not_null(ConsoleSessions::ExpiresAt))
                    .col(timestamp(ConsoleSessions::RevokedAt))
                    // Revoking (or deleting) the org key ends the sessions it opened.
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConsoleSessions::Table, ConsoleSessions::OrgTokenId)
                            .to(OrgApiTokens::Table, OrgApiTokens::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_console_sessions_expires")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsoleViewports::Table)
                    // The operator as audit trails name it: `admin`, `org:<prefix>`, `dev`.
                    .col(id(ConsoleViewports::Principal))
                    .col(ColumnDef::new(ConsoleViewports::X).double().not_null())
                    .col(ColumnDef::new(ConsoleViewports::Y).double().not_null())
                    .col(ColumnDef::new(ConsoleViewports::Zoom).double().not_null())
                    .col(timestamp_not_null(ConsoleViewports::SavedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleViewports::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Id,
    TokenHash,
    PrincipalKind,
    OrgTokenId,
    AdminFingerprint,
    UserAgent,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum ConsoleViewports {
    Table,
    Principal,
    X,
    Y,
    Zoom,
    SavedAt,
}

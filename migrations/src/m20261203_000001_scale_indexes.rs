//! Indexes for scale. Every token of a workspace, revoked or not, found by index: registration asks whether a
//! workspace ever had one, which the partial index of live tokens cannot answer, so each
//! registration scanned the whole table (bench/scale.sh: 110,000 joins slowed from 500/s to
//! 110/s). One full index serves both questions; the partial one goes.
//!
//! And on Postgres, room in every `workspaces` page for the write-behind's heartbeat columns:
//! an update that fits in its page and changes no indexed column is a HOT update, which
//! touches none of the table's indexes (at 100,000 agents that is 3,300 row updates a second).

use sea_orm_migration::{async_trait::async_trait, prelude::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_tokens_workspace ON workspace_auth_tokens (workspace_id)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX idx_tokens_live").await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE workspaces SET (fillfactor = 70)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_tokens_live ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL",
        )
        .await?;
        db.execute_unprepared("DROP INDEX idx_tokens_workspace")
            .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE workspaces RESET (fillfactor)")
                .await?;
        }
        Ok(())
    }
}

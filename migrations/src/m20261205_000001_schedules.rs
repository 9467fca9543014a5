//! Schedules (docs/operations.md O1): a workspace's cron schedules and the history of their runs.
//! A run is claimed by one conditional update of its schedule's `next_run_at`, and the unique
//! key on (schedule, due time) makes "at most one run per slot" the database's promise too.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{
    id, text_not_null, timestamp, timestamp_not_null, workspace_fk,
};

const SOURCES: [&str; 2] = ["runtime", "template"];
const TRIGGERS: [&str; 2] = ["schedule", "manual"];

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
                    .table(WorkspaceSchedules::Table)
                    .col(id(WorkspaceSchedules::Id))
                    .col(text_not_null(WorkspaceSchedules::WorkspaceId))
                    .col(text_not_null(WorkspaceSchedules::Name))
                    .col(text_not_null(WorkspaceSchedules::CronExpr))
                    .col(text_not_null(WorkspaceSchedules::Timezone))
                    .col(text_not_null(WorkspaceSchedules::Prompt))
                    .col(
                        ColumnDef::new(WorkspaceSchedules::Enabled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(timestamp(WorkspaceSchedules::NextRunAt))
                    .col(timestamp(WorkspaceSchedules::LastRunAt))
                    .col(
                        ColumnDef::new(WorkspaceSchedules::RunCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        text_not_null(WorkspaceSchedules::LastStatus)
                            .default("")
                            .to_owned(),
                    )
                    .col(
                        text_not_null(WorkspaceSchedules::LastError)
                            .default("")
                            .to_owned(),
                    )
                    .col(
                        text_not_null(WorkspaceSchedules::Source)
                            .check(Expr::col(WorkspaceSchedules::Source).is_in(SOURCES))
                            .to_owned(),
                    )
                    .col(timestamp_not_null(WorkspaceSchedules::CreatedAt))
                    .col(timestamp_not_null(WorkspaceSchedules::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        WorkspaceSchedules::Table,
                        WorkspaceSchedules::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;
        // The scheduler's one query: what is due next.
        manager
            .create_index(
                Index::create()
                    .name("idx_schedules_due")
                    .table(WorkspaceSchedules::Table)
                    .col(WorkspaceSchedules::NextRunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_schedules_workspace")
                    .table(WorkspaceSchedules::Table)
                    .col(WorkspaceSchedules::WorkspaceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScheduleRuns::Table)
                    .col(id(ScheduleRuns::Id))
                    .col(text_not_null(ScheduleRuns::ScheduleId))
                    .col(text_not_null(ScheduleRuns::WorkspaceId))
                    .col(
                        text_not_null(ScheduleRuns::Trigger)
                            .check(Expr::col(ScheduleRuns::Trigger).is_in(TRIGGERS))
                            .to_owned(),
                    )
                    // The slot a scheduled run was due at; none for a manual run.
                    .col(timestamp(ScheduleRuns::DueAt))
                    .col(timestamp_not_null(ScheduleRuns::StartedAt))
                    .col(timestamp(ScheduleRuns::FinishedAt))
                    .col(ColumnDef::new(ScheduleRuns::DurationMs).integer().null())
                    .col(text_not_null(ScheduleRuns::Status))
                    .col(
                        text_not_null(ScheduleRuns::ErrorDetail)
                            .default("")
                            .to_owned(),
                    )
                    // JSON text: the schedule as it was fired.
                    .col(text_not_null(ScheduleRuns::Request))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ScheduleRuns::Table, ScheduleRuns::ScheduleId)
                            .to(WorkspaceSchedules::Table, WorkspaceSchedules::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(&mut workspace_fk(
                        ScheduleRuns::Table,
                        ScheduleRuns::WorkspaceId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_schedule_runs_slot")
                    .table(ScheduleRuns::Table)
                    .col(ScheduleRuns::ScheduleId)
                    .col(ScheduleRuns::DueAt)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_schedule_runs_started")
                    .table(ScheduleRuns::Table)
                    .col(ScheduleRuns::ScheduleId)
                    .col(ScheduleRuns::StartedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_schedule_runs_status")
                    .table(ScheduleRuns::Table)
                    .col(ScheduleRuns::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ScheduleRuns::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WorkspaceSchedules::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WorkspaceSchedules {
    Table,
    Id,
    WorkspaceId,
    Name,
    CronExpr,
    Timezone,
    Prompt,
    Enabled,
    NextRunAt,
    LastRunAt,
    RunCount,
    LastStatus,
    LastError,
    Source,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScheduleRuns {
    Table,
    Id,
    ScheduleId,
    WorkspaceId,
    Trigger,
    DueAt,
    StartedAt,
    FinishedAt,
    DurationMs,
    Status,
    ErrorDetail,
    Request,
}

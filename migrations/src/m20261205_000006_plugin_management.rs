//! Plugin management (docs/operations.md §6): the version each install recorded, and each org's
//! plugin allowlist (an org is a root workspace). A policy row marks an org that has set its
//! own list, even an empty one (allow all); without one, `MOLECULE_PLUGIN_ALLOWLIST` applies.

use sea_orm_migration::{async_trait::async_trait, prelude::*};

use crate::m20261120_000001_initial::{text, text_not_null, timestamp_not_null, workspace_fk};

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
            .alter_table(
                Table::alter()
                    .table(WorkspacePlugins::Table)
                    .add_column(text(WorkspacePlugins::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrgPluginPolicies::Table)
                    .col(text_not_null(OrgPluginPolicies::OrgId).primary_key())
                    .col(text_not_null(OrgPluginPolicies::UpdatedBy))
                    .col(timestamp_not_null(OrgPluginPolicies::UpdatedAt))
                    .foreign_key(&mut workspace_fk(
                        OrgPluginPolicies::Table,
                        OrgPluginPolicies::OrgId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrgPluginAllowlist::Table)
                    .col(text_not_null(OrgPluginAllowlist::OrgId))
                    .col(text_not_null(OrgPluginAllowlist::PluginName))
                    .col(text_not_null(OrgPluginAllowlist::EnabledBy))
                    .col(timestamp_not_null(OrgPluginAllowlist::EnabledAt))
                    .primary_key(
                        Index::create()
                            .col(OrgPluginAllowlist::OrgId)
                            .col(OrgPluginAllowlist::PluginName),
                    )
                    .foreign_key(&mut workspace_fk(
                        OrgPluginAllowlist::Table,
                        OrgPluginAllowlist::OrgId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OrgPluginAllowlist::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OrgPluginPolicies::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WorkspacePlugins::Table)
                    .drop_column(WorkspacePlugins::Version)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum WorkspacePlugins {
    Table,
    Version,
}

#[derive(DeriveIden)]
enum OrgPluginPolicies {
    Table,
    OrgId,
    UpdatedBy,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrgPluginAllowlist {
    #[sea_orm(iden = "org_plugin_allowlist")]
    Table,
    OrgId,
    PluginName,
    EnabledBy,
    EnabledAt,
}

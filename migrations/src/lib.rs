//! The Molecule schema as one sea-orm migration set that runs unchanged on SQLite and Postgres.
//! It owns table layout only: no data rules live here beyond CHECK constraints and keys.

use sea_orm_migration::async_trait::async_trait;
pub use sea_orm_migration::{MigrationStatus, prelude::*};

mod m20261120_000001_initial;
mod m20261121_000001_token_usage;
mod m20261201_000001_runtime;
mod m20261202_000001_console;
mod m20261203_000001_scale_indexes;
mod m20261205_000001_schedules;
mod m20261205_000002_key_values;
mod m20261205_000003_workspace_configs;
mod m20261205_000004_audit;
mod m20261205_000005_usage_daily;
mod m20261205_000006_plugin_management;
mod m20261205_000007_templates;

/// Every migration, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261120_000001_initial::Migration),
            Box::new(m20261121_000001_token_usage::Migration),
            Box::new(m20261201_000001_runtime::Migration),
            Box::new(m20261202_000001_console::Migration),
            Box::new(m20261203_000001_scale_indexes::Migration),
            Box::new(m20261205_000001_schedules::Migration),
            Box::new(m20261205_000002_key_values::Migration),
            Box::new(m20261205_000003_workspace_configs::Migration),
            Box::new(m20261205_000004_audit::Migration),
            Box::new(m20261205_000005_usage_daily::Migration),
            Box::new(m20261205_000006_plugin_management::Migration),
            Box::new(m20261205_000007_templates::Migration),
        ]
    }
}

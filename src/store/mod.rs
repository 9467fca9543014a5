//! The relational store: connecting to SQLite or Postgres, migrating, and the sea-orm entities.
//! It owns table access only; business rules (status transitions, auth) live in the services.

mod db;
pub mod entities;

pub use db::{Db, is_unavailable};

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use tracing::info;

use crate::{
    config::StorageArgs,
    error::{ApiError, ApiResult},
};

/// The SQLite URL of the embedded default, inside the data dir.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("molecule.db").display()
    )
}

/// Opens the configured database (SQLite in the data dir when none is configured).
pub async fn connect(storage: &StorageArgs) -> Result<DatabaseConnection, DbErr> {
    let url = match &storage.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            std::fs::create_dir_all(&storage.data_dir)
                .map_err(|err| DbErr::Custom(format!("cannot create data dir: {err}")))?;
            default_sqlite_url(&storage.data_dir)
        }
    };
    connect_url(&url).await
}

pub async fn connect_url(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // An in-memory database exists per connection, and SQLite has one writer anyway.
        options.max_connections(1).map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
        });
    } else {
        options.max_connections(16).min_connections(1);
    }
    let db = Database::connect(options).await?;
    info!(backend = ?db.get_database_backend(), "datastore connected");
    Ok(db)
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// The one clock for rows: UTC, truncated to microseconds so both backends store the same value.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A workspace row that exists and is not removed, or the documented 404.
pub async fn live_workspace(
    db: &impl sea_orm::ConnectionTrait,
    id: &str,
) -> ApiResult<entities::workspace::Model> {
    use sea_orm::EntityTrait;
    entities::workspace::Entity::find_by_id(id.to_owned())
        .one(db)
        .await
        .map_err(ApiError::datastore("query failed"))?
        .filter(|row| row.status != "removed")
        .ok_or_else(|| ApiError::not_found("workspace not found"))
}

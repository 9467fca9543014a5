//! The relational store: connecting to SQLite or Postgres, migrating, and the sea-orm entities.
//! It owns table access only; business rules (status transitions, auth) live in the services.

mod db;
pub mod entities;

pub use db::{Db, is_unavailable};

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use migrations::{MigrationStatus, Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use tracing::info;

use crate::{
    config::StorageArgs,
    domain::WorkspaceStatus,
    error::{ApiError, ApiResult},
};

/// The SQLite URL of the embedded default, inside the data dir.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("molecule.db").display()
    )
}

/// Creates the data dir, owner-only (0700), if it does not exist yet. An existing directory
/// keeps its mode: it may be one the operator chose and shares.
pub fn ensure_data_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Opens the configured database (SQLite in the data dir when none is configured).
pub async fn connect(storage: &StorageArgs) -> Result<DatabaseConnection, DbErr> {
    let url = match &storage.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            ensure_data_dir(&storage.data_dir).map_err(|err| {
                DbErr::Custom(format!(
                    "cannot create data dir {}: {err}",
                    storage.data_dir.display()
                ))
            })?;
            default_sqlite_url(&storage.data_dir)
        }
    };
    connect_url(&url).await
}

/// Opens and migrates the configured database for a command, or says in one line what could
/// not be reached and where (never with a password). A Postgres server that refuses
/// connections is reported at once, not after the pool's acquire timeout.
pub async fn open(storage: &StorageArgs) -> Result<DatabaseConnection, String> {
    let db = open_unmigrated(storage).await?;
    migrate(&db)
        .await
        .map_err(|err| format!("cannot migrate {}: {err}", describe(storage)))?;
    Ok(db)
}

/// The database as it is, migrated or not (`molecule migrate status` must not change it).
pub async fn open_unmigrated(storage: &StorageArgs) -> Result<DatabaseConnection, String> {
    let Some(url) = &storage.database_url else {
        return connect(storage)
            .await
            .map_err(|err| format!("cannot open {}: {err}", describe(storage)));
    };
    let shown = crate::config::redacted_url(url.expose());
    if let Ok(parsed) = url::Url::parse(url.expose())
        && matches!(parsed.scheme(), "postgres" | "postgresql")
    {
        let host = parsed.host_str().unwrap_or("localhost").to_owned();
        let port = parsed.port().unwrap_or(5432);
        let reached = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await;
        let failure = match reached {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some("no answer within 5 s".to_owned()),
        };
        if let Some(reason) = failure {
            return Err(format!(
                "cannot reach the database at {host}:{port} (DATABASE_URL={shown}): {reason}"
            ));
        }
    }
    connect(storage)
        .await
        .map_err(|err| format!("cannot open {}: {err}", describe(storage)))
}

/// The database an error message names, its URL's password redacted.
fn describe(storage: &StorageArgs) -> String {
    match &storage.database_url {
        Some(url) => format!(
            "the database (DATABASE_URL={})",
            crate::config::redacted_url(url.expose())
        ),
        None => format!("the SQLite database in {}", storage.data_dir.display()),
    }
}

/// The file of a SQLite URL (`sqlite://path?…`), unless it is in memory.
fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.contains(":memory:")).then(|| Path::new(path))
}

/// Makes a SQLite database and its journal files owner-only (0600): they hold every token
/// hash and sealed secret. Creating the file first makes SQLite create its `-wal` and `-shm`
/// with the same mode.
fn restrict_sqlite_files(path: &Path) -> Result<(), DbErr> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let fail = |err: std::io::Error| {
            DbErr::Custom(format!(
                "cannot secure database file {}: {err}",
                path.display()
            ))
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(fail)?;
            }
        }
    }
    Ok(())
}

pub async fn connect_url(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if let Some(file) = sqlite_file(url) {
        restrict_sqlite_files(file)?;
    }
    if url.starts_with("sqlite:") {
        // An in-memory database exists per connection, and SQLite has one writer anyway.
        options.max_connections(1).map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
                // The one writer keeps its b-tree pages (32 MiB) and reads the file mapped:
                // under the proxy's activity rows, checkpoints otherwise re-read pages through
                // read(2) copies (bench/profile-a2a.sh).
                .pragma("cache_size", "-32768")
                .pragma("mmap_size", "268435456")
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

/// Every migration this binary carries, in order, and whether the database has applied it.
/// Reads only: a database never migrated has every migration pending.
pub async fn migration_status(db: &impl ConnectionTrait) -> Result<Vec<(String, bool)>, DbErr> {
    let migrations = match Migrator::get_migration_with_status_read_only(db).await {
        Ok(migrations) => migrations,
        // Reached, but without a migrations table yet: nothing is applied.
        Err(err) if !is_unavailable(&err) && !has_migrations_table(db).await? => {
            return Ok(Migrator::migrations()
                .iter()
                .map(|migration| (migration.name().to_owned(), false))
                .collect());
        }
        Err(err) => return Err(err),
    };
    Ok(migrations
        .iter()
        .map(|migration| {
            let applied = migration.status() == MigrationStatus::Applied;
            (migration.name().to_owned(), applied)
        })
        .collect())
}

async fn has_migrations_table(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
    let probe = sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT 1 FROM seaql_migrations LIMIT 1",
    );
    match db.query_one_raw(probe).await {
        Ok(_) => Ok(true),
        Err(err) if is_unavailable(&err) => Err(err),
        Err(_) => Ok(false),
    }
}

/// The one clock for rows: UTC, truncated to microseconds so both backends store the same value.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// An instant as text to the microsecond, `Z`-terminated: how hashes and logs read a stored time.
pub fn rfc3339_micros(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A datastore result as the caller's answer, in one place: unreachable → the documented 503
/// (fail closed), anything else → a 500 with the documented `message`. The cause is logged,
/// never returned; an outage is logged by the breaker once, not here once per request.
pub trait DbContext<T> {
    fn context(self, message: &'static str) -> ApiResult<T>;
}

impl<T> DbContext<T> for Result<T, DbErr> {
    fn context(self, message: &'static str) -> ApiResult<T> {
        self.map_err(|err| failure(err, message))
    }
}

/// One datastore failure as the caller's answer (see [`DbContext`]).
pub fn failure(err: DbErr, message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    if is_unavailable(&err) {
        ApiError::datastore_unavailable()
    } else {
        let message = message.into();
        tracing::error!(error = %err, context = %message, "datastore operation failed");
        ApiError::internal(message)
    }
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
        .context("query failed")?
        .filter(|row| row.status != WorkspaceStatus::Removed)
        .ok_or_else(|| ApiError::not_found(crate::domain::validate::WORKSPACE_NOT_FOUND))
}

//! The KeyValues gRPC service (docs/operations.md O3): a workspace's key-value memory. Each write
//! raises the key's version by one in a single conditional statement, so of concurrent writers
//! naming the same version exactly one wins; an expired key is invisible at once (every read
//! filters on the expiry) and swept later. It stores values; it never interprets them.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use serde_json::json;
use tonic::{Request, metadata::MetadataMap};

use crate::{
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{
        self, DbContext,
        entities::{key_value, workspace},
    },
};

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_KEYS: u64 = 10_000;

/// Every way a key-value call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyValueError {
    KeyRequired,
    ValueRequired,
    InvalidBody,
    InvalidTtl,
    KeyTooLong,
    ValueTooLarge,
    TooManyKeys,
    NotFound,
    VersionMismatch { expected: i64, current: Option<i64> },
}

impl From<KeyValueError> for ApiError {
    fn from(err: KeyValueError) -> Self {
        let too_large = |message| ApiError::new(ErrorCode::PayloadTooLarge, message);
        match err {
            KeyValueError::KeyRequired => ApiError::bad_request("key is required"),
            KeyValueError::ValueRequired => ApiError::bad_request("value is required"),
            KeyValueError::InvalidBody => ApiError::bad_request("invalid request body"),
            KeyValueError::InvalidTtl => ApiError::bad_request("ttl_seconds must be positive"),
            KeyValueError::KeyTooLong => too_large("key too long (at most 256 bytes)"),
            KeyValueError::ValueTooLarge => too_large("value too large (at most 64 KiB)"),
            KeyValueError::TooManyKeys => too_large("too many keys (at most 10000)"),
            KeyValueError::NotFound => ApiError::new(ErrorCode::NotFound, "key not found"),
            KeyValueError::VersionMismatch { expected, current } => {
                let message = if current.is_some() {
                    "if_match_version mismatch"
                } else {
                    "if_match_version mismatch: key does not exist"
                };
                ApiError::new(ErrorCode::Conflict, message)
                    .with_fields(json!({"expected_version": expected, "current_version": current}))
            }
        }
    }
}

pub struct KeyValuesService {
    state: Platform,
}

impl KeyValuesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::key_values_server::KeyValues for KeyValuesService {
    async fn list(
        &self,
        request: Request<pb::ListKeyValuesRequest>,
    ) -> RpcResult<pb::KeyValueList> {
        reply(
            self.list(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn get(&self, request: Request<pb::KeyValueRef>) -> RpcResult<pb::KeyValue> {
        reply(self.get(request.metadata(), request.get_ref()).await)
    }

    async fn set(
        &self,
        request: Request<pb::SetKeyValueRequest>,
    ) -> RpcResult<pb::SetKeyValueResponse> {
        reply(self.set(request.metadata(), request.get_ref()).await)
    }

    async fn delete(
        &self,
        request: Request<pb::KeyValueRef>,
    ) -> RpcResult<pb::DeleteKeyValueResponse> {
        reply(self.delete(request.metadata(), request.get_ref()).await)
    }
}

/// Rows whose expiry has not come.
fn live() -> Condition {
    Condition::any()
        .add(key_value::Column::ExpiresAt.is_null())
        .add(key_value::Column::ExpiresAt.gt(store::now()))
}

impl KeyValuesService {
    async fn list(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::KeyValueList> {
        let workspace_id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let rows = key_value::Entity::find()
            .filter(key_value::Column::WorkspaceId.eq(workspace_id))
            .filter(live())
            .order_by_asc(key_value::Column::Key)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        Ok(pb::KeyValueList {
            entries: rows.into_iter().map(entry).collect(),
        })
    }

    async fn get(
        &self,
        metadata: &MetadataMap,
        request: &pb::KeyValueRef,
    ) -> ApiResult<pb::KeyValue> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        key_value::Entity::find_by_id((workspace_id, request.key.clone()))
            .filter(live())
            .one(&self.state.db)
            .await
            .context("query failed")?
            .map(entry)
            .ok_or_else(|| KeyValueError::NotFound.into())
    }

    async fn set(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetKeyValueRequest,
    ) -> ApiResult<pb::SetKeyValueResponse> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let key = request.key.as_str();
        if key.is_empty() {
            return Err(KeyValueError::KeyRequired.into());
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyValueError::KeyTooLong.into());
        }
        let value = request
            .value_json
            .as_deref()
            .ok_or(KeyValueError::ValueRequired)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KeyValueError::ValueTooLarge.into());
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(value).is_err() {
            return Err(KeyValueError::InvalidBody.into());
        }
        let expires_at = match request.ttl_seconds {
            None => None,
            Some(ttl) if ttl > 0 => chrono::TimeDelta::try_seconds(ttl)
                .and_then(|ttl| store::now().checked_add_signed(ttl)),
            Some(_) => return Err(KeyValueError::InvalidTtl.into()),
        };
        let write = Write {
            workspace_id: &workspace_id,
            key,
            value,
            expires_at,
        };
        const FAILED: &str = "failed to set memory";
        let txn = self.state.db.begin().await.context(FAILED)?;
        let written = match request.if_match_version {
            None => write.upsert(&txn).await,
            Some(0) => write.create(&txn).await,
            Some(expected) => write.replace(&txn, expected).await,
        }
        .context(FAILED)?;
        let version = match written {
            Written::Version(version) => version,
            Written::Full => return Err(KeyValueError::TooManyKeys.into()),
            Written::Mismatch { expected } => {
                let current = live_version(&txn, &workspace_id, key)
                    .await
                    .context(FAILED)?;
                return Err(KeyValueError::VersionMismatch { expected, current }.into());
            }
        };
        txn.commit().await.context(FAILED)?;
        Ok(pb::SetKeyValueResponse {
            key: key.to_owned(),
            version,
        })
    }

    async fn delete(
        &self,
        metadata: &MetadataMap,
        request: &pb::KeyValueRef,
    ) -> ApiResult<pb::DeleteKeyValueResponse> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        key_value::Entity::delete_by_id((workspace_id, request.key.clone()))
            .exec(&self.state.db)
            .await
            .context("failed to delete")?;
        Ok(pb::DeleteKeyValueResponse {})
    }
}

/// One write of a value.
struct Write<'a> {
    workspace_id: &'a str,
    key: &'a str,
    value: &'a str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

enum Written {
    Version(i64),
    /// A new key would pass the workspace's cap.
    Full,
    /// The compare-and-set found another version.
    Mismatch {
        expected: i64,
    },
}

impl Write<'_> {
    /// Any version: the next one (an expired key starts again at 1).
    async fn upsert(&self, txn: &DatabaseTransaction) -> Result<Written, DbErr> {
        let updated = key_value::Entity::update_many()
            .col_expr(key_value::Column::Value, Expr::value(self.value))
            .col_expr(key_value::Column::ExpiresAt, Expr::value(self.expires_at))
            .col_expr(key_value::Column::UpdatedAt, Expr::value(store::now()))
            .col_expr(
                key_value::Column::Version,
                sea_orm::sea_query::ExprTrait::add(Expr::col(key_value::Column::Version), 1),
            )
            .filter(key_value::Column::WorkspaceId.eq(self.workspace_id))
            .filter(key_value::Column::Key.eq(self.key))
            .filter(live())
            .exec(txn)
            .await?;
        if updated.rows_affected == 0 {
            return self.create(txn).await;
        }
        // The row is this transaction's until it commits: the version read is the one written.
        Ok(live_version(txn, self.workspace_id, self.key)
            .await?
            .map_or(Written::Mismatch { expected: 0 }, Written::Version))
    }

    /// Only if the key does not exist (an expired one does not): version 1.
    async fn create(&self, txn: &DatabaseTransaction) -> Result<Written, DbErr> {
        // The cap is counted under the workspace's row lock (Postgres; SQLite has one writer),
        // so concurrent new keys cannot pass it together.
        workspace::Entity::find_by_id(self.workspace_id)
            .select_only()
            .column(workspace::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .one(txn)
            .await?;
        key_value::Entity::delete_many()
            .filter(key_value::Column::WorkspaceId.eq(self.workspace_id))
            .filter(key_value::Column::Key.eq(self.key))
            .filter(key_value::Column::ExpiresAt.lte(store::now()))
            .exec(txn)
            .await?;
        let held = key_value::Entity::find()
            .filter(key_value::Column::WorkspaceId.eq(self.workspace_id))
            .filter(live())
            .count(txn)
            .await?;
        if held >= MAX_KEYS {
            return Ok(Written::Full);
        }
        let inserted = key_value::Entity::insert(key_value::ActiveModel {
            workspace_id: Set(self.workspace_id.to_owned()),
            key: Set(self.key.to_owned()),
            value: Set(self.value.to_owned()),
            version: Set(1),
            expires_at: Set(self.expires_at),
            updated_at: Set(store::now()),
        })
        .on_conflict(
            OnConflict::columns([key_value::Column::WorkspaceId, key_value::Column::Key])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(if inserted == 1 {
            Written::Version(1)
        } else {
            Written::Mismatch { expected: 0 }
        })
    }

    /// Only over `expected`, the live version: one conditional update.
    async fn replace(&self, txn: &DatabaseTransaction, expected: i64) -> Result<Written, DbErr> {
        // No key reaches the last version there is.
        let Some(next) = expected.checked_add(1) else {
            return Ok(Written::Mismatch { expected });
        };
        let updated = key_value::Entity::update_many()
            .col_expr(key_value::Column::Value, Expr::value(self.value))
            .col_expr(key_value::Column::ExpiresAt, Expr::value(self.expires_at))
            .col_expr(key_value::Column::UpdatedAt, Expr::value(store::now()))
            .col_expr(key_value::Column::Version, Expr::value(next))
            .filter(key_value::Column::WorkspaceId.eq(self.workspace_id))
            .filter(key_value::Column::Key.eq(self.key))
            .filter(key_value::Column::Version.eq(expected))
            .filter(live())
            .exec(txn)
            .await?;
        Ok(if updated.rows_affected == 1 {
            Written::Version(next)
        } else {
            Written::Mismatch { expected }
        })
    }
}

/// The key's version while it lives.
async fn live_version(
    db: &impl sea_orm::ConnectionTrait,
    workspace_id: &str,
    key: &str,
) -> Result<Option<i64>, DbErr> {
    key_value::Entity::find_by_id((workspace_id.to_owned(), key.to_owned()))
        .select_only()
        .column(key_value::Column::Version)
        .filter(live())
        .into_tuple()
        .one(db)
        .await
}

fn entry(row: key_value::Model) -> pb::KeyValue {
    pb::KeyValue {
        key: row.key,
        value_json: row.value,
        version: row.version,
        expires_at: row.expires_at.map(pb::timestamp),
        updated_at: Some(pb::timestamp(row.updated_at)),
    }
}

/// Deletes expired keys (the sweeper's pass; reads already ignore them).
pub async fn expire(state: &Platform) -> Result<(), DbErr> {
    key_value::Entity::delete_many()
        .filter(key_value::Column::ExpiresAt.lte(store::now()))
        .exec(&state.db)
        .await?;
    Ok(())
}

//! The Secrets gRPC service (docs/workspaces.md §4, docs/decisions.md D9): workspace and global
//! secrets, the merged pull an agent makes at boot, the model alias, and key rotation. Values are
//! sealed by `crypto` before they reach the store and opened only for the pull; they never appear
//! in logs, errors or events (error bodies name keys only where the contract documents it).

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{OnConflict, Query},
};
use serde_json::json;
use tonic::{Request, metadata::MetadataMap};
use tracing::{info, warn};

use crate::{
    crypto::{Keyring, Scope, Sealed},
    domain::{EventType, WorkspaceStatus, validate},
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    events::Envelope,
    pb,
    state::Platform,
    store::{
        self, Db, DbContext,
        entities::{global_secret, workspace, workspace_secret},
    },
};

/// The secret behind `GET|PUT /workspaces/:id/model`.
pub const MODEL_KEY: &str = "MODEL_PROVIDER";
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_KEY_BYTES: usize = 256;
const ROTATION_PAGE: u64 = 200;

/// Every way a secrets call is refused, each naming its code and documented words once
/// (docs/workspaces.md §4).
#[derive(Debug, Clone, PartialEq)]
enum SecretsError {
    InvalidBody,
    InvalidKey,
    InvalidValue,
    NotFound,
    /// Some rows did not open: the pull refuses rather than hand out a partial set.
    Undecryptable {
        failed_keys: Vec<String>,
    },
    ModelUndecryptable,
}

impl From<SecretsError> for ApiError {
    fn from(err: SecretsError) -> Self {
        let (code, message) = match &err {
            SecretsError::InvalidBody => (ErrorCode::BadRequest, "invalid request body"),
            SecretsError::InvalidKey => (ErrorCode::BadRequest, "invalid secret key"),
            SecretsError::InvalidValue => (ErrorCode::BadRequest, "invalid secret value"),
            SecretsError::NotFound => (ErrorCode::NotFound, "secret not found"),
            SecretsError::Undecryptable { .. } => (
                ErrorCode::Internal,
                "one or more secrets failed to decrypt; refusing to return partial bundle",
            ),
            SecretsError::ModelUndecryptable => (ErrorCode::Internal, "failed to decrypt"),
        };
        let error = ApiError::new(code, message);
        match err {
            SecretsError::Undecryptable { failed_keys } => {
                error.with_fields(json!({"failed_keys": failed_keys}))
            }
            _ => error,
        }
    }
}

/// A usable environment variable name: `^[A-Za-z_][A-Za-z0-9_]{0,255}$` (docs/workspaces.md §4.6).
pub fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && key.len() <= MAX_KEY_BYTES
}

/// A non-empty string of at most 64 KiB (UTF-8 by construction).
pub fn valid_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_VALUE_BYTES
}

/// One stored secret of either table, as the service and the rotation see it.
struct StoredSecret {
    id: String,
    workspace_id: Option<String>,
    key: String,
    sealed: Sealed,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl StoredSecret {
    fn scope(&self) -> Scope<'_> {
        match &self.workspace_id {
            Some(id) => Scope::Workspace(id),
            None => Scope::Global,
        }
    }

    /// `scope:key`, the form `failed_keys` reports.
    fn label(&self) -> String {
        format!("{}:{}", self.scope().name(), self.key)
    }

    fn meta(&self) -> pb::SecretMeta {
        pb::SecretMeta {
            key: self.key.clone(),
            scope: self.scope().name().to_owned(),
            created_at: Some(pb::timestamp(self.created_at)),
            updated_at: Some(pb::timestamp(self.updated_at)),
        }
    }
}

impl From<workspace_secret::Model> for StoredSecret {
    fn from(row: workspace_secret::Model) -> Self {
        Self {
            id: row.id,
            workspace_id: Some(row.workspace_id),
            key: row.key,
            sealed: Sealed {
                blob: row.encrypted_value,
                encryption_version: row.encryption_version,
                key_version: row.key_version,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<global_secret::Model> for StoredSecret {
    fn from(row: global_secret::Model) -> Self {
        Self {
            id: row.id,
            workspace_id: None,
            key: row.key,
            sealed: Sealed {
                blob: row.encrypted_value,
                encryption_version: row.encryption_version,
                key_version: row.key_version,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The documented messages of one write path; the workspace and global routes word them
/// differently.
struct WriteMessages {
    save: &'static str,
    delete: &'static str,
}

const WORKSPACE_WRITE: WriteMessages = WriteMessages {
    save: "failed to save secret",
    delete: "failed to delete secret",
};
const GLOBAL_WRITE: WriteMessages = WriteMessages {
    save: "failed to save",
    delete: "failed to delete",
};
const MODEL_WRITE: WriteMessages = WriteMessages {
    save: "failed to save model",
    delete: "failed to clear model",
};

pub struct SecretsService {
    state: Platform,
}

impl SecretsService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::secrets_server::Secrets for SecretsService {
    async fn list_secrets(
        &self,
        request: Request<pb::WorkspaceSecretsRequest>,
    ) -> RpcResult<pb::ListSecretsResponse> {
        reply(
            self.list(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn pull_values(
        &self,
        request: Request<pb::WorkspaceSecretsRequest>,
    ) -> RpcResult<pb::SecretValues> {
        reply(
            self.pull(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn set_secret(
        &self,
        request: Request<pb::SetSecretRequest>,
    ) -> RpcResult<pb::SetSecretResponse> {
        reply(self.set_own(request.metadata(), request.get_ref()).await)
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> RpcResult<pb::DeleteSecretResponse> {
        reply(self.delete_own(request.metadata(), request.get_ref()).await)
    }

    async fn list_global_secrets(
        &self,
        request: Request<pb::ListGlobalSecretsRequest>,
    ) -> RpcResult<pb::ListSecretsResponse> {
        reply(self.list_global(request.metadata()).await)
    }

    async fn set_global_secret(
        &self,
        request: Request<pb::SetSecretRequest>,
    ) -> RpcResult<pb::SetSecretResponse> {
        reply(self.set_global(request.metadata(), request.get_ref()).await)
    }

    async fn delete_global_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> RpcResult<pb::DeleteSecretResponse> {
        reply(
            self.delete_global(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn get_model(
        &self,
        request: Request<pb::WorkspaceSecretsRequest>,
    ) -> RpcResult<pb::ModelResponse> {
        reply(
            self.model(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn set_model(
        &self,
        request: Request<pb::SetModelRequest>,
    ) -> RpcResult<pb::SetModelResponse> {
        reply(self.set_model(request.metadata(), request.get_ref()).await)
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> RpcResult<pb::RotateKeyResponse> {
        reply(self.rotate(request.metadata()).await)
    }
}

impl SecretsService {
    /// WorkspaceAuth on a workspace that exists and is not removed.
    async fn authorize(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<String> {
        self.state.auth.live_workspace(metadata, raw_id).await
    }

    async fn list(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ListSecretsResponse> {
        let id = self.authorize(metadata, raw_id).await?;
        let (own, globals) = load(&self.state.db, &id).await.context("query failed")?;
        let overridden: std::collections::HashSet<&str> =
            own.iter().map(|row| row.key.as_str()).collect();
        let secrets = own
            .iter()
            .chain(
                globals
                    .iter()
                    .filter(|g| !overridden.contains(g.key.as_str())),
            )
            .map(StoredSecret::meta)
            .collect();
        Ok(pb::ListSecretsResponse { secrets })
    }

    /// All or nothing: a row that fails to open refuses the whole bundle.
    async fn pull(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::SecretValues> {
        let id = validate::workspace_id(raw_id)?;
        self.state.auth.own_token(metadata, &id).await?;
        store::live_workspace(&self.state.db, &id).await?;
        let (own, globals) = load(&self.state.db, &id).await.context("query failed")?;
        let mut values: Vec<pb::SecretValue> = Vec::with_capacity(own.len() + globals.len());
        let mut positions: HashMap<String, usize> = HashMap::new();
        let mut failed = Vec::new();
        for row in globals.iter().chain(&own) {
            let value = match self.state.keyring.open(row.scope(), &row.key, &row.sealed) {
                Ok(plaintext) => String::from_utf8_lossy(&plaintext).into_owned(),
                Err(_) => {
                    failed.push(row.label());
                    continue;
                }
            };
            match positions.get(&row.key) {
                Some(&at) => values[at].value = value,
                None => {
                    positions.insert(row.key.clone(), values.len());
                    values.push(pb::SecretValue {
                        key: row.key.clone(),
                        value,
                    });
                }
            }
        }
        if !failed.is_empty() {
            warn!(workspace_id = %id, failed = failed.len(), "secrets failed to decrypt; refusing the bundle");
            return Err(SecretsError::Undecryptable {
                failed_keys: failed,
            }
            .into());
        }
        Ok(pb::SecretValues { values })
    }

    async fn set_own(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetSecretRequest,
    ) -> ApiResult<pb::SetSecretResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        check_body(&request.key, &request.value)?;
        store::live_workspace(&self.state.db, &id).await?;
        self.upsert(
            Scope::Workspace(&id),
            &request.key,
            &request.value,
            &WORKSPACE_WRITE,
        )
        .await?;
        Ok(pb::SetSecretResponse {
            key: request.key.clone(),
        })
    }

    async fn delete_own(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteSecretRequest,
    ) -> ApiResult<pb::DeleteSecretResponse> {
        let id = self.authorize(metadata, &request.workspace_id).await?;
        if !self
            .remove(Scope::Workspace(&id), &request.key, &WORKSPACE_WRITE)
            .await?
        {
            return Err(SecretsError::NotFound.into());
        }
        Ok(pb::DeleteSecretResponse {
            key: request.key.clone(),
        })
    }

    async fn list_global(&self, metadata: &MetadataMap) -> ApiResult<pb::ListSecretsResponse> {
        self.state.auth.admin(metadata).await?;
        let rows = global_secret::Entity::find()
            .order_by_asc(global_secret::Column::Key)
            .all(&self.state.db)
            .await
            .context("query failed")?;
        Ok(pb::ListSecretsResponse {
            secrets: rows
                .into_iter()
                .map(|row| StoredSecret::from(row).meta())
                .collect(),
        })
    }

    async fn set_global(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetSecretRequest,
    ) -> ApiResult<pb::SetSecretResponse> {
        self.state.auth.admin(metadata).await?;
        check_body(&request.key, &request.value)?;
        self.upsert(Scope::Global, &request.key, &request.value, &GLOBAL_WRITE)
            .await?;
        Ok(pb::SetSecretResponse {
            key: request.key.clone(),
        })
    }

    async fn delete_global(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteSecretRequest,
    ) -> ApiResult<pb::DeleteSecretResponse> {
        self.state.auth.admin(metadata).await?;
        if !self
            .remove(Scope::Global, &request.key, &GLOBAL_WRITE)
            .await?
        {
            return Err(SecretsError::NotFound.into());
        }
        Ok(pb::DeleteSecretResponse {
            key: request.key.clone(),
        })
    }

    async fn model(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::ModelResponse> {
        let id = self.authorize(metadata, raw_id).await?;
        let row = workspace_secret::Entity::find()
            .filter(workspace_secret::Column::WorkspaceId.eq(&id))
            .filter(workspace_secret::Column::Key.eq(MODEL_KEY))
            .one(&self.state.db)
            .await
            .context("query failed")?;
        let Some(row) = row.map(StoredSecret::from) else {
            return Ok(pb::ModelResponse {
                model: String::new(),
                source: "default".to_owned(),
            });
        };
        let plaintext = self
            .state
            .keyring
            .open(row.scope(), &row.key, &row.sealed)
            .map_err(|_| {
                warn!(workspace_id = %id, "model secret failed to decrypt");
                SecretsError::ModelUndecryptable
            })?;
        Ok(pb::ModelResponse {
            model: String::from_utf8_lossy(&plaintext).into_owned(),
            source: "workspace_secrets".to_owned(),
        })
    }

    async fn set_model(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetModelRequest,
    ) -> ApiResult<pb::SetModelResponse> {
        let id = self.authorize(metadata, &request.workspace_id).await?;
        if request.model.is_empty() {
            self.remove(Scope::Workspace(&id), MODEL_KEY, &MODEL_WRITE)
                .await?;
            return Ok(pb::SetModelResponse {
                cleared: true,
                model: String::new(),
            });
        }
        if !valid_value(&request.model) {
            return Err(SecretsError::InvalidValue.into());
        }
        self.upsert(
            Scope::Workspace(&id),
            MODEL_KEY,
            &request.model,
            &MODEL_WRITE,
        )
        .await?;
        Ok(pb::SetModelResponse {
            cleared: false,
            model: request.model.clone(),
        })
    }

    async fn rotate(&self, metadata: &MetadataMap) -> ApiResult<pb::RotateKeyResponse> {
        self.state.auth.admin(metadata).await?;
        rotate(&self.state.db, &self.state.keyring)
            .await
            .context("key rotation failed")
    }

    /// Seals and upserts one value, and records who must be told, in one transaction.
    async fn upsert(
        &self,
        scope: Scope<'_>,
        key: &str,
        value: &str,
        messages: &WriteMessages,
    ) -> ApiResult<()> {
        let sealed = self.state.keyring.seal(scope, key, value.as_bytes());
        let now = store::now();
        let txn = self.state.db.begin().await.context(messages.save)?;
        let written = match scope {
            Scope::Workspace(workspace_id) => {
                workspace_secret::Entity::insert(workspace_secret::ActiveModel {
                    id: Set(uuid::Uuid::new_v4().to_string()),
                    workspace_id: Set(workspace_id.to_owned()),
                    key: Set(key.to_owned()),
                    encrypted_value: Set(sealed.blob),
                    encryption_version: Set(sealed.encryption_version),
                    key_version: Set(sealed.key_version),
                    created_at: Set(now),
                    updated_at: Set(now),
                })
                .on_conflict(
                    OnConflict::columns([
                        workspace_secret::Column::WorkspaceId,
                        workspace_secret::Column::Key,
                    ])
                    .update_columns([
                        workspace_secret::Column::EncryptedValue,
                        workspace_secret::Column::EncryptionVersion,
                        workspace_secret::Column::KeyVersion,
                        workspace_secret::Column::UpdatedAt,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
            }
            Scope::Global => {
                global_secret::Entity::insert(global_secret::ActiveModel {
                    id: Set(uuid::Uuid::new_v4().to_string()),
                    key: Set(key.to_owned()),
                    encrypted_value: Set(sealed.blob),
                    encryption_version: Set(sealed.encryption_version),
                    key_version: Set(sealed.key_version),
                    created_at: Set(now),
                    updated_at: Set(now),
                })
                .on_conflict(
                    OnConflict::column(global_secret::Column::Key)
                        .update_columns([
                            global_secret::Column::EncryptedValue,
                            global_secret::Column::EncryptionVersion,
                            global_secret::Column::KeyVersion,
                            global_secret::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
            }
        };
        written.context(messages.save)?;
        let event = self
            .record_change(&txn, scope, key)
            .await
            .context(messages.save)?;
        txn.commit().await.context(messages.save)?;
        self.state.events.publish_all([event]);
        Ok(())
    }

    /// Deletes one row; false when there was none.
    async fn remove(
        &self,
        scope: Scope<'_>,
        key: &str,
        messages: &WriteMessages,
    ) -> ApiResult<bool> {
        let txn = self.state.db.begin().await.context(messages.delete)?;
        let deleted = match scope {
            Scope::Workspace(workspace_id) => {
                workspace_secret::Entity::delete_many()
                    .filter(workspace_secret::Column::WorkspaceId.eq(workspace_id))
                    .filter(workspace_secret::Column::Key.eq(key))
                    .exec(&txn)
                    .await
            }
            Scope::Global => {
                global_secret::Entity::delete_many()
                    .filter(global_secret::Column::Key.eq(key))
                    .exec(&txn)
                    .await
            }
        }
        .context(messages.delete)?;
        if deleted.rows_affected == 0 {
            return Ok(false);
        }
        let event = self
            .record_change(&txn, scope, key)
            .await
            .context(messages.delete)?;
        txn.commit().await.context(messages.delete)?;
        self.state.events.publish_all([event]);
        Ok(true)
    }

    /// `SECRETS_CHANGED` for a workspace secret; for a global one, `GLOBAL_SECRETS_CHANGED`
    /// naming every live workspace that does not override the key. Neither names the key.
    async fn record_change(
        &self,
        txn: &impl ConnectionTrait,
        scope: Scope<'_>,
        key: &str,
    ) -> Result<std::sync::Arc<Envelope>, DbErr> {
        let events = &self.state.events;
        match scope {
            Scope::Workspace(id) => {
                events
                    .insert(
                        txn,
                        EventType::SecretsChanged,
                        Some(id),
                        json!({"scope": "workspace"}),
                    )
                    .await
            }
            Scope::Global => {
                let overriding = Query::select()
                    .column(workspace_secret::Column::WorkspaceId)
                    .from(workspace_secret::Entity)
                    .and_where(workspace_secret::Column::Key.eq(key))
                    .to_owned();
                let affected: Vec<String> = workspace::Entity::find()
                    .select_only()
                    .column(workspace::Column::Id)
                    .filter(workspace::Column::Status.ne(WorkspaceStatus::Removed))
                    .filter(workspace::Column::Id.not_in_subquery(overriding))
                    .into_tuple()
                    .all(txn)
                    .await?;
                events
                    .insert(
                        txn,
                        EventType::GlobalSecretsChanged,
                        None,
                        json!({"scope": "global", "workspace_ids": affected}),
                    )
                    .await
            }
        }
    }
}

/// The body rules of docs/workspaces.md §4.3 and §4.6, in the documented order.
fn check_body(key: &str, value: &str) -> ApiResult<()> {
    if key.is_empty() || value.is_empty() {
        return Err(SecretsError::InvalidBody.into());
    }
    if !valid_key(key) {
        return Err(SecretsError::InvalidKey.into());
    }
    if !valid_value(value) {
        return Err(SecretsError::InvalidValue.into());
    }
    Ok(())
}

/// A workspace's own secrets and every global one, each ordered by key.
async fn load(
    db: &Db,
    workspace_id: &str,
) -> Result<(Vec<StoredSecret>, Vec<StoredSecret>), DbErr> {
    let own = workspace_secret::Entity::find()
        .filter(workspace_secret::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(workspace_secret::Column::Key)
        .all(db)
        .await?;
    let globals = global_secret::Entity::find()
        .order_by_asc(global_secret::Column::Key)
        .all(db)
        .await?;
    Ok((
        own.into_iter().map(StoredSecret::from).collect(),
        globals.into_iter().map(StoredSecret::from).collect(),
    ))
}

/// Seals the `secrets` of a workspace being created, inside its creation transaction. The
/// caller has validated every key and value.
pub async fn insert_initial(
    txn: &impl ConnectionTrait,
    keyring: &Keyring,
    workspace_id: &str,
    secrets: &[(&String, &String)],
) -> Result<(), (String, DbErr)> {
    let now = store::now();
    for (key, value) in secrets {
        let sealed = keyring.seal(Scope::Workspace(workspace_id), key, value.as_bytes());
        workspace_secret::Entity::insert(workspace_secret::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            workspace_id: Set(workspace_id.to_owned()),
            key: Set((*key).clone()),
            encrypted_value: Set(sealed.blob),
            encryption_version: Set(sealed.encryption_version),
            key_version: Set(sealed.key_version),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_without_returning(txn)
        .await
        .map_err(|err| ((*key).clone(), err))?;
    }
    Ok(())
}

/// Re-encrypts every row not yet under the current key, page by page. Each row is replaced
/// only if it is still the ciphertext that was read, so a concurrent write (already under the
/// current key) is never overwritten with an older value. Readers keep working throughout:
/// every row opens under the current or the previous key at every moment.
pub async fn rotate(db: &Db, keyring: &Keyring) -> Result<pb::RotateKeyResponse, DbErr> {
    use global_secret::Column as G;
    use workspace_secret::Column as W;
    let mut report = pb::RotateKeyResponse {
        key_version: keyring.current_version(),
        ..Default::default()
    };
    rotate_table::<workspace_secret::Entity>(
        db,
        keyring,
        [
            W::Id,
            W::EncryptedValue,
            W::EncryptionVersion,
            W::KeyVersion,
        ],
        &mut report,
    )
    .await?;
    rotate_table::<global_secret::Entity>(
        db,
        keyring,
        [
            G::Id,
            G::EncryptedValue,
            G::EncryptionVersion,
            G::KeyVersion,
        ],
        &mut report,
    )
    .await?;
    info!(
        key_version = report.key_version,
        rewritten = report.rewritten,
        current = report.current,
        failed = report.failed.len(),
        "secrets key rotation pass finished"
    );
    Ok(report)
}

/// One table's pass; `columns` are its id, value, encryption version and key version.
async fn rotate_table<E>(
    db: &Db,
    keyring: &Keyring,
    columns: [E::Column; 4],
    report: &mut pb::RotateKeyResponse,
) -> Result<(), DbErr>
where
    E: EntityTrait,
    E::Model: Into<StoredSecret>,
{
    let [id, value, encryption, key_version] = columns;
    let mut after = String::new();
    loop {
        let page: Vec<StoredSecret> = E::find()
            .filter(id.gt(&after))
            .order_by_asc(id)
            .limit(ROTATION_PAGE)
            .all(db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id.clone();
        for row in &page {
            if keyring.is_current(&row.sealed) {
                report.current += 1;
                continue;
            }
            let Ok(plaintext) = keyring.open(row.scope(), &row.key, &row.sealed) else {
                report.failed.push(row.label());
                continue;
            };
            let old = &row.sealed;
            let new = keyring.seal(row.scope(), &row.key, &plaintext);
            let replaced = E::update_many()
                .col_expr(value, new.blob.into())
                .col_expr(encryption, new.encryption_version.into())
                .col_expr(key_version, new.key_version.into())
                .filter(id.eq(&row.id))
                .filter(value.eq(old.blob.clone()))
                .filter(encryption.eq(old.encryption_version))
                .filter(key_version.eq(old.key_version))
                .exec(db)
                .await?;
            if replaced.rows_affected == 1 {
                report.rewritten += 1;
            } else {
                // Rewritten meanwhile by a writer, which sealed it under the current key.
                report.current += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_environment_variable_names() {
        for key in ["A", "_", "API_KEY", "a1_b2", &"K".repeat(256)] {
            assert!(valid_key(key), "{key}");
        }
        for key in ["", "1A", "A-B", "A B", "A.B", "ключ", &"K".repeat(257)] {
            assert!(!valid_key(key), "{key}");
        }
    }

    #[test]
    fn values_are_non_empty_and_capped() {
        assert!(valid_value("x"));
        assert!(valid_value(&"x".repeat(MAX_VALUE_BYTES)));
        assert!(!valid_value(""));
        assert!(!valid_value(&"x".repeat(MAX_VALUE_BYTES + 1)));
    }
}

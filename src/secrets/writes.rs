//! Writing secrets: the body rules, sealing, the upsert or delete with its change event in one
//! transaction, and the initial secrets of a new workspace.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{OnConflict, Query},
};
use serde_json::json;

use tonic::metadata::MetadataMap;

use crate::{
    audit::{Action, AuditTrail},
    auth::Principal,
    crypto::{Keyring, Scope},
    domain::{EventType, WorkspaceStatus},
    error::ApiResult,
    events::Envelope,
    store::{
        self, Db, DbContext,
        entities::{global_secret, workspace, workspace_secret},
    },
};

use super::{SecretsService, StoredSecret, error::SecretsError, valid_key, valid_value};

impl SecretsService {
    /// Seals and upserts one value, and records who must be told, in one transaction.
    pub(super) async fn upsert(
        &self,
        who: Who<'_>,
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
        who.append(&self.state.audit, &txn, scope, "set", key)
            .await
            .context(messages.save)?;
        txn.commit().await.context(messages.save)?;
        self.state.events.publish_all([event]);
        Ok(())
    }

    /// Deletes one row; false when there was none.
    pub(super) async fn remove(
        &self,
        who: Who<'_>,
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
        who.append(&self.state.audit, &txn, scope, "delete", key)
            .await
            .context(messages.delete)?;
        txn.commit().await.context(messages.delete)?;
        self.state.events.publish_all([event]);
        Ok(true)
    }

    /// `SECRETS_CHANGED` for a workspace secret; for a global one, `GLOBAL_SECRETS_CHANGED`
    /// naming every live workspace that does not override the key. Neither names the key.
    pub(super) async fn record_change(
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

/// Who writes a secret, for the audit trail (which names the key, never the value).
#[derive(Clone, Copy)]
pub(super) struct Who<'a> {
    pub(super) principal: &'a Principal,
    pub(super) metadata: &'a MetadataMap,
}

impl Who<'_> {
    async fn append(
        self,
        trail: &AuditTrail,
        txn: &impl ConnectionTrait,
        scope: Scope<'_>,
        verb: &'static str,
        key: &str,
    ) -> Result<(), DbErr> {
        let (operation, workspace_id) = match (scope, verb) {
            (Scope::Workspace(id), "set") => ("secret.set", Some(id)),
            (Scope::Workspace(id), _) => ("secret.delete", Some(id)),
            (Scope::Global, "set") => ("global_secret.set", None),
            (Scope::Global, _) => ("global_secret.delete", None),
        };
        let action = Action {
            operation,
            workspace_id,
            target: Some(key.to_owned()),
            details: json!({}),
        };
        trail
            .append(txn, self.principal, self.metadata, action)
            .await
    }
}

/// The documented messages of one write path; the workspace and global routes word them
/// differently.
pub(super) struct WriteMessages {
    save: &'static str,
    delete: &'static str,
}

pub(super) const WORKSPACE_WRITE: WriteMessages = WriteMessages {
    save: "failed to save secret",
    delete: "failed to delete secret",
};

pub(super) const GLOBAL_WRITE: WriteMessages = WriteMessages {
    save: "failed to save",
    delete: "failed to delete",
};

pub(super) const MODEL_WRITE: WriteMessages = WriteMessages {
    save: "failed to save model",
    delete: "failed to clear model",
};

/// The body rules of docs/workspaces.md §4.3 and §4.6, in the documented order.
pub(super) fn check_body(key: &str, value: &str) -> ApiResult<()> {
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
pub(super) async fn load(
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

//! Key rotation: every row re-sealed under the current key, page by page, while the previous
//! key keeps opening the rows not yet done.

use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use tonic::metadata::MetadataMap;
use tracing::info;

use crate::{
    audit::Action,
    crypto::Keyring,
    error::ApiResult,
    pb,
    store::{
        Db, DbContext,
        entities::{global_secret, workspace_secret},
    },
};

use super::{SecretsService, StoredSecret};

impl SecretsService {
    pub(super) async fn rotate(&self, metadata: &MetadataMap) -> ApiResult<pb::RotateKeyResponse> {
        let operator = self.state.auth.admin(metadata).await?;
        let report = rotate(&self.state.db, &self.state.keyring)
            .await
            .context("key rotation failed")?;
        let action = Action {
            operation: "secrets.rotate_key",
            workspace_id: None,
            target: None,
            details: json!({"key_version": report.key_version}),
        };
        self.state
            .audit
            .record(&self.state.db, &operator, metadata, action)
            .await;
        Ok(report)
    }
}

pub(super) const ROTATION_PAGE: u64 = 200;

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
pub(super) async fn rotate_table<E>(
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

//! A workspace's own secrets: keys and metadata for readers, the merged pull (global values
//! overridden by the workspace's) for the workspace's own token, set and delete.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    crypto::Scope,
    domain::validate,
    error::ApiResult,
    pb,
    store::{self, DbContext},
};

use super::{
    SecretsService, StoredSecret,
    error::SecretsError,
    writes::{WORKSPACE_WRITE, Who, check_body, load},
};

impl SecretsService {
    pub(super) async fn list(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ListSecretsResponse> {
        let (id, _) = self.authorize(metadata, raw_id).await?;
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
    pub(super) async fn pull(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::SecretValues> {
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

    pub(super) async fn set_own(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetSecretRequest,
    ) -> ApiResult<pb::SetSecretResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        let principal = self.state.auth.workspace(metadata, &id).await?;
        check_body(&request.key, &request.value)?;
        store::live_workspace(&self.state.db, &id).await?;
        let who = Who {
            principal: &principal,
            metadata,
        };
        self.upsert(
            who,
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

    pub(super) async fn delete_own(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteSecretRequest,
    ) -> ApiResult<pb::DeleteSecretResponse> {
        let (id, principal) = self.authorize(metadata, &request.workspace_id).await?;
        let who = Who {
            principal: &principal,
            metadata,
        };
        if !self
            .remove(who, Scope::Workspace(&id), &request.key, &WORKSPACE_WRITE)
            .await?
        {
            return Err(SecretsError::NotFound.into());
        }
        Ok(pb::DeleteSecretResponse {
            key: request.key.clone(),
        })
    }
}

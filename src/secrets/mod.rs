//! The Secrets gRPC service (docs/workspaces.md §4, docs/decisions.md D9): workspace and global
//! secrets, the merged pull an agent makes at boot, the model alias, and key rotation. Values are
//! sealed by `crypto` before they reach the store and opened only for the pull; they never appear
//! in logs, errors or events (error bodies name keys only where the contract documents it).

use tonic::{Request, metadata::MetadataMap};

use crate::{
    crypto::{Scope, Sealed},
    error::{ApiResult, RpcResult, reply},
    pb,
    state::Platform,
    store::entities::{global_secret, workspace_secret},
};

mod error;
mod global;
mod model;
mod own;
mod rotation;
mod writes;

pub use self::{rotation::rotate, writes::insert_initial};

/// The secret behind `GET|PUT /workspaces/:id/model`.
pub const MODEL_KEY: &str = "MODEL_PROVIDER";
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_KEY_BYTES: usize = 256;

/// A usable environment variable name, `^[A-Za-z_][A-Za-z0-9_]{0,255}$`
/// (docs/workspaces.md §4.6).
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
    async fn authorize(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<(String, crate::auth::Principal)> {
        self.state.auth.live_workspace_as(metadata, raw_id).await
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

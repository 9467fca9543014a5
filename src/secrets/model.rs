//! `GET|PUT /workspaces/:id/model`: the `MODEL_PROVIDER` secret under another name.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    crypto::Scope,
    error::ApiResult,
    pb,
    store::{DbContext, entities::workspace_secret},
};

use super::{
    MODEL_KEY, SecretsService, StoredSecret,
    error::SecretsError,
    valid_value,
    writes::{MODEL_WRITE, Who},
};

impl SecretsService {
    pub(super) async fn model(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::ModelResponse> {
        let (id, _) = self.authorize(metadata, raw_id).await?;
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

    pub(super) async fn set_model(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetModelRequest,
    ) -> ApiResult<pb::SetModelResponse> {
        let (id, principal) = self.authorize(metadata, &request.workspace_id).await?;
        let who = Who {
            principal: &principal,
            metadata,
        };
        if request.model.is_empty() {
            self.remove(who, Scope::Workspace(&id), MODEL_KEY, &MODEL_WRITE)
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
            who,
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
}

//! Global secrets, for operators: list, set, delete; a change names every workspace that does
//! not override the key.

use sea_orm::{EntityTrait, QueryOrder};
use tonic::metadata::MetadataMap;

use crate::{
    crypto::Scope,
    error::ApiResult,
    pb,
    store::{DbContext, entities::global_secret},
};

use super::{
    SecretsService, StoredSecret,
    error::SecretsError,
    writes::{GLOBAL_WRITE, Who, check_body},
};

impl SecretsService {
    pub(super) async fn list_global(
        &self,
        metadata: &MetadataMap,
    ) -> ApiResult<pb::ListSecretsResponse> {
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

    pub(super) async fn set_global(
        &self,
        metadata: &MetadataMap,
        request: &pb::SetSecretRequest,
    ) -> ApiResult<pb::SetSecretResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        check_body(&request.key, &request.value)?;
        let who = Who {
            principal: &principal,
            metadata,
        };
        self.upsert(
            who,
            Scope::Global,
            &request.key,
            &request.value,
            &GLOBAL_WRITE,
        )
        .await?;
        Ok(pb::SetSecretResponse {
            key: request.key.clone(),
        })
    }

    pub(super) async fn delete_global(
        &self,
        metadata: &MetadataMap,
        request: &pb::DeleteSecretRequest,
    ) -> ApiResult<pb::DeleteSecretResponse> {
        let principal = self.state.auth.admin(metadata).await?;
        let who = Who {
            principal: &principal,
            metadata,
        };
        if !self
            .remove(who, Scope::Global, &request.key, &GLOBAL_WRITE)
            .await?
        {
            return Err(SecretsError::NotFound.into());
        }
        Ok(pb::DeleteSecretResponse {
            key: request.key.clone(),
        })
    }
}

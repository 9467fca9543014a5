//! The Checkpoints gRPC service (docs/runtime.md §5): one row per (workflow, step), upserted
//! with a stable id, the newest `retention` kept per workspace. It stores a payload and never
//! interprets it.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::OnConflict,
};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{self, DbContext, entities::checkpoint},
};

/// A checkpoint's payload, as JSON text, is at most this long.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Every way a checkpoint call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckpointError {
    InvalidBody,
    PayloadTooLarge,
    NoneForWorkspace,
    NoneForWorkflow,
}

impl From<CheckpointError> for ApiError {
    fn from(err: CheckpointError) -> Self {
        let (code, message) = match err {
            CheckpointError::InvalidBody => (ErrorCode::BadRequest, "invalid request body"),
            CheckpointError::PayloadTooLarge => (ErrorCode::PayloadTooLarge, "payload too large"),
            CheckpointError::NoneForWorkspace => {
                (ErrorCode::NotFound, "no checkpoints found for workspace")
            }
            CheckpointError::NoneForWorkflow => {
                (ErrorCode::NotFound, "no checkpoints found for workflow")
            }
        };
        ApiError::new(code, message)
    }
}

pub struct CheckpointsService {
    state: Platform,
}

impl CheckpointsService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::checkpoints_server::Checkpoints for CheckpointsService {
    async fn save(
        &self,
        request: Request<pb::SaveCheckpointRequest>,
    ) -> RpcResult<pb::CheckpointRef> {
        reply(self.save(request.metadata(), request.get_ref()).await)
    }

    async fn latest(
        &self,
        request: Request<pb::LatestCheckpointRequest>,
    ) -> RpcResult<pb::Checkpoint> {
        reply(
            self.latest(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn list_workflow(
        &self,
        request: Request<pb::WorkflowCheckpointsRequest>,
    ) -> RpcResult<pb::CheckpointList> {
        reply(
            self.list_workflow(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn delete_workflow(
        &self,
        request: Request<pb::WorkflowCheckpointsRequest>,
    ) -> RpcResult<pb::DeleteCheckpointsResponse> {
        reply(
            self.delete_workflow(request.metadata(), request.get_ref())
                .await,
        )
    }
}

impl CheckpointsService {
    async fn save(
        &self,
        metadata: &MetadataMap,
        request: &pb::SaveCheckpointRequest,
    ) -> ApiResult<pb::CheckpointRef> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        if request.workflow_id.is_empty() || request.step_name.is_empty() {
            return Err(CheckpointError::InvalidBody.into());
        }
        let payload = request.payload_json.as_deref();
        if payload.is_some_and(|text| text.len() > MAX_PAYLOAD_BYTES) {
            return Err(CheckpointError::PayloadTooLarge.into());
        }
        if payload.is_some_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_err())
        {
            return Err(CheckpointError::InvalidBody.into());
        }
        let db = &self.state.db;
        const FAILED: &str = "failed to upsert checkpoint";
        checkpoint::Entity::insert(checkpoint::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            workspace_id: Set(workspace_id.clone()),
            workflow_id: Set(request.workflow_id.clone()),
            step_name: Set(request.step_name.clone()),
            step_index: Set(request.step_index),
            completed_at: Set(store::now()),
            payload: Set(payload.map(str::to_owned)),
        })
        .on_conflict(
            OnConflict::columns([
                checkpoint::Column::WorkspaceId,
                checkpoint::Column::WorkflowId,
                checkpoint::Column::StepName,
            ])
            .update_columns([
                checkpoint::Column::StepIndex,
                checkpoint::Column::CompletedAt,
                checkpoint::Column::Payload,
            ])
            .to_owned(),
        )
        .exec_without_returning(db)
        .await
        .context(FAILED)?;
        // The id survives an update, so read it back rather than trust the one drawn above.
        let id: String = checkpoint::Entity::find()
            .select_only()
            .column(checkpoint::Column::Id)
            .filter(checkpoint::Column::WorkspaceId.eq(&workspace_id))
            .filter(checkpoint::Column::WorkflowId.eq(&request.workflow_id))
            .filter(checkpoint::Column::StepName.eq(&request.step_name))
            .into_tuple()
            .one(db)
            .await
            .context(FAILED)?
            .ok_or_else(|| ApiError::internal(FAILED))?;
        self.trim(&workspace_id).await.context(FAILED)?;
        Ok(pb::CheckpointRef {
            id,
            workspace_id,
            workflow_id: request.workflow_id.clone(),
            step_name: request.step_name.clone(),
        })
    }

    /// Keeps the newest `checkpoint_retention` rows of a workspace.
    async fn trim(&self, workspace_id: &str) -> Result<(), sea_orm::DbErr> {
        let retention = self.state.settings.runtime.checkpoint_retention;
        let expired: Vec<String> = checkpoint::Entity::find()
            .select_only()
            .column(checkpoint::Column::Id)
            .filter(checkpoint::Column::WorkspaceId.eq(workspace_id))
            .order_by_desc(checkpoint::Column::CompletedAt)
            .order_by_desc(checkpoint::Column::Id)
            .offset(retention)
            .limit(64)
            .into_tuple()
            .all(&self.state.db)
            .await?;
        if !expired.is_empty() {
            checkpoint::Entity::delete_many()
                .filter(checkpoint::Column::Id.is_in(expired))
                .exec(&self.state.db)
                .await?;
        }
        Ok(())
    }

    async fn latest(&self, metadata: &MetadataMap, raw_id: &str) -> ApiResult<pb::Checkpoint> {
        let workspace_id = self.state.auth.live_workspace(metadata, raw_id).await?;
        checkpoint::Entity::find()
            .filter(checkpoint::Column::WorkspaceId.eq(workspace_id))
            .order_by_desc(checkpoint::Column::CompletedAt)
            .order_by_desc(checkpoint::Column::Id)
            .one(&self.state.db)
            .await
            .context("failed to fetch latest checkpoint")?
            .map(checkpoint_message)
            .ok_or_else(|| CheckpointError::NoneForWorkspace.into())
    }

    async fn list_workflow(
        &self,
        metadata: &MetadataMap,
        request: &pb::WorkflowCheckpointsRequest,
    ) -> ApiResult<pb::CheckpointList> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let rows = checkpoint::Entity::find()
            .filter(checkpoint::Column::WorkspaceId.eq(workspace_id))
            .filter(checkpoint::Column::WorkflowId.eq(&request.workflow_id))
            .order_by_desc(checkpoint::Column::StepIndex)
            .order_by_desc(checkpoint::Column::CompletedAt)
            .all(&self.state.db)
            .await
            .context("failed to list checkpoints")?;
        if rows.is_empty() {
            return Err(CheckpointError::NoneForWorkflow.into());
        }
        Ok(pb::CheckpointList {
            checkpoints: rows.into_iter().map(checkpoint_message).collect(),
        })
    }

    async fn delete_workflow(
        &self,
        metadata: &MetadataMap,
        request: &pb::WorkflowCheckpointsRequest,
    ) -> ApiResult<pb::DeleteCheckpointsResponse> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let deleted = checkpoint::Entity::delete_many()
            .filter(checkpoint::Column::WorkspaceId.eq(workspace_id))
            .filter(checkpoint::Column::WorkflowId.eq(&request.workflow_id))
            .exec(&self.state.db)
            .await
            .context("failed to delete checkpoints")?
            .rows_affected;
        if deleted == 0 {
            return Err(CheckpointError::NoneForWorkflow.into());
        }
        Ok(pb::DeleteCheckpointsResponse {
            deleted: deleted as i64,
            workflow_id: request.workflow_id.clone(),
        })
    }
}

fn checkpoint_message(row: checkpoint::Model) -> pb::Checkpoint {
    pb::Checkpoint {
        id: row.id,
        workspace_id: row.workspace_id,
        workflow_id: row.workflow_id,
        step_name: row.step_name,
        step_index: row.step_index,
        completed_at: Some(pb::timestamp(row.completed_at)),
        payload_json: row.payload.filter(|text| text != "null"),
    }
}

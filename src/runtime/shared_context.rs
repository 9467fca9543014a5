//! The SharedContext gRPC service (docs/runtime.md §6, M6): the files a workspace publishes for
//! its descendants, which each child's runtime reads at start-up. Owns who may read and publish
//! and the limits on what is published; it never reads an agent's file system.

use sea_orm::{ActiveValue::Set, EntityTrait, sea_query::OnConflict};
use serde::{Deserialize, Serialize};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    auth::{self, AuthError, Principal},
    domain::validate,
    error::{ApiError, ApiResult, ErrorCode, RpcResult, reply},
    pb,
    state::Platform,
    store::{self, DbContext, entities::shared_context},
};

/// Paths and contents of one published set, in bytes, at most.
const MAX_TOTAL_BYTES: usize = 256 * 1024;

/// Every way a shared-context call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SharedContextError {
    InvalidPath,
    DuplicatePath,
    TooLarge,
}

impl From<SharedContextError> for ApiError {
    fn from(err: SharedContextError) -> Self {
        let (code, message) = match err {
            SharedContextError::InvalidPath => (ErrorCode::BadRequest, "invalid path"),
            SharedContextError::DuplicatePath => (ErrorCode::BadRequest, "duplicate path"),
            SharedContextError::TooLarge => {
                (ErrorCode::PayloadTooLarge, "shared context too large")
            }
        };
        ApiError::new(code, message)
    }
}

/// One published file as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    content: String,
}

pub struct SharedContextService {
    state: Platform,
}

impl SharedContextService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::shared_context_server::SharedContext for SharedContextService {
    async fn get(
        &self,
        request: Request<pb::GetSharedContextRequest>,
    ) -> RpcResult<pb::SharedContextEntries> {
        reply(
            self.get(request.metadata(), &request.get_ref().workspace_id)
                .await,
        )
    }

    async fn publish(
        &self,
        request: Request<pb::PublishSharedContextRequest>,
    ) -> RpcResult<pb::SharedContextEntries> {
        reply(self.publish(request.metadata(), request.get_ref()).await)
    }
}

/// A relative path in its one canonical spelling, so it stays inside its root and names one
/// entry: segments neither empty (`a//b`, `a/`, `/abs`) nor `.` or `..`, no backslash or NUL.
fn valid_path(path: &str) -> bool {
    !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

impl SharedContextService {
    /// Readers: an operator, or the token of the workspace itself or of any descendant (a
    /// child's runtime reads its parent's context with its own token). `X-Workspace-ID`, when
    /// sent, must name the token's workspace.
    async fn reader(&self, metadata: &MetadataMap, workspace_id: &str) -> ApiResult<()> {
        let auth = &self.state.auth;
        let Some(bearer) = auth::bearer(metadata) else {
            return auth
                .workspace(metadata, workspace_id)
                .await
                .map(drop)
                .map_err(Into::into);
        };
        match auth.identify(bearer).await? {
            Some(Principal::Workspace(caller)) => {
                let claimed = auth::claimed_workspace(metadata);
                let related = caller == workspace_id
                    || self
                        .state
                        .hierarchy
                        .is_ancestor_of(workspace_id, &caller)
                        .await;
                if related && claimed.is_none_or(|claimed| claimed == caller) {
                    Ok(())
                } else {
                    Err(AuthError::InvalidWorkspaceToken.into())
                }
            }
            Some(_) => Ok(()),
            None => Err(AuthError::InvalidWorkspaceToken.into()),
        }
    }

    async fn get(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::SharedContextEntries> {
        let id = validate::workspace_id(raw_id)?;
        self.reader(metadata, &id).await?;
        store::live_workspace(&self.state.db, &id).await?;
        let row = shared_context::Entity::find_by_id(id)
            .one(&self.state.db)
            .await
            .context("query failed")?;
        let entries: Vec<Entry> = row
            .and_then(|row| serde_json::from_str(&row.entries).ok())
            .unwrap_or_default();
        Ok(pb::SharedContextEntries {
            entries: entries
                .into_iter()
                .map(|entry| pb::SharedContextEntry {
                    path: entry.path,
                    content: entry.content,
                })
                .collect(),
        })
    }

    async fn publish(
        &self,
        metadata: &MetadataMap,
        request: &pb::PublishSharedContextRequest,
    ) -> ApiResult<pb::SharedContextEntries> {
        let id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for entry in &request.entries {
            if !valid_path(&entry.path) {
                return Err(SharedContextError::InvalidPath.into());
            }
            if !seen.insert(entry.path.as_str()) {
                return Err(SharedContextError::DuplicatePath.into());
            }
            total += entry.path.len() + entry.content.len();
        }
        if total > MAX_TOTAL_BYTES {
            return Err(SharedContextError::TooLarge.into());
        }
        let entries: Vec<Entry> = request
            .entries
            .iter()
            .map(|entry| Entry {
                path: entry.path.clone(),
                content: entry.content.clone(),
            })
            .collect();
        let text =
            serde_json::to_string(&entries).map_err(|_| ApiError::internal("failed to publish"))?;
        shared_context::Entity::insert(shared_context::ActiveModel {
            workspace_id: Set(id),
            entries: Set(text),
            updated_at: Set(store::now()),
        })
        .on_conflict(
            OnConflict::column(shared_context::Column::WorkspaceId)
                .update_columns([
                    shared_context::Column::Entries,
                    shared_context::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.state.db)
        .await
        .context("failed to publish")?;
        Ok(pb::SharedContextEntries {
            entries: request.entries.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_path;

    #[test]
    fn paths_stay_relative() {
        for good in ["README.md", "docs/guide.md", "a/.hidden", "x..y"] {
            assert!(valid_path(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "/etc/passwd",
            "../up",
            "a/../../b",
            "a\\b",
            "a\0b",
            "a/./b",
            "a//b",
            "a/",
            "./a",
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }
}

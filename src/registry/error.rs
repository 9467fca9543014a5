//! Every way a registry call is refused, each naming its code and documented words once
//! (docs/registry.md). Handlers return `RegistryError::X.into()`; the wire form is built here.

use serde_json::json;

use crate::{
    domain::{WorkspaceStatus, validate::WORKSPACE_NOT_FOUND},
    error::{ApiError, ErrorCode},
};

use super::activity::ACTIVITY_TYPES;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RegistryError {
    InvalidBody,
    /// The URL policy's reason, in its own words.
    InvalidUrl(String),
    CallerHeaderRequired,
    WorkspaceNotFound,
    WorkspaceRemoved,
    DiscoveryDenied,
    /// The target has no URL a peer could use.
    NotAvailable {
        status: WorkspaceStatus,
    },
    UnsafeUrl,
    InvalidActivityType,
    SourceMismatch,
    InvalidTargetId,
    InvalidSource,
    InvalidPeerId,
    InvalidBeforeTs,
    CursorGone,
    InvalidOrder,
    MessageRequired,
    AttachmentIncomplete {
        index: usize,
    },
    /// A heartbeat stream ends: its token was revoked, or its workspace removed.
    StreamTokenRevoked,
    StreamWorkspaceRemoved,
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        use RegistryError::*;
        let (code, message): (ErrorCode, std::borrow::Cow<'static, str>) = match &err {
            InvalidBody => (ErrorCode::BadRequest, "invalid request body".into()),
            InvalidUrl(reason) => (ErrorCode::BadRequest, reason.clone().into()),
            CallerHeaderRequired => (
                ErrorCode::BadRequest,
                "X-Workspace-ID header is required".into(),
            ),
            WorkspaceNotFound => (ErrorCode::NotFound, WORKSPACE_NOT_FOUND.into()),
            WorkspaceRemoved => (ErrorCode::Gone, "workspace removed".into()),
            DiscoveryDenied => (
                ErrorCode::Forbidden,
                "not authorized to discover this workspace".into(),
            ),
            NotAvailable { .. } => (ErrorCode::Unavailable, "workspace not available".into()),
            UnsafeUrl => (
                ErrorCode::Unavailable,
                "workspace URL failed safety check".into(),
            ),
            InvalidActivityType => (
                ErrorCode::BadRequest,
                format!(
                    "invalid activity_type, must be one of: {}",
                    ACTIVITY_TYPES.join(", ")
                )
                .into(),
            ),
            SourceMismatch => (
                ErrorCode::Forbidden,
                "source_id must match authenticated workspace".into(),
            ),
            InvalidTargetId => (ErrorCode::BadRequest, "invalid target_id".into()),
            InvalidSource => (
                ErrorCode::BadRequest,
                "source must be 'canvas' or 'agent'".into(),
            ),
            InvalidPeerId => (ErrorCode::BadRequest, "invalid peer_id".into()),
            InvalidBeforeTs => (ErrorCode::BadRequest, "invalid before_ts".into()),
            CursorGone => (
                ErrorCode::Gone,
                "since_id cursor no longer available".into(),
            ),
            InvalidOrder => (
                ErrorCode::BadRequest,
                "order must be 'asc' or 'desc'".into(),
            ),
            MessageRequired => (ErrorCode::BadRequest, "message is required".into()),
            AttachmentIncomplete { index } => (
                ErrorCode::BadRequest,
                format!("attachment[{index}]: uri and name are required").into(),
            ),
            StreamTokenRevoked => (ErrorCode::Unauthenticated, "workspace token revoked".into()),
            StreamWorkspaceRemoved => (ErrorCode::NotFound, "workspace removed".into()),
        };
        let error = ApiError::new(code, message);
        match err {
            NotAvailable { status } => error.with_fields(json!({"status": status})),
            _ => error,
        }
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(err: RegistryError) -> Self {
        ApiError::from(err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_is_gone_over_rest_and_unknown_is_not_found() {
        let removed = ApiError::from(RegistryError::WorkspaceRemoved);
        assert_eq!(
            (removed.code.http_status(), removed.message.as_ref()),
            (410, "workspace removed")
        );
        let unknown = ApiError::from(RegistryError::WorkspaceNotFound);
        assert_eq!(unknown.code.http_status(), 404);
    }

    #[test]
    fn an_unavailable_target_names_its_status() {
        let answer = ApiError::from(RegistryError::NotAvailable {
            status: WorkspaceStatus::Paused,
        });
        assert_eq!(answer.code.http_status(), 503);
        assert_eq!(
            answer.body,
            Some(json!({"error": "workspace not available", "status": "paused"}))
        );
    }

    #[test]
    fn the_activity_type_error_lists_every_type() {
        let answer = ApiError::from(RegistryError::InvalidActivityType);
        assert!(answer.message.ends_with(&ACTIVITY_TYPES.join(", ")));
    }
}

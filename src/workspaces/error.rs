//! Every way a workspace call is refused, each naming its code and documented words once
//! (docs/workspaces.md §2–3). Handlers return `WorkspaceError::X.into()`; the wire form is
//! built here.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::{
    domain::{WorkspaceStatus, validate::WORKSPACE_NOT_FOUND},
    error::{ApiError, ErrorCode},
};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WorkspaceError {
    /// The create body is not a workspace (bad shape, no name).
    InvalidPayload,
    /// A create text field breaks the rules (newlines, markup characters, length).
    InvalidFields,
    InvalidTemplate,
    InvalidDirectory,
    InvalidAccess,
    InvalidTier,
    InvalidParent,
    InvalidUrl,
    InvalidSecretKey(String),
    /// A PATCH field of the wrong type or out of range.
    InvalidField(&'static str),
    /// A PATCH of a field only operators may change, by the workspace's own token.
    OperatorField(&'static str),
    NotFound,
    /// `/state` of a workspace that is gone: the SDK stops on this 404.
    Deleted {
        id: String,
        removed: bool,
    },
    /// Deleting a workspace with children needs `?confirm=true`.
    ConfirmationRequired {
        children: Vec<Value>,
    },
    NotPausable,
    NotPaused,
    ParentPaused {
        name: String,
    },
    ExternalRestart,
    TooManyTokens,
    TokenNotFound,
    /// The test-token endpoint while disabled: indistinguishable from a missing route.
    Hidden,
    OrgKeyNameTooLong,
    /// An event watcher further behind than the fan-out buffer.
    WatcherBehind,
}

impl From<WorkspaceError> for ApiError {
    fn from(err: WorkspaceError) -> Self {
        use WorkspaceError::*;
        let (code, message): (ErrorCode, Cow<'static, str>) = match &err {
            InvalidPayload => (ErrorCode::BadRequest, "invalid workspace payload".into()),
            InvalidFields => (ErrorCode::BadRequest, "invalid workspace fields".into()),
            InvalidTemplate => (ErrorCode::BadRequest, "invalid template".into()),
            InvalidDirectory => (ErrorCode::BadRequest, "invalid workspace directory".into()),
            InvalidAccess => (ErrorCode::BadRequest, "invalid workspace access".into()),
            InvalidTier => (ErrorCode::BadRequest, "invalid tier".into()),
            InvalidParent => (ErrorCode::BadRequest, "invalid parent_id".into()),
            InvalidUrl => (ErrorCode::BadRequest, "invalid url".into()),
            InvalidSecretKey(key) => (
                ErrorCode::BadRequest,
                format!("invalid secret key: {key}").into(),
            ),
            InvalidField(field) => (ErrorCode::BadRequest, format!("invalid {field}").into()),
            OperatorField(field) => (
                ErrorCode::Forbidden,
                format!("admin credential required to change {field}").into(),
            ),
            NotFound | Deleted { .. } => (ErrorCode::NotFound, WORKSPACE_NOT_FOUND.into()),
            ConfirmationRequired { .. } => (
                ErrorCode::Conflict,
                "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete."
                    .into(),
            ),
            NotPausable => (
                ErrorCode::NotFound,
                "workspace not found or already paused".into(),
            ),
            NotPaused => (
                ErrorCode::NotFound,
                "workspace not found or not paused".into(),
            ),
            ParentPaused { name } => (
                ErrorCode::Conflict,
                format!("parent workspace \"{name}\" is paused — resume it first").into(),
            ),
            ExternalRestart => (
                ErrorCode::Conflict,
                "external workspaces are restarted by their operator, not the platform".into(),
            ),
            TooManyTokens => (
                ErrorCode::TooManyRequests,
                "maximum 50 active tokens per workspace".into(),
            ),
            TokenNotFound => (
                ErrorCode::NotFound,
                "token not found or already revoked".into(),
            ),
            Hidden => (ErrorCode::NotFound, "not found".into()),
            OrgKeyNameTooLong => (
                ErrorCode::BadRequest,
                "name too long (max 100 chars)".into(),
            ),
            WatcherBehind => (
                ErrorCode::TooManyRequests,
                "event watcher fell behind; reconnect and rehydrate".into(),
            ),
        };
        let error = ApiError::new(code, message);
        match err {
            Deleted { id, removed: false } => {
                error.with_body(json!({"workspace_id": id, "deleted": true}))
            }
            Deleted { id, removed: true } => error.with_body(
                json!({"workspace_id": id, "status": WorkspaceStatus::Removed, "deleted": true}),
            ),
            ConfirmationRequired { children } => {
                let (message, count) = (error.message.clone(), children.len());
                error.with_body(json!({
                    "status": "confirmation_required",
                    "message": message,
                    "children": children,
                    "children_count": count,
                }))
            }
            _ => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_workspace_answers_the_body_the_sdk_stops_on() {
        let gone = ApiError::from(WorkspaceError::Deleted {
            id: "w".to_owned(),
            removed: true,
        });
        assert_eq!(gone.code.http_status(), 404);
        assert_eq!(
            gone.body,
            Some(json!({"workspace_id": "w", "status": "removed", "deleted": true}))
        );
    }

    #[test]
    fn a_cascade_needs_confirmation_and_lists_the_children() {
        let children = vec![json!({"id": "c", "name": "child"})];
        let refused = ApiError::from(WorkspaceError::ConfirmationRequired {
            children: children.clone(),
        });
        let body = refused.body.unwrap();
        assert_eq!(refused.code.http_status(), 409);
        assert_eq!(body["status"], "confirmation_required");
        assert_eq!(body["children"], json!(children));
        assert_eq!(body["children_count"], 1);
    }

    #[test]
    fn field_errors_name_the_field() {
        let answer = ApiError::from(WorkspaceError::OperatorField("tier"));
        assert_eq!(
            (answer.code.http_status(), answer.message.as_ref()),
            (403, "admin credential required to change tier")
        );
        assert_eq!(
            ApiError::from(WorkspaceError::InvalidField("x")).message,
            "invalid x"
        );
    }
}

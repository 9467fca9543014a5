//! Every way a secrets call is refused, each naming its code and documented words once
//! (docs/workspaces.md §4).

use serde_json::json;

use crate::error::{ApiError, ErrorCode};

/// Every way a secrets call is refused, each naming its code and documented words once
/// (docs/workspaces.md §4).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SecretsError {
    InvalidBody,
    InvalidKey,
    InvalidValue,
    NotFound,
    /// Some rows did not open: the pull refuses rather than hand out a partial set.
    Undecryptable {
        failed_keys: Vec<String>,
    },
    ModelUndecryptable,
}

impl From<SecretsError> for ApiError {
    fn from(err: SecretsError) -> Self {
        let (code, message) = match &err {
            SecretsError::InvalidBody => (ErrorCode::BadRequest, "invalid request body"),
            SecretsError::InvalidKey => (ErrorCode::BadRequest, "invalid secret key"),
            SecretsError::InvalidValue => (ErrorCode::BadRequest, "invalid secret value"),
            SecretsError::NotFound => (ErrorCode::NotFound, "secret not found"),
            SecretsError::Undecryptable { .. } => (
                ErrorCode::Internal,
                "one or more secrets failed to decrypt; refusing to return partial bundle",
            ),
            SecretsError::ModelUndecryptable => (ErrorCode::Internal, "failed to decrypt"),
        };
        let error = ApiError::new(code, message);
        match err {
            SecretsError::Undecryptable { failed_keys } => {
                error.with_fields(json!({"failed_keys": failed_keys}))
            }
            _ => error,
        }
    }
}

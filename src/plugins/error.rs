//! Every way a plugin call is refused, each naming its code and documented words once
//! (docs/workspaces.md §5).

use std::borrow::Cow;

use serde_json::json;

use crate::error::{ApiError, ErrorCode};

use super::source::SCHEMES;

/// Why fetching a plugin's tree failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// No such directory, repository or reference.
    Missing,
    /// The fetch ran out of its time budget.
    TimedOut,
    /// git could not run, or the source failed otherwise.
    Upstream,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PluginError {
    InvalidSource,
    InvalidName,
    /// A `github://` source without `#ref` while unpinned sources are off.
    Unpinned {
        source: String,
    },
    UnknownScheme,
    Fetch {
        failure: FetchFailure,
        scheme: &'static str,
        source: String,
    },
    NotAllowed {
        name: String,
    },
    NameMismatch {
        resolved: String,
        requested: String,
    },
    DownloadFailed,
    TooLarge {
        source: String,
    },
    PackFailed {
        name: String,
    },
    /// Only external workspaces record installs; a platform runtime would install itself.
    ContainerNotRunning,
}

impl From<PluginError> for ApiError {
    fn from(err: PluginError) -> Self {
        use PluginError::*;
        let (code, message): (ErrorCode, Cow<'static, str>) = match &err {
            InvalidSource => (ErrorCode::BadRequest, "invalid plugin source".into()),
            InvalidName => (ErrorCode::BadRequest, "invalid plugin name".into()),
            Unpinned { .. } => (
                ErrorCode::Unprocessable,
                "unpinned github source: append a tag or commit SHA (e.g. \"github://owner/repo#v1.2.0\"). Set PLUGIN_ALLOW_UNPINNED=true to override".into(),
            ),
            UnknownScheme => (
                ErrorCode::BadRequest,
                "failed to resolve plugin source".into(),
            ),
            Fetch {
                failure, scheme, ..
            } => (
                match failure {
                    FetchFailure::Missing => ErrorCode::NotFound,
                    FetchFailure::TimedOut => ErrorCode::GatewayTimeout,
                    FetchFailure::Upstream => ErrorCode::BadGateway,
                },
                format!("failed to fetch plugin from {scheme}").into(),
            ),
            NotAllowed { name } => (
                ErrorCode::Forbidden,
                format!("plugin \"{name}\" is not in the org plugin allowlist").into(),
            ),
            NameMismatch {
                resolved,
                requested,
            } => (
                ErrorCode::BadRequest,
                format!("source resolved to plugin \"{resolved}\" but URL requested \"{requested}\"")
                    .into(),
            ),
            DownloadFailed => (ErrorCode::Internal, "plugin download failed".into()),
            TooLarge { .. } => (
                ErrorCode::PayloadTooLarge,
                "staged plugin exceeds size limit".into(),
            ),
            PackFailed { .. } => (ErrorCode::Internal, "failed to pack plugin".into()),
            ContainerNotRunning => (
                ErrorCode::Unavailable,
                "workspace container not running".into(),
            ),
        };
        let error = ApiError::new(code, message);
        match err {
            Unpinned { source } | Fetch { source, .. } | TooLarge { source } => {
                error.with_fields(json!({"source": source}))
            }
            UnknownScheme => error.with_fields(json!({"available_schemes": SCHEMES})),
            NameMismatch {
                resolved,
                requested,
            } => error.with_fields(json!({"resolved_name": resolved, "requested_name": requested})),
            PackFailed { name } => error.with_fields(json!({"plugin": name})),
            _ => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_failure_maps_to_its_status_and_echoes_the_source() {
        for (failure, status) in [
            (FetchFailure::Missing, 404),
            (FetchFailure::TimedOut, 504),
            (FetchFailure::Upstream, 502),
        ] {
            let answer = ApiError::from(PluginError::Fetch {
                failure,
                scheme: "github",
                source: "github://o/r#v1".to_owned(),
            });
            assert_eq!(answer.code.http_status(), status);
            assert_eq!(
                answer.body,
                Some(
                    json!({"error": "failed to fetch plugin from github", "source": "github://o/r#v1"})
                )
            );
        }
    }

    #[test]
    fn an_unknown_scheme_lists_the_known_ones() {
        let answer = ApiError::from(PluginError::UnknownScheme);
        assert_eq!(answer.body.unwrap()["available_schemes"], json!(SCHEMES));
    }
}

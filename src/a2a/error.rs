//! What can go wrong with a proxied call, as variants the proxy's own callers (the busy queue,
//! delegations) decide on. Each variant names its code and documented body once, here; the
//! transports only ever see the [`ApiError`] built from it.

use serde_json::json;

use crate::{
    domain::{WorkspaceStatus, validate::WORKSPACE_NOT_FOUND},
    error::{ApiError, ErrorCode},
};

const ACCESS_DENIED: &str = "access denied: workspaces cannot communicate per hierarchy rules";

#[derive(Debug, Clone, PartialEq)]
pub enum ProxyError {
    /// The body is not a JSON-RPC request.
    InvalidJson,
    /// A caller named a workspace id it cannot hold (a forged or malformed `X-Workspace-ID`).
    InvalidCallerId,
    MissingCallerToken,
    InvalidCallerToken,
    /// The hierarchy forbids this pair, or the target does not exist for this caller.
    AccessDenied,
    WorkspaceNotFound,
    BudgetExceeded,
    /// Neither a URL, an attached stream nor a poll mailbox reaches the target.
    NoUrl {
        status: WorkspaceStatus,
    },
    /// The agent's URL resolved to an address the policy refuses.
    UnsafeUrl,
    /// Connecting to the agent failed.
    Unreachable,
    /// The agent answered, and its body broke off.
    ReadFailed {
        delivery_confirmed: bool,
    },
    /// The agent's answer exceeded the relay's limit.
    TooLarge,
    /// The agent took the connection and did not answer in time; `native_session` agents
    /// retry by themselves.
    Busy {
        native_session: bool,
    },
    /// The request could not be built or its task failed.
    Internal(&'static str),
    /// A failure of the platform below the proxy (auth, datastore).
    Platform(ApiError),
}

impl ProxyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson => ErrorCode::BadRequest,
            Self::MissingCallerToken | Self::InvalidCallerToken => ErrorCode::Unauthenticated,
            Self::InvalidCallerId | Self::AccessDenied => ErrorCode::Forbidden,
            Self::WorkspaceNotFound => ErrorCode::NotFound,
            Self::BudgetExceeded => ErrorCode::PaymentRequired,
            Self::NoUrl { .. } | Self::Busy { .. } => ErrorCode::Unavailable,
            Self::UnsafeUrl | Self::Unreachable | Self::ReadFailed { .. } | Self::TooLarge => {
                ErrorCode::BadGateway
            }
            Self::Internal(_) => ErrorCode::Internal,
            Self::Platform(err) => err.code,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid JSON",
            Self::InvalidCallerId => "invalid caller ID",
            Self::MissingCallerToken => "missing caller auth token",
            Self::InvalidCallerToken => "invalid caller auth token",
            Self::AccessDenied => ACCESS_DENIED,
            Self::WorkspaceNotFound => WORKSPACE_NOT_FOUND,
            Self::BudgetExceeded => "workspace budget limit exceeded",
            Self::NoUrl { .. } => "workspace has no URL",
            Self::UnsafeUrl => "workspace URL is not publicly routable",
            Self::Unreachable => "failed to reach workspace agent",
            Self::ReadFailed { .. } => "failed to read agent response",
            Self::TooLarge => "agent response too large",
            Self::Busy {
                native_session: true,
            } => "workspace agent busy — adapter handles retry (native_session)",
            Self::Busy {
                native_session: false,
            } => "workspace agent busy — retry after a short backoff",
            Self::Internal(message) => message,
            Self::Platform(_) => "",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Platform(err) => f.write_str(&err.message),
            other => f.write_str(other.message()),
        }
    }
}

impl From<ApiError> for ProxyError {
    fn from(err: ApiError) -> Self {
        Self::Platform(err)
    }
}

/// Every way the agent-facing streams (`Attach`, and the relay between replicas) end or refuse,
/// each naming its code and words once (docs/a2a.md §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundError {
    /// The first frame of `Attach` was not `Hello`.
    HelloRequired,
    /// The bearer is not the hello's workspace's own live token.
    InvalidAgentToken,
    /// A newer `Attach` of the same workspace took this one's place.
    Superseded,
    /// The agent did not answer a ping in time.
    NoPong,
    /// A relay from a replica without the shared replica credential.
    ReplicaCredentialRequired,
    /// The relay asked for an agent this replica does not hold (any more).
    NotAttachedHere,
    /// The agent went away while the relay was being set up.
    AttachmentLost,
    /// The admin queue cleanup's age.
    InvalidMaxAge,
    /// The token the stream was opened with was revoked.
    TokenRevoked,
    /// The stream's workspace was removed.
    WorkspaceRemoved,
}

impl From<InboundError> for ApiError {
    fn from(err: InboundError) -> Self {
        let (code, message) = match err {
            InboundError::HelloRequired => {
                (ErrorCode::Unauthenticated, "the first frame must be hello")
            }
            InboundError::InvalidAgentToken => {
                (ErrorCode::Unauthenticated, "invalid workspace auth token")
            }
            InboundError::Superseded => (ErrorCode::Superseded, "superseded"),
            InboundError::NoPong => (ErrorCode::GatewayTimeout, "no pong in 90 s"),
            InboundError::ReplicaCredentialRequired => {
                (ErrorCode::Unauthenticated, "replica credential required")
            }
            InboundError::NotAttachedHere => (ErrorCode::NotFound, "agent not attached here"),
            InboundError::AttachmentLost => (ErrorCode::Unavailable, "agent not attached here"),
            InboundError::TokenRevoked => (ErrorCode::Unauthenticated, "workspace token revoked"),
            InboundError::WorkspaceRemoved => (ErrorCode::NotFound, "workspace removed"),
            InboundError::InvalidMaxAge => (
                ErrorCode::BadRequest,
                "max_age_minutes must be a positive integer",
            ),
        };
        ApiError::new(code, message)
    }
}

impl From<InboundError> for tonic::Status {
    fn from(err: InboundError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<crate::auth::AuthError> for ProxyError {
    fn from(err: crate::auth::AuthError) -> Self {
        Self::Platform(err.into())
    }
}

impl From<ProxyError> for ApiError {
    fn from(err: ProxyError) -> Self {
        let error = ApiError::new(err.code(), err.message());
        match err {
            ProxyError::Platform(err) => err,
            ProxyError::NoUrl { status } => error.with_fields(json!({"status": status})),
            ProxyError::ReadFailed { delivery_confirmed } => {
                error.with_fields(json!({"delivery_confirmed": delivery_confirmed}))
            }
            ProxyError::Busy {
                native_session: true,
            } => {
                error.with_fields(json!({"busy": true, "retry_after": 30, "native_session": true}))
            }
            ProxyError::Busy {
                native_session: false,
            } => error.with_fields(json!({"busy": true, "retry_after": 30})),
            _ => error,
        }
    }
}

impl From<ProxyError> for tonic::Status {
    fn from(err: ProxyError) -> Self {
        ApiError::from(err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(err: ProxyError) -> (u16, Value) {
        let err = ApiError::from(err);
        let body = err
            .body
            .clone()
            .unwrap_or_else(|| json!({"error": err.message}));
        (err.code.http_status(), body)
    }

    #[test]
    fn busy_answers_carry_the_flags_clients_retry_on() {
        assert_eq!(
            body(ProxyError::Busy {
                native_session: false
            }),
            (
                503,
                json!({"error": "workspace agent busy — retry after a short backoff", "busy": true, "retry_after": 30})
            )
        );
        let (status, native) = body(ProxyError::Busy {
            native_session: true,
        });
        assert_eq!(status, 503);
        assert_eq!(native["native_session"], true);
    }

    #[test]
    fn upstream_failures_are_bad_gateway_and_only_a_broken_read_says_if_it_was_delivered() {
        for err in [
            ProxyError::UnsafeUrl,
            ProxyError::Unreachable,
            ProxyError::TooLarge,
        ] {
            let (status, body) = body(err);
            assert_eq!(status, 502);
            assert!(body.get("delivery_confirmed").is_none());
        }
        let (status, body) = body(ProxyError::ReadFailed {
            delivery_confirmed: true,
        });
        assert_eq!((status, &body["delivery_confirmed"]), (502, &json!(true)));
    }

    #[test]
    fn platform_failures_pass_through_unchanged() {
        let outage = ApiError::datastore_unavailable();
        assert_eq!(ApiError::from(ProxyError::from(outage.clone())), outage);
    }
}

//! The one error taxonomy of the control plane. Every domain error names its `ErrorCode` once;
//! the gRPC status and the REST status + body are derived here and nowhere else. Handlers never
//! build a `tonic::Status` themselves, and datastore text never reaches a caller.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::pb;

/// A deliberately small subset of outcomes, each with one gRPC code and one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    /// The target's budget is spent (HTTP 402).
    PaymentRequired,
    Forbidden,
    NotFound,
    /// The resource existed and was removed (HTTP 410).
    Gone,
    Conflict,
    /// A precondition the caller can fix is unmet (HTTP 412): an import's required secrets.
    PreconditionFailed,
    /// A newer call took this one's place (an agent's second `Attach`).
    Superseded,
    PayloadTooLarge,
    Unprocessable,
    TooManyRequests,
    Internal,
    /// An upstream (a plugin source, an agent) failed (HTTP 502).
    BadGateway,
    Unavailable,
    /// An upstream did not answer in time (HTTP 504).
    GatewayTimeout,
}

impl ErrorCode {
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::BadRequest | Self::Unprocessable => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::Forbidden => tonic::Code::PermissionDenied,
            Self::NotFound | Self::Gone => tonic::Code::NotFound,
            Self::Conflict | Self::PaymentRequired | Self::PreconditionFailed => {
                tonic::Code::FailedPrecondition
            }
            Self::Superseded => tonic::Code::Aborted,
            Self::PayloadTooLarge | Self::TooManyRequests => tonic::Code::ResourceExhausted,
            Self::Internal => tonic::Code::Internal,
            Self::BadGateway | Self::Unavailable => tonic::Code::Unavailable,
            Self::GatewayTimeout => tonic::Code::DeadlineExceeded,
        }
    }

    /// The code as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::PaymentRequired => "payment_required",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::Superseded => "superseded",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unprocessable => "unprocessable",
            Self::TooManyRequests => "too_many_requests",
            Self::Internal => "internal",
            Self::BadGateway => "bad_gateway",
            Self::Unavailable => "unavailable",
            Self::GatewayTimeout => "gateway_timeout",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthenticated => 401,
            Self::PaymentRequired => 402,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict | Self::Superseded => 409,
            Self::Gone => 410,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge => 413,
            Self::Unprocessable => 422,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::BadGateway => 502,
            Self::Unavailable => 503,
            Self::GatewayTimeout => 504,
        }
    }
}

/// The message every caller sees when the datastore cannot be reached (docs/workspaces.md §3.3).
pub const DATASTORE_UNAVAILABLE: &str = "platform datastore unavailable — retry shortly";

/// A domain error: a code, the exact documented message, and the full body when the documented
/// body is more than `{"error": message}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub body: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            body: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn datastore_unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, DATASTORE_UNAVAILABLE)
            .with_fields(json!({"code": "platform_unavailable"}))
    }

    /// Adds documented keys next to `"error"`.
    pub fn with_fields(mut self, fields: Value) -> Self {
        let mut body = json!({"error": self.message});
        if let (Some(target), Value::Object(extra)) = (body.as_object_mut(), fields) {
            target.extend(extra);
        }
        self.body = Some(body);
        self
    }

    /// Replaces the whole body, for documented bodies without an `"error"` key.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// The reply of a unary RPC.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// A service method's result as a gRPC reply (errors through `From<ApiError> for Status`).
pub fn reply<T>(result: ApiResult<T>) -> RpcResult<T> {
    result
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

/// The one place a domain error becomes a gRPC status (and, through its detail, a REST answer).
impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let detail = pb::ErrorDetail {
            http_status: u32::from(err.code.http_status()),
            body_json: err.body.as_ref().map(Value::to_string),
        };
        pb::wire_error::status(err.code.grpc_code(), err.message.into_owned(), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_documented_http_status() {
        let cases = [
            (ErrorCode::BadRequest, 400, tonic::Code::InvalidArgument),
            (
                ErrorCode::Unauthenticated,
                401,
                tonic::Code::Unauthenticated,
            ),
            (
                ErrorCode::PaymentRequired,
                402,
                tonic::Code::FailedPrecondition,
            ),
            (ErrorCode::Forbidden, 403, tonic::Code::PermissionDenied),
            (ErrorCode::NotFound, 404, tonic::Code::NotFound),
            (ErrorCode::Gone, 410, tonic::Code::NotFound),
            (ErrorCode::Conflict, 409, tonic::Code::FailedPrecondition),
            (
                ErrorCode::PreconditionFailed,
                412,
                tonic::Code::FailedPrecondition,
            ),
            (ErrorCode::Superseded, 409, tonic::Code::Aborted),
            (
                ErrorCode::PayloadTooLarge,
                413,
                tonic::Code::ResourceExhausted,
            ),
            (ErrorCode::Unprocessable, 422, tonic::Code::InvalidArgument),
            (
                ErrorCode::TooManyRequests,
                429,
                tonic::Code::ResourceExhausted,
            ),
            (ErrorCode::Internal, 500, tonic::Code::Internal),
            (ErrorCode::BadGateway, 502, tonic::Code::Unavailable),
            (ErrorCode::Unavailable, 503, tonic::Code::Unavailable),
            (
                ErrorCode::GatewayTimeout,
                504,
                tonic::Code::DeadlineExceeded,
            ),
        ];
        for (code, http, grpc) in cases {
            assert_eq!(code.http_status(), http, "{code:?}");
            assert_eq!(code.grpc_code(), grpc, "{code:?}");
        }
    }

    #[test]
    fn status_carries_http_status_and_body() {
        let status: tonic::Status = ApiError::datastore_unavailable().into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), DATASTORE_UNAVAILABLE);
        let detail = pb::wire_error::detail(&status).unwrap();
        assert_eq!(detail.http_status, 503);
        let body: Value = serde_json::from_str(&detail.body_json.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"error": DATASTORE_UNAVAILABLE, "code": "platform_unavailable"})
        );
    }
}

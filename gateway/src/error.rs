//! Turning a gRPC status into the documented REST error: the HTTP status and the exact body
//! travel in the status details (`molecule.v1.ErrorDetail`); a status without them (a transport
//! failure) gets a generic body and never echoes transport text.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::pb;

/// `{"error": "<message>"}`, sometimes with documented extra keys.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

/// A REST error response.
#[derive(Debug)]
pub(crate) struct RestError {
    status: StatusCode,
    body: Value,
}

impl RestError {
    pub(crate) fn new(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            body: json!({"error": message}),
        }
    }

    pub(crate) fn with_body(status: StatusCode, body: Value) -> Self {
        Self { status, body }
    }
}

impl IntoResponse for RestError {
    /// A documented `retry_after` also becomes the `Retry-After` header.
    fn into_response(self) -> Response {
        let retry_after = self.body["retry_after"].as_u64();
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<tonic::Status> for RestError {
    fn from(status: tonic::Status) -> Self {
        if let Some(detail) = pb::wire_error::detail(&status) {
            let http = StatusCode::from_u16(detail.http_status as u16)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = detail
                .body_json
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_else(|| json!({"error": status.message()}));
            return Self::with_body(http, body);
        }
        let http = fallback_http_status(status.code());
        tracing::warn!(code = ?status.code(), "upstream status without error detail");
        let message = match http {
            StatusCode::SERVICE_UNAVAILABLE => "control plane unavailable — retry shortly",
            StatusCode::GATEWAY_TIMEOUT => "control plane timed out",
            _ => "internal error",
        };
        Self::new(http, message)
    }
}

/// The grpc-gateway table, for statuses that carry no detail.
fn fallback_http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_without_detail_follow_the_grpc_gateway_table() {
        use tonic::Code;
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            assert_eq!(fallback_http_status(code).as_u16(), http, "{code:?}");
        }
        let error = RestError::from(tonic::Status::unavailable(
            "tcp connect error: secret detail",
        ));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.body.to_string().contains("secret detail"));
    }
}

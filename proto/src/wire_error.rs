//! How a domain error crosses gRPC: the status code and message as usual, plus a
//! `molecule.v1.ErrorDetail` (the documented HTTP status and the exact REST body) inside a
//! `google.rpc.Status` in the details. The control plane encodes with [`status`]; the gateway
//! decodes with [`detail`], so a REST caller gets the same answer as a gRPC one.

use prost::Message;

use crate::{ErrorDetail, google_rpc};

const DETAIL_TYPE_URL: &str = "type.googleapis.com/molecule.v1.ErrorDetail";

/// A status carrying `detail`.
pub fn status(code: tonic::Code, message: String, detail: ErrorDetail) -> tonic::Status {
    let envelope = google_rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: DETAIL_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, message, envelope.encode_to_vec().into())
}

/// The detail a status carries, if it carries one (a transport failure does not).
pub fn detail(status: &tonic::Status) -> Option<ErrorDetail> {
    let envelope = google_rpc::Status::decode(status.details()).ok()?;
    envelope
        .details
        .iter()
        .find(|any| any.type_url == DETAIL_TYPE_URL)
        .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_survives_the_round_trip() {
        let sent = ErrorDetail {
            http_status: 503,
            body_json: Some(r#"{"error":"busy","retry_after":30}"#.to_owned()),
        };
        let status = status(tonic::Code::Unavailable, "busy".to_owned(), sent.clone());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "busy");
        assert_eq!(detail(&status), Some(sent));

        // Through the wire form too: the details travel as `grpc-status-details-bin`.
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let received = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(detail(&received).unwrap().http_status, 503);
    }

    #[test]
    fn a_status_without_detail_has_none() {
        assert_eq!(
            detail(&tonic::Status::unavailable("tcp connect error")),
            None
        );
    }
}

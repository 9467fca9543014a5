//! Chat file routes (docs/runtime.md §2): multipart uploads streamed to the control plane part
//! by part, and downloads with the reference's headers. Only `files` parts are forwarded; the
//! caps, quota and names are decided behind gRPC.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    edge::UPLOAD_BODY_LIMIT,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::BodyError,
    pb::{self, upload_end::Reason, upload_part::Part},
};

/// The multipart field that carries files; other fields are ignored.
const FILES_FIELD: &str = "files";

/// One stored file, as `/notify` accepts it back verbatim.
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadedFile {
    uri: String,
    name: String,
    #[serde(rename = "mimeType", skip_serializing_if = "String::is_empty")]
    mime_type: String,
    size: i64,
}

/// The upload form, as documented (the handler streams the parts instead of collecting them).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct UploadForm {
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    files: Vec<Vec<u8>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadParams {
    /// The path of an upload's `workspace:` URI.
    #[param(
        required = true,
        pattern = r"^(?!.*\.\.)/(configs|workspace|home|plugins)(/(?!\.(/|$))[^/]+)*$"
    )]
    path: Option<String>,
}

/// Sends every `files` part of a multipart body as upload parts; the reason the body ended,
/// or why it could not be read (too slow, the server's budget spent): then the gateway answers.
async fn forward_files(
    parts: &mpsc::Sender<pb::UploadPart>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Reason, BodyError> {
    let send = |part| parts.send(pb::UploadPart { part: Some(part) });
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok());
    let Some(boundary) = boundary else {
        return Ok(Reason::Malformed);
    };
    let limits = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(UPLOAD_BODY_LIMIT as u64));
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, limits);
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Ok(Reason::Complete),
            Err(err) => return failure(&err),
        };
        if field.name() != Some(FILES_FIELD) {
            continue;
        }
        let header = pb::UploadFileHeader {
            name: field.file_name().unwrap_or_default().to_owned(),
            mime_type: field
                .content_type()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        if send(Part::File(header)).await.is_err() {
            // The control plane already answered (a refusal); its answer is what counts.
            return Ok(Reason::Complete);
        }
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if send(Part::Data(chunk.to_vec())).await.is_err() {
                        return Ok(Reason::Complete);
                    }
                }
                Ok(None) => break,
                Err(err) => return failure(&err),
            }
        }
    }
}

fn failure(err: &multer::Error) -> Result<Reason, BodyError> {
    match err {
        multer::Error::StreamSizeExceeded { .. } => Ok(Reason::TooLarge),
        multer::Error::StreamReadFailed(cause) => match BodyError::of(cause.as_ref()) {
            BodyError::Invalid => Ok(Reason::Malformed),
            unreadable => Err(unreadable),
        },
        _ => Ok(Reason::Malformed),
    }
}

#[utoipa::path(post, path = "/workspaces/{id}/chat/uploads", tag = "chat-files",
    description = "multipart/form-data with one or more `files` parts: at most 25 MB a file, 50 MB a request, within the workspace's quota.",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body(content_type = "multipart/form-data", content = UploadForm),
    responses((status = 200, body = Object, example = json!({"files": [{"uri": "workspace:/workspace/.molecule/chat-uploads/0123…-report.pdf", "name": "report.pdf", "mimeType": "application/pdf", "size": 1024}]})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 408, description = "the body stalled for longer than the body-read timeout", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn upload(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (parts, received) = mpsc::channel(8);
    let mut client = gateway.chat_files.clone();
    let request = forwarded.request(ReceiverStream::new(received));
    let call = tokio::spawn(async move { client.upload(request).await });
    let target = Part::Target(pb::UploadTarget { workspace_id: id });
    if parts
        .send(pb::UploadPart { part: Some(target) })
        .await
        .is_ok()
    {
        let reason = match forward_files(&parts, &headers, body).await {
            Ok(reason) => reason,
            // Nothing is stored: the call ends without its end part.
            Err(unreadable) => {
                call.abort();
                if let Some(answer) = unreadable.early_response() {
                    return answer;
                }
                Reason::Malformed
            }
        };
        let end = Part::End(pb::UploadEnd {
            reason: reason as i32,
        });
        // A closed stream means the answer is already decided.
        let _ = parts.send(pb::UploadPart { part: Some(end) }).await;
    }
    drop(parts);
    match call.await {
        Ok(Ok(reply)) => {
            let files: Vec<UploadedFile> = reply
                .into_inner()
                .files
                .into_iter()
                .map(|file| UploadedFile {
                    uri: file.uri,
                    name: file.name,
                    mime_type: file.mime_type,
                    size: file.size,
                })
                .collect();
            (StatusCode::OK, axum::Json(json!({"files": files}))).into_response()
        }
        Ok(Err(status)) => RestError::from(status).into_response(),
        Err(_) => {
            RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "upload failed").into_response()
        }
    }
}

/// `Content-Disposition` with both forms of the name: a quoted ASCII-safe one and the exact
/// UTF-8 one (RFC 6266).
fn content_disposition(name: &str) -> String {
    let quoted: String = name
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}")
}

#[utoipa::path(get, path = "/workspaces/{id}/chat/download", tag = "chat-files",
    description = "Serves a stored upload by the path of its URI; any other path answers 404.",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), DownloadParams),
    responses((status = 200, description = "the file's bytes, as an attachment", content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn download(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(params): Query<DownloadParams>,
) -> Response {
    let request = pb::DownloadRequest {
        workspace_id: id,
        path: params.path.unwrap_or_default(),
    };
    let mut parts = match gateway
        .chat_files
        .clone()
        .download(forwarded.request(request))
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return RestError::from(status).into_response(),
    };
    let header = match parts.message().await {
        Ok(Some(pb::DownloadPart {
            part: Some(pb::download_part::Part::Header(header)),
        })) => header,
        Ok(_) => {
            return RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to read archive")
                .into_response();
        }
        Err(status) => return RestError::from(status).into_response(),
    };
    let bytes = parts.filter_map(|part| async move {
        match part {
            Ok(pb::DownloadPart {
                part: Some(pb::download_part::Part::Data(data)),
            }) => Some(Ok::<_, tonic::Status>(bytes::Bytes::from(data))),
            Ok(_) => None,
            Err(status) => Some(Err(status)),
        }
    });
    let mut response = Body::from_stream(bytes).into_response();
    let headers = response.headers_mut();
    let header_value = |text: &str| {
        HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("application/octet-stream"))
    };
    headers.insert(header::CONTENT_TYPE, header_value(&header.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(header.size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&content_disposition(&header.name)) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn the_disposition_names_the_file_both_ways() {
        assert_eq!(
            content_disposition("report \"final\".pdf"),
            "attachment; filename=\"report \\\"final\\\".pdf\"; filename*=UTF-8''report%20%22final%22.pdf"
        );
        assert_eq!(
            content_disposition("a\r\nb.txt"),
            "attachment; filename=\"ab.txt\"; filename*=UTF-8''a%0D%0Ab.txt"
        );
    }
}

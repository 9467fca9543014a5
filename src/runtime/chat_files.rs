//! The ChatFiles gRPC service (docs/runtime.md §2, M2): files attached to chat messages, stored
//! in the database so every replica serves them, named by the `workspace:` URIs the runtime and
//! `/notify` already use. Owns the caps, the quota, name sanitising and the URI scheme; it never
//! touches an agent's file system.

use std::pin::Pin;

use futures::Stream;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::Expr,
};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use crate::{
    error::{ApiError, ApiResult, ErrorCode, RpcResult},
    pb::{self, download_part, upload_end::Reason, upload_part},
    state::Platform,
    store::{
        self, DbContext,
        entities::{chat_upload, workspace},
    },
};

const MIB: usize = 1024 * 1024;
/// One file, at most.
pub const MAX_FILE_BYTES: usize = 25 * MIB;
/// One request's files together, at most.
pub const MAX_REQUEST_BYTES: usize = 50 * MIB;
/// Where uploads appear to live, in their URIs and download paths.
const UPLOAD_DIR: &str = "/workspace/.molecule/chat-uploads/";
/// The roots a download path may name (only uploads exist here; the rest answer 404).
const DOWNLOAD_ROOTS: [&str; 4] = ["/configs", "/workspace", "/home", "/plugins"];
const MAX_NAME_BYTES: usize = 100;
const MAX_KEPT_EXTENSION_BYTES: usize = 16;
/// Bytes per streamed download message.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Every way a chat-file call is refused, each naming its code and documented words once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChatFileError {
    Malformed,
    NoFiles,
    FileTooLarge { name: String },
    RequestTooLarge,
    QuotaExceeded,
    PathRequired,
    PathNotAbsolute,
    PathOutsideRoots,
    InvalidPath,
    NotFound,
}

impl From<ChatFileError> for ApiError {
    fn from(err: ChatFileError) -> Self {
        let (code, message) = match err {
            ChatFileError::Malformed => (ErrorCode::BadRequest, "failed to parse multipart form"),
            ChatFileError::NoFiles => {
                (ErrorCode::BadRequest, "expected at least one 'files' field")
            }
            ChatFileError::FileTooLarge { name } => {
                return ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("{name} exceeds per-file limit (25 MB)"),
                );
            }
            ChatFileError::RequestTooLarge => (
                ErrorCode::PayloadTooLarge,
                "upload exceeds per-request limit (50 MB)",
            ),
            ChatFileError::QuotaExceeded => (
                ErrorCode::PayloadTooLarge,
                "workspace upload quota exceeded",
            ),
            ChatFileError::PathRequired => (ErrorCode::BadRequest, "path query required"),
            ChatFileError::PathNotAbsolute => (ErrorCode::BadRequest, "path must be absolute"),
            ChatFileError::PathOutsideRoots => (
                ErrorCode::BadRequest,
                "path must be under /configs, /workspace, /home, or /plugins",
            ),
            ChatFileError::InvalidPath => (ErrorCode::BadRequest, "invalid path"),
            ChatFileError::NotFound => (ErrorCode::NotFound, "file not found"),
        };
        ApiError::new(code, message)
    }
}

pub struct ChatFilesService {
    state: Platform,
}

impl ChatFilesService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadPart, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_files_server::ChatFiles for ChatFilesService {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadPart>>,
    ) -> RpcResult<pb::UploadResponse> {
        let (metadata, _, parts) = request.into_parts();
        Ok(Response::new(self.upload(&metadata, parts).await?))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> RpcResult<Self::DownloadStream> {
        let file = self.find(request.metadata(), request.get_ref()).await?;
        Ok(Response::new(download_stream(file)))
    }
}

/// A file as received, before the request is accepted.
struct Received {
    name: String,
    mime_type: String,
    bytes: Vec<u8>,
}

impl ChatFilesService {
    async fn upload(
        &self,
        metadata: &MetadataMap,
        mut parts: Streaming<pb::UploadPart>,
    ) -> ApiResult<pb::UploadResponse> {
        let mut next = async || -> ApiResult<upload_part::Part> {
            match parts.message().await {
                Ok(Some(pb::UploadPart { part: Some(part) })) => Ok(part),
                _ => Err(ChatFileError::Malformed.into()),
            }
        };
        let upload_part::Part::Target(target) = next().await? else {
            return Err(ChatFileError::Malformed.into());
        };
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &target.workspace_id)
            .await?;
        let mut files: Vec<Received> = Vec::new();
        let mut total = 0;
        loop {
            match next().await? {
                upload_part::Part::File(header) => files.push(Received {
                    name: header.name,
                    mime_type: header.mime_type,
                    bytes: Vec::new(),
                }),
                upload_part::Part::Data(bytes) => {
                    let file = files.last_mut().ok_or(ChatFileError::Malformed)?;
                    if file.bytes.len() + bytes.len() > MAX_FILE_BYTES {
                        return Err(ChatFileError::FileTooLarge {
                            name: file.name.clone(),
                        }
                        .into());
                    }
                    total += bytes.len();
                    if total > MAX_REQUEST_BYTES {
                        return Err(ChatFileError::RequestTooLarge.into());
                    }
                    file.bytes.extend_from_slice(&bytes);
                }
                upload_part::Part::End(end) => match end.reason() {
                    Reason::Complete => break,
                    Reason::Malformed => return Err(ChatFileError::Malformed.into()),
                    Reason::TooLarge => return Err(ChatFileError::RequestTooLarge.into()),
                },
                upload_part::Part::Target(_) => return Err(ChatFileError::Malformed.into()),
            }
        }
        if files.is_empty() {
            return Err(ChatFileError::NoFiles.into());
        }
        self.store(&workspace_id, files, total).await
    }

    /// Checks the quota and stores every file of the request, or none.
    async fn store(
        &self,
        workspace_id: &str,
        files: Vec<Received>,
        total: usize,
    ) -> ApiResult<pb::UploadResponse> {
        const FAILED: &str = "failed to stage files in workspace";
        let txn = self.state.db.begin().await.context(FAILED)?;
        // One quota check at a time per workspace, on every replica: the workspace's row lock
        // (Postgres; SQLite has a single writer) is held until the files are in.
        workspace::Entity::find_by_id(workspace_id)
            .select_only()
            .column(workspace::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .one(&txn)
            .await
            .context(FAILED)?;
        let held: Option<i64> = chat_upload::Entity::find()
            .select_only()
            .expr(Expr::cust("CAST(COALESCE(SUM(size), 0) AS BIGINT)"))
            .filter(chat_upload::Column::WorkspaceId.eq(workspace_id))
            .into_tuple()
            .one(&txn)
            .await
            .context(FAILED)?;
        let quota = self.state.settings.runtime.upload_quota_bytes;
        if held.unwrap_or(0).max(0) as u64 + total as u64 > quota {
            return Err(ChatFileError::QuotaExceeded.into());
        }
        let now = store::now();
        let mut stored = Vec::with_capacity(files.len());
        for file in files {
            let id = hex::encode(rand::random::<[u8; 16]>());
            let name = sanitize(&file.name);
            let stored_name = format!("{id}-{name}");
            let mime_type = Some(file.mime_type)
                .filter(|mime| !mime.is_empty())
                .or_else(|| content_type(&name).map(str::to_owned))
                .unwrap_or_default();
            let size = file.bytes.len() as i64;
            chat_upload::Entity::insert(chat_upload::ActiveModel {
                id: Set(id),
                workspace_id: Set(workspace_id.to_owned()),
                stored_name: Set(stored_name.clone()),
                name: Set(name.clone()),
                mime_type: Set(Some(mime_type.clone()).filter(|mime| !mime.is_empty())),
                size: Set(size),
                content: Set(file.bytes),
                created_at: Set(now),
            })
            .exec_without_returning(&txn)
            .await
            .context(FAILED)?;
            stored.push(pb::UploadedFile {
                uri: format!("workspace:{UPLOAD_DIR}{stored_name}"),
                name,
                mime_type,
                size,
            });
        }
        txn.commit().await.context(FAILED)?;
        Ok(pb::UploadResponse { files: stored })
    }

    /// The stored upload a download path names, for WorkspaceAuth on its workspace.
    async fn find(
        &self,
        metadata: &MetadataMap,
        request: &pb::DownloadRequest,
    ) -> ApiResult<chat_upload::Model> {
        let workspace_id = self
            .state
            .auth
            .live_workspace(metadata, &request.workspace_id)
            .await?;
        let stored_name = upload_name(&request.path)?.ok_or(ChatFileError::NotFound)?;
        chat_upload::Entity::find()
            .filter(chat_upload::Column::WorkspaceId.eq(workspace_id))
            .filter(chat_upload::Column::StoredName.eq(stored_name))
            .one(&self.state.db)
            .await
            .context("failed to read archive")?
            .ok_or_else(|| ChatFileError::NotFound.into())
    }
}

/// Deletes uploads older than the TTL (the sweeper's pass).
pub async fn expire(state: &Platform) -> Result<(), sea_orm::DbErr> {
    let ttl = chrono::TimeDelta::from_std(state.settings.runtime.upload_ttl)
        .unwrap_or(chrono::TimeDelta::MAX);
    chat_upload::Entity::delete_many()
        .filter(chat_upload::Column::CreatedAt.lt(store::now() - ttl))
        .exec(&state.db)
        .await?;
    Ok(())
}

fn download_stream(file: chat_upload::Model) -> DownloadStream {
    let header = pb::DownloadPart {
        part: Some(download_part::Part::Header(pb::DownloadHeader {
            content_type: content_type(&file.name)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            name: file.name,
            size: file.size,
        })),
    };
    let chunks: Vec<Result<pb::DownloadPart, Status>> = std::iter::once(Ok(header))
        .chain(file.content.chunks(DOWNLOAD_CHUNK).map(|chunk| {
            Ok(pb::DownloadPart {
                part: Some(download_part::Part::Data(chunk.to_vec())),
            })
        }))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// The stored name a download path names, after the reference's path checks; `None` for a
/// valid path that is not an upload (nothing else is reachable).
fn upload_name(path: &str) -> Result<Option<&str>, ChatFileError> {
    if path.is_empty() {
        return Err(ChatFileError::PathRequired);
    }
    if !path.starts_with('/') {
        return Err(ChatFileError::PathNotAbsolute);
    }
    let under_root = DOWNLOAD_ROOTS.iter().any(|root| {
        path == *root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    });
    if !under_root {
        return Err(ChatFileError::PathOutsideRoots);
    }
    let clean = path[1..]
        .split('/')
        .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if !clean || path.contains("..") {
        return Err(ChatFileError::InvalidPath);
    }
    Ok(path
        .strip_prefix(UPLOAD_DIR)
        .filter(|name| !name.contains('/')))
}

/// The reference's file-name rules: the last path element, spaces and anything outside
/// `[A-Za-z0-9._-]` as `_`, at most 100 bytes keeping a short extension, never empty, `.` or
/// `..`.
pub fn sanitize(name: &str) -> String {
    let base = name.trim_end_matches('/');
    let base = base.rsplit('/').next().unwrap_or_default();
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() > MAX_NAME_BYTES {
        let extension = clean
            .rfind('.')
            .map(|dot| clean[dot..].to_owned())
            .filter(|extension| extension.len() <= MAX_KEPT_EXTENSION_BYTES)
            .unwrap_or_default();
        clean.truncate(MAX_NAME_BYTES - extension.len());
        clean.push_str(&extension);
    }
    match clean.as_str() {
        "" | "." | ".." => "file".to_owned(),
        _ => clean,
    }
}

/// The content type of a file name's extension, for the common kinds a chat carries.
pub fn content_type(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "py" => "text/x-python; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "ts" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_like_the_reference() {
        let cases = [
            ("../../etc/passwd", "passwd"),
            ("weird;$name`.txt", "weird__name_.txt"),
            ("my report.pdf", "my_report.pdf"),
            ("..", "file"),
            ("", "file"),
            ("dir/", "dir"),
            ("été.md", "_t_.md"),
        ];
        for (name, expected) in cases {
            assert_eq!(sanitize(name), expected, "{name}");
        }
        let long = format!("{}.tar.gz", "a".repeat(150));
        let cut = sanitize(&long);
        assert_eq!(cut.len(), 100);
        assert!(cut.ends_with("a.gz"), "{cut}");
    }

    #[test]
    fn download_paths_are_checked_in_the_reference_order() {
        let cases = [
            ("", Err(ChatFileError::PathRequired)),
            ("workspace/x", Err(ChatFileError::PathNotAbsolute)),
            ("/etc/passwd", Err(ChatFileError::PathOutsideRoots)),
            ("/workspaces/x", Err(ChatFileError::PathOutsideRoots)),
            ("/workspace//x", Err(ChatFileError::InvalidPath)),
            ("/workspace/a/../b", Err(ChatFileError::InvalidPath)),
            ("/configs/.auth_token", Ok(None)),
            (
                "/workspace/.molecule/chat-uploads/ab-c.txt",
                Ok(Some("ab-c.txt")),
            ),
            ("/workspace/.molecule/chat-uploads/a/b", Ok(None)),
        ];
        for (path, expected) in cases {
            assert_eq!(upload_name(path), expected, "{path}");
        }
    }
}

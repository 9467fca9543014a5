//! The Plugins gRPC service (docs/workspaces.md §5): the catalogue of the plugins dir, downloads as
//! one gzip tar built in memory before the first byte goes out, and the install record of external
//! agents (open question O4). Filesystem work runs on blocking threads; nothing here serves a path
//! outside a plugin's own tree.

pub mod archive;
mod error;
pub mod source;

use std::pin::Pin;

use futures::Stream;
use sea_orm::{ActiveValue::Set, EntityTrait, sea_query::OnConflict};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::warn;

use self::{
    archive::PackError,
    source::{SCHEMES, Source},
};

pub use self::error::{FetchFailure, PluginError};
use crate::{
    domain::validate,
    error::{ApiResult, RpcResult, reply},
    pb,
    state::Platform,
    store::{self, DbContext, entities::workspace_plugin},
};

/// Archive bytes per streamed message.
const CHUNK_BYTES: usize = 64 * 1024;

pub struct PluginsService {
    state: Platform,
}

impl PluginsService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::PluginChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::plugins_server::Plugins for PluginsService {
    async fn list_plugins(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> RpcResult<pb::ListPluginsResponse> {
        Ok(Response::new(self.list(&request.get_ref().runtime).await))
    }

    async fn list_sources(
        &self,
        _request: Request<pb::ListSourcesRequest>,
    ) -> RpcResult<pb::ListSourcesResponse> {
        Ok(Response::new(pb::ListSourcesResponse {
            schemes: SCHEMES.map(str::to_owned).to_vec(),
        }))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        request: Request<pb::DownloadPluginRequest>,
    ) -> RpcResult<Self::DownloadStream> {
        let (header, bytes) = self
            .download(request.metadata(), request.get_ref())
            .await
            .map_err(Status::from)?;
        let chunks = std::iter::once(pb::plugin_chunk::Part::Header(header)).chain(
            bytes
                .chunks(CHUNK_BYTES)
                .map(|chunk| pb::plugin_chunk::Part::Data(chunk.to_vec()))
                .collect::<Vec<_>>(),
        );
        let stream =
            futures::stream::iter(chunks.map(|part| Ok(pb::PluginChunk { part: Some(part) })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn record_install(
        &self,
        request: Request<pb::RecordInstallRequest>,
    ) -> RpcResult<pb::RecordInstallResponse> {
        reply(
            self.record_install(request.metadata(), request.get_ref())
                .await,
        )
    }
}

fn list(items: Option<Vec<String>>) -> Option<pb::StringList> {
    items.map(|items| pb::StringList { items })
}

/// `-` and `_` are the same character in runtime names.
fn same_runtime(a: &str, b: &str) -> bool {
    a.replace('-', "_") == b.replace('-', "_")
}

impl PluginsService {
    async fn list(&self, runtime: &str) -> pb::ListPluginsResponse {
        let dir = self.state.settings.plugins.dir.clone();
        let catalogue = tokio::task::spawn_blocking(move || archive::catalogue(&dir))
            .await
            .unwrap_or_default();
        let plugins = catalogue
            .into_iter()
            .filter(|(_, manifest)| {
                runtime.is_empty()
                    || manifest.runtimes.as_ref().is_none_or(|runtimes| {
                        runtimes.is_empty() || runtimes.iter().any(|r| same_runtime(r, runtime))
                    })
            })
            .map(|(dir_name, manifest)| pb::PluginInfo {
                name: manifest.name.filter(|n| !n.is_empty()).unwrap_or(dir_name),
                version: manifest.version.unwrap_or_default(),
                description: manifest.description.unwrap_or_default(),
                author: manifest.author.unwrap_or_default(),
                tags: list(manifest.tags),
                skills: list(manifest.skills),
                runtimes: list(manifest.runtimes),
            })
            .collect();
        pb::ListPluginsResponse { plugins }
    }

    /// The org allowlist, applied to downloads and installs alike.
    fn check_allowed(&self, name: &str) -> ApiResult<()> {
        let allowlist = &self.state.settings.plugins.allowlist;
        if allowlist.is_empty() || allowlist.iter().any(|allowed| allowed == name) {
            Ok(())
        } else {
            Err(PluginError::NotAllowed {
                name: name.to_owned(),
            }
            .into())
        }
    }

    async fn download(
        &self,
        metadata: &MetadataMap,
        request: &pb::DownloadPluginRequest,
    ) -> ApiResult<(pb::PluginArchiveHeader, Vec<u8>)> {
        if request.workspace_id.is_empty() {
            self.state.auth.any_credential(metadata).await?;
        } else {
            let id = validate::workspace_id(&request.workspace_id)?;
            self.state.auth.own_token(metadata, &id).await?;
            store::live_workspace(&self.state.db, &id).await?;
        }
        let name = request.name.as_str();
        if !source::valid_requested_name(name) {
            return Err(PluginError::InvalidName.into());
        }
        let raw = if request.source.is_empty() {
            format!("local://{name}")
        } else {
            request.source.clone()
        };
        let settings = &self.state.settings.plugins;
        let source = Source::parse(&raw, settings.allow_unpinned)?;
        let tree = source
            .fetch(&settings.dir, settings.fetch_timeout, &raw)
            .await?;
        let resolved = source.plugin_name();
        if resolved != name {
            return Err(PluginError::NameMismatch {
                resolved: resolved.to_owned(),
                requested: name.to_owned(),
            }
            .into());
        }
        self.check_allowed(name)?;
        let max_bytes = settings.max_dir_bytes;
        let packed = tokio::task::spawn_blocking(move || {
            let packed = archive::pack(&tree.path, max_bytes);
            drop(tree);
            packed
        })
        .await
        .map_err(|_| PluginError::DownloadFailed)?;
        let archive = match packed {
            Ok(archive) => archive,
            Err(PackError::TooLarge) => {
                return Err(PluginError::TooLarge { source: raw }.into());
            }
            Err(PackError::Io(err)) => {
                warn!(plugin = name, error = %err, "plugin packing failed");
                return Err(PluginError::PackFailed {
                    name: name.to_owned(),
                }
                .into());
            }
        };
        let header = pb::PluginArchiveHeader {
            name: name.to_owned(),
            source: source.canonical(),
            sha256: archive.sha256,
            size: archive.bytes.len() as u64,
        };
        Ok((header, archive.bytes))
    }

    /// O4's default: an external agent installs on its own side and the platform records it.
    async fn record_install(
        &self,
        metadata: &MetadataMap,
        request: &pb::RecordInstallRequest,
    ) -> ApiResult<pb::RecordInstallResponse> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        let row = store::live_workspace(&self.state.db, &id).await?;
        if request.source.is_empty() {
            return Err(PluginError::InvalidSource.into());
        }
        let source = Source::parse(&request.source, true)?;
        let name = source.plugin_name().to_owned();
        self.check_allowed(&name)?;
        if row.runtime != "external" {
            return Err(PluginError::ContainerNotRunning.into());
        }
        let canonical = source.canonical();
        workspace_plugin::Entity::insert(workspace_plugin::ActiveModel {
            workspace_id: Set(id),
            plugin: Set(name.clone()),
            source: Set(canonical.clone()),
            installed_at: Set(store::now()),
        })
        .on_conflict(
            OnConflict::columns([
                workspace_plugin::Column::WorkspaceId,
                workspace_plugin::Column::Plugin,
            ])
            .update_columns([
                workspace_plugin::Column::Source,
                workspace_plugin::Column::InstalledAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(&self.state.db)
        .await
        .context("failed to record plugin install")?;
        Ok(pb::RecordInstallResponse {
            plugin: name,
            source: canonical,
        })
    }
}

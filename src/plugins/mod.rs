//! The Plugins gRPC service (docs/workspaces.md §5, docs/operations.md §6): the catalogue of the
//! plugins dir, downloads as one gzip tar built in memory before the first byte goes out, the
//! install records of external agents, and each org's allowlist. Filesystem work runs on blocking threads; nothing here serves a path
//! outside a plugin's own tree.

pub mod allowlist;
pub mod archive;
mod error;
mod installed;
pub mod source;

use std::pin::Pin;

use futures::Stream;
use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait, sea_query::OnConflict};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::warn;

use self::{
    archive::PackError,
    source::{SCHEMES, Source},
};

pub use self::error::{FetchFailure, PluginError};
use crate::{
    audit::Action,
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

    async fn list_installed(
        &self,
        request: Request<pb::WorkspacePluginsRequest>,
    ) -> RpcResult<pb::InstalledPlugins> {
        let workspace_id = &request.get_ref().workspace_id;
        reply(self.list_installed(request.metadata(), workspace_id).await)
    }

    async fn list_available(
        &self,
        request: Request<pb::WorkspacePluginsRequest>,
    ) -> RpcResult<pb::ListPluginsResponse> {
        let workspace_id = &request.get_ref().workspace_id;
        reply(self.list_available(request.metadata(), workspace_id).await)
    }

    async fn check_compatibility(
        &self,
        request: Request<pb::CompatibilityRequest>,
    ) -> RpcResult<pb::CompatibilityReport> {
        reply(
            self.check_compatibility(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn uninstall(
        &self,
        request: Request<pb::UninstallRequest>,
    ) -> RpcResult<pb::UninstallResponse> {
        reply(self.uninstall(request.metadata(), request.get_ref()).await)
    }

    async fn get_allowlist(
        &self,
        request: Request<pb::AllowlistRequest>,
    ) -> RpcResult<pb::Allowlist> {
        reply(
            self.get_allowlist(request.metadata(), request.get_ref())
                .await,
        )
    }

    async fn put_allowlist(
        &self,
        request: Request<pb::PutAllowlistRequest>,
    ) -> RpcResult<pb::Allowlist> {
        reply(
            self.put_allowlist(request.metadata(), request.get_ref())
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

/// Whether a plugin declaring `info.runtimes` runs on `runtime`: no declaration means any.
fn supports(info: &pb::PluginInfo, runtime: &str) -> bool {
    info.runtimes.as_ref().is_none_or(|runtimes| {
        runtimes.items.is_empty() || runtimes.items.iter().any(|r| same_runtime(r, runtime))
    })
}

impl PluginsService {
    /// Every plugin in the plugins dir, by name.
    async fn catalogue(&self) -> Vec<pb::PluginInfo> {
        let dir = self.state.settings.plugins.dir.clone();
        let catalogue = tokio::task::spawn_blocking(move || archive::catalogue(&dir))
            .await
            .unwrap_or_default();
        catalogue
            .into_iter()
            .map(|(dir_name, manifest)| pb::PluginInfo {
                name: manifest.name.filter(|n| !n.is_empty()).unwrap_or(dir_name),
                version: manifest.version.unwrap_or_default(),
                description: manifest.description.unwrap_or_default(),
                author: manifest.author.unwrap_or_default(),
                tags: list(manifest.tags),
                skills: list(manifest.skills),
                runtimes: list(manifest.runtimes),
            })
            .collect()
    }

    async fn list(&self, runtime: &str) -> pb::ListPluginsResponse {
        let plugins = self
            .catalogue()
            .await
            .into_iter()
            .filter(|info| runtime.is_empty() || supports(info, runtime))
            .collect();
        pb::ListPluginsResponse { plugins }
    }

    /// The allowlist of `workspace`'s org (the deployment's default for an org-level download),
    /// applied to downloads and installs alike.
    async fn check_allowed(&self, workspace: Option<&str>, name: &str) -> ApiResult<()> {
        let allowed = match workspace {
            Some(workspace) => allowlist::allows(&self.state, workspace, name)
                .await
                .context("failed to read the plugin allowlist")?,
            None => allowlist::default_allows(&self.state, name),
        };
        if allowed {
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
        let workspace = if request.workspace_id.is_empty() {
            self.state.auth.any_credential(metadata).await?;
            None
        } else {
            let id = validate::workspace_id(&request.workspace_id)?;
            self.state.auth.own_token(metadata, &id).await?;
            store::live_workspace(&self.state.db, &id).await?;
            Some(id)
        };
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
        self.check_allowed(workspace.as_deref(), name).await?;
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
        let principal = self.state.auth.workspace(metadata, &id).await?;
        let row = store::live_workspace(&self.state.db, &id).await?;
        if request.source.is_empty() {
            return Err(PluginError::InvalidSource.into());
        }
        let source = Source::parse(&request.source, true)?;
        let name = source.plugin_name().to_owned();
        self.check_allowed(Some(&id), &name).await?;
        if row.runtime != "external" {
            return Err(PluginError::ContainerNotRunning.into());
        }
        let canonical = source.canonical();
        let version = match &source {
            Source::Local { .. } => self
                .catalogue()
                .await
                .into_iter()
                .find(|info| info.name == name)
                .map(|info| info.version)
                .filter(|version| !version.is_empty()),
            Source::Github { reference, .. } => reference.clone(),
        };
        let failed = "failed to record plugin install";
        let txn = self.state.db.begin().await.context(failed)?;
        workspace_plugin::Entity::insert(workspace_plugin::ActiveModel {
            workspace_id: Set(id.clone()),
            plugin: Set(name.clone()),
            source: Set(canonical.clone()),
            version: Set(version.clone()),
            installed_at: Set(store::now()),
        })
        .on_conflict(
            OnConflict::columns([
                workspace_plugin::Column::WorkspaceId,
                workspace_plugin::Column::Plugin,
            ])
            .update_columns([
                workspace_plugin::Column::Source,
                workspace_plugin::Column::Version,
                workspace_plugin::Column::InstalledAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .context(failed)?;
        let action = Action {
            operation: "plugin.install",
            workspace_id: Some(&id),
            target: Some(name.clone()),
            details: serde_json::json!({"source": canonical, "version": version}),
        };
        self.state
            .audit
            .append(&txn, &principal, metadata, action)
            .await
            .context(failed)?;
        txn.commit().await.context(failed)?;
        Ok(pb::RecordInstallResponse {
            plugin: name,
            source: canonical,
        })
    }
}

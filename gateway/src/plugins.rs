//! Plugin routes (docs/workspaces.md §5): the open catalogue and sources, the downloads (org-level
//! and the SDK's per-workspace form), and the install record. A download is relayed only once the
//! whole archive has arrived, so its headers (length, digest) are exact.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway, error::ErrorBody, error::RestError, forward::Forwarded, json::parse_body_capped, pb,
    workspaces::render,
};

#[derive(Serialize, ToSchema)]
pub(crate) struct PluginItem {
    name: String,
    version: String,
    description: String,
    author: String,
    tags: Option<Vec<String>>,
    skills: Option<Vec<String>>,
    runtimes: Option<Vec<String>>,
}

impl From<pb::PluginInfo> for PluginItem {
    fn from(plugin: pb::PluginInfo) -> Self {
        let items = |list: Option<pb::StringList>| list.map(|list| list.items);
        Self {
            name: plugin.name,
            version: plugin.version,
            description: plugin.description,
            author: plugin.author,
            tags: items(plugin.tags),
            skills: items(plugin.skills),
            runtimes: items(plugin.runtimes),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RuntimeFilter {
    /// Keep plugins that declare no runtimes or this one.
    runtime: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SourceQuery {
    /// `<scheme>://<spec>`; defaults to `local://<name>`.
    #[param(pattern = "^(local|github)://.+$")]
    source: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct InstallBody {
    /// `local://<name>` or `github://<owner>/<repo>#<tag or commit>`.
    #[serde(default)]
    #[schema(required, pattern = "^(local|github)://.+$")]
    source: String,
}

#[utoipa::path(get, path = "/plugins", tag = "plugins", params(RuntimeFilter),
    responses((status = 200, body = [PluginItem])))]
pub(crate) async fn list_plugins(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Query(filter): Query<RuntimeFilter>,
) -> Response {
    let request = pb::ListPluginsRequest {
        runtime: filter.runtime.unwrap_or_default(),
    };
    let result = gateway
        .plugins
        .clone()
        .list_plugins(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |reply| {
        reply
            .plugins
            .into_iter()
            .map(PluginItem::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/plugins/sources", tag = "plugins",
    responses((status = 200, body = Object, example = json!({"schemes": ["github", "local"]}))))]
pub(crate) async fn list_sources(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .plugins
        .clone()
        .list_sources(forwarded.request(pb::ListSourcesRequest {}))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"schemes": reply.schemes}),
    )
}

#[utoipa::path(get, path = "/plugins/{name}/download", tag = "plugins",
    params(("name" = String, Path, pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,127}$", description = "plugin name"), SourceQuery),
    responses((status = 200, description = "the plugin as a gzip-compressed tar", content_type = "application/gzip"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn download(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(name): Path<String>,
    Query(query): Query<SourceQuery>,
) -> Response {
    gateway
        .download(&forwarded, String::new(), name, query)
        .await
}

#[utoipa::path(get, path = "/workspaces/{id}/plugins/{name}/download", tag = "plugins",
    params(("id" = String, Path, format = Uuid, description = "workspace id"), ("name" = String, Path, pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,127}$", description = "plugin name"), SourceQuery),
    responses((status = 200, description = "the plugin as a gzip-compressed tar", content_type = "application/gzip"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn workspace_download(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<SourceQuery>,
) -> Response {
    gateway.download(&forwarded, id, name, query).await
}

impl Gateway {
    async fn download(
        &self,
        forwarded: &Forwarded,
        workspace_id: String,
        name: String,
        query: SourceQuery,
    ) -> Response {
        let request = pb::DownloadPluginRequest {
            workspace_id,
            name,
            source: query.source.unwrap_or_default(),
        };
        let mut stream = match self
            .plugins
            .clone()
            .download(forwarded.request(request))
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) => return RestError::from(status).into_response(),
        };
        let mut header = None;
        let mut bytes = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => match chunk.part {
                    Some(pb::plugin_chunk::Part::Header(first)) => header = Some(first),
                    Some(pb::plugin_chunk::Part::Data(data)) => bytes.extend_from_slice(&data),
                    None => {}
                },
                Ok(None) => break,
                Err(status) => return RestError::from(status).into_response(),
            }
        }
        let Some(header) = header else {
            return RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin download failed")
                .into_response();
        };
        let value = |text: &str| {
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    value(&format!("attachment; filename=\"{}.tar.gz\"", header.name)),
                ),
                (
                    header::HeaderName::from_static("x-plugin-name"),
                    value(&header.name),
                ),
                (
                    header::HeaderName::from_static("x-plugin-source"),
                    value(&header.source),
                ),
                (
                    header::HeaderName::from_static("x-plugin-sha256"),
                    value(&header.sha256),
                ),
            ],
            Body::from(bytes),
        )
            .into_response()
    }
}

#[utoipa::path(post, path = "/workspaces/{id}/plugins", tag = "plugins",
    params(("id" = String, Path, format = Uuid, description = "workspace id")),
    request_body = InstallBody,
    responses((status = 200, body = Object, example = json!({"status": "installed", "plugin": "demo", "source": "local://demo"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn record_install(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let limit = gateway.edge.config.plugin_install_body_max_bytes;
    let body: InstallBody = match parse_body_capped(body, limit).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, Some(&id), err, "invalid request body")
                .await;
        }
    };
    let request = pb::RecordInstallRequest {
        workspace_id: id,
        source: body.source,
    };
    let result = gateway
        .plugins
        .clone()
        .record_install(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": "installed", "plugin": reply.plugin, "source": reply.source}),
    )
}

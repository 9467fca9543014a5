//! Plugin management routes (docs/operations.md §6), in the reference's shapes: a workspace's
//! installed plugins, what it may install, which installed plugins a runtime supports,
//! uninstalling, and each org's allowlist.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{parse_body, timestamp_opt},
    pb,
    plugins::PluginItem,
    workspaces::render,
};

/// One installed plugin: its catalogue entry with the version recorded at install.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstalledItem {
    #[serde(flatten)]
    plugin: PluginItem,
    /// The resolved `<scheme>://<spec>` it was installed from.
    source: String,
    installed_at: Option<String>,
    /// Whether it supports the workspace's runtime; absent for an external agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_on_runtime: Option<bool>,
}

/// `PUT /orgs/{id}/plugins/allowlist`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PutAllowlistBody {
    /// Plugin names; empty allows every plugin.
    #[serde(default)]
    #[schema(max_items = 1000, inline, value_type = Vec<PluginName>)]
    plugins: Vec<String>,
    /// Accepted for the reference's clients and ignored: the entries name the credential.
    #[allow(dead_code)]
    enabled_by: Option<String>,
}

/// A plugin's name: no slash, backslash or `..`, at most 128 characters.
#[derive(ToSchema)]
#[schema(min_length = 1, max_length = 128, pattern = r"^(?!.*\.\.)[^/\\]+$")]
#[allow(dead_code)]
pub(crate) struct PluginName(String);

/// `?runtime=` of the compatibility check: required.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TargetRuntime {
    /// The runtime to check the installed plugins against.
    #[param(required = true, pattern = r"\S")]
    runtime: Option<String>,
}

/// An org's allowlist.
#[derive(Serialize, ToSchema)]
pub(crate) struct AllowlistView {
    org_id: String,
    plugins: Vec<AllowedEntry>,
    /// No list: every plugin is allowed.
    allow_all: bool,
    /// `org` once the org set its own list, else `default` (`MOLECULE_PLUGIN_ALLOWLIST`).
    source: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AllowedEntry {
    plugin_name: String,
    /// The credential that set it, or `MOLECULE_PLUGIN_ALLOWLIST` for the default.
    enabled_by: String,
    /// Null for the default.
    enabled_at: Option<String>,
}

impl From<pb::Allowlist> for AllowlistView {
    fn from(list: pb::Allowlist) -> Self {
        Self {
            org_id: list.org_id,
            plugins: list
                .plugins
                .into_iter()
                .map(|entry| AllowedEntry {
                    enabled_at: timestamp_opt(entry.enabled_at.as_ref()),
                    plugin_name: entry.plugin_name,
                    enabled_by: entry.enabled_by,
                })
                .collect(),
            allow_all: list.allow_all,
            source: list.source,
        }
    }
}

const ID: &str = "workspace id";

#[utoipa::path(get, path = "/workspaces/{id}/plugins", tag = "plugins",
    description = "The plugins the workspace's agent recorded installing, by name, with the versions recorded.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = [InstalledItem]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_installed(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspacePluginsRequest { workspace_id: id };
    let result = gateway
        .plugins
        .clone()
        .list_installed(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.plugins
            .into_iter()
            .map(|installed| InstalledItem {
                plugin: PluginItem::from(installed.info.unwrap_or_default()),
                source: installed.source,
                installed_at: timestamp_opt(installed.installed_at.as_ref()),
                supported_on_runtime: installed.supported_on_runtime,
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/plugins/available", tag = "plugins",
    description = "The catalogue the workspace may install from: plugins for its runtime (any, for an external agent) that its org allows.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = [PluginItem]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_available(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::WorkspacePluginsRequest { workspace_id: id };
    let result = gateway
        .plugins
        .clone()
        .list_available(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        list.plugins
            .into_iter()
            .map(PluginItem::from)
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(get, path = "/workspaces/{id}/plugins/compatibility", tag = "plugins",
    description = "Which installed plugins support a runtime, before the workspace moves to it.",
    params(("id" = String, Path, format = Uuid, description = ID), TargetRuntime),
    responses((status = 200, body = Object, example = json!({"target_runtime": "claude-code", "compatible": [], "incompatible": [], "all_compatible": true})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn compatibility(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    Query(target): Query<TargetRuntime>,
) -> Response {
    let request = pb::CompatibilityRequest {
        workspace_id: id,
        runtime: target.runtime.unwrap_or_default(),
    };
    let result = gateway
        .plugins
        .clone()
        .check_compatibility(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |report| {
        let items =
            |list: Vec<pb::PluginInfo>| list.into_iter().map(PluginItem::from).collect::<Vec<_>>();
        json!({
            "target_runtime": report.target_runtime,
            "compatible": items(report.compatible),
            "incompatible": items(report.incompatible),
            "all_compatible": report.all_compatible,
        })
    })
}

#[utoipa::path(delete, path = "/workspaces/{id}/plugins/{name}", tag = "plugins",
    description = "Forgets an install record; the agent removes the files on its side.",
    params(("id" = String, Path, format = Uuid, description = ID), ("name" = String, Path, description = "plugin name")),
    responses((status = 200, body = Object, example = json!({"status": "uninstalled", "plugin": "demo"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn uninstall(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let request = pb::UninstallRequest {
        workspace_id: id,
        name,
    };
    let result = gateway
        .plugins
        .clone()
        .uninstall(forwarded.request(request))
        .await;
    render(
        StatusCode::OK,
        result,
        |reply| json!({"status": "uninstalled", "plugin": reply.plugin}),
    )
}

#[utoipa::path(get, path = "/orgs/{id}/plugins/allowlist", tag = "plugins",
    description = "An org's plugin allowlist (an org is a root workspace). Without a list of its own, the deployment's default (`MOLECULE_PLUGIN_ALLOWLIST`).",
    params(("id" = String, Path, format = Uuid, description = "org (root workspace) id")),
    responses((status = 200, body = AllowlistView),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_allowlist(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(org_id): Path<String>,
) -> Response {
    let request = pb::AllowlistRequest { org_id };
    let result = gateway
        .plugins
        .clone()
        .get_allowlist(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, AllowlistView::from)
}

#[utoipa::path(put, path = "/orgs/{id}/plugins/allowlist", tag = "plugins",
    description = "Replaces the org's allowlist; an empty list allows every plugin. Answers the names, as the reference does.",
    params(("id" = String, Path, format = Uuid, description = "org (root workspace) id")),
    request_body = PutAllowlistBody,
    responses((status = 200, body = Object, example = json!({"org_id": "…", "plugins": ["demo"], "allow_all": false, "source": "org"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_allowlist(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(org_id): Path<String>,
    body: Body,
) -> Response {
    let body: PutAllowlistBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid request body")
                .await;
        }
    };
    let request = pb::PutAllowlistRequest {
        org_id,
        plugins: body.plugins,
    };
    let result = gateway
        .plugins
        .clone()
        .put_allowlist(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |list| {
        json!({
            "org_id": list.org_id,
            "plugins": list.plugins.into_iter().map(|entry| entry.plugin_name).collect::<Vec<_>>(),
            "allow_all": list.allow_all,
            "source": list.source,
        })
    })
}

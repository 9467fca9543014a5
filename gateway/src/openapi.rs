//! The route table and its OpenAPI document, generated from the handlers themselves (utoipa),
//! so the published description cannot drift from what is served.

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use serde_json::json;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    Gateway, a2a, approvals, audit, budget, bundles, chat_files, checkpoints, console, delegations,
    edge, events, github, instructions, key_values, memories, plugin_management, plugins, registry,
    schedules, secrets, shared_context, templates, tokens, workspace_config, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Molecule control plane", description = "REST surface of the Molecule control plane. \
        Errors are `{\"error\": \"…\"}` with the status listed per operation. No string may contain \
        U+0000 (400, naming the field). Empty query values mean the parameter is absent."),
    tags(
        (name = "workspaces", description = "The workspace resource and its lifecycle"),
        (name = "tokens", description = "Workspace tokens and org API keys"),
        (name = "events", description = "The structure event log and its live stream"),
        (name = "registry", description = "Agents joining, staying live and finding peers"),
        (name = "activity", description = "Activity logs and agent messages"),
        (name = "secrets", description = "Workspace and global secrets, encrypted at rest"),
        (name = "plugins", description = "The plugin catalogue, downloads and install records"),
        (name = "bundles", description = "Workspace trees exported and imported as documents"),
        (name = "a2a", description = "The agent-to-agent proxy"),
        (name = "delegations", description = "Tasks handed to peers, and their outcomes"),
        (name = "memories", description = "What workspaces remember, searched by full text"),
        (name = "approvals", description = "Actions a workspace may take only once a human agrees"),
        (name = "instructions", description = "Platform rules prepended to every runtime's prompt"),
        (name = "chat-files", description = "Files attached to chat messages, stored by the platform"),
        (name = "checkpoints", description = "The last step each workspace workflow completed"),
        (name = "shared-context", description = "Files a workspace publishes for its descendants"),
        (name = "console", description = "Operator console sessions and the saved canvas viewport"),
        (name = "memory", description = "A workspace's key-value memory: versions, compare-and-set, expiry"),
        (name = "schedules", description = "Prompts sent to a workspace on a cron, fired once across replicas"),
        (name = "templates", description = "Org templates imported as whole workspace trees, and workspace templates"),
        (name = "audit", description = "Who changed what: hash-chained, append-only, verified on every read"),
        (name = "meta", description = "Health and this document"),
    )
)]
struct ApiDoc;

#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, body = Object, example = json!({"status": "ok"}))))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) fn router() -> Router<Gateway> {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(crate::readiness::readyz))
        .routes(routes!(crate::readiness::liveness))
        .routes(routes!(
            workspaces::list_workspaces,
            workspaces::create_workspace
        ))
        .routes(routes!(
            workspaces::get_workspace,
            workspaces::patch_workspace,
            workspaces::delete_workspace
        ))
        .routes(routes!(workspaces::workspace_state))
        .routes(routes!(workspaces::pause_workspace))
        .routes(routes!(workspaces::resume_workspace))
        .routes(routes!(workspaces::restart_workspace))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::test_token))
        .routes(routes!(tokens::list_org_tokens, tokens::create_org_token))
        .routes(routes!(tokens::revoke_org_token))
        .routes(routes!(events::list_events))
        .routes(routes!(events::list_workspace_events))
        .routes(routes!(events::websocket))
        .routes(routes!(events::stream))
        .routes(routes!(registry::register))
        .routes(routes!(registry::heartbeat))
        .routes(routes!(registry::update_card))
        .routes(routes!(registry::discover))
        .routes(routes!(registry::peers))
        .routes(routes!(registry::check_access))
        .routes(routes!(registry::list_activity, registry::log_activity))
        .routes(routes!(registry::notify))
        .routes(routes!(registry::session_search))
        .routes(routes!(secrets::list_secrets, secrets::set_secret))
        .routes(routes!(secrets::secret_values))
        .routes(routes!(secrets::delete_secret))
        .routes(routes!(secrets::get_model, secrets::set_model))
        .routes(routes!(
            secrets::list_global_secrets,
            secrets::set_global_secret
        ))
        .routes(routes!(secrets::delete_global_secret))
        .routes(routes!(
            secrets::legacy_list_global_secrets,
            secrets::legacy_set_global_secret
        ))
        .routes(routes!(secrets::legacy_delete_global_secret))
        .routes(routes!(secrets::rotate_key))
        .routes(routes!(plugins::list_plugins))
        .routes(routes!(plugins::list_sources))
        .routes(routes!(plugins::download))
        .routes(routes!(plugins::workspace_download))
        .routes(routes!(
            plugin_management::list_installed,
            plugins::record_install
        ))
        .routes(routes!(plugin_management::list_available))
        .routes(routes!(plugin_management::compatibility))
        .routes(routes!(plugin_management::uninstall))
        .routes(routes!(
            plugin_management::get_allowlist,
            plugin_management::put_allowlist
        ))
        .routes(routes!(bundles::export))
        .routes(routes!(bundles::import))
        .routes(routes!(a2a::proxy))
        .routes(routes!(a2a::drop_stale))
        .routes(routes!(a2a::token_usage))
        .routes(routes!(a2a::route))
        .routes(routes!(delegations::delegate))
        .routes(routes!(delegations::list))
        .routes(routes!(delegations::record))
        .routes(routes!(delegations::update))
        .routes(routes!(memories::search, memories::commit))
        .routes(routes!(memories::delete))
        .routes(routes!(memories::export))
        .routes(routes!(memories::import))
        .routes(routes!(approvals::list, approvals::create))
        .routes(routes!(approvals::get))
        .routes(routes!(approvals::decide))
        .routes(routes!(approvals::pending))
        .routes(routes!(instructions::resolve))
        .routes(routes!(instructions::list, instructions::create))
        .routes(routes!(instructions::update, instructions::delete))
        .routes(routes!(shared_context::get, shared_context::publish))
        .routes(routes!(chat_files::upload))
        .routes(routes!(chat_files::download))
        .routes(routes!(checkpoints::save))
        .routes(routes!(workspace_config::get, workspace_config::update))
        .routes(routes!(key_values::list, key_values::set))
        .routes(routes!(key_values::get, key_values::delete))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(schedules::update, schedules::delete))
        .routes(routes!(schedules::run))
        .routes(routes!(schedules::history))
        .routes(routes!(schedules::health))
        .routes(routes!(schedules::admin_health))
        .routes(routes!(audit::list))
        .routes(routes!(github::workspace_token))
        .routes(routes!(github::admin_token))
        .routes(routes!(templates::list_org))
        .routes(routes!(templates::import_org))
        .routes(routes!(templates::list))
        .routes(routes!(templates::import))
        .routes(routes!(budget::get, budget::update))
        .routes(routes!(budget::metrics))
        .routes(routes!(audit::list_org))
        .routes(routes!(checkpoints::latest))
        .routes(routes!(
            checkpoints::list_workflow,
            checkpoints::delete_workflow
        ))
        .routes(routes!(
            console::sign_in,
            console::current_session,
            console::sign_out
        ))
        .routes(routes!(console::get_viewport, console::save_viewport))
        .split_for_parts();
    let document = Arc::new(assert_uuid_formats(
        serde_json::to_value(finish(document)).expect("the document serializes"),
    ));
    router
        .route(
            "/openapi.json",
            get(move || async move { Json(document.as_ref().clone()) }),
        )
        .route("/", get(console::index))
        .route("/docs", get(console::docs))
        .route("/console/{asset}", get(console::asset))
        .route_layer(axum::middleware::from_fn(edge::tag_route))
        .fallback(edge::not_found)
}

/// JSON Schema treats `format` as a note, not a rule: every `"format": "uuid"` string also gets
/// the pattern the services enforce (`validate::parse_uuid`: canonical, any case), so a client's
/// validator and a fuzzer agree with the server about what an id is.
fn assert_uuid_formats(mut document: serde_json::Value) -> serde_json::Value {
    const UUID_PATTERN: &str =
        "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(fields) => {
                if fields.get("format").and_then(|f| f.as_str()) == Some("uuid") {
                    fields
                        .entry("pattern")
                        .or_insert_with(|| UUID_PATTERN.into());
                }
                fields.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut document);
    document
}

/// A path that names a resource answers 404 when there is none, and 400 when a workspace id in
/// it is not a UUID; routes declare their own answers, this adds those two where missing.
fn document_path_failures(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{
        Content, Ref, RefOr, ResponseBuilder,
        path::ParameterIn,
        schema::{KnownFormat, Schema, SchemaFormat},
    };
    let path_parameters: Vec<_> = operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|parameter| match parameter {
            RefOr::T(parameter) => Some(parameter),
            RefOr::Ref(_) => None,
        })
        .filter(|parameter| parameter.parameter_in == ParameterIn::Path)
        .collect();
    if path_parameters.is_empty() {
        return;
    }
    let takes_uuid = path_parameters.iter().any(|parameter| {
        matches!(&parameter.schema, Some(RefOr::T(Schema::Object(object)))
            if object.format == Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
    });
    let error = |reason: &str| {
        ResponseBuilder::new()
            .description(reason)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build()
    };
    let responses = &mut operation.responses.responses;
    if takes_uuid {
        responses
            .entry("400".to_owned())
            .or_insert_with(|| error("Bad Request").into());
    }
    responses
        .entry("404".to_owned())
        .or_insert_with(|| error("Not Found").into());
}

/// What the annotations leave to the whole document: every response described (by its status's
/// reason phrase where the route names none), operation ids unique (a repeated one is prefixed
/// with its tag, then given its method), and the bearer scheme every credential uses.
fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{
        RefOr,
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
    };
    let mut seen = std::collections::HashSet::new();
    for item in document.paths.paths.values_mut() {
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
            ("head", &mut item.head),
            ("options", &mut item.options),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let tag = operation
                .tags
                .as_ref()
                .and_then(|tags| tags.first())
                .cloned()
                .unwrap_or_default()
                .replace('-', "_");
            if let Some(id) = &mut operation.operation_id
                && !seen.insert(id.clone())
            {
                let candidates = [format!("{tag}_{id}"), format!("{tag}_{id}_{method}")];
                *id = candidates
                    .into_iter()
                    .chain((2..).map(|n| format!("{tag}_{id}_{method}_{n}")))
                    .find(|candidate| seen.insert(candidate.clone()))
                    .expect("an unused id");
            }
            document_path_failures(operation);
            for (status, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| http::StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("response")
                        .to_owned();
                }
            }
        }
    }
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    // Registration, probes and the console's sign-in take no bearer; everything else does.
    document.security = Some(vec![
        SecurityRequirement::default(),
        SecurityRequirement::new("bearer", Vec::<String>::new()),
    ]);
    document
}

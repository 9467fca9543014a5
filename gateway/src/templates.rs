//! Template routes (docs/operations.md §7), in the reference's shapes: the org templates and
//! their import, and the workspace templates and theirs. Operators only.

use std::collections::HashMap;

use axum::{
    Json,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{parse_body, raw},
    pb,
    workspaces::{ConnectionBody, render},
};

/// `POST /org/import`: one of `dir`, `template` or `yaml`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ImportOrgBody {
    /// A directory of `MOLECULE_TEMPLATES_DIR` holding `org.yaml`.
    dir: Option<String>,
    /// The document as a JSON object, in the org.yaml shape.
    #[schema(value_type = Option<Object>)]
    template: Option<Box<RawValue>>,
    /// The document as YAML text.
    yaml: Option<String>,
    /// Import although required global secrets are missing.
    #[serde(default)]
    force: bool,
}

/// A workspace an import created.
#[derive(Serialize, ToSchema)]
pub(crate) struct ImportedWorkspaceView {
    id: String,
    name: String,
    tier: i32,
    status: String,
    parent_id: Option<String>,
    /// How to connect its agent, while it awaits one.
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<ConnectionBody>,
}

/// `201` for a new tree; `200` with `created: false` for a key imported before.
#[derive(Serialize, ToSchema)]
pub(crate) struct ImportedOrg {
    org: String,
    import_key: String,
    created: bool,
    count: usize,
    workspaces: Vec<ImportedWorkspaceView>,
}

/// `POST /templates/import`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ImportTemplateBody {
    #[schema(min_length = 1, pattern = "[A-Za-z0-9]")]
    name: String,
    /// Relative path → content; at most 200 files. A config.yaml is written when absent.
    files: HashMap<String, String>,
}

#[utoipa::path(get, path = "/org/templates", tag = "templates",
    description = "The org templates in MOLECULE_TEMPLATES_DIR: each directory with an org.yaml.",
    responses((status = 200, body = [Object], example = json!([{"dir": "research-team", "name": "Research team", "description": "…", "workspaces": 5, "required_env": [], "recommended_env": []}])),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list_org(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .templates
        .clone()
        .list_org_templates(forwarded.request(pb::ListOrgTemplatesRequest {}))
        .await;
    render(StatusCode::OK, result, |list| {
        list.templates
            .into_iter()
            .map(|template| {
                json!({
                    "dir": template.dir,
                    "name": template.name,
                    "description": template.description,
                    "workspaces": template.workspaces,
                    "required_env": raw(Some(&template.required_env_json)),
                    "recommended_env": raw(Some(&template.recommended_env_json)),
                })
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(post, path = "/org/import", tag = "templates",
    description = "Creates a template's whole tree in one transaction: external workspaces awaiting their agents, with their connection instructions. The same import key again creates nothing (200, `created: false`).",
    request_body = ImportOrgBody,
    responses((status = 201, body = ImportedOrg), (status = 200, body = ImportedOrg),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn import_org(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    use pb::import_org_request::Document;
    let body: ImportOrgBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid request body")
                .await;
        }
    };
    let document = match (body.dir, body.template, body.yaml) {
        (Some(dir), _, _) if !dir.is_empty() => Some(Document::Dir(dir)),
        (_, Some(template), _) if template.get() != "null" => {
            Some(Document::TemplateJson(template.get().to_owned()))
        }
        (_, _, Some(yaml)) if !yaml.is_empty() => Some(Document::Yaml(yaml)),
        _ => None,
    };
    let request = pb::ImportOrgRequest {
        document,
        force: body.force,
        platform_url: forwarded.platform_url(),
    };
    let result = gateway
        .templates
        .clone()
        .import_org(forwarded.request(request))
        .await;
    match result {
        Ok(reply) => {
            let reply = reply.into_inner();
            let status = if reply.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let workspaces: Vec<ImportedWorkspaceView> = reply
                .workspaces
                .into_iter()
                .map(|w| ImportedWorkspaceView {
                    id: w.id,
                    name: w.name,
                    tier: w.tier,
                    status: w.status,
                    parent_id: w.parent_id,
                    connection: w.connection.map(ConnectionBody::from),
                })
                .collect();
            let body = ImportedOrg {
                org: reply.org,
                import_key: reply.import_key,
                created: reply.created,
                count: workspaces.len(),
                workspaces,
            };
            (status, Json(body)).into_response()
        }
        Err(status) => RestError::from(status).into_response(),
    }
}

#[utoipa::path(get, path = "/templates", tag = "templates",
    description = "Workspace templates: MOLECULE_TEMPLATES_DIR's (each directory with a config.yaml) and those imported.",
    responses((status = 200, body = [Object], example = json!([{"id": "researcher", "name": "Researcher", "description": "", "tier": 2, "runtime": "claude-code", "model": "sonnet", "skills": [], "skill_count": 0, "origin": "dir"}])),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn list(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .templates
        .clone()
        .list_workspace_templates(forwarded.request(pb::ListWorkspaceTemplatesRequest {}))
        .await;
    render(StatusCode::OK, result, |list| {
        list.templates
            .into_iter()
            .map(|template| {
                let mut entry = json!({
                    "id": template.id,
                    "name": template.name,
                    "description": template.description,
                    "tier": template.tier,
                    "runtime": template.runtime,
                    "model": template.model,
                    "skill_count": template.skills.len(),
                    "skills": template.skills,
                    "origin": template.origin,
                });
                if !template.required_env.is_empty() {
                    entry["required_env"] = Value::from(template.required_env);
                }
                entry
            })
            .collect::<Vec<_>>()
    })
}

#[utoipa::path(post, path = "/templates/import", tag = "templates",
    description = "Stores a workspace template (in the database: every replica sees it).",
    request_body = ImportTemplateBody,
    responses((status = 201, body = Object, example = json!({"status": "imported", "id": "researcher", "name": "Researcher"})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn import(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: ImportTemplateBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid request body")
                .await;
        }
    };
    let request = pb::ImportWorkspaceTemplateRequest {
        name: body.name,
        files: body.files.into_iter().collect(),
    };
    let result = gateway
        .templates
        .clone()
        .import_workspace_template(forwarded.request(request))
        .await;
    render(
        StatusCode::CREATED,
        result,
        |reply| json!({"status": "imported", "id": reply.id, "name": reply.name}),
    )
}

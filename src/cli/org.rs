//! `molecule org`: import an org template from a YAML file, or list the server's templates.

use serde_json::json;

use super::{CliError, Session, read_input, render};
use crate::{
    config::{OrgCommand, Output},
    pb,
};

pub(super) async fn run(session: &Session, command: OrgCommand) -> Result<(), CliError> {
    let mut client = pb::templates_client::TemplatesClient::new(session.channel());
    match command {
        OrgCommand::Import { file, force } => {
            let request = pb::ImportOrgRequest {
                document: Some(pb::import_org_request::Document::Yaml(read_input(&file)?)),
                force,
                // The connection instructions name the server as this operator reaches it.
                platform_url: session.url.clone(),
            };
            let imported = client
                .import_org(session.request(request))
                .await?
                .into_inner();
            match session.output {
                Output::Json => render::json_out(&json!({
                    "org": imported.org,
                    "import_key": imported.import_key,
                    "created": imported.created,
                    "count": imported.workspaces.len(),
                    "workspaces": imported.workspaces.iter().map(|w| json!({
                        "id": w.id, "name": w.name, "tier": w.tier, "status": w.status,
                        "parent_id": w.parent_id,
                        "registry_endpoint": w.connection.as_ref().map(|c| &c.registry_endpoint),
                    })).collect::<Vec<_>>(),
                }))?,
                Output::Table => {
                    let rows: Vec<_> = imported
                        .workspaces
                        .iter()
                        .map(|w| {
                            vec![
                                w.id.clone(),
                                w.name.clone(),
                                w.status.clone(),
                                w.parent_id.clone().unwrap_or_else(|| "-".to_owned()),
                            ]
                        })
                        .collect();
                    render::table(&["ID", "NAME", "STATUS", "PARENT"], &rows)?;
                    let verdict = if imported.created {
                        "imported"
                    } else {
                        "already imported: nothing new was created"
                    };
                    eprintln!("{} ({}): {verdict}", imported.org, imported.import_key);
                }
            }
        }
        OrgCommand::Templates => {
            let list = client
                .list_org_templates(session.request(pb::ListOrgTemplatesRequest {}))
                .await?
                .into_inner()
                .templates;
            match session.output {
                Output::Json => render::json_out(
                    &list
                        .iter()
                        .map(|t| json!({"dir": t.dir, "name": t.name, "description": t.description, "workspaces": t.workspaces}))
                        .collect(),
                )?,
                Output::Table => {
                    let rows: Vec<_> = list
                        .iter()
                        .map(|t| vec![t.dir.clone(), t.name.clone(), t.workspaces.to_string()])
                        .collect();
                    render::table(&["DIR", "NAME", "WORKSPACES"], &rows)?;
                }
            }
        }
    }
    Ok(())
}

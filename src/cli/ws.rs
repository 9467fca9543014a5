//! `molecule ws`: list (and watch), get, create, pause, resume, rm, and `config get|set`.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use serde_json::json;

use super::{
    CliError, Session, read_input,
    render::{self, WORKSPACE_HEADERS, done, workspace_json, workspace_row},
};
use crate::{
    config::{Output, WsCommand, WsConfigCommand},
    pb,
};

type Client = pb::workspaces_client::WorkspacesClient<tonic::transport::Channel>;

pub(super) async fn run(session: &Session, command: WsCommand) -> Result<(), CliError> {
    let mut client = Client::new(session.channel());
    match command {
        WsCommand::Ls { watch: false } => {
            let list = list(session, &mut client).await?;
            print_list(session.output, list.values())?;
        }
        WsCommand::Ls { watch: true } => watch(session, &mut client).await?,
        WsCommand::Get { id } => {
            let w = client
                .get_workspace(session.request(pb::GetWorkspaceRequest { id }))
                .await?
                .into_inner();
            match session.output {
                Output::Json => render::json_out(&workspace_json(&w))?,
                Output::Table => print_detail(&w)?,
            }
        }
        WsCommand::Create {
            name,
            role,
            parent,
            external,
            agent_url,
            runtime,
        } => {
            let request = pb::CreateWorkspaceRequest {
                name,
                role: role.unwrap_or_default(),
                runtime: runtime.unwrap_or_default(),
                external,
                url: agent_url.unwrap_or_default(),
                parent_id: parent,
                // The connection block names the server as this operator reaches it.
                platform_url: session.url.clone(),
                ..Default::default()
            };
            let created = client
                .create_workspace(session.request(request))
                .await?
                .into_inner();
            let mut value =
                json!({"id": created.id, "status": created.status, "external": created.external});
            if let Some(connection) = &created.connection {
                value["connection"] = json!({
                    "registry_endpoint": connection.registry_endpoint,
                    "heartbeat_endpoint": connection.heartbeat_endpoint,
                    "curl_register_template": connection.curl_register_template,
                });
            }
            match session.output {
                Output::Json => render::json_out(&value)?,
                Output::Table => println!("{}\t{}", created.id, created.status),
            }
        }
        WsCommand::Pause { id } => {
            let reply = client
                .pause_workspace(session.request(pb::PauseWorkspaceRequest { id }))
                .await?
                .into_inner();
            let value = json!({"status": "paused", "paused_count": reply.paused_count});
            done(
                session.output,
                &value,
                &format!("paused {} workspace(s)", reply.paused_count),
            )?;
        }
        WsCommand::Resume { id } => {
            let reply = client
                .resume_workspace(session.request(pb::ResumeWorkspaceRequest { id }))
                .await?
                .into_inner();
            let value = json!({"status": reply.status, "resumed_count": reply.resumed_count});
            let text = format!(
                "{}; resumed {} workspace(s)",
                reply.status, reply.resumed_count
            );
            done(session.output, &value, &text)?;
        }
        WsCommand::Rm { id, yes, purge } => {
            let request = pb::DeleteWorkspaceRequest {
                id,
                confirm: yes,
                purge,
            };
            let reply = client
                .delete_workspace(session.request(request))
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::FailedPrecondition if !yes => CliError::new(
                        "this workspace has sub-workspaces: pass --yes to remove them too",
                    ),
                    _ => status.into(),
                })?
                .into_inner();
            let value = json!({"status": reply.status, "cascade_deleted": reply.cascade_deleted});
            let text = format!(
                "{} (and {} sub-workspaces)",
                reply.status, reply.cascade_deleted
            );
            done(session.output, &value, &text)?;
        }
        WsCommand::Config(WsConfigCommand::Get { id }) => {
            let config = client
                .get_config(session.request(pb::GetConfigRequest { workspace_id: id }))
                .await?
                .into_inner();
            print_config(session.output, &config)?;
        }
        WsCommand::Config(WsConfigCommand::Set { id, file }) => {
            use pb::update_config_request::Change;
            let request = pb::UpdateConfigRequest {
                workspace_id: id,
                change: Some(Change::Yaml(read_input(&file)?)),
            };
            let config = client
                .update_config(session.request(request))
                .await?
                .into_inner();
            let value = json!({"status": "updated", "version": config.version});
            done(
                session.output,
                &value,
                &format!("updated to version {}", config.version),
            )?;
        }
    }
    Ok(())
}

fn print_config(output: Output, config: &pb::WorkspaceConfig) -> std::io::Result<()> {
    match output {
        Output::Json => render::json_out(&json!({
            "data": serde_json::from_str::<serde_json::Value>(&config.data_json).unwrap_or_default(),
            "content": config.content,
            "version": config.version,
            "updated_at": render::rfc3339(config.updated_at.as_ref()),
            "updated_by": config.updated_by,
        })),
        Output::Table => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(config.content.as_bytes())?;
            if !config.content.is_empty() && !config.content.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}

async fn list(
    session: &Session,
    client: &mut Client,
) -> Result<BTreeMap<String, pb::Workspace>, CliError> {
    let reply = client
        .list_workspaces(session.request(pb::ListWorkspacesRequest {}))
        .await?
        .into_inner();
    Ok(reply
        .workspaces
        .into_iter()
        .map(|w| (w.id.clone(), w))
        .collect())
}

/// Sorted by name, as a person scans it.
fn print_list<'a>(
    output: Output,
    workspaces: impl Iterator<Item = &'a pb::Workspace>,
) -> std::io::Result<()> {
    let mut sorted: Vec<&pb::Workspace> = workspaces.collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    match output {
        Output::Json => render::json_out(&sorted.iter().map(|w| workspace_json(w)).collect()),
        Output::Table => {
            let now = chrono::Utc::now();
            let rows: Vec<_> = sorted.iter().map(|w| workspace_row(w, now)).collect();
            render::table(&WORKSPACE_HEADERS, &rows)
        }
    }
}

fn print_detail(w: &pb::Workspace) -> std::io::Result<()> {
    let now = chrono::Utc::now();
    let rows = vec![
        vec!["id".to_owned(), w.id.clone()],
        vec!["name".to_owned(), w.name.clone()],
        vec!["status".to_owned(), w.status.clone()],
        vec!["remote".to_owned(), render::is_remote(w).to_string()],
        vec!["role".to_owned(), w.role.clone().unwrap_or_default()],
        vec!["runtime".to_owned(), w.runtime.clone()],
        vec!["url".to_owned(), w.url.clone()],
        vec!["reach".to_owned(), render::reach(w).to_owned()],
        vec!["parent".to_owned(), w.parent_id.clone().unwrap_or_default()],
        vec![
            "tasks".to_owned(),
            format!("{} of {}", w.active_tasks, w.max_concurrent_tasks),
        ],
        vec!["current task".to_owned(), w.current_task.clone()],
        vec![
            "last beat".to_owned(),
            render::ago(w.last_heartbeat_at.as_ref(), now),
        ],
    ];
    render::table(&["FIELD", "VALUE"], &rows)
}

/// What a change line says about a workspace: only these fields count as a change.
fn summary(w: &pb::Workspace) -> (String, String, i32, String, String) {
    (
        w.name.clone(),
        w.status.clone(),
        w.active_tasks,
        w.current_task.clone(),
        w.url.clone(),
    )
}

/// `ws ls --watch`: on a terminal, the table redrawn in place (and its ages ticking); piped,
/// one line per change, so `| grep offline` works.
async fn watch(session: &Session, client: &mut Client) -> Result<(), CliError> {
    let mut events = client
        .watch_events(session.request(pb::WatchEventsRequest::default()))
        .await?
        .into_inner();
    let mut workspaces = list(session, client).await?;
    let terminal = std::io::stdout().is_terminal();
    if terminal {
        redraw(session.output, &workspaces)?;
    } else {
        print_list(session.output, workspaces.values())?;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            _ = tick.tick(), if terminal => {
                redraw(session.output, &workspaces)?;
                continue;
            }
            next = events.message() => match next? {
                Some(event) => event,
                None => return Err(CliError::new("the server ended the event stream")),
            },
        };
        let Some(id) = event.workspace_id.clone() else {
            continue;
        };
        let before = workspaces.get(&id).map(summary);
        if event.event == "WORKSPACE_REMOVED" {
            workspaces.remove(&id);
        } else {
            let request = session.request(pb::GetWorkspaceRequest { id: id.clone() });
            match client.get_workspace(request).await {
                Ok(reply) => {
                    workspaces.insert(id.clone(), reply.into_inner());
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    workspaces.remove(&id);
                }
                Err(status) => return Err(status.into()),
            }
        }
        let after = workspaces.get(&id);
        if terminal || before == after.map(summary) {
            continue;
        }
        let at = render::rfc3339(event.timestamp.as_ref());
        match (session.output, after) {
            (Output::Json, Some(w)) => render::json_line(
                &json!({"event": event.event, "at": at, "workspace": workspace_json(w)}),
            )?,
            (Output::Json, None) => render::json_line(
                &json!({"event": event.event, "at": at, "workspace": {"id": id, "status": "removed"}}),
            )?,
            (Output::Table, Some(w)) => line(&format!(
                "{} {} {} {} {}",
                at.as_str().unwrap_or(""),
                w.id,
                w.name,
                w.status,
                event.event
            ))?,
            (Output::Table, None) => line(&format!(
                "{} {id} removed {}",
                at.as_str().unwrap_or(""),
                event.event
            ))?,
        }
    }
}

fn line(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Clears the terminal and draws the table again.
fn redraw(output: Output, workspaces: &BTreeMap<String, pb::Workspace>) -> std::io::Result<()> {
    use std::io::Write;
    print!("\x1b[H\x1b[2J");
    print_list(output, workspaces.values())?;
    std::io::stdout().flush()
}

//! `molecule schedule`: a workspace's schedules — list, add, remove, run now.

use serde_json::json;

use super::{CliError, Session, render};
use crate::{
    config::{Output, ScheduleCommand},
    pb,
};

pub(super) async fn run(session: &Session, command: ScheduleCommand) -> Result<(), CliError> {
    let mut client = pb::schedules_client::SchedulesClient::new(session.channel());
    match command {
        ScheduleCommand::Ls { workspace } => {
            let request = pb::WorkspaceSchedulesRequest {
                workspace_id: workspace,
            };
            let list = client
                .list(session.request(request))
                .await?
                .into_inner()
                .schedules;
            match session.output {
                Output::Json => {
                    render::json_out(&list.iter().map(schedule_json).collect())?;
                }
                Output::Table => {
                    let now = chrono::Utc::now();
                    let rows: Vec<_> = list
                        .iter()
                        .map(|s| {
                            vec![
                                s.id.clone(),
                                s.name.clone(),
                                format!("{} ({})", s.cron_expr, s.timezone),
                                if s.enabled { "on" } else { "off" }.to_owned(),
                                render::rfc3339(s.next_run_at.as_ref())
                                    .as_str()
                                    .unwrap_or("-")
                                    .to_owned(),
                                render::ago(s.last_run_at.as_ref(), now),
                                s.last_status.clone(),
                            ]
                        })
                        .collect();
                    render::table(
                        &[
                            "ID", "NAME", "CRON", "ENABLED", "NEXT RUN", "LAST RUN", "STATUS",
                        ],
                        &rows,
                    )?;
                }
            }
        }
        ScheduleCommand::Add {
            workspace,
            cron,
            prompt,
            name,
            timezone,
            disabled,
        } => {
            let request = pb::CreateScheduleRequest {
                workspace_id: workspace,
                name,
                cron_expr: cron,
                timezone,
                prompt,
                enabled: Some(!disabled),
            };
            let created = client.create(session.request(request)).await?.into_inner();
            let next = render::rfc3339(created.next_run_at.as_ref());
            let value = json!({"id": created.id, "next_run_at": next});
            let text = format!("{}\tnext run {}", created.id, next.as_str().unwrap_or("-"));
            render::done(session.output, &value, &text)?;
        }
        ScheduleCommand::Rm {
            workspace,
            schedule,
        } => {
            let request = pb::ScheduleRef {
                workspace_id: workspace,
                schedule_id: schedule.clone(),
            };
            client.delete(session.request(request)).await?;
            let value = json!({"status": "deleted", "id": schedule});
            render::done(session.output, &value, &format!("deleted {schedule}"))?;
        }
        ScheduleCommand::Run {
            workspace,
            schedule,
        } => {
            let request = pb::ScheduleRef {
                workspace_id: workspace,
                schedule_id: schedule,
            };
            let fired = client.run(session.request(request)).await?.into_inner();
            let value = json!({"status": "fired", "run_id": fired.run_id});
            render::done(
                session.output,
                &value,
                &format!("fired: run {}", fired.run_id),
            )?;
        }
    }
    Ok(())
}

fn schedule_json(s: &pb::Schedule) -> serde_json::Value {
    json!({
        "id": s.id, "workspace_id": s.workspace_id, "name": s.name, "cron_expr": s.cron_expr,
        "timezone": s.timezone, "prompt": s.prompt, "enabled": s.enabled,
        "next_run_at": render::rfc3339(s.next_run_at.as_ref()),
        "last_run_at": render::rfc3339(s.last_run_at.as_ref()),
        "run_count": s.run_count, "last_status": s.last_status, "last_error": s.last_error,
        "source": s.source,
    })
}

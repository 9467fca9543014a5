//! `molecule events`: the recorded log (newest 100), or `-f` to follow live events, filtered
//! by workspace and type.

use super::{CliError, Session, render};
use crate::{config::EventsArgs, config::Output, pb};

pub(super) async fn run(session: &Session, args: &EventsArgs) -> Result<(), CliError> {
    let mut client = pb::workspaces_client::WorkspacesClient::new(session.channel());
    let wanted = |event: &pb::Event| {
        args.workspace
            .as_ref()
            .is_none_or(|id| event.workspace_id.as_ref() == Some(id))
            && (args.event_types.is_empty()
                || args
                    .event_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&event.event)))
    };
    if !args.follow {
        let request = pb::ListEventsRequest {
            workspace_id: args.workspace.clone(),
        };
        let mut events = client
            .list_events(session.request(request))
            .await?
            .into_inner()
            .events;
        events.retain(wanted);
        // Oldest first, as a log reads.
        events.reverse();
        return match session.output {
            Output::Json => Ok(render::json_out(
                &events.iter().map(render::event_json).collect(),
            )?),
            Output::Table => {
                let rows: Vec<_> = events.iter().map(row).collect();
                Ok(render::table(
                    &["TIME", "EVENT", "WORKSPACE", "PAYLOAD"],
                    &rows,
                )?)
            }
        };
    }
    let mut stream = client
        .watch_events(session.request(pb::WatchEventsRequest::default()))
        .await?
        .into_inner();
    // On stderr, so the stream on stdout stays clean; it also tells a script the watch is open.
    eprintln!("following events (ctrl-c to stop)");
    while let Some(event) = stream.message().await? {
        if !wanted(&event) {
            continue;
        }
        match session.output {
            Output::Json => render::json_line(&render::event_json(&event))?,
            Output::Table => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", row(&event).join("  "))?;
                out.flush()?;
            }
        }
    }
    Err(CliError::new("the server ended the event stream"))
}

/// One event as a table row; the payload compact and cut at 100 characters.
fn row(event: &pb::Event) -> Vec<String> {
    let mut payload = event.payload_json.clone();
    if payload.chars().count() > 100 {
        payload = payload.chars().take(99).collect::<String>() + "…";
    }
    vec![
        render::rfc3339(event.timestamp.as_ref())
            .as_str()
            .unwrap_or("")
            .to_owned(),
        event.event.clone(),
        event.workspace_id.clone().unwrap_or_else(|| "-".to_owned()),
        payload,
    ]
}

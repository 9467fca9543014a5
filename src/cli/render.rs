//! How the CLI prints: aligned tables for people, one JSON document (or one per line when
//! following) for programs. Shapes mirror the REST API's field names.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{config::Output, pb};

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write_table(&mut out, headers, rows)
}

pub(crate) fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned()
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

pub(crate) fn json_out(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

/// One JSON document on one line (for streams a program reads line by line).
pub(crate) fn json_line(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

pub(crate) fn time(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let at = at?;
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
}

pub(crate) fn rfc3339(at: Option<&prost_types::Timestamp>) -> Value {
    time(at).map_or(Value::Null, |at| json!(at.to_rfc3339()))
}

/// "12s ago", "4m ago", "never".
pub(crate) fn ago(at: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    let Some(at) = time(at) else {
        return "never".to_owned();
    };
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..120 => format!("{seconds}s ago"),
        120..7200 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

pub(crate) fn is_remote(w: &pb::Workspace) -> bool {
    w.runtime == "external"
}

/// How a call reaches the agent: its URL, or its poll mailbox.
pub(crate) fn reach(w: &pb::Workspace) -> &'static str {
    if w.url.starts_with("remote://") || (w.url.is_empty() && is_remote(w)) {
        "mailbox"
    } else if w.url.is_empty() {
        "-"
    } else {
        "url"
    }
}

pub(crate) fn workspace_json(w: &pb::Workspace) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "role": w.role,
        "status": w.status,
        "runtime": w.runtime,
        "remote": is_remote(w),
        "url": w.url,
        "parent_id": w.parent_id,
        "tier": w.tier,
        "active_tasks": w.active_tasks,
        "max_concurrent_tasks": w.max_concurrent_tasks,
        "current_task": w.current_task,
        "uptime_seconds": w.uptime_seconds,
        "last_heartbeat_at": rfc3339(w.last_heartbeat_at.as_ref()),
        "agent_card": w.agent_card_json.as_deref().and_then(|card| serde_json::from_str::<Value>(card).ok()),
    })
}

pub(crate) const WORKSPACE_HEADERS: [&str; 8] = [
    "ID",
    "NAME",
    "STATUS",
    "REMOTE",
    "ROLE",
    "TASKS",
    "LAST BEAT",
    "REACH",
];

pub(crate) fn workspace_row(w: &pb::Workspace, now: DateTime<Utc>) -> Vec<String> {
    vec![
        w.id.clone(),
        w.name.clone(),
        w.status.clone(),
        if is_remote(w) { "remote" } else { "" }.to_owned(),
        w.role.clone().unwrap_or_default(),
        w.active_tasks.to_string(),
        ago(w.last_heartbeat_at.as_ref(), now),
        reach(w).to_owned(),
    ]
}

pub(crate) fn event_json(event: &pb::Event) -> Value {
    json!({
        "id": event.id,
        "event": event.event,
        "workspace_id": event.workspace_id,
        "timestamp": rfc3339(event.timestamp.as_ref()),
        "payload": serde_json::from_str::<Value>(&event.payload_json).unwrap_or(Value::Null),
    })
}

/// A command's outcome: the JSON value, or one line of text.
pub(crate) fn done(output: Output, value: &Value, text: &str) -> std::io::Result<()> {
    match output {
        Output::Json => json_out(value),
        Output::Table => {
            println!("{text}");
            Ok(())
        }
    }
}

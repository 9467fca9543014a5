//! `molecule a2a send`: one `message/send` through the platform's proxy, as an operator; prints
//! the agent's text (or, with `-o json`, its JSON-RPC answer as received).

use serde_json::{Value, json};

use super::{CliError, Session, render};
use crate::{config::A2aCommand, config::Output, pb};

pub(super) async fn run(session: &Session, command: A2aCommand) -> Result<(), CliError> {
    let A2aCommand::Send {
        workspace,
        text,
        timeout,
    } = command;
    let body = json!({
        "jsonrpc": "2.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "method": "message/send",
        "params": {"message": {
            "role": "user",
            "messageId": uuid::Uuid::new_v4().to_string(),
            "parts": [{"kind": "text", "text": text}],
        }},
    });
    let request = pb::ProxyRequest {
        target_workspace_id: workspace,
        body: body.to_string().into_bytes(),
        timeout_seconds: Some(timeout),
        forward_headers: Default::default(),
    };
    let reply = pb::a2a_client::A2aClient::new(session.channel())
        .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
        .send(session.request(request))
        .await?
        .into_inner();
    let delivered = match reply.outcome {
        Some(pb::proxy_reply::Outcome::Delivered(delivered)) => delivered,
        Some(pb::proxy_reply::Outcome::Queued(queued)) => {
            let value = json!({
                "queued": true,
                "delivery": queued.delivery,
                "queue_id": queued.queue_id,
                "activity_id": queued.activity_id,
            });
            return match session.output {
                Output::Json => Ok(render::json_out(&value)?),
                Output::Table if queued.delivery == "poll" => {
                    println!("left in the agent's poll mailbox; it answers on its next poll");
                    Ok(())
                }
                Output::Table => {
                    println!("the agent is busy: queued as {}", queued.queue_id);
                    Ok(())
                }
            };
        }
        None => return Err(CliError::new("the server sent an empty reply")),
    };
    let answer: Value = serde_json::from_slice(&delivered.body).unwrap_or(Value::Null);
    if delivered.upstream_status >= 400 {
        return Err(CliError::new(format!(
            "the agent answered {}: {}",
            delivered.upstream_status,
            String::from_utf8_lossy(&delivered.body)
        )));
    }
    if let Some(error) = answer.get("error") {
        return Err(CliError::new(format!("the agent refused: {error}")));
    }
    match session.output {
        Output::Json => render::json_out(&answer)?,
        Output::Table => println!("{}", text_of(&answer["result"])),
    }
    Ok(())
}

/// The text parts of an A2A result: a Message, or a Task's status message and artifacts.
fn text_of(result: &Value) -> String {
    let parts = |value: &Value| -> Vec<String> {
        value["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|part| part["kind"] == "text" || part["type"] == "text")
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect()
    };
    let mut texts = parts(result);
    texts.extend(parts(&result["status"]["message"]));
    for artifact in result["artifacts"].as_array().into_iter().flatten() {
        texts.extend(parts(artifact));
    }
    texts.join("\n")
}

//! `molecule token`: mint (printed once), list (prefixes), revoke.

use serde_json::json;

use super::{CliError, Session, render};
use crate::{config::Output, config::TokenCommand, pb};

pub(super) async fn run(session: &Session, command: TokenCommand) -> Result<(), CliError> {
    let mut client = pb::workspaces_client::WorkspacesClient::new(session.channel());
    match command {
        TokenCommand::Create { workspace } => {
            let request = pb::CreateTokenRequest {
                workspace_id: workspace,
            };
            let minted = client
                .create_token(session.request(request))
                .await?
                .into_inner();
            match session.output {
                Output::Json => render::json_out(&json!({
                    "auth_token": minted.auth_token,
                    "workspace_id": minted.workspace_id,
                }))?,
                Output::Table => {
                    println!("{}", minted.auth_token);
                    eprintln!("save this token now: it is not shown again");
                }
            }
        }
        TokenCommand::Ls { workspace } => {
            let request = pb::ListTokensRequest {
                workspace_id: workspace,
                limit: 200,
                offset: 0,
            };
            let tokens = client
                .list_tokens(session.request(request))
                .await?
                .into_inner()
                .tokens;
            match session.output {
                Output::Json => render::json_out(
                    &tokens
                        .iter()
                        .map(|token| {
                            json!({
                                "id": token.id,
                                "prefix": token.prefix,
                                "created_at": render::rfc3339(token.created_at.as_ref()),
                                "last_used_at": render::rfc3339(token.last_used_at.as_ref()),
                            })
                        })
                        .collect(),
                )?,
                Output::Table => {
                    let now = chrono::Utc::now();
                    let rows: Vec<_> = tokens
                        .iter()
                        .map(|token| {
                            vec![
                                token.id.clone(),
                                format!("{}…", token.prefix),
                                render::ago(token.created_at.as_ref(), now),
                                render::ago(token.last_used_at.as_ref(), now),
                            ]
                        })
                        .collect();
                    render::table(&["ID", "PREFIX", "CREATED", "LAST USED"], &rows)?;
                }
            }
        }
        TokenCommand::Revoke {
            workspace,
            token_id,
        } => {
            let request = pb::RevokeTokenRequest {
                workspace_id: workspace,
                token_id: token_id.clone(),
            };
            client.revoke_token(session.request(request)).await?;
            match session.output {
                Output::Json => render::json_out(&json!({"status": "revoked", "id": token_id}))?,
                Output::Table => println!("revoked {token_id}"),
            }
        }
    }
    Ok(())
}

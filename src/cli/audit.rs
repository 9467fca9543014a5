//! `molecule audit`: `ls` reads a chain through the server; `verify` checks chains straight from
//! the database, so it still answers when the server is down or is the thing under suspicion.

use serde_json::{Value, json};

use super::{CliError, Session, render};
use crate::{
    audit::{AuditTrail, Verdict},
    config::{AuditCommand, AuditLsArgs, AuditVerifyArgs, Output},
    pb, store,
};

pub(super) async fn run(command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Ls(args) => list(&Session::open(&args.client).await?, &args).await,
        AuditCommand::Verify(args) => verify(&args).await,
    }
}

async fn list(session: &Session, args: &AuditLsArgs) -> Result<(), CliError> {
    let mut client = pb::audit_client::AuditClient::new(session.channel());
    let request = pb::ListAuditRequest {
        workspace_id: args.workspace.clone().unwrap_or_default(),
        actor: args.actor.clone().unwrap_or_default(),
        operation: args.operation.clone().unwrap_or_default(),
        limit: args.limit,
        ..Default::default()
    };
    let page = match args.workspace {
        Some(_) => client.list(session.request(request)).await?,
        None => client.list_org(session.request(request)).await?,
    }
    .into_inner();
    match session.output {
        Output::Json => render::json_out(&json!({
            "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
            "total": page.total,
            "chain_valid": page.chain_valid,
            "chain_problems": page.chain_problems.iter()
                .map(|problem| json!({"seq": problem.seq, "id": problem.id, "problem": problem.problem}))
                .collect::<Vec<_>>(),
        }))?,
        Output::Table => {
            let rows: Vec<_> = page
                .events
                .iter()
                .map(|event| {
                    vec![
                        event.seq.to_string(),
                        render::rfc3339(event.at.as_ref())
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        event.actor.clone(),
                        event.operation.clone(),
                        event.target.clone(),
                    ]
                })
                .collect();
            render::table(&["SEQ", "AT", "ACTOR", "OPERATION", "TARGET"], &rows)?;
            eprintln!(
                "{} of {} rows; chain {}",
                page.events.len(),
                page.total,
                if page.chain_valid { "valid" } else { "BROKEN" }
            );
            for problem in &page.chain_problems {
                eprintln!("  seq {}: {}", problem.seq, problem.problem);
            }
        }
    }
    Ok(())
}

fn event_json(event: &pb::AuditEvent) -> Value {
    json!({
        "id": event.id,
        "seq": event.seq,
        "timestamp": render::rfc3339(event.at.as_ref()),
        "actor": event.actor,
        "operation": event.operation,
        "target": event.target,
        "workspace_id": event.workspace_id,
        "request_id": event.request_id,
        "details": serde_json::from_str::<Value>(&event.details_json).unwrap_or(Value::Null),
    })
}

async fn verify(args: &AuditVerifyArgs) -> Result<(), CliError> {
    let failed = |err: sea_orm::DbErr| CliError::new(format!("cannot read the audit trail: {err}"));
    let db = store::open_unmigrated(&args.storage)
        .await
        .map_err(|err| CliError::new(format!("cannot open the database: {err}")))?;
    let trail = AuditTrail::new(args.key.audit_ledger_salt.as_ref());
    let chains = match &args.chain {
        Some(chain) => vec![chain.clone()],
        None => AuditTrail::chains(&db).await.map_err(failed)?,
    };
    let mut verdicts = Vec::with_capacity(chains.len());
    for chain in &chains {
        verdicts.push(trail.verify(&db, chain).await.map_err(failed)?);
    }
    print_verdicts(&verdicts)?;
    let broken = verdicts.iter().filter(|verdict| !verdict.valid()).count();
    match broken {
        0 => Ok(()),
        _ => Err(CliError::new(format!(
            "{broken} of {} chains fail verification",
            verdicts.len()
        ))),
    }
}

fn print_verdicts(verdicts: &[Verdict]) -> std::io::Result<()> {
    let rows: Vec<_> = verdicts
        .iter()
        .map(|verdict| {
            vec![
                verdict.chain.clone(),
                verdict.rows.to_string(),
                if verdict.valid() { "valid" } else { "BROKEN" }.to_owned(),
            ]
        })
        .collect();
    render::table(&["CHAIN", "ROWS", "VERDICT"], &rows)?;
    for verdict in verdicts {
        for problem in &verdict.problems {
            let row = problem.id.as_deref().unwrap_or("-");
            println!(
                "{} seq {} (row {row}): {}",
                verdict.chain, problem.seq, problem.what
            );
        }
    }
    Ok(())
}

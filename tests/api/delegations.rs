//! Delegations (docs/a2a.md §5): a task handed to a peer through the proxy and its recorded
//! outcome, idempotency keys, the hierarchy rule, a busy peer completed by the queue drain, and the
//! record/update routes agents use for delegations they sent themselves.

use std::time::Duration;

use molecule::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    a2a::{agent_at, attach, fake_agent},
    grpc::authed,
    helpers::{Reply, TestApp, eventually, spawn_app},
};

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    app.call(Method::POST, path, Some(token), Some(body)).await
}

/// `GET /workspaces/{source}/delegations` with `token`.
async fn listed(app: &TestApp, source: &str, token: &str) -> Reply {
    app.get(&format!("/workspaces/{source}/delegations"), Some(token))
        .await
}

async fn delegate(app: &TestApp, source: &str, token: &str, body: Value) -> Reply {
    post(app, &format!("/workspaces/{source}/delegate"), token, body).await
}

/// The source's delegation rows once `done` accepts them.
async fn delegations_when(
    app: &TestApp,
    source: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    eventually(20, || async {
        let reply = listed(app, source, &app.admin_token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let rows = reply.body.as_array().unwrap().clone();
        done(&rows).then_some(rows)
    })
    .await
}

fn row<'a>(rows: &'a [Value], kind: &str, delegation_id: &str) -> Option<&'a Value> {
    rows.iter().find(|row| {
        row["delegation_id"] == delegation_id
            && (kind == "delegate") == (row["id"] == delegation_id)
    })
}

#[tokio::test]
async fn a_delegation_reaches_the_peer_and_its_answer_is_recorded() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (source, source_token) = app.registered_agent("lead", None).await;
    let (target, _) = agent_at(&app, "helper", Some(&source), &format!("{base}/answer")).await;
    // 120 characters, most of them multi-byte: previews count characters.
    let task = "é".repeat(120);
    let started = delegate(
        &app,
        &source,
        &source_token,
        json!({"target_id": target, "task": task, "idempotency_key": "job-1"}),
    )
    .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    let delegation_id = started.body["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        started.body,
        json!({"delegation_id": delegation_id, "status": "delegated", "target_id": target})
    );

    let rows = delegations_when(&app, &source, |rows| {
        rows.iter()
            .any(|row| row["status"] == "completed" && row["id"] != delegation_id.as_str())
    })
    .await;
    let request = row(&rows, "delegate", &delegation_id).unwrap();
    assert_eq!(request["status"], "completed");
    assert_eq!(request["type"], "delegation");
    assert_eq!(request["summary"], format!("Delegating to {target}"));
    let result = row(&rows, "delegate_result", &delegation_id).unwrap();
    let answer = format!("done: {task}");
    assert_eq!(
        result["response_preview"],
        answer.chars().take(300).collect::<String>()
    );
    assert_eq!(
        result["summary"],
        format!(
            "Delegation completed ({}...)",
            answer.chars().take(80).collect::<String>()
        )
    );
    assert_eq!(
        (&result["source_id"], &result["target_id"]),
        (&json!(source), &json!(target))
    );

    // The peer got an A2A message whose id is the delegation's.
    let (_, sent) = seen.0.lock().unwrap()[0].clone();
    let message = &sent["params"]["message"];
    assert_eq!(sent["method"], "message/send");
    assert_eq!(message["messageId"], delegation_id.as_str());
    assert_eq!(message["parts"], json!([{"kind": "text", "text": task}]));
    assert_eq!(message["metadata"]["delegation_id"], delegation_id.as_str());

    let events = app.admin_get(&format!("/events/{source}")).await;
    let events = events.body.as_array().unwrap();
    let sent_event = events
        .iter()
        .find(|event| event["event_type"] == "DELEGATION_SENT")
        .unwrap();
    assert_eq!(
        sent_event["payload"]["task_preview"],
        "é".repeat(100).as_str()
    );
    for kind in ["DELEGATION_STATUS", "DELEGATION_COMPLETE"] {
        assert!(
            events.iter().any(|event| event["event_type"] == kind),
            "{kind}"
        );
    }

    // The same key answers with the finished delegation instead of sending it again.
    let again = delegate(
        &app,
        &source,
        &source_token,
        json!({"target_id": target, "task": task, "idempotency_key": "job-1"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body,
        json!({"delegation_id": delegation_id, "status": "completed", "target_id": target, "idempotent_hit": true})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_denied_delegation_fails_and_its_key_may_be_retried() {
    let app = spawn_app().await;
    let (base, seen) = fake_agent().await;
    let (first_root, _) = app.registered_agent("root-a", None).await;
    let (second_root, _) = app.registered_agent("root-b", None).await;
    let (source, source_token) = app.registered_agent("child-a", Some(&first_root)).await;
    // A child of another root: not in the caller's hierarchy.
    let (stranger, _) = agent_at(
        &app,
        "child-b",
        Some(&second_root),
        &format!("{base}/answer"),
    )
    .await;
    let body = json!({"target_id": stranger, "task": "hello", "idempotency_key": "k"});
    let started = delegate(&app, &source, &source_token, body.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let delegation_id = started.body["delegation_id"].as_str().unwrap().to_owned();
    let rows = delegations_when(&app, &source, |rows| {
        rows.iter()
            .any(|row| row["status"] == "failed" && row["id"] != delegation_id.as_str())
    })
    .await;
    let error = "access denied: workspaces cannot communicate per hierarchy rules";
    assert_eq!(
        row(&rows, "delegate", &delegation_id).unwrap()["error"],
        error
    );
    assert_eq!(
        row(&rows, "delegate_result", &delegation_id).unwrap()["error"],
        error
    );
    assert!(seen.0.lock().unwrap().is_empty());
    let events = app.event_types(&source).await;
    assert!(
        events.contains(&"DELEGATION_FAILED".to_owned()),
        "{events:?}"
    );

    // A failed delegation does not hold its key: the same key starts a new one.
    let retried = delegate(&app, &source, &source_token, body).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.text);
    assert_ne!(retried.body["delegation_id"], delegation_id.as_str());
}

#[tokio::test]
async fn bad_delegation_requests_get_the_documented_answers_and_write_nothing() {
    let app = spawn_app().await;
    let (source, source_token) = app.registered_agent("source", None).await;
    let (other, other_token) = app.registered_agent("other", None).await;
    let path = format!("/workspaces/{source}/delegate");
    let not_json = app
        .raw(
            app.http
                .post(format!("{}{path}", app.rest))
                .bearer_auth(&source_token)
                .body("{"),
        )
        .await;
    assert_eq!(
        (not_json.status, not_json.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid delegation request"})
        )
    );
    for (body, error) in [
        (json!({"task": "x"}), "invalid delegation request"),
        (
            json!({"target_id": other, "task": ""}),
            "invalid delegation request",
        ),
        (
            json!({"target_id": "nope", "task": "x"}),
            "target_id must be a valid UUID",
        ),
        (
            json!({"target_id": source, "task": "x"}),
            "self-delegation not permitted",
        ),
    ] {
        let reply = delegate(&app, &source, &source_token, body).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::BAD_REQUEST, json!({"error": error}))
        );
    }
    // Another workspace's token learns nothing, even about a bad body.
    for body in [json!({"target_id": other, "task": "x"}), json!("garbage")] {
        let reply = delegate(&app, &source, &other_token, body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let empty = listed(&app, &source, &source_token).await;
    assert_eq!((empty.status, empty.body), (StatusCode::OK, json!([])));

    let record = format!("/workspaces/{source}/delegations/record");
    let missing = post(
        &app,
        &record,
        &source_token,
        json!({"target_id": other, "task": "x"}),
    )
    .await;
    assert_eq!(missing.body, json!({"error": "invalid request body"}));
    let bad_target = post(
        &app,
        &record,
        &source_token,
        json!({"target_id": "x", "task": "x", "delegation_id": "d"}),
    )
    .await;
    assert_eq!(
        bad_target.body,
        json!({"error": "target_id must be a valid UUID"})
    );
    let update = format!("/workspaces/{source}/delegations/nothing-here/update");
    let unknown = post(&app, &update, &source_token, json!({"status": "completed"})).await;
    assert_eq!(
        (unknown.status, unknown.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "delegation not found"})
        )
    );
    let bad_status = post(&app, &update, &source_token, json!({"status": "done"})).await;
    assert_eq!(
        (bad_status.status, bad_status.body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "status must be 'completed' or 'failed'"})
        )
    );
    let still_empty = listed(&app, &source, &source_token).await;
    assert_eq!(still_empty.body, json!([]));
}

#[tokio::test]
async fn agents_record_and_update_delegations_they_sent_themselves() {
    let app = spawn_app().await;
    let (source, source_token) = app.registered_agent("self-sender", None).await;
    let (target, target_token) = app.registered_agent("peer", None).await;
    let delegation_id = uuid::Uuid::new_v4().to_string();
    let body = json!({"target_id": target, "task": "summarise", "delegation_id": delegation_id});
    let record = format!("/workspaces/{source}/delegations/record");
    // A retried record is the same delegation: one row, one event.
    for _ in 0..2 {
        let recorded = post(&app, &record, &source_token, body.clone()).await;
        assert_eq!(recorded.status, StatusCode::ACCEPTED);
        assert_eq!(
            recorded.body,
            json!({"delegation_id": delegation_id, "status": "recorded"})
        );
    }
    let sent = app.event_types(&source).await;
    assert_eq!(sent.iter().filter(|t| *t == "DELEGATION_SENT").count(), 1);
    // The agent picks the id, so another workspace's use of it is refused, not merged.
    let taken = post(
        &app,
        &format!("/workspaces/{target}/delegations/record"),
        &target_token,
        json!({"target_id": source, "task": "x", "delegation_id": delegation_id}),
    )
    .await;
    assert_eq!(
        (taken.status, taken.body),
        (
            StatusCode::CONFLICT,
            json!({"error": "delegation_id already in use"})
        )
    );
    let update = format!("/workspaces/{source}/delegations/{delegation_id}/update");
    // The runtime reports `queued` while the peer is busy: only the row moves.
    let queued = post(&app, &update, &source_token, json!({"status": "queued"})).await;
    assert_eq!(
        (queued.status, queued.body),
        (
            StatusCode::OK,
            json!({"status": "queued", "delegation_id": delegation_id})
        )
    );
    let rows = listed(&app, &source, &source_token).await.body;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["status"], "queued");

    let completed = post(
        &app,
        &update,
        &source_token,
        json!({"status": "completed", "response_preview": "all done"}),
    )
    .await;
    assert_eq!(completed.status, StatusCode::OK);
    let rows = listed(&app, &source, &source_token).await.body;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        row(rows, "delegate", &delegation_id).unwrap()["status"],
        "completed"
    );
    let result = row(rows, "delegate_result", &delegation_id).unwrap();
    assert_eq!(result["response_preview"], "all done");
    let events = app.event_types(&source).await;
    assert!(events.contains(&"DELEGATION_SENT".to_owned()));
    assert!(events.contains(&"DELEGATION_COMPLETE".to_owned()));

    // The same routes over gRPC.
    let mut client = pb::delegations_client::DelegationsClient::new(app.grpc_channel().await);
    let over_grpc = client
        .list_delegations(authed(
            pb::ListDelegationsRequest {
                workspace_id: source.clone(),
            },
            &source_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over_grpc.delegations.len(), 2);
    let failed = client
        .update_delegation(authed(
            pb::UpdateDelegationRequest {
                workspace_id: source.clone(),
                delegation_id: delegation_id.clone(),
                status: "failed".into(),
                error: Some("peer gave up".into()),
                response_preview: None,
            },
            &source_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.status, "failed");
    let events = app.event_types(&source).await;
    assert!(events.contains(&"DELEGATION_FAILED".to_owned()));
    // An agent's own failure report moves its request row and adds no outcome row.
    let rows = listed(&app, &source, &source_token).await.body;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let request = row(rows, "delegate", &delegation_id).unwrap();
    assert_eq!(
        (&request["status"], &request["error"]),
        (&json!("failed"), &json!("peer gave up"))
    );
    let self_delegation = client
        .delegate(authed(
            pb::DelegateRequest {
                workspace_id: source.clone(),
                target_id: source.clone(),
                task: "me".into(),
                idempotency_key: None,
            },
            &source_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(self_delegation.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_delegation_to_a_busy_peer_is_completed_by_the_queue_drain() {
    let app = spawn_app().await;
    let (source, source_token) = app.registered_agent("planner", None).await;
    let (target, target_token) = app.registered_agent("busy-peer", None).await;
    // An attached peer that is busy for its first delivery and answers the next one.
    let (frames, mut inbound) = attach(&app, &target, &target_token, 1).await.unwrap();
    let peer = tokio::spawn(async move {
        let mut deliveries = 0;
        while let Ok(Some(frame)) = inbound.message().await {
            let Some(pb::platform_frame::Frame::Delivery(delivery)) = frame.frame else {
                continue;
            };
            deliveries += 1;
            let reply = if deliveries == 1 {
                pb::attach_frame::Frame::Busy(pb::Busy {
                    delivery_id: delivery.delivery_id,
                })
            } else {
                let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "message",
                    "parts": [{"kind": "text", "text": "finally"}]}});
                pb::attach_frame::Frame::Reply(pb::Reply {
                    delivery_id: delivery.delivery_id,
                    status: 0,
                    body: body.to_string().into_bytes(),
                    content_type: "application/json".into(),
                })
            };
            let frame = pb::AttachFrame { frame: Some(reply) };
            if frames.send(frame).await.is_err() {
                break;
            }
        }
    });
    let started = delegate(
        &app,
        &source,
        &source_token,
        json!({"target_id": target, "task": "when you can"}),
    )
    .await;
    let delegation_id = started.body["delegation_id"].as_str().unwrap().to_owned();
    let rows = delegations_when(&app, &source, |rows| {
        rows.iter()
            .any(|row| row["status"] == "queued" && row["id"] != delegation_id.as_str())
    })
    .await;
    let queued = row(&rows, "delegate_result", &delegation_id).unwrap();
    assert_eq!(queued["summary"], "Delegation queued — target at capacity");
    assert_eq!(
        row(&rows, "delegate", &delegation_id).unwrap()["status"],
        "queued"
    );

    // The peer's heartbeat shows capacity: the drain delivers it and stitches the outcome.
    let beat = app
        .heartbeat(&target, &target_token, json!({"active_tasks": 0}))
        .await;
    assert_eq!(beat.status, StatusCode::OK);
    let rows = delegations_when(&app, &source, |rows| {
        rows.iter().all(|row| row["status"] == "completed")
    })
    .await;
    assert_eq!(
        rows.len(),
        2,
        "the queued outcome row is completed in place"
    );
    let result = row(&rows, "delegate_result", &delegation_id).unwrap();
    assert_eq!(result["response_preview"], "finally");
    assert_eq!(result["summary"], "Delegation completed (finally...)");
    let events = app.admin_get(&format!("/events/{source}")).await;
    let drained = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_type"] == "DELEGATION_COMPLETE")
        .cloned()
        .unwrap();
    assert_eq!(drained["payload"]["via"], "queue_drain");
    peer.abort();
}

//! Approvals (docs/runtime.md §3, M3): the runtime's create (201 + approval_id), list scan and
//! WebSocket wait; who may decide (never the requester); `decided_by` from the credential; the
//! events, the control frame to a streaming agent, expiry and the operators' pending list.

use molecule::{config::RuntimeArgs, pb::control::Kind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    events::{connect, next_event},
    heartbeat_stream,
    helpers::{Options, Reply, TestApp, eventually, spawn_app, spawn_app_with},
};

async fn request_approval(app: &TestApp, id: &str, token: &str) -> String {
    // approval.py sends exactly this body.
    let reply = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/approvals"),
            Some(token),
            Some(json!({"action": "deploy to production", "reason": "release 1.2"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let approval_id = reply.body["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.body,
        json!({"approval_id": approval_id, "status": "pending"})
    );
    approval_id
}

async fn decide(
    app: &TestApp,
    id: &str,
    approval: &str,
    token: Option<&str>,
    body: Value,
) -> Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/approvals/{approval}/decide"),
        token,
        Some(body),
    )
    .await
}

/// What approval.py's polling fallback does: scan the list for the id.
async fn listed(app: &TestApp, id: &str, token: &str, approval: &str) -> Value {
    let reply = app
        .get(&format!("/workspaces/{id}/approvals"), Some(token))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == approval)
        .cloned()
        .expect("listed")
}

#[tokio::test]
async fn a_human_decides_and_the_runtime_hears_it_on_every_channel() {
    let app = spawn_app().await;
    let (parent, _) = app.registered_agent("lead", None).await;
    let (id, token) = app.registered_agent("worker", Some(&parent)).await;
    let mut socket = connect(
        &app,
        &[
            ("x-workspace-id", id.as_str()),
            ("authorization", &format!("Bearer {token}")),
        ],
    )
    .await
    .expect("the runtime's socket opens with its token");
    let mut stream = heartbeat_stream::open(&app, &id, &token).await.unwrap();

    let approval = request_approval(&app, &id, &token).await;
    let pending = listed(&app, &id, &token, &approval).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["decided_by"], Value::Null);
    let keys: Vec<&str> = pending
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "task_id",
            "action",
            "reason",
            "status",
            "decided_by",
            "decided_at",
            "created_at"
        ]
    );
    let one = app
        .get(
            &format!("/workspaces/{id}/approvals/{approval}"),
            Some(&token),
        )
        .await;
    assert_eq!(one.body, pending);
    assert!(
        app.event_types(&id)
            .await
            .contains(&"APPROVAL_REQUESTED".to_owned())
    );
    assert!(
        app.event_types(&parent)
            .await
            .contains(&"APPROVAL_ESCALATED".to_owned())
    );

    let operators = app.admin_get("/approvals/pending").await;
    let row = operators
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == approval.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["workspace_name"], "worker");
    assert_eq!(row["workspace_id"], id.as_str());

    // The client's decided_by is a note; the credential names the decider.
    let decided = decide(
        &app,
        &id,
        &approval,
        Some(&app.admin_token.clone()),
        json!({"decision": "approved", "decided_by": "mallory"}),
    )
    .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.text);
    assert_eq!(
        decided.body,
        json!({"status": "approved", "approval_id": approval, "decided_by": "admin"})
    );

    // The WebSocket frame approval.py matches: the event name and top-level fields.
    let frame = loop {
        let event = next_event(&mut socket).await;
        if event["event"] == "APPROVAL_DECIDED" {
            break event;
        }
    };
    assert_eq!(frame["approval_id"], approval.as_str());
    assert_eq!(frame["status"], "approved");
    assert_eq!(frame["decided_by"], "admin");
    assert_eq!(frame["workspace_id"], id.as_str());

    let control = stream.control_frame().await;
    assert_eq!(Kind::try_from(control.kind).unwrap(), Kind::ApprovalDecided);
    let decision = control.approval.unwrap();
    assert_eq!(
        (
            decision.approval_id.as_str(),
            decision.status.as_str(),
            decision.decided_by.as_str()
        ),
        (approval.as_str(), "approved", "admin")
    );

    let after = listed(&app, &id, &token, &approval).await;
    assert_eq!(
        (after["status"].as_str(), after["decided_by"].as_str()),
        (Some("approved"), Some("admin"))
    );
    assert!(after["decided_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        app.event_types(&id)
            .await
            .contains(&"APPROVAL_APPROVED".to_owned())
    );
    let again = decide(
        &app,
        &id,
        &approval,
        Some(&app.admin_token.clone()),
        json!({"decision": "denied"}),
    )
    .await;
    assert_eq!(
        (again.status, again.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "approval not found or already decided"})
        )
    );
    assert!(
        app.admin_get("/approvals/pending")
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["id"] != approval.as_str())
    );
}

#[tokio::test]
async fn a_workspace_never_decides_its_own_request() {
    let app = spawn_app().await;
    let (root, root_token) = app.registered_agent("root", None).await;
    let (mid, mid_token) = app.registered_agent("mid", Some(&root)).await;
    let (leaf, leaf_token) = app.registered_agent("leaf", Some(&mid)).await;
    let (_, sibling_token) = app.registered_agent("sibling", Some(&mid)).await;
    let org = app
        .admin(
            Method::POST,
            "/org/tokens",
            Some(json!({"name": "console"})),
        )
        .await;
    let org_token = org.body["auth_token"].as_str().unwrap().to_owned();
    let org_prefix = org.body["prefix"].as_str().unwrap().to_owned();

    let approval = request_approval(&app, &leaf, &leaf_token).await;
    let refusals = [
        (
            Some(leaf_token.as_str()),
            StatusCode::FORBIDDEN,
            "a workspace cannot decide its own approval",
        ),
        (
            Some(sibling_token.as_str()),
            StatusCode::UNAUTHORIZED,
            "invalid workspace auth token",
        ),
        (
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
            "invalid workspace auth token",
        ),
        (
            None,
            StatusCode::UNAUTHORIZED,
            "missing workspace auth token",
        ),
    ];
    for (token, status, error) in refusals {
        let reply = decide(
            &app,
            &leaf,
            &approval,
            token,
            json!({"decision": "approved"}),
        )
        .await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": error}))
        );
    }
    let bad = decide(
        &app,
        &leaf,
        &approval,
        Some(&mid_token),
        json!({"decision": "maybe"}),
    )
    .await;
    assert_eq!(
        bad.body,
        json!({"error": "decision must be 'approved' or 'denied'"})
    );
    let unreadable = decide(
        &app,
        &leaf,
        &approval,
        Some(&leaf_token),
        json!({"decision": 1}),
    )
    .await;
    assert_eq!(
        unreadable.status,
        StatusCode::FORBIDDEN,
        "the decider gate answers before the body"
    );
    assert_eq!(
        listed(&app, &leaf, &leaf_token, &approval).await["status"],
        "pending",
        "nothing changed"
    );

    // Any ancestor decides, and is named.
    let by_grandparent = decide(
        &app,
        &leaf,
        &approval,
        Some(&root_token),
        json!({"decision": "denied"}),
    )
    .await;
    assert_eq!(
        by_grandparent.body["decided_by"],
        format!("workspace:{root}")
    );
    let second = request_approval(&app, &leaf, &leaf_token).await;
    let by_org = decide(
        &app,
        &leaf,
        &second,
        Some(&org_token),
        json!({"decision": "approved"}),
    )
    .await;
    assert_eq!(by_org.body["decided_by"], format!("org:{org_prefix}"));
    let third = request_approval(&app, &leaf, &leaf_token).await;
    let by_parent = decide(
        &app,
        &leaf,
        &third,
        Some(&mid_token),
        json!({"decision": "approved"}),
    )
    .await;
    assert_eq!(by_parent.body["decided_by"], format!("workspace:{mid}"));

    // The operators' list is for operators.
    let as_agent = app.get("/approvals/pending", Some(&leaf_token)).await;
    assert_eq!(as_agent.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_write_nothing() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    for body in [
        json!({}),
        json!({"action": ""}),
        json!({"action": "x", "context": [1]}),
        json!({"action": 5}),
    ] {
        let reply = app
            .call(
                Method::POST,
                &format!("/workspaces/{id}/approvals"),
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid request body"})
            ),
            "{body}"
        );
    }
    let list = app
        .get(&format!("/workspaces/{id}/approvals"), Some(&token))
        .await;
    assert_eq!(list.body, json!([]));
    let missing = app
        .get(
            &format!("/workspaces/{id}/approvals/{}", uuid::Uuid::new_v4()),
            Some(&token),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "approval not found"})
        )
    );
}

#[tokio::test]
async fn an_undecided_request_expires_as_denied() {
    let app = spawn_app_with(Options {
        runtime: RuntimeArgs {
            approval_ttl: std::time::Duration::from_secs(1),
            ..RuntimeArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("worker", None).await;
    let approval = request_approval(&app, &id, &token).await;
    let expired = eventually(10, || async {
        let row = listed(&app, &id, &token, &approval).await;
        (row["status"] == "denied").then_some(row)
    })
    .await;
    assert_eq!(expired["decided_by"], "auto-expired");
    assert!(
        app.event_types(&id)
            .await
            .contains(&"APPROVAL_DENIED".to_owned())
    );
    let late = decide(
        &app,
        &id,
        &approval,
        Some(&app.admin_token.clone()),
        json!({"decision": "approved"}),
    )
    .await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{}", late.text);
}

/// Audit N1: a decider's credential for one workspace settled any pending approval by id, so a
/// requester with a child approved its own request through the child's path, and any root with a
/// child approved another root's request. Now the path's workspace must own the approval.
#[tokio::test]
async fn a_decision_is_bound_to_the_approvals_own_workspace() {
    let app = spawn_app().await;
    let (requester, requester_token) = app.registered_agent("requester", None).await;
    let (own_child, _) = app.registered_agent("own-child", Some(&requester)).await;
    let (other_root, other_root_token) = app.registered_agent("other-root", None).await;
    let (other_child, _) = app.registered_agent("other-child", Some(&other_root)).await;
    let mut bystander = connect(
        &app,
        &[
            ("x-workspace-id", other_root.as_str()),
            ("authorization", &format!("Bearer {other_root_token}")),
        ],
    )
    .await
    .expect("a root may watch its peers");

    let approval = request_approval(&app, &requester, &requester_token).await;
    let requested = loop {
        let event = next_event(&mut bystander).await;
        if event["event"] == "APPROVAL_REQUESTED" {
            break event;
        }
    };
    assert_eq!(requested["workspace_id"], requester.as_str());
    assert_eq!(
        requested["payload"],
        json!({"task_id": null}),
        "a non-participant learns neither the request nor its id"
    );

    let not_here = json!({"error": "approval not found or already decided"});
    for (path_workspace, token) in [
        (&own_child, &requester_token),
        (&other_child, &other_root_token),
    ] {
        let reply = decide(
            &app,
            path_workspace,
            &approval,
            Some(token),
            json!({"decision": "approved"}),
        )
        .await;
        assert_eq!(
            (reply.status, &reply.body),
            (StatusCode::NOT_FOUND, &not_here),
            "decided through {path_workspace}"
        );
    }
    let mut approvals =
        molecule::pb::approvals_client::ApprovalsClient::new(app.grpc_channel().await);
    let status = approvals
        .decide(crate::grpc::authed(
            molecule::pb::DecideApprovalRequest {
                workspace_id: other_child.clone(),
                approval_id: approval.clone(),
                decision: "approved".into(),
                note: String::new(),
            },
            &other_root_token,
        ))
        .await
        .expect_err("refused over gRPC too");
    assert_eq!(
        (crate::grpc::error_body(&status).0, status.message()),
        (404, "approval not found or already decided")
    );
    assert_eq!(
        listed(&app, &requester, &requester_token, &approval).await["status"],
        "pending"
    );
    let on_children: Vec<String> = [
        app.event_types(&own_child).await,
        app.event_types(&other_child).await,
    ]
    .concat();
    assert!(
        !on_children
            .iter()
            .any(|event| event.starts_with("APPROVAL_")),
        "no decision event landed elsewhere: {on_children:?}"
    );
    // An operator still decides, and the decision lands on the requester.
    let decided = decide(
        &app,
        &requester,
        &approval,
        Some(&app.admin_token.clone()),
        json!({"decision": "denied"}),
    )
    .await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.text);
    assert!(
        app.event_types(&requester)
            .await
            .contains(&"APPROVAL_DENIED".to_owned())
    );
}

//! The same service over typed gRPC stubs: errors carry the documented REST body as a detail,
//! the event watch streams, and health and reflection answer.

use std::time::Duration;

use molecule::pb;
use prost::Message;
use serde_json::json;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::spawn_app;

/// `Workspaces/ListWorkspaces` over gRPC-Web (binary), with these extra headers.
pub(crate) async fn grpc_web_list(
    app: &crate::helpers::TestApp,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let message = pb::ListWorkspacesRequest {}.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut request = app
        .http
        .post(format!(
            "http://{}/molecule.v1.Workspaces/ListWorkspaces",
            app.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

pub(crate) fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn workspaces_round_trip_over_grpc() {
    let app = spawn_app().await;
    let mut client = app.grpc.clone();
    let created = client
        .create_workspace(authed(
            pb::CreateWorkspaceRequest {
                name: "typed".into(),
                external: true,
                url: "https://93.184.215.14:8443".into(),
                ..Default::default()
            },
            &app.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status, "online");
    assert!(created.external);
    let fetched = client
        .get_workspace(authed(
            pb::GetWorkspaceRequest {
                id: created.id.clone(),
            },
            &app.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            fetched.name.as_str(),
            fetched.runtime.as_str(),
            fetched.url.as_str()
        ),
        ("typed", "external", "https://93.184.215.14:8443")
    );
    // REST sees what gRPC wrote.
    let rest = app.admin_get(&format!("/workspaces/{}", created.id)).await;
    assert_eq!(rest.body["name"], "typed");
}

#[tokio::test]
async fn grpc_errors_carry_the_rest_status_and_body() {
    let app = spawn_app().await;
    let mut client = app.grpc.clone();
    let status = client
        .list_workspaces(Request::new(pb::ListWorkspacesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "admin auth required");

    let missing = uuid::Uuid::new_v4().to_string();
    let status = client
        .get_workspace_state(Request::new(pb::GetWorkspaceStateRequest {
            id: missing.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let envelope = pb::google_rpc::Status::decode(status.details()).unwrap();
    let detail = pb::ErrorDetail::decode(envelope.details[0].value.as_slice()).unwrap();
    assert_eq!(detail.http_status, 404);
    let body: serde_json::Value =
        serde_json::from_str(detail.body_json.as_deref().unwrap()).unwrap();
    assert_eq!(body, json!({"workspace_id": missing, "deleted": true}));
}

#[tokio::test]
async fn the_event_watch_streams_over_grpc() {
    let app = spawn_app().await;
    let mut client = app.grpc.clone();
    let mut stream = client
        .watch_events(authed(pb::WatchEventsRequest::default(), &app.admin_token))
        .await
        .unwrap()
        .into_inner();
    let id = app.create_workspace(json!({"name": "streamed"})).await;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.event, "WORKSPACE_PROVISIONING");
    assert_eq!(event.workspace_id.as_deref(), Some(id.as_str()));
    let payload: serde_json::Value = serde_json::from_str(&event.payload_json).unwrap();
    assert_eq!(payload["name"], "streamed");
    let refused = client
        .watch_events(authed(pb::WatchEventsRequest::default(), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_same_port() {
    let app = spawn_app().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "molecule.v1.Workspaces".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"molecule.v1.Workspaces".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn every_service_reflection_lists_reports_serving() {
    let app = spawn_app().await;
    let channel = app.grpc_channel().await;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let reply = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list");
    };
    let ours: Vec<_> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .filter(|name| name.starts_with("molecule.v1."))
        .collect();
    assert!(
        ours.contains(&"molecule.v1.Replicas".to_owned()),
        "{ours:?}"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ours {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{service}: {status:?}"))
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
}

#[tokio::test]
async fn grpc_web_calls_work_on_the_same_port() {
    let app = spawn_app().await;
    app.create_workspace(json!({"name": "web"})).await;
    let bearer = format!("Bearer {}", app.admin_token);
    let response = grpc_web_list(&app, &[("authorization", bearer)]).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let body = response.bytes().await.unwrap();
    // First frame: the message; then a trailers frame (flag 0x80) carrying grpc-status: 0.
    assert_eq!(body[0], 0);
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let reply = pb::ListWorkspacesResponse::decode(&body[5..5 + length]).unwrap();
    assert_eq!(reply.workspaces[0].name, "web");
    let trailers = String::from_utf8_lossy(&body[5 + length + 5..]);
    assert_eq!(body[5 + length], 0x80);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_cut_off_not_silently_skipped() {
    let app = spawn_app().await;
    // A slow consumer: small HTTP/2 windows, so unread events back up to the server.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut client = pb::workspaces_client::WorkspacesClient::new(channel);
    let mut stream = client
        .watch_events(authed(pb::WatchEventsRequest::default(), &app.admin_token))
        .await
        .unwrap()
        .into_inner();
    // 1 root + 120 children, paused and resumed repeatedly: thousands of events that this
    // watcher does not read while they happen.
    let root = app.create_workspace(json!({"name": "root"})).await;
    for i in 0..120 {
        app.create_workspace(json!({"name": format!("child-{i}"), "parent_id": root}))
            .await;
    }
    for _ in 0..12 {
        app.admin(
            reqwest::Method::POST,
            &format!("/workspaces/{root}/pause"),
            None,
        )
        .await;
        app.admin(
            reqwest::Method::POST,
            &format!("/workspaces/{root}/resume"),
            None,
        )
        .await;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        let mut delivered = 0usize;
        loop {
            match stream.message().await {
                Ok(Some(_)) => delivered += 1,
                Ok(None) => return (delivered, None),
                Err(status) => return (delivered, Some(status)),
            }
        }
    })
    .await
    .expect("the stream ends");
    let (delivered, status) = outcome;
    let status = status.expect("ended with an error, not a silent gap");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "event watcher fell behind; reconnect and rehydrate"
    );
    assert!(delivered < 121 * 2 + 12 * 2 * 121, "delivered {delivered}");
}

/// The documented REST body a gRPC error carries in its details.
pub(crate) fn error_body(status: &tonic::Status) -> (u32, serde_json::Value) {
    let envelope = pb::google_rpc::Status::decode(status.details()).unwrap();
    let detail = pb::ErrorDetail::decode(envelope.details[0].value.as_slice()).unwrap();
    let body = serde_json::from_str(detail.body_json.as_deref().unwrap_or("null")).unwrap();
    (detail.http_status, body)
}

#[tokio::test]
async fn grpc_shares_the_rest_rate_limiter_and_probes_are_not_counted() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        rate_limit: 3,
        ..Default::default()
    })
    .await;
    let mut client = app.grpc.clone();
    let list = || authed(pb::ListWorkspacesRequest::default(), &app.admin_token);
    client.list_workspaces(list()).await.unwrap();
    client.list_workspaces(list()).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.grpc_channel().await);
    for _ in 0..5 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("probes are never limited");
    }
    // The third request of the minute, over REST, uses the same bucket.
    let rest = app.admin_get("/workspaces").await;
    assert_eq!(rest.status, reqwest::StatusCode::OK, "{}", rest.text);
    let limited = client.list_workspaces(list()).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let (http, body) = error_body(&limited);
    assert_eq!(http, 429);
    assert_eq!(body["error"], "rate limit exceeded");
    assert!(body["retry_after"].as_u64().is_some_and(|secs| secs >= 1));

    // gRPC-Web is counted too (after its translation, once).
    let bearer = format!("Bearer {}", app.admin_token);
    let web = grpc_web_list(&app, &[("authorization", bearer)]).await;
    assert_eq!(web.headers()["grpc-status"], "8");
}

#[tokio::test]
async fn grpc_org_key_mints_are_limited_to_ten_an_hour() {
    let app = spawn_app().await;
    let mint = || {
        let mut client = app.grpc.clone();
        let request = authed(pb::CreateOrgTokenRequest::default(), &app.admin_token);
        async move { client.create_org_token(request).await }
    };
    for _ in 0..10 {
        mint().await.unwrap();
    }
    let limited = mint().await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(error_body(&limited).0, 429);
    // REST shares the hourly bucket.
    let rest = app.admin(reqwest::Method::POST, "/org/tokens", None).await;
    assert_eq!(rest.status, reqwest::StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_tenant_guard_holds_for_grpc_and_exempts_agent_plumbing() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        org_id: Some("org-123"),
        ..Default::default()
    })
    .await;
    let mut client = app.grpc.clone();
    let hidden = client
        .list_workspaces(authed(
            pb::ListWorkspacesRequest::default(),
            &app.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(hidden.message(), "");
    let mut request = authed(pb::ListWorkspacesRequest::default(), &app.admin_token);
    request
        .metadata_mut()
        .insert("x-molecule-org-id", "org-123".parse().unwrap());
    client.list_workspaces(request).await.unwrap();
    // Registration and heartbeats are exempt, as over REST.
    let mut request = authed(
        pb::CreateWorkspaceRequest {
            name: "agent".into(),
            external: true,
            ..Default::default()
        },
        &app.admin_token,
    );
    request
        .metadata_mut()
        .insert("x-molecule-org-id", "org-123".parse().unwrap());
    let id = client
        .create_workspace(request)
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut registry = pb::registry_client::RegistryClient::new(app.grpc_channel().await);
    let token = registry
        .register(Request::new(pb::RegisterRequest {
            id: id.clone(),
            url: "remote://no-inbound".into(),
            agent_card_json: "{}".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .auth_token
        .unwrap();
    registry
        .heartbeat(authed(
            pb::HeartbeatRequest {
                workspace_id: id,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
}

//! The gRPC heartbeat stream (docs/decisions.md D10): one authentication, an ack per beat, control
//! frames pushed on pause, resume, removal, token revocation and config change, goodbye → offline.

use std::time::Duration;

use molecule::pb::{self, control::Kind};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Streaming};

use crate::helpers::TestApp;
use crate::helpers::spawn_app;

pub(crate) struct AgentStream {
    outbound: mpsc::Sender<pb::AgentFrame>,
    inbound: Streaming<pb::ServerFrame>,
}

pub(crate) async fn open(
    app: &TestApp,
    id: &str,
    token: &str,
) -> Result<AgentStream, tonic::Status> {
    let (outbound, receiver) = mpsc::channel(16);
    let mut request = Request::new(ReceiverStream::new(receiver));
    request
        .metadata_mut()
        .insert("x-workspace-id", id.parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut client = pb::registry_client::RegistryClient::new(app.grpc_channel().await);
    let inbound = client.heartbeat_stream(request).await?.into_inner();
    Ok(AgentStream { outbound, inbound })
}

impl AgentStream {
    pub(crate) async fn beat(&mut self, sequence: u64, heartbeat: pb::HeartbeatRequest) -> pb::Ack {
        let frame = pb::AgentFrame {
            frame: Some(pb::agent_frame::Frame::Beat(pb::Beat {
                sequence,
                heartbeat: Some(heartbeat),
            })),
        };
        self.outbound.send(frame).await.unwrap();
        match self.next().await.expect("a frame").unwrap().frame {
            Some(pb::server_frame::Frame::Ack(ack)) => ack,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    async fn next(&mut self) -> Option<Result<pb::ServerFrame, tonic::Status>> {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("a frame within 10s")
            .transpose()
    }

    pub(crate) async fn control(&mut self) -> Kind {
        Kind::try_from(self.control_frame().await.kind).unwrap()
    }

    /// The next frame, which must be a control frame.
    pub(crate) async fn control_frame(&mut self) -> pb::Control {
        match self.next().await.expect("a frame").unwrap().frame {
            Some(pb::server_frame::Frame::Control(control)) => control,
            other => panic!("expected a control frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn beats_are_acked_and_control_frames_follow_the_workspace() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("streamer", None).await;
    let mut stream = open(&app, &id, &token).await.unwrap();
    let ack = stream
        .beat(
            1,
            pb::HeartbeatRequest {
                active_tasks: 3,
                current_task: "streaming".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!((ack.sequence, ack.status.as_str()), (1, "online"));
    assert_eq!(
        app.admin_get(&format!("/workspaces/{id}")).await.body["active_tasks"],
        3
    );

    app.admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    assert_eq!(stream.control().await, Kind::Paused);
    app.admin(Method::POST, &format!("/workspaces/{id}/resume"), None)
        .await;
    assert_eq!(stream.control().await, Kind::Resumed);
    app.call(
        Method::PATCH,
        &format!("/workspaces/{id}"),
        Some(&token),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(stream.control().await, Kind::ConfigChanged);
    // Back online through the stream, from awaiting_agent.
    assert_eq!(
        stream.beat(2, pb::HeartbeatRequest::default()).await.status,
        "online"
    );

    app.admin(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    assert_eq!(stream.control().await, Kind::Removed);
    let end = stream.next().await;
    assert!(
        matches!(end, Some(Err(ref status)) if status.code() == Code::NotFound) || end.is_none(),
        "{end:?}"
    );
}

#[tokio::test]
async fn revoking_the_streams_token_closes_it() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let mut stream = open(&app, &id, &token).await.unwrap();
    stream.beat(1, pb::HeartbeatRequest::default()).await;
    let listed = app.admin_get(&format!("/workspaces/{id}/tokens")).await;
    let token_id = listed.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    app.admin(
        Method::DELETE,
        &format!("/workspaces/{id}/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(stream.control().await, Kind::TokenRevoked);
    match stream.next().await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated),
        other => panic!("expected the stream to end unauthenticated, got {other:?}"),
    }
    let reopen = open(&app, &id, &token)
        .await
        .err()
        .expect("a revoked token cannot open a stream");
    assert_eq!(reopen.code(), Code::Unauthenticated);
    assert_eq!(reopen.message(), "invalid workspace auth token");
}

#[tokio::test]
async fn a_goodbye_marks_the_workspace_offline_at_once() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("agent", None).await;
    let mut stream = open(&app, &id, &token).await.unwrap();
    stream.beat(1, pb::HeartbeatRequest::default()).await;
    let goodbye = pb::AgentFrame {
        frame: Some(pb::agent_frame::Frame::Goodbye(pb::Goodbye {
            reason: "shutdown".into(),
        })),
    };
    stream.outbound.send(goodbye).await.unwrap();
    assert!(
        stream.next().await.is_none(),
        "the server ends the stream after a goodbye"
    );
    let view = app.admin_get(&format!("/workspaces/{id}")).await;
    assert_eq!(view.body["status"], "offline");
    assert_eq!(
        app.event_types(&id).await.last().unwrap(),
        "WORKSPACE_OFFLINE"
    );
}

#[tokio::test]
async fn streams_authenticate_before_the_first_beat() {
    let app = spawn_app().await;
    let (id, _) = app.registered_agent("agent", None).await;
    let (_, other) = app.registered_agent("other", None).await;
    let refused = open(&app, &id, &other).await.err().unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = open(&app, "garbage", &other).await.err().unwrap();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::InvalidArgument, "invalid workspace ID")
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = open(&app, &unknown, &app.admin_token).await.err().unwrap();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
}

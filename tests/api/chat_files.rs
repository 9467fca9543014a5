//! Chat files (docs/runtime.md §2, M2): what `send_message_to_user` does (upload, then
//! `/notify` with the returned list verbatim), downloads with the reference's headers, the caps
//! and the quota with nothing stored, expiry and purge.

use molecule::{
    config::RuntimeArgs,
    pb::{self, chat_files_client::ChatFilesClient},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Options, Reply, TestApp, eventually, spawn_app, spawn_app_with};

const BOUNDARY: &str = "molecule-test-boundary";

/// A multipart body: `(field, file name, content type, bytes)` per part.
fn multipart(parts: &[(&str, &str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n").as_bytes());
        if let Some(content_type) = content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(app: &TestApp, id: &str, token: &str, body: Vec<u8>) -> Reply {
    app.raw(
        app.http
            .post(format!("{}/workspaces/{id}/chat/uploads", app.rest))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body),
    )
    .await
}

async fn download(app: &TestApp, id: &str, token: &str, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/workspaces/{id}/chat/download", app.rest))
        .query(&[("path", path)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn stored_count(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    molecule::store::entities::chat_upload::Entity::find()
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn uploads_round_trip_through_notify_and_download() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let (_, other_token) = app.registered_agent("other", None).await;
    let report = b"%PDF-1.4 quarterly report".as_slice();
    let notes = "résumé notes\n".as_bytes();
    let body = multipart(&[
        (
            "files",
            "../../Quarterly Report.pdf",
            Some("application/pdf"),
            report,
        ),
        ("comment", "ignored.txt", None, b"not a file field"),
        ("files", "notes;$v2`.md", None, notes),
    ]);
    let reply = upload(&app, &id, &token, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // a2a_tools.py: 200 and a `files` list as long as the request's.
    let files = reply.body["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "Quarterly_Report.pdf");
    assert_eq!(files[0]["mimeType"], "application/pdf");
    assert_eq!(files[0]["size"], report.len());
    assert_eq!(files[1]["name"], "notes__v2_.md");
    assert_eq!(files[1]["mimeType"], "text/markdown; charset=utf-8");
    let uri = files[0]["uri"].as_str().unwrap();
    let stored = uri
        .strip_prefix("workspace:/workspace/.molecule/chat-uploads/")
        .unwrap();
    assert_eq!(stored.len(), 32 + 1 + "Quarterly_Report.pdf".len());
    assert!(
        stored[..32]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    // The runtime then notifies with the list verbatim.
    let notify = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/notify"),
            Some(&token),
            Some(json!({"message": "here is the report", "attachments": files})),
        )
        .await;
    assert_eq!(notify.status, StatusCode::OK, "{}", notify.text);

    let path = uri.strip_prefix("workspace:").unwrap();
    let served = download(&app, &id, &token, path).await;
    assert_eq!(served.status(), StatusCode::OK);
    let headers = served.headers().clone();
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["content-length"], report.len().to_string().as_str());
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"Quarterly_Report.pdf\"; filename*=UTF-8''Quarterly_Report.pdf"
    );
    assert_eq!(served.bytes().await.unwrap().as_ref(), report);
    let by_operator = download(&app, &id, &app.admin_token.clone(), path).await;
    assert_eq!(by_operator.status(), StatusCode::OK);
    let by_other = download(&app, &id, &other_token, path).await;
    assert_eq!(by_other.status(), StatusCode::UNAUTHORIZED);

    let refusals = [
        ("", StatusCode::BAD_REQUEST, "path query required"),
        (
            "relative/x",
            StatusCode::BAD_REQUEST,
            "path must be absolute",
        ),
        (
            "/etc/passwd",
            StatusCode::BAD_REQUEST,
            "path must be under /configs, /workspace, /home, or /plugins",
        ),
        (
            "/workspace/../etc/passwd",
            StatusCode::BAD_REQUEST,
            "invalid path",
        ),
        (
            "/configs/.auth_token",
            StatusCode::NOT_FOUND,
            "file not found",
        ),
        (
            "/workspace/.molecule/chat-uploads/00000000000000000000000000000000-x.pdf",
            StatusCode::NOT_FOUND,
            "file not found",
        ),
    ];
    for (path, status, error) in refusals {
        let reply = app
            .raw(
                app.http
                    .get(format!("{}/workspaces/{id}/chat/download", app.rest))
                    .query(&[("path", path)])
                    .bearer_auth(&token),
            )
            .await;
        assert_eq!(
            (reply.status, reply.body),
            (status, json!({"error": error})),
            "{path}"
        );
    }

    // gRPC streams the same bytes.
    let mut client = ChatFilesClient::new(app.grpc_channel().await);
    let mut request = tonic::Request::new(pb::DownloadRequest {
        workspace_id: id.clone(),
        path: files[1]["uri"]
            .as_str()
            .unwrap()
            .strip_prefix("workspace:")
            .unwrap()
            .to_owned(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut parts = client.download(request).await.unwrap().into_inner();
    let mut received = Vec::new();
    while let Some(part) = parts.message().await.unwrap() {
        if let Some(pb::download_part::Part::Data(data)) = part.part {
            received.extend(data);
        }
    }
    assert_eq!(received, notes);
}

#[tokio::test]
async fn caps_and_quota_refuse_with_nothing_stored() {
    let app = spawn_app_with(Options {
        runtime: RuntimeArgs {
            upload_quota_bytes: 60 * 1024 * 1024,
            ..RuntimeArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("worker", None).await;
    let mib = 1024 * 1024;
    let big = vec![b'x'; 25 * mib + 1];
    let reply = upload(
        &app,
        &id,
        &token,
        multipart(&[
            ("files", "small.txt", None, b"ok"),
            ("files", "huge.bin", None, &big),
        ]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "huge.bin exceeds per-file limit (25 MB)"})
        )
    );
    let full = vec![b'x'; 25 * mib];
    let reply = upload(
        &app,
        &id,
        &token,
        multipart(&[
            ("files", "a.bin", None, &full),
            ("files", "b.bin", None, &full),
            ("files", "c.bin", None, b"!"),
        ]),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "upload exceeds per-request limit (50 MB)"})
        )
    );
    assert_eq!(stored_count(&app).await, 0);

    let stored = upload(
        &app,
        &id,
        &token,
        multipart(&[
            ("files", "a.bin", None, &full),
            ("files", "b.bin", None, &full),
        ]),
    )
    .await;
    assert_eq!(stored.status, StatusCode::OK);
    let over_quota = upload(
        &app,
        &id,
        &token,
        multipart(&[("files", "c.bin", None, &big[..11 * mib])]),
    )
    .await;
    assert_eq!(
        (over_quota.status, over_quota.body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "workspace upload quota exceeded"})
        )
    );
    assert_eq!(stored_count(&app).await, 2);

    let refusals: [(Vec<u8>, &str, StatusCode, Value); 3] = [
        (
            multipart(&[("other", "a.txt", None, b"x")]),
            token.as_str(),
            StatusCode::BAD_REQUEST,
            json!({"error": "expected at least one 'files' field"}),
        ),
        (
            b"--nope\r\nbroken".to_vec(),
            token.as_str(),
            StatusCode::BAD_REQUEST,
            json!({"error": "failed to parse multipart form"}),
        ),
        (
            multipart(&[("files", "a.txt", None, b"x")]),
            "wrong-token",
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid workspace auth token"}),
        ),
    ];
    for (body, bearer, status, error) in refusals {
        let reply = upload(&app, &id, bearer, body).await;
        assert_eq!((reply.status, reply.body), (status, error));
    }
    let not_multipart = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/chat/uploads"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        not_multipart.body,
        json!({"error": "failed to parse multipart form"})
    );
    let malformed_id = upload(
        &app,
        "nope",
        &token,
        multipart(&[("files", "a.txt", None, b"x")]),
    )
    .await;
    assert_eq!(malformed_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(stored_count(&app).await, 2);
}

#[tokio::test]
async fn uploads_expire_and_go_with_their_workspace() {
    let app = spawn_app_with(Options {
        runtime: RuntimeArgs {
            upload_ttl: std::time::Duration::from_secs(1),
            ..RuntimeArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("worker", None).await;
    let reply = upload(
        &app,
        &id,
        &token,
        multipart(&[("files", "a.txt", None, b"short-lived")]),
    )
    .await;
    let path = reply.body["files"][0]["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("workspace:")
        .unwrap()
        .to_owned();
    eventually(10, || async {
        (download(&app, &id, &token, &path).await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;

    let second = spawn_app().await;
    let (id, token) = second.registered_agent("worker", None).await;
    upload(
        &second,
        &id,
        &token,
        multipart(&[("files", "a.txt", None, b"kept")]),
    )
    .await;
    assert_eq!(stored_count(&second).await, 1);
    let purged = second
        .admin(
            Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            None,
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(stored_count(&second).await, 0);
}

/// Audit N9: on Postgres, concurrent uploads each saw the quota free and all committed (10
/// stored into room for 6). The check and the insert are serialised per workspace now.
#[tokio::test]
async fn concurrent_uploads_never_exceed_the_quota() {
    let file = vec![b'q'; 100 * 1024];
    let app = spawn_app_with(Options {
        runtime: RuntimeArgs {
            upload_quota_bytes: 6 * file.len() as u64,
            ..RuntimeArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("worker", None).await;
    let body = multipart(&[("files", "part.bin", None, &file)]);
    let replies =
        futures::future::join_all((0..10).map(|_| upload(&app, &id, &token, body.clone()))).await;
    let stored = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::OK)
        .count();
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::OK)
    {
        assert_eq!(
            (reply.status, &reply.body),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "workspace upload quota exceeded"})
            )
        );
    }
    assert_eq!(stored, 6, "exactly the quota's room is used");
    assert_eq!(stored_count(&app).await, 6);
}

/// `send_message_to_user`'s upload at the pace of a slow link: the multipart body in `parts`,
/// each sent `gap` after the last; with `stall`, the body then goes silent without ending.
async fn slow_upload(
    app: &TestApp,
    id: &str,
    token: &str,
    parts: Vec<Vec<u8>>,
    gap: std::time::Duration,
    stall: bool,
) -> Reply {
    use futures::StreamExt as _;
    let paced = futures::stream::iter(parts).then(move |part| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, std::io::Error>(part)
    });
    let body = if stall {
        reqwest::Body::wrap_stream(paced.chain(futures::stream::pending()))
    } else {
        reqwest::Body::wrap_stream(paced)
    };
    app.raw(
        app.http
            .post(format!("{}/workspaces/{id}/chat/uploads", app.rest))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body),
    )
    .await
}

/// Audit N11: an authenticated upload slower than ~14 Mbit/s was cut at 30 s with a 400
/// "failed to parse multipart form". An authenticated body is timed by its silences, not its
/// length, and one that stalls gets 408.
#[tokio::test]
async fn a_slow_authenticated_upload_completes_and_a_stalled_one_is_408() {
    let timeout = std::time::Duration::from_secs(1);
    let app = spawn_app_with(Options {
        listener: molecule::config::ListenerArgs {
            body_read_timeout: timeout,
            ..molecule::config::ListenerArgs::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("uploader", None).await;
    let body = multipart(&[("files", "slow.bin", None, &vec![b's'; 64 * 1024])]);
    let parts: Vec<Vec<u8>> = body
        .chunks(body.len() / 8 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    let started = std::time::Instant::now();
    let slow = slow_upload(&app, &id, &token, parts.clone(), timeout / 3, false).await;
    assert!(
        started.elapsed() > timeout * 2,
        "longer than the timeout in all"
    );
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.text);
    assert_eq!(slow.body["files"][0]["size"], 64 * 1024);

    let stalled = slow_upload(&app, &id, &token, parts[..2].to_vec(), timeout / 3, true).await;
    assert_eq!(
        (stalled.status, stalled.body),
        (
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "request body timeout"})
        )
    );
    assert_eq!(
        stored_count(&app).await,
        1,
        "nothing of the stalled upload is stored"
    );
}

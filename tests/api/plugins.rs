//! Plugins (docs/workspaces.md §5): the catalogue, downloads that unpack to the source bytes, the
//! documented errors, the allowlist, the own-token rule, and install records (O4).

use std::{collections::BTreeMap, fs, os::unix::fs::PermissionsExt, path::PathBuf};

use molecule::pb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    grpc::authed,
    helpers::{Options, TestApp, spawn_app_with},
};

/// A plugins dir: `alpha` (a manifest, nested, binary and executable files, a symlink that
/// must not leak) and `beta` (no manifest), plus a stray file.
pub(crate) fn plugins_dir() -> PathBuf {
    let root = std::env::temp_dir().join(format!("plugins-{}", uuid::Uuid::new_v4().simple()));
    let alpha = root.join("alpha");
    fs::create_dir_all(alpha.join("skills/research")).unwrap();
    fs::create_dir_all(alpha.join("empty")).unwrap();
    fs::write(
        alpha.join("plugin.yaml"),
        "name: alpha\nversion: 1.2.0\ndescription: Research skills\nauthor: Acme\ntags: [research, web]\nruntimes: [claude-code]\n",
    )
    .unwrap();
    fs::write(
        alpha.join("skills/research/SKILL.md"),
        "# Research\nFind things.\n",
    )
    .unwrap();
    fs::write(
        alpha.join("blob.bin"),
        (0..=255u8).cycle().take(70_000).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(alpha.join("setup.sh"), "#!/bin/sh\necho ok\n").unwrap();
    fs::set_permissions(alpha.join("setup.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", alpha.join("passwd")).unwrap();
    fs::create_dir_all(root.join("beta")).unwrap();
    fs::write(root.join("beta/README.md"), "beta\n").unwrap();
    fs::write(root.join("stray.txt"), "not a plugin").unwrap();
    root
}

async fn app_with(options: Options) -> (TestApp, PathBuf) {
    let dir = plugins_dir();
    let app = spawn_app_with(Options {
        plugins_dir: Some(dir.clone()),
        ..options
    })
    .await;
    (app, dir)
}

/// Every file of an archive: path → (mode, bytes). Directories map to `None`.
fn unpack(bytes: &[u8]) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let content = match entry.header().entry_type() {
                tar::EntryType::Directory => None,
                tar::EntryType::Regular => {
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
                    Some(content)
                }
                other => panic!("unexpected entry type {other:?} for {path}"),
            };
            (path, (mode, content))
        })
        .collect()
}

#[tokio::test]
async fn the_catalogue_lists_plugin_directories_with_their_manifests() {
    let (app, _dir) = app_with(Options::default()).await;
    let all = app.get("/plugins", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.text,
        concat!(
            r#"[{"name":"alpha","version":"1.2.0","description":"Research skills","author":"Acme","tags":["research","web"],"skills":null,"runtimes":["claude-code"]},"#,
            r#"{"name":"beta","version":"","description":"","author":"","tags":null,"skills":null,"runtimes":null}]"#
        )
    );
    let matching = app.get("/plugins?runtime=claude_code", None).await;
    assert_eq!(matching.body.as_array().unwrap().len(), 2);
    let other = app.get("/plugins?runtime=langgraph", None).await;
    assert_eq!(other.body[0]["name"], "beta");
    assert_eq!(other.body.as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/plugins/sources", None).await.text,
        r#"{"schemes":["github","local"]}"#
    );
}

#[tokio::test]
async fn a_download_unpacks_to_the_source_bytes() {
    let (app, dir) = app_with(Options::default()).await;
    let (id, token) = app.registered_agent("installer", None).await;
    let reply = app
        .http
        .get(format!(
            "{}/workspaces/{id}/plugins/alpha/download",
            app.rest
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let headers = reply.headers().clone();
    let bytes = reply.bytes().await.unwrap();
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(
        headers["content-disposition"],
        r#"attachment; filename="alpha.tar.gz""#
    );
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert_eq!(headers["x-plugin-name"], "alpha");
    assert_eq!(headers["x-plugin-source"], "local://alpha");
    assert_eq!(
        headers["x-plugin-sha256"],
        hex::encode(Sha256::digest(&bytes)).as_str()
    );

    let files = unpack(&bytes);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "blob.bin",
            "empty",
            "plugin.yaml",
            "setup.sh",
            "skills",
            "skills/research",
            "skills/research/SKILL.md"
        ]
    );
    for (path, (mode, content)) in &files {
        match content {
            None => assert_eq!(*mode, 0o755, "{path}"),
            Some(content) => {
                assert_eq!(
                    content,
                    &fs::read(dir.join("alpha").join(path)).unwrap(),
                    "{path}"
                );
                let expected = if path == "setup.sh" { 0o755 } else { 0o644 };
                assert_eq!(*mode, expected, "{path}");
            }
        }
    }

    // The same archive over gRPC, in chunks after a header.
    let mut client = pb::plugins_client::PluginsClient::new(app.grpc_channel().await);
    let request = pb::DownloadPluginRequest {
        workspace_id: id.clone(),
        name: "alpha".into(),
        source: "local://alpha".into(),
    };
    let mut stream = client
        .download(authed(request, &token))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    let mut header = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        match chunk.part.unwrap() {
            pb::plugin_chunk::Part::Header(first) => header = Some(first),
            pb::plugin_chunk::Part::Data(data) => streamed.extend_from_slice(&data),
        }
    }
    assert_eq!(streamed, bytes.as_ref());
    assert_eq!(header.unwrap().size, bytes.len() as u64);
}

#[tokio::test]
async fn downloads_answer_the_documented_errors() {
    let (app, _dir) = app_with(Options {
        plugin_allowlist: "alpha,ghost",
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("strict", None).await;
    let (_, other_token) = app.registered_agent("other", None).await;
    let download = |name: &str, source: Option<&str>| {
        let mut path = format!("/workspaces/{id}/plugins/{name}/download");
        if let Some(source) = source {
            path.push_str(&format!("?source={}", source.replace('#', "%23")));
        }
        path
    };
    let cases = [
        (
            download("a..b", None),
            400,
            json!({"error": "invalid plugin name"}),
        ),
        (
            download("alpha", Some("s3://bucket/alpha")),
            400,
            json!({"error": "failed to resolve plugin source", "available_schemes": ["github", "local"]}),
        ),
        (
            download("alpha", Some("local://")),
            400,
            json!({"error": "invalid plugin source"}),
        ),
        (
            download("alpha", Some("local://../etc")),
            400,
            json!({"error": "invalid plugin name"}),
        ),
        (
            download("tools", Some("github://acme/tools")),
            422,
            json!({"error": "unpinned github source: append a tag or commit SHA (e.g. \"github://owner/repo#v1.2.0\"). Set PLUGIN_ALLOW_UNPINNED=true to override", "source": "github://acme/tools"}),
        ),
        (
            download("ghost", None),
            404,
            json!({"error": "failed to fetch plugin from local", "source": "local://ghost"}),
        ),
        (
            download("alpha", Some("local://beta")),
            400,
            json!({"error": "source resolved to plugin \"beta\" but URL requested \"alpha\"", "resolved_name": "beta", "requested_name": "alpha"}),
        ),
        (
            download("beta", None),
            403,
            json!({"error": "plugin \"beta\" is not in the org plugin allowlist"}),
        ),
    ];
    for (path, status, body) in cases {
        let reply = app.get(&path, Some(&token)).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text);
        assert_eq!(reply.body, body, "{path}");
    }
    // The own-token rule: neither the admin nor another workspace.
    let path = download("alpha", None);
    for bearer in [&app.admin_token, &other_token] {
        let reply = app.get(&path, Some(bearer)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.text, r#"{"error":"invalid workspace auth token"}"#);
    }
    // The org-level download takes any credential, and none is not enough.
    assert_eq!(
        app.get("/plugins/alpha/download", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.admin_get("/plugins/alpha/download").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/plugins/alpha/download", Some(&other_token))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_tree_over_the_size_limit_is_refused() {
    let (app, _dir) = app_with(Options {
        plugin_max_dir_bytes: Some(1024),
        ..Options::default()
    })
    .await;
    let reply = app.admin_get("/plugins/alpha/download").await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.body,
        json!({"error": "staged plugin exceeds size limit", "source": "local://alpha"})
    );
    assert_eq!(
        app.admin_get("/plugins/beta/download").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn external_agents_record_their_installs() {
    let (app, _dir) = app_with(Options::default()).await;
    let (id, token) = app.registered_agent("external", None).await;
    let path = format!("/workspaces/{id}/plugins");
    let reply = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"source": "local://alpha"})),
        )
        .await;
    assert_eq!(
        reply.text,
        r#"{"status":"installed","plugin":"alpha","source":"local://alpha"}"#
    );
    let pinned = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"source": "github://acme/tools#v1"})),
        )
        .await;
    assert_eq!(pinned.body["plugin"], "tools");
    let rows: Vec<(String, String)> = {
        use molecule::store::entities::workspace_plugin;
        use sea_orm::{EntityTrait, QueryOrder};
        workspace_plugin::Entity::find()
            .order_by_asc(workspace_plugin::Column::Plugin)
            .all(&app.db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.plugin, row.source))
            .collect()
    };
    assert_eq!(
        rows,
        [
            ("alpha".to_owned(), "local://alpha".to_owned()),
            ("tools".to_owned(), "github://acme/tools#v1".to_owned())
        ]
    );
    let bad = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"source": 3})),
        )
        .await;
    assert_eq!(bad.text, r#"{"error":"invalid request body"}"#);
    // PLUGIN_INSTALL_BODY_MAX_BYTES (64 KiB): larger bodies are refused and record nothing.
    let oversize = app
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"source": "local://alpha", "pad": "x".repeat(65 * 1024)})),
        )
        .await;
    assert_eq!(oversize.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(oversize.text, r#"{"error":"request body too large"}"#);

    let container = app.create_workspace(json!({"name": "container"})).await;
    let reply = app
        .admin(
            Method::POST,
            &format!("/workspaces/{container}/plugins"),
            Some(json!({"source": "local://alpha"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text, r#"{"error":"workspace container not running"}"#);
}

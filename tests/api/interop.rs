//! Interop with the real agents' language: a Python gRPC client built from `proto/` with
//! grpcio-tools registers over REST, streams heartbeats, and receives a pushed control frame;
//! a plugin installs through Python's `tarfile` as the SDK does, byte for byte.
//! The Python environment is created under `target/` on first use (pip, from PyPI).

use std::{path::PathBuf, process::Command};

use serde_json::json;

use sha2::{Digest, Sha256};

use crate::{
    helpers::{Options, spawn_app, spawn_app_with},
    plugins::plugins_dir,
};

/// A virtualenv with `tests/interop/requirements.txt`, made once per target dir.
fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/interop-venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/interop/requirements.txt");
    let marker = venv.join(".installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(status.success(), "pip install failed");
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}

/// Runs `tests/interop/<script>` with `args` in the interop virtualenv; its stdout, once it
/// has succeeded.
pub(crate) async fn run_python(script: &str, args: Vec<String>) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    crate::helpers::succeeded(&output)
}

#[tokio::test]
async fn a_python_agent_streams_heartbeats_and_sees_a_pause() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "py-agent", "external": true}))
        .await;
    let base = format!("http://{}", app.addr);
    let stdout = run_python(
        "heartbeat_stream.py",
        vec![base, id.clone(), app.admin_token.clone()],
    )
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "REGISTERED",
            "ACK 7 online",
            "CONTROL PAUSED WORKSPACE_PAUSED",
            "DONE"
        ]
    );
    let view = app.admin_get(&format!("/workspaces/{id}")).await.body;
    assert_eq!(view["status"], "paused", "a goodbye does not unpause");
    assert_eq!(view["agent_card"], json!({"name": "py-agent"}));
}

#[tokio::test]
async fn the_python_snippet_of_a_create_reply_runs_as_pasted() {
    let app = spawn_app().await;
    let created = app
        .admin(
            reqwest::Method::POST,
            "/workspaces",
            Some(json!({"name": "pasted", "external": true})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let snippet = created.body["connection"]["python_snippet"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = std::env::temp_dir().join(format!("snippet-{id}.py"));
    std::fs::write(&file, snippet).unwrap();
    let stdout = run_python("snippet_check.py", vec![file.display().to_string()]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "INSTALL",
            &format!("CLIENT {id} {}", app.rest),
            "REGISTER",
            "REPLY received: hello"
        ]
    );
}

#[tokio::test]
async fn a_python_agent_installs_a_plugin_byte_for_byte() {
    let dir = plugins_dir();
    let app = spawn_app_with(Options {
        plugins_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("py-installer", None).await;
    let base = format!("http://{}", app.addr);
    let stdout = run_python("plugin_install.py", vec![base, id, token, "alpha".into()]).await;
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.pop(), Some("RECORDED installed"));
    lines.sort_unstable();
    let digest = |path: &str| {
        hex::encode(Sha256::digest(
            std::fs::read(dir.join("alpha").join(path)).unwrap(),
        ))
    };
    let expected: Vec<String> = [
        ("blob.bin", "0o644"),
        ("plugin.yaml", "0o644"),
        ("setup.sh", "0o755"),
        ("skills/research/SKILL.md", "0o644"),
    ]
    .iter()
    .map(|(path, mode)| format!("{path} {} {mode}", digest(path)))
    .collect();
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn the_runtimes_own_tool_calls_succeed_as_it_checks_them() {
    let app = spawn_app().await;
    let (parent, parent_token) = app.registered_agent("lead", None).await;
    let (id, token) = app.registered_agent("worker", Some(&parent)).await;
    let rule = json!({"scope": "global", "title": "Be brief", "content": "One paragraph."});
    let created = app
        .admin(reqwest::Method::POST, "/instructions", Some(rule))
        .await;
    assert_eq!(created.status, reqwest::StatusCode::CREATED);
    let context = json!([{"path": "GOALS.md", "content": "Ship 1.2."}]);
    let published = app
        .call(
            reqwest::Method::PUT,
            &format!("/workspaces/{parent}/shared-context"),
            Some(&parent_token),
            Some(context.clone()),
        )
        .await;
    assert_eq!(published.status, reqwest::StatusCode::OK);

    let stdout = run_python(
        "runtime_tools.py",
        vec![
            app.rest.clone(),
            id.clone(),
            token,
            parent.clone(),
            parent_token,
        ],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        seen["team_search"],
        json!(["the deployment pipeline uses blue-green releases"]),
        "TEAM reads the team's rows, stemmed"
    );
    assert_eq!(seen["recalled"], json!(["[REDACTED:API_KEY] rotated"]));
    let uploaded = seen["uploaded"].as_array().unwrap();
    assert_eq!(uploaded[0]["name"], "build_output.txt");
    assert_eq!(uploaded[0]["mimeType"], "text/plain");
    assert_eq!(uploaded[1]["mimeType"], "image/png");
    let decider = format!("workspace:{parent}");
    assert_eq!(
        seen["approval_ws"],
        json!({"approved": true, "decided_by": decider})
    );
    assert_eq!(
        seen["approval_poll"],
        json!({"status": "approved", "decided_by": decider})
    );
    assert_eq!(
        seen["instructions"],
        "\n## Platform-Wide Rules\n\n### Be brief\nOne paragraph.\n\n"
    );
    assert_eq!(seen["parent_context"], context);
    assert_eq!(
        seen["latest_checkpoint"],
        json!({"workflow_id": "t-1", "step_name": "llm_call"})
    );
}

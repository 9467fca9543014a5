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

#[tokio::test]
async fn a_python_agent_streams_heartbeats_and_sees_a_pause() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "py-agent", "external": true}))
        .await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/heartbeat_stream.py");
    let base = format!("http://{}", app.addr);
    let admin = app.admin_token.clone();
    let id_arg = id.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, &id_arg, &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let python = tokio::task::spawn_blocking(python).await.unwrap();
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
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/snippet_check.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = plugins_dir();
    let app = spawn_app_with(Options {
        plugins_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let (id, token) = app.registered_agent("py-installer", None).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/plugin_install.py");
    let base = format!("http://{}", app.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, &id, &token, "alpha"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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

//! The operator CLI (`molecule ws|events|token|a2a|schedule|org|audit|completions`) against the
//! real server: each subcommand, with `--output json` parsed.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    a2a::fake_agent,
    cli::molecule,
    helpers::{TestApp, spawn_app},
};

/// `molecule <args> --url <server> --token <admin>`, run to its end.
async fn run(app: &TestApp, args: &[&str]) -> Output {
    let mut command = molecule();
    command
        .args(args)
        .args(["--url", &format!("http://{}", app.addr)])
        .arg(format!("--token={}", app.admin_token));
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The JSON a successful `-o json` command printed.
async fn json_of(app: &TestApp, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let output = run(app, &args).await;
    let stdout = crate::helpers::succeeded(&output);
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// A long-running command whose stdout lines arrive on a channel, started once its first line
/// on stderr (`following events …`) or stdout (a list) shows it is listening.
fn follow(app: &TestApp, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = molecule()
        .args(args)
        .args(["--url", &format!("http://{}", app.addr)])
        .arg(format!("--token={}", app.admin_token))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, receiver) = mpsc::channel();
    let (ready, listening) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let started = ready.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = started.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = ready.send(String::new());
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    listening
        .recv_timeout(Duration::from_secs(10))
        .expect("the command starts listening within 10s");
    (child, receiver)
}

/// The first line (within 10 s) that parses as JSON and satisfies `matches`.
fn next_json(lines: &mpsc::Receiver<String>, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a matching line within 10s");
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && matches(&value)
        {
            return value;
        }
    }
}

#[tokio::test]
async fn ws_commands_create_list_pause_resume_and_remove() {
    let app = spawn_app().await;
    let created = json_of(&app, &["ws", "create", "cli-agent", "--external"]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "awaiting_agent");
    assert_eq!(
        created["connection"]["registry_endpoint"],
        format!("http://{}/registry/register", app.addr)
    );

    let listed = json_of(&app, &["ws", "ls"]).await;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (row["name"].clone(), row["remote"].clone()),
        (json!("cli-agent"), json!(true))
    );
    let table = run(&app, &["ws", "ls"]).await;
    let table = crate::helpers::succeeded(&table);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains("remote"), "{table}");

    let paused = json_of(&app, &["ws", "pause", &id]).await;
    assert_eq!(paused, json!({"status": "paused", "paused_count": 1}));
    let got = json_of(&app, &["ws", "get", &id]).await;
    assert_eq!(got["status"], "paused");
    let resumed = json_of(&app, &["ws", "resume", &id]).await;
    assert_eq!(resumed["resumed_count"], 1);

    let child = json_of(&app, &["ws", "create", "child", "--parent", &id]).await;
    let refused = run(&app, &["ws", "rm", &id]).await;
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: this workspace has sub-workspaces: pass --yes to remove them too"
    );
    let removed = json_of(&app, &["ws", "rm", &id, "--yes"]).await;
    assert_eq!(removed, json!({"status": "removed", "cascade_deleted": 1}));
    let gone = app
        .admin_get(&format!("/workspaces/{}", child["id"].as_str().unwrap()))
        .await;
    assert_eq!(gone.body["status"], "removed");
}

#[tokio::test]
async fn token_commands_mint_list_and_revoke() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "tokened", "external": true}))
        .await;
    let minted = json_of(&app, &["token", "create", &id]).await;
    let token = minted["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(minted["workspace_id"], id.as_str());
    let listed = json_of(&app, &["token", "ls", &id]).await;
    let tokens = listed.as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["prefix"], &token[..8]);
    let token_id = tokens[0]["id"].as_str().unwrap().to_owned();
    let revoked = json_of(&app, &["token", "revoke", &id, &token_id]).await;
    assert_eq!(revoked, json!({"status": "revoked", "id": token_id}));
    assert_eq!(json_of(&app, &["token", "ls", &id]).await, json!([]));
    let refused = app.heartbeat(&id, &token, json!({})).await;
    assert_eq!(refused.status, reqwest::StatusCode::UNAUTHORIZED);
}

// Multi-threaded: the test blocks on the children's output while the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_and_watch_print_changes_as_they_happen() {
    let app = spawn_app().await;
    let id = app
        .create_workspace(json!({"name": "watched", "external": true}))
        .await;
    let (mut events, event_lines) = follow(
        &app,
        &["events", "-f", "-o", "json", "--type", "WORKSPACE_PAUSED"],
    );
    let (mut watch, watch_lines) = follow(&app, &["ws", "ls", "--watch", "-o", "json"]);
    // The watch prints the whole list first (piped: a JSON array), then one line per change.
    let first = watch_lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the list");
    assert_eq!(first, "[");
    let paused = app
        .admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, reqwest::StatusCode::OK);
    let event = next_json(&event_lines, |value| value["event"] == "WORKSPACE_PAUSED");
    assert_eq!(event["workspace_id"], id.as_str());
    let change = next_json(&watch_lines, |value| value.get("workspace").is_some());
    assert_eq!(change["workspace"]["id"], id.as_str());
    assert_eq!(change["workspace"]["status"], "paused");
    events.kill().unwrap();
    watch.kill().unwrap();
}

#[tokio::test]
async fn a2a_send_prints_the_agents_answer() {
    let app = spawn_app().await;
    let (agent, _) = fake_agent().await;
    let id = app
        .create_workspace(json!({"name": "answering", "external": true}))
        .await;
    let registered = app.register(&id, &format!("{agent}/answer"), None).await;
    assert_eq!(
        registered.status,
        reqwest::StatusCode::OK,
        "{}",
        registered.text
    );
    let output = run(&app, &["a2a", "send", &id, "ship it"]).await;
    assert_eq!(crate::helpers::succeeded(&output).trim(), "done: ship it");
    let answer = json_of(&app, &["a2a", "send", &id, "again"]).await;
    assert_eq!(answer["result"]["parts"][0]["text"], "done: again");
}

#[tokio::test]
async fn credentials_default_to_the_local_admin_token_and_bad_ones_fail_in_one_line() {
    let app = spawn_app().await;
    let data_dir = std::env::temp_dir().join(format!("molecule-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(
        data_dir.join("admin-token"),
        format!("{}\n", app.admin_token),
    )
    .unwrap();
    let mut command = molecule();
    command
        .args(["ws", "ls", "-o", "json", "--url"])
        .arg(app.addr.to_string())
        .env("MOLECULE_DATA_DIR", &data_dir)
        .env_remove("MOLECULE_TOKEN");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&crate::helpers::succeeded(&output)).unwrap(),
        json!([])
    );

    let mut command = molecule();
    command
        .args(["ws", "ls", "--url", &format!("http://{}", app.addr)])
        .env("MOLECULE_TOKEN", "wrong");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: invalid admin auth token (Unauthenticated)"
    );
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut command = molecule();
        command.args(["completions", shell]);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let script = crate::helpers::succeeded(&output);
        assert!(
            script.contains("molecule") && script.contains("watch"),
            "{shell}"
        );
    }
}

/// Audit N6: the CLI spoke cleartext h2c to an `https://` URL (a capture server logged the
/// bearer), and sent the local generated admin token to whatever `--url` named.
#[tokio::test]
async fn the_cli_speaks_tls_to_https_and_keeps_the_local_token_local() {
    let capture = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = capture.local_addr().unwrap().port();
    let captured = std::thread::spawn(move || {
        let (mut socket, _) = capture.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut bytes = vec![0u8; 16 * 1024];
        let read = std::io::Read::read(&mut socket, &mut bytes).unwrap_or(0);
        bytes.truncate(read);
        bytes
    });
    let secret = "n6-bearer-that-must-never-travel-in-clear";
    let output = tokio::task::spawn_blocking(move || {
        molecule()
            .args(["ws", "ls", "--url", &format!("https://127.0.0.1:{port}")])
            .arg(format!("--token={secret}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let bytes = captured.join().unwrap();
    assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record first");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(secret) && !text.contains("PRI * HTTP/2.0"),
        "{text}"
    );

    // No --token: the generated admin token is read only for a loopback server.
    let dir = std::env::temp_dir().join(format!("molecule-n6-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin-token"), "n6-local-admin-token").unwrap();
    let remote = molecule()
        .args(["ws", "ls", "--url", "http://192.0.2.1:9", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&remote.stderr);
    assert!(!remote.status.success());
    assert!(
        stderr.contains("no credential for http://192.0.2.1:9")
            && stderr.contains("only sent to a loopback --url"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn schedule_org_config_and_audit_commands_do_what_operators_script() {
    let app = spawn_app().await;
    let imported = json_of(&app, &["org", "import", "templates/support-desk/org.yaml"]).await;
    assert_eq!(
        (&imported["created"], &imported["count"]),
        (&json!(true), &json!(3))
    );
    let again = json_of(&app, &["org", "import", "templates/support-desk/org.yaml"]).await;
    assert_eq!(again["created"], false);
    let templates = json_of(&app, &["org", "templates"]).await;
    assert_eq!(templates.as_array().unwrap().len(), 2);
    let triage = imported["workspaces"][0]["id"].as_str().unwrap().to_owned();

    let listed = json_of(&app, &["schedule", "ls", &triage]).await;
    assert_eq!(listed[0]["name"], "backlog sweep");
    let added = json_of(
        &app,
        &[
            "schedule",
            "add",
            &triage,
            "--cron",
            "0 9 * * 1-5",
            "--prompt",
            "standup",
            "--name",
            "standup",
            "--timezone",
            "Europe/Berlin",
        ],
    )
    .await;
    let schedule = added["id"].as_str().unwrap().to_owned();
    assert!(added["next_run_at"].is_string());
    let fired = json_of(&app, &["schedule", "run", &triage, &schedule]).await;
    assert_eq!(fired["status"], "fired");
    let removed = json_of(&app, &["schedule", "rm", &triage, &schedule]).await;
    assert_eq!(removed["status"], "deleted");
    assert_eq!(
        json_of(&app, &["schedule", "ls", &triage])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bad = run(
        &app,
        &[
            "schedule",
            "add",
            &triage,
            "--cron",
            "61 * * * *",
            "--prompt",
            "x",
        ],
    )
    .await;
    assert!(!bad.status.success());

    let file = std::env::temp_dir().join(format!("config-{}.yaml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, "model: opus\ntools: [search]\n").unwrap();
    let set = json_of(
        &app,
        &["ws", "config", "set", &triage, file.to_str().unwrap()],
    )
    .await;
    assert_eq!(set["status"], "updated");
    let text = run(&app, &["ws", "config", "get", &triage]).await;
    assert_eq!(
        crate::helpers::succeeded(&text),
        "model: opus\ntools: [search]\n"
    );
    let parsed = json_of(&app, &["ws", "config", "get", &triage]).await;
    assert_eq!(
        parsed["data"],
        json!({"model": "opus", "tools": ["search"]})
    );

    let trail = json_of(&app, &["audit", "ls", &triage]).await;
    let operations: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        [
            "workspace.create",
            "schedule.create",
            "schedule.run",
            "schedule.delete",
            "config.update"
        ]
    );
    assert_eq!(trail["chain_valid"], true);
    let org = json_of(&app, &["audit", "ls"]).await;
    assert_eq!(org["events"][0]["operation"], "org.import");
}

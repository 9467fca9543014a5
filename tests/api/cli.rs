//! The `molecule` binary itself: first-boot credentials, the production refusal, `migrate`, and
//! a clean exit on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

pub(crate) fn molecule() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_molecule"));
    for variable in [
        "DATABASE_URL",
        "REDIS_URL",
        "ADMIN_TOKEN",
        "SECRETS_ENCRYPTION_KEY",
        "SECRETS_ENCRYPTION_KEY_PREVIOUS",
        "MOLECULE_ENV",
        "MOLECULE_LOG_FORMAT",
        "MOLECULE_URL",
        "MOLECULE_TOKEN",
        "GITHUB_APP_ID",
        "GITHUB_APP_PRIVATE_KEY",
        "GITHUB_APP_INSTALLATION_ID",
        "AUDIT_LEDGER_SALT",
    ] {
        command.env_remove(variable);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// `molecule serve` on `listen`, its data in `dir`, logging at `info` into a piped stdout.
pub(crate) fn serve(dir: &std::path::Path, listen: &str) -> Command {
    let mut command = molecule();
    command
        .args(["serve", "--listen", listen])
        .env("MOLECULE_DATA_DIR", dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    command
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("molecule-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn production_refuses_to_boot_without_its_credentials() {
    let dir = temp_dir();
    let output = molecule()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MOLECULE_ENV", "production")
        .env("MOLECULE_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "error: refusing to start in production without ADMIN_TOKEN"
    );
    let output = molecule()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MOLECULE_ENV", "prod")
        .env("ADMIN_TOKEN", "x".repeat(43))
        .env("MOLECULE_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: refusing to start in production without SECRETS_ENCRYPTION_KEY"
    );
    let short = molecule()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MOLECULE_ENV", "production")
        .env("ADMIN_TOKEN", "x".repeat(31))
        .env(
            "SECRETS_ENCRYPTION_KEY",
            molecule::crypto::SecretsKey::generate().to_base64(),
        )
        .env("MOLECULE_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert_eq!(
        String::from_utf8_lossy(&short.stderr).trim(),
        "error: refusing to start in production: ADMIN_TOKEN has 31 characters, at least 32 are required"
    );
    assert!(
        !dir.join("admin-token").exists(),
        "production never generates credentials"
    );
}

#[test]
fn an_unknown_mode_is_refused_in_one_line() {
    let dir = temp_dir();
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
        ],
    ] {
        let command = args[0];
        let output = molecule()
            .args(args)
            .env("MOLECULE_ENV", "prodution")
            .env("MOLECULE_DATA_DIR", &dir)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr).trim(),
            r#"error: MOLECULE_ENV="prodution" names no mode: use production (prod), development (dev), or leave it unset for the default mode"#,
            "{command}"
        );
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing was created"
    );
}

#[test]
fn first_boot_generates_credentials_once_and_sigterm_stops_cleanly() {
    // A data dir that does not exist yet: the server creates it, owner-only.
    let dir = temp_dir().join("data");
    let boot = || {
        serve(&dir, "127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = boot();
    let lines = drain_stdout(&mut first);
    // Log lines, then the three of the banner.
    let banner: Vec<String> = lines
        .iter()
        .skip_while(|line| !line.starts_with("generated an admin token"))
        .take(3)
        .collect();
    let token = std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 43);
    assert!(
        banner[0].starts_with("generated an admin token"),
        "{banner:?}"
    );
    // Output that is not a terminal is a log: it names the file, never the token.
    assert!(
        banner[2].contains(&format!(
            "curl -H \"Authorization: Bearer $(cat {})\"",
            dir.join("admin-token").display()
        )),
        "{banner:?}"
    );
    assert!(!banner.join("\n").contains(&token), "{banner:?}");
    assert!(
        !banner[2].contains("127.0.0.1:0/"),
        "the bound port: {banner:?}"
    );
    let mode = |file: &str| {
        std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "the data dir");
    // The database and its journals hold every token hash and sealed secret.
    for file in [
        "admin-token",
        "secrets.key",
        "molecule.db",
        "molecule.db-wal",
        "molecule.db-shm",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    stop_with_sigterm(first);

    let key = std::fs::read_to_string(dir.join("secrets.key")).unwrap();
    let mut second = boot();
    // SIGTERM once it serves: earlier, a loaded machine may not have run its handler setup yet.
    let lines = drain_stdout(&mut second);
    let mut printed: Vec<String> = Vec::new();
    while !printed.iter().any(|line| line.contains("molecule started")) {
        printed.push(lines.recv().expect("the server says it started"));
    }
    stop_with_sigterm_keep(&mut second);
    printed.extend(lines.iter());
    let printed = printed.join("\n");
    assert!(
        !printed.contains("generated an admin token"),
        "later boots reuse the token: {printed}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("admin-token"))
            .unwrap()
            .trim(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("secrets.key")).unwrap(),
        key
    );
}

/// The child's stdout lines as they come, read to its end by a thread of their own, so none is
/// lost to a pipe closed early.
fn drain_stdout(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    received
}

fn stop_with_sigterm_keep(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(
                status.success(),
                "exit after SIGTERM: {status}; stderr: {stderr}"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 10s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_with_sigterm(mut child: std::process::Child) {
    stop_with_sigterm_keep(&mut child);
}

#[test]
fn a_closed_stdout_costs_the_logs_not_the_server() {
    let dir = temp_dir().join("data");
    let port = crate::outage::free_port();
    let mut server = serve(&dir, &format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line (`molecule serve | head -0`): every log line and
    // the first-boot banner meet a closed pipe.
    drop(server.stdout.take());
    let stderr = server.stderr.take().unwrap();
    let health = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        std::io::Write::write_all(
            &mut stream,
            b"GET /health HTTP/1.1\r\nHost: molecule\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply).ok()?;
        Some(reply)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Some(reply) = health() {
            break reply;
        }
        assert!(server.try_wait().unwrap().is_none(), "the server exited");
        assert!(std::time::Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(dir.join("admin-token").exists());
    stop_with_sigterm_keep(&mut server);
    let mut complaints = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut complaints).unwrap();
    assert_eq!(complaints, "", "nothing on stderr for each lost line");
}

#[test]
fn migrate_applies_the_schema_and_exits() {
    let dir = temp_dir();
    let status = molecule()
        .args(["migrate"])
        .env("MOLECULE_DATA_DIR", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.join("molecule.db").exists());
    // Idempotent.
    assert!(
        molecule()
            .args(["migrate"])
            .env("MOLECULE_DATA_DIR", &dir)
            .status()
            .unwrap()
            .success()
    );
}

/// The README's quick start, run as written (with the test server's address for
/// `localhost:8080`): the agent registers, gets its token, and beats.
#[tokio::test]
async fn the_readme_quick_start_works_as_written() {
    let app = crate::helpers::spawn_app().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("a quick start section");
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a shell block");
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("molecule-data")).unwrap();
    std::fs::write(dir.join("molecule-data/admin-token"), &app.admin_token).unwrap();
    let address = app.rest.trim_start_matches("http://").to_owned();
    let script = format!(
        "set -euo pipefail\n{}",
        script.replace("localhost:8080", &address)
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = crate::helpers::succeeded(&output);
    assert!(stdout.starts_with(r#"{"status":"ok"}"#), "{stdout}");
    let listed = app.admin_get("/workspaces").await.body;
    assert_eq!(listed[0]["name"], "researcher");
    assert_eq!(listed[0]["status"], "online");
}

#[test]
fn startup_errors_name_what_failed_and_where_and_leave_no_credentials() {
    let failing_start = |env: &[(&str, &str)]| {
        let dir = temp_dir();
        let started = std::time::Instant::now();
        let mut command = molecule();
        command
            .args(["serve"])
            .env("MOLECULE_LISTEN", "127.0.0.1:0")
            .env("MOLECULE_DATA_DIR", &dir);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a refusal is reported at once, not after a pool timeout"
        );
        assert!(
            !dir.join("admin-token").exists(),
            "no credentials generated"
        );
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(
        failing_start(&[("REDIS_URL", &format!("redis://:hunter2@127.0.0.1:{port}"))]),
        format!(
            "error: cannot reach Redis (REDIS_URL=redis://:***@127.0.0.1:{port}): Connection refused (os error 111)"
        )
    );
    assert_eq!(
        failing_start(&[(
            "DATABASE_URL",
            &format!("postgres://postgres:hunter2@127.0.0.1:{port}/molecule")
        )]),
        format!(
            "error: cannot reach the database at 127.0.0.1:{port} (DATABASE_URL=postgres://postgres:***@127.0.0.1:{port}/molecule): Connection refused (os error 111)"
        )
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    assert_eq!(
        failing_start(&[("MOLECULE_LISTEN", &taken.to_string())]),
        format!(
            "error: cannot listen on {taken} (MOLECULE_LISTEN): Address already in use (os error 98)"
        )
    );
}

/// `molecule serve` as one more replica on `backend`, returned once it says it started (its
/// stdout drained by a thread). `child.kill()` stops it without a word, as `kill -9` does.
pub(crate) fn replica_process(
    backend: &crate::helpers::Backend,
    admin_token: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut command = molecule();
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MOLECULE_DATA_DIR", &backend.data_dir)
        .env("DATABASE_URL", &backend.database_url)
        .env("MOLECULE_REDIS_NAMESPACE", &backend.redis_namespace)
        .env("ADMIN_TOKEN", admin_token)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(redis) = &backend.redis_url {
        command.env("REDIS_URL", redis);
    }
    let mut child = command.spawn().unwrap();
    let lines = drain_stdout(&mut child);
    while !lines
        .recv()
        .expect("the replica says it started")
        .contains("molecule started")
    {}
    child
}

//! What a platform engineer runs the server by: readiness (`/readyz`, gRPC health, `molecule
//! health`) following the datastore and Redis, probes outside the rate limiter, JSON log lines,
//! and `molecule migrate status`.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    cli::{molecule, serve},
    helpers::{Options, TestApp, eventually, spawn_app, spawn_app_with, spawn_on, succeeded},
    outage::{free_port, gated_postgres, start_redis},
};

/// `/readyz` once it answers `status`, with its body.
async fn readyz_once(app: &TestApp, status: StatusCode) -> Value {
    eventually(20, || async {
        let reply = app.get("/readyz", None).await;
        (reply.status == status).then_some(reply.body)
    })
    .await
}

async fn grpc_health(app: &TestApp, service: &str) -> ServingStatus {
    let reply = HealthClient::new(app.grpc_channel().await)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    reply.status()
}

#[tokio::test]
async fn readiness_follows_redis_down_and_back() {
    let port = free_port();
    let mut redis = start_redis(port);
    let mut backend = crate::helpers::Backend::fresh().await;
    backend.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let app = spawn_on(backend, Options::default()).await;
    assert_eq!(
        readyz_once(&app, StatusCode::OK).await,
        json!({"status": "ready"})
    );
    assert_eq!(grpc_health(&app, "").await, ServingStatus::Serving);

    let _ = redis.kill();
    let _ = redis.wait();
    let body = readyz_once(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body, json!({"status": "unavailable", "failing": ["redis"]}));
    assert_eq!(grpc_health(&app, "").await, ServingStatus::NotServing);
    assert_eq!(
        grpc_health(&app, "molecule.v1.Registry").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        grpc_health(&app, "molecule.datastore").await,
        ServingStatus::Serving
    );
    // Liveness is not readiness: the process still answers.
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);

    let mut redis = start_redis(port);
    readyz_once(&app, StatusCode::OK).await;
    assert_eq!(grpc_health(&app, "").await, ServingStatus::Serving);
    let _ = redis.kill();
    let _ = redis.wait();
}

#[tokio::test]
async fn readiness_follows_the_database_down_and_back() {
    let (backend, gate) = gated_postgres().await;
    let app = spawn_on(backend, Options::default()).await;
    readyz_once(&app, StatusCode::OK).await;

    gate.cut();
    let body = readyz_once(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        body,
        json!({"status": "unavailable", "failing": ["database"]})
    );
    assert_eq!(grpc_health(&app, "").await, ServingStatus::NotServing);

    gate.restore();
    readyz_once(&app, StatusCode::OK).await;
    assert_eq!(grpc_health(&app, "").await, ServingStatus::Serving);
}

#[tokio::test]
async fn probes_are_never_rate_limited() {
    let app = spawn_app_with(Options {
        rate_limit: 5,
        ..Options::default()
    })
    .await;
    for _ in 0..12 {
        for probe in ["/health", "/readyz", "/metrics"] {
            let reply = app.get(probe, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{probe}");
        }
    }
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.admin_get("/workspaces").await.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the limiter still counts other routes: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn molecule_health_exits_by_readiness() {
    let app = spawn_app().await;
    let url = app.rest.clone();
    let ready = tokio::task::spawn_blocking(move || {
        molecule().args(["health", "--url", &url]).output().unwrap()
    })
    .await
    .unwrap();
    let printed: Value = serde_json::from_str(&succeeded(&ready)).unwrap();
    assert_eq!(printed, json!({"status": "ready"}));

    let closed = format!("http://127.0.0.1:{}", free_port());
    let down = tokio::task::spawn_blocking(move || {
        molecule()
            .args(["health", "--url", &closed, "--timeout-seconds", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

/// Stdout lines of `molecule <args> serve` up to its start-up line, then the process is stopped.
fn lines_until_started(args: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("molecule-logs-{}", uuid::Uuid::new_v4().simple()));
    let mut child = serve(&dir, "127.0.0.1:0")
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let started = line.contains("molecule started");
        lines.push(line);
        if started {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    lines
}

#[test]
fn json_log_lines_parse_and_text_has_no_colour_off_a_terminal() {
    let lines = lines_until_started(&["--log-format", "json"]);
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let started = parsed
        .iter()
        .find(|line| line["message"] == "molecule started")
        .expect("a start-up line");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["mode"], "serve");
    // Audit N15: unset MOLECULE_ENV is the default mode, not production.
    assert_eq!(started["environment"], "default");
    assert_eq!(started["database"], "sqlite");
    assert_eq!(started["liveness_and_events"], "in-process");
    assert!(
        started["listen"]
            .as_str()
            .is_some_and(|listen| listen.starts_with("127.0.0.1:"))
    );
    assert!(started["timestamp"].is_string());

    let text = lines_until_started(&[]);
    assert!(text.last().unwrap().contains("molecule started"));
    assert!(
        text.iter().all(|line| !line.contains('\x1b')),
        "colour codes in a pipe: {text:?}"
    );
}

#[test]
fn version_is_printed() {
    let output = molecule().arg("--version").output().unwrap();
    assert_eq!(
        succeeded(&output).trim(),
        format!("molecule {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Audit N16: `--help` says where secrets belong, and never prints one from the environment.
#[test]
fn help_points_secrets_to_the_environment_and_never_echoes_them() {
    let output = molecule()
        .args(["serve", "--help"])
        .env("ADMIN_TOKEN", "help-must-not-show-this-token")
        .env(
            "DATABASE_URL",
            "postgres://user:help-must-not-show-this-password@db/x",
        )
        .output()
        .unwrap();
    let help = succeeded(&output);
    assert!(!help.contains("help-must-not-show"), "{help}");
    for flag in [
        "--admin-token",
        "--secrets-encryption-key",
        "--database-url",
        "--redis-url",
    ] {
        let described = help
            .split("\n      --")
            .find(|entry| entry.starts_with(&format!("{} ", &flag[2..])))
            .unwrap_or_else(|| panic!("{flag} in --help"));
        assert!(described.contains("`ps`"), "{flag}: {described}");
    }
    let cli = succeeded(&molecule().args(["ws", "ls", "--help"]).output().unwrap());
    assert!(cli.contains("`ps`"), "{cli}");
}

#[test]
fn migrate_status_lists_pending_then_applied_migrations() {
    let dir = std::env::temp_dir().join(format!(
        "molecule-migrate-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let status = || {
        let output = molecule()
            .args(["migrate", "status"])
            .env("MOLECULE_DATA_DIR", &dir)
            .output()
            .unwrap();
        succeeded(&output)
            .lines()
            .map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap().to_owned();
                (name, words.next().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    };
    let before = status();
    assert!(before.len() >= 5, "{before:?}");
    assert!(before.iter().all(|(_, state)| state == "pending"));
    assert_eq!(before[0].0, "m20261120_000001_initial");

    let migrated = molecule()
        .arg("migrate")
        .env("MOLECULE_DATA_DIR", &dir)
        .output()
        .unwrap();
    succeeded(&migrated);
    let after = status();
    assert_eq!(
        after.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        before.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    assert!(after.iter().all(|(_, state)| state == "applied"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The exposition's samples (`name{labels}` → value) and its `# TYPE` and `# HELP` lines.
struct Exposition {
    samples: Vec<(String, f64)>,
    types: std::collections::HashMap<String, String>,
    helped: std::collections::HashSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut exposition = Self {
            samples: Vec::new(),
            types: Default::default(),
            helped: Default::default(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                exposition.types.insert(name.to_owned(), kind.to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                exposition
                    .helped
                    .insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.is_empty() && !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let value = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
                exposition.samples.push((series.to_owned(), value));
            }
        }
        exposition
    }

    /// The sum of the samples of `name` whose labels include every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (family, rest) = series.split_once('{').unwrap_or((series, ""));
                family == name && labels.iter().all(|label| rest.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

async fn scrape(app: &TestApp) -> Exposition {
    let reply = app
        .http
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    Exposition::parse(&reply.text().await.unwrap())
}

#[tokio::test]
async fn metrics_are_described_and_move_after_a_workload() {
    let app = spawn_app().await;
    let before = scrape(&app).await;

    let (agent_url, _) = crate::a2a::fake_agent().await;
    let (root, _) = crate::a2a::agent_at(&app, "root", None, "remote://no-inbound").await;
    let (caller, caller_token) =
        crate::a2a::agent_at(&app, "caller", Some(&root), "remote://no-inbound").await;
    let inbound = format!("{agent_url}/a2a/inbound");
    let (target, _) = crate::a2a::agent_at(&app, "target", Some(&root), &inbound).await;
    assert_eq!(
        app.heartbeat(&caller, &caller_token, json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.heartbeat(&caller, "not-the-token", json!({}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m-1", "parts": [{"kind": "text", "text": "hi"}]}}});
    let reply = crate::a2a::send(
        &app,
        &target,
        Some(&caller),
        Some(&caller_token),
        request,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let socket = crate::events::connect(
        &app,
        &[("authorization", &format!("Bearer {}", app.admin_token))],
    )
    .await
    .unwrap();
    // A gRPC call that fails must not count as a success.
    let refused = tonic_health::pb::health_client::HealthClient::new(app.grpc_channel().await)
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::NotFound);

    let after = eventually(30, || async {
        let after = scrape(&app).await;
        let sampled = after.sum("molecule_workspaces", &[r#"status="online""#]) >= 3.0;
        let flushed = after.sum("molecule_write_behind_flushes_total", &[r#"result="ok""#])
            > before.sum("molecule_write_behind_flushes_total", &[r#"result="ok""#]);
        (sampled && flushed).then_some(after)
    })
    .await;
    let grew = |name: &str, labels: &[&str]| {
        let (was, now) = (before.sum(name, labels), after.sum(name, labels));
        assert!(now > was, "{name}{labels:?}: {was} -> {now}");
    };
    grew(
        "molecule_heartbeats_total",
        &[r#"transport="unary""#, r#"result="ok""#],
    );
    grew(
        "molecule_heartbeats_total",
        &[r#"result="unauthenticated""#],
    );
    grew("molecule_a2a_calls_total", &[r#"outcome="delivered""#]);
    grew(
        "molecule_a2a_call_duration_seconds_count",
        &[r#"outcome="delivered""#],
    );
    grew(
        "molecule_events_published_total",
        &[r#"event="WORKSPACE_ONLINE""#],
    );
    grew(
        "http_requests_total",
        &[r#"route="/workspaces/{id}/a2a""#, r#"status="200""#],
    );
    grew(
        "http_request_duration_seconds_bucket",
        &[r#"route="/registry/heartbeat""#, r#"le="+Inf""#],
    );
    grew("grpc_server_handled_total", &[r#"code="NotFound""#]);
    assert!(after.sum("molecule_websocket_clients", &[]) >= 1.0);
    assert!(after.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.sum("process_open_fds", &[]) > 0.0);
    assert!(after.sum("process_cpu_seconds_total", &[]) > 0.0);

    for (name, kind) in [
        ("http_request_duration_seconds", "histogram"),
        ("grpc_server_handling_seconds", "histogram"),
        ("molecule_a2a_call_duration_seconds", "histogram"),
        ("molecule_write_behind_flush_seconds", "histogram"),
        ("molecule_heartbeats_total", "counter"),
        ("molecule_workspaces", "gauge"),
        ("molecule_websocket_clients", "gauge"),
    ] {
        assert_eq!(
            after.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
        assert!(after.helped.contains(name), "{name} has no HELP");
    }
    drop(socket);
}

#[tokio::test]
async fn the_limiter_counts_clients_behind_a_trusted_proxy() {
    let app = spawn_app_with(Options {
        rate_limit: 3,
        trusted_proxies: Some("127.0.0.1"),
        ..Options::default()
    })
    .await;
    let from = |header: &'static str, value: &'static str| {
        let app = &app;
        async move {
            let request = app
                .http
                .get(format!("{}/openapi.json", app.rest))
                .header(header, value);
            app.raw(request).await.status
        }
    };
    for _ in 0..3 {
        assert_eq!(from("x-forwarded-for", "203.0.113.1").await, StatusCode::OK);
    }
    assert_eq!(
        from("x-forwarded-for", "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has an allowance of its own, named either way.
    assert_eq!(from("x-forwarded-for", "203.0.113.2").await, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(
            from("forwarded", "for=203.0.113.3;proto=https").await,
            StatusCode::OK
        );
    }
    assert_eq!(
        from("forwarded", r#"for="203.0.113.3:4711""#).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_limiter_counts_each_recognised_credential_by_itself() {
    let app = spawn_app_with(Options {
        rate_limit: 4,
        ..Options::default()
    })
    .await;
    // Two creates on the admin's allowance, two bearer-less registrations on the address's.
    let (a, a_token) = app.registered_agent("a", None).await;
    let (b, b_token) = app.registered_agent("b", None).await;
    for _ in 0..4 {
        assert_eq!(
            app.heartbeat(&a, &a_token, json!({})).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.heartbeat(&a, &a_token, json!({})).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // From the same address, another agent is not held back by the first.
    for _ in 0..4 {
        assert_eq!(
            app.heartbeat(&b, &b_token, json!({})).await.status,
            StatusCode::OK
        );
    }
    // An invented bearer buys no allowance: it counts against the address, which has two left.
    let invented = |n: u32| {
        let app = &app;
        async move {
            let request = app
                .http
                .get(format!("{}/openapi.json", app.rest))
                .bearer_auth(format!("invented-{n}"));
            app.raw(request).await.status
        }
    };
    assert_eq!(invented(1).await, StatusCode::OK);
    assert_eq!(invented(2).await, StatusCode::OK);
    assert_eq!(invented(3).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid() {
    let app = spawn_app().await;
    let errors = crate::interop::run_python("validate_openapi.py", vec![app.rest.clone()]).await;
    assert_eq!(errors.trim(), "0");
    let document = app.get("/openapi.json", None).await.body;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
}

/// Schemathesis drives every documented operation with schema-valid and schema-invalid data
/// (tests/interop/schemathesis.toml names the few rules it is told about in words); any
/// undocumented status, non-conforming body, accepted invalid input or server error fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_conforms_to_its_openapi_document() {
    let app = spawn_app().await;
    let report = crate::interop::run_python(
        "conformance.py",
        vec![app.rest.clone(), app.admin_token.clone()],
    )
    .await;
    // The closing tally: "<n> generated, <n> passed".
    let tally: Vec<&str> = report
        .lines()
        .find(|line| line.contains(" generated, "))
        .unwrap()
        .split_whitespace()
        .collect();
    let number_before = |word: &str| -> usize {
        let at = tally.iter().position(|w| w.starts_with(word)).unwrap();
        tally[at - 1].parse().unwrap()
    };
    let tested: usize = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .unwrap()
        .parse()
        .unwrap();
    let documented = documented_operations(&app).await;
    // Only the WebSocket upgrade and the multipart upload are left to their own tests.
    assert_eq!(tested, documented - 2, "{report}");
    assert!(number_before("generated") > 1000, "{report}");
    assert_eq!(
        number_before("generated"),
        number_before("passed"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_render_offline_in_a_browser() {
    let app = spawn_app().await;
    let page = app.get("/docs", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(r#"src="/console/docs.js""#));
    let script = app.get("/console/docs.js", None).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let shots =
        std::env::temp_dir().join(format!("molecule-docs-{}", uuid::Uuid::new_v4().simple()));
    let rendered = crate::interop::run_python(
        "docs_browser.py",
        vec![app.rest.clone(), shots.display().to_string()],
    )
    .await;
    let operations = documented_operations(&app).await;
    assert_eq!(rendered.trim(), operations.to_string());
}

/// How many operations `/openapi.json` describes.
async fn documented_operations(app: &TestApp) -> usize {
    let document = app.get("/openapi.json", None).await.body;
    document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|method| item.get(**method).is_some())
                .count()
        })
        .sum()
}

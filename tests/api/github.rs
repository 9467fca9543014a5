//! GitHub App installation tokens (docs/operations.md §8) against a stand-in of the GitHub API
//! that checks the App JWT's signature and claims and counts its calls: one refresh for 100
//! concurrent callers, a refresh five minutes before expiry, 502 when GitHub fails, and what
//! `git credential fill` reads through the runtime's credential helper.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use molecule::{config::GithubArgs, config::Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

const APP_ID: u64 = 424_242;
const INSTALLATION: &str = "987654";

/// What the stand-in GitHub saw and how it answers.
#[derive(Default)]
struct Github {
    calls: AtomicU64,
    /// Non-zero: answer this status instead of a token.
    failing: AtomicU16,
    /// Lifetime of the tokens it issues, in seconds.
    ttl_seconds: AtomicU64,
    public_key: Vec<u8>,
    /// The headers of the last call.
    seen: Mutex<Option<HeaderMap>>,
}

async fn access_tokens(
    State(github): State<Arc<Github>>,
    UrlPath(installation): UrlPath<String>,
    headers: HeaderMap,
) -> (AxumStatus, Json<Value>) {
    let call = github.calls.fetch_add(1, Ordering::SeqCst) + 1;
    *github.seen.lock().unwrap() = Some(headers.clone());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut validation = Validation::new(Algorithm::RS256);
    // GitHub takes a numeric `iss` (the App id), which the library's own check reads as absent.
    validation.set_required_spec_claims(&["exp"]);
    let decoded = jsonwebtoken::decode::<Value>(
        bearer,
        &DecodingKey::from_rsa_pem(&github.public_key).unwrap(),
        &validation,
    );
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(err) => {
            eprintln!("stand-in github: jwt refused: {err}");
            return (
                AxumStatus::UNAUTHORIZED,
                Json(json!({"message": "A JSON web token could not be decoded"})),
            );
        }
    };
    let claims = decoded.claims;
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    if claims["iss"] != APP_ID || lifetime > 600 + 60 || installation != INSTALLATION {
        return (
            AxumStatus::UNAUTHORIZED,
            Json(json!({"message": "bad claims"})),
        );
    }
    let failing = github.failing.load(Ordering::SeqCst);
    if failing != 0 {
        return (
            AxumStatus::from_u16(failing).unwrap(),
            Json(json!({"message": "Server Error"})),
        );
    }
    let ttl = github.ttl_seconds.load(Ordering::SeqCst) as i64;
    let expires_at = chrono::Utc::now() + chrono::TimeDelta::seconds(ttl);
    (
        AxumStatus::CREATED,
        Json(json!({
            "token": format!("ghs_stand_in_{call}"),
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {"contents": "write"},
            "repository_selection": "all",
        })),
    )
}

/// An RSA key pair from `openssl` (a test dependency): the private PEM's path, the public PEM.
fn key_pair(dir: &Path) -> (PathBuf, Vec<u8>) {
    let private = dir.join("app.pem");
    let public = dir.join("app.pub.pem");
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (the suite needs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, std::fs::read(public).unwrap())
}

/// The platform with a GitHub App pointed at a fresh stand-in.
async fn app_with_github(ttl_seconds: u64) -> (TestApp, Arc<Github>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("github-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private_key, public_key) = key_pair(&dir);
    let github = Arc::new(Github {
        ttl_seconds: AtomicU64::new(ttl_seconds),
        public_key,
        ..Github::default()
    });
    let stand_in = Router::new()
        .route(
            "/app/installations/{installation}/access_tokens",
            post(access_tokens),
        )
        .with_state(github.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stand_in).await.unwrap() });
    let app = spawn_app_with(Options {
        github: GithubArgs {
            github_app_id: Some(APP_ID.to_string()),
            // A path, as GITHUB_APP_PRIVATE_KEY may be.
            github_app_private_key: Some(Secret::new(private_key.to_str().unwrap())),
            github_app_installation_id: Some(INSTALLATION.to_owned()),
            github_api_url: api,
        },
        ..Options::default()
    })
    .await;
    (app, github, dir)
}

#[tokio::test]
async fn one_refresh_serves_a_hundred_concurrent_callers() {
    let (app, github, _dir) = app_with_github(3600).await;
    let (id, token) = app.registered_agent("builder", None).await;
    let path = format!("/workspaces/{id}/github-installation-token");
    let replies = futures::future::join_all((0..100).map(|_| app.get(&path, Some(&token)))).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.body["token"], "ghs_stand_in_1");
        let expires = reply.body["expires_at"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
            "{expires}"
        );
    }
    assert_eq!(github.calls.load(Ordering::SeqCst), 1);
    let seen = github.seen.lock().unwrap().clone().unwrap();
    assert_eq!(seen["accept"], "application/vnd.github+json");
    assert!(seen.contains_key("user-agent"));

    // Operators read the same token; a stranger reads none.
    let admin = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(admin.body["token"], "ghs_stand_in_1");
    let (_, stranger) = app.registered_agent("stranger", None).await;
    assert_eq!(
        app.get(&path, Some(&stranger)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/admin/github-installation-token", Some(&token))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(github.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_within_five_minutes_of_expiry_is_refreshed() {
    // Each token lives four minutes: always inside the refresh window.
    let (app, github, _dir) = app_with_github(4 * 60).await;
    let first = app.admin_get("/admin/github-installation-token").await;
    let second = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(
        (&first.body["token"], &second.body["token"]),
        (&json!("ghs_stand_in_1"), &json!("ghs_stand_in_2"))
    );
    assert_eq!(github.calls.load(Ordering::SeqCst), 2);

    // A longer-lived token is reused.
    github.ttl_seconds.store(3600, Ordering::SeqCst);
    let long = app.admin_get("/admin/github-installation-token").await;
    let again = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(long.body["token"], again.body["token"]);
    assert_eq!(github.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn github_failing_is_a_502_with_its_status_and_never_a_stale_token() {
    let (app, github, _dir) = app_with_github(4 * 60).await;
    let good = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(good.status, StatusCode::OK);
    github.failing.store(500, Ordering::SeqCst);
    // The cached token is inside its refresh window: it is not handed out again.
    let failed = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(
        (failed.status, failed.body),
        (
            StatusCode::BAD_GATEWAY,
            json!({"error": "github token request failed", "upstream_status": 500})
        )
    );
    github.failing.store(0, Ordering::SeqCst);
    let recovered = app.admin_get("/admin/github-installation-token").await;
    assert_eq!(recovered.status, StatusCode::OK);
    assert_ne!(recovered.body["token"], good.body["token"]);
}

#[tokio::test]
async fn without_an_app_the_routes_say_so_after_auth() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("plain", None).await;
    let reply = app
        .get(
            &format!("/workspaces/{id}/github-installation-token"),
            Some(&token),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "github app not configured"})
        )
    );
    let anonymous = app.get("/admin/github-installation-token", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// `git credential fill` through the runtime's helper: the request it sends, and the
/// username and password git reads.
#[tokio::test]
async fn git_reads_the_token_through_the_credential_helper() {
    let (app, github, dir) = app_with_github(3600).await;
    let (id, token) = app.registered_agent("committer", None).await;
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join(".auth_token"), format!("{token}\n")).unwrap();
    let helper =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/git-credential-helper.sh");
    let rest = app.rest.clone();
    let home = dir.join("home");
    let output = tokio::task::spawn_blocking(move || {
        let mut git = Command::new("git")
            .args([
                "-c",
                "credential.helper=",
                "-c",
                &format!(
                    "credential.https://github.com.helper=!bash {}",
                    helper.display()
                ),
                "credential",
                "fill",
            ])
            .env("PLATFORM_URL", rest)
            .env("WORKSPACE_ID", &id)
            .env("CONFIGS_DIR", &configs)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git is installed");
        use std::io::Write;
        git.stdin
            .take()
            .unwrap()
            .write_all(b"protocol=https\nhost=github.com\n\n")
            .unwrap();
        git.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "protocol=https\nhost=github.com\nusername=x-access-token\npassword=ghs_stand_in_1\n"
    );
    assert_eq!(github.calls.load(Ordering::SeqCst), 1);
}

/// A half-configured App, or a key that is not one, stops the server at start with one line
/// that names the setting and never prints the key.
#[test]
fn a_partial_or_unreadable_app_configuration_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("github-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = |vars: &[(&str, &str)]| {
        let mut command = crate::cli::molecule();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("MOLECULE_DATA_DIR", &dir);
        for (name, value) in vars {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    };
    assert_eq!(
        start(&[("GITHUB_APP_ID", "1")]),
        "error: GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and GITHUB_APP_INSTALLATION_ID are set together or not at all"
    );
    let not_a_key =
        "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END RSA PRIVATE KEY-----";
    let refused = start(&[
        ("GITHUB_APP_ID", "1"),
        ("GITHUB_APP_INSTALLATION_ID", "2"),
        ("GITHUB_APP_PRIVATE_KEY", not_a_key),
    ]);
    assert_eq!(
        refused,
        "error: GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM"
    );
}

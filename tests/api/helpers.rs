//! The test harness: `spawn_app()` starts the real server on `127.0.0.1:0` against a fresh
//! datastore and returns typed gRPC clients plus an HTTP client. The backend comes from the
//! environment: SQLite in a temp dir always; Postgres + Redis when `TEST_DATABASE_URL` and
//! `TEST_REDIS_URL` are set. `TEST_GATEWAY=remote` sends REST through a standalone gateway.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use molecule::{
    config::{
        AuditKeyArgs, Config, EdgeArgs, Environment, GatewayArgs, GithubArgs, ListenerArgs,
        PluginArgs, RuntimeArgs, Secret, StorageArgs,
    },
    pb::workspaces_client::WorkspacesClient,
    server::{Application, GatewayServer},
    store,
};
use reqwest::{Method, StatusCode, header::HeaderMap};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Where a server keeps its state; replicas share one.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) database_url: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_namespace: String,
    pub(crate) data_dir: PathBuf,
}

impl Backend {
    /// A fresh, empty backend of the kind the environment asks for.
    pub(crate) async fn fresh() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let data_dir = std::env::temp_dir().join(format!("molecule-test-{suffix}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let database_url = match std::env::var("TEST_DATABASE_URL") {
            Ok(base) => create_postgres_database(&base, &suffix).await,
            Err(_) => store::default_sqlite_url(&data_dir),
        };
        Self {
            database_url,
            redis_url: std::env::var("TEST_REDIS_URL").ok(),
            redis_namespace: format!("test-{suffix}:"),
            data_dir,
        }
    }

    /// The same backend, with Redis even when the environment runs without it (the
    /// multi-replica tests need a shared bus; `.ci/run` starts Redis for every pass).
    pub(crate) fn with_redis(mut self) -> Self {
        if self.redis_url.is_none() {
            self.redis_url = Some("redis://127.0.0.1:6379".to_owned());
        }
        self
    }
}

/// `CREATE DATABASE <base>_<suffix>` next to the CI database, returning its URL.
pub(crate) async fn create_postgres_database(base_url: &str, suffix: &str) -> String {
    let (prefix, base_name) = base_url
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL has a database");
    let base_name = base_name.split('?').next().unwrap();
    let name = format!("{base_name}_{suffix}");
    let admin = store::connect_url(base_url)
        .await
        .expect("TEST_DATABASE_URL reachable");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    admin.close().await.ok();
    format!("{prefix}/{name}")
}

/// Knobs a test may turn; everything else is the default configuration.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) admin_token: bool,
    pub(crate) env: &'static str,
    pub(crate) rate_limit: u32,
    pub(crate) cors_origins: Option<&'static str>,
    pub(crate) org_id: Option<&'static str>,
    pub(crate) provision_timeout_seconds: u64,
    pub(crate) liveness_ttl_seconds: u64,
    pub(crate) enable_test_tokens: &'static str,
    /// `SECRETS_ENCRYPTION_KEY` (and `_PREVIOUS`); unset means the generated key file.
    pub(crate) secrets_key: Option<String>,
    pub(crate) previous_secrets_key: Option<String>,
    pub(crate) plugins_dir: Option<PathBuf>,
    pub(crate) plugin_allowlist: &'static str,
    pub(crate) plugin_max_dir_bytes: Option<u64>,
    /// Listener settings, for the server and a standalone gateway alike.
    pub(crate) listener: ListenerArgs,
    /// Limits and retention of the runtime's stores.
    pub(crate) runtime: RuntimeArgs,
    /// How long a console sign-in lasts; unset means the default.
    pub(crate) session_ttl: Option<Duration>,
    /// How often an open `/ws` re-checks its credential; unset means the default.
    pub(crate) ws_recheck: Option<Duration>,
    /// `MOLECULE_TRUSTED_PROXIES`; unset means none.
    pub(crate) trusted_proxies: Option<&'static str>,
    /// `MOLECULE_DEV_HOSTS`.
    pub(crate) dev_hosts: &'static str,
    /// `EXTERNAL_PLATFORM_URL`.
    pub(crate) public_url: Option<&'static str>,
    /// `AUDIT_LEDGER_SALT`; unset means plain SHA-256.
    pub(crate) audit_salt: Option<&'static str>,
    /// `MOLECULE_TEMPLATES_DIR`; unset means the repository's `templates/`.
    pub(crate) templates_dir: Option<PathBuf>,
    /// The GitHub App; none by default.
    pub(crate) github: GithubArgs,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            admin_token: true,
            env: "",
            rate_limit: 100_000,
            cors_origins: None,
            org_id: None,
            provision_timeout_seconds: 600,
            liveness_ttl_seconds: 90,
            enable_test_tokens: "",
            secrets_key: None,
            previous_secrets_key: None,
            plugins_dir: None,
            plugin_allowlist: "",
            plugin_max_dir_bytes: None,
            listener: ListenerArgs::default(),
            runtime: RuntimeArgs::default(),
            session_ttl: None,
            ws_recheck: None,
            trusted_proxies: None,
            dev_hosts: "",
            public_url: None,
            audit_salt: None,
            templates_dir: None,
            github: GithubArgs::default(),
        }
    }
}

pub(crate) struct TestApp {
    /// The control plane's port (gRPC, and REST in-process).
    pub(crate) addr: SocketAddr,
    /// Base URL for REST: the control plane itself, or a standalone gateway in front of it.
    pub(crate) rest: String,
    pub(crate) http: reqwest::Client,
    pub(crate) grpc: WorkspacesClient<Channel>,
    pub(crate) admin_token: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub(crate) db: store::Db,
}

/// The parsed response of one REST call.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
    pub(crate) body: Value,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub(crate) async fn spawn_app_with(options: Options) -> TestApp {
    spawn_on(Backend::fresh().await, options).await
}

/// Starts a server on `backend` (a replica when another server already uses it).
/// Logs go to stderr with `TEST_LOG=1` (filter with `RUST_LOG`), and nowhere otherwise.
static TRACING: std::sync::LazyLock<()> = std::sync::LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    }
});

pub(crate) async fn spawn_on(backend: Backend, options: Options) -> TestApp {
    std::sync::LazyLock::force(&TRACING);
    let admin_token = molecule::auth::MintedToken::generate().plaintext;
    let remote_gateway = std::env::var("TEST_GATEWAY").as_deref() == Ok("remote");
    let config = server_config(&backend, &options, &admin_token, remote_gateway);
    let app = Application::build(config).await.expect("server builds");
    let addr = app.local_addr();
    let db = app.db().clone();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped(std::future::pending()));

    let rest = if remote_gateway {
        let gateway = GatewayServer::build(GatewayArgs {
            listen: LOCALHOST_ANY_PORT.parse().unwrap(),
            upstream: format!("http://{addr}"),
            environment: options.env.to_owned(),
            edge: edge_config(&options),
            listener: options.listener.clone(),
        })
        .await
        .expect("gateway builds");
        let gateway_addr = gateway.local_addr();
        let gateway_shutdown = gateway.shutdown_token();
        let stop = shutdown.clone();
        tokio::spawn(gateway.run_until_stopped(async move { stop.cancelled().await }));
        drop(gateway_shutdown);
        format!("http://{gateway_addr}")
    } else {
        format!("http://{addr}")
    };

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("grpc connects");
    let grpc = WorkspacesClient::new(channel);
    TestApp {
        addr,
        rest,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        grpc,
        admin_token,
        shutdown,
        server,
        db,
    }
}

const LOCALHOST_ANY_PORT: &str = "127.0.0.1:0";

/// The server's configuration: the defaults, with the backend's stores and the test's knobs.
fn server_config(
    backend: &Backend,
    options: &Options,
    admin_token: &str,
    behind_remote_gateway: bool,
) -> Config {
    let defaults = Config::default();
    let production = Environment::classify(options.env) == Environment::Production;
    let mut edge = edge_config(options);
    if behind_remote_gateway {
        // The standalone gateway forwards the client's address; the control plane believes it.
        edge.trusted_proxies = "127.0.0.1".parse().unwrap();
    }
    Config {
        listen: LOCALHOST_ANY_PORT.parse().unwrap(),
        storage: StorageArgs {
            data_dir: backend.data_dir.clone(),
            database_url: Some(Secret::new(&backend.database_url)),
        },
        redis_url: backend.redis_url.as_deref().map(Secret::new),
        redis_namespace: backend.redis_namespace.clone(),
        admin_token: options.admin_token.then(|| Secret::new(admin_token)),
        environment: options.env.to_owned(),
        secrets_encryption_key: options
            .secrets_key
            .clone()
            .or_else(|| production.then(|| molecule::crypto::SecretsKey::generate().to_base64()))
            .map(Secret::new),
        secrets_encryption_key_previous: options.previous_secrets_key.as_deref().map(Secret::new),
        plugins: PluginArgs {
            plugins_dir: options
                .plugins_dir
                .clone()
                .unwrap_or_else(|| backend.data_dir.join("plugins")),
            plugin_allowlist: options.plugin_allowlist.to_owned(),
            plugin_install_max_dir_bytes: options
                .plugin_max_dir_bytes
                .unwrap_or(defaults.plugins.plugin_install_max_dir_bytes),
            ..defaults.plugins
        },
        provision_timeout_seconds: options.provision_timeout_seconds,
        liveness_ttl_seconds: options.liveness_ttl_seconds,
        enable_test_tokens: options.enable_test_tokens.to_owned(),
        edge,
        listener: options.listener.clone(),
        runtime: options.runtime.clone(),
        session_ttl: options.session_ttl.unwrap_or(defaults.session_ttl),
        audit: AuditKeyArgs {
            audit_ledger_salt: options.audit_salt.map(Secret::new),
        },
        github: options.github.clone(),
        templates_dir: options
            .templates_dir
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")),
        ..defaults
    }
}

fn edge_config(options: &Options) -> EdgeArgs {
    let defaults = EdgeArgs::default();
    let mut edge = EdgeArgs {
        rate_limit: options.rate_limit,
        org_id: options.org_id.map(str::to_owned),
        ws_recheck: options.ws_recheck.unwrap_or(defaults.ws_recheck),
        dev_hosts: options.dev_hosts.to_owned(),
        external_platform_url: options.public_url.map(str::to_owned),
        ..defaults
    };
    if let Some(origins) = options.cors_origins {
        edge.cors_origins = origins.to_owned();
    }
    if let Some(proxies) = options.trusted_proxies {
        edge.trusted_proxies = proxies.parse().expect("a valid proxy list");
    }
    edge
}

impl TestApp {
    /// Stops the server and waits until it has finished.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }

    /// A fresh gRPC connection to the control plane.
    pub(crate) async fn grpc_channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("grpc connects")
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("{}/ws", self.rest.replacen("http://", "ws://", 1))
    }

    /// One REST call with an optional bearer and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.rest));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("request sent")).await
    }

    pub(crate) async fn raw(&self, request: reqwest::RequestBuilder) -> Reply {
        reply(request.send().await.expect("request sent")).await
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Reply {
        self.get(path, Some(&self.admin_token.clone())).await
    }

    pub(crate) async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(&self.admin_token.clone()), body)
            .await
    }

    /// Creates a workspace as admin and returns its id.
    pub(crate) async fn create_workspace(&self, body: Value) -> String {
        let reply = self.admin(Method::POST, "/workspaces", Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Mints a workspace token through the admin-level token endpoint.
    pub(crate) async fn workspace_token(&self, id: &str) -> String {
        let reply = self
            .admin(Method::POST, &format!("/workspaces/{id}/tokens"), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["auth_token"].as_str().unwrap().to_owned()
    }

    /// `POST /registry/register` with an optional bearer.
    pub(crate) async fn register(&self, id: &str, url: &str, token: Option<&str>) -> Reply {
        let body = json!({"id": id, "url": url, "agent_card": {"name": "agent", "skills": []}});
        self.call(Method::POST, "/registry/register", token, Some(body))
            .await
    }

    /// An external workspace registered once; returns its id and token.
    pub(crate) async fn registered_agent(
        &self,
        name: &str,
        parent: Option<&str>,
    ) -> (String, String) {
        let id = self
            .create_workspace(json!({"name": name, "external": true, "parent_id": parent}))
            .await;
        let reply = self.register(&id, "remote://no-inbound", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        (id, reply.body["auth_token"].as_str().unwrap().to_owned())
    }

    /// `POST /registry/heartbeat` with this body merged over `workspace_id`.
    pub(crate) async fn heartbeat(&self, id: &str, token: &str, fields: Value) -> Reply {
        let mut body = json!({"workspace_id": id});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.call(Method::POST, "/registry/heartbeat", Some(token), Some(body))
            .await
    }

    /// Every persisted event type for a workspace, oldest first.
    pub(crate) async fn event_types(&self, id: &str) -> Vec<String> {
        let reply = self.admin_get(&format!("/events/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let mut types: Vec<String> = reply
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["event_type"].as_str().unwrap().to_owned())
            .collect();
        types.reverse();
        types
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// The stdout of a child process that must have succeeded (both streams shown if not).
pub(crate) fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Polls `check` until it returns `Some`, for at most `seconds`.
pub(crate) async fn eventually<T, F, Fut>(seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {seconds}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

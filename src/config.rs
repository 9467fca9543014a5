//! Command line and environment: one typed clap struct per command, each setting a flag with an
//! env var. Owns parsing and the environment classification; it never touches the datastore.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use clap::{Args, Parser, Subcommand};

/// A credential or connection string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value; call sites that use it must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A connection URL as it may be shown: any password replaced by `***`.
pub fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "molecule",
    version,
    about = "Molecule: the control plane for AI-agent workspaces"
)]
pub struct Cli {
    /// Log lines as `text` (for people; coloured only on a terminal) or `json` (one object per
    /// line, for a log collector).
    #[arg(long, env = "MOLECULE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether stdout carries JSON log lines, set once at start: then anything meant for a person
/// (the generated admin token's banner) goes to stderr, so a collector reads only JSON.
static STDOUT_IS_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl LogFormat {
    pub fn select(self) {
        STDOUT_IS_JSON.store(self == Self::Json, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stdout_is_json() -> bool {
        STDOUT_IS_JSON.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Server(ServerCommand),
    #[command(flatten)]
    Operator(OperatorCommand),
}

/// What runs the control plane itself.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the control plane: REST, gRPC, gRPC-Web and /ws on one port (migrates first).
    Serve(Box<Config>),
    /// Run the database migrations and exit; `migrate status` lists them instead.
    Migrate(MigrateArgs),
    /// Run the REST + WebSocket gateway alone, in front of a remote control plane.
    Gateway(Box<GatewayArgs>),
    /// Manage secrets at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: Option<MigrateAction>,

    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// List every migration this binary carries and whether the database has applied it;
    /// changes nothing.
    Status(StorageArgs),
}

/// What an operator runs against a control plane (the CLI).
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Workspaces: list (and watch), inspect, create, pause, resume, remove.
    Ws(ClientCommand<WsCommand>),
    /// The event log, or `-f` to follow it live.
    Events(EventsArgs),
    /// Workspace tokens: mint (shown once), list, revoke.
    Token(ClientCommand<TokenCommand>),
    /// Talk to an agent through the platform's A2A proxy.
    A2a(ClientCommand<A2aCommand>),
    /// Schedules: list, add, remove, run now.
    Schedule(ClientCommand<ScheduleCommand>),
    /// Org templates: import one from a YAML file, or list the server's.
    Org(ClientCommand<OrgCommand>),
    /// The audit trail: list a chain, or verify every chain offline from the database.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Probe the server's readiness (`GET /readyz`): exit 0 when ready, 1 otherwise. For a
    /// container's HEALTHCHECK.
    Health(HealthArgs),
    /// Print a shell completion script: `molecule completions bash > /etc/bash_completion.d/molecule`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// An operator command run against a server: where it is, who is calling, how to print.
#[derive(Debug, Args)]
pub struct ClientCommand<T: Subcommand> {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: T,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server: `http://host:8080` or `host:8080`.
    #[arg(long, env = "MOLECULE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The control plane (its gRPC and REST port): `http://host:8080` or `host:8080`.
    #[arg(
        long,
        env = "MOLECULE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,

    /// An operator credential (admin token or org key). Default: the admin token the server
    /// generated in the local data dir, for a loopback `--url` only.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    // Generated tokens are base64url and may begin with `-`.
    #[arg(
        long,
        env = "MOLECULE_TOKEN",
        global = true,
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub token: Option<Secret>,

    /// Where a local server keeps its generated admin token.
    #[arg(
        long,
        env = "MOLECULE_DATA_DIR",
        default_value = "./molecule-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum WsCommand {
    /// List every workspace; `--watch` keeps the list current.
    Ls {
        /// Redraw in place on a terminal; print one line per change when piped.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Show one workspace.
    Get { id: String },
    /// Create a workspace; `--external` for an agent that runs elsewhere.
    Create {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        external: bool,
        /// The agent's A2A URL (external workspaces).
        #[arg(long)]
        agent_url: Option<String>,
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Pause a workspace and its descendants.
    Pause { id: String },
    /// Resume a paused workspace and its descendants.
    Resume { id: String },
    /// A workspace's config.yaml: print it, or replace it from a file (`-`: stdin).
    #[command(subcommand)]
    Config(WsConfigCommand),
    /// Remove a workspace.
    Rm {
        id: String,
        /// Also remove its sub-workspaces (required when it has any).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Delete every row instead of marking it removed.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WsConfigCommand {
    /// Print the YAML document (`-o json`: the parsed document and its version).
    Get { id: String },
    /// Replace the document with a YAML file's, checked by the server.
    Set {
        id: String,
        /// The YAML file; `-` reads stdin.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// A workspace's schedules.
    Ls { workspace: String },
    /// Add a schedule: five-field cron (or `@daily`, …) in an IANA zone.
    Add {
        workspace: String,
        /// `0 9 * * 1-5`, `@hourly`, …
        #[arg(long)]
        cron: String,
        /// What the workspace is sent when it fires.
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "")]
        name: String,
        /// An IANA zone; default UTC.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Remove a schedule.
    Rm { workspace: String, schedule: String },
    /// Fire a schedule now (its next run is unchanged).
    Run { workspace: String, schedule: String },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Import an org template (the org.yaml shape) from a file; `-` reads stdin. The same
    /// document again creates nothing.
    Import {
        file: PathBuf,
        /// Import although required global secrets are missing.
        #[arg(long)]
        force: bool,
    },
    /// The org templates in the server's MOLECULE_TEMPLATES_DIR.
    Templates,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Follow: print events as they happen.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this workspace's events.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only events of this type (`WORKSPACE_ONLINE`); repeat for several.
    #[arg(long = "type", short = 't')]
    pub event_types: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token for a workspace; it is printed once.
    Create { workspace: String },
    /// List a workspace's live tokens (prefixes only).
    Ls { workspace: String },
    /// Revoke one token.
    Revoke { workspace: String, token_id: String },
}

#[derive(Debug, Subcommand)]
pub enum A2aCommand {
    /// Send a text message (`message/send`) and print the agent's answer.
    Send {
        workspace: String,
        text: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 300)]
        timeout: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List a workspace's chain, or the organisation's without a workspace.
    Ls(AuditLsArgs),
    /// Check chains from the database (no server needed): exit 1 when a row was changed or
    /// deleted, naming it.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditLsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workspace; omitted, the organisation's chain (operators).
    pub workspace: Option<String>,
    /// Only this operation (`secret.set`, `workspace.delete`, …).
    #[arg(long)]
    pub operation: Option<String>,
    /// Only this actor (`admin`, `org:<prefix>`, `workspace:<id>`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Rows to print, 1–500.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub key: AuditKeyArgs,
    /// One chain (a workspace id, or `org`); every chain by default.
    #[arg(long)]
    pub chain: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every secret under the current key, opening rows sealed under the previous
    /// one. Safe while servers keep serving; see README "Rotating the secrets key".
    RotateKey(Box<Config>),
}

/// The GitHub App whose installation tokens workspaces fetch (docs/operations.md §8). All three
/// of id, key and installation, or none.
#[derive(Debug, Clone, Args)]
pub struct GithubArgs {
    /// The App's id (or client id): the `iss` of the JWTs the platform signs.
    #[arg(long, env = "GITHUB_APP_ID")]
    pub github_app_id: Option<String>,

    /// The App's private key: the PEM itself, or the path of a file holding it.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    #[arg(long, env = "GITHUB_APP_PRIVATE_KEY", hide_env_values = true)]
    pub github_app_private_key: Option<Secret>,

    /// The installation whose tokens are handed out.
    #[arg(long, env = "GITHUB_APP_INSTALLATION_ID")]
    pub github_app_installation_id: Option<String>,

    /// The GitHub API (GitHub Enterprise: `https://HOST/api/v3`).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
}

/// The audit trail's hash key, shared by `serve` (which writes rows) and `audit verify`.
#[derive(Debug, Clone, Args)]
pub struct AuditKeyArgs {
    /// Keys the audit trail's hashes (HMAC-SHA-256); unset means plain SHA-256, which finds a
    /// changed or deleted row but not one forged with the chain rewritten after it.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    #[arg(long, env = "AUDIT_LEDGER_SALT", hide_env_values = true)]
    pub audit_ledger_salt: Option<Secret>,
}

/// Where state lives.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the embedded SQLite database and generated credentials.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = "./molecule-data")]
    pub data_dir: PathBuf,

    /// Postgres or SQLite URL; unset means SQLite in the data dir. It may hold a password:
    /// prefer the environment variable, as a flag's value shows in `ps`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
}

/// The HTTP edge shared by `serve` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Requests per minute per caller (a recognised credential, else the client IP), REST and
    /// gRPC together (GCRA).
    #[arg(long, env = "RATE_LIMIT", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,

    /// Browser origins allowed by CORS, comma-separated. Other origins are never rejected; they
    /// just get no CORS headers.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = "http://localhost:3000,http://localhost:3001"
    )]
    pub cors_origins: String,

    /// Tenant guard: when set, requests must carry `X-Molecule-Org-Id` equal to it.
    #[arg(long, env = "MOLECULE_ORG_ID")]
    pub org_id: Option<String>,

    /// Proxies whose `Forwarded` or `X-Forwarded-For` names the client (comma-separated
    /// addresses or CIDR blocks): a load balancer, or the standalone gateway in front of the
    /// control plane.
    #[arg(long, env = "MOLECULE_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: gateway::client_ip::TrustedProxies,

    /// Largest `POST /workspaces/:id/plugins` body, in bytes.
    #[arg(long, env = "PLUGIN_INSTALL_BODY_MAX_BYTES", default_value_t = gateway::edge::PLUGIN_INSTALL_BODY_MAX_BYTES)]
    pub plugin_install_body_max_bytes: usize,

    /// How often an open `/ws` checks that its credential still stands (a session signed out
    /// or expired, a token revoked); the socket is closed when it does not.
    #[arg(long, env = "MOLECULE_WS_RECHECK", default_value = "30s", value_parser = parse_duration)]
    pub ws_recheck: std::time::Duration,

    /// Public base URL shown to external agents; derived from the request when unset. An
    /// `https://` URL also makes console cookies `Secure` behind a TLS proxy that sends no
    /// `X-Forwarded-Proto`.
    #[arg(long, env = "EXTERNAL_PLATFORM_URL")]
    pub external_platform_url: Option<String>,

    /// Dev mode only: host names, comma-separated, under which the server takes bearer-less
    /// requests besides loopback addresses, `localhost` and `host.docker.internal` (the host of
    /// EXTERNAL_PLATFORM_URL counts too). Others get 403, so a DNS-rebinding page cannot drive
    /// a dev server. Behind `molecule gateway`, its upstream's host must be one of them.
    #[arg(long, env = "MOLECULE_DEV_HOSTS", default_value = "")]
    pub dev_hosts: String,
}

impl EdgeArgs {
    /// The edge these settings describe; rate limiting is off in dev mode.
    pub fn edge(&self, dev_mode: bool) -> gateway::Edge {
        let mut config = gateway::EdgeConfig::new(
            self.rate_limit,
            dev_mode,
            &self.cors_origins,
            self.org_id.as_deref(),
            self.trusted_proxies.clone(),
        );
        config.plugin_install_body_max_bytes = self.plugin_install_body_max_bytes;
        config.ws_recheck = self.ws_recheck;
        let public = self
            .external_platform_url
            .as_deref()
            .and_then(|url| url::Url::parse(url).ok());
        config.public_https = public.as_ref().is_some_and(|url| url.scheme() == "https");
        config.dev_hosts = self
            .dev_hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(str::to_owned)
            .chain(
                public
                    .as_ref()
                    .and_then(|url| url.host_str())
                    .map(str::to_owned),
            )
            .map(|host| host.to_ascii_lowercase())
            .collect();
        gateway::Edge::new(config)
    }
}

/// The listening socket and what requests may hold before they are authenticated, shared by
/// `serve` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// Open connections at most; 0 derives the cap from the file descriptor limit, which is
    /// raised to its hard limit at start.
    #[arg(long, env = "MOLECULE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Open connections per client IP at most; 0 means no per-IP cap. Behind a load balancer
    /// every connection comes from its addresses: raise this, or set 0.
    #[arg(long, env = "MOLECULE_MAX_CONNECTIONS_PER_IP", default_value_t = 4096)]
    pub max_connections_per_ip: usize,

    /// A request head (and a new connection's first one) must arrive within this.
    #[arg(long, env = "MOLECULE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,

    /// A connection with no request in flight is closed after this (keep-alive and h2 alike).
    #[arg(long, env = "MOLECULE_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,

    /// A request without a recognised credential must send its whole REST body, or be
    /// answered (gRPC), within this of its start; any body or gRPC message under way may not
    /// stall longer than this (408, or DEADLINE_EXCEEDED).
    #[arg(long, env = "MOLECULE_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: std::time::Duration,

    /// Bytes that requests without a recognised credential may have buffered at once, in
    /// total (503 beyond it); a sixteenth is kept for bodies under 64 KiB, such as a register
    /// or a sign-in.
    #[arg(long, env = "MOLECULE_PREAUTH_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub preauth_buffer_bytes: usize,

    /// The same, per client address.
    #[arg(long, env = "MOLECULE_PREAUTH_ADDRESS_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub preauth_address_bytes: usize,

    /// The same, per connection (all its h2 streams together).
    #[arg(long, env = "MOLECULE_PREAUTH_CONNECTION_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub preauth_connection_bytes: usize,

    /// Bytes one recognised credential's unfinished gRPC messages may declare at once (what
    /// the decoder reserves for them).
    #[arg(long, env = "MOLECULE_CREDENTIAL_INFLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub credential_inflight_bytes: usize,
}

impl ListenerArgs {
    /// The pre-auth policy's limits (`gateway::preauth`): the first gRPC message is due as a
    /// request head is.
    pub fn preauth_limits(&self) -> gateway::preauth::PreAuthLimits {
        gateway::preauth::PreAuthLimits {
            total: self.preauth_buffer_bytes,
            per_address: self.preauth_address_bytes,
            per_credential: self.credential_inflight_bytes,
            first_message: self.header_read_timeout,
            body: self.body_read_timeout,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (REST, gRPC, gRPC-Web and /ws share it).
    #[arg(long, env = "MOLECULE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Redis URL for liveness and cross-replica events; unset means in-process. It may hold a
    /// password: prefer the environment variable, as a flag's value shows in `ps`.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Prefix for every Redis key and channel, so several deployments (or test runs) can share
    /// one Redis.
    #[arg(long, env = "MOLECULE_REDIS_NAMESPACE", default_value = "")]
    pub redis_namespace: String,

    /// The admin bearer token. Required in production; generated into the data dir otherwise.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// AES-256 key for secrets at rest (base64 of 32 bytes, or 32 raw bytes). Required in
    /// production; generated into the data dir otherwise.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    #[arg(long, env = "SECRETS_ENCRYPTION_KEY", hide_env_values = true)]
    pub secrets_encryption_key: Option<Secret>,

    /// The key being rotated away from: rows still sealed under it keep opening until
    /// `molecule secrets rotate-key` has re-encrypted them.
    /// Prefer the environment variable: a flag's value shows in `ps` to every local user.
    #[arg(long, env = "SECRETS_ENCRYPTION_KEY_PREVIOUS", hide_env_values = true)]
    pub secrets_encryption_key_previous: Option<Secret>,

    #[command(flatten)]
    pub audit: AuditKeyArgs,

    #[command(flatten)]
    pub github: GithubArgs,

    /// Org templates (`<name>/org.yaml`) and workspace templates (`<name>/config.yaml`).
    #[arg(long, env = "MOLECULE_TEMPLATES_DIR", default_value = "./templates")]
    pub templates_dir: PathBuf,

    /// `production`/`prod` or `development`/`dev`; unset for the default mode (any other value
    /// is refused at start).
    #[arg(long = "env", env = "MOLECULE_ENV", default_value = "")]
    pub environment: String,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub listener: ListenerArgs,

    /// Seconds without a heartbeat before a workspace shows offline.
    #[arg(long, env = "LIVENESS_TTL_SECONDS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub liveness_ttl_seconds: u64,

    /// Seconds a workspace may stay `provisioning` before it is marked `failed`.
    #[arg(long, env = "PROVISION_TIMEOUT_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub provision_timeout_seconds: u64,

    /// `saas` allows agent URLs in private ranges; `self-hosted` (or anything else) is strict.
    /// Unset means relaxed iff MOLECULE_ORG_ID is set.
    #[arg(long, env = "MOLECULE_DEPLOY_MODE", default_value = "")]
    pub deploy_mode: String,

    /// Enable the test-token endpoint even in production (`1` enables).
    #[arg(long, env = "MOLECULE_ENABLE_TEST_TOKENS", default_value = "")]
    pub enable_test_tokens: String,

    #[command(flatten)]
    pub plugins: PluginArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Seconds of silence from an agent before a proxied A2A call is given up; a value that is
    /// not a positive integer means the default.
    #[arg(long, env = "A2A_IDLE_TIMEOUT_SECONDS", default_value = "300")]
    pub a2a_idle_timeout_seconds: String,

    /// How long an operator console sign-in lasts (`12h`, `30m`); sign-out ends it sooner.
    #[arg(long, env = "MOLECULE_SESSION_TTL", default_value = "12h", value_parser = parse_duration)]
    pub session_ttl: std::time::Duration,

    /// The URL other replicas reach this one's gRPC port at (`http://10.0.0.5:8080`), to relay
    /// calls for agents attached here. Only used with Redis. Default: the listen address, or
    /// this host's name and the listen port when listening on every interface.
    #[arg(long, env = "MOLECULE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

/// Where plugins come from and the limits on fetching them.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// One subdirectory per plugin, each with an optional `plugin.yaml`.
    #[arg(long, env = "MOLECULE_PLUGINS_DIR", default_value = "./plugins")]
    pub plugins_dir: PathBuf,

    /// Bound on resolving and fetching one plugin (`30s`, `5m`, `1h`).
    #[arg(long, env = "PLUGIN_INSTALL_FETCH_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub plugin_install_fetch_timeout: std::time::Duration,

    /// Largest plugin tree served, in bytes.
    #[arg(long, env = "PLUGIN_INSTALL_MAX_DIR_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub plugin_install_max_dir_bytes: u64,

    /// Accept `github://owner/repo` without a `#ref`.
    #[arg(long, env = "PLUGIN_ALLOW_UNPINNED", default_value_t = false, action = clap::ArgAction::Set)]
    pub plugin_allow_unpinned: bool,

    /// The org plugin allowlist, comma-separated names; empty allows every plugin.
    #[arg(long, env = "MOLECULE_PLUGIN_ALLOWLIST", default_value = "")]
    pub plugin_allowlist: String,
}

/// Limits and retention of what the workspace runtime stores (docs/runtime.md).
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// How long an approval waits for a decision before it is denied as `auto-expired`.
    #[arg(long, env = "APPROVAL_TTL", default_value = "10m", value_parser = parse_duration)]
    pub approval_ttl: std::time::Duration,

    /// Checkpoints kept per workspace (the newest).
    #[arg(long, env = "MOLECULE_CHECKPOINT_RETENTION", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_retention: u64,

    /// Bytes of chat uploads a workspace may hold.
    #[arg(long, env = "MOLECULE_UPLOAD_QUOTA_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub upload_quota_bytes: u64,

    /// How long a chat upload is kept (`30d`, `12h`).
    #[arg(long, env = "MOLECULE_UPLOAD_TTL", default_value = "30d", value_parser = parse_duration)]
    pub upload_ttl: std::time::Duration,

    /// How long a schedule's run may wait for the agent's answer; a run still unfinished this
    /// long (and a little more) after it began is recorded as failed: its replica stopped.
    #[arg(long, env = "MOLECULE_SCHEDULE_FIRE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub schedule_fire_timeout: std::time::Duration,

    /// What a million input tokens cost, in US dollars: budgets and `/metrics` price the usage
    /// agents report at it (default: the reference's, Claude Sonnet's list price).
    #[arg(long, env = "MOLECULE_PRICE_INPUT_PER_MTOK", default_value_t = 3.0, value_parser = parse_price)]
    pub price_input_per_mtok: f64,

    /// What a million output tokens cost, in US dollars.
    #[arg(long, env = "MOLECULE_PRICE_OUTPUT_PER_MTOK", default_value_t = 15.0, value_parser = parse_price)]
    pub price_output_per_mtok: f64,
}

/// A price: a finite number, zero or more.
fn parse_price(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => Ok(price),
        _ => Err(format!("{raw:?} is not a price (a number, zero or more)")),
    }
}

/// A Go-style duration with one unit: `500ms`, `30s`, `5m`, `1h`.
fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} has no unit (ms, s, m, h, d)"))?;
    let (amount, unit) = raw.split_at(split);
    let amount: u64 = amount
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{raw:?} has an unknown unit (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_millis(amount * millis))
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "MOLECULE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// The control plane's gRPC endpoint, for example `http://10.0.0.5:8080`.
    #[arg(long, env = "MOLECULE_UPSTREAM")]
    pub upstream: String,

    /// `development`/`dev` turns the rate limiter off, as on the control plane.
    #[arg(long = "env", env = "MOLECULE_ENV", default_value = "")]
    pub environment: String,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// The environment class, decided once (docs/workspaces.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
    Default,
}

impl Environment {
    /// The mode `MOLECULE_ENV` names; unset or empty is the default mode. A value that names
    /// no mode is an error: a typo must not silently mean "default".
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Self::Production),
            "development" | "dev" => Ok(Self::Development),
            "" => Ok(Self::Default),
            _ => Err(format!(
                "MOLECULE_ENV={:?} names no mode: use production (prod), development (dev), or leave it unset for the default mode",
                raw.trim()
            )),
        }
    }

    /// The mode, for a value already validated by [`Environment::parse`].
    pub fn classify(raw: &str) -> Self {
        Self::parse(raw).unwrap_or(Self::Default)
    }

    /// The mode's name in logs: `production`, `development` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Development => "development",
            Self::Default => "default",
        }
    }
}

/// Every setting of `T` at its documented default, as if given no flags and no environment
/// (for embedding and tests, which then set fields directly).
fn defaults<T: Args + clap::FromArgMatches>() -> T {
    let matches = without_env::<T>()
        .try_get_matches_from(["defaults"])
        .expect("every setting has a default");
    T::from_arg_matches(&matches).expect("defaults parse")
}

/// The arguments of `T` with no environment variable behind any of them.
fn without_env<T: Args>() -> clap::Command {
    T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>))
}

impl Default for Config {
    fn default() -> Self {
        defaults()
    }
}

impl Default for EdgeArgs {
    fn default() -> Self {
        defaults()
    }
}

impl Default for ListenerArgs {
    fn default() -> Self {
        defaults()
    }
}

impl Default for GithubArgs {
    fn default() -> Self {
        defaults()
    }
}

impl Default for RuntimeArgs {
    fn default() -> Self {
        defaults()
    }
}

impl Config {
    pub fn a2a_idle_timeout(&self) -> std::time::Duration {
        const DEFAULT: u64 = 300;
        let seconds = match self.a2a_idle_timeout_seconds.trim().parse::<i64>() {
            Ok(seconds) if seconds > 0 => seconds.unsigned_abs(),
            _ => {
                tracing::warn!(
                    value = %self.a2a_idle_timeout_seconds,
                    "A2A_IDLE_TIMEOUT_SECONDS is not a positive integer; using {DEFAULT}"
                );
                DEFAULT
            }
        };
        std::time::Duration::from_secs(seconds)
    }

    pub fn environment(&self) -> Environment {
        Environment::classify(&self.environment)
    }

    /// Bearer-less requests pass the auth gates only in development without an admin token.
    pub fn dev_mode(&self) -> bool {
        self.environment() == Environment::Development && self.admin_token.is_none()
    }

    /// Which agent addresses this deployment may register and dial (docs/README.md, modes).
    pub fn url_policy(&self) -> crate::url_safety::UrlPolicy {
        let dev = self.environment() == Environment::Development;
        let one_machine =
            self.environment() == Environment::Default && self.listen.ip().is_loopback();
        crate::url_safety::UrlPolicy {
            allow_loopback: dev || one_machine,
            allow_private: dev
                || crate::url_safety::relaxed_deploy_mode(
                    &self.deploy_mode,
                    self.edge.org_id.as_deref(),
                ),
        }
    }

    pub fn test_tokens_enabled(&self) -> bool {
        self.enable_test_tokens.trim() == "1" || self.environment() != Environment::Production
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_the_environment() {
        // Checked on the command rather than by setting a variable: `set_var` races with any
        // other test thread that reads the environment.
        let flags = Config::augment_args(clap::Command::new("serve"));
        assert!(flags.get_arguments().any(|arg| arg.get_env().is_some()));
        assert!(
            without_env::<Config>()
                .get_arguments()
                .all(|arg| arg.get_env().is_none())
        );
        let config = Config::default();
        assert_eq!(config.edge.rate_limit, 600);
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.listener.preauth_connection_bytes, 4 << 20);
    }

    #[test]
    fn durations_take_go_units() {
        assert_eq!(
            parse_duration("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(parse_duration("5").is_err());
        assert_eq!(
            parse_duration("30d"),
            Ok(std::time::Duration::from_secs(30 * 86_400))
        );
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn secret_debug_masks_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn environment_classification_is_case_insensitive_and_trimmed() {
        assert_eq!(Environment::classify(" PROD "), Environment::Production);
        assert_eq!(Environment::classify("Production"), Environment::Production);
        assert_eq!(Environment::classify("dev"), Environment::Development);
        assert_eq!(Environment::classify(""), Environment::Default);
        let typo = Environment::parse("prodution").unwrap_err();
        assert!(
            typo.starts_with(r#"MOLECULE_ENV="prodution" names no mode"#),
            "{typo}"
        );
    }
}

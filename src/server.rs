//! Assembling and running one control-plane process: datastore, event bus, the gRPC services
//! (with health and reflection), the in-process REST gateway, `/metrics`, and the edge
//! middleware, all on one listener. Also the standalone gateway. It owns start-up and shutdown
//! order; no request logic lives here.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use deadpool_redis::redis;
use gateway::{
    Gateway, Transport, TransportError,
    edge::RouteTemplate,
    preauth::{PreAuth, RemoteCheck},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tower::{ServiceExt, util::BoxCloneSyncService};
use tracing::{info, warn};

use crate::{
    a2a::{
        self, A2AService, A2aState,
        attach::AgentInboundService,
        replicas::{Replicas, ReplicasService},
    },
    audit::AuditTrail,
    audit_log::AuditService,
    auth::Authenticator,
    bootstrap,
    bundles::BundlesService,
    config::{Config, Environment, GatewayArgs},
    console::ConsoleService,
    crypto::Keyring,
    delegations::{self, DelegationsService},
    domain::usage::Pricing,
    events::{EventBus, EventLog, InProcessBus, RedisBus},
    github::{GithubApp, GithubService},
    grpc_edge::{self, GrpcEdge},
    hierarchy::Hierarchy,
    listener::{self, ListenerSettings},
    liveness::{InProcessLiveness, Liveness, RedisLiveness},
    nul_guard, pb,
    plugins::PluginsService,
    readiness::Readiness,
    registry::{self, RegistryService},
    runtime::{
        ApprovalsService, ChatFilesService, CheckpointsService, InstructionsService,
        KeyValuesService, MemoriesService, SharedContextService,
    },
    schedules::{self, SchedulesService},
    secrets::SecretsService,
    state::{Platform, PluginSettings, RuntimeSettings, Settings},
    store::{self, Db},
    sweeper, telemetry,
    templates::TemplatesService,
    url_safety::{Resolver, SystemResolver},
    workspaces::WorkspacesService,
};

pub type StartupError = Box<dyn std::error::Error + Send + Sync>;

/// A built control plane, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    listener_settings: ListenerSettings,
    app: Router,
    /// The proxy's state, which holds the platform's too.
    a2a: A2aState,
    backends: Backends,
}

/// What a server runs on, as its start-up line reports it.
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    pub environment: &'static str,
    pub database: &'static str,
    /// Where liveness and the cross-replica event fan-out live.
    pub coordination: &'static str,
}

impl Application {
    /// Resolves credentials, connects and migrates the datastore, starts the event bus and the
    /// sweeps, and binds the listener (port 0 works).
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        // Credentials are generated only once the datastores answer and the port is ours, so a
        // failed first start leaves nothing behind to confuse the next one.
        bootstrap::validate(&config)?;
        let github = GithubApp::from_args(&config.github)?.map(Arc::new);
        let db = Db::new(store::open(&config.storage).await?);
        let redis = match &config.redis_url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };
        let listener = bind(config.listen).await?;
        let credentials = bootstrap::resolve(&config)?;
        if let Some(path) = &credentials.generated_admin_token {
            announce_admin_token(listener.local_addr()?, path);
        }

        let shutdown = CancellationToken::new();
        let instance_id = uuid::Uuid::new_v4().to_string();
        let bus: Arc<dyn EventBus> = match (&config.redis_url, &redis) {
            (Some(url), Some(client)) => {
                let client = client.clone();
                let pool = deadpool_redis::Config::from_url(url.expose())
                    .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
                info!(instance_id, "event fan-out over redis");
                Arc::new(
                    RedisBus::start(
                        pool,
                        client,
                        &config.redis_namespace,
                        instance_id,
                        shutdown.clone(),
                    )
                    .await?,
                )
            }
            _ => Arc::new(InProcessBus::new()),
        };
        let ttl = std::time::Duration::from_secs(config.liveness_ttl_seconds);
        let liveness: Arc<dyn Liveness> = match &redis {
            Some(client) => {
                RedisLiveness::start(
                    client.clone(),
                    &config.redis_namespace,
                    ttl,
                    shutdown.clone(),
                )
                .await?
            }
            None => InProcessLiveness::start(ttl, shutdown.clone()),
        };
        let listener_settings = ListenerSettings::resolve(&config.listener);
        let keyring = Arc::new(Keyring::new(
            &credentials.keys.current,
            credentials.keys.previous.as_ref(),
        ));
        let replicas = match &redis {
            Some(client) => {
                let me = advertise_url(&config, listener.local_addr()?);
                info!(advertise_url = %me, "attached agents reachable from other replicas");
                Some(Replicas::start(client.clone(), &config.redis_namespace, me, &keyring).await?)
            }
            None => None,
        };
        let dev_mode = config.dev_mode();
        if dev_mode {
            warn!("dev mode: bearer-less requests pass the auth gates");
        }
        // Registration, discovery and the proxy's dialler judge addresses by one policy.
        let url_policy = config.url_policy();
        let resolver: Arc<dyn Resolver> = Arc::new(SystemResolver);
        let platform = Platform {
            supervision: Arc::default(),
            audit: AuditTrail::new(config.audit.audit_ledger_salt.as_ref()),
            auth: Authenticator::new(db.clone(), credentials.admin_token.as_ref(), dev_mode),
            events: EventLog::new(bus),
            hierarchy: Hierarchy::new(db.clone()),
            keyring,
            liveness,
            hot: Arc::default(),
            url_policy,
            resolver,
            settings: Arc::new(Settings {
                external_platform_url: config.edge.external_platform_url.clone(),
                test_tokens_enabled: config.test_tokens_enabled(),
                provision_timeout: std::time::Duration::from_secs(config.provision_timeout_seconds),
                a2a_idle_timeout: config.a2a_idle_timeout(),
                session_ttl: config.session_ttl,
                credential_recheck: config.edge.ws_recheck,
                templates_dir: config.templates_dir.clone(),
                runtime: RuntimeSettings {
                    approval_ttl: config.runtime.approval_ttl,
                    checkpoint_retention: config.runtime.checkpoint_retention,
                    upload_quota_bytes: config.runtime.upload_quota_bytes,
                    upload_ttl: config.runtime.upload_ttl,
                    schedule_fire_timeout: config.runtime.schedule_fire_timeout,
                    pricing: Pricing {
                        input_per_mtok: config.runtime.price_input_per_mtok,
                        output_per_mtok: config.runtime.price_output_per_mtok,
                    },
                },
                plugins: PluginSettings {
                    dir: config.plugins.plugins_dir.clone(),
                    fetch_timeout: config.plugins.plugin_install_fetch_timeout,
                    max_dir_bytes: config.plugins.plugin_install_max_dir_bytes,
                    allow_unpinned: config.plugins.plugin_allow_unpinned,
                    allowlist: config
                        .plugins
                        .plugin_allowlist
                        .split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect(),
                },
            }),
            shutdown,
            db,
        };
        // The features, each given what it uses; hooks point upward without naming the
        // feature they reach (the queue completes delegations, a beat drains the queue).
        let a2a = A2aState::new(
            platform.clone(),
            replicas,
            delegations::redelivery_hook(platform.clone()),
        );
        let on_beat: registry::BeatHook = {
            let a2a = a2a.clone();
            Arc::new(move |id, active_tasks, max_concurrent| {
                a2a::queue::on_heartbeat(&a2a, id, active_tasks, max_concurrent);
            })
        };

        let edge = Arc::new(config.edge.edge(dev_mode));
        let preauth = PreAuth::new(
            Arc::new(platform.auth.clone()),
            config.listener.preauth_limits(),
        );
        let grpc_edge = GrpcEdge {
            edge: edge.clone(),
            preauth: preauth.clone(),
            strings: Arc::new(nul_guard::Index::from_descriptors(pb::FILE_DESCRIPTOR_SET)?),
        };
        let schedules_wake = Arc::new(tokio::sync::Notify::new());
        let (grpc, health) = grpc_router(&platform, &a2a, on_beat, &schedules_wake, github).await?;
        let grpc = grpc.layer(middleware::from_fn_with_state(grpc_edge, grpc_edge::guard));
        let readiness = Readiness {
            health: health.reporter,
            services: health.services,
            db: platform.db.clone(),
            redis: redis.clone(),
            supervision: platform.supervision.clone(),
        };
        tokio::spawn(readiness.run(platform.shutdown.clone()));
        let transport = in_process_transport(grpc.clone());
        let rest = gateway::router(Gateway::new(
            transport,
            edge.clone(),
            platform.shutdown.clone(),
        ));
        let app = with_metrics(rest.merge(grpc.clone().layer(tonic_web::GrpcWebLayer::new())));
        let app = gateway::edge::apply(app, edge, preauth);
        let app = Router::new().fallback_service(by_protocol(grpc, app));

        tokio::spawn(sweeper::run_provision_timeout_sweep(platform.clone()));
        tokio::spawn(sweeper::run_runtime_sweep(platform.clone()));
        tokio::spawn(sweeper::run_status_gauge(platform.clone()));
        registry::spawn_background(&platform);
        tokio::spawn(a2a::queue::sweep(a2a.clone()));
        tokio::spawn(a2a::attach::close_on_revocation(a2a.clone()));
        tokio::spawn(schedules::scheduler::run(a2a.clone(), schedules_wake));
        let backends = Backends {
            environment: Environment::classify(&config.environment).as_str(),
            database: match sea_orm::ConnectionTrait::get_database_backend(&a2a.db) {
                sea_orm::DbBackend::Postgres => "postgres",
                sea_orm::DbBackend::Sqlite => "sqlite",
                _ => "other",
            },
            coordination: if redis.is_some() {
                "redis"
            } else {
                "in-process"
            },
        };
        Ok(Self {
            listener,
            listener_settings,
            app,
            a2a,
            backends,
        })
    }

    pub fn backends(&self) -> Backends {
        self.backends
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn db(&self) -> &Db {
        &self.a2a.db
    }

    /// Serves until `signal` resolves; then long-lived streams end and in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = listener::serve(
            self.listener,
            self.app,
            self.listener_settings,
            self.a2a.shutdown.clone(),
            signal,
        )
        .await;
        // Proxy records still queued, and the last beats' informational columns, which the
        // flusher may not have written yet.
        self.a2a.records.flush().await;
        if let Err(err) = registry::flush_write_behind(&self.a2a).await {
            warn!(error = %err, "final heartbeat flush failed");
        }
        result
    }

    /// A handle that stops the server when cancelled (for tests and embedding).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.a2a.shutdown.clone()
    }
}

/// Native gRPC (runtimes, services) goes straight to the services: the REST edge layers
/// (CORS, limiter, security headers, request ids) are HTTP/1 browser concerns and would
/// otherwise wrap every frame of every heartbeat stream. gRPC-Web and REST take the edge.
fn by_protocol(
    grpc: Router,
    app: Router,
) -> BoxCloneSyncService<Request, Response, std::convert::Infallible> {
    // The request metrics are taken here rather than in a layer of their own: one boxed
    // future and service clone fewer on every request.
    BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
        let native_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.starts_with("application/grpc") && !value.starts_with("application/grpc-web")
            });
        let target = if native_grpc {
            grpc.clone()
        } else {
            app.clone()
        };
        let measured = Measured::start(&request);
        async move {
            let response = target.oneshot(request).await?;
            measured.record(&response);
            Ok(response)
        }
    }))
}

/// The gRPC services, routed by their `/package.Service/` prefix. Reflection serves every
/// descriptor of the wire contract, so a service added here needs nothing more.
async fn grpc_router(
    platform: &Platform,
    a2a: &A2aState,
    on_beat: registry::BeatHook,
    schedules_wake: &Arc<tokio::sync::Notify>,
    github: Option<Arc<GithubApp>>,
) -> Result<(Router, GrpcHealth), StartupError> {
    // Each service decodes what its calls need (audit N3): REST's body cap for the JSON-shaped
    // services, an A2A body for the proxy, the agent's inbound stream and replica relays.
    GrpcServices::new()
        .add(
            pb::workspaces_server::WorkspacesServer::new(WorkspacesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::registry_server::RegistryServer::new(RegistryService::new(
                platform.clone(),
                on_beat,
            ))
            .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::secrets_server::SecretsServer::new(SecretsService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::plugins_server::PluginsServer::new(PluginsService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::bundles_server::BundlesServer::new(BundlesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::console_server::ConsoleServer::new(ConsoleService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::memories_server::MemoriesServer::new(MemoriesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::approvals_server::ApprovalsServer::new(ApprovalsService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::instructions_server::InstructionsServer::new(InstructionsService::new(
                platform.clone(),
            ))
            .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::shared_context_server::SharedContextServer::new(SharedContextService::new(
                platform.clone(),
            ))
            .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::chat_files_server::ChatFilesServer::new(ChatFilesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::checkpoints_server::CheckpointsServer::new(CheckpointsService::new(
                platform.clone(),
            ))
            .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::delegations_server::DelegationsServer::new(DelegationsService::new(a2a.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::key_values_server::KeyValuesServer::new(KeyValuesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::audit_server::AuditServer::new(AuditService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::github_server::GithubServer::new(GithubService::new(platform.clone(), github))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::templates_server::TemplatesServer::new(TemplatesService::new(platform.clone()))
                .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::schedules_server::SchedulesServer::new(SchedulesService::new(
                a2a.clone(),
                schedules_wake.clone(),
            ))
            .max_decoding_message_size(pb::REQUEST_MESSAGE_BYTES),
        )
        .add(
            pb::a2a_server::A2aServer::new(A2AService::new(a2a.clone()))
                .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(pb::MAX_MESSAGE_BYTES),
        )
        .add(
            pb::agent_inbound_server::AgentInboundServer::new(AgentInboundService::new(
                a2a.clone(),
            ))
            .max_decoding_message_size(pb::MAX_MESSAGE_BYTES),
        )
        .add(
            pb::replicas_server::ReplicasServer::new(ReplicasService::new(a2a.clone()))
                .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(pb::MAX_MESSAGE_BYTES),
        )
        .finish()
        .await
}

/// Registers each service with the router and with gRPC health at once, so the two lists
/// cannot drift apart.
struct GrpcServices {
    routes: tonic::service::RoutesBuilder,
    names: Vec<&'static str>,
    health: tonic_health::server::HealthReporter,
}

impl GrpcServices {
    fn new() -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(health_service);
        Self {
            routes,
            names: vec![tonic_health::pb::health_server::SERVICE_NAME],
            health,
        }
    }

    /// Routes `service`; it reports serving once the router is finished.
    fn add<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Reports every service serving, adds reflection, and mounts each service under its own
    /// prefix only, so unknown REST paths reach the gateway's JSON 404. Returns the health
    /// reporter too, for readiness to follow.
    async fn finish(mut self) -> Result<(Router, GrpcHealth), StartupError> {
        for name in &self.names {
            self.health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        self.names.extend([
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]);
        self.routes
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        // (axum refuses a bare `Router` here, hence the boxing.)
        let routes = BoxCloneSyncService::new(self.routes.routes().prepare().into_axum_router());
        let router = self.names.iter().fold(Router::new(), |router, name| {
            router.route_service(&format!("/{name}/{{*method}}"), routes.clone())
        });
        let health = GrpcHealth {
            reporter: self.health,
            services: self.names,
        };
        Ok((router, health))
    }
}

/// gRPC health's reporter and every service name it reports on.
struct GrpcHealth {
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
}

/// Binds the one listening address, or says which address could not be taken.
async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot listen on {address} (MOLECULE_LISTEN): {err}"))
}

/// A Redis client whose server answered a PING, or one line saying which Redis did not.
async fn connect_redis(url: &crate::config::Secret) -> Result<redis::Client, String> {
    let shown = crate::config::redacted_url(url.expose());
    let failed = |reason: String| format!("cannot reach Redis (REDIS_URL={shown}): {reason}");
    let client = redis::Client::open(url.expose()).map_err(|err| failed(err.to_string()))?;
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut connection).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), ping).await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(err)) => Err(failed(err.to_string())),
        Err(_) => Err(failed("no answer within 5 s".to_owned())),
    }
}

/// Where other replicas reach this one: the configured URL, else the bound address (this host's
/// name when bound to every interface, since 0.0.0.0 is nobody's address).
fn advertise_url(config: &Config, bound: SocketAddr) -> String {
    if let Some(url) = &config.advertise_url {
        return url.trim_end_matches('/').to_owned();
    }
    if !bound.ip().is_unspecified() {
        return format!("http://{bound}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    format!("http://{host}:{}", bound.port())
}

/// The generated clients of the gateway calling the generated servers without a socket.
fn in_process_transport(grpc: Router) -> Transport {
    BoxCloneSyncService::new(
        grpc.map_request(|request: http::Request<tonic::body::Body>| {
            request.map(axum::body::Body::new)
        })
        .map_response(|response: Response| response.map(tonic::body::Body::new))
        .map_err(TransportError::new),
    )
}

/// The REST gateway alone, in front of a remote control plane.
pub struct GatewayServer {
    listener: TcpListener,
    settings: ListenerSettings,
    app: Router,
    shutdown: CancellationToken,
    upstream: String,
}

impl GatewayServer {
    /// The control plane it forwards to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub async fn build(args: GatewayArgs) -> Result<Self, StartupError> {
        let channel =
            tonic::transport::Endpoint::from_shared(args.upstream.clone())?.connect_lazy();
        let transport: Transport = BoxCloneSyncService::new(channel.map_err(TransportError::new));
        let dev = Environment::parse(&args.environment)? == Environment::Development;
        let edge = Arc::new(args.edge.edge(dev));
        let shutdown = CancellationToken::new();
        let preauth = PreAuth::new(
            Arc::new(RemoteCheck::new(transport.clone())),
            args.listener.preauth_limits(),
        );
        let rest = gateway::router(Gateway::new(transport, edge.clone(), shutdown.clone()));
        let app = gateway::edge::apply(with_metrics(rest), edge, preauth)
            .layer(middleware::from_fn(track_metrics));
        let listener = bind(args.listen).await?;
        Ok(Self {
            listener,
            settings: ListenerSettings::resolve(&args.listener),
            app,
            shutdown,
            upstream: args.upstream,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        listener::serve(
            self.listener,
            self.app,
            self.settings,
            self.shutdown,
            signal,
        )
        .await
    }
}

/// The process-wide Prometheus recorder (installed once, shared by every app in the process).
/// `router` serving the Prometheus exposition at `/metrics`.
fn with_metrics(router: Router) -> Router {
    telemetry::handle();
    router.route("/metrics", get(|| std::future::ready(telemetry::render())))
}

/// Request counts and latencies, labelled by method and a bounded route label.
async fn track_metrics(request: Request, next: Next) -> Response {
    let measured = Measured::start(&request);
    let response = next.run(request).await;
    measured.record(&response);
    response
}

/// One request's metrics, from its arrival to its answer. Every label is from a bounded set.
struct Measured {
    started: Instant,
    method: &'static str,
    /// A gRPC call's method label.
    grpc_method: Option<&'static str>,
}

impl Measured {
    fn start(request: &Request) -> Self {
        let path = request.uri().path();
        Self {
            started: Instant::now(),
            method: telemetry::http_method_label(request.method()),
            grpc_method: is_grpc_path(path).then(|| telemetry::grpc_method_label(path)),
        }
    }

    fn record(self, response: &Response) {
        let took = self.started.elapsed().as_secs_f64();
        match self.grpc_method {
            // A gRPC failure is an HTTP 200 whose status travels in `grpc-status`: in the head
            // when the call fails before any message (trailers-only), which is how failures
            // leave this server; a head without it is a call under way, counted as OK.
            Some(method) => {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from);
                let code = format!("{code:?}");
                metrics::counter!(telemetry::GRPC_HANDLED, "method" => method, "code" => code)
                    .increment(1);
                metrics::histogram!(telemetry::GRPC_DURATION, "method" => method).record(took);
            }
            None => {
                let labels = [
                    ("method", self.method.to_owned()),
                    ("route", route_label(response)),
                    ("status", response.status().as_u16().to_string()),
                ];
                metrics::counter!(telemetry::HTTP_REQUESTS, &labels).increment(1);
                metrics::histogram!(telemetry::HTTP_DURATION, &labels).record(took);
            }
        }
    }
}

fn is_grpc_path(path: &str) -> bool {
    path.starts_with("/molecule.") || path.starts_with("/grpc.")
}

/// A bounded label: the REST route template, or "unmatched".
fn route_label(response: &Response) -> String {
    match response.extensions().get() {
        Some(RouteTemplate(matched)) => matched.as_str().to_owned(),
        None => "unmatched".to_owned(),
    }
}

/// `listen` is the bound address, so `--listen …:0` shows the port the kernel chose.
fn announce_admin_token(listen: SocketAddr, path: &std::path::Path) {
    let token = std::fs::read_to_string(path).unwrap_or_default();
    let host = match listen.ip() {
        ip if ip.is_unspecified() => format!("127.0.0.1:{}", listen.port()),
        _ => listen.to_string(),
    };
    // The one place a credential is printed: generated on this boot, shown once, stored 0600,
    // and only to a person at a terminal. A pipe or a container's output is a log, which keeps
    // the path instead.
    use std::io::IsTerminal;
    let json_logs = crate::config::LogFormat::stdout_is_json();
    let at_terminal = if json_logs {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let banner = if at_terminal {
        format!(
            "generated an admin token (saved to {}); it will not be shown again:\n\n  curl -H 'Authorization: Bearer {}' http://{host}/workspaces\n",
            path.display(),
            token.trim()
        )
    } else {
        format!(
            "generated an admin token, saved to {} (owner-only); read it there:\n\n  curl -H \"Authorization: Bearer $(cat {})\" http://{host}/workspaces\n",
            path.display(),
            path.display()
        )
    };
    // Like the log lines: a closed stdout loses the banner (the token stays in its file).
    use std::io::Write;
    let _ = if json_logs {
        writeln!(std::io::stderr(), "{banner}")
    } else {
        writeln!(std::io::stdout(), "{banner}")
    };
}

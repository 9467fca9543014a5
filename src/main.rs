//! The `molecule` binary: the server (`serve`, `migrate`, `gateway`, `secrets rotate-key`) and
//! the operator CLI (`ws`, `events`, `token`, `a2a`, `audit`, `completions`).

use std::io::IsTerminal;

use clap::Parser;
use molecule::{
    bootstrap, cli,
    config::{Cli, Command, LogFormat, MigrateAction, MigrateArgs, SecretsCommand, ServerCommand},
    crypto::Keyring,
    secrets,
    server::{self, Application, GatewayServer},
    store,
};
use tracing_subscriber::EnvFilter;

// glibc's malloc spent a sixth of the heartbeat path's CPU in its own bookkeeping.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let command = match cli.command {
        Command::Operator(command) => exit_with(cli::run(command).await),
        Command::Server(command) => command,
    };
    // Registered before start-up, so a SIGTERM that arrives early still stops the process cleanly.
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(err) => {
            eprintln!("error: cannot install signal handlers: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = run(command, signal).await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

/// Log lines go to stdout, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    format.select();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log reader that went away (`molecule serve | head`, a restarted shipper) costs the
    // lines, not the server, and not a complaint on stderr per event.
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => lines.json().flatten_event(true).init(),
        // Colour codes only where a terminal renders them, never into a file or a collector.
        LogFormat::Text => lines.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}

/// Ends an operator command: its error as one line, and the exit status.
fn exit_with(result: Result<(), cli::CliError>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }
}

async fn run(
    command: ServerCommand,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), server::StartupError> {
    match command {
        ServerCommand::Serve(config) => {
            let app = Application::build(*config).await?;
            let backends = app.backends();
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                mode = "serve",
                environment = backends.environment,
                listen = %app.local_addr(),
                database = backends.database,
                liveness_and_events = backends.coordination,
                "molecule started"
            );
            app.run_until_stopped(signal).await?;
        }
        ServerCommand::Migrate(MigrateArgs {
            action: None,
            storage,
        }) => {
            store::open(&storage).await?;
            tracing::info!("migrations applied");
        }
        ServerCommand::Migrate(MigrateArgs {
            action: Some(MigrateAction::Status(storage)),
            ..
        }) => {
            let db = store::open_unmigrated(&storage).await?;
            let migrations = store::migration_status(&db).await?;
            let width = migrations
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0);
            for (name, applied) in &migrations {
                let state = if *applied { "applied" } else { "pending" };
                println!("{name:width$}  {state}");
            }
        }
        ServerCommand::Gateway(args) => {
            let gateway = GatewayServer::build(*args).await?;
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                mode = "gateway",
                listen = %gateway.local_addr(),
                upstream = %gateway.upstream(),
                "molecule started"
            );
            gateway.run_until_stopped(signal).await?;
        }
        ServerCommand::Secrets(SecretsCommand::RotateKey(config)) => {
            let keys = bootstrap::resolve_keys(&config)?;
            let keyring = Keyring::new(&keys.current, keys.previous.as_ref());
            let db = store::open(&config.storage).await?;
            let report = secrets::rotate(&store::Db::new(db), &keyring).await?;
            println!(
                "key_version={} rewritten={} current={} failed={}",
                report.key_version,
                report.rewritten,
                report.current,
                report.failed.len()
            );
            if !report.failed.is_empty() {
                return Err(format!(
                    "{} secrets open under no configured key: {}",
                    report.failed.len(),
                    report.failed.join(", ")
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

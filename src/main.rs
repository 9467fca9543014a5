//! The `molecule` binary: the server (`serve`, `migrate`, `gateway`, `secrets rotate-key`) and
//! the operator CLI (`ws`, `events`, `token`, `a2a`, `completions`).

use clap::Parser;
use molecule::{
    bootstrap, cli,
    config::{Cli, Command, SecretsCommand, ServerCommand},
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let command = match Cli::parse().command {
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
            tracing::info!(listen = %app.local_addr(), "molecule listening");
            app.run_until_stopped(signal).await?;
        }
        ServerCommand::Migrate(storage) => {
            store::open(&storage).await?;
            tracing::info!("migrations applied");
        }
        ServerCommand::Gateway(args) => {
            let gateway = GatewayServer::build(*args).await?;
            tracing::info!(listen = %gateway.local_addr(), "molecule gateway listening");
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

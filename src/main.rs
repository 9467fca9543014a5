//! The `molecule` binary: `serve`, `migrate` and `gateway`.

use clap::Parser;
use molecule::{
    config::{Cli, Command},
    server::{self, Application, GatewayServer},
    store,
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Err(err) = run(cli.command).await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> Result<(), server::StartupError> {
    match command {
        Command::Serve(config) => {
            let app = Application::build(*config).await?;
            tracing::info!(listen = %app.local_addr(), "molecule listening");
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate(storage) => {
            let db = store::connect(&storage).await?;
            store::migrate(&db).await?;
            tracing::info!("migrations applied");
        }
        Command::Gateway(args) => {
            let gateway = GatewayServer::build(args).await?;
            tracing::info!(listen = %gateway.local_addr(), "molecule gateway listening");
            gateway.run_until_stopped(shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

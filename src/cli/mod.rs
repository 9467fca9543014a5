//! The operator CLI (`molecule ws|events|token|a2a|schedule|org|audit`): typed gRPC calls to a running control
//! plane, printed as a table or as JSON. It owns argument handling and presentation only; every
//! rule is the server's, so the CLI gets exactly the answers REST and gRPC clients get. It never
//! prints a credential except a token minted on request, once.

mod a2a;
mod audit;
mod events;
mod health;
mod org;
mod render;
mod schedule;
mod tokens;
mod ws;

use std::fmt;

use tonic::{
    metadata::{MetadataValue, errors::InvalidMetadataValue},
    transport::{Channel, Endpoint},
};

use crate::config::{Cli, ClientArgs, OperatorCommand, Output};

/// Why a CLI command failed, as one line for the operator.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        Self(format!("{} ({:?})", status.message(), status.code()))
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        Self(format!("cannot write the output: {err}"))
    }
}

/// Runs one operator command to its end.
pub async fn run(command: OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::Ws(ws) => ws::run(&Session::open(&ws.client).await?, ws.command).await,
        OperatorCommand::Events(args) => {
            events::run(&Session::open(&args.client).await?, &args).await
        }
        OperatorCommand::Token(token) => {
            tokens::run(&Session::open(&token.client).await?, token.command).await
        }
        OperatorCommand::A2a(a2a) => {
            a2a::run(&Session::open(&a2a.client).await?, a2a.command).await
        }
        OperatorCommand::Schedule(schedule) => {
            schedule::run(&Session::open(&schedule.client).await?, schedule.command).await
        }
        OperatorCommand::Org(org) => {
            org::run(&Session::open(&org.client).await?, org.command).await
        }
        OperatorCommand::Audit(command) => audit::run(command).await,
        OperatorCommand::Health(args) => health::run(&args).await,
        OperatorCommand::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "molecule", &mut script);
            Ok(std::io::stdout().lock().write_all(&script)?)
        }
    }
}

/// A connection to the control plane and the credential every call carries.
pub(crate) struct Session {
    channel: Channel,
    /// `scheme://host:port` of the server, as the operator named it.
    pub(crate) url: String,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    pub(crate) output: Output,
}

impl Session {
    async fn open(args: &ClientArgs) -> Result<Self, CliError> {
        let url = server_url(&args.url)?;
        let token = match &args.token {
            Some(token) => token.expose().to_owned(),
            // The generated admin token is this machine's: it never leaves it.
            None if is_loopback(&url) => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .map(|token| token.trim().to_owned())
                    .map_err(|_| {
                        CliError::new(format!(
                            "no credential: pass --token or MOLECULE_TOKEN (no admin token at {})",
                            path.display()
                        ))
                    })?
            }
            None => {
                return Err(CliError::new(format!(
                    "no credential for {url}: pass --token or MOLECULE_TOKEN (the local admin token is only sent to a loopback --url)"
                )));
            }
        };
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_: InvalidMetadataValue| CliError::new("the token is not printable ASCII"))?;
        let base = url.as_str().trim_end_matches('/').to_owned();
        let channel = endpoint(&url)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|err| CliError::new(format!("cannot reach {base}: {}", error_chain(&err))))?;
        Ok(Self {
            channel,
            url: base,
            bearer,
            output: args.output,
        })
    }

    /// `message` as a request carrying the session's credential.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// The server's URL as the operator gave it; `host:port` means `http://host:port`.
pub(crate) fn server_url(raw: &str) -> Result<url::Url, CliError> {
    let full = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = url::Url::parse(&full).map_err(|_| CliError::new(format!("{raw} is not a URL")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(CliError::new(format!(
            "{raw}: the server's URL is http://HOST:PORT or https://HOST:PORT"
        ))),
    }
}

/// A gRPC endpoint for `url`: TLS (rustls, the platform's roots and Mozilla's) for `https://`,
/// h2c for `http://`, never cleartext to an `https://` URL.
fn endpoint(url: &url::Url) -> Result<Endpoint, CliError> {
    let endpoint = Endpoint::from_shared(url.as_str().trim_end_matches('/').to_owned())
        .map_err(|_| CliError::new(format!("{url} is not a URL")))?;
    if url.scheme() != "https" {
        return Ok(endpoint);
    }
    endpoint
        .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
        .map_err(|err| CliError::new(format!("cannot set up TLS for {url}: {err}")))
}

/// A host on this machine: a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// An error with its causes, for one line ("transport error: … : invalid peer certificate").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        line.push_str(": ");
        line.push_str(&next.to_string());
        cause = next.source();
    }
    line
}

/// The text of `path`, or of stdin for `-`.
pub(crate) fn read_input(path: &std::path::Path) -> Result<String, CliError> {
    use std::io::Read;
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(path).map(|read| text = read)
    };
    read.map_err(|err| CliError::new(format!("cannot read {}: {err}", path.display())))?;
    Ok(text)
}

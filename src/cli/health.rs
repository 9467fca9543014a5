//! `molecule health`: the readiness probe a container's `HEALTHCHECK` runs. It asks the server's
//! `GET /readyz` and prints the answer; the exit status is 0 only when the server is ready.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::CliError;
use crate::config::HealthArgs;

pub(crate) async fn run(args: &HealthArgs) -> Result<(), CliError> {
    let base = super::server_url(&args.url)?;
    let url = format!("{}/readyz", base.as_str().trim_end_matches('/'));
    let request = Request::get(&url)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|_| CliError::new(format!("{base} is not a URL")))?;
    // TLS for `https://`, with Mozilla's roots (a probe carries no credential).
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let asked = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(args.timeout_seconds), asked)
        .await
        .map_err(|_| CliError::new(format!("{url}: no answer within {}s", args.timeout_seconds)))?
        .map_err(|err| CliError::new(format!("cannot reach {url}: {err}")))?;
    println!("{}", String::from_utf8_lossy(&body).trim_end());
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(CliError::new(format!("not ready ({status})")))
    }
}

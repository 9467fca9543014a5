//! What the gateway passes on to the services: the caller's credentials and tracing headers as
//! gRPC metadata (an allow-list), the client IP it saw, and the platform URL the caller used.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use http::{HeaderMap, HeaderValue, request::Parts};
use tonic::metadata::MetadataMap;

/// Headers that cross into gRPC metadata, and nothing else.
const FORWARDED_HEADERS: [&str; 5] = [
    "authorization",
    "x-workspace-id",
    "x-molecule-org-id",
    "x-request-id",
    "traceparent",
];

/// Headers the gateway itself reads (never forwarded).
const LOCAL_HEADERS: [&str; 4] = ["x-forwarded-proto", "x-forwarded-host", "host", "origin"];

/// The caller's forwarded context, taken from the request head: only the allow-listed
/// headers are kept, so extracting it costs a handful of small copies, not the whole head.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    metadata: MetadataMap,
    local: HeaderMap,
    pub(crate) client_ip: IpAddr,
}

impl Forwarded {
    /// Wraps a message in a gRPC request carrying the caller's credentials.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }

    /// `scheme://host` as the caller reached us (docs/workspaces.md §2.1), without a trailing
    /// slash.
    pub(crate) fn platform_url(&self) -> String {
        let header = |name: &str| {
            self.header(name)
                .map(|value| value.split(',').next().unwrap_or("").trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{scheme}://{host}")
            .trim_end_matches('/')
            .to_owned()
    }

    /// One of the headers the gateway reads itself (`host`, `origin`, `x-forwarded-*`).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.local.get(name).and_then(|value| value.to_str().ok())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Forwarded {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let client_ip = crate::client_ip::of(&parts.extensions);
        let mut metadata = MetadataMap::new();
        for name in FORWARDED_HEADERS {
            if let Some(value) = parts.headers.get(name)
                && let Ok(value) = value.to_str()
                && let Ok(value) = value.parse()
            {
                metadata.insert(name, value);
            }
        }
        if let Ok(ip) = client_ip.to_string().parse() {
            metadata.insert("x-forwarded-for", ip);
        }
        let mut local = HeaderMap::new();
        for name in LOCAL_HEADERS {
            if let Some(value) = parts.headers.get(name) {
                local.insert(name, HeaderValue::clone(value));
            }
        }
        Ok(Self {
            metadata,
            local,
            client_ip,
        })
    }
}

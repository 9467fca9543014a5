//! Who is calling the proxy: a forged or malformed `X-Workspace-ID` is refused and logged, no
//! claim means an operator (admin credential), and a claim must come with that workspace's own
//! token.

use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{auth, domain::validate};

use super::{A2aState, Caller, ProxyError};

const FORGED_PREFIXES: [&str; 4] = ["webhook:", "system:", "test:", "channel:"];

/// docs/a2a.md §1.2, steps 2–4: forged ids, user callers, agent callers (their own token, always).
pub async fn authenticate(state: &A2aState, metadata: &MetadataMap) -> Result<Caller, ProxyError> {
    let Some(header) = auth::claimed_workspace(metadata) else {
        state.auth.admin(metadata).await?;
        return Ok(Caller::User);
    };
    let lowered = header.to_ascii_lowercase();
    let Some(caller) = validate::parse_uuid(header).filter(|_| {
        !FORGED_PREFIXES
            .iter()
            .any(|prefix| lowered.starts_with(prefix))
    }) else {
        let remote = metadata
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        warn!(security_event = true, remote, caller_id = ?header, "a2a call with a forged caller id");
        return Err(ProxyError::InvalidCallerId);
    };
    let Some(bearer) = auth::bearer(metadata) else {
        return Err(ProxyError::MissingCallerToken);
    };
    match state.auth.workspace_token(bearer).await? {
        Some(owner) if owner.workspace_id == caller => Ok(Caller::Workspace(caller)),
        _ => Err(ProxyError::InvalidCallerToken),
    }
}

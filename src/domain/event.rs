//! Every event type the platform records or broadcasts, and what is known about each: whether
//! it is live-only information, and which payload fields are private to the parties (what was
//! said, and the handle that decides an approval: visible only to the workspaces that took part,
//! and to operators).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    WorkspaceProvisioning,
    WorkspaceProvisionFailed,
    WorkspaceAwaitingAgent,
    WorkspaceOnline,
    WorkspaceDegraded,
    WorkspaceOffline,
    WorkspacePaused,
    WorkspaceRemoved,
    WorkspaceUpdated,
    WorkspaceTokenRevoked,
    /// An org API key was revoked: streams opened with it end (no workspace).
    OrgTokenRevoked,
    WorkspaceHeartbeat,
    AgentCardUpdated,
    AgentMessage,
    TaskUpdated,
    ActivityLogged,
    #[serde(rename = "A2A_RESPONSE")]
    A2aResponse,
    DelegationSent,
    DelegationStatus,
    DelegationComplete,
    DelegationFailed,
    SecretsChanged,
    GlobalSecretsChanged,
    ApprovalRequested,
    ApprovalEscalated,
    ApprovalApproved,
    ApprovalDenied,
    /// The WebSocket-only frame the runtime waits for (docs/runtime.md M3); never recorded.
    ApprovalDecided,
    InstructionsUpdated,
    /// A workspace's config.yaml changed (docs/operations.md O4).
    ConfigChanged,
    /// A workspace's budget limit was set or cleared (docs/operations.md §5).
    BudgetUpdated,
    /// A schedule fired (docs/operations.md O1).
    CronExecuted,
    /// A due schedule was not fired (its workspace paused or offline).
    CronSkipped,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkspaceProvisioning => "WORKSPACE_PROVISIONING",
            Self::WorkspaceProvisionFailed => "WORKSPACE_PROVISION_FAILED",
            Self::WorkspaceAwaitingAgent => "WORKSPACE_AWAITING_AGENT",
            Self::WorkspaceOnline => "WORKSPACE_ONLINE",
            Self::WorkspaceDegraded => "WORKSPACE_DEGRADED",
            Self::WorkspaceOffline => "WORKSPACE_OFFLINE",
            Self::WorkspacePaused => "WORKSPACE_PAUSED",
            Self::WorkspaceRemoved => "WORKSPACE_REMOVED",
            Self::WorkspaceUpdated => "WORKSPACE_UPDATED",
            Self::WorkspaceTokenRevoked => "WORKSPACE_TOKEN_REVOKED",
            Self::OrgTokenRevoked => "ORG_TOKEN_REVOKED",
            Self::WorkspaceHeartbeat => "WORKSPACE_HEARTBEAT",
            Self::AgentCardUpdated => "AGENT_CARD_UPDATED",
            Self::AgentMessage => "AGENT_MESSAGE",
            Self::TaskUpdated => "TASK_UPDATED",
            Self::ActivityLogged => "ACTIVITY_LOGGED",
            Self::A2aResponse => "A2A_RESPONSE",
            Self::DelegationSent => "DELEGATION_SENT",
            Self::DelegationStatus => "DELEGATION_STATUS",
            Self::DelegationComplete => "DELEGATION_COMPLETE",
            Self::DelegationFailed => "DELEGATION_FAILED",
            Self::SecretsChanged => "SECRETS_CHANGED",
            Self::GlobalSecretsChanged => "GLOBAL_SECRETS_CHANGED",
            Self::ApprovalRequested => "APPROVAL_REQUESTED",
            Self::ApprovalEscalated => "APPROVAL_ESCALATED",
            Self::ApprovalApproved => "APPROVAL_APPROVED",
            Self::ApprovalDenied => "APPROVAL_DENIED",
            Self::ApprovalDecided => "APPROVAL_DECIDED",
            Self::InstructionsUpdated => "INSTRUCTIONS_UPDATED",
            Self::ConfigChanged => "CONFIG_CHANGED",
            Self::BudgetUpdated => "WORKSPACE_BUDGET_UPDATED",
            Self::CronExecuted => "CRON_EXECUTED",
            Self::CronSkipped => "CRON_SKIPPED",
        }
    }

    /// Live-only information about activity, as opposed to a change of a workspace's state
    /// or configuration (caches and agents' control streams ignore these).
    pub fn is_informational(self) -> bool {
        matches!(
            self,
            Self::WorkspaceHeartbeat
                | Self::TaskUpdated
                | Self::ActivityLogged
                | Self::AgentMessage
                | Self::A2aResponse
                | Self::ApprovalRequested
                | Self::ApprovalEscalated
                | Self::ApprovalDecided
                | Self::CronExecuted
                | Self::CronSkipped
        )
    }

    /// Payload fields only the parties see: what agents and people said, and an approval's id
    /// (whoever holds it and a decider's credential could settle the request).
    pub fn private_fields(self) -> &'static [&'static str] {
        match self {
            Self::A2aResponse => &["response_body", "request_body"],
            Self::ActivityLogged => &["summary", "tool_trace", "request_body", "response_body"],
            Self::AgentMessage => &["message", "attachments"],
            Self::DelegationSent => &["task_preview"],
            Self::DelegationComplete => &["response_preview"],
            Self::DelegationFailed => &["error"],
            Self::ApprovalRequested | Self::ApprovalEscalated => {
                &["approval_id", "action", "reason"]
            }
            Self::ApprovalApproved | Self::ApprovalDenied | Self::ApprovalDecided => {
                &["approval_id"]
            }
            _ => &[],
        }
    }

    /// Whether the subject's ancestors are parties: they may decide its approvals.
    pub fn ancestors_take_part(self) -> bool {
        matches!(
            self,
            Self::ApprovalRequested
                | Self::ApprovalEscalated
                | Self::ApprovalApproved
                | Self::ApprovalDenied
                | Self::ApprovalDecided
        )
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_serde_name() {
        for event in [
            EventType::WorkspaceProvisionFailed,
            EventType::A2aResponse,
            EventType::GlobalSecretsChanged,
            EventType::WorkspaceTokenRevoked,
        ] {
            let json = serde_json::to_value(event).unwrap();
            assert_eq!(json, serde_json::json!(event.as_str()));
            assert_eq!(serde_json::from_value::<EventType>(json).unwrap(), event);
        }
    }
}

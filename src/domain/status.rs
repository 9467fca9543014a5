//! A workspace's status: every value the schema's CHECK constraint admits, and nothing else.
//! Stored as text; on the wire (JSON, protobuf, events) as its snake_case name.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    /// Created; the platform is bringing its runtime up.
    #[sea_orm(string_value = "provisioning")]
    Provisioning,
    /// An external workspace waiting for its operator's agent to register.
    #[sea_orm(string_value = "awaiting_agent")]
    AwaitingAgent,
    #[sea_orm(string_value = "online")]
    Online,
    /// Beating, but reporting errors or a wedged runtime.
    #[sea_orm(string_value = "degraded")]
    Degraded,
    /// No beat within the liveness TTL.
    #[sea_orm(string_value = "offline")]
    Offline,
    /// Provisioning did not finish in time.
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "paused")]
    Paused,
    #[sea_orm(string_value = "hibernating")]
    Hibernating,
    #[sea_orm(string_value = "hibernated")]
    Hibernated,
    /// Deleted; the row stays so ids are never reused and events can name it.
    #[sea_orm(string_value = "removed")]
    Removed,
}

impl WorkspaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::AwaitingAgent => "awaiting_agent",
            Self::Online => "online",
            Self::Degraded => "degraded",
            Self::Offline => "offline",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Hibernating => "hibernating",
            Self::Hibernated => "hibernated",
            Self::Removed => "removed",
        }
    }

    /// Whether an agent is running there and beating (the statuses a heartbeat keeps).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Online | Self::Degraded)
    }
}

/// Where a call in the busy queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum QueueStatus {
    /// Waiting for the agent's spare capacity.
    #[sea_orm(string_value = "queued")]
    Queued,
    /// Claimed by one replica's drain and being delivered.
    #[sea_orm(string_value = "dispatched")]
    Dispatched,
    #[sea_orm(string_value = "completed")]
    Completed,
    /// Given up after the last attempt.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Removed by the operators' stale-item cleanup.
    #[sea_orm(string_value = "dropped")]
    Dropped,
}

/// Where a delegation stands, on its request and outcome rows (activity rows, whose status
/// column is free text for agents' own reports, so this one is written with `as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationStatus {
    Pending,
    Dispatched,
    /// The target was busy; the busy queue completes it later.
    Queued,
    Completed,
    Failed,
}

impl DelegationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dispatched => "dispatched",
            Self::Queued => "queued",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// What an agent may report about a delegation it sent itself.
    pub fn reported(raw: &str) -> Option<Self> {
        match raw {
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "queued" => Some(Self::Queued),
            _ => None,
        }
    }
}

impl std::fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::*;

    #[test]
    fn names_agree_everywhere() {
        for status in WorkspaceStatus::iter() {
            assert_eq!(status.to_value(), status.as_str());
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
            assert_eq!(
                WorkspaceStatus::try_from_value(&status.to_value()),
                Ok(status)
            );
        }
        for status in [
            DelegationStatus::Completed,
            DelegationStatus::Failed,
            DelegationStatus::Queued,
        ] {
            assert_eq!(DelegationStatus::reported(status.as_str()), Some(status));
        }
        assert_eq!(DelegationStatus::reported("pending"), None);
        for status in QueueStatus::iter() {
            assert_eq!(QueueStatus::try_from_value(&status.to_value()), Ok(status));
        }
    }
}

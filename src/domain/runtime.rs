//! The runtime contract's vocabulary (docs/runtime.md): memory scopes, approval statuses and
//! instruction scopes, each stored as text and spelled on the wire exactly as stored.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// Who may read a memory (docs/runtime.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum MemoryScope {
    /// The author only.
    #[sea_orm(string_value = "LOCAL")]
    Local,
    /// The author's team: parent, siblings, children.
    #[sea_orm(string_value = "TEAM")]
    Team,
    /// Every workspace; written by roots only.
    #[sea_orm(string_value = "GLOBAL")]
    Global,
}

impl MemoryScope {
    /// The exact, case-sensitive wire spelling; anything else is not a scope.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "LOCAL" => Some(Self::Local),
            "TEAM" => Some(Self::Team),
            "GLOBAL" => Some(Self::Global),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "LOCAL",
            Self::Team => "TEAM",
            Self::Global => "GLOBAL",
        }
    }
}

/// Where an approval request stands (docs/runtime.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum ApprovalStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "approved")]
    Approved,
    #[sea_orm(string_value = "denied")]
    Denied,
    /// Admitted by the schema for compatibility; never written.
    #[sea_orm(string_value = "escalated")]
    Escalated,
}

impl ApprovalStatus {
    /// A decision a human may send: `approved` or `denied`.
    pub fn decision(text: &str) -> Option<Self> {
        match text {
            "approved" => Some(Self::Approved),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Escalated => "escalated",
        }
    }
}

/// Which workspaces an instruction applies to (docs/runtime.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum InstructionScope {
    #[sea_orm(string_value = "global")]
    Global,
    /// Reserved until the hierarchy defines a team; never written.
    #[sea_orm(string_value = "team")]
    Team,
    #[sea_orm(string_value = "workspace")]
    Workspace,
}

impl InstructionScope {
    /// The scopes an operator may write: `global` and `workspace`.
    pub fn writable(text: &str) -> Option<Self> {
        match text {
            "global" => Some(Self::Global),
            "workspace" => Some(Self::Workspace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Team => "team",
            Self::Workspace => "workspace",
        }
    }
}

//! sea-orm entities, one module per table. Ids and enums are text; JSON is raw text so key order
//! and large integers survive; timestamps are UTC.

pub mod workspace {
    use sea_orm::entity::prelude::*;

    pub use crate::domain::WorkspaceStatus;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspaces")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub role: Option<String>,
        pub tier: i32,
        pub status: WorkspaceStatus,
        pub runtime: String,
        pub agent_card: Option<String>,
        pub url: Option<String>,
        pub parent_id: Option<String>,
        pub forwarded_to: Option<String>,
        pub source_bundle_id: Option<String>,
        pub awareness_namespace: Option<String>,
        pub workspace_dir: Option<String>,
        pub workspace_access: String,
        pub last_heartbeat_at: Option<DateTimeUtc>,
        pub last_outbound_at: Option<DateTimeUtc>,
        pub last_error_rate: f64,
        pub last_sample_error: Option<String>,
        pub current_task: Option<String>,
        pub active_tasks: i32,
        pub uptime_seconds: i32,
        pub max_concurrent_tasks: i32,
        pub budget_limit: Option<i64>,
        pub monthly_spend: i64,
        pub hibernation_idle_minutes: Option<i32>,
        pub instance_id: Option<String>,
        pub runtime_metadata: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    impl ActiveModel {
        /// A new `provisioning` row with every default of docs/workspaces.md §2.1; callers set
        /// what their request says on top.
        pub fn fresh(id: &str, name: &str, now: DateTimeUtc) -> Self {
            use sea_orm::ActiveValue::Set;
            Self {
                id: Set(id.to_owned()),
                name: Set(name.to_owned()),
                role: Set(None),
                tier: Set(3),
                status: Set(WorkspaceStatus::Provisioning),
                runtime: Set("langgraph".to_owned()),
                agent_card: Set(None),
                url: Set(None),
                parent_id: Set(None),
                forwarded_to: Set(None),
                source_bundle_id: Set(None),
                awareness_namespace: Set(Some(format!("workspace:{id}"))),
                workspace_dir: Set(None),
                workspace_access: Set("none".to_owned()),
                last_heartbeat_at: Set(None),
                last_outbound_at: Set(None),
                last_error_rate: Set(0.0),
                last_sample_error: Set(None),
                current_task: Set(None),
                active_tasks: Set(0),
                uptime_seconds: Set(0),
                max_concurrent_tasks: Set(1),
                budget_limit: Set(None),
                monthly_spend: Set(0),
                hibernation_idle_minutes: Set(None),
                instance_id: Set(None),
                runtime_metadata: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
        }
    }
}

pub mod canvas_layout {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "canvas_layouts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        pub x: f64,
        pub y: f64,
        pub collapsed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_auth_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub token_hash: Vec<u8>,
        pub prefix: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod org_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub token_hash: Vec<u8>,
        pub prefix: String,
        pub name: Option<String>,
        pub created_by: Option<String>,
        pub org_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod structure_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "structure_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub event_type: String,
        pub workspace_id: Option<String>,
        pub agent_id: Option<String>,
        pub target_id: Option<String>,
        pub payload: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod activity_log {
    use sea_orm::entity::prelude::*;

    /// A time-ordered id (UUIDv7): each row lands at the end of the primary-key index, where a
    /// random one would dirty a page anywhere in it (bench/profile-a2a.sh: the datastore stage).
    pub fn new_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity_logs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub activity_type: String,
        pub source_id: Option<String>,
        pub target_id: Option<String>,
        pub method: Option<String>,
        pub summary: Option<String>,
        pub request_body: Option<String>,
        pub response_body: Option<String>,
        pub tool_trace: Option<String>,
        pub duration_ms: Option<i32>,
        pub status: String,
        pub error_detail: Option<String>,
        pub idempotency_key: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub key: String,
        pub encrypted_value: Vec<u8>,
        pub encryption_version: i32,
        pub key_version: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod global_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "global_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub key: String,
        pub encrypted_value: Vec<u8>,
        pub encryption_version: i32,
        pub key_version: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_plugin {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_plugins")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub plugin: String,
        pub source: String,
        /// The manifest's version when the install was recorded (a local plugin), or the
        /// source's pinned ref (a GitHub one).
        pub version: Option<String>,
        pub installed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod org_plugin_policy {
    use sea_orm::entity::prelude::*;

    /// An org (a root workspace) that has set its own plugin allowlist.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_plugin_policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: String,
        pub updated_by: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod org_plugin_allowed {
    use sea_orm::entity::prelude::*;

    /// One plugin an org allows.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_plugin_allowlist")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub plugin_name: String,
        pub enabled_by: String,
        pub enabled_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_file {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_files")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub path: String,
        pub content: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod a2a_queue {
    use sea_orm::entity::prelude::*;

    pub use crate::domain::QueueStatus;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "a2a_queue")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub caller_id: Option<String>,
        pub priority: i32,
        pub body: String,
        pub method: Option<String>,
        pub idempotency_key: Option<String>,
        pub enqueued_at: DateTimeUtc,
        pub dispatched_at: Option<DateTimeUtc>,
        pub completed_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub status: QueueStatus,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod token_usage {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_token_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        pub input_tokens: i64,
        pub output_tokens: i64,
        /// Answers that reported usage.
        pub calls: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod usage_daily {
    use sea_orm::entity::prelude::*;

    /// One workspace's token usage on one UTC day (docs/operations.md §5).
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_usage_daily")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        /// Midnight UTC.
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: DateTimeUtc,
        pub input_tokens: i64,
        pub output_tokens: i64,
        pub calls: i64,
        /// Millionths of a US dollar.
        pub cost_micro_usd: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod memory {
    use sea_orm::entity::prelude::*;

    pub use crate::domain::MemoryScope;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_memories")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The author.
        pub workspace_id: String,
        pub content: String,
        pub scope: MemoryScope,
        pub namespace: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod approval {
    use sea_orm::entity::prelude::*;

    pub use crate::domain::ApprovalStatus;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "approval_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub task_id: Option<String>,
        pub action: String,
        pub reason: Option<String>,
        /// JSON text.
        pub context: Option<String>,
        pub status: ApprovalStatus,
        pub decided_by: Option<String>,
        pub decision_note: Option<String>,
        pub decided_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::workspace::Entity",
            from = "Column::WorkspaceId",
            to = "super::workspace::Column::Id"
        )]
        Workspace,
    }

    impl Related<super::workspace::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Workspace.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod instruction {
    use sea_orm::entity::prelude::*;

    pub use crate::domain::InstructionScope;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "platform_instructions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub scope: InstructionScope,
        pub scope_target: Option<String>,
        pub title: String,
        pub content: String,
        pub priority: i32,
        pub enabled: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflow_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub workflow_id: String,
        pub step_name: String,
        pub step_index: i32,
        pub completed_at: DateTimeUtc,
        /// JSON text; `None` when the client sent no payload.
        pub payload: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod shared_context {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_shared_context")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        /// `[{path, content}]` as JSON text.
        pub entries: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod chat_upload {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "chat_uploads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub stored_name: String,
        pub name: String,
        pub mime_type: Option<String>,
        pub size: i64,
        pub content: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod console_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub token_hash: Vec<u8>,
        pub principal_kind: String,
        pub org_token_id: Option<String>,
        pub admin_fingerprint: Option<Vec<u8>>,
        pub user_agent: Option<String>,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod console_viewport {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_viewports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub principal: String,
        pub x: f64,
        pub y: f64,
        pub zoom: f64,
        pub saved_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod schedule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub name: String,
        pub cron_expr: String,
        /// An IANA zone name.
        pub timezone: String,
        pub prompt: String,
        pub enabled: bool,
        pub next_run_at: Option<DateTimeUtc>,
        pub last_run_at: Option<DateTimeUtc>,
        pub run_count: i64,
        pub last_status: String,
        pub last_error: String,
        /// `runtime` (created through the API) or `template` (seeded by an org import).
        pub source: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::workspace::Entity",
            from = "Column::WorkspaceId",
            to = "super::workspace::Column::Id"
        )]
        Workspace,
    }

    impl Related<super::workspace::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Workspace.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod schedule_run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedule_runs")]
    pub struct Model {
        /// A UUIDv7: runs sort by when they started.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub schedule_id: String,
        pub workspace_id: String,
        /// `schedule` or `manual`.
        pub trigger: String,
        /// The slot a scheduled run was due at.
        pub due_at: Option<DateTimeUtc>,
        pub started_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        pub duration_ms: Option<i32>,
        pub status: String,
        pub error_detail: String,
        /// JSON text: the schedule as it was fired.
        pub request: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod key_value {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_memory")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// JSON text.
        pub value: String,
        pub version: i64,
        pub expires_at: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_config {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_configs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        /// The YAML document.
        pub content: String,
        pub version: i64,
        pub updated_at: DateTimeUtc,
        pub updated_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// A UUIDv7.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// A workspace id, or `org`.
        pub chain: String,
        /// The row's position in its chain, from 1.
        pub seq: i64,
        pub at: DateTimeUtc,
        /// The credential, as audit trails name principals.
        pub actor: String,
        pub operation: String,
        pub target: Option<String>,
        pub workspace_id: Option<String>,
        pub request_id: Option<String>,
        /// JSON text; never a secret value.
        pub details: String,
        pub prev_hash: Option<String>,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_chain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_chains")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub chain: String,
        pub last_seq: i64,
        pub last_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod org_import {
    use sea_orm::entity::prelude::*;

    /// One org template import, by the key its document names (docs/operations.md §7).
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_imports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub import_key: String,
        pub template_name: String,
        pub document_sha256: String,
        /// JSON array of workspace ids, in the document's order.
        pub workspace_ids: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod workspace_template {
    use sea_orm::entity::prelude::*;

    /// A workspace template imported through the API.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspace_templates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        /// JSON object: relative path → content.
        pub files: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

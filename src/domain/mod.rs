//! The domain vocabulary every feature shares: identifiers and input rules, workspace
//! statuses, event names, prices. Pure values and functions: no datastore, no network, no state.

pub mod event;
pub mod runtime;
pub mod status;
pub mod usage;
pub mod validate;

pub use event::EventType;
pub use runtime::{ApprovalStatus, InstructionScope, MemoryScope};
pub use status::{DelegationStatus, QueueStatus, WorkspaceStatus};

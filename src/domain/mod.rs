//! The domain vocabulary every feature shares: identifiers and input rules, workspace
//! statuses, event names. Pure values and functions: no datastore, no network, no state.

pub mod validate;

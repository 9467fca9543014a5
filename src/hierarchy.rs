//! The workspace tree as the access rules see it (docs/registry.md §4.1): a cached parent map
//! and `can_communicate`. It owns reads of `parent_id` only and never changes the tree.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sea_orm::{DbErr, EntityTrait, QuerySelect};
use tokio::sync::RwLock;

use crate::store::{Db, entities::workspace};

/// How long a snapshot of the tree serves before it is reloaded. Local changes invalidate it at
/// once; other replicas' changes show within this window.
const SNAPSHOT_TTL: Duration = Duration::from_secs(2);
/// Parent links walked at most, so a corrupt tree cannot loop.
const MAX_DEPTH: usize = 32;

type ParentMap = HashMap<String, Option<String>>;
/// A loaded parent map and when it was loaded.
type Snapshot = Option<(Instant, Arc<ParentMap>)>;

#[derive(Clone)]
pub struct Hierarchy {
    db: Db,
    snapshot: Arc<RwLock<Snapshot>>,
}

impl Hierarchy {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            snapshot: Arc::default(),
        }
    }

    /// Drops the cached tree after a local create, move or purge.
    pub async fn invalidate(&self) {
        *self.snapshot.write().await = None;
    }

    async fn parents(&self) -> Result<Arc<ParentMap>, DbErr> {
        if let Some((loaded_at, map)) = self.snapshot.read().await.as_ref()
            && loaded_at.elapsed() < SNAPSHOT_TTL
        {
            return Ok(map.clone());
        }
        let rows: Vec<(String, Option<String>)> = workspace::Entity::find()
            .select_only()
            .column(workspace::Column::Id)
            .column(workspace::Column::ParentId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let map = Arc::new(rows.into_iter().collect::<ParentMap>());
        *self.snapshot.write().await = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    /// Whether `ancestor` is on `node`'s parent chain (lookup errors deny).
    pub async fn is_ancestor_of(&self, ancestor: &str, node: &str) -> bool {
        match self.parents().await {
            Ok(parents) => is_ancestor(&parents, ancestor, node),
            Err(_) => false,
        }
    }

    /// The root of `node`'s tree (its org): `node` itself when it has no parent or is unknown.
    pub async fn root_of(&self, node: &str) -> Result<String, DbErr> {
        let parents = self.parents().await?;
        let mut current = node.to_owned();
        for _ in 0..MAX_DEPTH {
            match parents.get(&current).cloned().flatten() {
                Some(parent) => current = parent,
                None => break,
            }
        }
        Ok(current)
    }

    /// CanCommunicate(caller, target): self; siblings (including all roots); any ancestor or
    /// descendant. Status is ignored; unknown ids and lookup errors deny.
    pub async fn can_communicate(&self, caller: &str, target: &str) -> bool {
        if caller == target {
            return true;
        }
        match self.parents().await {
            Ok(parents) => can_communicate_in(&parents, caller, target),
            Err(_) => false,
        }
    }
}

fn can_communicate_in(parents: &ParentMap, caller: &str, target: &str) -> bool {
    let (Some(caller_parent), Some(target_parent)) = (parents.get(caller), parents.get(target))
    else {
        return false;
    };
    if caller_parent == target_parent {
        return true;
    }
    is_ancestor(parents, caller, target) || is_ancestor(parents, target, caller)
}

/// Whether `ancestor` is on the parent chain of `node`.
fn is_ancestor(parents: &ParentMap, ancestor: &str, node: &str) -> bool {
    let mut current = parents.get(node).cloned().flatten();
    for _ in 0..MAX_DEPTH {
        match current {
            Some(id) if id == ancestor => return true,
            Some(id) => current = parents.get(&id).cloned().flatten(),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> ParentMap {
        // root1 ─ a ─ a1 ─ a11
        //       └ b ─ b1
        // root2
        [
            ("root1", None),
            ("root2", None),
            ("a", Some("root1")),
            ("b", Some("root1")),
            ("a1", Some("a")),
            ("a11", Some("a1")),
            ("b1", Some("b")),
        ]
        .into_iter()
        .map(|(id, parent)| (id.to_owned(), parent.map(str::to_owned)))
        .collect()
    }

    #[test]
    fn access_matrix_follows_the_code_rules() {
        let parents = tree();
        let allowed = [
            ("root1", "root2"), // roots are siblings
            ("a", "b"),         // siblings
            ("a", "root1"),     // child → parent
            ("root1", "a11"),   // ancestor → descendant, skipping levels
            ("a11", "a"),       // descendant → ancestor
        ];
        let denied = [
            ("a1", "b1"),   // cousins
            ("a1", "b"),    // child of a sibling
            ("root2", "a"), // another root's subtree
            ("a", "ghost"), // unknown target
        ];
        for (caller, target) in allowed {
            assert!(
                can_communicate_in(&parents, caller, target),
                "{caller} → {target}"
            );
        }
        for (caller, target) in denied {
            assert!(
                !can_communicate_in(&parents, caller, target),
                "{caller} → {target}"
            );
        }
    }

    #[test]
    fn cycles_terminate_and_deny() {
        let parents: ParentMap = [("x", Some("y")), ("y", Some("x")), ("z", None)]
            .into_iter()
            .map(|(id, parent)| (id.to_owned(), parent.map(str::to_owned)))
            .collect();
        assert!(!can_communicate_in(&parents, "z", "x"));
    }
}

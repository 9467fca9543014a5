//! The audit trail (docs/operations.md O7): every state-changing action appends a row naming who
//! (the credential, as approvals name deciders), what, the target, when and the request id. Rows
//! form chains, one per workspace and one for the organisation: each carries its position and
//! the hash of the row before it, and its own hash over both (HMAC-SHA-256 keyed by
//! `AUDIT_LEDGER_SALT` when set, SHA-256 otherwise), so a row changed or deleted is found by
//! [`verify`]. Appends to one chain are serialised by a lock on the chain's head row, on every
//! replica. Nothing here updates or deletes an audit row, and no secret value is ever written.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tracing::warn;

use crate::{
    auth::Principal,
    config::Secret,
    store::{
        self,
        entities::{audit_chain, audit_event},
    },
};

/// The chain of actions that belong to no workspace (org keys, global secrets, imports).
pub const ORG_CHAIN: &str = "org";

/// Characters of a request id kept.
const MAX_REQUEST_ID: usize = 128;

/// Rows a verification reads at a time.
const VERIFY_PAGE: u64 = 1_000;

/// Appends to the trail. Cheap to clone.
#[derive(Clone)]
pub struct AuditTrail {
    key: Option<std::sync::Arc<Vec<u8>>>,
}

/// One action, as the trail records it.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// `workspace.create`, `token.revoke`, `secret.set`, … (docs/operations.md O7).
    pub operation: &'static str,
    /// The workspace whose chain it joins; `None` joins the organisation's.
    pub workspace_id: Option<&'a str>,
    /// What it acted on, when not the workspace itself (a token, a schedule, a secret's key).
    pub target: Option<String>,
    /// What changed, without any secret value.
    pub details: Value,
}

impl AuditTrail {
    pub fn new(salt: Option<&Secret>) -> Self {
        Self {
            key: salt.map(|salt| std::sync::Arc::new(salt.expose().as_bytes().to_vec())),
        }
    }

    /// Appends `action` by `actor` inside `txn` (the one making the change, so both commit or
    /// neither does).
    pub async fn append(
        &self,
        txn: &impl ConnectionTrait,
        actor: &Principal,
        metadata: &MetadataMap,
        action: Action<'_>,
    ) -> Result<(), DbErr> {
        let chain = action.workspace_id.unwrap_or(ORG_CHAIN).to_owned();
        // Create the chain's head if it is new, then lock it: appends to one chain queue here.
        audit_chain::Entity::insert(audit_chain::ActiveModel {
            chain: Set(chain.clone()),
            last_seq: Set(0),
            last_hash: Set(None),
        })
        .on_conflict(
            OnConflict::column(audit_chain::Column::Chain)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        let head = audit_chain::Entity::find_by_id(chain.clone())
            .lock_exclusive()
            .one(txn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("audit chain {chain}")))?;
        let row = audit_event::Model {
            id: uuid::Uuid::now_v7().to_string(),
            chain: chain.clone(),
            seq: head.last_seq + 1,
            at: store::now(),
            actor: actor.audit_name(),
            operation: action.operation.to_owned(),
            target: action.target,
            workspace_id: action.workspace_id.map(str::to_owned),
            // A client may choose its request id; a long one is cut, not stored whole.
            request_id: metadata
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .map(|id| id.chars().take(MAX_REQUEST_ID).collect()),
            details: action.details.to_string(),
            prev_hash: head.last_hash.clone(),
            hash: String::new(),
        };
        let hash = self.hash(&row);
        audit_event::Entity::insert(audit_event::ActiveModel {
            hash: Set(hash.clone()),
            ..row_model(&row)
        })
        .exec_without_returning(txn)
        .await?;
        audit_chain::Entity::update_many()
            .col_expr(audit_chain::Column::LastSeq, Expr::value(row.seq))
            .col_expr(audit_chain::Column::LastHash, Expr::value(Some(hash)))
            .filter(audit_chain::Column::Chain.eq(chain))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// Appends `action` in a transaction of its own, after the change it records committed; a
    /// failure is logged (the action stands).
    pub async fn record(
        &self,
        db: &store::Db,
        actor: &Principal,
        metadata: &MetadataMap,
        action: Action<'_>,
    ) {
        let operation = action.operation;
        let appended = async {
            let txn = db.begin().await?;
            self.append(&txn, actor, metadata, action).await?;
            txn.commit().await
        }
        .await;
        if let Err(err) = appended {
            warn!(operation, error = %err, "audit row not written");
        }
    }

    /// A row's hash: over its own fields and the hash before it.
    fn hash(&self, row: &audit_event::Model) -> String {
        let canonical = json!([
            row.chain,
            row.seq,
            row.id,
            store::rfc3339_micros(row.at),
            row.actor,
            row.operation,
            row.target,
            row.workspace_id,
            row.request_id,
            row.details,
            row.prev_hash,
        ])
        .to_string();
        match &self.key {
            Some(key) => {
                use hmac::{KeyInit as _, Mac};
                let mut mac =
                    hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(canonical.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            None => hex::encode(Sha256::digest(canonical.as_bytes())),
        }
    }
}

fn row_model(row: &audit_event::Model) -> audit_event::ActiveModel {
    audit_event::ActiveModel {
        id: Set(row.id.clone()),
        chain: Set(row.chain.clone()),
        seq: Set(row.seq),
        at: Set(row.at),
        actor: Set(row.actor.clone()),
        operation: Set(row.operation.clone()),
        target: Set(row.target.clone()),
        workspace_id: Set(row.workspace_id.clone()),
        request_id: Set(row.request_id.clone()),
        details: Set(row.details.clone()),
        prev_hash: Set(row.prev_hash.clone()),
        hash: Set(row.hash.clone()),
    }
}

/// What is wrong with one place in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub seq: i64,
    /// The row there, when there is one.
    pub id: Option<String>,
    pub what: String,
}

/// One chain's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub chain: String,
    pub rows: u64,
    pub problems: Vec<Problem>,
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl AuditTrail {
    /// Checks one chain from the database: positions 1..n without a gap, each row's link to the
    /// one before, each row's own hash, and the head's record of the last row (a deleted tail).
    /// Reads the chain a page at a time, so a long chain costs time, not memory.
    pub async fn verify(&self, db: &impl ConnectionTrait, chain: &str) -> Result<Verdict, DbErr> {
        let head = audit_chain::Entity::find_by_id(chain.to_owned())
            .one(db)
            .await?;
        let mut verdict = Verdict {
            chain: chain.to_owned(),
            rows: 0,
            problems: Vec::new(),
        };
        let mut previous: Option<audit_event::Model> = None;
        loop {
            let after = previous.as_ref().map_or(0, |row| row.seq);
            let page = audit_event::Entity::find()
                .filter(audit_event::Column::Chain.eq(chain))
                .filter(audit_event::Column::Seq.gt(after))
                .order_by_asc(audit_event::Column::Seq)
                .limit(VERIFY_PAGE)
                .all(db)
                .await?;
            let done = (page.len() as u64) < VERIFY_PAGE;
            for row in page {
                self.check(previous.as_ref(), &row, &mut verdict.problems);
                verdict.rows += 1;
                previous = Some(row);
            }
            if done {
                break;
            }
        }
        let checked = previous.as_ref().map_or(0, |row| row.seq);
        let recorded = head.as_ref().map_or(0, |head| head.last_seq);
        missing(checked + 1..=recorded, &mut verdict.problems);
        Ok(verdict)
    }

    /// Judges `row` after `previous` (the row read before it, if any).
    fn check(
        &self,
        previous: Option<&audit_event::Model>,
        row: &audit_event::Model,
        problems: &mut Vec<Problem>,
    ) {
        let expected_seq = previous.map_or(1, |previous| previous.seq + 1);
        missing(expected_seq..=row.seq - 1, problems);
        if self.hash(row) != row.hash {
            problems.push(Problem {
                seq: row.seq,
                id: Some(row.id.clone()),
                what: "hash mismatch: the row was changed".to_owned(),
            });
        }
        // Only a link across an intact neighbour is judged: a gap is reported once, above.
        if let Some(previous) = previous.filter(|previous| previous.seq + 1 == row.seq)
            && row.prev_hash.as_deref() != Some(previous.hash.as_str())
        {
            problems.push(Problem {
                seq: row.seq,
                id: Some(row.id.clone()),
                what: "broken link: the previous row's hash differs".to_owned(),
            });
        }
    }

    /// Every chain the trail has.
    pub async fn chains(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
        audit_chain::Entity::find()
            .select_only()
            .column(audit_chain::Column::Chain)
            .order_by_asc(audit_chain::Column::Chain)
            .into_tuple()
            .all(db)
            .await
    }
}

/// Records each position in `seqs` as a deleted row.
fn missing(seqs: std::ops::RangeInclusive<i64>, problems: &mut Vec<Problem>) {
    problems.extend(seqs.map(|seq| Problem {
        seq,
        id: None,
        what: "missing: the row was deleted".to_owned(),
    }));
}

//! The proxy's records, written in batches: each delivery queues its activity row (with the caller
//! whose `last_outbound_at` moves and the tokens the answer reported), and one writer task writes
//! everything queued in one statement per table, so a busy proxy costs the datastore a few
//! statements per batch rather than two per call. Records complete even after the caller has gone;
//! shutdown flushes them.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, OnConflict},
};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::{
    domain::usage::{self, Pricing},
    store::{
        self, Db,
        entities::{activity_log, token_usage, usage_daily, workspace},
    },
};

/// Rows gathered into one statement at most.
const BATCH: usize = 500;
/// How long a batch waits for company once it has a row.
const LINGER: Duration = Duration::from_millis(20);
/// Queued records before callers wait for the writer.
const QUEUE: usize = 16_384;

/// One delivery's records.
pub struct Record {
    pub row: activity_log::ActiveModel,
    /// A workspace caller whose call was delivered.
    pub outbound: Option<String>,
    /// What the answer reported spending, added to the target's totals (docs/a2a.md §1.11).
    pub usage: Option<TokenUsage>,
}

/// Tokens one answer reported (`result.usage` or a top-level `usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl TokenUsage {
    /// The usage an answer reports, when it reports any non-zero count.
    pub fn reported_by(answer: &serde_json::Value) -> Option<Self> {
        let usage = [&answer["result"]["usage"], &answer["usage"]]
            .into_iter()
            .find(|usage| usage.is_object())?;
        // Counts are clamped to i64 so a hostile agent cannot overflow the totals' type.
        let count = |name: &str| {
            usage[name]
                .as_u64()
                .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
        };
        let usage = Self {
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
        };
        (usage != Self::default()).then_some(usage)
    }
}

/// Totals gathered in one batch, per workspace.
#[derive(Default)]
struct UsageTotals {
    tokens: TokenUsage,
    calls: i64,
}

enum Message {
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
}

/// The handle services queue records on.
#[derive(Clone)]
pub struct RecordWriter {
    queue: mpsc::Sender<Message>,
}

impl RecordWriter {
    pub fn start(db: Db, pricing: Pricing) -> Self {
        let (queue, inbox) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, pricing, inbox));
        Self { queue }
    }

    /// Queues one delivery's records; waits only when the writer is far behind.
    pub async fn write(&self, record: Record) {
        if self
            .queue
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            warn!("record writer stopped; an activity row was dropped");
        }
    }

    /// Returns once everything queued before the call is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn run(db: Db, pricing: Pricing, mut inbox: mpsc::Receiver<Message>) {
    let mut batch = Batch::default();
    let mut flushed = Vec::new();
    while let Some(first) = inbox.recv().await {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Record(record)) => batch.add(*record),
                Some(Message::Flush(done)) => {
                    flushed.push(done);
                    break;
                }
                None => {}
            }
            if batch.rows.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(message)) => next = Some(message),
                Ok(None) | Err(_) => break,
            }
        }
        batch.write(&db, &pricing).await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Everything gathered for one round of statements.
#[derive(Default)]
struct Batch {
    rows: Vec<activity_log::ActiveModel>,
    callers: BTreeSet<String>,
    usage: BTreeMap<String, UsageTotals>,
}

impl Batch {
    fn add(&mut self, record: Record) {
        if let (Some(usage), Set(workspace_id)) = (record.usage, &record.row.workspace_id) {
            let totals = self.usage.entry(workspace_id.clone()).or_default();
            totals.tokens.input_tokens = totals
                .tokens
                .input_tokens
                .saturating_add(usage.input_tokens);
            totals.tokens.output_tokens = totals
                .tokens
                .output_tokens
                .saturating_add(usage.output_tokens);
            totals.calls += 1;
        }
        self.rows.push(record.row);
        self.callers.extend(record.outbound);
    }

    /// Writes and empties the batch; a failed statement is logged, the others still run.
    /// Datastore outages are reported by the store, once, not here per batch.
    async fn write(&mut self, db: &Db, pricing: &Pricing) {
        let rows = std::mem::take(&mut self.rows);
        if !rows.is_empty() {
            let written = activity_log::Entity::insert_many(rows.clone())
                .exec_without_returning(db)
                .await;
            match written {
                Ok(_) => {}
                Err(err) if store::is_unavailable(&err) => {}
                // One unwritable row must not take the others with it.
                Err(_) => {
                    for row in rows {
                        let id = row.id.clone().take().unwrap_or_default();
                        if let Err(err) = activity_log::Entity::insert(row)
                            .exec_without_returning(db)
                            .await
                            && !store::is_unavailable(&err)
                        {
                            warn!(activity_id = %id, error = %err, "activity row not written");
                        }
                    }
                }
            }
        }
        if !self.callers.is_empty() {
            let ids: Vec<String> = std::mem::take(&mut self.callers).into_iter().collect();
            let touched = workspace::Entity::update_many()
                .col_expr(workspace::Column::LastOutboundAt, Expr::value(store::now()))
                .filter(workspace::Column::Id.is_in(ids))
                .exec(db)
                .await;
            if let Err(err) = touched
                && !store::is_unavailable(&err)
            {
                warn!(error = %err, "last_outbound_at not written");
            }
        }
        if !self.usage.is_empty() {
            let count = self.usage.len();
            if let Err(err) = add_usage(db, pricing, std::mem::take(&mut self.usage)).await
                && !store::is_unavailable(&err)
            {
                warn!(workspaces = count, error = %err, "token usage not written");
            }
        }
    }
}

/// Adds each workspace's batch totals to its all-time totals and to today's, priced, in one
/// transaction (so the two never disagree).
async fn add_usage(
    db: &Db,
    pricing: &Pricing,
    usage: BTreeMap<String, UsageTotals>,
) -> Result<(), sea_orm::DbErr> {
    let now = store::now();
    let today = usage::day_start(now);
    let add = |table: Alias, column: &'static str| {
        Expr::col((table, Alias::new(column)))
            .add(Expr::col((Alias::new("excluded"), Alias::new(column))))
    };
    let totals = usage
        .iter()
        .map(|(workspace_id, totals)| token_usage::ActiveModel {
            workspace_id: Set(workspace_id.clone()),
            input_tokens: Set(totals.tokens.input_tokens),
            output_tokens: Set(totals.tokens.output_tokens),
            calls: Set(totals.calls),
            updated_at: Set(now),
        });
    let days = usage
        .iter()
        .map(|(workspace_id, totals)| usage_daily::ActiveModel {
            workspace_id: Set(workspace_id.clone()),
            day: Set(today),
            input_tokens: Set(totals.tokens.input_tokens),
            output_tokens: Set(totals.tokens.output_tokens),
            calls: Set(totals.calls),
            cost_micro_usd: Set(
                pricing.cost_micro_usd(totals.tokens.input_tokens, totals.tokens.output_tokens)
            ),
        });
    let all_time = Alias::new("workspace_token_usage");
    let on_total = OnConflict::column(token_usage::Column::WorkspaceId)
        .value(
            token_usage::Column::InputTokens,
            add(all_time.clone(), "input_tokens"),
        )
        .value(
            token_usage::Column::OutputTokens,
            add(all_time.clone(), "output_tokens"),
        )
        .value(token_usage::Column::Calls, add(all_time, "calls"))
        .update_column(token_usage::Column::UpdatedAt)
        .to_owned();
    let daily = Alias::new("workspace_usage_daily");
    let on_day = OnConflict::columns([usage_daily::Column::WorkspaceId, usage_daily::Column::Day])
        .value(
            usage_daily::Column::InputTokens,
            add(daily.clone(), "input_tokens"),
        )
        .value(
            usage_daily::Column::OutputTokens,
            add(daily.clone(), "output_tokens"),
        )
        .value(usage_daily::Column::Calls, add(daily.clone(), "calls"))
        .value(
            usage_daily::Column::CostMicroUsd,
            add(daily, "cost_micro_usd"),
        )
        .to_owned();
    let txn = db.begin().await?;
    token_usage::Entity::insert_many(totals)
        .on_conflict(on_total)
        .exec_without_returning(&txn)
        .await?;
    usage_daily::Entity::insert_many(days)
        .on_conflict(on_day)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await
}

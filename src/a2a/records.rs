//! The proxy's records, written in batches: each delivery queues its activity row (and the
//! caller whose `last_outbound_at` moves), and one writer task inserts everything queued in one
//! statement per table, so a busy proxy costs the datastore a few statements per batch rather
//! than two per call. Records complete even after the caller has gone; shutdown flushes them.

use std::{collections::BTreeSet, time::Duration};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, sea_query::Expr};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::store::{
    self,
    entities::{activity_log, workspace},
};

/// Rows gathered into one statement at most.
const BATCH: usize = 500;
/// How long a batch waits for company once it has a row.
const LINGER: Duration = Duration::from_millis(20);
/// Queued records before callers wait for the writer.
const QUEUE: usize = 16_384;

enum Message {
    Row {
        row: Box<activity_log::ActiveModel>,
        /// A workspace caller whose call was delivered.
        outbound: Option<String>,
    },
    Flush(oneshot::Sender<()>),
}

/// The handle services queue records on.
#[derive(Clone)]
pub struct RecordWriter {
    queue: mpsc::Sender<Message>,
}

impl RecordWriter {
    pub fn start(db: DatabaseConnection) -> Self {
        let (queue, inbox) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, inbox));
        Self { queue }
    }

    /// Queues one row; waits only when the writer is far behind.
    pub async fn write(&self, row: activity_log::ActiveModel, outbound: Option<String>) {
        let message = Message::Row {
            row: Box::new(row),
            outbound,
        };
        if self.queue.send(message).await.is_err() {
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

async fn run(db: DatabaseConnection, mut inbox: mpsc::Receiver<Message>) {
    let mut rows = Vec::with_capacity(BATCH);
    let mut callers = BTreeSet::new();
    let mut flushed = Vec::new();
    while let Some(first) = inbox.recv().await {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Row { row, outbound }) => {
                    rows.push(*row);
                    callers.extend(outbound);
                }
                Some(Message::Flush(done)) => {
                    flushed.push(done);
                    break;
                }
                None => {}
            }
            if rows.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(message)) => next = Some(message),
                Ok(None) | Err(_) => break,
            }
        }
        write(&db, &mut rows, &mut callers).await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write(
    db: &DatabaseConnection,
    rows: &mut Vec<activity_log::ActiveModel>,
    callers: &mut BTreeSet<String>,
) {
    if !rows.is_empty() {
        let count = rows.len();
        if let Err(err) = activity_log::Entity::insert_many(std::mem::take(rows))
            .exec_without_returning(db)
            .await
        {
            warn!(rows = count, error = %err, "activity rows not written");
        }
    }
    if !callers.is_empty() {
        let ids: Vec<String> = std::mem::take(callers).into_iter().collect();
        let touched = workspace::Entity::update_many()
            .col_expr(workspace::Column::LastOutboundAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.is_in(ids))
            .exec(db)
            .await;
        if let Err(err) = touched {
            warn!(error = %err, "last_outbound_at not written");
        }
    }
}

//! The write-behind flush of heartbeats' informational columns: one statement per batch every
//! 2 s, a refused row dropped alone, everything kept through an outage.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use tracing::warn;

use crate::{liveness::BeatSnapshot, state::Platform, store, telemetry};

/// How often the write-behind buffer is flushed (one statement per flush).
const FLUSH_EVERY: Duration = Duration::from_secs(2);
const FLUSH_BATCH: usize = 500;

/// Writes the buffered informational columns: one statement per batch of workspaces. One
/// flush runs at a time, so the last one on shutdown waits for any in flight and then writes
/// everything acknowledged. While the datastore is down the rows go back to the buffer (a
/// newer beat wins); a row the datastore refuses is dropped alone, never its batch.
pub async fn flush_write_behind(state: &Platform) -> Result<usize, DbErr> {
    let _one_at_a_time = state.hot.flushing.lock().await;
    let rows: Vec<(String, BeatSnapshot)> = state.hot.take_pending().into_iter().collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let flushed = write_in_batches(&rows, |batch| write_beats(state, batch)).await;
    let result = match &flushed.unwritten {
        None if flushed.written == rows.len() => "ok",
        None => "failed",
        Some(_) => "unavailable",
    };
    telemetry::flush(result, flushed.written, started.elapsed());
    if let Some((from, err)) = flushed.unwritten {
        state.hot.requeue(rows[from..].iter().cloned());
        return Err(err);
    }
    Ok(flushed.written)
}

/// What a flush managed: rows written, and where it stopped when the datastore went away.
#[derive(Debug)]
struct Flushed {
    written: usize,
    unwritten: Option<(usize, DbErr)>,
}

/// Writes `rows` a batch per statement. A batch the datastore refuses is written row by row
/// and the refused rows are dropped, so one bad row cannot block the others; an outage stops
/// the flush and says from which row on nothing was written.
async fn write_in_batches<'a, W, F>(rows: &'a [(String, BeatSnapshot)], write: W) -> Flushed
where
    W: Fn(&'a [(String, BeatSnapshot)]) -> F,
    F: Future<Output = Result<(), DbErr>>,
{
    let mut written = 0;
    for (n, batch) in rows.chunks(FLUSH_BATCH).enumerate() {
        match write(batch).await {
            Ok(()) => written += batch.len(),
            Err(err) if store::is_unavailable(&err) => {
                return Flushed {
                    written,
                    unwritten: Some((n * FLUSH_BATCH, err)),
                };
            }
            Err(_) => {
                for (index, row) in batch.iter().enumerate() {
                    match write(std::slice::from_ref(row)).await {
                        Ok(()) => written += 1,
                        Err(err) if store::is_unavailable(&err) => {
                            return Flushed {
                                written,
                                unwritten: Some((n * FLUSH_BATCH + index, err)),
                            };
                        }
                        Err(err) => {
                            warn!(workspace_id = %row.0, error = %err, "heartbeat columns not written; dropped");
                        }
                    }
                }
            }
        }
    }
    Flushed {
        written,
        unwritten: None,
    }
}

async fn write_beats(state: &Platform, batch: &[(String, BeatSnapshot)]) -> Result<(), DbErr> {
    let backend = state.db.get_database_backend();
    let (sql, values) = flush_statement(backend, batch);
    state
        .db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map(drop)
}

fn flush_statement(
    backend: DbBackend,
    batch: &[(String, BeatSnapshot)],
) -> (String, Vec<sea_orm::Value>) {
    let postgres = backend == DbBackend::Postgres;
    let casts = [
        "::text",
        "::timestamptz",
        "::int",
        "::int",
        "::float8",
        "::text",
        "::bigint",
    ];
    let mut values = Vec::with_capacity(batch.len() * casts.len());
    let mut tuples = Vec::with_capacity(batch.len());
    for (id, snapshot) in batch {
        let placeholders: Vec<String> = casts
            .iter()
            .enumerate()
            .map(|(column, cast)| {
                let n = values.len() + column + 1;
                if postgres {
                    format!("${n}{cast}")
                } else {
                    "?".to_owned()
                }
            })
            .collect();
        tuples.push(format!("({})", placeholders.join(", ")));
        values.push(id.clone().into());
        values.push(snapshot.at.into());
        values.push(snapshot.active_tasks.into());
        values.push(
            i32::try_from(snapshot.uptime_seconds)
                .unwrap_or(i32::MAX)
                .into(),
        );
        values.push(snapshot.error_rate.into());
        values.push(
            Some(snapshot.sample_error.clone())
                .filter(|e| !e.is_empty())
                .into(),
        );
        values.push(snapshot.monthly_spend.into());
    }
    let sql = format!(
        "UPDATE workspaces SET last_heartbeat_at = v.column2, active_tasks = v.column3, \
         uptime_seconds = v.column4, last_error_rate = v.column5, last_sample_error = v.column6, \
         monthly_spend = COALESCE(v.column7, workspaces.monthly_spend) \
         FROM (VALUES {}) AS v WHERE workspaces.id = v.column1 AND workspaces.status <> 'removed'",
        tuples.join(", ")
    );
    (sql, values)
}

/// Flushes the write-behind buffer every `FLUSH_EVERY` until shutdown; the final flush is the
/// server's, after the last request (see `Application::run_until_stopped`).
pub(super) async fn run_flusher(state: Platform) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match flush_write_behind(&state).await {
            Ok(_) => {}
            // The store reports outages once; the rows wait in the buffer.
            Err(err) if store::is_unavailable(&err) => {}
            Err(err) => warn!(error = %err, "heartbeat write-behind flush failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(ids: &[&str]) -> Vec<(String, BeatSnapshot)> {
        ids.iter()
            .map(|id| {
                let snapshot = BeatSnapshot {
                    at: store::now(),
                    active_tasks: 0,
                    uptime_seconds: 1,
                    error_rate: 0.0,
                    sample_error: String::new(),
                    monthly_spend: None,
                    native_session: false,
                };
                ((*id).to_owned(), snapshot)
            })
            .collect()
    }

    #[tokio::test]
    async fn one_refused_row_is_dropped_alone_and_an_outage_keeps_the_rest() {
        let rows = beats(&["a", "bad", "c"]);
        let written = std::sync::Mutex::new(Vec::new());
        let flushed = write_in_batches(&rows, |batch| {
            let refused = batch.iter().any(|(id, _)| id == "bad");
            if !refused {
                written
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(|(id, _)| id.clone()));
            }
            async move {
                if refused {
                    Err(DbErr::Custom("invalid byte sequence".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(flushed.written, 2);
        assert!(flushed.unwritten.is_none());
        assert_eq!(*written.lock().unwrap(), ["a", "c"]);

        let down = write_in_batches(&rows, |_| async {
            Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))
        })
        .await;
        assert_eq!(down.written, 0);
        assert_eq!(
            down.unwritten.map(|(from, _)| from),
            Some(0),
            "all kept for later"
        );
    }

    #[test]
    fn the_flush_is_one_statement_with_backend_placeholders() {
        let snapshot = BeatSnapshot {
            at: store::now(),
            active_tasks: 1,
            uptime_seconds: 2,
            error_rate: 0.0,
            sample_error: String::new(),
            monthly_spend: None,
            native_session: false,
        };
        let batch = vec![
            ("a".to_owned(), snapshot.clone()),
            ("b".to_owned(), snapshot),
        ];
        let (sql, values) = flush_statement(DbBackend::Postgres, &batch);
        assert!(
            sql.contains("($1::text, $2::timestamptz") && sql.contains("($8::text"),
            "{sql}"
        );
        assert_eq!(values.len(), 14);
        let (sql, _) = flush_statement(DbBackend::Sqlite, &batch);
        assert!(sql.contains("(?, ?, ?, ?, ?, ?, ?), (?,"), "{sql}");
    }
}

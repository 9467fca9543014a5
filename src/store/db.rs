//! The one database handle every feature uses: the sea-orm pool behind a circuit breaker.
//! After a connection failure the breaker opens and calls fail at once (one probe goes through
//! every half second) instead of each waiting out the pool's acquire timeout; the first
//! success closes it. It logs the outage once when it starts, once per interval while it lasts
//! and once when it ends, and tells since when the datastore has been reachable, so sweeps do
//! not judge agents by what they could not do during an outage. It holds no business rules.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{
    AccessMode, ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult, RuntimeErr, Statement,
    TransactionError, TransactionOptions, TransactionTrait,
};
use tracing::{info, warn};

/// While the breaker is open, one call per this interval tries the datastore.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// While the breaker is open, refused calls are summed into one log line per interval.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Whether a database error means "the datastore cannot be reached" (a 503, fail closed)
/// rather than "this statement failed" (a 500).
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    let runtime = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    match runtime {
        RuntimeErr::SqlxError(sqlx) => match sqlx.as_ref() {
            Sqlx::Io(_)
            | Sqlx::Tls(_)
            | Sqlx::Protocol(_)
            | Sqlx::PoolTimedOut
            | Sqlx::PoolClosed
            | Sqlx::WorkerCrashed => true,
            // Class 08 is "connection exception"; 57P01–57P03 are the server shutting down or
            // not yet accepting connections.
            Sqlx::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        },
        RuntimeErr::Internal(message) => message.to_ascii_lowercase().contains("connection"),
    }
}

/// The database, behind the breaker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    inner: DatabaseConnection,
    breaker: Arc<Breaker>,
}

#[derive(Debug)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug)]
struct BreakerState {
    down_since: Option<Instant>,
    healthy_since: Instant,
    probing: bool,
    last_probe: Instant,
    refused: u64,
    last_report: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ticket {
    Pass,
    Probe,
}

impl Db {
    pub fn new(inner: DatabaseConnection) -> Self {
        let now = Instant::now();
        Self {
            inner,
            breaker: Arc::new(Breaker {
                state: Mutex::new(BreakerState {
                    down_since: None,
                    healthy_since: now,
                    probing: false,
                    last_probe: now,
                    refused: 0,
                    last_report: now,
                }),
            }),
        }
    }

    /// The pool itself, for migrations and shutdown.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner
    }

    /// Since when the datastore has answered without a connection failure; "now" while it is
    /// failing.
    pub fn healthy_since(&self) -> Instant {
        let state = self.breaker.state.lock().expect("breaker poisoned");
        match state.down_since {
            Some(_) => Instant::now(),
            None => state.healthy_since,
        }
    }

    /// When the current outage began; `None` while the datastore answers.
    pub fn down_since(&self) -> Option<Instant> {
        self.breaker
            .state
            .lock()
            .expect("breaker poisoned")
            .down_since
    }

    /// Runs one call through the breaker.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, DbErr>>) -> Result<T, DbErr> {
        let ticket = self.breaker.admit()?;
        let guard = ProbeGuard {
            breaker: &self.breaker,
            ticket,
        };
        let result = call.await;
        guard.breaker.record(result.as_ref().err());
        result
    }
}

impl Db {
    async fn guarded_transaction<T, E>(
        &self,
        call: impl Future<Output = Result<T, TransactionError<E>>>,
    ) -> Result<T, TransactionError<E>> {
        let ticket = self.breaker.admit().map_err(TransactionError::Connection)?;
        let guard = ProbeGuard {
            breaker: &self.breaker,
            ticket,
        };
        let result = call.await;
        let failure = match &result {
            Err(TransactionError::Connection(err)) => Some(err),
            _ => None,
        };
        guard.breaker.record(failure);
        result
    }
}

impl Breaker {
    fn admit(&self) -> Result<Ticket, DbErr> {
        let mut state = self.state.lock().expect("breaker poisoned");
        let Some(down_since) = state.down_since else {
            return Ok(Ticket::Pass);
        };
        if !state.probing && state.last_probe.elapsed() >= PROBE_EVERY {
            state.probing = true;
            state.last_probe = Instant::now();
            return Ok(Ticket::Probe);
        }
        state.refused += 1;
        crate::telemetry::datastore_error();
        if state.last_report.elapsed() >= REPORT_EVERY {
            warn!(
                refused = state.refused,
                down_for_secs = down_since.elapsed().as_secs(),
                "datastore still unreachable; calls are failing fast"
            );
            state.refused = 0;
            state.last_report = Instant::now();
        }
        Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
    }

    fn record(&self, error: Option<&DbErr>) {
        if error.is_some_and(is_unavailable) {
            crate::telemetry::datastore_error();
        }
        let mut state = self.state.lock().expect("breaker poisoned");
        state.probing = false;
        match (error.filter(|err| is_unavailable(err)), state.down_since) {
            (Some(err), None) => {
                warn!(error = %err, "datastore unreachable; failing fast until it answers");
                let now = Instant::now();
                state.down_since = Some(now);
                state.last_probe = now;
                state.last_report = now;
                state.refused = 0;
            }
            (None, Some(down_since)) => {
                info!(
                    down_for_secs = down_since.elapsed().as_secs(),
                    refused = state.refused,
                    "datastore reachable again"
                );
                state.down_since = None;
                state.healthy_since = Instant::now();
            }
            _ => {}
        }
    }
}

/// Frees the probe slot if a probing call is abandoned before it finishes.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    ticket: Ticket,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.ticket == Ticket::Probe {
            self.breaker.state.lock().expect("breaker poisoned").probing = false;
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.guarded(self.inner.execute_raw(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.guarded(self.inner.execute_unprepared(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.guarded(self.inner.query_one_raw(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.guarded(self.inner.query_all_raw(stmt)).await
    }
}

/// Transactions are admitted by the breaker when they begin; their statements then run on the
/// connection they hold.
#[async_trait::async_trait]
impl TransactionTrait for Db {
    type Transaction = DatabaseTransaction;

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.guarded(self.inner.begin()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.guarded(self.inner.begin_with_config(isolation_level, access_mode))
            .await
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.guarded(self.inner.begin_with_options(options)).await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.guarded_transaction(self.inner.transaction(callback))
            .await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.guarded_transaction(self.inner.transaction_with_config(
            callback,
            isolation_level,
            access_mode,
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> DbErr {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)
    }

    #[test]
    fn a_connection_failure_opens_the_breaker_and_a_success_closes_it() {
        let breaker = Breaker {
            state: Mutex::new(BreakerState {
                down_since: None,
                healthy_since: Instant::now(),
                probing: false,
                last_probe: Instant::now(),
                refused: 0,
                last_report: Instant::now(),
            }),
        };
        assert_eq!(breaker.admit().unwrap(), Ticket::Pass);
        breaker.record(Some(&DbErr::Custom("not a connection error".into())));
        assert_eq!(
            breaker.admit().unwrap(),
            Ticket::Pass,
            "statement errors do not open it"
        );
        breaker.record(Some(&refused()));
        assert!(breaker.admit().is_err(), "open: fails fast");
        breaker.state.lock().unwrap().last_probe -= PROBE_EVERY;
        assert_eq!(breaker.admit().unwrap(), Ticket::Probe);
        assert!(breaker.admit().is_err(), "one probe at a time");
        breaker.record(None);
        assert_eq!(
            breaker.admit().unwrap(),
            Ticket::Pass,
            "a good probe closes it"
        );
    }

    /// A server-reported error with a SQLSTATE code.
    #[derive(Debug)]
    struct ServerError(&'static str);

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "server error {}", self.0)
        }
    }

    impl std::error::Error for ServerError {}

    impl sea_orm::sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
            sea_orm::sqlx::error::ErrorKind::Other
        }
    }

    fn reported(code: &'static str) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(
            sea_orm::sqlx::Error::Database(Box::new(ServerError(code))),
        )))
    }

    #[test]
    fn a_server_shutting_down_mid_statement_is_unavailable_not_a_failure() {
        // An in-flight INSERT when Postgres stops: "terminating connection due to
        // administrator command".
        assert!(is_unavailable(&reported("57P01")));
        assert!(is_unavailable(&reported("08006")));
        assert!(
            !is_unavailable(&reported("23505")),
            "a unique violation is the statement's"
        );
    }

    #[test]
    fn only_connection_failures_count_as_unavailable() {
        assert!(is_unavailable(&refused()));
        assert!(is_unavailable(&DbErr::Conn(RuntimeErr::SqlxError(
            Arc::new(sea_orm::sqlx::Error::PoolTimedOut)
        ))));
        assert!(!is_unavailable(&DbErr::Custom("boom".into())));
        assert!(!is_unavailable(&DbErr::RecordNotFound("x".into())));
    }
}

//! The monitor's SQL store: runs, jobs, agents, events, outputs and attachments.
//!
//! One [`Store`] serves every SQL database, chosen by URL, over one of two backends:
//! - [`sql::SqlStore`], sqlx's `Any` driver: `sqlite:` (always compiled in; the embedded
//!   default) and `postgres://` (feature `postgres`), one schema and one set of queries
//!   written in SQL both databases accept;
//! - `mssql::MssqlStore` (feature `mssql`): SQL Server over tiberius, in T-SQL.
//!
//! What does not depend on the database is written once here and in `ingest.rs` /
//! `query.rs`: checking and decoding batches, folding events into job and agent changes,
//! numbering events, paging, percentiles' ranks, the agents' summary and comparisons. A
//! backend only runs SQL: it implements `backend::StoreBackend`. The conformance suite (`armada-monitor/tests/store.rs`) holds the
//! same for each database.

/// Calls the same method on whichever backend the store has, and awaits it.
macro_rules! dispatch {
    ($store:expr, $method:ident($($arg:expr),* $(,)?)) => {
        match &$store.backend {
            Backend::Sql(backend) => backend.$method($($arg),*).await,
            #[cfg(feature = "mssql")]
            Backend::Mssql(backend) => backend.$method($($arg),*).await,
        }
    };
}

mod backend;
mod ingest;
#[cfg(feature = "mssql")]
mod mssql;
mod query;
mod schema;
mod sql;

use std::time::Duration;

use armada_core::backend::redact_url;
use armada_core::{JobId, RunId};
use serde_json::Value;

pub use ingest::{Ingested, MAX_EVENTS_PER_BATCH};
pub use query::MAX_PAGE;

use crate::model::{Counts, Finish, Job, JobFilter, JobState, NewRun, Run, RunLabel, RunState};
use crate::{Error, Result};
use backend::StoreBackend;

/// The monitor's database, with its schema applied: SQLite, PostgreSQL or SQL Server.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    url: String,
    stall_limit: Duration,
    /// When each agent's `seen_ms` was last written, so that an agent heard from in every
    /// batch costs one write a second, not one a batch.
    seen_written:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::HashMap<u32, u64>>>,
}

/// How long a running run's agents and followers may be silent before it shows as stalled
/// (agents and followers report every [`armada_core::wire::HEARTBEAT_INTERVAL`]).
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(60);

/// The compiled-in backends; every `Store` method runs on exactly one.
#[derive(Debug)]
enum Backend {
    Sql(sql::SqlStore),
    /// Boxed: its tiberius configuration is large, and a store is opened once.
    #[cfg(feature = "mssql")]
    Mssql(Box<mssql::MssqlStore>),
}

impl Store {
    /// Opens the store at `url` and applies the schema's migrations: `sqlite:PATH` (the file
    /// and its folder are created), `postgres://…` (feature `postgres`) or
    /// `mssql://USER:PASSWORD@HOST:PORT/DATABASE` (feature `mssql`).
    pub async fn open(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let backend = match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("sqlite") => Backend::Sql(sql::SqlStore::open(url, true, shown.clone()).await?),
            Some("postgres" | "postgresql") if cfg!(feature = "postgres") => {
                Backend::Sql(sql::SqlStore::open(url, false, shown.clone()).await?)
            }
            Some("postgres" | "postgresql") => {
                return Err(Error::FeatureMissing {
                    url: shown,
                    feature: "postgres",
                });
            }
            #[cfg(feature = "mssql")]
            Some("mssql" | "sqlserver") => {
                Backend::Mssql(Box::new(mssql::MssqlStore::open(url, shown.clone()).await?))
            }
            #[cfg(not(feature = "mssql"))]
            Some("mssql" | "sqlserver") => {
                return Err(Error::FeatureMissing {
                    url: shown,
                    feature: "mssql",
                });
            }
            _ => {
                return Err(Error::UnsupportedUrl {
                    url: shown,
                    supported: "sqlite:PATH, postgres://USER@HOST/DB (feature `postgres`), \
                                mssql://USER:PASSWORD@HOST:PORT/DB (feature `mssql`)",
                });
            }
        };
        Ok(Self {
            backend,
            url: shown,
            stall_limit: DEFAULT_STALL_LIMIT,
            seen_written: Default::default(),
        })
    }

    /// How long a running run may go unheard from before it shows as `stalled`, and an agent
    /// before it shows as `gone` (default [`DEFAULT_STALL_LIMIT`]).
    #[must_use]
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    /// See [`Store::with_stall_limit`].
    pub fn stall_limit(&self) -> Duration {
        self.stall_limit
    }

    /// The store's URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers a run with every job queued: one row whatever its job count, since a job's
    /// row is written by the first event about it (`Rowless`). A run id that exists is
    /// refused, in the same statement that inserts it: two runs never merge under one id.
    pub async fn register_run(&self, run: &NewRun, created_ms: u64) -> Result<()> {
        validate_run_id(&run.id)?;
        if i64::try_from(run.jobs).is_err() {
            return Err(Error::Invalid(format!(
                "a run has at most {} jobs (what the store's integers hold), not {}",
                i64::MAX,
                run.jobs
            )));
        }
        let label = RunLabel::new(run.name.as_deref(), &run.tags).map_err(Error::Invalid)?;
        let run = NewRun {
            name: label.name,
            tags: label.tags,
            ..run.clone()
        };
        let settings = redact(run.settings.clone()).to_string();
        dispatch!(self, register_run(&run, &settings, created_ms))
    }

    /// Marks a run ended and gives jobs that never ended their final state. Returns the run.
    pub async fn finish_run(&self, run_id: &str, finish: &Finish, now_ms: u64) -> Result<Run> {
        if finish.status == RunState::Running {
            return Err(Error::Invalid(
                "a run cannot finish as `running`: use completed, canceled or stopped".into(),
            ));
        }
        if let Some(job) = finish.jobs.iter().find(|job| !job.status.is_terminal()) {
            return Err(Error::Invalid(format!(
                "job {} cannot end as `{}`: a run's unfinished jobs end canceled or abandoned",
                job.index,
                job.status.as_str()
            )));
        }
        let stored =
            dispatch!(self, run(run_id))?.ok_or_else(|| Error::UnknownRun(run_id.to_owned()))?;
        let (run, jobs) = (stored_id(&stored)?, stored.jobs);
        // Any job the orchestrator did not list but that never ended ends with the run. A job
        // listed in that state needs nothing more (a row not ended gets it, a job without a
        // row is derived in it), so only jobs listed in another state are written: a list of
        // every unfinished job of a large run costs nothing. A job the run does not have is
        // ignored, as an event about one is.
        let leftover = leftover(finish.status);
        let listed = Finish {
            status: finish.status,
            jobs: finish
                .jobs
                .iter()
                .filter(|job| job.status != leftover && job.index < jobs)
                .copied()
                .collect(),
        };
        dispatch!(self, finish_run(&run, &listed, leftover, now_ms))?;
        self.run(run_id, now_ms).await
    }

    /// Deletes a run with everything under it. A run that has not ended is refused: deleting
    /// it would hide it while its agents go on; it is canceled first.
    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        let run = self.run(run_id, armada_core::wire::now_ms()).await?;
        if run.status.is_open() {
            return Err(Error::Conflict(format!(
                "run {run_id} is still running: cancel it, then delete it once it ended"
            )));
        }
        if dispatch!(self, delete_run(run_id))? {
            Ok(())
        } else {
            Err(Error::UnknownRun(run_id.to_owned()))
        }
    }

    /// Counts of a run's jobs per state, those without a row included; `run` as stored (its
    /// status not derived from liveness).
    async fn counts(&self, run: &Run) -> Result<Counts> {
        let mut counts = Counts::default();
        let mut rows = 0;
        for (status, count) in dispatch!(self, counts(&run.id))? {
            rows += count;
            if let Some(state) = JobState::parse(&status) {
                counts.add(state, count);
            }
        }
        let rowless = Rowless::of(run)?;
        counts.add(rowless.state, run.jobs.saturating_sub(rows));
        Ok(counts)
    }
}

/// The id of job `index` of `run`, the same the orchestrator gives it.
pub(super) fn job_id(run: &RunId, index: u64) -> String {
    JobId::of(run, index).to_string()
}

/// The id of a stored run, checked when it was registered.
fn stored_id(run: &Run) -> Result<RunId> {
    RunId::parse(&run.id).map_err(|error| Error::Invalid(error.to_string()))
}

/// The state a run's unfinished jobs end in when it ends as `status`.
fn leftover(status: RunState) -> JobState {
    match status {
        RunState::Canceled => JobState::Canceled,
        _ => JobState::Abandoned,
    }
}

/// What a run's jobs without a row are. A job's row is written by the first event about it,
/// so a job without one was never heard of: it is queued while its run is running, and once
/// the run ended it is in the run's leftover state since the run's end, just as
/// [`Store::finish_run`] leaves a row that never ended.
#[derive(Debug)]
pub(super) struct Rowless {
    run: RunId,
    /// The run's job count: an index at or past it is a job the run does not have.
    pub(super) jobs: u64,
    /// The state of each of them.
    pub(super) state: JobState,
    /// When each of them ended: the run's end, once it ended.
    pub(super) finished_ms: Option<u64>,
}

impl Rowless {
    /// The jobs without a row of run `run`, whose stored status is `status` (`running` until
    /// it ends; never the `stalled` derived when read).
    pub(super) fn new(run: RunId, jobs: u64, status: RunState, finished_ms: Option<u64>) -> Self {
        let running = status == RunState::Running;
        Self {
            run,
            jobs,
            state: if running {
                JobState::Queued
            } else {
                leftover(status)
            },
            finished_ms: finished_ms.filter(|_| !running),
        }
    }

    /// Those of a run as stored.
    pub(super) fn of(run: &Run) -> Result<Self> {
        Ok(Self::new(
            stored_id(run)?,
            run.jobs,
            run.status,
            run.finished_ms,
        ))
    }

    /// Whether the run ended, so that a job without a row is in a terminal state.
    pub(super) fn ended(&self) -> bool {
        self.state.is_terminal()
    }

    /// The id of job `index`.
    pub(super) fn id(&self, index: u64) -> String {
        job_id(&self.run, index)
    }

    /// Job `index`, which has no row.
    pub(super) fn job(&self, index: u64) -> Job {
        Job {
            index,
            id: self.id(index),
            status: self.state,
            agent: None,
            attempts: 0,
            started_ms: None,
            finished_ms: self.finished_ms,
            duration_ms: None,
            last_event: None,
            error: None,
        }
    }

    /// Whether `filter` lists jobs without a row: those have no agent, error, attempt, input
    /// or output.
    pub(super) fn listed_by(&self, filter: &JobFilter) -> bool {
        (filter.states.is_empty() || filter.states.contains(&self.state))
            && filter.agent.is_none()
            && filter.error.is_none()
            && filter.attempts.is_none_or(|attempts| attempts == 0)
            && filter.input.is_none()
            && filter.output.is_none()
    }
}

/// A run's tags as stored: a JSON array, or NULL when it has none.
pub(super) fn tags_text(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| Value::from(tags.to_vec()).to_string())
}

/// The refusal of a second run under one id.
pub(super) fn run_exists(run_id: &str) -> Error {
    Error::Conflict(format!(
        "run {run_id} exists already: a new run needs a new id"
    ))
}

/// A run id as the monitor accepts it: what names queues, keys and folders elsewhere.
pub(crate) fn validate_run_id(id: &str) -> Result<()> {
    armada_core::RunId::parse(id)
        .map(drop)
        .map_err(|error| Error::Invalid(error.to_string()))
}

/// Parts of keys whose values are secrets wherever they appear in settings, lower case: the
/// second net, for secrets not typed as `Secret`.
const SECRET_KEYS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "privatekey",
    "credential",
    "auth",
    "cookie",
    "session",
    "bearer",
    "signature",
];

/// Hides secrets in settings before they are stored: every value of a `Secret` read in this
/// process, values under secret-looking keys, and passwords inside URLs.
pub fn redact(mut value: Value) -> Value {
    armada_core::redact_secrets_in(&mut value);
    redact_by_name(value)
}

fn redact_by_name(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|secret| lower.contains(secret));
                    let value = if secret && !value.is_null() {
                        Value::String("***".into())
                    } else {
                        redact_by_name(value)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_by_name).collect()),
        Value::String(text) if text.contains("://") => Value::String(redact_url(&text)),
        other => other,
    }
}

/// A bound parameter, whatever the driver: each backend turns these into its own.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<&'a str>),
}

/// SQL text with numbered parameters added as it grows; `mark` is the driver's parameter
/// prefix (`$` for sqlx, `@P` for SQL Server), numbered from 1 in both.
pub(super) struct Sql<'a> {
    text: String,
    params: Vec<Param<'a>>,
    mark: &'static str,
}

impl<'a> Sql<'a> {
    fn new(text: &str, mark: &'static str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
            mark,
        }
    }

    /// Binds `param` and returns its placeholder.
    fn bind(&mut self, param: Param<'a>) -> String {
        self.params.push(param);
        format!("{}{}", self.mark, self.params.len())
    }

    /// Appends ` AND clause`, with `?` replaced by `param`'s placeholder.
    fn and(&mut self, clause: &str, param: Param<'a>) -> &mut Self {
        let mark = self.bind(param);
        self.text.push_str(" AND ");
        self.text.push_str(&clause.replace('?', &mark));
        self
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }
}

/// Reading a row's columns by name, whatever the driver, so that rows become the API's
/// types in one place (`query.rs`).
pub(super) trait Columns {
    /// The driver's error.
    type Error;

    /// A text column; `None` when NULL.
    fn text(&self, column: &str) -> Result<Option<String>, Self::Error>;
    /// An integer column; `None` when NULL.
    fn int(&self, column: &str) -> Result<Option<i64>, Self::Error>;
    /// A floating-point column; `None` when NULL.
    fn float(&self, column: &str) -> Result<Option<f64>, Self::Error>;
    /// A value the store should never hold.
    fn corrupt(message: String) -> Self::Error;

    /// A text column that is never NULL.
    fn required_text(&self, column: &str) -> Result<String, Self::Error> {
        self.text(column)?
            .ok_or_else(|| Self::corrupt(format!("column `{column}` is NULL")))
    }

    /// A count, index or time that is never NULL.
    fn u64(&self, column: &str) -> Result<u64, Self::Error> {
        self.int(column)?
            .map(|value| value as u64)
            .ok_or_else(|| Self::corrupt(format!("column `{column}` is NULL")))
    }

    /// A count, index or time that may be NULL.
    fn opt_u64(&self, column: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self.int(column)?.map(|value| value as u64))
    }
}

/// `prefix` followed by `rows` tuples of the run id and `per_row` more parameters, each
/// written by `mark` from its number (from 1; the run id is number 1 in every row).
fn values_sql(prefix: &str, rows: usize, per_row: usize, mark: impl Fn(usize) -> String) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * per_row * 6);
    sql.push_str(prefix);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        sql.push_str(&mark(1));
        for column in 0..per_row {
            sql.push_str(", ");
            sql.push_str(&mark(2 + row * per_row + column));
        }
        sql.push(')');
    }
    sql
}

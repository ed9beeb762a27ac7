//! The sqlx backend: SQLite and PostgreSQL through sqlx's `Any` driver, one schema and one
//! set of queries that both accept (`$n` parameters, `ON CONFLICT`, `RETURNING`, row values).

use std::path::Path;

use armada_core::RunId;
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row};

use super::backend::StoreBackend;
use super::ingest::{self, Decoded, Seen};
use super::query::{
    self, AGENT_COLUMNS, AgentJobs, Dialect, EVENT_COLUMNS, JOB_COLUMNS, Keyset, Measure,
    OUTPUT_COLUMNS, RUN_COLUMNS, Span, agent_from_row, agent_jobs_from_row, attachment_from_row,
    event_from_row, failure_from_row, job_from_row, output_from_row, rowless_from_row,
    run_from_row,
};
use super::{Columns, Param, Rowless, Sql, schema, values_sql};
use crate::model::{
    Agent, AttachmentInfo, Event, EventFilter, FailureGroup, Finish, Job, JobFilter, JobState,
    NewRun, Output, Run, RunState,
};
use crate::{Error, Result};

/// Rows one multi-row statement writes: few statements per batch, far below PostgreSQL's
/// limit of 65,535 bound parameters and SQLite's of 32,766 (11 per row at most).
const ROWS_PER_STATEMENT: usize = 500;
/// How long a write may wait for SQLite's one writing connection.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A connection pool to a SQLite or PostgreSQL database.
#[derive(Debug)]
pub(super) struct SqlStore {
    pool: AnyPool,
    url: String,
    /// On SQLite, the one connection that writes. SQLite takes one writer at a time, so
    /// writers queue for it instead of failing busy; and a connection that alone writes keeps
    /// its page cache, where each of several would drop its own at every other's write
    /// (profiled: `pcache1TruncateUnsafe`, then the kernel copying the pages back). `None` on
    /// PostgreSQL, which writes on any of the pool's connections.
    writer: Option<AnyPool>,
}

impl SqlStore {
    /// The placeholder of parameter `number` (from 1) in a multi-row statement: `$n` on
    /// PostgreSQL; on SQLite an anonymous `?`, bound in order, so that a repeated parameter is
    /// bound again. sqlx finds a numbered parameter by its name, a linear search in SQLite,
    /// so numbered parameters cost the square of their number per statement (profiled: a
    /// fifth of the samples were in `sqlite3_bind_parameter_name`).
    fn mark(&self, number: usize) -> String {
        if self.writer.is_some() {
            "?".to_owned()
        } else {
            format!("${number}")
        }
    }

    /// The database's own SQL, where the two differ (JSON).
    fn dialect(&self) -> Dialect {
        if self.writer.is_some() {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        }
    }

    /// Binds the run id, parameter 1 of a multi-row statement, before row `row`: once on
    /// PostgreSQL, in every row on SQLite (see [`Self::mark`]).
    fn bind_run<'q>(
        &self,
        query: Query<'q, Any, AnyArguments>,
        row: usize,
        run_id: &'q str,
    ) -> Query<'q, Any, AnyArguments> {
        if row == 0 || self.writer.is_some() {
            query.bind(run_id)
        } else {
            query
        }
    }
}

impl Columns for AnyRow {
    type Error = sqlx::Error;

    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn float(&self, column: &str) -> Result<Option<f64>, sqlx::Error> {
        self.try_get(column)
    }

    fn corrupt(message: String) -> sqlx::Error {
        sqlx::Error::Decode(message.into())
    }
}

/// A query built by [`Sql`], with its parameters bound.
fn bound<'q>(sql: Sql<'q>) -> Query<'q, Any, AnyArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.text));
    for param in sql.params {
        query = match param {
            Param::Int(value) => query.bind(value),
            Param::Float(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
        };
    }
    query
}

impl SqlStore {
    /// Connects to `url` (`sqlite` tells which database it names) and migrates.
    pub(super) async fn open(url: &str, sqlite: bool, shown: String) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = if sqlite {
            sqlite_url(url)?
        } else {
            url.to_owned()
        };
        let options = AnyPoolOptions::new().max_connections(if sqlite { 3 } else { 8 });
        let options = if sqlite {
            options.after_connect(|connection, _| {
                Box::pin(async move {
                    // WAL lets the dashboard read while agents write; NORMAL sync is durable
                    // across process crashes, which is what a monitor needs.
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        // 64 MiB of pages per connection instead of 2 MiB: a run's job indexes
                        // stay in memory rather than being read back from the OS on every batch.
                        "PRAGMA cache_size = -65536",
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 10000",
                    ] {
                        sqlx::query(pragma).execute(&mut *connection).await?;
                    }
                    Ok(())
                })
            })
        } else {
            options
        };
        let connecting = |source| Error::Store {
            url: shown.clone(),
            doing: "connecting",
            source,
        };
        let writer = if sqlite {
            let writer = options
                .clone()
                .max_connections(1)
                .min_connections(1)
                // Writers wait their turn as long as the writes before them take.
                .acquire_timeout(WRITER_WAIT);
            Some(writer.connect(&url).await.map_err(connecting)?)
        } else {
            None
        };
        let pool = options.connect(&url).await.map_err(connecting)?;
        let store = Self {
            pool,
            url: shown,
            writer,
        };
        store.migrate().await?;
        Ok(store)
    }

    fn failed(&self, doing: &'static str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        move |source| Error::Store {
            url: self.url.clone(),
            doing,
            source,
        }
    }

    /// Where writes go: the one writing connection on SQLite, the pool on PostgreSQL.
    fn writes(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self
            .writes()
            .begin()
            .await
            .map_err(self.failed("migrating"))?;
        if self.writer.is_none() {
            // Monitors starting together on one PostgreSQL database migrate one at a time.
            sqlx::query("SELECT pg_advisory_xact_lock(7226150)")
                .execute(&mut *tx)
                .await
                .map_err(self.failed("migrating"))?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS armada_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(self.failed("migrating"))?;
        let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM armada_schema")
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(self.failed("migrating"))?;
        let version = schema::check_version(&self.url, version, schema::MIGRATIONS.len())?;
        for (done, statements) in schema::MIGRATIONS.iter().enumerate().skip(version) {
            for statement in *statements {
                sqlx::query(*statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.failed("migrating"))?;
            }
            sqlx::query("INSERT INTO armada_schema (version) VALUES ($1)")
                .bind(done as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(self.failed("migrating"))?;
        }
        tx.commit().await.map_err(self.failed("migrating"))
    }

    async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        run_id: &str,
        decoded: &[Decoded],
    ) -> Result<()> {
        for chunk in decoded.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO armada_events (run_id, seq, job_idx, attempt, agent, kind, at_ms, \
                 message, data) VALUES ",
                chunk.len(),
                8,
                |number| self.mark(number),
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (row, Decoded { event, .. }) in chunk.iter().enumerate() {
                query = self
                    .bind_run(query, row, run_id)
                    .bind(event.seq as i64)
                    .bind(event.job.map(|job| job as i64))
                    .bind(event.attempt.map(i64::from))
                    .bind(i64::from(event.agent))
                    .bind(event.kind.as_str())
                    .bind(event.at_ms as i64)
                    .bind(event.message.as_deref())
                    .bind(event.data.as_ref().map(Value::to_string));
            }
            query
                .execute(&mut **tx)
                .await
                .map_err(self.failed("storing events"))?;
        }
        Ok(())
    }

    async fn insert_outputs(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        run_id: &str,
        decoded: &[Decoded],
    ) -> Result<()> {
        for chunk in ingest::outputs(decoded).chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO armada_outputs (run_id, seq, job_idx, attempt, at_ms, data) VALUES ",
                chunk.len(),
                5,
                |number| self.mark(number),
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (row, (event, output)) in chunk.iter().enumerate() {
                query = self
                    .bind_run(query, row, run_id)
                    .bind(event.seq as i64)
                    .bind(event.job.unwrap_or_default() as i64)
                    .bind(i64::from(event.attempt.unwrap_or_default()))
                    .bind(event.at_ms as i64)
                    .bind(output.to_string());
            }
            query
                .execute(&mut **tx)
                .await
                .map_err(self.failed("storing outputs"))?;
        }
        Ok(())
    }

    /// Applies the batch's job patches, writing the row of a job first heard of; the jobs
    /// they changed, as they are now.
    async fn update_jobs(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        run: &RunId,
        decoded: &[Decoded],
        rowless: &Rowless,
    ) -> Result<Vec<Job>> {
        let patches: Vec<_> = ingest::job_patches(decoded, rowless).into_iter().collect();
        let mut jobs = Vec::with_capacity(patches.len());
        // One statement per chunk of jobs, not one per job: statements are what ingest pays
        // for, in round trips on PostgreSQL and in calls into SQLite.
        for chunk in patches.chunks(ROWS_PER_STATEMENT) {
            // Once the run ended, a job without a row is in its leftover state since its end
            // (`Rowless`): that row is written first, so that the upsert updates it as it
            // updated every job's row when registering wrote them.
            if rowless.ended() {
                let ended: Vec<_> = chunk
                    .iter()
                    .map(|(index, _)| (*index, rowless.state))
                    .collect();
                let conflict = "ON CONFLICT (run_id, idx) DO NOTHING";
                self.write_job_rows(tx, run, &ended, rowless.finished_ms, conflict)
                    .await?;
            }
            let mut query = sqlx::query(AssertSqlSafe(self.upsert_jobs_sql(chunk.len())));
            for (row, (index, patch)) in chunk.iter().enumerate() {
                query = self
                    .bind_run(query, row, run.as_str())
                    .bind(*index as i64)
                    .bind(patch.id.as_str())
                    .bind(patch.status.map(JobState::as_str))
                    .bind(i64::from(patch.agent))
                    .bind(i64::from(patch.attempt))
                    .bind(patch.started_ms.map(|at| at as i64))
                    .bind(patch.finished_ms.map(|at| at as i64))
                    .bind(patch.duration_ms)
                    .bind(patch.last_event.as_str())
                    .bind(patch.error.as_deref());
            }
            let rows = query
                .fetch_all(&mut **tx)
                .await
                .map_err(self.failed("updating jobs"))?;
            for row in &rows {
                jobs.push(job_from_row(row).map_err(self.failed("updating jobs"))?);
            }
        }
        jobs.sort_by_key(|job| job.index);
        Ok(jobs)
    }

    /// The upsert of `rows` job patches: the run id, then per row index, id, status, agent,
    /// attempts, started, finished, duration, last event and error.
    ///
    /// VALUES columns are named column1… in both databases; the casts type the parameters of
    /// every row alike. The run id is a VALUES column (parameter 1 in every row), not a
    /// constant: when this was an `UPDATE … FROM (VALUES …)` with a constant, SQLite (3.51, no
    /// statistics) walked every job of the run through an index and probed VALUES, costing
    /// the run's size per statement; joined on both key columns, both databases looked each
    /// job up by its primary key, as the conflict on it does now. `WHERE true` keeps SQLite
    /// from reading `ON CONFLICT` as a join's `ON`.
    ///
    /// A new row is the job as it was without one (queued: the run is running) with the patch
    /// applied under the same guard, which a queued job always passes. A patch never sets
    /// `queued` (its states are those an attempt reaches), so `queued` in `excluded` is a
    /// patch without a state, which keeps the row's.
    fn upsert_jobs_sql(&self, rows: usize) -> String {
        const TYPES: [&str; 11] = [
            "TEXT",
            "BIGINT",
            "TEXT",
            "TEXT",
            "BIGINT",
            "BIGINT",
            "BIGINT",
            "BIGINT",
            "DOUBLE PRECISION",
            "TEXT",
            "TEXT",
        ];
        let rows: Vec<String> = (0..rows)
            .map(|row| {
                let columns: Vec<String> = TYPES
                    .iter()
                    .enumerate()
                    .map(|(column, kind)| {
                        let number = if column == 0 {
                            1
                        } else {
                            1 + row * 10 + column
                        };
                        format!("CAST({} AS {kind})", self.mark(number))
                    })
                    .collect();
                format!("({})", columns.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO armada_jobs (run_id, idx, id, status, agent, attempts, started_ms, \
             finished_ms, duration_ms, last_event, error) \
             SELECT v.column1, v.column2, v.column3, COALESCE(v.column4, 'queued'), v.column5, \
             v.column6, v.column7, v.column8, v.column9, v.column10, \
             CASE WHEN v.column4 = 'succeeded' THEN NULL ELSE v.column11 END \
             FROM (VALUES {}) AS v WHERE true \
             ON CONFLICT (run_id, idx) DO UPDATE SET \
             status = COALESCE(NULLIF(excluded.status, 'queued'), armada_jobs.status), \
             agent = excluded.agent, attempts = excluded.attempts, \
             started_ms = COALESCE(excluded.started_ms, armada_jobs.started_ms), \
             finished_ms = COALESCE(excluded.finished_ms, armada_jobs.finished_ms), \
             duration_ms = COALESCE(excluded.duration_ms, armada_jobs.duration_ms), \
             last_event = excluded.last_event, \
             error = CASE WHEN excluded.status = 'succeeded' THEN NULL \
             ELSE COALESCE(excluded.error, armada_jobs.error) END \
             WHERE armada_jobs.attempts < excluded.attempts \
             OR (armada_jobs.attempts = excluded.attempts \
             AND armada_jobs.status NOT IN ('succeeded', 'failed', 'canceled', 'abandoned')) \
             RETURNING {JOB_COLUMNS}",
            rows.join(", ")
        )
    }

    /// Inserts a row per job of `jobs` (index and state) ended at `finished_ms`, `on_conflict`
    /// saying what becomes of a row that exists.
    async fn write_job_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        run: &RunId,
        jobs: &[(u64, JobState)],
        finished_ms: Option<u64>,
        on_conflict: &str,
    ) -> Result<()> {
        for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
            let mut sql = values_sql(
                "INSERT INTO armada_jobs (run_id, idx, id, status, finished_ms) VALUES ",
                chunk.len(),
                4,
                |number| self.mark(number),
            );
            sql.push(' ');
            sql.push_str(on_conflict);
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (row, (index, state)) in chunk.iter().enumerate() {
                query = self
                    .bind_run(query, row, run.as_str())
                    .bind(*index as i64)
                    .bind(super::job_id(run, *index))
                    .bind(state.as_str())
                    .bind(finished_ms.map(|at| at as i64));
            }
            query
                .execute(&mut **tx)
                .await
                .map_err(self.failed("writing jobs"))?;
        }
        Ok(())
    }

    async fn update_agents(
        &self,
        tx: &mut sqlx::Transaction<'_, Any>,
        run_id: &str,
        decoded: &[Decoded],
        seen: &Seen,
    ) -> Result<()> {
        for (index, patch) in ingest::agent_patches(decoded, seen) {
            sqlx::query(
                "INSERT INTO armada_agents (run_id, idx, status, started_ms, stopped_ms, error, \
                 seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, idx) DO UPDATE \
                 SET status = CASE WHEN $8 = 1 THEN excluded.status ELSE armada_agents.status END, \
                 started_ms = COALESCE(excluded.started_ms, armada_agents.started_ms), \
                 stopped_ms = COALESCE(excluded.stopped_ms, armada_agents.stopped_ms), \
                 error = COALESCE(excluded.error, armada_agents.error), \
                 seen_ms = excluded.seen_ms",
            )
            .bind(run_id)
            .bind(i64::from(index))
            .bind(patch.status.unwrap_or("starting"))
            .bind(patch.started_ms.map(|at| at as i64))
            .bind(patch.stopped_ms.map(|at| at as i64))
            .bind(patch.error)
            .bind(patch.seen_ms as i64)
            .bind(i64::from(patch.status.is_some()))
            .execute(&mut **tx)
            .await
            .map_err(self.failed("updating agents"))?;
        }
        Ok(())
    }

    /// Runs `sql` and reads every row with `read`.
    async fn fetch<T>(
        &self,
        sql: Sql<'_>,
        doing: &'static str,
        read: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>> {
        bound(sql)
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(read).collect())
            .map_err(self.failed(doing))
    }
}

impl StoreBackend for SqlStore {
    async fn register_run(&self, run: &NewRun, settings: &str, created_ms: u64) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO armada_runs (id, project, status, created_ms, agents, jobs, tune, \
             relaunch_of, settings, name, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&run.id)
        .bind(&run.project)
        .bind(RunState::Running.as_str())
        .bind(created_ms as i64)
        .bind(i64::from(run.agents))
        .bind(run.jobs as i64)
        .bind(&run.tune)
        .bind(&run.relaunch_of)
        .bind(settings)
        .bind(&run.name)
        .bind(super::tags_text(&run.tags))
        .execute(self.writes())
        .await
        .map_err(self.failed("registering a run"))?
        .rows_affected();
        if inserted == 0 {
            return Err(super::run_exists(&run.id));
        }
        Ok(())
    }

    async fn finish_run(
        &self,
        run: &RunId,
        finish: &Finish,
        leftover: JobState,
        now_ms: u64,
    ) -> Result<()> {
        let run_id = run.as_str();
        let doing = "finishing a run";
        let mut tx = self.writes().begin().await.map_err(self.failed(doing))?;
        let updated = sqlx::query(
            "UPDATE armada_runs SET status = $1, finished_ms = COALESCE(finished_ms, $2) \
             WHERE id = $3",
        )
        .bind(finish.status.as_str())
        .bind(now_ms as i64)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.failed(doing))?
        .rows_affected();
        if updated == 0 {
            return Err(Error::UnknownRun(run_id.to_owned()));
        }
        let listed: Vec<_> = finish
            .jobs
            .iter()
            .map(|job| (job.index, job.status))
            .collect();
        let conflict = "ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, \
                        finished_ms = excluded.finished_ms \
                        WHERE armada_jobs.status IN ('queued', 'running', 'retrying')";
        self.write_job_rows(&mut tx, run, &listed, Some(now_ms), conflict)
            .await?;
        sqlx::query(
            "UPDATE armada_jobs SET status = $1, finished_ms = $2 \
             WHERE run_id = $3 AND status IN ('queued', 'running', 'retrying')",
        )
        .bind(leftover.as_str())
        .bind(now_ms as i64)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.failed(doing))?;
        tx.commit().await.map_err(self.failed(doing))
    }

    async fn delete_run(&self, run_id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM armada_runs WHERE id = $1")
            .bind(run_id)
            .execute(self.writes())
            .await
            .map_err(self.failed("deleting a run"))?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn counts(&self, run_id: &str) -> Result<Vec<(String, u64)>> {
        let doing = "counting jobs";
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS jobs FROM armada_jobs WHERE run_id = $1 GROUP BY status",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed(doing))?;
        rows.iter()
            .map(|row| Ok((row.required_text("status")?, row.u64("jobs")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.failed(doing))
    }

    async fn ingest(
        &self,
        run: &RunId,
        batch_id: &str,
        decoded: &mut [Decoded],
        seen: &Seen,
    ) -> Result<Option<Vec<Job>>> {
        let run_id = run.as_str();
        let doing = "storing events";
        let mut tx = self.writes().begin().await.map_err(self.failed(doing))?;
        let new_batch = sqlx::query(
            "INSERT INTO armada_batches (batch_id, run_id) \
             SELECT $1, id FROM armada_runs WHERE id = $2 ON CONFLICT DO NOTHING",
        )
        .bind(batch_id)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.failed(doing))?
        .rows_affected()
            == 1;
        let count = decoded.len() as i64;
        let counted = sqlx::query(
            "UPDATE armada_runs SET events = events + $1, seen_ms = $3 WHERE id = $2 \
             RETURNING events, jobs, status, finished_ms",
        )
        .bind(if new_batch { count } else { 0 })
        .bind(run_id)
        .bind(seen.at_ms as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.failed(doing))?;
        let Some(counted) = counted else {
            return Err(Error::UnknownRun(run_id.to_owned()));
        };
        if !new_batch {
            return Ok(None);
        }
        ingest::number(decoded, counted.u64("events").map_err(self.failed(doing))?);
        let rowless = rowless_from_row(&counted, run).map_err(self.failed(doing))?;

        self.insert_events(&mut tx, run_id, decoded).await?;
        self.insert_outputs(&mut tx, run_id, decoded).await?;
        for item in decoded.iter() {
            if let Some((attachment, bytes)) = &item.attachment {
                sqlx::query(
                    "INSERT INTO armada_attachments (run_id, seq, job_idx, attempt, name, \
                     content_type, size, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(run_id)
                .bind(item.event.seq as i64)
                .bind(item.event.job.unwrap_or_default() as i64)
                .bind(i64::from(item.event.attempt.unwrap_or_default()))
                .bind(&attachment.name)
                .bind(&attachment.content_type)
                .bind(bytes.len() as i64)
                .bind(bytes.clone())
                .execute(&mut *tx)
                .await
                .map_err(self.failed(doing))?;
            }
        }
        let jobs = self.update_jobs(&mut tx, run, decoded, &rowless).await?;
        self.update_agents(&mut tx, run_id, decoded, seen).await?;
        tx.commit().await.map_err(self.failed(doing))?;
        Ok(Some(jobs))
    }

    async fn run(&self, run_id: &str) -> Result<Option<Run>> {
        let doing = "reading a run";
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM armada_runs WHERE id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed(doing))?
        .map(|row| run_from_row(&row))
        .transpose()
        .map_err(self.failed(doing))
    }

    async fn runs(&self, after: Option<&str>, rows: i64) -> Result<Vec<Run>> {
        let doing = "listing runs";
        let mut sql = Sql::new(
            &format!("SELECT {RUN_COLUMNS} FROM armada_runs WHERE 1 = 1"),
            "$",
        );
        if let Some(after) = after {
            sql.and(
                "(created_ms, id) < (SELECT created_ms, id FROM armada_runs WHERE id = ?)",
                Param::Text(Some(after)),
            );
        }
        sql.push(" ORDER BY created_ms DESC, id DESC");
        let limit = sql.bind(Param::Int(Some(rows)));
        sql.push(&format!(" LIMIT {limit}"));
        self.fetch(sql, doing, run_from_row).await
    }

    async fn run_exists(&self, run_id: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM armada_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.failed("reading a run"))?;
        Ok(found.is_some())
    }

    async fn jobs(
        &self,
        run_id: &str,
        filter: &JobFilter,
        keyset: &Keyset,
        rows: i64,
    ) -> Result<Vec<Job>> {
        let sql = Sql::new(&format!("SELECT {JOB_COLUMNS} FROM armada_jobs"), "$");
        let mut sql = query::jobs_sql(sql, self.dialect(), run_id, filter, keyset);
        let limit = sql.bind(Param::Int(Some(rows)));
        sql.push(&format!(" LIMIT {limit}"));
        self.fetch(sql, "listing jobs", job_from_row).await
    }

    async fn job_indexes(&self, run_id: &str, span: Span, rows: i64) -> Result<Vec<u64>> {
        let mut sql = query::job_indexes_sql(Sql::new("", "$"), run_id, span);
        let limit = sql.bind(Param::Int(Some(rows)));
        sql.push(&format!(" LIMIT {limit}"));
        self.fetch(sql, "listing jobs", |row| row.u64("idx")).await
    }

    async fn job(&self, run_id: &str, index: u64) -> Result<Option<Job>> {
        let doing = "reading a job";
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM armada_jobs WHERE run_id = $1 AND idx = $2"
        )))
        .bind(run_id)
        .bind(index as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed(doing))?
        .map(|row| job_from_row(&row))
        .transpose()
        .map_err(self.failed(doing))
    }

    async fn attachments(&self, run_id: &str, index: u64) -> Result<Vec<AttachmentInfo>> {
        let mut sql = Sql::new(
            "SELECT seq, job_idx, attempt, name, content_type, size FROM armada_attachments \
             WHERE run_id = $1 AND job_idx = $2 ORDER BY seq",
            "$",
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(index as i64)));
        self.fetch(sql, "listing attachments", attachment_from_row)
            .await
    }

    async fn attachment(&self, run_id: &str, seq: u64) -> Result<Option<(String, Vec<u8>)>> {
        let doing = "reading an attachment";
        let row = sqlx::query(
            "SELECT content_type, bytes FROM armada_attachments WHERE run_id = $1 AND seq = $2",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed(doing))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let content_type = row.try_get(0).map_err(self.failed(doing))?;
        let bytes = row.try_get(1).map_err(self.failed(doing))?;
        Ok(Some((content_type, bytes)))
    }

    async fn events(
        &self,
        run_id: &str,
        filter: &EventFilter,
        after: u64,
        newest_first: bool,
        rows: i64,
    ) -> Result<Vec<Event>> {
        let sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM armada_events"), "$");
        let mut sql = query::events_sql(sql, run_id, filter, after, newest_first);
        let limit = sql.bind(Param::Int(Some(rows)));
        sql.push(&format!(" LIMIT {limit}"));
        self.fetch(sql, "listing events", event_from_row).await
    }

    async fn agents(&self, run_id: &str) -> Result<Vec<Agent>> {
        let mut sql = Sql::new(
            &format!("SELECT {AGENT_COLUMNS} FROM armada_agents WHERE run_id = $1 ORDER BY idx"),
            "$",
        );
        sql.bind(Param::Text(Some(run_id)));
        self.fetch(sql, "listing agents", agent_from_row).await
    }

    async fn agent_jobs(&self, run_id: &str) -> Result<Vec<AgentJobs>> {
        let mut sql = Sql::new(
            "SELECT agent, status, COUNT(*) AS jobs, MIN(idx) AS first FROM armada_jobs \
             WHERE run_id = $1 AND agent IS NOT NULL GROUP BY agent, status",
            "$",
        );
        sql.bind(Param::Text(Some(run_id)));
        self.fetch(sql, "listing agents", agent_jobs_from_row).await
    }

    async fn failures(&self, run_id: &str, limit: i64) -> Result<Vec<FailureGroup>> {
        let mut sql = Sql::new(
            "SELECT error, COUNT(*) AS jobs, MIN(idx) AS sample FROM armada_jobs \
             WHERE run_id = $1 AND status = 'failed' GROUP BY error \
             ORDER BY COUNT(*) DESC, error LIMIT $2",
            "$",
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(limit)));
        self.fetch(sql, "grouping failures", failure_from_row).await
    }

    async fn outputs(&self, run_id: &str, after: u64, rows: i64) -> Result<Vec<Output>> {
        let mut sql = Sql::new(
            &format!(
                "SELECT {OUTPUT_COLUMNS} FROM armada_outputs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            "$",
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(after as i64)));
        sql.bind(Param::Int(Some(rows)));
        self.fetch(sql, "listing outputs", output_from_row).await
    }

    async fn per_bucket(
        &self,
        run_id: &str,
        measure: Measure,
        origin: i64,
        width: i64,
    ) -> Result<Vec<(i64, String, u64)>> {
        let sql = query::per_bucket_sql("$", "COUNT(*)", run_id, measure, origin, width);
        self.fetch(sql, "charting jobs", query::bucket_from_row)
            .await
    }

    async fn duration_at(&self, run_id: &str, rank: u64) -> Result<Option<f64>> {
        let doing = "measuring durations";
        let row = sqlx::query(
            "SELECT duration_ms FROM armada_jobs WHERE run_id = $1 AND status = 'succeeded' \
             AND duration_ms IS NOT NULL ORDER BY duration_ms LIMIT 1 OFFSET $2",
        )
        .bind(run_id)
        .bind(rank as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed(doing))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(self.failed(doing))
    }
}

fn sqlite_url(url: &str) -> Result<String> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(Error::Invalid(format!(
            "the monitor store URL `{url}` names no file: use sqlite:PATH (an in-memory SQLite \
             database would be private to one connection)"
        )));
    }
    if let Some(folder) = Path::new(path)
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder).map_err(|source| Error::Io {
            path: folder.display().to_string(),
            source,
        })?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

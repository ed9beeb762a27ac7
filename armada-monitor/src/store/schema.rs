//! The monitor's tables, created and upgraded when a store opens.
//!
//! One schema serves SQLite and PostgreSQL: the column types are spelled so that SQLite's
//! type affinity and PostgreSQL read them alike (`BIGINT`, `DOUBLE PRECISION`, `TEXT`,
//! `BYTEA`). SQL Server has the same tables, keys and indexes in T-SQL ([`MSSQL`]); a
//! migration added to one list is added to the other, so versions mean the same everywhere.

use crate::{Error, Result};

/// The version a store is at, checked against the `known` migrations of this build.
pub(super) fn check_version(url: &str, version: Option<i64>, known: usize) -> Result<usize> {
    let version = version.unwrap_or(0) as usize;
    if version > known {
        return Err(Error::Invalid(format!(
            "the monitor store at {url} has schema version {version}, newer than this build \
             knows ({known}): upgrade Armada or use another store"
        )));
    }
    Ok(version)
}

/// Schema versions in order; version `n` is `MIGRATIONS[n - 1]`.
pub(super) const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE armada_runs (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        agents BIGINT NOT NULL,
        jobs BIGINT NOT NULL,
        events BIGINT NOT NULL DEFAULT 0,
        tune TEXT,
        relaunch_of TEXT,
        settings TEXT NOT NULL
    )",
        "CREATE INDEX armada_runs_by_age ON armada_runs (created_ms)",
        "CREATE TABLE armada_jobs (
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        agent BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        started_ms BIGINT,
        finished_ms BIGINT,
        duration_ms DOUBLE PRECISION,
        last_event TEXT,
        error TEXT,
        PRIMARY KEY (run_id, idx)
    )",
        "CREATE INDEX armada_jobs_by_status ON armada_jobs (run_id, status, idx)",
        "CREATE INDEX armada_jobs_by_agent ON armada_jobs (run_id, agent, idx)",
        "CREATE INDEX armada_jobs_by_duration ON armada_jobs (run_id, status, duration_ms)",
        "CREATE INDEX armada_jobs_by_error ON armada_jobs (run_id, status, error)",
        "CREATE TABLE armada_agents (
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        status TEXT NOT NULL,
        started_ms BIGINT,
        stopped_ms BIGINT,
        error TEXT,
        PRIMARY KEY (run_id, idx)
    )",
        "CREATE TABLE armada_events (
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT,
        attempt BIGINT,
        agent BIGINT NOT NULL,
        kind TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        message TEXT,
        data TEXT,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE INDEX armada_events_by_job ON armada_events (run_id, job_idx, seq)",
        "CREATE TABLE armada_outputs (
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE TABLE armada_attachments (
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        name TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE INDEX armada_attachments_by_job ON armada_attachments (run_id, job_idx)",
        "CREATE TABLE armada_batches (
        batch_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES armada_runs (id) ON DELETE CASCADE
    )",
        "CREATE INDEX armada_batches_by_run ON armada_batches (run_id)",
    ],
    &[
        // Version 2: the jobs indexes that only started or finished jobs need leave the others
        // out, so that registering a run writes the table, its key and one index per job rather
        // than five (registering a million jobs in SQLite took twice as long with them).
        "DROP INDEX armada_jobs_by_agent",
        "DROP INDEX armada_jobs_by_duration",
        "DROP INDEX armada_jobs_by_error",
        "CREATE INDEX armada_jobs_by_agent ON armada_jobs (run_id, agent, idx) \
     WHERE agent IS NOT NULL",
        "CREATE INDEX armada_jobs_by_duration ON armada_jobs (run_id, duration_ms) \
     WHERE status = 'succeeded' AND duration_ms IS NOT NULL",
        "CREATE INDEX armada_jobs_by_error ON armada_jobs (run_id, error) WHERE status = 'failed'",
    ],
    &[
        // Version 3: when the monitor last heard from each run and agent, for `stalled` runs
        // and `gone` agents.
        "ALTER TABLE armada_runs ADD COLUMN seen_ms BIGINT",
        "ALTER TABLE armada_agents ADD COLUMN seen_ms BIGINT",
    ],
    &[
        // Version 4: what a person calls a run, and its tags (a JSON array).
        "ALTER TABLE armada_runs ADD COLUMN name TEXT",
        "ALTER TABLE armada_runs ADD COLUMN tags TEXT",
    ],
];

/// The same schema versions for SQL Server, in T-SQL: `NVARCHAR(MAX)` for text, `FLOAT` for
/// `DOUBLE PRECISION`, `VARBINARY(MAX)` for `BYTEA`. Keys and indexed text get a bounded
/// length (SQL Server cannot index `MAX` columns; run ids are at most 64 characters) and a
/// binary collation, so that ids, states and errors compare and sort exactly as in SQLite
/// and PostgreSQL rather than case-insensitively. The errors index carries the message as an
/// included column for the same reason.
#[cfg(feature = "mssql")]
pub(super) const MSSQL: &[&[&str]] = &[
    &[
        "CREATE TABLE armada_runs (
        id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
        project NVARCHAR(MAX) NOT NULL,
        status NVARCHAR(32) COLLATE Latin1_General_100_BIN2 NOT NULL,
        created_ms BIGINT NOT NULL,
        finished_ms BIGINT NULL,
        agents BIGINT NOT NULL,
        jobs BIGINT NOT NULL,
        events BIGINT NOT NULL DEFAULT 0,
        tune NVARCHAR(MAX) NULL,
        relaunch_of NVARCHAR(MAX) NULL,
        settings NVARCHAR(MAX) NOT NULL
    )",
        "CREATE INDEX armada_runs_by_age ON armada_runs (created_ms)",
        "CREATE TABLE armada_jobs (
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        id NVARCHAR(MAX) NOT NULL,
        status NVARCHAR(32) COLLATE Latin1_General_100_BIN2 NOT NULL,
        agent BIGINT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        started_ms BIGINT NULL,
        finished_ms BIGINT NULL,
        duration_ms FLOAT NULL,
        last_event NVARCHAR(MAX) NULL,
        error NVARCHAR(MAX) COLLATE Latin1_General_100_BIN2 NULL,
        PRIMARY KEY (run_id, idx)
    )",
        "CREATE INDEX armada_jobs_by_status ON armada_jobs (run_id, status, idx)",
        "CREATE INDEX armada_jobs_by_agent ON armada_jobs (run_id, agent, idx)",
        "CREATE INDEX armada_jobs_by_duration ON armada_jobs (run_id, status, duration_ms)",
        "CREATE INDEX armada_jobs_by_error ON armada_jobs (run_id, status) INCLUDE (error)",
        "CREATE TABLE armada_agents (
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        status NVARCHAR(32) COLLATE Latin1_General_100_BIN2 NOT NULL,
        started_ms BIGINT NULL,
        stopped_ms BIGINT NULL,
        error NVARCHAR(MAX) NULL,
        PRIMARY KEY (run_id, idx)
    )",
        "CREATE TABLE armada_events (
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT NULL,
        attempt BIGINT NULL,
        agent BIGINT NOT NULL,
        kind NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
        at_ms BIGINT NOT NULL,
        message NVARCHAR(MAX) NULL,
        data NVARCHAR(MAX) NULL,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE INDEX armada_events_by_job ON armada_events (run_id, job_idx, seq)",
        "CREATE TABLE armada_outputs (
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        data NVARCHAR(MAX) NOT NULL,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE TABLE armada_attachments (
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        job_idx BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        name NVARCHAR(MAX) NOT NULL,
        content_type NVARCHAR(MAX) NOT NULL,
        size BIGINT NOT NULL,
        bytes VARBINARY(MAX) NOT NULL,
        PRIMARY KEY (run_id, seq)
    )",
        "CREATE INDEX armada_attachments_by_job ON armada_attachments (run_id, job_idx)",
        "CREATE TABLE armada_batches (
        batch_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
        run_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL
            REFERENCES armada_runs (id) ON DELETE CASCADE
    )",
        "CREATE INDEX armada_batches_by_run ON armada_batches (run_id)",
    ],
    &[
        "DROP INDEX armada_jobs_by_agent ON armada_jobs",
        "DROP INDEX armada_jobs_by_duration ON armada_jobs",
        "DROP INDEX armada_jobs_by_error ON armada_jobs",
        "CREATE INDEX armada_jobs_by_agent ON armada_jobs (run_id, agent, idx) \
     WHERE agent IS NOT NULL",
        "CREATE INDEX armada_jobs_by_duration ON armada_jobs (run_id, duration_ms) \
     WHERE status = 'succeeded' AND duration_ms IS NOT NULL",
        "CREATE INDEX armada_jobs_by_error ON armada_jobs (run_id) INCLUDE (error) \
     WHERE status = 'failed'",
    ],
    &[
        "ALTER TABLE armada_runs ADD seen_ms BIGINT",
        "ALTER TABLE armada_agents ADD seen_ms BIGINT",
    ],
    &[
        "ALTER TABLE armada_runs ADD name NVARCHAR(MAX)",
        "ALTER TABLE armada_runs ADD tags NVARCHAR(MAX)",
    ],
];

#[cfg(all(test, feature = "mssql"))]
mod tests {
    /// A version means the same tables in every database.
    #[test]
    fn both_schemas_have_the_same_versions() {
        assert_eq!(super::MSSQL.len(), super::MIGRATIONS.len());
        for (mssql, sql) in super::MSSQL.iter().zip(super::MIGRATIONS) {
            assert_eq!(mssql.len(), sql.len());
            for (mssql, sql) in mssql.iter().zip(sql.iter()) {
                let head = |statement: &str| {
                    statement
                        .split(['(', ' '])
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                assert_eq!(head(mssql), head(sql), "statements in the same order");
            }
        }
    }
}

//! What a monitor store backend does: the SQL of each operation, and nothing else. What
//! does not depend on the database (checking and decoding batches, folding events into job and
//! agent changes, paging, percentiles' ranks, summaries) is written once around it, in
//! `ingest.rs` and `query.rs`. [`super::Store`] forwards to the backend its URL chose; the
//! conformance suite (`armada-monitor/tests/store.rs`) holds every backend to the same
//! answers.

use std::future::Future;

use armada_core::RunId;

use super::ingest::{Decoded, Seen};
use super::query::{AgentJobs, Keyset, Measure, Span};
use crate::Result;
use crate::model::{
    Agent, AttachmentInfo, Event, EventFilter, FailureGroup, Finish, Job, JobFilter, JobState,
    NewRun, Output, Run,
};

/// A database the monitor's store runs on: SQLite and PostgreSQL through sqlx, SQL Server
/// through tiberius.
pub(super) trait StoreBackend: Send + Sync {
    /// Creates the run's row (its jobs have none until an event about them) with its redacted
    /// settings; a second run under its id is a conflict.
    fn register_run(
        &self,
        run: &NewRun,
        settings: &str,
        created_ms: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records the run's end, gives each job of `finish.jobs` its state (writing its row when
    /// it has none), then moves the other rows that are not terminal to `leftover`.
    fn finish_run(
        &self,
        run: &RunId,
        finish: &Finish,
        leftover: JobState,
        now_ms: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the run and everything of it; `false` when there was none.
    fn delete_run(&self, run_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The run's jobs counted by state.
    fn counts(&self, run_id: &str) -> impl Future<Output = Result<Vec<(String, u64)>>> + Send;

    /// Stores a checked batch in one transaction; `None` when its batch id was stored before.
    /// A job's row is written by the first event about it, in the state the job had without
    /// one ([`super::Rowless`]) before the event's change applies.
    fn ingest(
        &self,
        run: &RunId,
        batch_id: &str,
        decoded: &mut [Decoded],
        seen: &Seen,
    ) -> impl Future<Output = Result<Option<Vec<Job>>>> + Send;

    /// The run as stored, without its computed fields.
    fn run(&self, run_id: &str) -> impl Future<Output = Result<Option<Run>>> + Send;

    /// Runs, newest first, after the run `after` (keyset paging).
    fn runs(&self, after: Option<&str>, rows: i64)
    -> impl Future<Output = Result<Vec<Run>>> + Send;

    /// Whether a run of this id is stored.
    fn run_exists(&self, run_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The first `rows` of the run's job rows matching `filter`, as `keyset` orders them
    /// from where it starts ([`super::query::jobs_sql`]).
    fn jobs(
        &self,
        run_id: &str,
        filter: &JobFilter,
        keyset: &Keyset,
        rows: i64,
    ) -> impl Future<Output = Result<Vec<Job>>> + Send;

    /// The first `rows` indexes of `span` that have a job row, in its order.
    fn job_indexes(
        &self,
        run_id: &str,
        span: Span,
        rows: i64,
    ) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// One job's row.
    fn job(&self, run_id: &str, index: u64) -> impl Future<Output = Result<Option<Job>>> + Send;

    /// A job's attachments, without their bytes.
    fn attachments(
        &self,
        run_id: &str,
        index: u64,
    ) -> impl Future<Output = Result<Vec<AttachmentInfo>>> + Send;

    /// One attachment's media type and bytes, by its event's `seq`.
    fn attachment(
        &self,
        run_id: &str,
        seq: u64,
    ) -> impl Future<Output = Result<Option<(String, Vec<u8>)>>> + Send;

    /// The run's events matching `filter`, by `seq` after `after` or newest first.
    fn events(
        &self,
        run_id: &str,
        filter: &EventFilter,
        after: u64,
        newest_first: bool,
        rows: i64,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// The run's agents as their events left them.
    fn agents(&self, run_id: &str) -> impl Future<Output = Result<Vec<Agent>>> + Send;

    /// Jobs per agent and state, for the agents' summary.
    fn agent_jobs(&self, run_id: &str) -> impl Future<Output = Result<Vec<AgentJobs>>> + Send;

    /// The run's failed jobs grouped by error, largest group first.
    fn failures(
        &self,
        run_id: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<FailureGroup>>> + Send;

    /// Succeeded jobs' outputs, by index after `after`.
    fn outputs(
        &self,
        run_id: &str,
        after: u64,
        rows: i64,
    ) -> impl Future<Output = Result<Vec<Output>>> + Send;

    /// The run's jobs counted per state and per `width`-wide bucket of `measure` from
    /// `origin`: `(bucket, status, jobs)`, as [`super::query::per_bucket_sql`] selects them.
    fn per_bucket(
        &self,
        run_id: &str,
        measure: Measure,
        origin: i64,
        width: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, u64)>>> + Send;

    /// The duration of the succeeded job at `rank` (from 0) in duration order.
    fn duration_at(
        &self,
        run_id: &str,
        rank: u64,
    ) -> impl Future<Output = Result<Option<f64>>> + Send;
}

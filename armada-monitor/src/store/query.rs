//! Reading the store: every list is keyset-paged on an indexed key, so a page costs the same
//! in a run of a hundred jobs as in one of a million.
//!
//! Paging, the checks that a run or job exists, percentiles, the agents' summary and
//! comparisons are written here once; the backends only run the SQL, and rows become the
//! API's types through [`Columns`] in the `*_from_row` functions below.

use super::backend::StoreBackend;
use std::collections::BTreeMap;

use armada_core::RunId;
use armada_core::wire::EventKind;
use serde_json::Value;

use super::{Backend, Columns, Param, Rowless, Sql, Store};
use crate::model::{
    Agent, AttachmentInfo, Counts, DurationHistogram, Event, EventFilter, FailureGroup, Job,
    JobCursor, JobFilter, JobSort, JobState, Output, Page, Percentiles, Run, RunState, RunStats,
    SortOrder, SortValue, Timeline, TimelineBucket, coverage,
};
use crate::{Error, Result};

/// Largest page any list serves.
pub const MAX_PAGE: u32 = 500;

/// Most row indexes one step of a jobs page reads while it looks for jobs without a row past
/// rows its filter leaves out.
const MAX_INDEX_CHUNK: usize = 4_096;

/// Jobs of one agent in one state, as the agents' summary counts them.
#[derive(Debug)]
pub(super) struct AgentJobs {
    pub(super) agent: u32,
    pub(super) status: String,
    pub(super) jobs: u64,
    /// The lowest job index among them.
    pub(super) first: u64,
}

impl Store {
    /// One run, with its counts and pace.
    pub async fn run(&self, run_id: &str, now_ms: u64) -> Result<Run> {
        let run =
            dispatch!(self, run(run_id))?.ok_or_else(|| Error::UnknownRun(run_id.to_owned()))?;
        self.complete_run(run, now_ms).await
    }

    async fn complete_run(&self, mut run: Run, now_ms: u64) -> Result<Run> {
        run.counts = self.counts(&run).await?;
        run.derive_liveness(now_ms, self.stall_limit);
        run.derive_pace(now_ms);
        Ok(run)
    }

    /// Runs, newest first. The cursor is the last run's id.
    pub async fn runs(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Run>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = dispatch!(self, runs(after, i64::from(limit) + 1))?;
        let more = rows.len() > limit as usize;
        let now = armada_core::wire::now_ms();
        let mut runs = Vec::with_capacity(rows.len());
        for run in rows.into_iter().take(limit as usize) {
            runs.push(self.complete_run(run, now).await?);
        }
        let next = more
            .then(|| runs.last().map(|run| run.id.clone()))
            .flatten();
        Ok((runs, next))
    }

    /// The run as stored: its status not derived from liveness, its counts not filled in.
    async fn stored_run(&self, run_id: &str) -> Result<Run> {
        dispatch!(self, run(run_id))?.ok_or_else(|| Error::UnknownRun(run_id.to_owned()))
    }

    async fn require_run(&self, run_id: &str) -> Result<()> {
        if dispatch!(self, run_exists(run_id))? {
            Ok(())
        } else {
            Err(Error::UnknownRun(run_id.to_owned()))
        }
    }

    /// A run's jobs in index order, after the job index `after`: rows and jobs without one
    /// alike.
    pub async fn jobs(
        &self,
        run_id: &str,
        filter: &JobFilter,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<Job>> {
        self.jobs_by_index(run_id, filter, SortOrder::Asc, after, limit)
            .await
    }

    /// A run's jobs by index in `order`, past the job index `after`: rows and jobs without one
    /// alike.
    pub async fn jobs_by_index(
        &self,
        run_id: &str,
        filter: &JobFilter,
        order: SortOrder,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<Job>> {
        let rowless = Rowless::of(&self.stored_run(run_id).await?)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = limit as usize + 1;
        let span = Span::past(after, order);
        let items = if rowless.listed_by(filter) {
            self.jobs_with_rowless(run_id, &rowless, Some(filter), span, rows)
                .await?
        } else {
            dispatch!(
                self,
                jobs(run_id, filter, &Keyset::Index(span), rows as i64)
            )?
        };
        Ok(page(items, limit, |_, job| job.index))
    }

    /// A run's jobs ordered by `sort` in `order` (NULLs last either way, equal values by
    /// index), then those without a row by index, which have no value in any of these
    /// columns; from `cursor` on. The rows are the run's, read in the column's order with the
    /// page's row limit (a top-N sort: no index orders them, as one more index per column
    /// would slow every batch's writes).
    pub async fn sorted_jobs(
        &self,
        run_id: &str,
        filter: &JobFilter,
        sort: JobSort,
        order: SortOrder,
        cursor: Option<JobCursor>,
        limit: u32,
    ) -> Result<Page<Job, JobCursor>> {
        let rowless = Rowless::of(&self.stored_run(run_id).await?)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let wanted = limit as usize + 1;
        let (mut items, rowless_after) = match cursor {
            Some(JobCursor::Rowless { index }) => (Vec::new(), Some(index)),
            cursor => {
                let after = match cursor {
                    Some(JobCursor::Row { value, index }) => Some((value, index)),
                    _ => None,
                };
                let keyset = Keyset::Sorted { sort, order, after };
                let rows = dispatch!(self, jobs(run_id, filter, &keyset, wanted as i64))?;
                (rows, None)
            }
        };
        let with_rows = items.len();
        if with_rows < wanted && rowless.listed_by(filter) {
            let span = Span::past(rowless_after, SortOrder::Asc);
            let more = wanted - with_rows;
            items.extend(
                self.jobs_with_rowless(run_id, &rowless, None, span, more)
                    .await?,
            );
        }
        Ok(page(items, limit, |at, job| {
            if at < with_rows {
                JobCursor::Row {
                    value: sort.value_of(job),
                    index: job.index,
                }
            } else {
                JobCursor::Rowless { index: job.index }
            }
        }))
    }

    /// The first `wanted` jobs of `span` that `filter` lists, where `filter` lists jobs
    /// without a row too (`None`: only those are wanted). Each step reads the next chunk of
    /// indexes that have a row: every other index of the span up to the chunk's end is a job
    /// without one, and the rows `filter` lists up to that end come from one more read of at
    /// most the jobs still wanted; the two are merged in the span's order. When `filter` lists
    /// every row, the first step finds every job it needs, reading O(`wanted`); when it leaves
    /// rows out (`queued`, past thousands of ended jobs), chunks double up to
    /// [`MAX_INDEX_CHUNK`] indexes a step until enough jobs are found or the run's jobs end.
    async fn jobs_with_rowless(
        &self,
        run_id: &str,
        rowless: &Rowless,
        filter: Option<&JobFilter>,
        span: Span,
        wanted: usize,
    ) -> Result<Vec<Job>> {
        let mut items = Vec::with_capacity(wanted);
        let mut span = span.within(rowless.jobs);
        let mut chunk = wanted;
        while items.len() < wanted && !span.is_empty() {
            let with_rows = dispatch!(self, job_indexes(run_id, span, chunk as i64))?;
            // Every row of `step` is in `with_rows`.
            let step = match with_rows.last() {
                Some(&last) if with_rows.len() == chunk => span.through(last),
                _ => span,
            };
            let listed = match filter {
                Some(filter) => {
                    let missing = (wanted - items.len()) as i64;
                    dispatch!(self, jobs(run_id, filter, &Keyset::Index(step), missing))?
                }
                None => Vec::new(),
            };
            merge(
                &mut items,
                listed,
                step.gaps(&with_rows),
                rowless,
                wanted,
                step.descending,
            );
            span = span.beyond(step);
            chunk = (chunk * 2).min(MAX_INDEX_CHUNK.max(wanted));
        }
        Ok(items)
    }

    /// One job and the files it sent.
    pub async fn job(&self, run_id: &str, index: u64) -> Result<(Job, Vec<AttachmentInfo>)> {
        let rowless = Rowless::of(&self.stored_run(run_id).await?)?;
        let job = match dispatch!(self, job(run_id, index))? {
            Some(job) => job,
            None if index < rowless.jobs => rowless.job(index),
            None => {
                return Err(Error::UnknownJob {
                    run: run_id.to_owned(),
                    index,
                });
            }
        };
        let attachments = dispatch!(self, attachments(run_id, index))?;
        Ok((job, attachments))
    }

    /// A file a job sent: its media type and bytes.
    pub async fn attachment(&self, run_id: &str, seq: u64) -> Result<(String, Vec<u8>)> {
        dispatch!(self, attachment(run_id, seq))?.ok_or_else(|| Error::UnknownAttachment {
            run: run_id.to_owned(),
            seq,
        })
    }

    /// A run's events, oldest first after the event number `after`.
    pub async fn events(
        &self,
        run_id: &str,
        filter: &EventFilter,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<Event>> {
        self.require_run(run_id).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let after = after.unwrap_or(0);
        let items = dispatch!(
            self,
            events(run_id, filter, after, false, i64::from(limit) + 1)
        )?;
        Ok(page(items, limit, |_, event| event.seq))
    }

    /// A run's `count` newest events, oldest first.
    pub async fn latest_events(
        &self,
        run_id: &str,
        filter: &EventFilter,
        count: u32,
    ) -> Result<Vec<Event>> {
        self.require_run(run_id).await?;
        let count = count.clamp(1, MAX_PAGE);
        let mut events = dispatch!(self, events(run_id, filter, 0, true, i64::from(count)))?;
        events.reverse();
        Ok(events)
    }

    /// A run's agents with what each has done.
    pub async fn agents(&self, run_id: &str) -> Result<Vec<Agent>> {
        self.require_run(run_id).await?;
        let mut agents: BTreeMap<u32, Agent> = dispatch!(self, agents(run_id))?
            .into_iter()
            .map(|agent| (agent.index, agent))
            .collect();
        for row in dispatch!(self, agent_jobs(run_id))? {
            let agent = agents.entry(row.agent).or_insert_with(|| Agent {
                index: row.agent,
                status: "running".into(),
                seen_ms: None,
                started_ms: None,
                stopped_ms: None,
                error: None,
                succeeded: 0,
                failed: 0,
                retrying: 0,
                running_job: None,
            });
            match row.status.as_str() {
                "succeeded" => agent.succeeded = row.jobs,
                "failed" => agent.failed = row.jobs,
                "retrying" => agent.retrying = row.jobs,
                "running" => agent.running_job = Some(row.first),
                _ => {}
            }
        }
        let now = armada_core::wire::now_ms();
        let limit = self.stall_limit.as_millis();
        for agent in agents.values_mut() {
            let silent = agent
                .seen_ms
                .is_some_and(|seen| u128::from(now.saturating_sub(seen)) > limit);
            let shown = match agent.status.as_str() {
                "starting" | "running" if silent => "gone",
                "running" if agent.running_job.is_some() => "busy",
                "running" => "idle",
                _ => continue,
            };
            agent.status = shown.into();
        }
        Ok(agents.into_values().collect())
    }

    /// A run's failed jobs grouped by error message, most frequent first.
    pub async fn failures(&self, run_id: &str, limit: u32) -> Result<Vec<FailureGroup>> {
        self.require_run(run_id).await?;
        dispatch!(self, failures(run_id, i64::from(limit.clamp(1, MAX_PAGE))))
    }

    /// A run's outputs in the order they arrived, after the event number `after`.
    pub async fn outputs(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<Output>> {
        self.require_run(run_id).await?;
        let limit = limit.clamp(1, MAX_PAGE * 4);
        let after = after.unwrap_or(0);
        let items = dispatch!(self, outputs(run_id, after, i64::from(limit) + 1))?;
        Ok(page(items, limit, |_, output| output.seq))
    }

    /// What the comparison of two runs shows for one of them.
    pub async fn stats(&self, run_id: &str) -> Result<RunStats> {
        let run = self.run(run_id, armada_core::wire::now_ms()).await?;
        let terminal = run.counts.terminal();
        let success_rate = if terminal == 0 {
            0.0
        } else {
            run.counts.succeeded as f64 / terminal as f64
        };
        let duration_ms = self.percentiles(run_id, run.counts.succeeded).await?;
        let errors = self.failures(run_id, 50).await?;
        let mut values = Vec::new();
        let mut after = None;
        loop {
            let page = self.outputs(run_id, after, MAX_PAGE * 4).await?;
            values.extend(page.items.into_iter().map(|output| output.data));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let (outputs, output_fields) = coverage(values.into_iter());
        Ok(RunStats {
            run,
            success_rate,
            duration_ms,
            errors,
            output_fields,
            outputs,
        })
    }

    /// A run's jobs over time and its succeeded jobs' durations, for its charts; buckets are
    /// at least `bucket_ms` wide when given (to chart two runs alike), and wider when that
    /// would make more than [`Timeline::MAX_BUCKETS`].
    pub async fn timeline(
        &self,
        run_id: &str,
        now_ms: u64,
        bucket_ms: Option<u64>,
    ) -> Result<Timeline> {
        let run = self.run(run_id, now_ms).await?;
        let start_ms = run.created_ms;
        let end_ms = run.finished_ms.unwrap_or(now_ms).max(start_ms);
        let bucket_ms = round_bucket(end_ms - start_ms, bucket_ms.unwrap_or(0));
        let mut buckets: Vec<TimelineBucket> = (0..=(end_ms - start_ms) / bucket_ms)
            .map(|bucket| TimelineBucket {
                at_ms: start_ms + bucket * bucket_ms,
                ..TimelineBucket::default()
            })
            .collect();
        let (origin, width) = (start_ms as i64, bucket_ms as i64);
        for (measure, started) in [(Measure::Started, true), (Measure::Finished, false)] {
            for (bucket, status, jobs) in
                dispatch!(self, per_bucket(run_id, measure, origin, width))?
            {
                let last = buckets.len();
                let slot = &mut buckets[clamped(bucket, last)];
                match JobState::parse(&status) {
                    _ if started => slot.started += jobs,
                    Some(state) => add_ended(slot, state, jobs),
                    None => {}
                }
            }
        }
        add_ended_without_row(&mut buckets, &run.counts);
        Ok(Timeline {
            start_ms,
            end_ms,
            bucket_ms,
            buckets,
            durations: self.durations(run_id, run.counts.succeeded).await?,
        })
    }

    /// Succeeded jobs counted in [`Timeline::DURATION_BARS`] equal slices from the shortest
    /// duration to the longest.
    async fn durations(&self, run_id: &str, succeeded: u64) -> Result<Option<DurationHistogram>> {
        if succeeded == 0 {
            return Ok(None);
        }
        let shortest = dispatch!(self, duration_at(run_id, 0))?;
        let longest = dispatch!(self, duration_at(run_id, succeeded - 1))?;
        let (Some(min_ms), Some(max_ms)) = (shortest, longest) else {
            return Ok(None);
        };
        let bars = Timeline::DURATION_BARS;
        let origin_us = (min_ms * 1000.0).floor() as i64;
        let width_us = (((max_ms * 1000.0).ceil() as i64 - origin_us) / bars as i64 + 1).max(1);
        let mut counts = vec![0; bars];
        for (bar, status, jobs) in dispatch!(
            self,
            per_bucket(run_id, Measure::DurationMicros, origin_us, width_us)
        )? {
            if status == JobState::Succeeded.as_str() {
                counts[clamped(bar, bars)] += jobs;
            }
        }
        Ok(Some(DurationHistogram {
            min_ms,
            max_ms,
            bucket_ms: width_us as f64 / 1000.0,
            counts,
        }))
    }

    /// Duration percentiles of `succeeded` jobs, each read at its rank through the index.
    async fn percentiles(&self, run_id: &str, succeeded: u64) -> Result<Option<Percentiles>> {
        if succeeded == 0 {
            return Ok(None);
        }
        let mut at = [0.0; 4];
        for (slot, quantile) in at.iter_mut().zip([0.5, 0.9, 0.99, 1.0]) {
            let rank = ((succeeded as f64 * quantile).ceil() as u64).clamp(1, succeeded) - 1;
            if let Some(duration) = dispatch!(self, duration_at(run_id, rank))? {
                *slot = duration;
            }
        }
        Ok(Some(Percentiles {
            p50: at[0],
            p90: at[1],
            p99: at[2],
            max: at[3],
        }))
    }
}

/// `rows` (at most `limit + 1`, the extra one telling that there is a next page) as a page;
/// `key` gives the next page's key from the last item and its position.
fn page<T, K>(mut items: Vec<T>, limit: u32, key: impl Fn(usize, &T) -> K) -> Page<T, K> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(|last| key(items.len() - 1, last))
    } else {
        None
    };
    Page { items, next }
}

/// The smallest round bucket width, at least `wanted_ms` (100 ms, 200 ms, 500 ms, 1 s, 2 s,
/// 5 s, 10 s, 15 s, 30 s, then minutes and hours alike), that splits `span_ms` into at most
/// [`Timeline::MAX_BUCKETS`] buckets.
fn round_bucket(span_ms: u64, wanted_ms: u64) -> u64 {
    const ROUND_MS: [u64; 18] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000,
    ];
    let fits = |width_ms: u64| width_ms >= wanted_ms && span_ms / width_ms < Timeline::MAX_BUCKETS;
    ROUND_MS
        .into_iter()
        .find(|&width_ms| fits(width_ms))
        .unwrap_or_else(|| (span_ms / (Timeline::MAX_BUCKETS - 1) + 1).max(wanted_ms))
}

/// `bucket` as an index of `len` buckets: a job stamped before the run's registration or
/// after its end (clocks of other hosts) is counted in the first or last.
fn clamped(bucket: i64, len: usize) -> usize {
    usize::try_from(bucket)
        .unwrap_or(0)
        .min(len.saturating_sub(1))
}

fn add_ended(bucket: &mut TimelineBucket, state: JobState, jobs: u64) {
    match state {
        JobState::Succeeded => bucket.succeeded += jobs,
        JobState::Failed => bucket.failed += jobs,
        JobState::Canceled => bucket.canceled += jobs,
        JobState::Abandoned => bucket.abandoned += jobs,
        JobState::Queued | JobState::Running | JobState::Retrying => {}
    }
}

/// Counts in the last bucket the ended jobs that no row times: those that ended with their
/// run without ever starting, which `counts` includes and the buckets do not yet.
fn add_ended_without_row(buckets: &mut [TimelineBucket], counts: &Counts) {
    let timed = buckets
        .iter()
        .fold(TimelineBucket::default(), |sum, bucket| TimelineBucket {
            succeeded: sum.succeeded + bucket.succeeded,
            failed: sum.failed + bucket.failed,
            canceled: sum.canceled + bucket.canceled,
            abandoned: sum.abandoned + bucket.abandoned,
            ..sum
        });
    if let Some(last) = buckets.last_mut() {
        last.canceled += counts.canceled.saturating_sub(timed.canceled);
        last.abandoned += counts.abandoned.saturating_sub(timed.abandoned);
    }
}

/// Appends `rows` and the jobs without a row at `gaps`, in index order (`descending`: from
/// the highest), until `items` holds `wanted` jobs. `rows` are the first rows a filter lists
/// from where `gaps` starts, at most as many as `items` lacks: every job of the merged order
/// that `items` can still take is then among them or `gaps`.
fn merge(
    items: &mut Vec<Job>,
    rows: Vec<Job>,
    gaps: impl Iterator<Item = u64>,
    rowless: &Rowless,
    wanted: usize,
    descending: bool,
) {
    let mut rows = rows.into_iter().peekable();
    let mut gaps = gaps.peekable();
    while items.len() < wanted {
        let gap_first = match (rows.peek(), gaps.peek()) {
            (Some(row), Some(&gap)) => (gap < row.index) != descending,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let job = if gap_first {
            gaps.next().map(|index| rowless.job(index))
        } else {
            rows.next()
        };
        items.extend(job);
    }
}

/// The indexes in `from..until` that are not in `rows` (sorted, within that range).
fn gaps(from: u64, until: u64, rows: &[u64]) -> impl Iterator<Item = u64> + '_ {
    let mut next = from;
    rows.iter()
        .copied()
        .chain(std::iter::once(until))
        .flat_map(move |row| {
            let gap = next..row.min(until).max(next);
            next = next.max(row.saturating_add(1));
            gap
        })
}

/// The indexes in `from..until` that are not in `rows`, from the highest down (`rows` sorted
/// from the highest, within that range).
fn gaps_down(from: u64, until: u64, rows: &[u64]) -> impl Iterator<Item = u64> + '_ {
    let mut next = until;
    rows.iter()
        .map(|&row| Some(row))
        .chain(std::iter::once(None))
        .flat_map(move |row| {
            let low = row.map_or(from, |row| row.saturating_add(1)).max(from);
            let gap = (low..next.max(low)).rev();
            next = next.min(row.map_or(from, |row| row.max(from)));
            gap
        })
}

/// A stored job index as the databases' signed integers hold it: indexes past them are in
/// no run.
fn int(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// Job indexes `from..until` (no end: `None`), walked up or, `descending`, down.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    from: u64,
    until: Option<u64>,
    descending: bool,
}

impl Span {
    /// The indexes past `after` in `order`: all of them without it.
    fn past(after: Option<u64>, order: SortOrder) -> Self {
        match order {
            SortOrder::Asc => Self {
                from: after.map_or(0, |after| after.saturating_add(1)),
                until: None,
                descending: false,
            },
            SortOrder::Desc => Self {
                from: 0,
                until: after,
                descending: true,
            },
        }
    }

    /// The part below `jobs`, a run's job count.
    fn within(self, jobs: u64) -> Self {
        Self {
            until: Some(self.until.map_or(jobs, |until| until.min(jobs))),
            ..self
        }
    }

    fn is_empty(self) -> bool {
        self.until.is_some_and(|until| self.from >= until)
    }

    /// The part walked up to `index`, which is in it, and `index` itself.
    fn through(self, index: u64) -> Self {
        if self.descending {
            Self {
                from: index,
                ..self
            }
        } else {
            Self {
                until: Some(index.saturating_add(1)),
                ..self
            }
        }
    }

    /// The part walked after `step`, a part [`Span::through`] gave.
    fn beyond(self, step: Self) -> Self {
        if self.descending {
            Self {
                until: Some(step.from),
                ..self
            }
        } else {
            Self {
                from: step.until.unwrap_or(u64::MAX),
                ..self
            }
        }
    }

    /// Its indexes not in `rows` (which are in it, in its order), in its order. Bounded
    /// ([`Span::within`]).
    fn gaps<'a>(self, rows: &'a [u64]) -> Box<dyn Iterator<Item = u64> + Send + 'a> {
        let until = self.until.unwrap_or(self.from);
        if self.descending {
            Box::new(gaps_down(self.from, until, rows))
        } else {
            Box::new(gaps(self.from, until, rows))
        }
    }

    /// `AND` conditions keeping its indexes, and the `ORDER BY` walking them.
    fn sql(self, sql: &mut Sql<'_>) -> &'static str {
        sql.and("idx >= ?", Param::Int(Some(int(self.from))));
        if let Some(until) = self.until {
            sql.and("idx < ?", Param::Int(Some(int(until))));
        }
        if self.descending {
            " ORDER BY idx DESC"
        } else {
            " ORDER BY idx"
        }
    }
}

/// Which of a run's job rows a read takes, in which order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keyset {
    /// Those of a span of indexes, in its order.
    Index(Span),
    /// Ordered by a column, NULLs last, equal values by index; past a job's value and index.
    Sorted {
        sort: JobSort,
        order: SortOrder,
        after: Option<(Option<SortValue>, u64)>,
    },
}

impl Keyset {
    /// `AND` conditions keeping the rows past the key, and the `ORDER BY` in `dialect`.
    fn sql(self, sql: &mut Sql<'_>, dialect: Dialect) -> String {
        let (sort, order, after) = match self {
            Self::Index(span) => return span.sql(sql).to_owned(),
            Self::Sorted { sort, order, after } => (sort, order, after),
        };
        let column = match sort {
            JobSort::Duration => "duration_ms",
            JobSort::Attempts => "attempts",
            JobSort::Started => "started_ms",
            JobSort::Finished => "finished_ms",
        };
        let (past, direction) = match order {
            SortOrder::Asc => (">", "ASC"),
            SortOrder::Desc => ("<", "DESC"),
        };
        match after {
            Some((Some(value), index)) => {
                let value = sql.bind(match value {
                    SortValue::Int(value) => Param::Int(Some(value)),
                    SortValue::Float(value) => Param::Float(Some(value)),
                });
                let index = sql.bind(Param::Int(Some(int(index))));
                sql.push(&format!(
                    " AND ({column} {past} {value} OR ({column} = {value} AND idx > {index}) \
                     OR {column} IS NULL)"
                ));
            }
            Some((None, index)) => {
                sql.and(
                    &format!("{column} IS NULL AND idx > ?"),
                    Param::Int(Some(int(index))),
                );
            }
            None => {}
        }
        match dialect {
            #[cfg(feature = "mssql")]
            // SQL Server has no `NULLS LAST`.
            Dialect::SqlServer => format!(
                " ORDER BY CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, idx"
            ),
            _ => format!(" ORDER BY {column} {direction} NULLS LAST, idx"),
        }
    }
}

/// The SQL a backend speaks, where the JSON functions of payload searches differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
    #[cfg(feature = "mssql")]
    SqlServer,
}

impl Dialect {
    /// The text of the value at key `key` (a placeholder) of the JSON object in `column`, or
    /// of its `input` object: a string as it is, a number or boolean as its JSON text, NULL
    /// for anything else. The key is bound, never spliced: the JSON path is built in SQL.
    fn json_text(self, column: &str, under: Option<&str>, key: &str) -> String {
        match self {
            Self::Sqlite => {
                let under = under.map_or(String::new(), |under| format!("{under}."));
                let path = format!("('$.{under}\"' || {key} || '\"')");
                format!(
                    "CASE json_type({column}, {path}) WHEN 'text' THEN {column} ->> {path} \
                     WHEN 'integer' THEN {column} -> {path} WHEN 'real' THEN {column} -> {path} \
                     WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END"
                )
            }
            Self::Postgres => {
                let under = under.map_or(String::new(), |under| format!(" -> '{under}'"));
                format!(
                    "(SELECT CASE WHEN jsonb_typeof(v) IN ('string', 'number', 'boolean') \
                     THEN v #>> '{{}}' END FROM (SELECT CAST({column} AS jsonb){under} \
                     -> CAST({key} AS TEXT) AS v) AS payload)"
                )
            }
            #[cfg(feature = "mssql")]
            Self::SqlServer => {
                let under = under.map_or(String::new(), |under| format!("{under}."));
                format!("JSON_VALUE({column}, CONCAT(N'$.{under}\"', {key}, N'\"'))")
            }
        }
    }
}

/// `AND EXISTS` conditions of the payload searches of `filter`, through the events of each
/// job (`armada_events_by_job`); `run` is the run id's placeholder.
fn payload_sql<'a>(sql: &mut Sql<'a>, dialect: Dialect, run: &str, filter: &'a JobFilter) {
    // The input rides on each attempt's `job_started` event; outputs are stored under the
    // number of the event that carried them.
    let searches = [
        (
            filter.input.as_ref(),
            "",
            "payload_event.kind = 'job_started'",
            "payload_event.data",
            Some("input"),
        ),
        (
            filter.output.as_ref(),
            " JOIN armada_outputs payload_output ON payload_output.run_id = \
             payload_event.run_id AND payload_output.seq = payload_event.seq",
            "payload_event.kind IN ('output', 'job_succeeded')",
            "payload_output.data",
            None,
        ),
    ];
    for (search, join, kinds, column, under) in searches {
        let Some(search) = search else { continue };
        let key = sql.bind(Param::Text(Some(search.key())));
        let value = sql.bind(Param::Text(Some(search.value())));
        let text = dialect.json_text(column, under, &key);
        sql.push(&format!(
            " AND EXISTS (SELECT 1 FROM armada_events payload_event{join} WHERE \
             payload_event.run_id = {run} AND payload_event.job_idx = armada_jobs.idx AND \
             {kinds} AND {text} = {value})"
        ));
    }
}

/// `WHERE` conditions of a run's jobs list after `run_id = <first parameter>`, and the
/// `ORDER BY` of `keyset`; the caller adds its dialect's row limit.
pub(super) fn jobs_sql<'a>(
    mut sql: Sql<'a>,
    dialect: Dialect,
    run_id: &'a str,
    filter: &'a JobFilter,
    keyset: &Keyset,
) -> Sql<'a> {
    let run = sql.bind(Param::Text(Some(run_id)));
    sql.push(&format!(" WHERE run_id = {run}"));
    let order_by = keyset.sql(&mut sql, dialect);
    if !filter.states.is_empty() {
        let marks: Vec<String> = filter
            .states
            .iter()
            .map(|state| sql.bind(Param::Text(Some(state.as_str()))))
            .collect();
        sql.push(&format!(" AND status IN ({})", marks.join(", ")));
    }
    if let Some(agent) = filter.agent {
        sql.and("agent = ?", Param::Int(Some(i64::from(agent))));
    }
    if let Some(attempts) = filter.attempts {
        sql.and("attempts = ?", Param::Int(Some(i64::from(attempts))));
    }
    if let Some(error) = &filter.error {
        sql.and("error = ?", Param::Text(Some(error)));
    }
    payload_sql(&mut sql, dialect, &run, filter);
    sql.push(&order_by);
    sql
}

/// The indexes of `span` that have a job row, in its order; the caller adds its dialect's
/// row limit.
pub(super) fn job_indexes_sql<'a>(mut sql: Sql<'a>, run_id: &'a str, span: Span) -> Sql<'a> {
    let run = sql.bind(Param::Text(Some(run_id)));
    sql.push(&format!("SELECT idx FROM armada_jobs WHERE run_id = {run}"));
    let order_by = span.sql(&mut sql);
    sql.push(order_by);
    sql
}

/// What a run's jobs are counted by in [`per_bucket_sql`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Measure {
    /// When the latest attempt started, in ms.
    Started,
    /// When the job ended, in ms.
    Finished,
    /// How long the latest attempt took, in µs: integers divide alike in every dialect, where
    /// casting a fraction rounds in some and truncates in others.
    DurationMicros,
}

impl Measure {
    fn expression(self) -> &'static str {
        match self {
            Self::Started => "started_ms",
            Self::Finished => "finished_ms",
            Self::DurationMicros => "CAST(duration_ms * 1000 AS BIGINT)",
        }
    }
}

/// Counts a run's jobs per state and per `width`-wide bucket of `measure` from `origin`,
/// as rows `(bucket, status, jobs)`; `count` is the dialect's `COUNT(*)`. The bucket is
/// computed in a derived table, so that no dialect has to match a parameterised expression
/// between `SELECT` and `GROUP BY`.
pub(super) fn per_bucket_sql<'a>(
    mark: &'static str,
    count: &str,
    run_id: &'a str,
    measure: Measure,
    origin: i64,
    width: i64,
) -> Sql<'a> {
    let mut sql = Sql::new("", mark);
    let run = sql.bind(Param::Text(Some(run_id)));
    let origin = sql.bind(Param::Int(Some(origin)));
    let width = sql.bind(Param::Int(Some(width.max(1))));
    let value = measure.expression();
    sql.push(&format!(
        "SELECT bucket, status, {count} AS jobs FROM (SELECT ({value} - CAST({origin} AS BIGINT)) \
         / CAST({width} AS BIGINT) AS bucket, status FROM armada_jobs WHERE run_id = {run} \
         AND {value} IS NOT NULL) AS measured GROUP BY bucket, status"
    ));
    sql
}

/// Reads a row of [`per_bucket_sql`].
pub(super) fn bucket_from_row<R: Columns>(row: &R) -> Result<(i64, String, u64), R::Error> {
    Ok((
        row.int("bucket")?.unwrap_or_default(),
        row.required_text("status")?,
        row.u64("jobs")?,
    ))
}

/// `WHERE` conditions of a run's events list and the `ORDER BY`; the caller adds its
/// dialect's row limit.
pub(super) fn events_sql<'a>(
    mut sql: Sql<'a>,
    run_id: &'a str,
    filter: &EventFilter,
    after: u64,
    newest_first: bool,
) -> Sql<'a> {
    let run = sql.bind(Param::Text(Some(run_id)));
    sql.push(&format!(" WHERE run_id = {run}"));
    if let Some(job) = filter.job {
        sql.and("job_idx = ?", Param::Int(Some(job as i64)));
    }
    if let Some(kind) = filter.kind {
        sql.and("kind = ?", Param::Text(Some(kind.as_str())));
    }
    if let Some(agent) = filter.agent {
        sql.and("agent = ?", Param::Int(Some(i64::from(agent))));
    }
    sql.and("seq > ?", Param::Int(Some(after as i64)));
    sql.push(if newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq"
    });
    sql
}

pub(super) fn run_from_row<R: Columns>(row: &R) -> Result<Run, R::Error> {
    let status = row.required_text("status")?;
    let settings = row.required_text("settings")?;
    Ok(Run {
        id: row.required_text("id")?,
        project: row.required_text("project")?,
        status: RunState::parse(&status)
            .ok_or_else(|| R::corrupt(format!("unknown run status `{status}` in the store")))?,
        created_ms: row.u64("created_ms")?,
        finished_ms: row.opt_u64("finished_ms")?,
        agents: row.u64("agents")? as u32,
        jobs: row.u64("jobs")?,
        counts: Default::default(),
        events: row.u64("events")?,
        throughput_per_min: 0.0,
        eta_ms: None,
        tune: row.text("tune")?,
        relaunch_of: row.text("relaunch_of")?,
        settings: serde_json::from_str(&settings).unwrap_or(Value::Null),
        seen_ms: row.opt_u64("seen_ms")?,
        stalled_reason: None,
        name: row.text("name")?,
        tags: row
            .text("tags")?
            .and_then(|tags| serde_json::from_str(&tags).ok())
            .unwrap_or_default(),
    })
}

/// The jobs without a row of `run`, from its row's `jobs`, `status` and `finished_ms`.
pub(super) fn rowless_from_row<R: Columns>(row: &R, run: &RunId) -> Result<Rowless, R::Error> {
    let status = row.required_text("status")?;
    let status = RunState::parse(&status)
        .ok_or_else(|| R::corrupt(format!("unknown run status `{status}` in the store")))?;
    Ok(Rowless::new(
        run.clone(),
        row.u64("jobs")?,
        status,
        row.opt_u64("finished_ms")?,
    ))
}

pub(super) fn job_from_row<R: Columns>(row: &R) -> Result<Job, R::Error> {
    let status = row.required_text("status")?;
    Ok(Job {
        index: row.u64("idx")?,
        id: row.required_text("id")?,
        status: JobState::parse(&status)
            .ok_or_else(|| R::corrupt(format!("unknown job status `{status}` in the store")))?,
        agent: row.opt_u64("agent")?.map(|agent| agent as u32),
        attempts: row.u64("attempts")? as u32,
        started_ms: row.opt_u64("started_ms")?,
        finished_ms: row.opt_u64("finished_ms")?,
        duration_ms: row.float("duration_ms")?,
        last_event: row.text("last_event")?,
        error: row.text("error")?,
    })
}

pub(super) fn event_from_row<R: Columns>(row: &R) -> Result<Event, R::Error> {
    let kind = row.required_text("kind")?;
    let data = row.text("data")?;
    Ok(Event {
        seq: row.u64("seq")?,
        kind: serde_json::from_value::<EventKind>(Value::String(kind.clone()))
            .map_err(|_| R::corrupt(format!("unknown event kind `{kind}` in the store")))?,
        at_ms: row.u64("at_ms")?,
        agent: row.u64("agent")? as u32,
        job: row.opt_u64("job_idx")?,
        attempt: row.opt_u64("attempt")?.map(|attempt| attempt as u32),
        message: row.text("message")?,
        data: data.and_then(|data| serde_json::from_str(&data).ok()),
    })
}

pub(super) fn attachment_from_row<R: Columns>(row: &R) -> Result<AttachmentInfo, R::Error> {
    Ok(AttachmentInfo {
        seq: row.u64("seq")?,
        job: row.u64("job_idx")?,
        attempt: row.u64("attempt")? as u32,
        name: row.required_text("name")?,
        content_type: row.required_text("content_type")?,
        size: row.u64("size")?,
    })
}

pub(super) fn agent_from_row<R: Columns>(row: &R) -> Result<Agent, R::Error> {
    Ok(Agent {
        index: row.u64("idx")? as u32,
        status: row.required_text("status")?,
        seen_ms: row.opt_u64("seen_ms")?,
        started_ms: row.opt_u64("started_ms")?,
        stopped_ms: row.opt_u64("stopped_ms")?,
        error: row.text("error")?,
        succeeded: 0,
        failed: 0,
        retrying: 0,
        running_job: None,
    })
}

pub(super) fn agent_jobs_from_row<R: Columns>(row: &R) -> Result<AgentJobs, R::Error> {
    Ok(AgentJobs {
        agent: row.u64("agent")? as u32,
        status: row.required_text("status")?,
        jobs: row.u64("jobs")?,
        first: row.u64("first")?,
    })
}

pub(super) fn failure_from_row<R: Columns>(row: &R) -> Result<FailureGroup, R::Error> {
    Ok(FailureGroup {
        error: row.text("error")?.unwrap_or_default(),
        jobs: row.u64("jobs")?,
        sample_job: row.u64("sample")?,
    })
}

pub(super) fn output_from_row<R: Columns>(row: &R) -> Result<Output, R::Error> {
    let data = row.required_text("data")?;
    Ok(Output {
        seq: row.u64("seq")?,
        job: row.u64("job_idx")?,
        attempt: row.u64("attempt")? as u32,
        at_ms: row.u64("at_ms")?,
        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
    })
}

// The columns each read names, never `SELECT *`: a connection that prepared `SELECT *` before
// another process (or this one's writer) added a column gets rows one column wider than the
// statement it cached (SQLite re-prepares it; sqlx 0.9 then indexed past its columns and
// panicked), and PostgreSQL refuses such a cached plan. Named, a read keeps its width across
// migrations.

/// The columns every backend reads a run's jobs list with, in the order of `OUTPUT`/`RETURNING`
/// and `SELECT` alike.
pub(super) const JOB_COLUMNS: &str = "idx, id, status, agent, attempts, started_ms, \
                                      finished_ms, duration_ms, last_event, error";
/// The columns `run_from_row` reads.
pub(super) const RUN_COLUMNS: &str = "id, project, status, created_ms, finished_ms, agents, \
                                      jobs, events, tune, relaunch_of, settings, seen_ms, name, \
                                      tags";
/// The columns `agent_from_row` reads.
pub(super) const AGENT_COLUMNS: &str = "idx, status, seen_ms, started_ms, stopped_ms, error";
/// The columns `event_from_row` reads.
pub(super) const EVENT_COLUMNS: &str = "seq, kind, at_ms, agent, job_idx, attempt, message, data";
/// The columns `output_from_row` reads.
pub(super) const OUTPUT_COLUMNS: &str = "seq, job_idx, attempt, at_ms, data";

#[cfg(test)]
mod tests {
    use super::{gaps, gaps_down};

    #[test]
    fn gaps_down_are_the_indexes_without_rows_from_the_highest() {
        let gaps = |from, until, rows: &[u64]| gaps_down(from, until, rows).collect::<Vec<_>>();
        assert_eq!(gaps(0, 6, &[]), [5, 4, 3, 2, 1, 0]);
        assert_eq!(gaps(2, 9, &[8, 5, 3, 2]), [7, 6, 4]);
        assert_eq!(gaps(0, 3, &[2, 1, 0]), [] as [u64; 0]);
        assert_eq!(gaps(5, 5, &[]), [] as [u64; 0]);
        assert_eq!(gaps(3, 6, &[9, 4]), [5, 3]);
    }

    #[test]
    fn gaps_are_the_indexes_without_rows() {
        let gaps = |from, until, rows: &[u64]| gaps(from, until, rows).collect::<Vec<_>>();
        assert_eq!(gaps(0, 6, &[]), [0, 1, 2, 3, 4, 5]);
        assert_eq!(gaps(2, 9, &[2, 3, 5, 8]), [4, 6, 7]);
        assert_eq!(gaps(0, 3, &[0, 1, 2]), [] as [u64; 0]);
        assert_eq!(gaps(5, 5, &[]), [] as [u64; 0]);
        // A row at or past `until` (a store older than its run's count) ends the gaps there.
        assert_eq!(gaps(0, 4, &[1, 6, 7]), [0, 2, 3]);
    }
}

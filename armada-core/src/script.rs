//! The traits a project implements, and ready-made contexts for simple projects.
//!
//! An agent starts its [`AgentContext`] once (browser, proxy, identity), then for each job
//! starts a [`JobContext`] from the typed payload and runs the [`Script`] under the run's time
//! limit. Users write plain `async fn`s; the framework owns the loop, retries, timeouts and
//! shutdown.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio_util::sync::CancellationToken;

use crate::{AgentIndex, ConfigStore, EventSender, JobId, JobIndex, JobQueue, Reporter, RunId};

/// Any error, boxed: what context start and stop may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Who an agent is: its run, its index and its folders; given to the agent context's `start`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// The run the agent takes jobs from.
    pub run_id: RunId,
    /// The agent's index, `0..agents`.
    pub index: AgentIndex,
    /// Agents in the run, this one included (`run_message.agents` after any run override).
    pub agents: u32,
    /// A folder for the agent's scratch files (browser profiles); see [`scratch_dir`]. The
    /// orchestrator removes the run's scratch folders when the run ends, even those of agents
    /// that were killed.
    pub scratch_dir: PathBuf,
    /// Where failure evidence (screenshots, HTML, console logs) goes, when the run keeps it.
    pub evidence_dir: Option<PathBuf>,
}

/// The scratch folder of a run (`<temp>/armada/<run_id>`), the same in every process of the
/// machine.
pub fn scratch_dir(run: &RunId) -> PathBuf {
    std::env::temp_dir().join("armada").join(run.as_str())
}

/// Which job attempt a job context is for, and its reporting handle.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// The run the job belongs to.
    pub run_id: RunId,
    /// The job's id, the same on every attempt.
    pub id: JobId,
    /// The job's index, `0..jobs`.
    pub index: JobIndex,
    /// This attempt, from 1.
    pub attempt: u32,
    /// The last attempt that will be made.
    pub max_attempts: u32,
    /// The index of the agent running this attempt.
    pub agent: AgentIndex,
    /// Reports events of this attempt to the monitor.
    pub report: Reporter,
}

/// Resources an agent sets up once and reuses for every job: a browser, a proxy, an identity,
/// a database connection.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an agent context",
    label = "the agent of a script must implement `AgentContext`",
    note = "use `PlainAgent<Config>` for an agent that needs nothing but its typed config, \
            `BrowserAgent` (feature `browser`) for a Chromium per agent, or implement \
            `AgentContext` to set up resources of your own"
)]
pub trait AgentContext: Sized + Send + 'static {
    /// The agent's typed config: `default_agent_message` merged with its `data_agent.csv` row.
    type Config: DeserializeOwned + Send;

    /// Sets the agent up. An error is reported, and the agent's share of jobs goes to the others.
    fn start(
        agent: AgentInfo,
        config: Self::Config,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Releases what `start` set up; called once when the run ends or is canceled.
    fn stop(self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Replaces the agent's identity (proxy, fingerprint) after a [`ScriptError::identity`].
    fn rotate_identity(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Saves what shows why an attempt failed (a screenshot, the page's HTML, console
    /// messages) into `folder`, which exists; returns whether anything was saved. Called after
    /// every failed attempt, time-outs included, before the next job starts.
    fn save_evidence(
        &mut self,
        folder: &std::path::Path,
        error: &str,
    ) -> impl Future<Output = bool> + Send {
        let _ = (folder, error);
        async { false }
    }
}

/// Per-job state, built from the agent `A` and the job's typed payload before the script
/// runs. Generic over the agent so that one job context serves many: [`Job`] works with any
/// agent, a browser job only with the browser agent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job context for agents of type `{A}`",
    label = "the script's `Job` must start from its `Agent`",
    note = "`Job<Payload>` works with any agent; a job context tied to one agent, such as \
            `BrowserJob<Payload>`, needs that agent as the script's `type Agent`"
)]
pub trait JobContext<A: AgentContext>: Sized + Send {
    /// The job's typed payload: `default_job_message` merged with its `data_job.csv` row.
    type Payload: DeserializeOwned + Send;

    /// Sets the job up; counts against the job's time limit.
    fn start(
        agent: &mut A,
        job: JobInfo,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Self, ScriptError>> + Send;

    /// Called once after the attempt, whatever its outcome (except a panic or time-out, when
    /// the context is dropped instead).
    fn finish(self, outcome: &Outcome) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = outcome;
        async { Ok(()) }
    }
}

/// The automation itself: one job, with the agent's resources at hand. A plain async function
/// is a script too, through [`script_fn`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an Armada script",
    label = "implement `Script` for it, or wrap an async function with `script_fn`",
    note = "`armada::script_fn(|job: Job<Payload>| async move {{ … }})` makes a script of a \
            function"
)]
pub trait Script: Send + Sync + 'static {
    /// The agent context: [`PlainAgent`] when the script needs no resources of its own.
    type Agent: AgentContext;
    /// The job context: [`Job<Payload>`](Job) for the typed payload and the reporting handle.
    type Job: JobContext<Self::Agent>;
    /// What a successful job returns; written to the run's results.
    type Output: Serialize + Send;

    /// Runs one attempt of one job.
    fn run(
        &self,
        agent: &mut Self::Agent,
        job: &mut Self::Job,
    ) -> impl Future<Output = Result<Self::Output, ScriptError>> + Send;
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry while attempts remain; `None` uses the run's exponential backoff.
    After(Option<Duration>),
    /// The agent's identity failed (its proxy is down or banned): rotate it and retry the job
    /// at once, without counting the attempt against the script (up to a limit).
    NewIdentity,
    /// Fail the job now; it is dead-lettered with the error.
    Never,
}

/// Why an attempt failed, and whether to retry it.
///
/// `?` on any error gives a retryable `ScriptError`: most failures in web automation are
/// transient. Use [`ScriptError::fail`] for errors that another attempt cannot fix.
pub struct ScriptError {
    retry: Retry,
    error: BoxError,
}

impl ScriptError {
    /// Retry with the run's backoff while attempts remain.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self {
            retry: Retry::After(None),
            error: error.into(),
        }
    }

    /// Retry after `delay` while attempts remain.
    pub fn retry_after(error: impl Into<BoxError>, delay: Duration) -> Self {
        Self {
            retry: Retry::After(Some(delay)),
            error: error.into(),
        }
    }

    /// The agent's identity failed (its proxy is down or banned, its session was blocked):
    /// rotate it ([`AgentContext::rotate_identity`]) and retry without counting the attempt.
    pub fn identity(error: impl Into<BoxError>) -> Self {
        Self {
            retry: Retry::NewIdentity,
            error: error.into(),
        }
    }

    /// The former name of [`ScriptError::identity`].
    #[deprecated(note = "use `ScriptError::identity`: one name for a failed identity")]
    pub fn proxy(error: impl Into<BoxError>) -> Self {
        Self::identity(error)
    }

    /// Fail the job without retrying.
    pub fn fail(error: impl Into<BoxError>) -> Self {
        Self {
            retry: Retry::Never,
            error: error.into(),
        }
    }

    /// Whether and when to retry.
    pub fn retry_policy(&self) -> Retry {
        self.retry
    }

    /// The error the script failed with, as given to the constructor (`retry`, `fail`, …).
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ScriptError {
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        let mut source = self.error.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptError")
            .field("retry", &self.retry)
            .field("error", &self.error)
            .finish()
    }
}

/// How an attempt ended, as the job context's `finish` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The script returned an output.
    Succeeded,
    /// The attempt failed and the job will be retried after `delay`.
    Retrying {
        /// Why the attempt failed, as the script's error displays it.
        error: String,
        /// When the next attempt becomes available.
        delay: Duration,
    },
    /// The job failed for good: no attempt is left, or the script asked not to retry.
    Failed {
        /// Why the job failed, as recorded in its result.
        error: String,
    },
}

/// A ready-made agent context for scripts that need no resources of their own: it keeps the
/// agent's typed config (ignored by default).
#[derive(Debug)]
pub struct PlainAgent<C = IgnoredAny> {
    /// Who the agent is, as given to `start`.
    pub info: AgentInfo,
    /// The agent's merged agent message, deserialized into `C`.
    pub config: C,
}

impl<C: DeserializeOwned + Send + 'static> AgentContext for PlainAgent<C> {
    type Config = C;

    async fn start(info: AgentInfo, config: C) -> Result<Self, BoxError> {
        Ok(Self { info, config })
    }
}

/// A ready-made job context for any agent: the typed payload and the reporting handle.
pub struct Job<P> {
    /// Which attempt of which job.
    pub info: JobInfo,
    /// The job's merged message, deserialized into the script's payload type `P`.
    pub payload: P,
}

impl<P: fmt::Debug> fmt::Debug for Job<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("info", &self.info)
            .field("payload", &self.payload)
            .finish()
    }
}

impl<P> Job<P> {
    /// The reporting handle of this attempt.
    pub fn report(&self) -> &Reporter {
        &self.info.report
    }
}

impl<P: DeserializeOwned + Send, A: AgentContext> JobContext<A> for Job<P> {
    type Payload = P;

    async fn start(_agent: &mut A, info: JobInfo, payload: P) -> Result<Self, ScriptError> {
        Ok(Self { info, payload })
    }
}

/// A script made of an async function of the job (see [`script_fn`]).
pub struct ScriptFn<P, O, F> {
    run: F,
    types: PhantomData<fn(P) -> O>,
}

impl<P, O, F> fmt::Debug for ScriptFn<P, O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptFn").finish_non_exhaustive()
    }
}

/// A script of an async function or closure that takes the job, owned, and returns its
/// output: the smallest script there is. Its agents are [`PlainAgent`]s.
///
/// ```
/// use armada_core::{Job, ScriptError, script_fn};
///
/// #[derive(serde::Deserialize)]
/// struct Page { url: String }
///
/// let script = script_fn(|job: Job<Page>| async move {
///     job.report().info(format!("visiting {}", job.payload.url));
///     Ok::<_, ScriptError>(job.payload.url.len())
/// });
/// # let _ = script;
/// ```
pub fn script_fn<P, O, F, Fut>(run: F) -> ScriptFn<P, O, F>
where
    F: Fn(Job<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ScriptError>> + Send,
    P: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    ScriptFn {
        run,
        types: PhantomData,
    }
}

/// The job of a [`ScriptFn`]: handed over, owned, to the function on its attempt.
pub struct OwnedJob<P>(Option<Job<P>>);

impl<P: DeserializeOwned + Send> JobContext<PlainAgent> for OwnedJob<P> {
    type Payload = P;

    async fn start(
        _agent: &mut PlainAgent,
        info: JobInfo,
        payload: P,
    ) -> Result<Self, ScriptError> {
        Ok(Self(Some(Job { info, payload })))
    }
}

impl<P, O, F, Fut> Script for ScriptFn<P, O, F>
where
    F: Fn(Job<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ScriptError>> + Send,
    P: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    type Agent = PlainAgent;
    type Job = OwnedJob<P>;
    type Output = O;

    async fn run(&self, _agent: &mut PlainAgent, job: &mut OwnedJob<P>) -> Result<O, ScriptError> {
        // Each attempt starts a context of its own, so the job is there to take exactly once.
        let job = job.0.take().ok_or_else(|| {
            ScriptError::fail("armada ran an attempt's job twice: this is a bug in armada")
        })?;
        (self.run)(job).await
    }
}

/// What an agent needs to run: which run and index, and the run's backends.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The run whose jobs the agent takes.
    pub run_id: RunId,
    /// The agent's index, `0..agents`.
    pub index: AgentIndex,
    /// Where its config and the run's state are.
    pub store: ConfigStore,
    /// Where the run's jobs are.
    pub queue: JobQueue,
    /// Sends the agent's events to the run's monitor client.
    pub events: EventSender,
    /// Cancelled when the agent must stop taking jobs (Ctrl-C, SIGTERM).
    pub shutdown: CancellationToken,
    /// Where failure evidence goes, when the run keeps it.
    pub evidence_dir: Option<PathBuf>,
    /// What the agent does once a script held its thread past the job time limit.
    pub when_blocked: WhenBlocked,
}

/// What an agent does after its script held a thread past the job time limit (a blocking call
/// or a loop that never awaits), once that attempt is settled as timed out. A thread that never
/// returns cannot be taken back, so the agent that owns it is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenBlocked {
    /// Abandon the agent's task and start a fresh agent in its place: for agents that are
    /// tasks of a process that goes on.
    #[default]
    StartAnother,
    /// End with [`AgentExit::Blocked`], so that the process running the agent exits (freeing
    /// the thread) and its launcher starts it again.
    Exit,
}

/// How an agent ended: cleanly, without starting, or abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentExit {
    /// The run ended (completed or canceled) and the agent stopped cleanly.
    Finished {
        /// Attempts this agent ran.
        attempts: u64,
    },
    /// The agent's context failed to start; it ran no job.
    StartFailed {
        /// Why the context did not start: the error its `start` returned.
        error: String,
    },
    /// The agent's process ended abnormally (crash, signal, non-zero exit).
    Died {
        /// How the process ended (a crash, a signal or an exit code), as text.
        error: String,
    },
    /// Its script held a thread past the job time limit; that attempt was settled as timed
    /// out. Only with [`WhenBlocked::Exit`]: the process must end and be started again.
    Blocked {
        /// What the script was doing, and for how long.
        error: String,
    },
}

impl AgentExit {
    /// The exit code of an agent process that ended with [`AgentExit::Blocked`]
    /// (`sysexits.h`'s `EX_TEMPFAIL`): its launcher starts it again without counting a crash.
    pub const BLOCKED_EXIT_CODE: u8 = 75;
}

/// Runs one agent of a script. Implemented by `armada-agent` for every [`Script`]; used by the
/// orchestrator's launchers, which do not know the script's types.
pub trait AgentRunner: Send + Sync + 'static {
    /// Runs the agent until its run ends or `spec.shutdown` is cancelled.
    fn run_agent(&self, spec: AgentSpec) -> BoxFuture<'static, crate::Result<AgentExit>>;
}

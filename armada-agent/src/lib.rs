//! Armada's agent runtime: one agent of one run, from start to shutdown.
//!
//! This crate owns the agent's lifecycle: read its config once, start the script's
//! [`AgentContext`] once, then take jobs one at a time (prefetch 1) and for each start the
//! [`JobContext`], run the [`Script`] under the run's time limit, record the outcome, and only
//! then acknowledge the job. Failed attempts are retried with exponential backoff until the
//! run's attempt limit; then the job is recorded as failed and dead-lettered. A panic in a
//! script fails that job, not the agent. The loop ends when the run's queue is deleted (the run
//! is complete or canceled) or the agent is told to shut down; then the context is stopped.
//!
//! [`ScriptAgent`] adapts any [`Script`] to the [`AgentRunner`] seam the orchestrator's
//! launchers use, so the orchestrator never needs the script's types. It also owns the threads
//! scripts run on, apart from the caller's runtime, and a watchdog per agent on the caller's:
//! an attempt whose script holds its thread past the time limit (a blocking call, a loop that
//! never awaits) is settled as timed out there, and its agent replaced
//! ([`AgentSpec::when_blocked`](armada_core::AgentSpec::when_blocked)).
//!
//! # Features
//! - `browser`: [`browser::BrowserAgent`], a Chromium per agent with its proxy and identity,
//!   and [`browser::BrowserJob`], a page per job.

#[cfg(feature = "browser")]
pub mod browser;

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use armada_core::backend::{Consumer, Delivery, Recorded, RunStatus};
use armada_core::wire::{
    EventJob, EventKind, HEARTBEAT_INTERVAL, JobLimits, JobMessage, JobResult, JobStatus,
    WIRE_VERSION,
};
use armada_core::{
    AgentContext, AgentExit, AgentInfo, AgentRunner, AgentSpec, JobContext, JobInfo, Outcome,
    Reporter, Result, Retry, Script, ScriptError, WhenBlocked,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;

/// Runs agents of the script `S`.
///
/// The agents' scripts run on threads of their own (a tokio runtime this value owns, started
/// with the first agent), apart from the caller's runtime, where each agent's watchdog runs
/// with everything else the caller does (progress, monitor, dashboard, Ctrl-C): a script that
/// blocks or spins its thread can slow its own agent only. An attempt that holds its thread
/// past the job time limit is settled as timed out by the watchdog, and its agent replaced as
/// [`AgentSpec::when_blocked`] says.
#[derive(Debug)]
pub struct ScriptAgent<S> {
    script: Arc<S>,
    threads: ScriptThreads,
}

impl<S: Script> ScriptAgent<S> {
    /// Wraps the script.
    pub fn new(script: S) -> Self {
        Self {
            script: Arc::new(script),
            threads: ScriptThreads::default(),
        }
    }
}

impl<S: Script> AgentRunner for ScriptAgent<S> {
    fn run_agent(&self, spec: AgentSpec) -> BoxFuture<'static, Result<AgentExit>> {
        let script = Arc::clone(&self.script);
        let threads = self.threads.handle();
        async move { supervise(script, threads?, spec).await }.boxed()
    }
}

/// The runtime agents' scripts run on, started on first use, and shared with each agent's
/// watchdog: it lasts while the runner or any of its agents does.
#[derive(Debug, Default)]
struct ScriptThreads(std::sync::Mutex<Option<Arc<OwnedRuntime>>>);

impl ScriptThreads {
    fn handle(&self) -> Result<Arc<OwnedRuntime>> {
        let mut runtime = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = &*runtime {
            return Ok(Arc::clone(runtime));
        }
        let started = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("armada-script")
            .build()
            .map_err(armada_core::Error::ScriptThreads)?;
        Ok(Arc::clone(
            runtime.insert(Arc::new(OwnedRuntime(Some(started)))),
        ))
    }
}

/// A runtime that stops without waiting when dropped: a thread a script holds forever must not
/// hold its owner too, and dropping it from async code is allowed.
#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0
            .as_ref()
            .expect("a runtime is only taken when dropped")
            .spawn(future)
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// How often an idle agent checks that its run is still going.
const RUN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

type Payload<S> = <<S as Script>::Job as JobContext<<S as Script>::Agent>>::Payload;

/// Runs one agent until its run ends or `spec.shutdown` is cancelled: its life on the script
/// threads, watched from the caller's runtime, and a fresh life whenever a script held its
/// thread past the time limit.
///
/// Errors are backend failures (the store or queue could not be reached); a context that fails
/// to start is not an error but [`AgentExit::StartFailed`].
async fn supervise<S: Script>(
    script: Arc<S>,
    threads: Arc<OwnedRuntime>,
    spec: AgentSpec,
) -> Result<AgentExit> {
    // An agent restarted after its run ended (its process died with the run's last job) has
    // nothing to do, and its config is gone.
    if spec.store.progress(&spec.run_id).await?.status != RunStatus::Running {
        // If the agent that recorded the last result died before ending the run, this one
        // ends it.
        end_if_completed(&spec).await;
        return Ok(AgentExit::Finished { attempts: 0 });
    }
    // Beats from this runtime: an agent whose script holds its thread is alive, and its
    // watchdog will deal with the attempt.
    let _heartbeat = Heartbeat::start(&spec);
    let mut earlier_attempts = 0;
    loop {
        let watch = Arc::new(Watch::default());
        let mut life = AbortOnDropHandle::new(threads.spawn(live(
            Arc::clone(&script),
            spec.clone(),
            Arc::clone(&watch),
        )));
        let blocked = match watch.life(&mut life).await {
            LifeEnd::Ended(Ok(Ok(AgentExit::Finished { attempts }))) => {
                return Ok(AgentExit::Finished {
                    attempts: earlier_attempts + attempts,
                });
            }
            LifeEnd::Ended(Ok(exit)) => return exit,
            LifeEnd::Ended(Err(failed)) => {
                return Ok(AgentExit::Died {
                    error: format!("agent {}'s task ended: {failed}", spec.index),
                });
            }
            LifeEnd::Blocked(blocked) => blocked,
        };
        // Left to run: should its thread come back, it stops its context and ends.
        drop(life.detach());
        earlier_attempts += watch.attempts();
        let error = settle_blocked(&spec, *blocked).await?;
        spec.events
            .agent_event(spec.index, EventKind::AgentStopped, Some(error.clone()));
        if spec.when_blocked == WhenBlocked::Exit {
            return Ok(AgentExit::Blocked { error });
        }
        tracing::warn!(run = %spec.run_id, agent = spec.index, "{error}");
    }
}

/// One life of an agent, on the script threads: its context started, its jobs taken until
/// the run ends, its context stopped. Abandoned if a script holds its thread too long.
async fn live<S: Script>(
    script: Arc<S>,
    mut spec: AgentSpec,
    watch: Arc<Watch>,
) -> Result<AgentExit> {
    // Every job reads and writes the store: its connection is driven from these threads.
    spec.store = spec.store.connect_here().await?;
    spec.events
        .agent_event(spec.index, EventKind::AgentStarting, None);
    let record = spec.store.agent_config(&spec.run_id, spec.index).await?;
    let info = AgentInfo {
        run_id: spec.run_id.clone(),
        index: spec.index,
        agents: record.agents,
        scratch_dir: armada_core::scratch_dir(&spec.run_id).join(format!("agent-{}", spec.index)),
        evidence_dir: spec.evidence_dir.clone(),
    };
    let started = match <S::Agent as AgentContext>::Config::deserialize(&record.config) {
        Ok(config) => AssertUnwindSafe(S::Agent::start(info, config))
            .catch_unwind()
            .await
            .map_err(|panic| format!("panicked: {}", panic_message(&*panic)))
            .and_then(|started| started.map_err(|error| error.to_string())),
        Err(error) => Err(format!(
            "its config does not match the agent context's config type: {error}"
        )),
    };
    let mut agent = match started {
        Ok(agent) => agent,
        Err(error) => {
            let error = format!("agent {} could not start: {error}", spec.index);
            tracing::error!(run = %spec.run_id, agent = spec.index, "{error}");
            spec.events
                .agent_event(spec.index, EventKind::AgentStartFailed, Some(error.clone()));
            return Ok(AgentExit::StartFailed { error });
        }
    };
    spec.events
        .agent_event(spec.index, EventKind::AgentStarted, None);
    tracing::debug!(run = %spec.run_id, agent = spec.index, "agent started");

    let loop_result = job_loop(&*script, &mut agent, &spec, &record.limits, &watch).await;
    if let Ok(Taken::Abandoned) = loop_result {
        // Its thread came back after the watchdog replaced it: the context still holds what it
        // started (a browser), and nobody else will stop it.
        let _ = AssertUnwindSafe(agent.stop()).catch_unwind().await;
        return Ok(AgentExit::Finished {
            attempts: watch.attempts(),
        });
    }

    match AssertUnwindSafe(agent.stop()).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(run = %spec.run_id, agent = spec.index, %error, "agent context stop failed");
        }
        Err(panic) => {
            tracing::warn!(
                run = %spec.run_id,
                agent = spec.index,
                "agent context stop panicked: {}",
                panic_message(&*panic)
            );
        }
    }
    spec.events
        .agent_event(spec.index, EventKind::AgentStopped, None);
    // The context removed its own scratch files; the run's folder goes with its last agent
    // on this host (removing a folder that still holds another agent's files fails).
    let _ = std::fs::remove_dir(armada_core::scratch_dir(&spec.run_id));
    loop_result?;
    Ok(AgentExit::Finished {
        attempts: watch.attempts(),
    })
}

/// Tells the monitor every [`HEARTBEAT_INTERVAL`] that the agent is alive, also while a job
/// runs, for as long as the agent's `run` holds it: the task stops when it is dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(spec: &AgentSpec) -> Self {
        let (events, index) = (spec.events.clone(), spec.index);
        Self(tokio::spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                events.agent_event(index, EventKind::Heartbeat, None);
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn job_loop<S: Script>(
    script: &S,
    agent: &mut S::Agent,
    spec: &AgentSpec,
    limits: &JobLimits,
    watch: &Watch,
) -> Result<Taken> {
    let consumer = spec.queue.consume(&spec.run_id, 1).await?;
    let life = Life {
        script,
        spec,
        limits,
        watch,
    };
    let (taken, consumer) = life.take_jobs(agent, consumer).await;
    // An abandoned life's consumer went to its watchdog.
    if let Some(consumer) = consumer {
        consumer.close().await;
        end_if_completed(spec).await;
    }
    taken
}

/// Why a life stopped taking jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// The run ended, or the agent was told to stop.
    AllItCould,
    /// Its watchdog settled an attempt whose script held the thread, and replaced the agent.
    Abandoned,
}

/// The agent that recorded the last result ends the run; if it died or failed doing so,
/// whichever agent sees the completed run next does. Best effort: a follower ends it too.
async fn end_if_completed(spec: &AgentSpec) {
    let store = &spec.store;
    let completed = matches!(
        store.progress(&spec.run_id).await,
        Ok(progress) if progress.status == RunStatus::Completed
    );
    if completed && matches!(store.finished(&spec.run_id).await, Ok(None)) {
        finish_completed_run(spec).await;
    }
}

/// Ends a run whose last result this agent saw recorded: its queues, its finished record, and
/// the monitor, which learns it from this agent's events.
async fn finish_completed_run(spec: &AgentSpec) {
    match armada_core::backend::finish_run(
        &spec.store,
        &spec.queue,
        &spec.run_id,
        RunStatus::Completed,
    )
    .await
    {
        // Exactly one process ends the run, and only it tells the monitor.
        Ok(end) if end.ended_here => {
            tracing::debug!(run = %spec.run_id, agent = spec.index, "the run is complete");
            spec.events
                .agent_event(spec.index, EventKind::RunCompleted, None);
        }
        Ok(_) => {}
        // Whoever follows or attaches to the run finishes it too.
        Err(error) => {
            tracing::warn!(run = %spec.run_id, agent = spec.index, %error, "cannot end the completed run");
        }
    }
}

/// What one life's job loop works with.
struct Life<'a, S> {
    script: &'a S,
    spec: &'a AgentSpec,
    limits: &'a JobLimits,
    watch: &'a Watch,
}

impl<S: Script> Life<'_, S> {
    /// Takes and runs jobs until the run ends or the agent is told to stop; gives the consumer
    /// back unless the watchdog took it.
    async fn take_jobs(
        &self,
        agent: &mut S::Agent,
        mut consumer: Consumer,
    ) -> (Result<Taken>, Option<Consumer>) {
        let spec = self.spec;
        // The queue's deletion normally ends the loop; this check also ends it when the run ended
        // or was canceled without the queue being deleted (its orchestrator died).
        let mut run_check = tokio::time::interval(RUN_CHECK_INTERVAL);
        run_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let delivery = tokio::select! {
                biased;
                () = spec.shutdown.cancelled() => break,
                next = consumer.next() => match next {
                    Ok(Some(delivery)) => delivery,
                    Ok(None) => break,
                    Err(error) => return (Err(error), Some(consumer)),
                },
                _ = run_check.tick() => {
                    match spec.store.progress(&spec.run_id).await {
                        Ok(progress) if progress.status == RunStatus::Running
                            && progress.terminal < progress.jobs => continue,
                        Ok(_) | Err(armada_core::Error::RunNotFound(_)) => break,
                        Err(error) => return (Err(error), Some(consumer)),
                    }
                }
            };
            self.watch.attempts.fetch_add(1, Ordering::Relaxed);
            match self.run_job(agent, consumer, delivery).await {
                (Ok(()), Some(back)) => consumer = back,
                (Ok(()), None) => return (Ok(Taken::Abandoned), None),
                (Err(error), back) => return (Err(error), back),
            }
        }
        (Ok(Taken::AllItCould), Some(consumer))
    }

    /// Runs one delivered job to its settled delivery; gives the consumer back unless the watchdog
    /// took the attempt over.
    async fn run_job(
        &self,
        agent: &mut S::Agent,
        consumer: Consumer,
        delivery: Delivery,
    ) -> (Result<()>, Option<Consumer>) {
        let (spec, limits) = (self.spec, self.limits);
        let message = delivery.message();
        let index = message.index;
        let mut state = AttemptState {
            attempt: message.attempt,
            identity_retries: message.identity_retries,
        };
        if delivery.redeliveries() > 0 {
            // Its last agent (or the broker's channel) died with it: it may be recorded already,
            // and if not, the lost attempt counts.
            let counted = async {
                if spec.store.is_recorded(&spec.run_id, index).await? {
                    return Ok(None);
                }
                Ok(Some(
                    spec.store.count_redelivery(&spec.run_id, index).await?,
                ))
            };
            let settled = match counted.await {
                Err(error) => Err(error),
                Ok(None) => delivery.ack().await,
                Ok(Some(deaths)) => {
                    state.attempt = state.attempt.saturating_add(deaths);
                    if state.attempt > limits.max_attempts {
                        fail_poison_job(delivery, spec, state.attempt.saturating_sub(1), deaths)
                            .await
                    } else {
                        return self.run_attempt(agent, consumer, delivery, state).await;
                    }
                }
            };
            return (settled, Some(consumer));
        }
        self.run_attempt(agent, consumer, delivery, state).await
    }

    /// One attempt, watched: the delivery and the consumer wait in the watch while the script runs.
    async fn run_attempt(
        &self,
        agent: &mut S::Agent,
        consumer: Consumer,
        delivery: Delivery,
        state: AttemptState,
    ) -> (Result<()>, Option<Consumer>) {
        let (spec, limits, watch) = (self.spec, self.limits, self.watch);
        let attempt = JobAttempt::start(spec, limits, delivery.message(), state);
        let payload = Arc::clone(&delivery.message().payload);
        let started = Instant::now();
        watch.begin(Running {
            consumer,
            delivery,
            job: attempt.job,
            state,
            limits: *limits,
            report: attempt.report.clone(),
            started,
        });
        let verdict = attempt.run(self.script, agent, payload.get()).await;
        let Some(running) = watch.end() else {
            return (Ok(()), None);
        };
        let Running {
            consumer, delivery, ..
        } = running;
        let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
        let evidence = attempt.keep_evidence(agent, &verdict).await;
        if matches!(verdict, Verdict::Elsewhere { .. })
            && let Err(error) = agent.rotate_identity().await
        {
            tracing::warn!(agent = spec.index, %error, "rotating the agent's identity failed");
        }
        let settled = attempt
            .settle(delivery, verdict, duration_ms, evidence)
            .await;
        (settled, Some(consumer))
    }
}

/// How often a watchdog looks at its agent's attempt.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long past its time limit an attempt may go before its script is taken to hold its
/// thread: the attempt's own timer, on the script threads, fires at the limit unless it cannot.
const BLOCKED_AFTER: Duration = Duration::from_secs(2);

/// One life's running attempt, where its watchdog can reach it: while the script runs, the
/// delivery and the consumer are here, so that a watchdog that finds the attempt overdue can
/// settle it and stop the consumer without the life.
#[derive(Default)]
struct Watch {
    running: std::sync::Mutex<Option<Running>>,
    /// Attempts this life started.
    attempts: AtomicU64,
}

/// An attempt as its watchdog holds it.
struct Running {
    consumer: Consumer,
    delivery: Delivery,
    job: EventJob,
    state: AttemptState,
    limits: JobLimits,
    report: Reporter,
    started: Instant,
}

/// How a watched life ended.
enum LifeEnd {
    Ended(std::result::Result<Result<AgentExit>, tokio::task::JoinError>),
    /// Its script held a thread past the time limit; here is the attempt.
    Blocked(Box<Running>),
}

impl Watch {
    fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, running: Running) {
        *self.slot() = Some(running);
    }

    /// The attempt back from the watch; `None` once the watchdog took it over.
    fn end(&self) -> Option<Running> {
        self.slot().take()
    }

    /// Waits for the life to end, or for its attempt to overrun its limit by
    /// [`BLOCKED_AFTER`], whichever comes first.
    async fn life(&self, life: &mut AbortOnDropHandle<Result<AgentExit>>) -> LifeEnd {
        let mut look = tokio::time::interval(WATCH_INTERVAL);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ended = &mut *life => return LifeEnd::Ended(ended),
                _ = look.tick() => {
                    let mut slot = self.slot();
                    let overdue = slot.as_ref().is_some_and(|running| {
                        running.started.elapsed() > running.limits.job_timeout() + BLOCKED_AFTER
                    });
                    if overdue && let Some(running) = slot.take() {
                        return LifeEnd::Blocked(Box::new(running));
                    }
                }
            }
        }
    }
}

/// Settles an attempt whose script held its thread past the time limit as timed out, from the
/// watchdog's runtime; returns what happened, in words.
async fn settle_blocked(spec: &AgentSpec, running: Running) -> Result<String> {
    let Running {
        mut consumer,
        delivery,
        job,
        state,
        limits,
        report,
        started,
    } = running;
    // Settling frees the consumer's prefetch: no job may go to a consumer nobody reads.
    consumer.stop_taking().await;
    let held = started.elapsed();
    let error = format!(
        "timed out after {:.1}s (job_timeout_secs); the script held its thread for {:.1}s \
         without yielding (a blocking call or a busy loop), so agent {} was replaced: run \
         blocking work with tokio::task::spawn_blocking",
        limits.job_timeout().as_secs_f64(),
        held.as_secs_f64(),
        spec.index,
    );
    let verdict = Verdict::from_result(Err(ScriptError::retry(error.clone())), state, &limits);
    let attempt = JobAttempt {
        spec,
        limits: &limits,
        job,
        state,
        report,
    };
    let duration_ms = held.as_micros() as f64 / 1000.0;
    let settled = attempt.settle(delivery, verdict, duration_ms, None).await;
    consumer.close().await;
    settled?;
    tracing::warn!(run = %spec.run_id, agent = spec.index, job = job.index, "{error}");
    Ok(error)
}

/// Identity failures (`ScriptError::identity`) retried without counting before they count.
const MAX_IDENTITY_RETRIES: u32 = 10;
/// How long saving failure evidence may take.
const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// What to do with a job after one attempt.
enum Verdict {
    Succeeded(Value),
    Retry {
        error: String,
        delay: Duration,
    },
    /// Rotate the agent's identity and retry without counting the attempt.
    Elsewhere {
        error: String,
    },
    Fail {
        error: String,
    },
}

/// Where an attempt stands, for deciding what follows it.
#[derive(Clone, Copy)]
struct AttemptState {
    attempt: u32,
    identity_retries: u32,
}

impl Verdict {
    fn from_result(
        result: Result<Value, ScriptError>,
        state: AttemptState,
        limits: &JobLimits,
    ) -> Self {
        let attempt = state.attempt;
        match result {
            Ok(output) => Self::Succeeded(output),
            Err(error) => {
                let message = error.to_string();
                match error.retry_policy() {
                    Retry::NewIdentity if state.identity_retries < MAX_IDENTITY_RETRIES => {
                        Self::Elsewhere { error: message }
                    }
                    // Out of identity retries: it counts like any retryable failure.
                    Retry::NewIdentity | Retry::After(_) if attempt < limits.max_attempts => {
                        Self::Retry {
                            error: message,
                            delay: match error.retry_policy() {
                                Retry::After(Some(delay)) => delay,
                                _ => limits.retry_delay(attempt.saturating_add(1)),
                            },
                        }
                    }
                    Retry::NewIdentity | Retry::After(_) => Self::Fail {
                        error: format!("{message} (after {attempt} attempts)"),
                    },
                    Retry::Never => Self::Fail { error: message },
                }
            }
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Self::Succeeded(_) => None,
            Self::Retry { error, .. } | Self::Elsewhere { error } | Self::Fail { error } => {
                Some(error)
            }
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Self::Succeeded(_) => Outcome::Succeeded,
            Self::Retry { error, delay } => Outcome::Retrying {
                error: error.clone(),
                delay: *delay,
            },
            Self::Elsewhere { error } => Outcome::Retrying {
                error: error.clone(),
                delay: Duration::ZERO,
            },
            Self::Fail { error } => Outcome::Failed {
                error: error.clone(),
            },
        }
    }
}

/// One attempt at a job, from its start event to its settled delivery.
struct JobAttempt<'a> {
    spec: &'a AgentSpec,
    limits: &'a JobLimits,
    job: EventJob,
    state: AttemptState,
    report: Reporter,
}

impl<'a> JobAttempt<'a> {
    fn start(
        spec: &'a AgentSpec,
        limits: &'a JobLimits,
        message: &JobMessage,
        state: AttemptState,
    ) -> Self {
        let job = EventJob {
            id: message.job_id,
            index: message.index,
            attempt: state.attempt,
        };
        let report = Reporter::new(spec.events.clone(), spec.index, job);
        report.job_started(Arc::clone(&message.payload));
        Self {
            spec,
            limits,
            job,
            state,
            report,
        }
    }

    /// A payload the script cannot read fails the job at once: no attempt could read it.
    async fn run<S: Script>(&self, script: &S, agent: &mut S::Agent, payload: &str) -> Verdict {
        let payload = match serde_json::from_str::<Payload<S>>(payload) {
            Ok(payload) => payload,
            Err(error) => {
                return Verdict::Fail {
                    error: format!(
                        "the job message does not match the script's payload type: {error}"
                    ),
                };
            }
        };
        let info = JobInfo {
            run_id: self.spec.run_id.clone(),
            id: self.job.id,
            index: self.job.index,
            attempt: self.job.attempt,
            max_attempts: self.limits.max_attempts,
            agent: self.spec.index,
            report: self.report.clone(),
        };
        self.within_limits(attempt_job(
            script,
            agent,
            info,
            payload,
            self.state,
            self.limits,
        ))
        .await
    }

    /// A script that panics fails its job, not the agent; one that overruns the run's time
    /// limit is retried like any retryable failure.
    async fn within_limits(&self, attempt: impl Future<Output = Verdict>) -> Verdict {
        let job_timeout = self.limits.job_timeout();
        match tokio::time::timeout(job_timeout, AssertUnwindSafe(attempt).catch_unwind()).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(panic)) => Verdict::Fail {
                error: format!("the script panicked: {}", panic_message(&*panic)),
            },
            Err(_) => Verdict::from_result(
                Err(ScriptError::retry(format!(
                    "timed out after {:.1}s (job_timeout_secs)",
                    job_timeout.as_secs_f64()
                ))),
                self.state,
                self.limits,
            ),
        }
    }

    /// Saves the evidence of a failed attempt and sends it to the monitor; returns its folder.
    async fn keep_evidence<A: AgentContext>(
        &self,
        agent: &mut A,
        verdict: &Verdict,
    ) -> Option<String> {
        let error = verdict.error()?;
        let folder =
            save_evidence(agent, self.spec, self.job.index, self.job.attempt, error).await?;
        attach_evidence(&self.report, Path::new(&folder));
        Some(folder)
    }

    /// Reports the verdict, then records the result or the retry before settling the delivery:
    /// a job leaves the queue only once its outcome is stored. An identity retry's new identity
    /// is the caller's to make, before.
    async fn settle(
        self,
        delivery: Delivery,
        verdict: Verdict,
        duration_ms: f64,
        evidence: Option<String>,
    ) -> Result<()> {
        let spec = self.spec;
        let result = |status, output, error| JobResult {
            v: WIRE_VERSION,
            index: self.job.index,
            id: self.job.id,
            status,
            attempts: self.job.attempt,
            agent: Some(spec.index),
            duration_ms,
            output,
            error,
            evidence: evidence.clone(),
        };
        match verdict {
            Verdict::Succeeded(output) => {
                let data = serde_json::json!({ "duration_ms": duration_ms, "output": output });
                self.report.event(EventKind::JobSucceeded, None, Some(data));
                let result = result(JobStatus::Succeeded, Some(output), None);
                record(spec, result, delivery, Delivery::ack).await
            }
            Verdict::Retry { error, delay } => {
                let data = serde_json::json!({
                    "delay_ms": delay.as_millis() as u64,
                    "duration_ms": duration_ms,
                });
                self.report
                    .event(EventKind::Retrying, Some(error), Some(data));
                spec.store.record_retry(&spec.run_id).await?;
                delivery
                    .retry(self.job.attempt.saturating_add(1), delay)
                    .await
            }
            Verdict::Elsewhere { error } => {
                let data = serde_json::json!({
                    "identity_retry": self.state.identity_retries.saturating_add(1),
                    "duration_ms": duration_ms,
                });
                self.report
                    .event(EventKind::Retrying, Some(error), Some(data));
                spec.store.record_retry(&spec.run_id).await?;
                delivery.retry_new_identity().await
            }
            Verdict::Fail { error } => {
                let timing = serde_json::json!({ "duration_ms": duration_ms });
                self.report
                    .event(EventKind::JobFailed, Some(error.clone()), Some(timing));
                let result = result(JobStatus::Failed, None, Some(error.clone()));
                record(spec, result, delivery, |delivery| {
                    delivery.dead_letter(error)
                })
                .await
            }
        }
    }
}

/// Fails a job whose attempts ran out with the agents that ran it (a job that aborts or
/// exhausts its agent's process): it is not run again, so it cannot take every agent down.
async fn fail_poison_job(
    delivery: Delivery,
    spec: &AgentSpec,
    attempts: u32,
    deaths: u32,
) -> Result<()> {
    let message = delivery.message();
    let times = if deaths == 1 {
        "once".to_owned()
    } else {
        format!("{deaths} times")
    };
    let error = format!("the agent died during this job {times}");
    tracing::warn!(run = %spec.run_id, job = message.index, "{error}");
    let report = Reporter::new(
        spec.events.clone(),
        spec.index,
        EventJob {
            id: message.job_id,
            index: message.index,
            attempt: attempts,
        },
    );
    report.event(EventKind::JobFailed, Some(error.clone()), None);
    let result = JobResult {
        v: WIRE_VERSION,
        index: message.index,
        id: message.job_id,
        status: JobStatus::Failed,
        attempts,
        agent: Some(spec.index),
        duration_ms: 0.0,
        output: None,
        error: Some(error.clone()),
        evidence: None,
    };
    record(spec, result, delivery, |delivery| {
        delivery.dead_letter(error)
    })
    .await
}

/// Records a job's terminal result, then settles its delivery; the agent whose result was the
/// run's last ends the run.
async fn record<F>(
    spec: &AgentSpec,
    result: JobResult,
    delivery: Delivery,
    settle: impl FnOnce(Delivery) -> F,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let result = without_secrets(result);
    let recorded = spec.store.record_result(&spec.run_id, result).await?;
    let settled = settle(delivery).await;
    // The run ends whether or not the settle went through: its result is recorded.
    if recorded == Recorded::LastOfRun {
        finish_completed_run(spec).await;
    }
    settled
}

/// The result as the run's results show it: an output or error that holds a
/// [`Secret`](armada_core::Secret) of this agent's config shows `***` instead.
fn without_secrets(mut result: JobResult) -> JobResult {
    if let Some(output) = &mut result.output {
        armada_core::redact_secrets_in(output);
    }
    if let Some(error) = &mut result.error
        && let std::borrow::Cow::Owned(hidden) = armada_core::redact_secrets(error)
    {
        *error = hidden;
    }
    result
}

/// Asks the agent context for evidence of a failed attempt; returns the folder when it saved
/// any. Bounded in time: a wedged browser must not hold the agent.
async fn save_evidence<A: AgentContext>(
    agent: &mut A,
    spec: &AgentSpec,
    index: u64,
    attempt: u32,
    error: &str,
) -> Option<String> {
    let folder = spec
        .evidence_dir
        .as_ref()?
        .join(format!("job-{index}-attempt-{attempt}"));
    if let Err(error) = std::fs::create_dir_all(&folder) {
        tracing::warn!(folder = %folder.display(), %error, "cannot create the evidence folder");
        return None;
    }
    let saved = tokio::time::timeout(EVIDENCE_TIMEOUT, agent.save_evidence(&folder, error))
        .await
        .unwrap_or(false);
    if saved {
        Some(folder.display().to_string())
    } else {
        // Nothing was saved: leave no empty folder behind.
        let _ = std::fs::remove_dir_all(&folder);
        None
    }
}

/// Sends the evidence files to the monitor, so that the dashboard shows them wherever the
/// agent ran.
fn attach_evidence(report: &Reporter, folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let content_type = match path.extension().and_then(|extension| extension.to_str()) {
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            Some("txt" | "log") => "text/plain; charset=utf-8",
            _ => "application/octet-stream",
        };
        match std::fs::read(&path) {
            Ok(bytes) => report.attach(&name, content_type, &bytes),
            Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read evidence"),
        }
    }
}

/// Starts the job context, runs the script, and lets the context see the outcome.
async fn attempt_job<S: Script>(
    script: &S,
    agent: &mut S::Agent,
    info: JobInfo,
    payload: Payload<S>,
    state: AttemptState,
    limits: &JobLimits,
) -> Verdict {
    let report = info.report.clone();
    let mut job = match S::Job::start(agent, info, payload).await {
        Ok(job) => job,
        Err(error) => return Verdict::from_result(Err(error), state, limits),
    };
    let result = script.run(agent, &mut job).await.and_then(|output| {
        serde_json::to_value(output).map_err(|error| {
            ScriptError::fail(format!(
                "the script's output cannot be encoded as JSON: {error}"
            ))
        })
    });
    let verdict = Verdict::from_result(result, state, limits);
    if let Err(error) = job.finish(&verdict.outcome()).await {
        report.failure(format!("the job context's finish failed: {error}"));
    }
    verdict
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

//! The Redis config store (feature `redis`).
//!
//! Every key of a run lives under `armada:run:{run_id}:` and expires after [`KEY_TTL`], so a
//! run whose orchestrator died leaves nothing behind for good:
//! - `record`: the [`RunRecord`] as JSON;
//! - `state`: a hash of `status`, `jobs`, `succeeded`, `failed`, `terminal`, `retries`;
//! - `agent:{index}`: each [`AgentConfigRecord`] as JSON;
//! - `recorded`: a bitmap with one bit per job index, set when its result is recorded;
//! - `results`: the terminal [`JobResult`]s as JSON, in the order they were recorded;
//! - `redeliveries`: a hash of job index to how often its message came back unsettled;
//! - `finished`: the [`FinishedRun`] as JSON, once the run ended. Then only `record`, `state`,
//!   `recorded`, `results` and `finished` are left, until they expire.
//!
//! Recording a result is one Lua script: the bit, the list and the counters change together or
//! not at all, and a job is recorded once however often it is delivered. The script that
//! records a running run's last result marks it completed, so exactly one caller learns that
//! it ended the run.
//!
//! Every operation rides out a restart or failover of Redis: a connection error is tried again
//! with backoff until the store's outage limit ([`DEFAULT_OUTAGE_LIMIT`]) runs out. Operations
//! are idempotent where a lost reply would count twice, except the retry and redelivery
//! counters, which may count one too many after a reply lost in an outage.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::contract::ConfigStoreBackend;
use super::{
    DEFAULT_OUTAGE_LIMIT, FinishedRun, Recorded, RunProgress, RunRecord, RunStatus, redact_url,
};
use crate::error::OutageOutlasted;
use crate::wire::{AgentConfigRecord, JobResult, JobStatus};
use crate::{AgentIndex, BoxError, Error, JobIndex, Result, RunId};

/// How long a run's keys live after their last write.
pub const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply slower than this counts as a lost connection, so a partitioned host is retried
/// rather than waited on forever.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const RESULTS_POLL: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

const RECORD_RESULT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
local terminal = redis.call('HINCRBY', KEYS[3], 'terminal', 1)
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[3], 1) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local jobs = tonumber(redis.call('HGET', KEYS[3], 'jobs'))
if terminal >= jobs and redis.call('HGET', KEYS[3], 'status') == 'running' then
  redis.call('HSET', KEYS[3], 'status', 'completed')
  return 2
end
return 1
";

/// Keeps the first finished record (`KEYS[1]`), sets the state's status from the record kept,
/// and deletes what only a running run needs (`KEYS[3..]`). Returns the record kept; the caller
/// compares it with its own, so that a call retried after a lost reply still knows it wrote it.
const MARK_FINISHED: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
local kept = redis.call('GET', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'status', cjson.decode(kept)['status'])
end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return kept
";

/// Changes a field of the state hash only while the run exists, so a late writer cannot
/// recreate a removed run's state without its TTL. The status changes only from `running`:
/// an end (completed, canceled) is never overwritten.
const UPDATE_STATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[1] == 'incr' then redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
elseif ARGV[2] ~= 'status' or redis.call('HGET', KEYS[1], 'status') == 'running' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return 1
";

/// Agent configs and run state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    /// What `connect_here` opens connections with.
    client: redis::Client,
    url: String,
    outage_limit: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("outage_limit", &self.outage_limit)
            .finish()
    }
}

fn key(run: &RunId, suffix: &str) -> String {
    format!("armada:run:{run}:{suffix}")
}

impl RedisStore {
    /// Connects and checks the connection (and its credentials) with a `PING`.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let unreachable = |source: BoxError| Error::Backend {
            service: "Redis",
            url: shown.clone(),
            source,
        };
        let client = redis::Client::open(url).map_err(|error| unreachable(error.into()))?;
        let connection = managed_connection(&client).await.map_err(unreachable)?;
        Ok(Self {
            connection,
            client,
            url: shown,
            outage_limit: DEFAULT_OUTAGE_LIMIT,
        })
    }

    /// How long operations keep trying through an outage (default [`DEFAULT_OUTAGE_LIMIT`]).
    pub fn with_outage_limit(mut self, limit: Duration) -> Self {
        self.outage_limit = limit;
        self
    }

    fn failed(&self, error: impl Into<BoxError>) -> Error {
        Error::Backend {
            service: "Redis",
            url: self.url.clone(),
            source: error.into(),
        }
    }

    /// Runs `operation` on the shared connection, trying again with backoff while Redis is
    /// unreachable, restarting or failing over, up to the outage limit.
    async fn retrying<T, F>(&self, mut operation: impl FnMut(ConnectionManager) -> F) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.outage_limit;
        let mut pause = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let error = match operation(self.connection.clone()).await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(url = %self.url, "Redis answers again");
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            if !transient(&error) {
                return Err(self.failed(error));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(self.failed(OutageOutlasted {
                    limit: self.outage_limit,
                    source: error.into(),
                }));
            }
            if failures == 0 {
                tracing::warn!(url = %self.url, %error, "Redis unreachable; trying again");
            }
            failures += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T> {
        self.retrying(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    async fn pipeline<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        self.retrying(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.retrying(
            |mut connection| async move { invocation.invoke_async(&mut connection).await },
        )
        .await
    }

    async fn update_state(&self, run: &RunId, op: &str, field: &str, value: &str) -> Result<()> {
        let script = redis::Script::new(UPDATE_STATE);
        let mut invocation = script.key(key(run, "state"));
        invocation.arg(op).arg(field).arg(value);
        let found: i64 = self.script(&invocation).await?;
        if found < 0 {
            return Err(Error::RunNotFound(run.clone()));
        }
        Ok(())
    }
}

/// A reconnecting connection, its driver on the calling runtime. A plain connection first: it
/// reports a refused connection or login as it is, where the reconnecting manager would retry
/// it until the time-out.
async fn managed_connection(client: &redis::Client) -> Result<ConnectionManager, BoxError> {
    let connect = async {
        let mut probe = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut probe).await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(RETRY_PAUSE_MAX);
        client.get_connection_manager_with_config(config).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(BoxError::from)
}

impl ConfigStoreBackend for RedisStore {
    async fn connect_here(&self) -> Result<Self> {
        let connection = managed_connection(&self.client)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(Self {
            connection,
            client: self.client.clone(),
            url: self.url.clone(),
            outage_limit: self.outage_limit,
        })
    }

    async fn create_run(&self, record: RunRecord) -> Result<()> {
        let run = record.run_id.clone();
        let json = encode(&record, "a run record")?;
        let ttl = KEY_TTL.as_secs();
        let created: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key(&run, "record"))
                    .arg(&json)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl),
            )
            .await?;
        if created.is_none() {
            // A retry after a lost reply finds its own record: the run is this one.
            let kept: Option<String> = self
                .query(redis::cmd("GET").arg(key(&run, "record")))
                .await?;
            if kept.as_deref() != Some(json.as_str()) {
                return Err(Error::RunExists(run));
            }
            // Its state too, unless the lost call died before writing it: counters a run
            // already moved must not go back to zero.
            let state_exists: bool = self
                .query(redis::cmd("EXISTS").arg(key(&run, "state")))
                .await?;
            if state_exists {
                return Ok(());
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(key(&run, "state"))
            .arg(&[
                ("status", RunStatus::Running.as_str().to_owned()),
                ("jobs", record.jobs.to_string()),
                ("succeeded", "0".to_owned()),
                ("failed", "0".to_owned()),
                ("terminal", "0".to_owned()),
                ("retries", "0".to_owned()),
                ("redeliveries", "0".to_owned()),
            ])
            .ignore()
            .cmd("EXPIRE")
            .arg(key(&run, "state"))
            .arg(ttl)
            .ignore();
        self.pipeline(&pipe).await
    }

    async fn put_agent_configs(&self, run: &RunId, configs: Vec<AgentConfigRecord>) -> Result<()> {
        let mut pipe = redis::pipe();
        for config in &configs {
            pipe.cmd("SET")
                .arg(key(run, &format!("agent:{}", config.index)))
                .arg(encode(config, "an agent config")?)
                .arg("EX")
                .arg(KEY_TTL.as_secs())
                .ignore();
        }
        self.pipeline(&pipe).await
    }

    async fn agent_config(&self, run: &RunId, index: AgentIndex) -> Result<AgentConfigRecord> {
        let json: Option<String> = self
            .query(redis::cmd("GET").arg(key(run, &format!("agent:{index}"))))
            .await?;
        match json {
            Some(json) => decode(&json, "an agent config"),
            None => {
                let exists: bool = self
                    .query(redis::cmd("EXISTS").arg(key(run, "record")))
                    .await?;
                Err(if exists {
                    Error::AgentConfigMissing {
                        run: run.clone(),
                        index,
                    }
                } else {
                    Error::RunNotFound(run.clone())
                })
            }
        }
    }

    async fn run_record(&self, run: &RunId) -> Result<RunRecord> {
        let json: Option<String> = self
            .query(redis::cmd("GET").arg(key(run, "record")))
            .await?;
        match json {
            Some(json) => decode(&json, "a run record"),
            None => Err(Error::RunNotFound(run.clone())),
        }
    }

    async fn record_result(&self, run: &RunId, result: JobResult) -> Result<Recorded> {
        let counter = match result.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled | JobStatus::Abandoned => "",
        };
        let script = redis::Script::new(RECORD_RESULT);
        let mut invocation = script.key(key(run, "recorded"));
        invocation
            .key(key(run, "results"))
            .key(key(run, "state"))
            .arg(result.index)
            .arg(encode(&result, "a job result")?)
            .arg(counter)
            .arg(KEY_TTL.as_secs());
        match self.script::<i64>(&invocation).await? {
            -1 => Err(Error::RunNotFound(run.clone())),
            0 => Ok(Recorded::Before),
            2 => Ok(Recorded::LastOfRun),
            _ => Ok(Recorded::Now),
        }
    }

    async fn is_recorded(&self, run: &RunId, index: JobIndex) -> Result<bool> {
        let bit: u8 = self
            .query(redis::cmd("GETBIT").arg(key(run, "recorded")).arg(index))
            .await?;
        Ok(bit == 1)
    }

    async fn record_retry(&self, run: &RunId) -> Result<()> {
        self.update_state(run, "incr", "retries", "").await
    }

    async fn count_redelivery(&self, run: &RunId, index: JobIndex) -> Result<u32> {
        let key = key(run, "redeliveries");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(index)
            .arg(1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(KEY_TTL.as_secs())
            .ignore();
        let (count,): (u32,) = self.pipeline(&pipe).await?;
        // The run's count, unless its state is gone (the run ended): the job's count above is
        // what numbers its attempts.
        match self.update_state(run, "incr", "redeliveries", "").await {
            Ok(()) | Err(Error::RunNotFound(_)) => Ok(count),
            Err(error) => Err(error),
        }
    }

    async fn progress(&self, run: &RunId) -> Result<RunProgress> {
        let fields: std::collections::HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(key(run, "state")))
            .await?;
        if fields.is_empty() {
            return Err(Error::RunNotFound(run.clone()));
        }
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let status = fields
            .get("status")
            .and_then(|status| RunStatus::parse(status))
            .unwrap_or(RunStatus::Running);
        Ok(RunProgress {
            jobs: number("jobs"),
            succeeded: number("succeeded"),
            failed: number("failed"),
            terminal: number("terminal"),
            retries: number("retries"),
            redeliveries: number("redeliveries"),
            status,
        })
    }

    async fn results_after(
        &self,
        run: &RunId,
        cursor: u64,
        wait: Duration,
    ) -> Result<Vec<JobResult>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let start = i64::try_from(cursor).unwrap_or(i64::MAX);
            let lines: Vec<String> = self
                .query(
                    redis::cmd("LRANGE")
                        .arg(key(run, "results"))
                        .arg(start)
                        .arg(-1),
                )
                .await?;
            if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
                return lines
                    .iter()
                    .map(|line| decode(line, "a job result"))
                    .collect();
            }
            tokio::time::sleep(RESULTS_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<()> {
        self.update_state(run, "set", "status", status.as_str())
            .await
    }

    async fn mark_finished(
        &self,
        run: &RunId,
        finished: FinishedRun,
    ) -> Result<(FinishedRun, bool)> {
        let agents = match self.run_record(run).await {
            Ok(record) => record.agents,
            Err(Error::RunNotFound(_)) => 0,
            Err(error) => return Err(error),
        };
        let script = redis::Script::new(MARK_FINISHED);
        let mut invocation = script.key(key(run, "finished"));
        invocation
            .key(key(run, "state"))
            .key(key(run, "redeliveries"));
        for index in 0..agents {
            invocation.key(key(run, &format!("agent:{index}")));
        }
        let ours = encode(&finished, "a finished run")?;
        invocation.arg(&ours).arg(KEY_TTL.as_secs());
        let kept: String = self.script(&invocation).await?;
        Ok((decode(&kept, "a finished run")?, kept == ours))
    }

    async fn finished(&self, run: &RunId) -> Result<Option<FinishedRun>> {
        let json: Option<String> = self
            .query(redis::cmd("GET").arg(key(run, "finished")))
            .await?;
        json.map(|json| decode(&json, "a finished run")).transpose()
    }

    async fn remove_run(&self, run: &RunId) -> Result<()> {
        let record: Option<String> = self
            .query(redis::cmd("GET").arg(key(run, "record")))
            .await?;
        let agents = match record {
            Some(json) => decode::<RunRecord>(&json, "a run record")?.agents,
            None => 0,
        };
        let mut keys: Vec<String> = [
            "record",
            "state",
            "recorded",
            "results",
            "redeliveries",
            "finished",
        ]
        .iter()
        .map(|suffix| key(run, suffix))
        .collect();
        keys.extend((0..agents).map(|index| key(run, &format!("agent:{index}"))));
        self.query::<()>(redis::cmd("DEL").arg(keys)).await
    }
}

/// Whether an error is Redis being away (a dropped or refused connection, a time-out, a server
/// loading its data or failing over) rather than a refused operation or login.
fn transient(error: &redis::RedisError) -> bool {
    error.kind() != redis::ErrorKind::AuthenticationFailed
        && !matches!(error.retry_method(), redis::RetryMethod::NoRetry)
}

fn encode(value: &impl serde::Serialize, what: &'static str) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode { what, source })
}

fn decode<T>(json: &str, what: &'static str) -> Result<T>
where
    T: serde::de::DeserializeOwned + crate::wire::Versioned,
{
    crate::wire::decode(json.as_bytes(), what)
}

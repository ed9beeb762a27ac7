//! The Redis config store (feature `redis`).
//!
//! Every key of a run lives under `armada:run:{run_id}:` and expires after [`KEY_TTL`], so a
//! run whose orchestrator died leaves nothing behind for good:
//! - `record`: the [`RunRecord`] as JSON;
//! - `state`: a hash of `status`, `jobs`, `succeeded`, `failed`, `terminal`, `retries`;
//! - `agent:{index}`: each [`AgentConfigRecord`] as JSON;
//! - `recorded`: a bitmap with one bit per job index, set when its result is recorded;
//! - `results`: the terminal [`JobResult`]s as JSON, in the order they were recorded;
//! - `redeliveries`: a hash of job index to how often its message came back unsettled.
//!
//! Recording a result is one Lua script: the bit, the list and the counters change together or
//! not at all, and a job is recorded once however often it is delivered.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{RunProgress, RunRecord, RunStatus, redact_url};
use crate::wire::{AgentConfigRecord, JobResult, JobStatus};
use crate::{AgentIndex, Error, JobIndex, Result, RunId};

/// How long a run's keys live after their last write.
pub const KEY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESULTS_POLL: Duration = Duration::from_millis(50);

const RECORD_RESULT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'terminal', 1)
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[3], 1) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
";

/// Changes a field of the state hash only while the run exists, so a late writer cannot
/// recreate a removed run's state without its TTL.
const UPDATE_STATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[1] == 'incr' then redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return 1
";

/// Agent configs and run state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
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
        let unreachable = |message: String| Error::Backend {
            service: "Redis",
            url: shown.clone(),
            message,
        };
        let client = redis::Client::open(url).map_err(|error| unreachable(error.to_string()))?;
        let connect = async {
            // A plain connection first: it reports a refused connection or login as it is,
            // where the reconnecting manager would retry it until the time-out.
            let mut probe = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut probe).await?;
            client.get_connection_manager().await
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| unreachable(error.to_string()))?;
        Ok(Self {
            connection,
            url: shown,
        })
    }

    fn failed(&self, error: redis::RedisError) -> Error {
        Error::Backend {
            service: "Redis",
            url: self.url.clone(),
            message: error.to_string(),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T> {
        let mut connection = self.connection.clone();
        command
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn update_state(&self, run: &RunId, op: &str, field: &str, value: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        let found: i64 = redis::Script::new(UPDATE_STATE)
            .key(key(run, "state"))
            .arg(op)
            .arg(field)
            .arg(value)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        if found < 0 {
            return Err(Error::RunNotFound(run.clone()));
        }
        Ok(())
    }

    /// Creates a run; fails if it exists.
    pub async fn create_run(&self, record: RunRecord) -> Result<()> {
        let run = record.run_id.clone();
        let json = encode(&record, "a run record")?;
        let ttl = KEY_TTL.as_secs();
        let created: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key(&run, "record"))
                    .arg(json)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl),
            )
            .await?;
        if created.is_none() {
            return Err(Error::RunExists(run));
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
            ])
            .ignore()
            .cmd("EXPIRE")
            .arg(key(&run, "state"))
            .arg(ttl)
            .ignore();
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    /// Stores agent configs.
    pub async fn put_agent_configs(
        &self,
        run: &RunId,
        configs: Vec<AgentConfigRecord>,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        for config in &configs {
            pipe.cmd("SET")
                .arg(key(run, &format!("agent:{}", config.index)))
                .arg(encode(config, "an agent config")?)
                .arg("EX")
                .arg(KEY_TTL.as_secs())
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    /// One agent's config.
    pub async fn agent_config(&self, run: &RunId, index: AgentIndex) -> Result<AgentConfigRecord> {
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

    /// Records a terminal result once.
    pub async fn record_result(&self, run: &RunId, result: JobResult) -> Result<bool> {
        let counter = match result.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled | JobStatus::Abandoned => "",
        };
        let mut connection = self.connection.clone();
        let recorded: i64 = redis::Script::new(RECORD_RESULT)
            .key(key(run, "recorded"))
            .key(key(run, "results"))
            .key(key(run, "state"))
            .arg(result.index)
            .arg(encode(&result, "a job result")?)
            .arg(counter)
            .arg(KEY_TTL.as_secs())
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        match recorded {
            -1 => Err(Error::RunNotFound(run.clone())),
            recorded => Ok(recorded == 1),
        }
    }

    /// Whether a job is recorded.
    pub async fn is_recorded(&self, run: &RunId, index: JobIndex) -> Result<bool> {
        let bit: u8 = self
            .query(redis::cmd("GETBIT").arg(key(run, "recorded")).arg(index))
            .await?;
        Ok(bit == 1)
    }

    /// Counts a retry.
    pub async fn record_retry(&self, run: &RunId) -> Result<()> {
        self.update_state(run, "incr", "retries", "").await
    }

    /// Counts a redelivery of a job.
    pub async fn count_redelivery(&self, run: &RunId, index: JobIndex) -> Result<u32> {
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
        let mut connection = self.connection.clone();
        let (count,): (u32,) = pipe
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(count)
    }

    /// Counters and status.
    pub async fn progress(&self, run: &RunId) -> Result<RunProgress> {
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
            status,
        })
    }

    /// Results after `cursor`, polling up to `wait` for at least one.
    pub async fn results_after(
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

    /// Sets the status.
    pub async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<()> {
        self.update_state(run, "set", "status", status.as_str())
            .await
    }

    /// Removes every key of the run.
    pub async fn remove_run(&self, run: &RunId) -> Result<()> {
        let record: Option<String> = self
            .query(redis::cmd("GET").arg(key(run, "record")))
            .await?;
        let agents = match record {
            Some(json) => decode::<RunRecord>(&json, "a run record")?.agents,
            None => 0,
        };
        let mut keys: Vec<String> = ["record", "state", "recorded", "results", "redeliveries"]
            .iter()
            .map(|suffix| key(run, suffix))
            .collect();
        keys.extend((0..agents).map(|index| key(run, &format!("agent:{index}"))));
        self.query::<()>(redis::cmd("DEL").arg(keys)).await
    }
}

fn encode(value: &impl serde::Serialize, what: &'static str) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode { what, source })
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(json).map_err(|source| Error::Decode { what, source })
}

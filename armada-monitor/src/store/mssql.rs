//! The SQL Server backend (feature `mssql`): tiberius over tokio, in T-SQL.
//!
//! It keeps the sqlx backend's semantics statement for statement: upserts are
//! `INSERT … WHERE NOT EXISTS` under `UPDLOCK, HOLDLOCK` or `MERGE … WITH (HOLDLOCK)`,
//! `RETURNING` is `OUTPUT inserted.…`, `LIMIT`/`OFFSET` are `OFFSET … FETCH NEXT …`, row
//! values are spelled out, and migrations run under an application lock (`sp_getapplock`).
//! Connections run with `XACT_ABORT ON`, so a failed statement rolls its whole transaction
//! back, as in PostgreSQL.
//!
//! Never run against a real SQL Server while it was written (none runs on the machines it
//! was built on); the conformance suite runs it when `ARMADA_MSSQL_URL` is set.

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use armada_core::RunId;
use tiberius::{AuthMethod, ColumnData, Config, EncryptionLevel, Query};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

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

/// Rows written by one multi-row `INSERT`: far below SQL Server's limit of 2,100 bound
/// parameters (100 events take 801).
const ROWS_PER_INSERT: usize = 100;

type Client = tiberius::Client<Compat<TcpStream>>;
type SqlResult<T> = std::result::Result<T, tiberius::error::Error>;

/// Connections open at most at once: the monitor's writes are short transactions and its
/// reads single statements, so a few suffice, as for SQLite.
const POOL_SIZE: usize = 4;

/// Parameter marks of T-SQL through `sp_executesql`: `@P1`, `@P2`, …
const MARK: &str = "@P";

/// A SQL Server database.
///
/// The pool is small and hand-made (no pool crate is in the tree): at most [`POOL_SIZE`]
/// connections, counted by a semaphore, with idle ones kept in a `Mutex<Vec<Client>>`. A
/// connection goes back to the pool only after its work finished cleanly; one that failed
/// or whose future was dropped midway is closed, since tiberius cannot tell whether it is
/// still in step with the server.
pub(super) struct MssqlStore {
    config: Config,
    url: String,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

impl std::fmt::Debug for MssqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlStore")
            .field("url", &self.url)
            .finish()
    }
}

/// A connection taken from the pool for one piece of work.
struct Conn<'a> {
    client: Option<Client>,
    store: &'a MssqlStore,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    fn client(&mut self) -> SqlResult<&mut Client> {
        self.client
            .as_mut()
            .ok_or_else(|| tiberius::error::Error::Protocol("the connection was released".into()))
    }

    /// Puts the connection back into the pool: its work ended cleanly.
    fn release(mut self) {
        if let Some(client) = self.client.take() {
            self.store
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
    }
}

impl Columns for tiberius::Row {
    type Error = tiberius::error::Error;

    fn text(&self, column: &str) -> SqlResult<Option<String>> {
        Ok(self.try_get::<&str, _>(column)?.map(str::to_owned))
    }

    fn int(&self, column: &str) -> SqlResult<Option<i64>> {
        // Integers of any width: a NULL may come typed narrower than its column.
        Ok(match self.get_column_data(column)? {
            ColumnData::I64(value) => *value,
            ColumnData::I32(value) => value.map(i64::from),
            ColumnData::I16(value) => value.map(i64::from),
            ColumnData::U8(value) => value.map(i64::from),
            other => {
                return Err(Self::corrupt(format!(
                    "`{column}` is not an integer: {other:?}"
                )));
            }
        })
    }

    fn float(&self, column: &str) -> SqlResult<Option<f64>> {
        Ok(match self.get_column_data(column)? {
            ColumnData::F64(value) => *value,
            ColumnData::F32(value) => value.map(f64::from),
            other => {
                return Err(Self::corrupt(format!(
                    "`{column}` is not a float: {other:?}"
                )));
            }
        })
    }

    fn corrupt(message: String) -> tiberius::error::Error {
        tiberius::error::Error::Conversion(message.into())
    }
}

/// What an `mssql://` URL says.
#[derive(Debug, PartialEq)]
struct MssqlUrl {
    host: String,
    port: u16,
    database: Option<String>,
    user: String,
    password: String,
    trust_server_certificate: bool,
    encryption: EncryptionLevel,
}

/// What a part of an `mssql://` URL says, or why it is refused.
type UrlResult<T> = std::result::Result<T, String>;

impl MssqlUrl {
    /// Parses `mssql://USER:PASSWORD@HOST[:PORT][/DATABASE][?FLAGS]`; user and password may
    /// be percent-encoded. Flags: `trust_server_certificate=true|false`,
    /// `encrypt=true|false|strict`.
    fn parse(url: &str, shown: &str) -> Result<Self> {
        // `url` may hold the password: errors name the URL as `shown`, and the parts of the
        // parser only say why they refuse it.
        Self::read(url).map_err(|why| {
            Error::Invalid(format!(
                "the monitor store URL `{shown}` is not a SQL Server URL: {why}; use \
                 mssql://USER:PASSWORD@HOST:PORT/DATABASE[?trust_server_certificate=true\
                 &encrypt=false]"
            ))
        })
    }

    fn read(url: &str) -> UrlResult<Self> {
        let rest = url
            .strip_prefix("mssql://")
            .or_else(|| url.strip_prefix("sqlserver://"))
            .ok_or("it does not start with mssql://")?;
        let (rest, flags) = rest.split_once('?').unwrap_or((rest, ""));
        // The password may hold `@` and `/` percent-encoded or not: the host starts after
        // the last `@`.
        let (credentials, rest) = rest
            .rsplit_once('@')
            .ok_or("it names no user (USER:PASSWORD@ before the host)")?;
        let (user, password) = Self::read_credentials(credentials)?;
        let (address, database) = rest.split_once('/').unwrap_or((rest, ""));
        let database = percent_decode(database.trim_end_matches('/'))
            .ok_or("the database name is badly encoded")?;
        let (host, port) = Self::read_address(address)?;
        let mut parsed = Self {
            host: host.to_owned(),
            port,
            database: (!database.is_empty()).then_some(database),
            user,
            password,
            trust_server_certificate: false,
            encryption: EncryptionLevel::Required,
        };
        for flag in flags.split('&').filter(|flag| !flag.is_empty()) {
            parsed.apply_flag(flag)?;
        }
        Ok(parsed)
    }

    /// User and password of `USER[:PASSWORD]`, percent-decoded.
    fn read_credentials(credentials: &str) -> UrlResult<(String, String)> {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let user = percent_decode(user).ok_or("the user is badly encoded")?;
        let password = percent_decode(password).ok_or("the password is badly encoded")?;
        if user.is_empty() {
            return Err("the user is empty".into());
        }
        Ok((user, password))
    }

    /// Host and port of `HOST[:PORT]` or `[IPV6][:PORT]`; the port is 1433 when not given.
    fn read_address(address: &str) -> UrlResult<(&str, u16)> {
        let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
            // An IPv6 address: [::1]:1433
            let (host, after) = bracketed
                .split_once(']')
                .ok_or("an IPv6 host lacks its `]`")?;
            (host, after.strip_prefix(':'))
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            }
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| format!("the port `{port}` is not a number"))?,
            None => 1433,
        };
        Ok((host, port))
    }

    /// Applies one `KEY[=VALUE]` flag of the query string; a flag without a value is `true`.
    fn apply_flag(&mut self, flag: &str) -> UrlResult<()> {
        let (key, value) = flag.split_once('=').unwrap_or((flag, "true"));
        match (
            key.to_ascii_lowercase().as_str(),
            value.to_ascii_lowercase().as_str(),
        ) {
            ("trust_server_certificate" | "trustservercertificate", "true") => {
                self.trust_server_certificate = true;
            }
            ("trust_server_certificate" | "trustservercertificate", "false") => {
                self.trust_server_certificate = false;
            }
            // Off still encrypts the login, as SQL Server requires; NotSupported would
            // refuse servers that insist on it.
            ("encrypt", "false") => self.encryption = EncryptionLevel::Off,
            ("encrypt", "true") => self.encryption = EncryptionLevel::Required,
            ("encrypt", "strict") => self.encryption = EncryptionLevel::Strict,
            _ => {
                return Err(format!(
                    "the flag `{flag}` is unknown (known: trust_server_certificate=true|false, \
                     encrypt=true|false|strict)"
                ));
            }
        }
        Ok(())
    }

    fn config(&self) -> Config {
        let mut config = Config::new();
        config.host(&self.host);
        config.port(self.port);
        if let Some(database) = &self.database {
            config.database(database);
        }
        config.authentication(AuthMethod::sql_server(&self.user, &self.password));
        config.encryption(self.encryption);
        if self.trust_server_certificate {
            config.trust_cert();
        }
        config.application_name("armada-monitor");
        config
    }
}

/// `%XX` sequences decoded; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// A query with `params` bound in order.
fn bound<'a>(sql: impl Into<Cow<'a, str>>, params: Vec<Param<'a>>) -> Query<'a> {
    let mut query = Query::new(sql);
    for param in params {
        match param {
            Param::Int(value) => query.bind(value),
            Param::Float(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
        }
    }
    query
}

/// Runs a statement that returns no rows; the rows it changed.
async fn execute(client: &mut Client, query: Query<'_>) -> SqlResult<u64> {
    Ok(query.execute(client).await?.total())
}

/// Runs a statement and collects the rows of its first result.
async fn rows(client: &mut Client, query: Query<'_>) -> SqlResult<Vec<tiberius::Row>> {
    query.query(client).await?.into_first_result().await
}

/// Installs rustls' `ring` provider as the process default when none is installed, before
/// tiberius opens its first TLS session (SQL Server encrypts at least the login). Both `ring`
/// and `aws-lc-rs` are compiled into rustls in this workspace (kube and lapin use ring,
/// tiberius defaults to aws-lc-rs), and with both rustls refuses to pick one for the other
/// clients of the process; ring is what the workspace uses everywhere else.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl MssqlStore {
    /// Connects to the database of an `mssql://` URL and migrates.
    pub(super) async fn open(url: &str, shown: String) -> Result<Self> {
        let config = MssqlUrl::parse(url, &shown)?.config();
        let store = Self {
            config,
            url: shown,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
        };
        store.migrate().await?;
        Ok(store)
    }

    fn failed(&self, doing: &'static str) -> impl FnOnce(tiberius::error::Error) -> Error + '_ {
        move |source| Error::SqlServer {
            url: self.url.clone(),
            doing,
            source: Box::new(source),
        }
    }

    /// A connection from the pool, or a new one while fewer than [`POOL_SIZE`] are open.
    async fn conn(&self, doing: &'static str) -> Result<Conn<'_>> {
        let permit = self.permits.acquire().await.map_err(|_| {
            self.failed(doing)(tiberius::error::Error::Protocol("pool closed".into()))
        })?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let client = match idle {
            Some(client) => client,
            None => self.connect().await.map_err(self.failed(doing))?,
        };
        Ok(Conn {
            client: Some(client),
            store: self,
            _permit: permit,
        })
    }

    async fn connect(&self) -> SqlResult<Client> {
        install_crypto_provider();
        let mut config = self.config.clone();
        let mut client = match Self::connect_to(config.clone()).await {
            // Azure SQL's gateway may send the client on to the database's own node.
            Err(tiberius::error::Error::Routing { host, port }) => {
                config.host(host);
                config.port(port);
                Self::connect_to(config).await?
            }
            other => other?,
        };
        // NOCOUNT OFF whatever the server's `user options` say: writes read the rows they
        // changed.
        client
            .simple_query("SET XACT_ABORT ON; SET NOCOUNT OFF;")
            .await?
            .into_results()
            .await?;
        Ok(client)
    }

    async fn connect_to(config: Config) -> SqlResult<Client> {
        let tcp = TcpStream::connect(config.get_addr()).await?;
        tcp.set_nodelay(true)?;
        tiberius::Client::connect(config, tcp.compat_write()).await
    }

    /// Begins a transaction on a pooled connection.
    async fn begin(&self, doing: &'static str) -> Result<Conn<'_>> {
        let mut conn = self.conn(doing).await?;
        conn.client()
            .map_err(self.failed(doing))?
            .begin_transaction()
            .await
            .map_err(self.failed(doing))?;
        Ok(conn)
    }

    /// Commits when `result` is a success and rolls back otherwise; the connection goes back
    /// to the pool only when that worked.
    async fn end<T>(
        &self,
        mut conn: Conn<'_>,
        result: Result<T>,
        doing: &'static str,
    ) -> Result<T> {
        let client = conn.client().map_err(self.failed(doing))?;
        match result {
            Ok(value) => {
                client
                    .commit_transaction()
                    .await
                    .map_err(self.failed(doing))?;
                conn.release();
                Ok(value)
            }
            Err(error) => {
                // After a server error XACT_ABORT has rolled back already and the rollback
                // fails: the connection is then closed, which is just as good.
                if client.rollback_transaction().await.is_ok() {
                    conn.release();
                }
                Err(error)
            }
        }
    }

    /// Runs one statement outside a transaction and reads its rows with `read`.
    async fn fetch<T>(
        &self,
        sql: Sql<'_>,
        doing: &'static str,
        read: fn(&tiberius::Row) -> SqlResult<T>,
    ) -> Result<Vec<T>> {
        let mut conn = self.conn(doing).await?;
        let found = rows(
            conn.client().map_err(self.failed(doing))?,
            bound(sql.text, sql.params),
        )
        .await
        .and_then(|rows| rows.iter().map(read).collect::<SqlResult<Vec<T>>>())
        .map_err(self.failed(doing))?;
        conn.release();
        Ok(found)
    }

    /// Runs one statement outside a transaction; the rows it changed.
    async fn run_statement(&self, sql: Sql<'_>, doing: &'static str) -> Result<u64> {
        let mut conn = self.conn(doing).await?;
        let changed = execute(
            conn.client().map_err(self.failed(doing))?,
            bound(sql.text, sql.params),
        )
        .await
        .map_err(self.failed(doing))?;
        conn.release();
        Ok(changed)
    }

    async fn migrate(&self) -> Result<()> {
        let doing = "migrating";
        let mut conn = self.begin(doing).await?;
        let result = self.migrate_in(&mut conn).await;
        self.end(conn, result, doing).await
    }

    async fn migrate_in(&self, conn: &mut Conn<'_>) -> Result<()> {
        let failed = || self.failed("migrating");
        let client = conn.client().map_err(failed())?;
        // Monitors starting together on one database migrate one at a time: the lock is the
        // transaction's, released when it ends.
        let lock = client
            .simple_query(
                "DECLARE @granted INT; \
                 EXEC @granted = sp_getapplock @Resource = N'armada_monitor_schema', \
                 @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 60000; \
                 SELECT @granted AS granted;",
            )
            .await
            .map_err(failed())?
            .into_row()
            .await
            .map_err(failed())?;
        let granted = lock
            .as_ref()
            .map(|row| row.int("granted"))
            .transpose()
            .map_err(failed())?
            .flatten();
        if granted.is_none_or(|granted| granted < 0) {
            return Err(Error::Conflict(format!(
                "the monitor store at {} is being migrated by another monitor that did not \
                 finish within a minute (sp_getapplock returned {granted:?}); try again",
                self.url
            )));
        }
        client
            .simple_query(
                "IF OBJECT_ID(N'armada_schema', N'U') IS NULL \
                 CREATE TABLE armada_schema (version BIGINT NOT NULL);",
            )
            .await
            .map_err(failed())?
            .into_results()
            .await
            .map_err(failed())?;
        let version = client
            .simple_query("SELECT MAX(version) AS version FROM armada_schema;")
            .await
            .map_err(failed())?
            .into_row()
            .await
            .map_err(failed())?
            .map(|row| row.int("version"))
            .transpose()
            .map_err(failed())?
            .flatten();
        let version = schema::check_version(&self.url, version, schema::MSSQL.len())?;
        for (done, statements) in schema::MSSQL.iter().enumerate().skip(version) {
            for statement in *statements {
                client
                    .simple_query(*statement)
                    .await
                    .map_err(failed())?
                    .into_results()
                    .await
                    .map_err(failed())?;
            }
            let mut insert = Query::new("INSERT INTO armada_schema (version) VALUES (@P1)");
            insert.bind(done as i64 + 1);
            execute(client, insert).await.map_err(failed())?;
        }
        Ok(())
    }

    async fn register_run_in(
        &self,
        conn: &mut Conn<'_>,
        run: &NewRun,
        settings: &str,
        created_ms: u64,
    ) -> SqlResult<bool> {
        let client = conn.client()?;
        // The range lock makes a concurrent registration of the same id wait and then see
        // the row, instead of failing on the primary key.
        let mut insert = Query::new(
            "INSERT INTO armada_runs (id, project, status, created_ms, agents, jobs, tune, \
             relaunch_of, settings, name, tags) \
             SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11 \
             WHERE NOT EXISTS (SELECT 1 FROM armada_runs WITH (UPDLOCK, HOLDLOCK) \
             WHERE id = @P1)",
        );
        insert.bind(run.id.as_str());
        insert.bind(run.project.as_str());
        insert.bind(RunState::Running.as_str());
        insert.bind(created_ms as i64);
        insert.bind(i64::from(run.agents));
        insert.bind(run.jobs as i64);
        insert.bind(run.tune.as_deref());
        insert.bind(run.relaunch_of.as_deref());
        insert.bind(settings);
        insert.bind(run.name.as_deref());
        insert.bind(super::tags_text(&run.tags));
        Ok(execute(client, insert).await? > 0)
    }

    /// `false` when there is no such run.
    async fn finish_run_in(
        &self,
        conn: &mut Conn<'_>,
        run: &RunId,
        finish: &Finish,
        leftover: JobState,
        now_ms: u64,
    ) -> SqlResult<bool> {
        let run_id = run.as_str();
        let client = conn.client()?;
        let mut update = Query::new(
            "UPDATE armada_runs SET status = @P1, finished_ms = COALESCE(finished_ms, @P2) \
             WHERE id = @P3",
        );
        update.bind(finish.status.as_str());
        update.bind(now_ms as i64);
        update.bind(run_id);
        if execute(client, update).await? == 0 {
            return Ok(false);
        }
        for job in &finish.jobs {
            // A listed job without a row gets one; HOLDLOCK: MERGE alone is not atomic against
            // a concurrent insert of the same key.
            let mut merge = Query::new(
                "MERGE armada_jobs WITH (HOLDLOCK) AS target \
                 USING (SELECT @P1 AS run_id, @P2 AS idx, @P3 AS id, @P4 AS status, \
                 @P5 AS finished_ms) AS source \
                 ON target.run_id = source.run_id AND target.idx = source.idx \
                 WHEN MATCHED AND target.status IN (N'queued', N'running', N'retrying') \
                 THEN UPDATE SET status = source.status, finished_ms = source.finished_ms \
                 WHEN NOT MATCHED THEN INSERT (run_id, idx, id, status, finished_ms) \
                 VALUES (source.run_id, source.idx, source.id, source.status, \
                 source.finished_ms);",
            );
            merge.bind(run_id);
            merge.bind(job.index as i64);
            merge.bind(super::job_id(run, job.index));
            merge.bind(job.status.as_str());
            merge.bind(now_ms as i64);
            execute(client, merge).await?;
        }
        let mut update = Query::new(
            "UPDATE armada_jobs SET status = @P1, finished_ms = @P2 \
             WHERE run_id = @P3 AND status IN (N'queued', N'running', N'retrying')",
        );
        update.bind(leftover.as_str());
        update.bind(now_ms as i64);
        update.bind(run_id);
        execute(client, update).await?;
        Ok(true)
    }

    async fn ingest_in(
        &self,
        conn: &mut Conn<'_>,
        run: &RunId,
        batch_id: &str,
        decoded: &mut [Decoded],
        seen: &Seen,
    ) -> Result<Option<Vec<Job>>> {
        let run_id = run.as_str();
        let failed = |doing| self.failed(doing);
        let doing = "storing events";
        let client = conn.client().map_err(failed(doing))?;
        let new_batch = Self::claim_batch(client, run_id, batch_id)
            .await
            .map_err(failed(doing))?;
        let added = if new_batch { decoded.len() as i64 } else { 0 };
        let counted = Self::add_to_event_count(client, run_id, added, seen.at_ms)
            .await
            .map_err(failed(doing))?;
        let Some(counted) = counted else {
            return Err(Error::UnknownRun(run_id.to_owned()));
        };
        if !new_batch {
            return Ok(None);
        }
        ingest::number(decoded, counted.u64("events").map_err(failed(doing))?);
        let rowless = rowless_from_row(&counted, run).map_err(failed(doing))?;
        Self::insert_events(client, run_id, decoded)
            .await
            .map_err(failed(doing))?;
        Self::insert_outputs(client, run_id, decoded)
            .await
            .map_err(failed("storing outputs"))?;
        Self::insert_attachments(client, run_id, decoded)
            .await
            .map_err(failed(doing))?;
        let jobs = Self::update_jobs(client, run_id, decoded, &rowless)
            .await
            .map_err(failed("updating jobs"))?;
        Self::update_agents(client, run_id, decoded, seen)
            .await
            .map_err(failed("updating agents"))?;
        Ok(Some(jobs))
    }

    /// `false` when the batch id was stored before, or there is no such run.
    async fn claim_batch(client: &mut Client, run_id: &str, batch_id: &str) -> SqlResult<bool> {
        // Once per batch id: a concurrent copy of the batch waits on the range lock, then
        // finds the row and stores nothing. The run's row is locked first (UPDLOCK), in the
        // order `delete_run` and `finish_run` lock, so that they cannot deadlock with this.
        let mut insert = Query::new(
            "INSERT INTO armada_batches (batch_id, run_id) \
             SELECT @P1, id FROM armada_runs WITH (UPDLOCK) WHERE id = @P2 \
             AND NOT EXISTS (SELECT 1 FROM armada_batches WITH (UPDLOCK, HOLDLOCK) \
             WHERE batch_id = @P1)",
        );
        insert.bind(batch_id);
        insert.bind(run_id);
        Ok(execute(client, insert).await? > 0)
    }

    /// Adds `added` to the run's count of events and records when it was seen: the run's row
    /// with the new count in `events` (and its `jobs`, `status` and `finished_ms`), `None`
    /// when there is no such run.
    async fn add_to_event_count(
        client: &mut Client,
        run_id: &str,
        added: i64,
        seen_ms: u64,
    ) -> SqlResult<Option<tiberius::Row>> {
        // The run's row is locked from here to the commit, so events are numbered per run
        // without gaps or repeats.
        let mut update = Query::new(
            "UPDATE armada_runs SET events = events + @P1, seen_ms = @P3 \
             OUTPUT inserted.events, inserted.jobs, inserted.status, inserted.finished_ms \
             WHERE id = @P2",
        );
        update.bind(added);
        update.bind(run_id);
        update.bind(seen_ms as i64);
        Ok(rows(client, update).await?.into_iter().next())
    }

    async fn insert_events(
        client: &mut Client,
        run_id: &str,
        decoded: &[Decoded],
    ) -> SqlResult<()> {
        for chunk in decoded.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                "INSERT INTO armada_events (run_id, seq, job_idx, attempt, agent, kind, at_ms, \
                 message, data) VALUES ",
                chunk.len(),
                8,
                |number| format!("{MARK}{number}"),
            );
            let mut insert = Query::new(sql);
            insert.bind(run_id);
            for Decoded { event, .. } in chunk {
                insert.bind(event.seq as i64);
                insert.bind(event.job.map(|job| job as i64));
                insert.bind(event.attempt.map(i64::from));
                insert.bind(i64::from(event.agent));
                insert.bind(event.kind.as_str());
                insert.bind(event.at_ms as i64);
                insert.bind(event.message.as_deref());
                insert.bind(event.data.as_ref().map(serde_json::Value::to_string));
            }
            execute(client, insert).await?;
        }
        Ok(())
    }

    async fn insert_outputs(
        client: &mut Client,
        run_id: &str,
        decoded: &[Decoded],
    ) -> SqlResult<()> {
        for chunk in ingest::outputs(decoded).chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                "INSERT INTO armada_outputs (run_id, seq, job_idx, attempt, at_ms, data) VALUES ",
                chunk.len(),
                5,
                |number| format!("{MARK}{number}"),
            );
            let mut insert = Query::new(sql);
            insert.bind(run_id);
            for (event, output) in chunk {
                insert.bind(event.seq as i64);
                insert.bind(event.job.unwrap_or_default() as i64);
                insert.bind(i64::from(event.attempt.unwrap_or_default()));
                insert.bind(event.at_ms as i64);
                insert.bind(output.to_string());
            }
            execute(client, insert).await?;
        }
        Ok(())
    }

    async fn insert_attachments(
        client: &mut Client,
        run_id: &str,
        decoded: &[Decoded],
    ) -> SqlResult<()> {
        for item in decoded {
            if let Some((attachment, bytes)) = &item.attachment {
                let mut insert = Query::new(
                    "INSERT INTO armada_attachments (run_id, seq, job_idx, attempt, name, \
                     content_type, size, bytes) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)",
                );
                insert.bind(run_id);
                insert.bind(item.event.seq as i64);
                insert.bind(item.event.job.unwrap_or_default() as i64);
                insert.bind(i64::from(item.event.attempt.unwrap_or_default()));
                insert.bind(attachment.name.as_str());
                insert.bind(attachment.content_type.as_str());
                insert.bind(bytes.len() as i64);
                insert.bind(bytes.as_slice());
                execute(client, insert).await?;
            }
        }
        Ok(())
    }

    /// Applies the batch's job patches, writing the row of a job first heard of; the jobs
    /// they changed, as they are now.
    async fn update_jobs(
        client: &mut Client,
        run_id: &str,
        decoded: &[Decoded],
        rowless: &Rowless,
    ) -> SqlResult<Vec<Job>> {
        let output: Vec<String> = JOB_COLUMNS
            .split(", ")
            .map(|column| format!("inserted.{column}"))
            .collect();
        // A job without a row is what `rowless` says (queued, or the run's leftover state
        // since its end, with 0 attempts): the insert is the update applied to that job, under
        // the same guard. HOLDLOCK: MERGE alone is not atomic against a concurrent insert of
        // the same key.
        let sql = format!(
            "MERGE armada_jobs WITH (HOLDLOCK) AS target \
             USING (SELECT @P1 AS run_id, @P2 AS idx, @P3 AS status, @P4 AS agent, \
             @P5 AS attempts, @P6 AS started_ms, @P7 AS finished_ms, @P8 AS duration_ms, \
             @P9 AS last_event, @P10 AS error, @P11 AS id) AS source \
             ON target.run_id = source.run_id AND target.idx = source.idx \
             WHEN MATCHED AND (target.attempts < source.attempts \
             OR (target.attempts = source.attempts \
             AND target.status NOT IN (N'succeeded', N'failed', N'canceled', N'abandoned'))) \
             THEN UPDATE SET status = COALESCE(source.status, target.status), \
             agent = source.agent, attempts = source.attempts, \
             started_ms = COALESCE(source.started_ms, target.started_ms), \
             finished_ms = COALESCE(source.finished_ms, target.finished_ms), \
             duration_ms = COALESCE(source.duration_ms, target.duration_ms), \
             last_event = source.last_event, \
             error = CASE WHEN source.status = N'succeeded' THEN NULL \
             ELSE COALESCE(source.error, target.error) END \
             WHEN NOT MATCHED AND (source.attempts > 0 OR @P12 = 0) \
             THEN INSERT (run_id, idx, id, status, agent, attempts, started_ms, finished_ms, \
             duration_ms, last_event, error) \
             VALUES (source.run_id, source.idx, source.id, COALESCE(source.status, @P13), \
             source.agent, source.attempts, source.started_ms, \
             COALESCE(source.finished_ms, @P14), source.duration_ms, source.last_event, \
             CASE WHEN source.status = N'succeeded' THEN NULL ELSE source.error END) \
             OUTPUT {};",
            output.join(", ")
        );
        let mut jobs = Vec::new();
        for (index, patch) in ingest::job_patches(decoded, rowless) {
            let mut merge = Query::new(sql.as_str());
            merge.bind(run_id);
            merge.bind(index as i64);
            merge.bind(patch.status.map(JobState::as_str));
            merge.bind(i64::from(patch.agent));
            merge.bind(i64::from(patch.attempt));
            merge.bind(patch.started_ms.map(|at| at as i64));
            merge.bind(patch.finished_ms.map(|at| at as i64));
            merge.bind(patch.duration_ms);
            merge.bind(patch.last_event);
            merge.bind(patch.error);
            merge.bind(patch.id);
            merge.bind(i64::from(rowless.ended()));
            merge.bind(rowless.state.as_str());
            merge.bind(rowless.finished_ms.map(|at| at as i64));
            for row in rows(client, merge).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        Ok(jobs)
    }

    async fn update_agents(
        client: &mut Client,
        run_id: &str,
        decoded: &[Decoded],
        seen: &Seen,
    ) -> SqlResult<()> {
        for (index, patch) in ingest::agent_patches(decoded, seen) {
            // HOLDLOCK: MERGE alone is not atomic against a concurrent insert of the same key.
            let mut merge = Query::new(
                "MERGE armada_agents WITH (HOLDLOCK) AS target \
                 USING (SELECT @P1 AS run_id, @P2 AS idx, @P3 AS status, @P4 AS started_ms, \
                 @P5 AS stopped_ms, @P6 AS error, @P7 AS seen_ms, @P8 AS has_status) AS source \
                 ON target.run_id = source.run_id AND target.idx = source.idx \
                 WHEN MATCHED THEN UPDATE SET status = CASE WHEN source.has_status = 1 \
                 THEN source.status ELSE target.status END, \
                 started_ms = COALESCE(source.started_ms, target.started_ms), \
                 stopped_ms = COALESCE(source.stopped_ms, target.stopped_ms), \
                 error = COALESCE(source.error, target.error), seen_ms = source.seen_ms \
                 WHEN NOT MATCHED THEN INSERT (run_id, idx, status, started_ms, stopped_ms, \
                 error, seen_ms) VALUES (source.run_id, source.idx, source.status, \
                 source.started_ms, source.stopped_ms, source.error, source.seen_ms);",
            );
            merge.bind(run_id);
            merge.bind(i64::from(index));
            merge.bind(patch.status.unwrap_or("starting"));
            merge.bind(patch.started_ms.map(|at| at as i64));
            merge.bind(patch.stopped_ms.map(|at| at as i64));
            merge.bind(patch.error);
            merge.bind(patch.seen_ms as i64);
            merge.bind(i64::from(patch.status.is_some()));
            execute(client, merge).await?;
        }
        Ok(())
    }
}

impl StoreBackend for MssqlStore {
    async fn register_run(&self, run: &NewRun, settings: &str, created_ms: u64) -> Result<()> {
        let doing = "registering a run";
        let mut conn = self.begin(doing).await?;
        let result = self
            .register_run_in(&mut conn, run, settings, created_ms)
            .await
            .map_err(self.failed(doing));
        if self.end(conn, result, doing).await? {
            Ok(())
        } else {
            Err(super::run_exists(&run.id))
        }
    }

    async fn finish_run(
        &self,
        run: &RunId,
        finish: &Finish,
        leftover: JobState,
        now_ms: u64,
    ) -> Result<()> {
        let doing = "finishing a run";
        let mut conn = self.begin(doing).await?;
        let result = self
            .finish_run_in(&mut conn, run, finish, leftover, now_ms)
            .await;
        let result = match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::UnknownRun(run.to_string())),
            Err(source) => Err(self.failed(doing)(source)),
        };
        self.end(conn, result, doing).await
    }

    async fn delete_run(&self, run_id: &str) -> Result<bool> {
        let mut sql = Sql::new("DELETE FROM armada_runs WHERE id = @P1", MARK);
        sql.bind(Param::Text(Some(run_id)));
        Ok(self.run_statement(sql, "deleting a run").await? > 0)
    }

    async fn counts(&self, run_id: &str) -> Result<Vec<(String, u64)>> {
        let mut sql = Sql::new(
            "SELECT status, COUNT_BIG(*) AS jobs FROM armada_jobs WHERE run_id = @P1 \
             GROUP BY status",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        self.fetch(sql, "counting jobs", |row| {
            Ok((row.required_text("status")?, row.u64("jobs")?))
        })
        .await
    }

    async fn ingest(
        &self,
        run: &RunId,
        batch_id: &str,
        decoded: &mut [Decoded],
        seen: &Seen,
    ) -> Result<Option<Vec<Job>>> {
        let doing = "storing events";
        let mut conn = self.begin(doing).await?;
        let result = self
            .ingest_in(&mut conn, run, batch_id, decoded, seen)
            .await;
        self.end(conn, result, doing).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<Run>> {
        let mut sql = Sql::new(
            &format!("SELECT {RUN_COLUMNS} FROM armada_runs WHERE id = @P1"),
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        Ok(self
            .fetch(sql, "reading a run", run_from_row)
            .await?
            .into_iter()
            .next())
    }

    async fn runs(&self, after: Option<&str>, rows: i64) -> Result<Vec<Run>> {
        let mut sql = Sql::new(&format!("SELECT {RUN_COLUMNS} FROM armada_runs AS r"), MARK);
        if let Some(after) = after {
            // T-SQL has no row values: (created_ms, id) < cursor, spelled out.
            let cursor = sql.bind(Param::Text(Some(after)));
            sql.push(&format!(
                " JOIN armada_runs AS c ON c.id = {cursor} \
                 AND (r.created_ms < c.created_ms \
                 OR (r.created_ms = c.created_ms AND r.id < c.id))"
            ));
        }
        sql.push(" ORDER BY r.created_ms DESC, r.id DESC");
        limit(&mut sql, rows);
        self.fetch(sql, "listing runs", run_from_row).await
    }

    async fn run_exists(&self, run_id: &str) -> Result<bool> {
        let mut sql = Sql::new("SELECT 1 AS found FROM armada_runs WHERE id = @P1", MARK);
        sql.bind(Param::Text(Some(run_id)));
        Ok(!self
            .fetch(sql, "reading a run", |_| Ok(()))
            .await?
            .is_empty())
    }

    async fn jobs(
        &self,
        run_id: &str,
        filter: &JobFilter,
        keyset: &Keyset,
        rows: i64,
    ) -> Result<Vec<Job>> {
        let sql = Sql::new(&format!("SELECT {JOB_COLUMNS} FROM armada_jobs"), MARK);
        let mut sql = query::jobs_sql(sql, Dialect::SqlServer, run_id, filter, keyset);
        limit(&mut sql, rows);
        self.fetch(sql, "listing jobs", job_from_row).await
    }

    async fn job_indexes(&self, run_id: &str, span: Span, rows: i64) -> Result<Vec<u64>> {
        let mut sql = query::job_indexes_sql(Sql::new("", MARK), run_id, span);
        limit(&mut sql, rows);
        self.fetch(sql, "listing jobs", |row| row.u64("idx")).await
    }

    async fn job(&self, run_id: &str, index: u64) -> Result<Option<Job>> {
        let mut sql = Sql::new(
            &format!("SELECT {JOB_COLUMNS} FROM armada_jobs WHERE run_id = @P1 AND idx = @P2"),
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(index as i64)));
        Ok(self
            .fetch(sql, "reading a job", job_from_row)
            .await?
            .into_iter()
            .next())
    }

    async fn attachments(&self, run_id: &str, index: u64) -> Result<Vec<AttachmentInfo>> {
        let mut sql = Sql::new(
            "SELECT seq, job_idx, attempt, name, content_type, size FROM armada_attachments \
             WHERE run_id = @P1 AND job_idx = @P2 ORDER BY seq",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(index as i64)));
        self.fetch(sql, "listing attachments", attachment_from_row)
            .await
    }

    async fn attachment(&self, run_id: &str, seq: u64) -> Result<Option<(String, Vec<u8>)>> {
        let mut sql = Sql::new(
            "SELECT content_type, bytes FROM armada_attachments WHERE run_id = @P1 AND seq = @P2",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(seq as i64)));
        let found = self
            .fetch(sql, "reading an attachment", |row| {
                let content_type = row.required_text("content_type")?;
                let bytes = row
                    .try_get::<&[u8], _>("bytes")?
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                Ok((content_type, bytes))
            })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn events(
        &self,
        run_id: &str,
        filter: &EventFilter,
        after: u64,
        newest_first: bool,
        rows: i64,
    ) -> Result<Vec<Event>> {
        let sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM armada_events"), MARK);
        let mut sql = query::events_sql(sql, run_id, filter, after, newest_first);
        limit(&mut sql, rows);
        self.fetch(sql, "listing events", event_from_row).await
    }

    async fn agents(&self, run_id: &str) -> Result<Vec<Agent>> {
        let mut sql = Sql::new(
            &format!("SELECT {AGENT_COLUMNS} FROM armada_agents WHERE run_id = @P1 ORDER BY idx"),
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        self.fetch(sql, "listing agents", agent_from_row).await
    }

    async fn agent_jobs(&self, run_id: &str) -> Result<Vec<AgentJobs>> {
        let mut sql = Sql::new(
            "SELECT agent, status, COUNT_BIG(*) AS jobs, MIN(idx) AS [first] FROM armada_jobs \
             WHERE run_id = @P1 AND agent IS NOT NULL GROUP BY agent, status",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        self.fetch(sql, "listing agents", agent_jobs_from_row).await
    }

    async fn failures(&self, run_id: &str, rows: i64) -> Result<Vec<FailureGroup>> {
        let mut sql = Sql::new(
            "SELECT error, COUNT_BIG(*) AS jobs, MIN(idx) AS sample FROM armada_jobs \
             WHERE run_id = @P1 AND status = N'failed' GROUP BY error \
             ORDER BY COUNT_BIG(*) DESC, error",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        limit(&mut sql, rows);
        self.fetch(sql, "grouping failures", failure_from_row).await
    }

    async fn outputs(&self, run_id: &str, after: u64, rows: i64) -> Result<Vec<Output>> {
        let mut sql = Sql::new(
            &format!(
                "SELECT {OUTPUT_COLUMNS} FROM armada_outputs WHERE run_id = @P1 AND seq > @P2 ORDER BY seq"
            ),
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(after as i64)));
        limit(&mut sql, rows);
        self.fetch(sql, "listing outputs", output_from_row).await
    }

    async fn per_bucket(
        &self,
        run_id: &str,
        measure: Measure,
        origin: i64,
        width: i64,
    ) -> Result<Vec<(i64, String, u64)>> {
        let sql = query::per_bucket_sql(MARK, "COUNT_BIG(*)", run_id, measure, origin, width);
        self.fetch(sql, "charting jobs", query::bucket_from_row)
            .await
    }

    async fn duration_at(&self, run_id: &str, rank: u64) -> Result<Option<f64>> {
        let mut sql = Sql::new(
            "SELECT duration_ms FROM armada_jobs WHERE run_id = @P1 AND status = N'succeeded' \
             AND duration_ms IS NOT NULL ORDER BY duration_ms \
             OFFSET @P2 ROWS FETCH NEXT 1 ROWS ONLY",
            MARK,
        );
        sql.bind(Param::Text(Some(run_id)));
        sql.bind(Param::Int(Some(rank as i64)));
        let found = self
            .fetch(sql, "measuring durations", |row| row.float("duration_ms"))
            .await?;
        Ok(found.into_iter().next().flatten())
    }
}

/// T-SQL's `LIMIT`: the first `rows` rows of an ordered query.
fn limit(sql: &mut Sql<'_>, rows: i64) {
    let mark = sql.bind(Param::Int(Some(rows)));
    sql.push(&format!(" OFFSET 0 ROWS FETCH NEXT {mark} ROWS ONLY"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(url: &str) -> Result<MssqlUrl> {
        MssqlUrl::parse(url, &armada_core::backend::redact_url(url))
    }

    #[test]
    fn a_full_url_is_read() {
        let url = parse("mssql://sa:p%40ss%3Aw0rd@db.example:14330/armada").unwrap();
        assert_eq!(
            url,
            MssqlUrl {
                host: "db.example".into(),
                port: 14330,
                database: Some("armada".into()),
                user: "sa".into(),
                password: "p@ss:w0rd".into(),
                trust_server_certificate: false,
                encryption: EncryptionLevel::Required,
            }
        );
        assert_eq!(url.config().get_addr(), "db.example:14330");
    }

    #[test]
    fn defaults_and_flags() {
        let url = parse("mssql://sa:secret@localhost?trust_server_certificate=true&encrypt=false")
            .unwrap();
        assert_eq!((url.host.as_str(), url.port), ("localhost", 1433));
        assert_eq!(url.database, None);
        assert!(url.trust_server_certificate);
        assert_eq!(url.encryption, EncryptionLevel::Off);
        let url = parse("sqlserver://sa:secret@localhost/db/?encrypt=strict").unwrap();
        assert_eq!(url.database.as_deref(), Some("db"));
        assert_eq!(url.encryption, EncryptionLevel::Strict);
    }

    #[test]
    fn unencoded_at_signs_in_passwords_and_ipv6_hosts() {
        let url = parse("mssql://sa:a@b@[::1]:1500/monitor").unwrap();
        assert_eq!(url.password, "a@b");
        assert_eq!((url.host.as_str(), url.port), ("::1", 1500));
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for bad in [
            "mssql://localhost/db",
            "mssql://:secret@localhost/db",
            "mssql://sa:secret@/db",
            "mssql://sa:secret@localhost:port/db",
            "mssql://sa:secret@localhost/db?encrypt=maybe",
            "mssql://sa:secret@localhost/db?colour=blue",
            "mssql://sa:bad%zz@localhost/db",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(matches!(error, Error::Invalid(_)), "{bad}: {error:?}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }
}

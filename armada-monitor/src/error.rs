//! The monitor's error type.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the monitor: its store, its HTTP service, or what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's URL names no store this build knows.
    #[error("the monitor store URL `{url}` is not supported; use one of: {supported}")]
    UnsupportedUrl {
        /// The URL, password hidden.
        url: String,
        /// The schemes this build accepts.
        supported: &'static str,
    },
    /// The URL's store exists but is not compiled in.
    #[error(
        "the monitor store URL `{url}` needs the `{feature}` feature of the `armada` crate; \
         enable it in your Cargo.toml: armada = {{ version = \"…\", features = [\"{feature}\"] }}"
    )]
    FeatureMissing {
        /// The URL, password hidden.
        url: String,
        /// The cargo feature of `armada` that compiles the store in (`postgres`, `mssql`).
        feature: &'static str,
    },
    /// The store could not be opened or answered with an error.
    #[error(
        "the monitor store at {url} failed while {doing}: {source}; check that the database \
         runs and that the URL (host, port, user, password, database) is right"
    )]
    Store {
        /// The store's URL, password hidden.
        url: String,
        /// What the monitor was doing (`connecting`, `storing events`, …).
        doing: &'static str,
        /// The database driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The SQL Server store could not be opened or answered with an error.
    #[cfg(feature = "mssql")]
    #[error(
        "the monitor store at {url} failed while {doing}: {source}; check that SQL Server runs \
         and that the URL (host, port, user, password, database, and \
         ?trust_server_certificate=true for a self-signed certificate) is right"
    )]
    SqlServer {
        /// The store's URL, password hidden.
        url: String,
        /// What the monitor was doing (`migrating`, `storing events`, …).
        doing: &'static str,
        /// The database driver's error (boxed: tiberius' error is large, and every `Result` would carry it).
        #[source]
        source: Box<tiberius::error::Error>,
    },
    /// The store holds no such run.
    #[error("the monitor has no run `{0}`: check the run id (runs are listed at /api/v1/runs)")]
    UnknownRun(String),
    /// The run holds no such job.
    #[error("run `{run}` has no job {index}")]
    UnknownJob {
        /// The run id from the request.
        run: String,
        /// The job index asked for, not among the run's jobs.
        index: u64,
    },
    /// The run holds no such attachment.
    #[error("run `{run}` has no attachment {seq}")]
    UnknownAttachment {
        /// The run id from the request.
        run: String,
        /// The attachment's event number.
        seq: u64,
    },
    /// A request or batch that the monitor refuses; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The run is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// A request body is larger than the route accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The request needs the project's orchestrator, which this monitor does not have.
    #[error(
        "{0} needs the project's orchestrator service (the project binary's `serve` command), \
         which this monitor was not given"
    )]
    NoOrchestrator(&'static str),
    /// The service is doing as much as it allows (running runs, connections): the request may
    /// be tried again later.
    #[error("{0}")]
    Busy(String),
    /// A launch from the dashboard had problems in the project; every one is listed.
    #[error("{0}")]
    Project(armada_core::Diagnostics),
    /// The orchestrator refused or failed a request from the dashboard; its error, or what
    /// it answered, is the source and the whole message.
    #[error("{0}")]
    Orchestrator(#[source] armada_core::BoxError),
    /// A remote monitor or orchestrator service could not be reached or refused a request.
    #[error("the monitor at {url}: {source}")]
    Remote {
        /// The service's base URL, password hidden.
        url: String,
        /// The HTTP client's error, or what the service answered.
        #[source]
        source: armada_core::BoxError,
    },
    /// The HTTP service could not listen.
    #[error("cannot listen on {addr}: {source}; pick another address, or port 0 for any free one")]
    Listen {
        /// The address asked for (`HOST:PORT`).
        addr: String,
        /// The operating system's error (address in use, permission denied, …).
        #[source]
        source: std::io::Error,
    },
    /// A token is required on this address and none was given.
    #[error(
        "the monitor listens on {0}, which is not loopback: set a bearer token \
         (ARMADA_MONITOR_TOKEN) so that only your agents and people can reach it"
    )]
    TokenRequired(String),
    /// A folder for the store could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder that was to hold the store's file.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

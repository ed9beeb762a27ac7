use crate::{AgentIndex, BoxError, Diagnostics, RunId};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the vocabulary layer: bad project input, a backend URL that cannot be
/// served, or a run or record that a backend does not hold.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The project's files have problems; every one of them is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The URL's backend exists but is not compiled into this binary.
    #[error(
        "the {role} URL `{url}` needs the `{feature}` feature of the `armada` crate; \
         enable it in your Cargo.toml: armada = {{ version = \"…\", features = [\"{feature}\"] }}"
    )]
    FeatureMissing {
        /// Which seam the URL was for (`queue`, `config store`, `event sink`).
        role: &'static str,
        /// The URL, with any password hidden.
        url: String,
        /// The cargo feature that compiles the backend in.
        feature: &'static str,
    },
    /// No backend answers to this URL's scheme.
    #[error("the {role} URL `{url}` is not supported; use one of: {supported}")]
    UnsupportedUrl {
        /// Which seam the URL was for.
        role: &'static str,
        /// The URL, with any password hidden.
        url: String,
        /// The schemes this seam accepts.
        supported: &'static str,
    },
    /// A run id that cannot name queues, keys and folders.
    #[error("`{0}` is not a valid run id: use 1 to 64 ASCII letters, digits, `-` or `_`")]
    InvalidRunId(String),
    /// The store holds no such run.
    #[error(
        "run {0} is not in the config store: check the run id and that the agent uses the same \
         store URL as the launch (an in-memory store is only visible inside its own process)"
    )]
    RunNotFound(RunId),
    /// The run exists but holds no config for this agent index.
    #[error("run {run} has no config for agent {index}: the run was planned with fewer agents")]
    AgentConfigMissing {
        /// The run whose configs were searched.
        run: RunId,
        /// The agent index that was asked for, beyond the run's agent count.
        index: AgentIndex,
    },
    /// A run was created twice in one store.
    #[error("run {0} already exists in the store; launch with a new run id")]
    RunExists(RunId),
    /// A backend service could not be reached or refused an operation.
    #[error(
        "{service} at {url}: {source}; check that it runs and that the URL (host, port, \
         user, password) is right"
    )]
    Backend {
        /// Which service (`Redis`, `RabbitMQ`, `the monitor`).
        service: &'static str,
        /// Its URL, with any password hidden.
        url: String,
        /// The client's error (`redis::RedisError`, `lapin::Error`, …), possibly wrapped in
        /// context such as the outage limit that it outlasted.
        #[source]
        source: BoxError,
    },
    /// A record read from a backend is not what this build writes.
    #[error(
        "cannot decode {what} read from a backend: {source}; is it from another Armada version?"
    )]
    Decode {
        /// What was being decoded (`an agent config`, `a job result`, …).
        what: &'static str,
        /// The JSON parser's error: the record's shape or a value that does not fit.
        #[source]
        source: serde_json::Error,
    },
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file's path, as given.
        path: String,
        /// The operating system's error (not found, permission denied, …).
        #[source]
        source: std::io::Error,
    },
    /// The threads agents' scripts run on could not be started.
    #[error("cannot start the threads agents' scripts run on: {0}")]
    ScriptThreads(#[source] std::io::Error),
    /// A value could not be turned into JSON (for example a script output with a map whose keys
    /// are not strings).
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// What was being encoded (`a job message`, `a job output`, …).
        what: &'static str,
        /// The JSON encoder's error, such as a map key that is not a string.
        #[source]
        source: serde_json::Error,
    },
}

/// The cause of a [`Error::Backend`] whose service stayed unreachable for longer than its
/// outage limit: the last failure seen, with the limit it outlasted.
#[cfg(any(feature = "redis", feature = "rabbitmq"))]
#[derive(Debug, thiserror::Error)]
#[error("unreachable for longer than the outage limit of {limit:?}: {source}")]
pub(crate) struct OutageOutlasted {
    /// How long operations kept trying.
    pub(crate) limit: std::time::Duration,
    /// The last failure.
    #[source]
    pub(crate) source: BoxError,
}

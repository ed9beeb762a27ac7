/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad project input, or a backend that cannot be reached or is not compiled in.
    #[error(transparent)]
    Core(#[from] armada_core::Error),
    /// The results file could not be written.
    #[error("cannot write the results to {path}: {source}")]
    Results {
        /// The results file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `agent` or `cancel` was run against in-memory backends, which only exist inside
    /// `launch`.
    #[error(
        "this command works on a run held in shared backends, but the queue and config store \
         are in memory (an embedded run lives inside its `launch`; press Ctrl-C there to \
         cancel it); pass --queue amqp://… and --config-store redis://… (cargo features \
         `rabbitmq` and `redis`)"
    )]
    AgentNeedsSharedBackends,
    /// An agent process could not be started.
    #[error("cannot start agent process {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Agents as processes need backends other processes can reach.
    #[error(
        "agents run as processes need a shared queue and config store: pass --queue amqp://… \
         and --config-store redis://…, or run agents as tasks (--agents-as tasks)"
    )]
    ProcessesNeedSharedBackends,
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

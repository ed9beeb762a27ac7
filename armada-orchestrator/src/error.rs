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
    /// `agent` was run against in-memory backends, which only exist inside `launch`.
    #[error(
        "the `agent` subcommand runs one agent of a run held in shared backends, but the queue \
         and config store are in memory (agents of an embedded run are tasks inside `launch`); \
         pass --queue amqp://… and --config-store redis://… (cargo features `rabbitmq` and \
         `redis`)"
    )]
    AgentNeedsSharedBackends,
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

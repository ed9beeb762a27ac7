/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a command. The libraries' errors come through unchanged; the variants of
/// this crate are about the command line itself, and may name its flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad project input, or a backend that cannot be reached or is not compiled in.
    #[error(transparent)]
    Core(#[from] armada_core::Error),
    /// Publishing, launching or following the run failed.
    #[error(transparent)]
    Orchestrator(#[from] armada_orchestrator::Error),
    /// The monitor refused or could not store something.
    #[error(transparent)]
    Monitor(armada_monitor::Error),
    /// Standard output could not be written.
    #[error("cannot write to {what}: {source}")]
    Output {
        /// Standard output, or the file named by `--output`.
        what: String,
        /// The operating system's error (a closed pipe, a full disk, …).
        #[source]
        source: std::io::Error,
    },
    /// `agent`, `cancel`, `attach` or `results` was run against in-memory backends, which
    /// only exist inside the `launch` that made them.
    #[error(
        "this command works on a run held in shared backends, but the queue and config store \
         are in memory (an embedded run lives inside its `launch`; press Ctrl-C there to \
         cancel it); pass --queue amqp://… and --config-store redis://… (cargo features \
         `rabbitmq` and `redis`)"
    )]
    AgentNeedsSharedBackends,
    /// Agents as processes need backends other processes can reach.
    #[error(
        "--agents-as processes (or external) needs a queue and a config store that other \
         processes reach: pass --queue amqp://… and --config-store redis://…, or run agents \
         as tasks"
    )]
    ProcessesNeedSharedBackends,
    /// A detached launch whose agents would live in the launching process.
    #[error(
        "--detach needs agents that outlive this process: shared backends (--queue amqp://… \
         and --config-store redis://…) with agents as processes, or --target kubernetes"
    )]
    DetachNeedsSharedBackends,
    /// `--name` and `--tag` that are each fine but not together (too many tags).
    #[error("--name/--tag: {0}")]
    Label(String),
    /// `--dry-run` shows the Kubernetes Job a launch would create.
    #[error("--dry-run prints the Kubernetes Job a launch would create: add --target kubernetes")]
    DryRunNeedsKubernetes,
    /// `--target kubernetes` in a binary built without the feature.
    #[error(
        "--target kubernetes needs the `kubernetes` feature: depend on armada with \
         `features = [\"kubernetes\"]` and build the project again"
    )]
    KubernetesNotCompiled,
    /// Pods cannot reach backends held in this process.
    #[error(
        "agents on Kubernetes need a shared queue and config store: pass --queue amqp://… and \
         --config-store redis://… as this machine reaches them (the pods read theirs from the \
         Secret named by run_message.kubernetes.backends_secret)"
    )]
    KubernetesNeedsSharedBackends,
    /// A run's results were asked for before it ended.
    #[error(
        "run {run} has not ended yet ({terminal} of {jobs} jobs done): its results are not final"
    )]
    RunNotEnded {
        /// The run whose results were asked for.
        run: armada_core::RunId,
        /// Jobs that reached a final status so far.
        terminal: u64,
        /// Jobs the run was planned with.
        jobs: u64,
    },
    /// The dashboard or service would listen beyond loopback without a token.
    #[error(
        "{0} is not a loopback address: pass --monitor-token (or set ARMADA_MONITOR_TOKEN) so \
         that only your agents and people can reach the dashboard, or listen on 127.0.0.1"
    )]
    TokenRequired(String),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<armada_monitor::Error> for Error {
    /// The monitor's refusal to listen without a token names the flag that gives one.
    fn from(error: armada_monitor::Error) -> Self {
        match error {
            armada_monitor::Error::TokenRequired(addr) => Self::TokenRequired(addr),
            other => Self::Monitor(other),
        }
    }
}

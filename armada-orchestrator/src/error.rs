/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad project input, or a backend that cannot be reached or is not compiled in.
    #[error(transparent)]
    Core(#[from] armada_core::Error),
    /// The monitor refused or could not store something.
    #[error(transparent)]
    Monitor(#[from] armada_monitor::Error),
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
        "agents run as processes (or started elsewhere) need a queue and a config store that \
         other processes reach (amqp://… and redis://… URLs), or agents run as tasks of this \
         process"
    )]
    ProcessesNeedSharedBackends,
    /// A detached launch whose agents would live in the launching process.
    #[error(
        "a detached run needs agents that outlive the launching process: shared backends \
         (Redis and RabbitMQ) with agents as processes, or on Kubernetes"
    )]
    DetachNeedsSharedBackends,
    /// A run that ended cannot be canceled.
    #[error("run {run} already ended: {status}")]
    RunEnded {
        /// The run.
        run: armada_core::RunId,
        /// How it ended.
        status: &'static str,
    },
    /// A run's results were asked for before it ended.
    #[error(
        "run {run} has not ended yet ({terminal} of {jobs} jobs done): its results are not final"
    )]
    RunNotEnded {
        /// The run.
        run: armada_core::RunId,
        /// Jobs done.
        terminal: u64,
        /// Jobs planned.
        jobs: u64,
    },
    /// The task following a run was stopped before the run ended: its runtime shut down.
    #[error("the task following the run was stopped before the run ended")]
    RunTaskStopped,
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
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
    /// A bad value in `run_message.kubernetes` (or a Kubernetes option).
    #[cfg(feature = "kubernetes")]
    #[error("{field}: {message}")]
    KubernetesSettings {
        /// Where (`run_message.kubernetes.resources.limits.memory`).
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A run id that cannot name a Kubernetes Job.
    #[cfg(feature = "kubernetes")]
    #[error(
        "run id {0:?} cannot name a Kubernetes Job: use at most 50 letters, digits and '-', \
         ending with a letter or digit"
    )]
    KubernetesRunId(String),
    /// No kubeconfig and not inside a cluster.
    #[cfg(feature = "kubernetes")]
    #[error(
        "cannot find a Kubernetes configuration ({0}): set KUBECONFIG or write ~/.kube/config \
         (its current context is used), or run inside a cluster"
    )]
    KubernetesConfig(String),
    /// A Kubernetes API request failed.
    #[cfg(feature = "kubernetes")]
    #[error("cannot {action} on Kubernetes: {source}{}", kube_hint(source))]
    Kubernetes {
        /// What was attempted.
        action: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Objects could not be written as YAML.
    #[cfg(feature = "kubernetes")]
    #[error("cannot write YAML: {0}")]
    Yaml(String),
}

/// What to do about a failed Kubernetes request.
#[cfg(feature = "kubernetes")]
fn kube_hint(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.code == 401 => {
            " (the credentials of the current kubeconfig context were refused)"
        }
        kube::Error::Api(status) if status.code == 403 => {
            " (the Role of `orchestrate manifests` grants what the launcher needs: bind it to \
             the identity you use)"
        }
        kube::Error::Api(status) if status.code == 404 => {
            " (does the namespace exist? `orchestrate manifests | kubectl apply -f -` creates it)"
        }
        kube::Error::Api(status) if status.code == 409 => {
            " (an object of that name exists already)"
        }
        kube::Error::Api(status) if status.code == 422 => {
            " (the cluster rejected the object: check run_message.kubernetes, and that the \
             cluster runs Kubernetes 1.33 or later)"
        }
        _ => "",
    }
}

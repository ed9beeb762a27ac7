/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the orchestrator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
        /// The path of the `results.jsonl` being written.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An agent process could not be started.
    #[error("cannot start agent process {program}: {source}")]
    Spawn {
        /// The agent program's path, or `the current executable`.
        program: String,
        /// The operating system's error (not found, not executable, …).
        #[source]
        source: std::io::Error,
    },
    /// A run that ended cannot be canceled.
    #[error("run {run} already ended: {status}")]
    RunEnded {
        /// The run that was to be canceled.
        run: armada_core::RunId,
        /// How it ended (`completed`, `canceled`, …).
        status: &'static str,
    },
    /// The task following a run was stopped before the run ended: its runtime shut down.
    #[error("the task following the run was stopped before the run ended")]
    RunTaskStopped,
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
    /// No kubeconfig and not inside a cluster; the source says why each was refused.
    #[cfg(feature = "kubernetes")]
    #[error(
        "cannot find a Kubernetes configuration ({0}): set KUBECONFIG or write ~/.kube/config \
         (its current context is used), or run inside a cluster"
    )]
    KubernetesConfig(#[source] kube::config::InferConfigError),
    /// A Kubernetes API request failed.
    #[cfg(feature = "kubernetes")]
    #[error("cannot {action} on Kubernetes: {source}{}", kube_hint(source))]
    Kubernetes {
        /// What was attempted (`create Job … in namespace …`, `list the pods of run …`, …).
        action: String,
        /// The client's error: the API server's answer, or why it could not be reached.
        #[source]
        source: kube::Error,
    },
    /// Objects could not be written as YAML.
    #[cfg(feature = "kubernetes")]
    #[error("cannot write YAML: {0}")]
    Yaml(#[source] serde_saphyr::ser::Error),
}

/// What to do about a failed Kubernetes request.
#[cfg(feature = "kubernetes")]
fn kube_hint(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.code == 401 => {
            " (the credentials of the current kubeconfig context were refused)"
        }
        kube::Error::Api(status) if status.code == 403 => {
            " (the Role in the stack's manifests grants what the launcher needs: bind it to \
             the identity you use)"
        }
        kube::Error::Api(status) if status.code == 404 => {
            " (does the namespace exist? the stack's manifests create it)"
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

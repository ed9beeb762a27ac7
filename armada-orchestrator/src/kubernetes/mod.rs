//! The Kubernetes launcher (feature `kubernetes`): the only code of Armada that knows the
//! Kubernetes API.
//!
//! - [`agent_job`]: a run as one `batch/v1` Job, completion mode `Indexed`, one pod per agent
//!   (the completion index is the agent index), `restartPolicy: Never`,
//!   `backoffLimitPerIndex`, a pod failure policy that ignores disruptions (evictions,
//!   preemptions), `ttlSecondsAfterFinished`. Its settings come from `run_message.kubernetes`
//!   ([`KubernetesSettings`]). The pods get the backend URLs from a Secret (`envFrom`), never
//!   as values in the Job.
//! - [`KubernetesLauncher`] ([`Launcher::Kubernetes`](crate::Launcher::Kubernetes)): creates
//!   the Job, watches its pods and reports each agent's pod going through scheduled, running,
//!   succeeded or failed (with the reason, such as `OOMKilled`) to tracing and the run's
//!   monitor; each agent ends when its pod succeeds or when Kubernetes gives it up.
//! - [`delete_job`] (cancel, foreground propagation) and [`list_agent_pods`] (`status`).
//! - [`stack`]: the objects of a deployable stack (namespace, RBAC, Secret templates, the
//!   monitor, PostgreSQL, Redis, RabbitMQ), printed by `orchestrate manifests`.
//!
//! Everything here was tested against a fake API server only (see `docs/kubernetes.md`).

mod job;
mod launcher;
mod manifests;
mod settings;

use std::collections::BTreeMap;

use serde::Serialize;

pub use job::{agent_job, job_name, run_selector};
pub use launcher::{
    AgentPod, KubernetesLauncher, PodStage, client, connect, delete_job, list_agent_pods,
};
pub use manifests::{StackObject, StackOptions, stack};
pub use settings::{
    DEFAULT_BACKENDS_SECRET, DEFAULT_NAMESPACE, KubernetesSettings, PullPolicy, ResourceAmounts,
    Resources, SecretEnv, Toleration,
};

use crate::{Error, Result};

/// Label holding the run id, on the Job and its pods.
pub const LABEL_RUN: &str = "armada.run/run-id";
/// Label holding the project's name, on the Job and its pods.
pub const LABEL_PROJECT: &str = "armada.run/project";

/// The recommended labels of an object of the stack.
fn labels_of_stack(name: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", name),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/part-of", "armada"),
        ("app.kubernetes.io/managed-by", "armada-orchestrator"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// Objects as a multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object).map_err(Error::Yaml)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

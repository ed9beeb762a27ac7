//! The Indexed Job of a run: one pod per agent, the completion index being the agent index.

use std::collections::BTreeMap;

use armada_core::{AgentExit, RunId};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::settings::{KubernetesSettings, ResourceAmounts};
use super::{LABEL_PROJECT, LABEL_RUN, labels_of_stack};
use crate::{Error, Result};

/// The agent container's name.
pub(crate) const CONTAINER: &str = "agent";
/// Longest Job name: a pod's host name is `<job>-<index>` and must fit in 63 characters.
const MAX_JOB_NAME: usize = 57;

/// The name of a run's Job: `armada-<run id>`, lowercased, `_` as `-`.
pub fn job_name(run_id: &RunId) -> Result<String> {
    let name = format!(
        "armada-{}",
        run_id.as_str().to_ascii_lowercase().replace('_', "-")
    );
    if name.len() > MAX_JOB_NAME || name.ends_with('-') {
        return Err(Error::KubernetesRunId(run_id.to_string()));
    }
    Ok(name)
}

/// The label selector of a run's pods (and Job).
pub fn run_selector(run_id: &RunId) -> String {
    format!("{LABEL_RUN}={}", run_id.as_str())
}

/// A label value for the project: at most 63 of its letters, digits, `-`, `_` and `.`, starting
/// and ending with a letter or digit.
pub(crate) fn project_label(project: &str) -> String {
    let cleaned: String = project
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "project".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The Job that runs `agents` agents of the run `run_id` of `project`. It holds no secret:
/// the backend URLs reach the pods from the Secret named by `backends_secret`.
pub fn agent_job(
    run_id: &RunId,
    project: &str,
    agents: u32,
    settings: &KubernetesSettings,
) -> Result<Job> {
    let name = job_name(run_id)?;
    let agents = i32::try_from(agents).map_err(|_| Error::KubernetesSettings {
        field: "run_message.agents".into(),
        message: format!("{agents} agents is more than a Job can have"),
    })?;
    let mut labels = labels_of_stack("armada-agent", "agent");
    labels.insert(LABEL_RUN.into(), run_id.to_string());
    labels.insert(LABEL_PROJECT.into(), project_label(project));

    let mut env: Vec<EnvVar> = settings
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        })
        .collect();
    env.extend(settings.secret_env.iter().map(|secret| EnvVar {
        name: secret.name.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.secret.clone(),
                key: secret.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));

    let container = Container {
        name: CONTAINER.into(),
        image: Some(settings.image().to_owned()),
        image_pull_policy: settings.image_pull_policy.map(|p| p.as_str().to_owned()),
        // The image's entrypoint is the project binary under tini; the agent's index comes
        // from JOB_COMPLETION_INDEX, which the Job controller sets in every pod.
        args: Some(vec!["agent".into(), "--run-id".into(), run_id.to_string()]),
        env: (!env.is_empty()).then_some(env),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: settings.backends_secret.clone(),
                optional: None,
            }),
            ..EnvFromSource::default()
        }]),
        resources: settings
            .resources
            .as_ref()
            .map(|resources| ResourceRequirements {
                requests: resources.requests.as_ref().map(amounts),
                limits: resources.limits.as_ref().map(amounts),
                ..ResourceRequirements::default()
            }),
        volume_mounts: Some(vec![VolumeMount {
            name: "dshm".into(),
            mount_path: "/dev/shm".into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        service_account_name: settings.service_account.clone(),
        automount_service_account_token: Some(false),
        image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
            settings
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
        tolerations: (!settings.tolerations.is_empty()).then(|| {
            settings
                .tolerations
                .iter()
                .map(|toleration| Toleration {
                    key: toleration.key.clone(),
                    operator: toleration.operator.clone(),
                    value: toleration.value.clone(),
                    effect: toleration.effect.clone(),
                    toleration_seconds: toleration.toleration_seconds,
                })
                .collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(settings.shm_size.clone())),
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };

    let to_i32 = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(agents),
            parallelism: Some(agents),
            backoff_limit_per_index: Some(to_i32(settings.backoff_limit_per_index)),
            max_failed_indexes: settings.max_failed_indexes.map(to_i32),
            // Evictions, preemptions and node drains are not the agent's fault, and an agent
            // that ended to free a thread its script held settled that job first: the pod is
            // replaced without counting against backoffLimitPerIndex.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                        on_exit_codes: None,
                    },
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: None,
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(CONTAINER.into()),
                            operator: "In".into(),
                            values: vec![i32::from(AgentExit::BLOCKED_EXIT_CODE)],
                        }),
                    },
                ],
            }),
            ttl_seconds_after_finished: Some(to_i32(settings.ttl_seconds_after_finished)),
            active_deadline_seconds: settings
                .active_deadline_seconds
                .map(|seconds| i64::try_from(seconds).unwrap_or(i64::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

fn amounts(amounts: &ResourceAmounts) -> BTreeMap<String, Quantity> {
    [("cpu", &amounts.cpu), ("memory", &amounts.memory)]
        .into_iter()
        .filter_map(|(name, quantity)| Some((name.to_owned(), Quantity(quantity.clone()?))))
        .collect()
}

//! `run_message.kubernetes`: how a run's agents are shaped as pods.

use std::collections::BTreeMap;

use armada_core::RunSettings;
use serde::Deserialize;

use crate::{Error, Result};

/// The Secret holding the backend URLs agents connect to, unless `backends_secret` says
/// otherwise.
pub const DEFAULT_BACKENDS_SECRET: &str = "armada-backends";
/// The namespace of runs and of the stack, unless `namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "armada";

/// `run_message.kubernetes`, typed. Every field is optional except the image, which may also
/// be given as `run_message.image`. Unknown keys are errors.
///
/// ```json
/// "kubernetes": {
///   "image": "registry.example.com/my-project:1.4.0",
///   "image_pull_secrets": ["registry"],
///   "namespace": "armada",
///   "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
///                 "limits": {"memory": "2Gi"}},
///   "shm_size": "1Gi",
///   "node_selector": {"pool": "browsers"},
///   "tolerations": [{"key": "browsers", "operator": "Exists", "effect": "NoSchedule"}],
///   "env": {"RUST_LOG": "info"},
///   "secret_env": [{"name": "PROXY_PASSWORD", "secret": "proxies", "key": "password"}]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The project's image (see `cargo xtask image`); falls back to `run_message.image`.
    #[serde(default)]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`; Kubernetes' default when absent.
    #[serde(default)]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets holding registry credentials.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Where the Job is created (default `armada`, the namespace of `orchestrate manifests`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The agents' service account (default: the namespace's `default`). Agents do not call
    /// the Kubernetes API; their token is not mounted.
    #[serde(default)]
    pub service_account: Option<String>,
    /// CPU and memory of each agent; falls back to `run_message.resources`.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Size of `/dev/shm`, where Chromium keeps its shared memory (default `1Gi`). It is
    /// memory: it counts against the memory limit.
    #[serde(default = "default_shm_size")]
    pub shm_size: String,
    /// Nodes the agents may run on, by label.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the agents tolerate.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Extra environment variables with plain values (never secrets: they are visible in the
    /// Job).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra environment variables read from Secrets.
    #[serde(default)]
    pub secret_env: Vec<SecretEnv>,
    /// The Secret whose keys become the agents' environment: `ARMADA_STORE_URL`,
    /// `ARMADA_QUEUE_URL`, `ARMADA_MONITOR_URL` (default `armada-backends`).
    #[serde(default = "default_backends_secret")]
    pub backends_secret: String,
    /// Times one agent's pod is replaced after failing (OOMKilled, crashed) before that agent
    /// is given up (default 2). Evictions and preemptions do not count.
    #[serde(default = "default_backoff_limit_per_index")]
    pub backoff_limit_per_index: u32,
    /// Agents that may be given up before the whole Job fails (default: any).
    #[serde(default)]
    pub max_failed_indexes: Option<u32>,
    /// Seconds a finished Job and its pods (and their logs) are kept (default 3600).
    #[serde(default = "default_ttl_seconds_after_finished")]
    pub ttl_seconds_after_finished: u32,
    /// Seconds after which Kubernetes stops the whole Job, whatever its state (default: none).
    #[serde(default)]
    pub active_deadline_seconds: Option<u64>,
}

/// When the kubelet pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    /// Pull on every pod start, even when the node has the image.
    Always,
    /// Only when the node does not have it.
    IfNotPresent,
    /// Never: the image must be on the node.
    Never,
}

impl PullPolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Requests and limits of one agent's container.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default)]
    pub requests: Option<ResourceAmounts>,
    /// What the container may not exceed (over the memory limit, it is OOMKilled).
    #[serde(default)]
    pub limits: Option<ResourceAmounts>,
}

/// CPU and memory in Kubernetes quantities (`500m`, `2`, `1Gi`, `512Mi`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPU (`500m`, `1`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory (`512Mi`, `2Gi`).
    #[serde(default)]
    pub memory: Option<String>,
}

/// A taint the agents tolerate, as in a pod spec (snake_case keys).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    /// The taint's key; empty with `Exists` tolerates everything.
    #[serde(default)]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: Option<String>,
    /// The taint's value, with `Equal`.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty matches all.
    #[serde(default)]
    pub effect: Option<String>,
    /// With `NoExecute`: how long the pod stays once tainted.
    #[serde(default)]
    pub toleration_seconds: Option<i64>,
}

/// An environment variable read from a key of a Secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEnv {
    /// The environment variable's name in the agent container.
    pub name: String,
    /// The Secret, in the run's namespace.
    pub secret: String,
    /// The key in the Secret whose value the variable gets.
    pub key: String,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}
fn default_shm_size() -> String {
    "1Gi".to_owned()
}
fn default_backends_secret() -> String {
    DEFAULT_BACKENDS_SECRET.to_owned()
}
fn default_backoff_limit_per_index() -> u32 {
    2
}
fn default_ttl_seconds_after_finished() -> u32 {
    3600
}

impl KubernetesSettings {
    /// Reads `run_message.kubernetes` (and the `image` and `resources` it falls back to) and
    /// checks every value; an error names the field and says what is expected.
    pub fn from_run_settings(settings: &RunSettings) -> Result<Self> {
        let value = settings
            .kubernetes
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        let mut parsed: Self = parse(value, "run_message.kubernetes")?;
        if parsed.image.is_none() {
            parsed.image.clone_from(&settings.image);
        }
        if parsed.resources.is_none()
            && let Some(resources) = &settings.resources
        {
            parsed.resources = Some(parse(resources.clone(), "run_message.resources")?);
        }
        parsed.check()?;
        Ok(parsed)
    }

    /// The image, checked by [`KubernetesSettings::from_run_settings`].
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        self.check_image()?;
        self.check_object_names()?;
        self.check_quantities()?;
        self.check_env()?;
        self.check_numbers()
    }

    fn check_image(&self) -> Result<()> {
        match self.image.as_deref() {
            None => Err(problem(
                "image",
                "missing: name the project's image (built from the Dockerfile that `cargo \
                 xtask image` writes), here or as run_message.image"
                    .into(),
            )),
            Some(image) if image.trim().is_empty() || image.chars().any(char::is_whitespace) => {
                Err(problem(
                    "image",
                    format!("{image:?} is not an image reference"),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    fn check_object_names(&self) -> Result<()> {
        check_dns_label(&self.namespace).map_err(|message| problem("namespace", message))?;
        check_dns_subdomain(&self.backends_secret)
            .map_err(|message| problem("backends_secret", message))?;
        if let Some(account) = &self.service_account {
            check_dns_subdomain(account).map_err(|message| problem("service_account", message))?;
        }
        for (index, secret) in self.image_pull_secrets.iter().enumerate() {
            check_dns_subdomain(secret)
                .map_err(|message| problem(&format!("image_pull_secrets[{index}]"), message))?;
        }
        Ok(())
    }

    fn check_quantities(&self) -> Result<()> {
        check_quantity(&self.shm_size).map_err(|message| problem("shm_size", message))?;
        let Some(resources) = &self.resources else {
            return Ok(());
        };
        for (kind, amounts) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            let Some(amounts) = amounts else { continue };
            for (name, quantity) in [("cpu", &amounts.cpu), ("memory", &amounts.memory)] {
                if let Some(quantity) = quantity {
                    check_quantity(quantity)
                        .map_err(|message| problem(&format!("resources.{kind}.{name}"), message))?;
                }
            }
        }
        Ok(())
    }

    fn check_env(&self) -> Result<()> {
        for name in self.env.keys() {
            check_env_name(name).map_err(|message| problem(&format!("env.{name}"), message))?;
        }
        for (index, secret) in self.secret_env.iter().enumerate() {
            let field = |name: &str| format!("secret_env[{index}].{name}");
            check_env_name(&secret.name).map_err(|message| problem(&field("name"), message))?;
            check_dns_subdomain(&secret.secret)
                .map_err(|message| problem(&field("secret"), message))?;
            if secret.key.is_empty() {
                return Err(problem(&field("key"), "must not be empty".into()));
            }
        }
        Ok(())
    }

    /// The Job holds these as `int32` (the deadline as `int64`): a larger value is refused
    /// here rather than clamped when the Job is made.
    fn check_numbers(&self) -> Result<()> {
        for (field, value) in [
            (
                "backoff_limit_per_index",
                Some(self.backoff_limit_per_index),
            ),
            ("max_failed_indexes", self.max_failed_indexes),
            (
                "ttl_seconds_after_finished",
                Some(self.ttl_seconds_after_finished),
            ),
        ] {
            if value.is_some_and(|value| i32::try_from(value).is_err()) {
                return Err(problem(field, "is too large for Kubernetes".into()));
            }
        }
        if self
            .active_deadline_seconds
            .is_some_and(|seconds| seconds == 0 || i64::try_from(seconds).is_err())
        {
            return Err(problem(
                "active_deadline_seconds",
                "must be a positive number of seconds".into(),
            ));
        }
        Ok(())
    }
}

fn problem(field: &str, message: String) -> Error {
    Error::KubernetesSettings {
        field: format!("run_message.kubernetes.{field}"),
        message,
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        Error::KubernetesSettings {
            field: if path == "." {
                at.to_owned()
            } else {
                format!("{at}.{path}")
            },
            message: error.into_inner().to_string(),
        }
    })
}

/// A DNS-1123 label: what namespaces and label-like names must be.
pub(crate) fn check_dns_label(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Kubernetes name: at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// A DNS-1123 subdomain: what Secret and service account names must be.
fn check_dns_subdomain(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| check_dns_label(part).is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Kubernetes object name: lowercase letters, digits, '-' and '.'"
        ))
    }
}

/// A Kubernetes quantity: a decimal number and an optional suffix.
fn check_quantity(quantity: &str) -> std::result::Result<(), String> {
    const SUFFIXES: [&str; 15] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n",
    ];
    let number_end = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(number_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if number_ok && SUFFIXES.contains(&suffix) {
        Ok(())
    } else {
        Err(format!(
            "{quantity:?} is not a Kubernetes quantity (such as 500m, 2, 512Mi, 1Gi)"
        ))
    }
}

fn check_env_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not an environment variable name"))
    }
}

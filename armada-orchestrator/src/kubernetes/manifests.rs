//! The stack a cluster needs before its first run, as typed objects.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service,
    ServiceAccount, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::labels_of_stack;
use super::settings::{DEFAULT_BACKENDS_SECRET, DEFAULT_NAMESPACE, check_dns_label};
use crate::{Error, Result};

/// The Secret of the services' own passwords and the monitor's store URL.
const SERVICES_SECRET: &str = "armada-services";
/// The service account of an orchestrator running inside the cluster.
const ORCHESTRATOR: &str = "armada-orchestrator";

/// What the stack is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOptions {
    /// The namespace of the stack and of the runs (default `armada`).
    pub namespace: String,
    /// An image holding the `armada-monitor` binary.
    pub monitor_image: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            monitor_image: "armada-monitor:latest".to_owned(),
        }
    }
}

/// One object of the stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StackObject {
    /// The namespace of the stack and of the runs ([`StackOptions::namespace`]).
    Namespace(Namespace),
    /// A service account: the orchestrator's, or the agents' (no API token mounted).
    ServiceAccount(ServiceAccount),
    /// The orchestrator's permissions.
    Role(Role),
    /// Gives the orchestrator's service account its permissions.
    RoleBinding(RoleBinding),
    /// A Secret template (placeholder values to replace).
    Secret(Secret),
    /// The persistent volume of a service that keeps data (PostgreSQL, RabbitMQ).
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// A service's pods.
    Deployment(Box<Deployment>),
    /// A service's address.
    Service(Service),
}

/// The stack: the namespace; RBAC (a service account for an orchestrator in the cluster with
/// a Role limited to creating, watching and deleting Jobs and reading pods and their logs, and
/// a service account for agents with no permission); the Secret templates (placeholder values:
/// replace every `CHANGE-ME`); and a Deployment and Service for the monitor, PostgreSQL (its
/// store), Redis (agent configs and run state) and RabbitMQ (jobs).
pub fn stack(options: &StackOptions) -> Result<Vec<StackObject>> {
    let namespace = options.namespace.as_str();
    check_dns_label(namespace).map_err(|message| Error::KubernetesSettings {
        field: "the stack's namespace".into(),
        message,
    })?;
    let meta = |name: &str, component: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels_of_stack(name, component)),
        ..ObjectMeta::default()
    };
    let mut objects = vec![
        StackObject::Namespace(Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                labels: Some({
                    let mut labels = labels_of_stack(namespace, "namespace");
                    // Agents would pass `restricted`; the services' images start as root.
                    labels.insert(
                        "pod-security.kubernetes.io/enforce".into(),
                        "baseline".into(),
                    );
                    labels
                }),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }),
        StackObject::ServiceAccount(ServiceAccount {
            metadata: meta(ORCHESTRATOR, "orchestrator"),
            ..ServiceAccount::default()
        }),
        StackObject::Role(Role {
            metadata: meta(ORCHESTRATOR, "orchestrator"),
            rules: Some(vec![
                rule(
                    "batch",
                    "jobs",
                    &["create", "get", "list", "watch", "delete"],
                ),
                rule("", "pods", &["get", "list", "watch"]),
                rule("", "pods/log", &["get"]),
            ]),
        }),
        StackObject::RoleBinding(RoleBinding {
            metadata: meta(ORCHESTRATOR, "orchestrator"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: ORCHESTRATOR.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: ORCHESTRATOR.into(),
                namespace: Some(namespace.to_owned()),
                api_group: None,
            }]),
        }),
        StackObject::ServiceAccount(ServiceAccount {
            metadata: meta("armada-agent", "agent"),
            // Agents never call the Kubernetes API.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        }),
        secret(
            meta(DEFAULT_BACKENDS_SECRET, "backends"),
            &[
                (
                    "ARMADA_STORE_URL",
                    "redis://:CHANGE-ME-redis@armada-redis:6379",
                ),
                (
                    "ARMADA_QUEUE_URL",
                    "amqp://armada:CHANGE-ME-rabbitmq@armada-rabbitmq:5672/%2f",
                ),
                ("ARMADA_MONITOR_URL", "http://armada-monitor:8080"),
                ("ARMADA_MONITOR_TOKEN", "CHANGE-ME-monitor-token"),
            ],
        ),
        secret(
            meta(SERVICES_SECRET, "services"),
            &[
                ("REDIS_PASSWORD", "CHANGE-ME-redis"),
                ("RABBITMQ_DEFAULT_USER", "armada"),
                ("RABBITMQ_DEFAULT_PASS", "CHANGE-ME-rabbitmq"),
                ("POSTGRES_PASSWORD", "CHANGE-ME-postgres"),
                (
                    "ARMADA_MONITOR_STORE",
                    "postgres://armada:CHANGE-ME-postgres@armada-postgres:5432/armada",
                ),
                ("ARMADA_MONITOR_TOKEN", "CHANGE-ME-monitor-token"),
            ],
        ),
    ];

    let monitor = StackService {
        name: "armada-monitor",
        component: "monitor",
        image: &options.monitor_image,
        args: vec![],
        env: vec![
            plain("ARMADA_MONITOR_LISTEN", "0.0.0.0:8080"),
            from_secret("ARMADA_MONITOR_STORE"),
            // Beyond loopback the monitor refuses to start without a token.
            from_secret("ARMADA_MONITOR_TOKEN"),
        ],
        ports: vec![("http", 8080)],
        probe: Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::String("http".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        },
        storage: None,
        requests: ("100m", "128Mi"),
    };
    let postgres = StackService {
        name: "armada-postgres",
        component: "monitor-store",
        image: "postgres:17",
        args: vec![],
        env: vec![
            plain("POSTGRES_USER", "armada"),
            plain("POSTGRES_DB", "armada"),
            from_secret("POSTGRES_PASSWORD"),
            // The volume's root holds lost+found; PostgreSQL wants an empty folder.
            plain("PGDATA", "/var/lib/postgresql/data/pgdata"),
        ],
        ports: vec![("postgres", 5432)],
        probe: Probe {
            exec: Some(ExecAction {
                command: Some(vec!["pg_isready".into(), "-U".into(), "armada".into()]),
            }),
            ..Probe::default()
        },
        storage: Some(("/var/lib/postgresql/data", "10Gi")),
        requests: ("250m", "256Mi"),
    };
    let redis = StackService {
        name: "armada-redis",
        component: "config-store",
        image: "redis:7-alpine",
        // Run state lives as long as its run: no persistence.
        args: vec![
            "--requirepass",
            "$(REDIS_PASSWORD)",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        env: vec![from_secret("REDIS_PASSWORD")],
        ports: vec![("redis", 6379)],
        probe: tcp_probe("redis"),
        storage: None,
        requests: ("100m", "128Mi"),
    };
    let rabbitmq = StackService {
        name: "armada-rabbitmq",
        component: "queue",
        image: "rabbitmq:3-management-alpine",
        args: vec![],
        env: vec![
            from_secret("RABBITMQ_DEFAULT_USER"),
            from_secret("RABBITMQ_DEFAULT_PASS"),
            // The data folder is named after the node: keep one name across pods.
            plain("RABBITMQ_NODENAME", "rabbit@localhost"),
        ],
        ports: vec![("amqp", 5672), ("management", 15672)],
        probe: tcp_probe("amqp"),
        storage: Some(("/var/lib/rabbitmq", "5Gi")),
        requests: ("250m", "512Mi"),
    };
    for service in [monitor, postgres, redis, rabbitmq] {
        objects.extend(service.objects(&meta));
    }
    Ok(objects)
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|&verb| verb.to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn secret(metadata: ObjectMeta, values: &[(&str, &str)]) -> StackObject {
    StackObject::Secret(Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some(
            values
                .iter()
                .map(|&(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        ),
        ..Secret::default()
    })
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn from_secret(key: &str) -> EnvVar {
    EnvVar {
        name: key.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: SERVICES_SECRET.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn tcp_probe(port: &str) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.to_owned()),
            host: None,
        }),
        ..Probe::default()
    }
}

/// A service of the stack: one Deployment (one replica), one Service, maybe a volume claim.
struct StackService<'a> {
    name: &'a str,
    component: &'a str,
    image: &'a str,
    args: Vec<&'a str>,
    env: Vec<EnvVar>,
    ports: Vec<(&'a str, i32)>,
    probe: Probe,
    /// Mount path and size of a persistent volume.
    storage: Option<(&'a str, &'a str)>,
    /// CPU and memory requests.
    requests: (&'a str, &'a str),
}

impl StackService<'_> {
    fn objects(self, meta: &dyn Fn(&str, &str) -> ObjectMeta) -> Vec<StackObject> {
        let metadata = meta(self.name, self.component);
        let selector: BTreeMap<String, String> = [
            ("app.kubernetes.io/name".to_owned(), self.name.to_owned()),
            ("app.kubernetes.io/part-of".to_owned(), "armada".to_owned()),
        ]
        .into();
        let mut objects = Vec::new();
        let mut volumes = None;
        let mut mounts = None;
        if let Some((path, size)) = self.storage {
            objects.push(StackObject::PersistentVolumeClaim(PersistentVolumeClaim {
                metadata: metadata.clone(),
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some([("storage".to_owned(), Quantity(size.to_owned()))].into()),
                        limits: None,
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }));
            volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: self.name.to_owned(),
                    read_only: None,
                }),
                ..Volume::default()
            }]);
            mounts = Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: path.to_owned(),
                ..VolumeMount::default()
            }]);
        }
        let probe = Probe {
            period_seconds: Some(10),
            ..self.probe
        };
        let (cpu, memory) = self.requests;
        let container = Container {
            name: self.name.trim_start_matches("armada-").to_owned(),
            image: Some(self.image.to_owned()),
            args: (!self.args.is_empty())
                .then(|| self.args.iter().map(|&arg| arg.to_owned()).collect()),
            env: Some(self.env),
            ports: Some(
                self.ports
                    .iter()
                    .map(|&(name, port)| ContainerPort {
                        name: Some(name.to_owned()),
                        container_port: port,
                        ..ContainerPort::default()
                    })
                    .collect(),
            ),
            readiness_probe: Some(probe.clone()),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(30),
                ..probe
            }),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_owned(), Quantity(cpu.to_owned())),
                        ("memory".to_owned(), Quantity(memory.to_owned())),
                    ]
                    .into(),
                ),
                ..ResourceRequirements::default()
            }),
            volume_mounts: mounts,
            ..Container::default()
        };
        objects.push(StackObject::Deployment(Box::new(Deployment {
            metadata: metadata.clone(),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    match_expressions: None,
                },
                // A volume is held by one pod at a time.
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    rolling_update: None,
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: metadata.labels.clone(),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        automount_service_account_token: Some(false),
                        volumes,
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        })));
        objects.push(StackObject::Service(Service {
            metadata,
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|&(name, port)| ServicePort {
                            name: Some(name.to_owned()),
                            port,
                            target_port: Some(IntOrString::String(name.to_owned())),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }));
        objects
    }
}

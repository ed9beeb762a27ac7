//! The Kubernetes launcher against golden files and a fake API server (no cluster exists on
//! these machines). `ARMADA_BLESS=1 cargo test -p armada-orchestrator --features kubernetes
//! --test kubernetes` rewrites the golden files; review their diff before committing it.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armada_core::backend::{EventSink, RunStatus};
use armada_core::wire::EventKind;
use armada_core::{Plan, ProjectFiles, RunId, RunOverrides, RunSettings};
use armada_orchestrator::kubernetes::{
    self, AgentPod, KubernetesLauncher, KubernetesSettings, PodStage, StackObject, StackOptions,
};
use armada_orchestrator::{Backends, Launcher, Orchestrator};
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::{Value, json};

const NAMESPACE: &str = "armada";

fn run_settings(kubernetes: Value) -> RunSettings {
    serde_json::from_value(json!({"agents": 2, "jobs": 4, "kubernetes": kubernetes})).unwrap()
}

/// Every setting used, so the golden Job shows each of them.
fn full_settings() -> KubernetesSettings {
    KubernetesSettings::from_run_settings(&run_settings(json!({
        "image": "registry.example.com/hello:1.0.0",
        "image_pull_policy": "IfNotPresent",
        "image_pull_secrets": ["registry"],
        "namespace": NAMESPACE,
        "service_account": "armada-agent",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"cpu": "1", "memory": "2Gi"}},
        "shm_size": "512Mi",
        "node_selector": {"pool": "browsers"},
        "tolerations": [{"key": "browsers", "operator": "Exists", "effect": "NoSchedule"}],
        "env": {"RUST_LOG": "info"},
        "secret_env": [{"name": "PROXY_PASSWORD", "secret": "proxies", "key": "password"}],
        "backoff_limit_per_index": 1,
        "max_failed_indexes": 1,
        "ttl_seconds_after_finished": 600,
        "active_deadline_seconds": 7200
    })))
    .unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name);
    if std::env::var_os("ARMADA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; run with ARMADA_BLESS=1 to write it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from what is generated now (ARMADA_BLESS=1 rewrites it):\n{actual}",
        path.display()
    );
}

fn golden_run() -> RunId {
    RunId::parse("0b7e4c1e-golden-run").unwrap()
}

// ---------------------------------------------------------------------------------------------
// The generated objects

#[test]
fn job_matches_its_golden_file_and_round_trips() {
    let job = kubernetes::agent_job(&golden_run(), "hello", 3, &full_settings()).unwrap();
    let yaml = kubernetes::to_yaml(&[&job]).unwrap();
    golden("job.yaml", &yaml);

    let read: Job = serde_saphyr::from_str(yaml.trim_start_matches("---\n")).unwrap();
    assert_eq!(read, job);
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    assert_eq!(spec.backoff_limit_per_index, Some(1));
    let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
    assert_eq!(rules[0].action, "Ignore");
    assert_eq!(
        rules[0].on_pod_conditions.as_ref().unwrap()[0].type_,
        "DisruptionTarget"
    );
    // An agent that ended to free a thread its script held is replaced, not counted.
    assert_eq!(rules[1].action, "Ignore");
    let codes = rules[1].on_exit_codes.as_ref().unwrap();
    assert_eq!(
        (codes.operator.as_str(), &codes.values[..]),
        ("In", &[75][..])
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[kubernetes::LABEL_RUN], "0b7e4c1e-golden-run");
    assert_eq!(labels[kubernetes::LABEL_PROJECT], "hello");
}

#[test]
fn stack_matches_its_golden_file_and_round_trips() {
    let objects = kubernetes::stack(&StackOptions::default()).unwrap();
    let yaml = kubernetes::to_yaml(&objects).unwrap();
    golden("stack.yaml", &yaml);

    let documents: Vec<Value> = serde_saphyr::from_str_multiple(&yaml).unwrap();
    assert_eq!(documents.len(), objects.len());
    for (document, object) in documents.into_iter().zip(&objects) {
        let kind = document["kind"].as_str().unwrap().to_owned();
        let read = match kind.as_str() {
            "Namespace" => {
                StackObject::Namespace(serde_json::from_value::<Namespace>(document).unwrap())
            }
            "ServiceAccount" => StackObject::ServiceAccount(
                serde_json::from_value::<ServiceAccount>(document).unwrap(),
            ),
            "Role" => StackObject::Role(serde_json::from_value::<Role>(document).unwrap()),
            "RoleBinding" => {
                StackObject::RoleBinding(serde_json::from_value::<RoleBinding>(document).unwrap())
            }
            "Secret" => StackObject::Secret(serde_json::from_value::<Secret>(document).unwrap()),
            "PersistentVolumeClaim" => StackObject::PersistentVolumeClaim(
                serde_json::from_value::<PersistentVolumeClaim>(document).unwrap(),
            ),
            "Deployment" => StackObject::Deployment(Box::new(
                serde_json::from_value::<Deployment>(document).unwrap(),
            )),
            "Service" => StackObject::Service(serde_json::from_value::<Service>(document).unwrap()),
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(&read, object, "{kind} does not round-trip");
    }

    // The orchestrator's Role: Jobs and reading pods, nothing else.
    let role = objects
        .iter()
        .find_map(|object| match object {
            StackObject::Role(role) => Some(role),
            _ => None,
        })
        .unwrap();
    let rules: Vec<(String, String, Vec<String>)> = role
        .rules
        .as_ref()
        .unwrap()
        .iter()
        .map(|rule| {
            (
                rule.api_groups.as_ref().unwrap().join(","),
                rule.resources.as_ref().unwrap().join(","),
                rule.verbs.clone(),
            )
        })
        .collect();
    let strings = |verbs: &[&str]| {
        verbs
            .iter()
            .map(|&verb| verb.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rules,
        vec![
            (
                "batch".into(),
                "jobs".into(),
                strings(&["create", "get", "list", "watch", "delete"])
            ),
            ("".into(), "pods".into(), strings(&["get", "list", "watch"])),
            ("".into(), "pods/log".into(), strings(&["get"])),
        ]
    );
}

#[test]
fn the_job_holds_no_secret() {
    let job = kubernetes::agent_job(&golden_run(), "hello", 2, &full_settings()).unwrap();
    let text = serde_json::to_string(&job).unwrap();
    for secret in [
        "redis://",
        "amqp://",
        "postgres://",
        "CHANGE-ME",
        "password@",
    ] {
        assert!(!text.contains(secret), "the Job contains {secret}: {text}");
    }
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    let from = container.env_from.as_ref().unwrap();
    assert_eq!(
        from[0].secret_ref.as_ref().unwrap().name,
        kubernetes::DEFAULT_BACKENDS_SECRET
    );
    let proxy = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|env| env.name == "PROXY_PASSWORD")
        .unwrap();
    assert!(proxy.value.is_none());
    let reference = proxy
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("proxies", "password")
    );
}

#[test]
fn settings_errors_name_the_field() {
    let error = |kubernetes: Value| {
        KubernetesSettings::from_run_settings(&run_settings(kubernetes))
            .unwrap_err()
            .to_string()
    };
    assert!(
        error(json!({"image": "x:1", "imagee": "y"})).starts_with("run_message.kubernetes"),
        "{}",
        error(json!({"image": "x:1", "imagee": "y"}))
    );
    assert!(error(json!({"image": "x:1", "imagee": "y"})).contains("imagee"));
    assert!(error(json!({})).contains("run_message.kubernetes.image: missing"));
    let quantity = error(json!({"image": "x:1", "resources": {"limits": {"memory": "2 GB"}}}));
    assert!(
        quantity.contains("run_message.kubernetes.resources.limits.memory")
            && quantity.contains("not a Kubernetes quantity"),
        "{quantity}"
    );
    let nested = error(json!({"image": "x:1", "resources": {"limits": {"gpu": "1"}}}));
    assert!(
        nested.contains("run_message.kubernetes.resources.limits"),
        "{nested}"
    );
    assert!(error(json!({"image": "x:1", "namespace": "Prod"})).contains("namespace"));

    // `run_message.image` and `run_message.resources` are the fallbacks.
    let settings: RunSettings = serde_json::from_value(json!({
        "agents": 1, "image": "top:1", "resources": {"limits": {"memory": "1Gi"}}
    }))
    .unwrap();
    let parsed = KubernetesSettings::from_run_settings(&settings).unwrap();
    assert_eq!(parsed.image(), "top:1");
    assert_eq!(
        parsed.resources.unwrap().limits.unwrap().memory.as_deref(),
        Some("1Gi")
    );
    assert_eq!(parsed.namespace, "armada");
}

// ---------------------------------------------------------------------------------------------
// The fake API server

/// A request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    body: Value,
}

#[derive(Clone, Default)]
struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Pods returned by a list.
    listed: Arc<Mutex<Vec<Value>>>,
    /// Event streams for the coming watches, one per watch; then watches hang.
    watches: Arc<Mutex<VecDeque<Vec<Value>>>>,
}

impl FakeApi {
    async fn serve(self) -> (kube::Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let api = self.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let api = api.clone();
            async move { api.answer(method, uri, body) }
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        (kubernetes::client(config).unwrap(), server)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn answer(&self, method: Method, uri: Uri, body: Bytes) -> Response {
        let body_json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            uri: uri.clone(),
            body: body_json.clone(),
        });
        let query = uri.query().unwrap_or_default();
        let json = |status: StatusCode, value: Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(value.to_string()))
                .unwrap()
        };
        match (method, uri.path()) {
            (Method::POST, "/apis/batch/v1/namespaces/armada/jobs") => {
                let mut job = body_json;
                job["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
                job["metadata"]["resourceVersion"] = json!("5");
                json(StatusCode::CREATED, job)
            }
            (Method::GET, "/api/v1/namespaces/armada/pods") if query.contains("watch=true") => {
                let events = self.watches.lock().unwrap().pop_front();
                let body = match events {
                    Some(events) => Body::from_stream(futures::stream::iter(
                        events
                            .into_iter()
                            .map(|event| Ok::<_, Infallible>(format!("{event}\n"))),
                    )),
                    // Like a quiet watch: nothing until the client lets go.
                    None => {
                        Body::from_stream(futures::stream::pending::<Result<String, Infallible>>())
                    }
                };
                Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap()
            }
            (Method::GET, "/api/v1/namespaces/armada/pods") => json(
                StatusCode::OK,
                json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "10"},
                    "items": self.listed.lock().unwrap().clone(),
                }),
            ),
            (Method::DELETE, path)
                if path.starts_with("/apis/batch/v1/namespaces/armada/jobs/") =>
            {
                json(
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
                           "status": "Success", "code": 200}),
                )
            }
            _ => json(
                StatusCode::NOT_FOUND,
                json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
                       "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        }
    }
}

/// A pod of the run `run` for agent `index`, at resource version `version`.
fn pod(run: &RunId, name: &str, index: u32, version: u32, status: Value, node: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "resourceVersion": version.to_string(),
            "labels": {"armada.run/run-id": run.as_str(),
                       "batch.kubernetes.io/job-completion-index": index.to_string()},
            "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()},
        },
        "spec": {"containers": [{"name": "agent", "image": "hello:1"}]},
        "status": status,
    });
    if node {
        pod["spec"]["nodeName"] = json!("node-1");
    }
    pod
}

fn pending() -> Value {
    json!({"phase": "Pending"})
}

fn scheduled() -> Value {
    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]})
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": [{
        "name": "agent", "image": "hello:1", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {}}}]})
}

fn terminated(phase: &str, reason: &str, exit_code: i32, conditions: Value) -> Value {
    json!({"phase": phase, "conditions": conditions, "containerStatuses": [{
        "name": "agent", "image": "hello:1", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"reason": reason, "exitCode": exit_code}}}]})
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn plan(agents: u32) -> Plan {
    let template = json!({
        "run_message": {"agents": agents, "jobs": 3,
                        "kubernetes": {"image": "hello:1", "backoff_limit_per_index": 0}},
        "default_agent_message": {},
        "default_job_message": {},
    });
    Plan::build::<Value, Value>(
        &ProjectFiles::from_template(template.to_string()),
        &RunOverrides::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn launch_creates_the_job_and_follows_its_pods_to_the_end() {
    let run_id = RunId::parse("fake-run-1").unwrap();
    let api = FakeApi::default();
    api.listed.lock().unwrap().push(pod(
        &run_id,
        "armada-fake-run-1-0-aaaaa",
        0,
        10,
        pending(),
        false,
    ));
    let evicted = json!([{"type": "DisruptionTarget", "status": "True",
                          "reason": "EvictionByEvictionAPI"}]);
    api.watches.lock().unwrap().push_back(vec![
        event(
            "MODIFIED",
            pod(
                &run_id,
                "armada-fake-run-1-0-aaaaa",
                0,
                11,
                scheduled(),
                true,
            ),
        ),
        event(
            "ADDED",
            pod(
                &run_id,
                "armada-fake-run-1-1-bbbbb",
                1,
                12,
                pending(),
                false,
            ),
        ),
        event(
            "MODIFIED",
            pod(&run_id, "armada-fake-run-1-0-aaaaa", 0, 13, running(), true),
        ),
        event(
            "MODIFIED",
            pod(&run_id, "armada-fake-run-1-1-bbbbb", 1, 14, running(), true),
        ),
        // Evicted: replaced by Kubernetes, not counted against the agent.
        event(
            "MODIFIED",
            pod(
                &run_id,
                "armada-fake-run-1-1-bbbbb",
                1,
                15,
                terminated("Failed", "Error", 143, evicted),
                true,
            ),
        ),
        event(
            "ADDED",
            pod(
                &run_id,
                "armada-fake-run-1-1-ccccc",
                1,
                16,
                scheduled(),
                true,
            ),
        ),
        event(
            "MODIFIED",
            pod(&run_id, "armada-fake-run-1-1-ccccc", 1, 17, running(), true),
        ),
        event(
            "MODIFIED",
            pod(
                &run_id,
                "armada-fake-run-1-0-aaaaa",
                0,
                18,
                terminated("Succeeded", "Completed", 0, json!([])),
                true,
            ),
        ),
        event(
            "MODIFIED",
            pod(
                &run_id,
                "armada-fake-run-1-1-ccccc",
                1,
                19,
                terminated("Failed", "OOMKilled", 137, json!([])),
                true,
            ),
        ),
    ]);
    let (client, server) = api.clone().serve().await;

    let settings = KubernetesSettings::from_run_settings(plan(2).settings()).unwrap();
    let launcher = KubernetesLauncher::new(client.clone(), settings, "hello");
    let backends = Backends::embedded().await.unwrap();
    let orchestrator = Orchestrator::new(backends.clone(), Launcher::Kubernetes(launcher.clone()))
        .with_grace(Duration::from_millis(100));
    let handle = orchestrator
        .launch_as(&plan(2), run_id.clone())
        .await
        .unwrap();
    // No agent takes jobs here: the run ends when Kubernetes is done with both agents.
    let report = tokio::time::timeout(Duration::from_secs(30), handle.follow(|_| {}))
        .await
        .expect("the run ends once both agents' pods are done")
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.agent_problems.len(),
        1,
        "{:?}",
        report.agent_problems
    );
    let problem = &report.agent_problems[0];
    assert!(
        problem.contains("agent 1") && problem.contains("OOMKilled (exit code 137)"),
        "{problem}"
    );
    assert!(
        !problem.contains("bbbbb"),
        "the eviction was counted: {problem}"
    );

    // The create request: the Job of the plan, holding no secret.
    let seen = api.seen();
    let create = seen
        .iter()
        .find(|request| request.method == Method::POST)
        .expect("a Job was created");
    assert_eq!(create.uri.path(), "/apis/batch/v1/namespaces/armada/jobs");
    assert_eq!(create.body["kind"], "Job");
    assert_eq!(create.body["metadata"]["name"], "armada-fake-run-1");
    assert_eq!(create.body["spec"]["completionMode"], "Indexed");
    assert_eq!(create.body["spec"]["completions"], 2);
    assert_eq!(create.body["spec"]["parallelism"], 2);
    assert_eq!(create.body["spec"]["backoffLimitPerIndex"], 0);
    let container = &create.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        json!(["agent", "--run-id", "fake-run-1"])
    );
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "armada-backends"
    );
    let text = create.body.to_string();
    assert!(!text.contains("memory://") && !text.contains("redis://") && !text.contains("amqp://"));
    // The pods were listed, then watched, by the run's label.
    let watch = seen
        .iter()
        .find(|request| {
            request
                .uri
                .query()
                .unwrap_or_default()
                .contains("watch=true")
        })
        .expect("the pods were watched");
    let query = watch.uri.query().unwrap();
    assert!(
        query.contains("labelSelector=armada.run%2Frun-id%3Dfake-run-1"),
        "{query}"
    );
    assert!(query.contains("resourceVersion=10"), "{query}");

    // What the monitor was told, agent by agent.
    let EventSink::Memory(events) = backends.monitor.sink() else {
        panic!("embedded events")
    };
    let told: Vec<(u32, EventKind, String)> = events
        .recent(&run_id)
        .into_iter()
        .filter(|event| {
            event
                .data
                .as_ref()
                .is_some_and(|data| data.get("kubernetes").is_some())
        })
        .map(|event| (event.agent, event.kind, event.message.unwrap_or_default()))
        .collect();
    let has = |agent: u32, kind: EventKind, text: &str| {
        told.iter()
            .any(|(a, k, message)| *a == agent && *k == kind && message.contains(text))
    };
    assert!(has(0, EventKind::Info, "pending"), "{told:#?}");
    assert!(
        has(0, EventKind::Info, "scheduled on node node-1"),
        "{told:#?}"
    );
    assert!(has(0, EventKind::Info, "running"), "{told:#?}");
    assert!(has(0, EventKind::Info, "succeeded"), "{told:#?}");
    assert!(has(1, EventKind::Info, "evicted or preempted"), "{told:#?}");
    assert!(
        has(1, EventKind::Failure, "OOMKilled (exit code 137)"),
        "{told:#?}"
    );

    // `status`: the pods as the API lists them.
    api.listed.lock().unwrap().extend([pod(
        &run_id,
        "armada-fake-run-1-1-ccccc",
        1,
        19,
        terminated("Failed", "OOMKilled", 137, json!([])),
        true,
    )]);
    let pods = kubernetes::list_agent_pods(&client, NAMESPACE, &run_id)
        .await
        .unwrap();
    let summary: Vec<(Option<u32>, PodStage, Option<String>)> = pods
        .iter()
        .map(|pod: &AgentPod| (pod.index, pod.stage, pod.detail.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(0), PodStage::Pending, None),
            (
                Some(1),
                PodStage::Failed,
                Some("OOMKilled (exit code 137)".to_owned())
            ),
        ]
    );

    // Cancel: the Job goes with its pods, foreground.
    assert!(launcher.delete_job(&run_id).await.unwrap());
    let delete = api
        .seen()
        .into_iter()
        .find(|request| request.method == Method::DELETE)
        .expect("a delete");
    assert_eq!(
        delete.uri.path(),
        "/apis/batch/v1/namespaces/armada/jobs/armada-fake-run-1"
    );
    assert_eq!(delete.body["propagationPolicy"], "Foreground");
    server.abort();
}

#[tokio::test]
async fn a_failed_create_publishes_nothing_and_says_why() {
    let api = FakeApi::default();
    let (client, server) = api.clone().serve().await;
    let mut settings = KubernetesSettings::from_run_settings(plan(1).settings()).unwrap();
    // The fake server knows only the `armada` namespace: anything else is a 404.
    settings.namespace = "elsewhere".into();
    let launcher = KubernetesLauncher::new(client, settings, "hello");
    let backends = Backends::embedded().await.unwrap();
    let orchestrator = Orchestrator::new(backends.clone(), Launcher::Kubernetes(launcher));
    let run_id = RunId::parse("fake-run-2").unwrap();
    let error = orchestrator
        .launch_as(&plan(1), run_id.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("create Job armada-fake-run-2 in namespace elsewhere")
            && error.contains("does the namespace exist"),
        "{error}"
    );
    assert!(
        backends.store.progress(&run_id).await.is_err(),
        "the run was left published"
    );
    server.abort();
}

#[tokio::test]
async fn cancel_deletes_the_job_with_foreground_propagation() {
    let api = FakeApi::default();
    let (client, server) = api.clone().serve().await;
    let run_id = RunId::parse("fake-run-3").unwrap();
    assert!(
        kubernetes::delete_job(&client, NAMESPACE, &run_id)
            .await
            .unwrap()
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::DELETE);
    assert_eq!(
        seen[0].uri.path(),
        "/apis/batch/v1/namespaces/armada/jobs/armada-fake-run-3"
    );
    assert_eq!(seen[0].body["propagationPolicy"], "Foreground");
    // A Job already gone is not an error.
    assert!(
        !kubernetes::delete_job(&client, "elsewhere", &run_id)
            .await
            .unwrap()
    );
    server.abort();
}

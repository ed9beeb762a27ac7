//! Creating a run's Job, following its pods, deleting it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use armada_core::report::EventSender;
use armada_core::wire::{Event, EventKind, now_ms};
use armada_core::{AgentExit, AgentIndex, RunId};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerState, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::sync::watch;

use super::job::{CONTAINER, agent_job, job_name, run_selector};
use super::settings::KubernetesSettings;
use crate::{Error, Result};

/// Annotation (and, since Kubernetes 1.28, label) holding a pod's completion index.
const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// A watch asks the API server to end it after this long; it is then resumed.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Longest pause between attempts to reach the API server.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A client from the usual configuration: `KUBECONFIG` or `~/.kube/config` (its current
/// context), else the pod's service account when running inside a cluster.
pub async fn connect() -> Result<Client> {
    let config = kube::Config::infer()
        .await
        .map_err(Error::KubernetesConfig)?;
    client(config)
}

/// A client from an explicit configuration (tests point one at a fake API server).
///
/// Installs rustls' `ring` provider as the process default when none is installed: both
/// `ring` and `aws-lc-rs` are compiled into rustls in this workspace, and rustls then refuses
/// to pick one by itself.
pub fn client(config: kube::Config) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(config).map_err(|source| Error::Kubernetes {
        action: "build a Kubernetes client".into(),
        source,
    })
}

/// Deletes a run's Job and, before it is gone (foreground propagation), its pods. `false`
/// when there was no such Job.
pub async fn delete_job(client: &Client, namespace: &str, run_id: &RunId) -> Result<bool> {
    let name = job_name(run_id)?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    match jobs.delete(&name, &DeleteParams::foreground()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kubernetes {
            action: format!("delete Job {name} in namespace {namespace}"),
            source,
        }),
    }
}

/// The pods of a run, by agent index.
pub async fn list_agent_pods(
    client: &Client,
    namespace: &str,
    run_id: &RunId,
) -> Result<Vec<AgentPod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&run_selector(run_id)))
        .await
        .map_err(|source| Error::Kubernetes {
            action: format!("list the pods of run {run_id} in namespace {namespace}"),
            source,
        })?;
    let mut pods: Vec<AgentPod> = list.items.iter().map(AgentPod::of).collect();
    pods.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    Ok(pods)
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodStage {
    /// Created, not yet on a node.
    Pending,
    /// On a node, starting.
    Scheduled,
    /// On a node, its agent container running.
    Running,
    /// Its agent exited 0.
    Succeeded,
    /// It failed: see [`AgentPod::detail`].
    Failed,
}

impl fmt::Display for PodStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        })
    }
}

/// What one pod of a run is doing, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    /// The pod's name, which Kubernetes derives from the Job's.
    pub name: String,
    /// Its agent (the completion index); `None` for a pod that does not say.
    pub index: Option<AgentIndex>,
    /// Where it is in its life.
    pub stage: PodStage,
    /// The node it was scheduled on; `None` while it is pending.
    pub node: Option<String>,
    /// Why it failed (`OOMKilled (exit code 137)`), or why it does not start
    /// (`ImagePullBackOff: …`, `Unschedulable: …`).
    pub detail: Option<String>,
    /// It was evicted or preempted: Kubernetes replaces it without counting a failure.
    pub disrupted: bool,
}

impl AgentPod {
    /// Reads a pod's agent index, stage, node and failure reason from its labels and status.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let conditions = status
            .and_then(|status| status.conditions.as_deref())
            .unwrap_or_default();
        let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        let scheduled = condition("PodScheduled");
        let stage = pod_stage(status, node.is_some(), scheduled);
        let state = agent_container_state(status);
        let detail = match stage {
            PodStage::Failed => Some(failure_detail(status, state)),
            PodStage::Pending => scheduled.and_then(unschedulable_detail),
            PodStage::Scheduled => state.and_then(waiting_detail),
            PodStage::Running | PodStage::Succeeded => None,
        };
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            index: completion_index(&pod.metadata),
            stage,
            node,
            detail,
            disrupted: condition("DisruptionTarget").is_some_and(|c| c.status == "True"),
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("pod {} {}", self.name, self.stage);
        if let (PodStage::Scheduled, Some(node)) = (self.stage, &self.node) {
            text.push_str(&format!(" on node {node}"));
        }
        if let Some(detail) = &self.detail {
            text.push_str(&format!(": {detail}"));
        }
        if self.stage == PodStage::Failed && self.disrupted {
            text.push_str(" (evicted or preempted: replaced, not counted as a failure)");
        }
        text
    }
}

fn completion_index(metadata: &ObjectMeta) -> Option<AgentIndex> {
    metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(COMPLETION_INDEX))
        .or_else(|| {
            metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(COMPLETION_INDEX))
        })
        .and_then(|index| index.parse().ok())
}

fn pod_stage(
    status: Option<&PodStatus>,
    has_node: bool,
    scheduled: Option<&PodCondition>,
) -> PodStage {
    match status.and_then(|status| status.phase.as_deref()) {
        Some("Succeeded") => PodStage::Succeeded,
        Some("Failed") => PodStage::Failed,
        Some("Running") => PodStage::Running,
        _ if has_node || scheduled.is_some_and(|c| c.status == "True") => PodStage::Scheduled,
        _ => PodStage::Pending,
    }
}

fn agent_container_state(status: Option<&PodStatus>) -> Option<&ContainerState> {
    status
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|container| container.name == CONTAINER)
        .and_then(|container| container.state.as_ref())
}

/// `OOMKilled (exit code 137): message`, preferring what the agent's container says to what
/// the pod says.
fn failure_detail(status: Option<&PodStatus>, state: Option<&ContainerState>) -> String {
    let terminated = state.and_then(|state| state.terminated.as_ref());
    let mut reason = terminated
        .and_then(|t| t.reason.clone())
        .or_else(|| status.and_then(|status| status.reason.clone()))
        .unwrap_or_else(|| "failed".to_owned());
    if let Some(terminated) = terminated {
        reason.push_str(&format!(" (exit code {})", terminated.exit_code));
    }
    if let Some(message) = terminated
        .and_then(|t| t.message.clone())
        .or_else(|| status.and_then(|status| status.message.clone()))
        .filter(|message| !message.is_empty())
    {
        reason.push_str(&format!(": {message}"));
    }
    reason
}

fn unschedulable_detail(scheduled: &PodCondition) -> Option<String> {
    if scheduled.status != "False" {
        return None;
    }
    let text = format!(
        "{}: {}",
        scheduled.reason.as_deref()?,
        scheduled.message.as_deref().unwrap_or("")
    );
    Some(text.trim_end_matches([':', ' ']).to_owned())
}

fn waiting_detail(state: &ContainerState) -> Option<String> {
    let waiting = state.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    // Normal while the container is being created.
    if reason == "ContainerCreating" || reason == "PodInitializing" {
        return None;
    }
    Some(match waiting.message.as_deref() {
        Some(message) if !message.is_empty() => format!("{reason}: {message}"),
        _ => reason.to_owned(),
    })
}

/// How an agent's pods ended, once they did.
#[derive(Debug, Clone, PartialEq)]
enum AgentEnd {
    Succeeded,
    GivenUp(String),
}

/// Launches a run's agents as the pods of one Indexed Job (see the [module](super)).
///
/// The pods of a run that completes exit by themselves (the run's queue is deleted) and the
/// Job is removed `ttl_seconds_after_finished` later; after a canceled or failed run, call
/// [`KubernetesLauncher::delete_job`] (`orchestrate launch` does).
#[derive(Clone)]
pub struct KubernetesLauncher {
    client: Client,
    settings: Arc<KubernetesSettings>,
    project: String,
}

impl fmt::Debug for KubernetesLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesLauncher")
            .field("namespace", &self.settings.namespace)
            .field("image", &self.settings.image())
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl KubernetesLauncher {
    /// A launcher creating Jobs through `client`, shaped by `settings`, labelled with
    /// `project`.
    pub fn new(client: Client, settings: KubernetesSettings, project: impl Into<String>) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            project: project.into(),
        }
    }

    /// The run's Job, as [`KubernetesLauncher::start`] would create it.
    pub fn job(&self, run_id: &RunId, agents: u32) -> Result<Job> {
        agent_job(run_id, &self.project, agents, &self.settings)
    }

    /// Deletes the run's Job and its pods (foreground propagation); `false` when it was
    /// already gone.
    pub async fn delete_job(&self, run_id: &RunId) -> Result<bool> {
        delete_job(&self.client, &self.settings.namespace, run_id).await
    }

    /// Creates the run's Job and returns, for each agent index in order, a future that ends
    /// when that agent's pod succeeds or when Kubernetes gives it up. One task watches the
    /// pods for all of them; it stops when the last of these futures is dropped.
    pub(crate) async fn start(
        &self,
        run_id: &RunId,
        agents: u32,
        events: EventSender,
    ) -> Result<Vec<BoxFuture<'static, armada_core::Result<AgentExit>>>> {
        let job = self.job(run_id, agents)?;
        let namespace = &self.settings.namespace;
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|source| Error::Kubernetes {
                action: format!("create Job {name} in namespace {namespace}"),
                source,
            })?;
        tracing::info!(run = %run_id, job = %name, %namespace, agents, "Kubernetes Job created");
        let tracker = Tracker {
            agents,
            limit: self.settings.backoff_limit_per_index,
            seen: HashMap::new(),
            failures: vec![Vec::new(); agents as usize],
            ends: vec![None; agents as usize],
            events,
        };
        let (ends, _) = watch::channel(tracker.ends.clone());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let watcher = tokio::spawn(watch_pods(
            pods,
            run_selector(run_id),
            tracker,
            ends.clone(),
        ));
        let watcher = Arc::new(AbortOnDrop(watcher));
        Ok((0..agents)
            .map(|index| {
                let watcher = Arc::clone(&watcher);
                let ends = ends.subscribe();
                wait_for_agent(ends, index, watcher).boxed()
            })
            .collect())
    }
}

/// Aborts the pod watch when the last agent future lets go of it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_for_agent(
    mut ends: watch::Receiver<Vec<Option<AgentEnd>>>,
    index: AgentIndex,
    _watcher: Arc<AbortOnDrop>,
) -> armada_core::Result<AgentExit> {
    let slot = index as usize;
    let end = ends
        .wait_for(|ends| ends.get(slot).is_some_and(Option::is_some))
        .await
        .ok()
        .and_then(|ends| ends.get(slot).cloned().flatten());
    Ok(match end {
        Some(AgentEnd::Succeeded) => AgentExit::Finished { attempts: 0 },
        Some(AgentEnd::GivenUp(error)) => AgentExit::Died { error },
        None => AgentExit::Died {
            error: format!("agent {index}: the watch of its pod stopped"),
        },
    })
}

/// Follows the run's pods from a list, then a watch resumed from the last version seen; lists
/// again when the version expired. Never gives up: the run ends by other means.
async fn watch_pods(
    pods: Api<Pod>,
    selector: String,
    mut tracker: Tracker,
    ends: watch::Sender<Vec<Option<AgentEnd>>>,
) {
    let mut version: Option<String> = None;
    let mut delay = Duration::from_millis(500);
    loop {
        let Some(from) = version.clone() else {
            match pods.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    for pod in &list.items {
                        tracker.observe(pod);
                    }
                    ends.send_replace(tracker.ends.clone());
                    version = Some(list.metadata.resource_version.unwrap_or_default());
                    delay = Duration::from_millis(500);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list the run's pods; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
            continue;
        };
        let params = WatchParams::default()
            .labels(&selector)
            .timeout(WATCH_TIMEOUT_SECS);
        let stream = match pods.watch(&params, &from).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the run's pods; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    version.clone_from(&pod.metadata.resource_version);
                    tracker.observe(&pod);
                }
                Ok(WatchEvent::Deleted(pod)) => {
                    version.clone_from(&pod.metadata.resource_version);
                    tracker.deleted(&pod);
                }
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    version = Some(bookmark.metadata.resource_version);
                }
                Ok(WatchEvent::Error(status)) => {
                    // 410 Gone: the version is too old to resume from; list again.
                    if status.code != 410 {
                        tracing::warn!(code = status.code, message = %status.message, "the watch of the run's pods failed; listing them again");
                    }
                    version = None;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "the watch of the run's pods broke; resuming it");
                    break;
                }
            }
            ends.send_replace(tracker.ends.clone());
        }
    }
}

/// What was seen of the run's pods, and each agent's end once known.
struct Tracker {
    agents: u32,
    limit: u32,
    /// Per pod: the stage and detail last reported.
    seen: HashMap<String, (PodStage, Option<String>)>,
    /// Per agent: its counted pod failures.
    failures: Vec<Vec<String>>,
    ends: Vec<Option<AgentEnd>>,
    events: EventSender,
}

impl Tracker {
    fn observe(&mut self, pod: &Pod) {
        let pod = AgentPod::of(pod);
        let Some(index) = pod.index.filter(|&index| index < self.agents) else {
            tracing::debug!(pod = %pod.name, "a pod of the run without a usable completion index");
            return;
        };
        let now = (pod.stage, pod.detail.clone());
        let before = self.seen.get(&pod.name);
        let is_news = match before {
            None => true,
            Some((stage, detail)) => {
                *stage < pod.stage || (*stage == pod.stage && *detail != pod.detail)
            }
        };
        if !is_news {
            return;
        }
        self.seen.insert(pod.name.clone(), now);
        let text = format!("agent {index}: {}", pod.describe());
        // A failure that counts, or a pod that cannot start, is worth a warning.
        let trouble = match pod.stage {
            PodStage::Failed => !pod.disrupted,
            PodStage::Pending | PodStage::Scheduled => pod.detail.is_some(),
            PodStage::Running | PodStage::Succeeded => false,
        };
        let kind = if trouble {
            tracing::warn!("{text}");
            EventKind::Failure
        } else {
            tracing::info!("{text}");
            EventKind::Info
        };
        self.events.send(Event {
            kind,
            at_ms: now_ms(),
            agent: index,
            job: None,
            message: Some(text.clone()),
            data: Some(serde_json::json!({
                "kubernetes": {
                    "pod": pod.name,
                    "stage": pod.stage.to_string(),
                    "node": pod.node,
                    "detail": pod.detail,
                    "disrupted": pod.disrupted,
                }
            })),
            input: None,
        });
        let slot = index as usize;
        if self.ends[slot].is_some() {
            return;
        }
        match pod.stage {
            PodStage::Succeeded => self.ends[slot] = Some(AgentEnd::Succeeded),
            PodStage::Failed if !pod.disrupted => {
                self.failures[slot].push(pod.describe());
                if self.failures[slot].len() > self.limit as usize {
                    self.ends[slot] = Some(AgentEnd::GivenUp(format!(
                        "agent {index} was given up after {} failed pod(s): {}",
                        self.failures[slot].len(),
                        self.failures[slot].join("; ")
                    )));
                }
            }
            _ => {}
        }
    }

    fn deleted(&mut self, pod: &Pod) {
        let pod = AgentPod::of(pod);
        if pod.stage < PodStage::Succeeded
            && let Some(index) = pod.index
        {
            tracing::info!(
                "agent {index}: pod {} deleted while {}",
                pod.name,
                pod.stage
            );
        }
    }
}

//! Plans from messages made in code rather than from `config/`: the settings, one config per
//! agent (or one for all) and one payload per job (or one for all), checked like a project's
//! files with every problem collected into [`Diagnostics`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::unread::{self, Origin, UnreadKeys};
use super::{Diagnostic, Diagnostics, Plan, RunSettings};
use crate::{AgentContext, JobContext, Script};

/// How diagnostics name messages made in code, which have no file.
const IN_CODE: &str = "(in code)";

/// Problems reported about the agents' or the jobs' messages before the rest are summarised,
/// so a million bad payloads do not make a million diagnostics.
const MAX_DIAGNOSTICS_PER_LIST: usize = 50;

impl Plan {
    /// Builds and validates a plan for the script `S` from messages as JSON (a request body,
    /// another system's records): `agents` holds one config per agent, or one shared by every
    /// agent; `jobs` one payload per job, or one shared by the `settings.jobs` jobs. When
    /// `settings.jobs` is `None`, there is one job per payload.
    ///
    /// Every message is checked against the script's types; problems come back together as
    /// [`Error::Invalid`](crate::Error::Invalid), in the file `(in code)` with field paths such as
    /// `jobs[3].url` or `settings.agents`. Jobs whose payload equals the first job's share it,
    /// so a run of identical jobs holds one payload.
    pub fn from_messages<S: Script>(
        settings: RunSettings,
        agents: Vec<Value>,
        jobs: Vec<Value>,
    ) -> crate::Result<Self> {
        from_values::<<S::Agent as AgentContext>::Config, <S::Job as JobContext<S::Agent>>::Payload>(
            settings, agents, jobs,
        )
    }

    /// Like [`Plan::from_messages`], with the script's own config and payload types, which
    /// must also be `Serialize`: what a service builds from its typed requests. An agent
    /// without a config of its own (`PlainAgent`, whose config type accepts anything) goes
    /// through [`Plan::from_messages`] with `vec![json!({})]` instead.
    pub fn for_script_from<S: Script>(
        settings: RunSettings,
        agents: Vec<<S::Agent as AgentContext>::Config>,
        payloads: Vec<<S::Job as JobContext<S::Agent>>::Payload>,
    ) -> crate::Result<Self>
    where
        <S::Agent as AgentContext>::Config: Serialize,
        <S::Job as JobContext<S::Agent>>::Payload: Serialize,
    {
        let mut diagnostics = Diagnostics::default();
        let agents = to_values(agents, "agents", &mut diagnostics);
        let jobs = to_values(payloads, "jobs", &mut diagnostics);
        diagnostics.into_result(())?;
        Self::from_messages::<S>(settings, agents, jobs)
    }
}

fn to_values<T: Serialize>(items: Vec<T>, list: &str, diagnostics: &mut Diagnostics) -> Vec<Value> {
    items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| match serde_json::to_value(item) {
            Ok(value) => Some(value),
            Err(error) => {
                diagnostics.push(
                    Diagnostic::file(IN_CODE, format!("cannot be written as JSON: {error}"))
                        .at_field(format!("{list}[{index}]")),
                );
                None
            }
        })
        .collect()
}

pub(super) fn from_values<C: DeserializeOwned, P: DeserializeOwned>(
    mut settings: RunSettings,
    agents: Vec<Value>,
    jobs: Vec<Value>,
) -> crate::Result<Plan> {
    let mut diagnostics = Diagnostics::default();
    let problem = |field: &str, message: String| Diagnostic::file(IN_CODE, message).at_field(field);
    let job_count = settings.jobs.unwrap_or(jobs.len() as u64);
    match (jobs.len() as u64, settings.jobs) {
        (0, Some(0)) | (1, _) => {}
        (0, _) => diagnostics.push(problem(
            "jobs",
            "no job payload: give one per job, or one shared by the settings.jobs jobs".to_owned(),
        )),
        (given, _) if given == job_count => {}
        (given, _) => diagnostics.push(problem(
            "jobs",
            format!(
                "{given} payloads for {job_count} jobs (settings.jobs): give one per job, or one \
                 for all"
            ),
        )),
    }
    settings.jobs = Some(job_count);
    for (field, message) in settings.check() {
        diagnostics.push(problem(&format!("settings.{field}"), message));
    }
    if agents.len() != 1 && agents.len() as u64 != u64::from(settings.agents) {
        diagnostics.push(problem(
            "agents",
            format!(
                "{} agent configs for {} agents (settings.agents): give one per agent, or one \
                 for all",
                agents.len(),
                settings.agents
            ),
        ));
    }
    check_list::<C>(agents.iter().enumerate(), "agents", &mut diagnostics);
    // Jobs equal to the first share its payload: it is checked once, and held once.
    let any_payload = !jobs.is_empty();
    let mut jobs = jobs.into_iter();
    let default_job = jobs
        .next()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    let job_overrides: BTreeMap<u64, Value> = jobs
        .zip(1..)
        .filter(|(payload, _)| *payload != default_job)
        .map(|(payload, index)| (index, payload))
        .collect();
    let first = (job_count > 0 && any_payload).then_some((0, &default_job));
    check_list::<P>(
        first.into_iter().chain(
            job_overrides
                .iter()
                .map(|(&index, payload)| (index as usize, payload)),
        ),
        "jobs",
        &mut diagnostics,
    );
    diagnostics.into_result(())?;
    let agent_messages = match agents.len() {
        1 => vec![agents[0].clone(); settings.agents as usize],
        _ => agents,
    };
    Ok(Plan {
        settings,
        agent_messages,
        default_job: super::compact(&default_job),
        job_overrides: job_overrides
            .into_iter()
            .map(|(index, payload)| (index, super::compact(&payload)))
            .collect(),
        skipped_rows: (0, 0),
    })
}

/// Checks each message against `T`, up to [`MAX_DIAGNOSTICS_PER_LIST`] problems.
fn check_list<'a, T: DeserializeOwned>(
    messages: impl Iterator<Item = (usize, &'a Value)>,
    list: &str,
    diagnostics: &mut Diagnostics,
) {
    let mut found = 0usize;
    let mut unread = UnreadKeys::new(if list == "agents" {
        "agent config"
    } else {
        "job payload"
    });
    let mut unread_seen = std::collections::HashSet::new();
    for (index, message) in messages {
        let checked = unread::check::<T>(message);
        if let Ok(paths) = &checked {
            // One report per key, not one per message holding it.
            for path in paths
                .iter()
                .filter(|path| unread_seen.insert((*path).clone()))
            {
                let origin = Origin::Message {
                    file: IN_CODE.to_owned(),
                    prefix: format!("{list}[{index}]"),
                };
                unread.add(
                    origin,
                    path.clone(),
                    unread::known_siblings::<T>(message, path, paths),
                );
            }
        }
        if let Err((field, problem)) = checked {
            found += 1;
            if found <= MAX_DIAGNOSTICS_PER_LIST {
                let separator = if field.is_empty() || field.starts_with('[') {
                    ""
                } else {
                    "."
                };
                diagnostics.push(
                    Diagnostic::file(IN_CODE, problem)
                        .at_field(format!("{list}[{index}]{separator}{field}")),
                );
            }
        }
    }
    unread.report(diagnostics);
    if found > MAX_DIAGNOSTICS_PER_LIST {
        diagnostics.push(
            Diagnostic::file(
                IN_CODE,
                format!(
                    "{} more {list} with problems",
                    found - MAX_DIAGNOSTICS_PER_LIST
                ),
            )
            .at_field(list),
        );
    }
}

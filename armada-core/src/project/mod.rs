//! The project model: from `config/` to a validated [`Plan`].
//!
//! Three layers, as in the original system: the template's defaults, the tune file's values for
//! `$env_` placeholders, and per-index CSV overrides deep-merged into the defaults. Every
//! problem is collected with its file, line, column and field path; a plan exists only when
//! there is none. A plan can also be made of messages built in code ([`Plan::from_messages`],
//! [`Plan::for_script_from`]), checked the same way.

mod diagnostics;
mod files;
mod messages;
mod overrides;
mod settings;
mod tune;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use diagnostics::{Diagnostic, Diagnostics};
pub use files::{NamedFile, ProjectFiles, Tune};
pub use settings::{MAX_AGENTS, MAX_JOBS, RunOverrides, RunSettings};

use crate::{AgentIndex, JobIndex};

const TEMPLATE_KEYS: [&str; 3] = [
    "run_message",
    "default_agent_message",
    "default_job_message",
];

/// A validated run: its settings and every agent's and job's merged message.
///
/// Jobs without a CSV row share the default message, so a run of a million default jobs costs
/// one message, not a million.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `jobs` is always `Some` here: resolved from the CSV when `run_message` left it out.
    settings: RunSettings,
    agent_messages: Vec<Value>,
    default_job: Arc<RawValue>,
    job_overrides: BTreeMap<JobIndex, Arc<RawValue>>,
    /// CSV rows left out because a run override asked for fewer agents and jobs than they
    /// target: `(agent rows, job rows)`.
    skipped_rows: (u64, u64),
}

impl Plan {
    /// Builds and validates a plan for a script whose agent config deserializes into `C` and
    /// whose job payload deserializes into `P`.
    pub fn build<C: DeserializeOwned, P: DeserializeOwned>(
        files: &ProjectFiles,
        overrides: &RunOverrides,
    ) -> crate::Result<Self> {
        let mut diagnostics = Diagnostics::default();
        let plan = build::<C, P>(files, overrides, &mut diagnostics);
        match plan {
            Some(plan) if diagnostics.is_empty() => Ok(plan),
            _ => {
                diagnostics.sort();
                Err(crate::Error::Invalid(diagnostics))
            }
        }
    }

    /// Builds and validates a plan for the script `S`.
    pub fn for_script<S: crate::Script>(
        files: &ProjectFiles,
        overrides: &RunOverrides,
    ) -> crate::Result<Self> {
        Self::build::<
            <S::Agent as crate::AgentContext>::Config,
            <S::Job as crate::JobContext>::Payload,
        >(files, overrides)
    }

    /// The run's settings, with `jobs` resolved.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Number of agents.
    pub fn agents(&self) -> u32 {
        self.settings.agents
    }

    /// Number of jobs.
    pub fn jobs(&self) -> u64 {
        self.settings.jobs.unwrap_or_default()
    }

    /// Rows of `data_agent.csv` left out: they target agents beyond the number a run override
    /// (`RunOverrides::agents`) asked for, which runs the first ones only.
    pub fn skipped_agent_rows(&self) -> u64 {
        self.skipped_rows.0
    }

    /// Rows of `data_job.csv` left out: they target jobs beyond the number a run override
    /// (`RunOverrides::jobs`) asked for, which runs the first ones only (a quick smoke run).
    pub fn skipped_job_rows(&self) -> u64 {
        self.skipped_rows.1
    }

    /// The merged message of agent `index`.
    ///
    /// # Panics
    /// When `index` is not below [`Plan::agents`].
    pub fn agent_message(&self, index: AgentIndex) -> &Value {
        &self.agent_messages[index as usize]
    }

    /// The merged payload of job `index` as compact JSON (shared with every job that has no
    /// CSV row).
    pub fn job_payload(&self, index: JobIndex) -> &Arc<RawValue> {
        self.job_overrides.get(&index).unwrap_or(&self.default_job)
    }

    /// The same run made only of the jobs at `indexes`, in that order: job `i` of the new plan
    /// carries the payload of job `indexes[i]`. Indexes beyond the plan are skipped.
    pub fn select_jobs(&self, indexes: &[JobIndex]) -> Self {
        let kept: Vec<JobIndex> = indexes
            .iter()
            .copied()
            .filter(|&index| index < self.jobs())
            .collect();
        let job_overrides = kept
            .iter()
            .zip(0..)
            .filter_map(|(&old, new)| Some((new, Arc::clone(self.job_overrides.get(&old)?))))
            .collect();
        let mut settings = self.settings.clone();
        settings.jobs = Some(kept.len() as u64);
        Self {
            settings,
            agent_messages: self.agent_messages.clone(),
            default_job: Arc::clone(&self.default_job),
            job_overrides,
            skipped_rows: self.skipped_rows,
        }
    }

    /// Writes every merged message as JSON lines: agents first, then jobs.
    pub fn write_json_lines(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        for (index, message) in self.agent_messages.iter().enumerate() {
            let line = serde_json::json!({ "agent": index, "message": message });
            writeln!(out, "{line}")?;
        }
        for index in 0..self.jobs() {
            let line = serde_json::json!({ "job": index, "message": self.job_payload(index) });
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// Deep merge: objects merge key by key, anything else in `overlay` replaces `base`.
pub fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn parse_json_object(
    file: &NamedFile,
    diagnostics: &mut Diagnostics,
) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(&file.contents) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            diagnostics.push(Diagnostic::file(
                &file.name,
                format!("must hold a JSON object, found {}", kind_of(&other)),
            ));
            None
        }
        Err(error) => {
            let mut diagnostic = Diagnostic::file(&file.name, format!("invalid JSON: {error}"));
            if error.line() > 0 {
                diagnostic = diagnostic
                    .at_line(error.line() as u64)
                    .at_column(char_column(&file.contents, error.line(), error.column()));
            }
            diagnostics.push(diagnostic);
            None
        }
    }
}

/// serde_json counts columns in bytes; people and editors count characters.
fn char_column(contents: &[u8], line: usize, byte_column: usize) -> u64 {
    let text = contents
        .split(|&byte| byte == b'\n')
        .nth(line.saturating_sub(1))
        .unwrap_or_default();
    let before = &text[..byte_column.saturating_sub(1).min(text.len())];
    String::from_utf8_lossy(before).chars().count() as u64 + 1
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn build<C: DeserializeOwned, P: DeserializeOwned>(
    files: &ProjectFiles,
    run_overrides: &RunOverrides,
    diagnostics: &mut Diagnostics,
) -> Option<Plan> {
    let template_name = files.template.name.as_str();
    let template = parse_json_object(&files.template, diagnostics);
    let tune = files
        .tune
        .as_ref()
        .and_then(|tune| parse_json_object(tune, diagnostics));
    let agent_rows = files
        .agent_csv
        .as_ref()
        .map(|file| overrides::parse(file, "targetted_agent", diagnostics))
        .unwrap_or_default();
    let job_rows = files
        .job_csv
        .as_ref()
        .map(|file| overrides::parse(file, "targetted_job", diagnostics))
        .unwrap_or_default();

    let mut template = Value::Object(template?);
    if files.tune.is_none() || tune.is_some() {
        tune::substitute(
            &mut template,
            &mut String::new(),
            tune.as_ref(),
            template_name,
            &files.tune_name,
            diagnostics,
        );
    }
    let Value::Object(mut template) = template else {
        unreachable!("the template was parsed as an object")
    };
    for key in template.keys() {
        if !TEMPLATE_KEYS.contains(&key.as_str()) {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    format!(
                        "unknown key `{key}`: the template holds {}",
                        TEMPLATE_KEYS.join(", ")
                    ),
                )
                .at_field(key.clone()),
            );
        }
    }
    let mut default_message = |key: &str| match template.remove(key) {
        None => Some(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Some(value),
        Some(other) => {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    format!("must be an object, found {}", kind_of(&other)),
                )
                .at_field(key),
            );
            None
        }
    };
    let default_agent = default_message("default_agent_message");
    let default_job = default_message("default_job_message");
    let settings = run_settings(
        template.remove("run_message"),
        run_overrides,
        template_name,
        diagnostics,
    );
    let (default_agent, default_job) = (default_agent?, default_job?);
    // Counts are known only with valid settings; rows are still checked without them, so every
    // problem is reported at once.
    let jobs = match settings.as_ref().map(|settings| settings.jobs) {
        None => None,
        Some(Some(jobs)) => Some(jobs),
        Some(None) if job_rows.records > 0 => Some(job_rows.records),
        Some(None) => {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    "the number of jobs is not set and data_job.csv has no rows: set \
                     run_message.jobs or pass --jobs",
                )
                .at_field("run_message.jobs"),
            );
            None
        }
    };
    let (agent_messages, skipped_agent_rows) = merge_rows::<C, _>(
        &default_agent,
        agent_rows,
        RowRange {
            count: settings.as_ref().map(|settings| u64::from(settings.agents)),
            skip_beyond: run_overrides.agents.is_some(),
        },
        ("agent", "agents", "targetted_agent"),
        template_name,
        diagnostics,
        |message| message,
    );
    let (job_overrides, skipped_job_rows) = merge_rows::<P, _>(
        &default_job,
        job_rows,
        RowRange {
            count: jobs,
            skip_beyond: run_overrides.jobs.is_some(),
        },
        ("job", "jobs", "targetted_job"),
        template_name,
        diagnostics,
        // Each job's message is held as text from here on (see `JobMessage::payload`).
        |message| compact(&message),
    );
    let (settings, jobs) = (settings?, jobs?);
    let agent_messages = (0..u64::from(settings.agents))
        .map(|index| merged_or_default(&agent_messages, index, &default_agent))
        .collect();
    let default_job = compact(&default_job);
    Some(Plan {
        settings: RunSettings {
            jobs: Some(jobs),
            ..settings
        },
        agent_messages,
        default_job,
        job_overrides,
        skipped_rows: (skipped_agent_rows, skipped_job_rows),
    })
}

/// A merged job message as the compact JSON a plan holds.
pub(crate) fn compact(message: &Value) -> Arc<RawValue> {
    // A `Value` always serializes (its keys are strings, its numbers finite): the `null`
    // fallback is never taken.
    serde_json::value::to_raw_value(message)
        .map_or_else(|_| Arc::from(RawValue::NULL.to_owned()), Arc::from)
}

fn merged_or_default(merged: &BTreeMap<u64, Value>, index: u64, default: &Value) -> Value {
    merged.get(&index).unwrap_or(default).clone()
}

fn run_settings(
    run_message: Option<Value>,
    run_overrides: &RunOverrides,
    template_name: &str,
    diagnostics: &mut Diagnostics,
) -> Option<RunSettings> {
    let mut run_message = match run_message {
        Some(Value::Object(map)) => map,
        None => Map::new(),
        Some(other) => {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    format!("must be an object, found {}", kind_of(&other)),
                )
                .at_field("run_message"),
            );
            return None;
        }
    };
    run_overrides.apply(&mut run_message);
    let value = Value::Object(run_message);
    match serde_path_to_error::deserialize::<_, RunSettings>(&value) {
        Ok(settings) => {
            let problems = settings.check();
            for (field, message) in &problems {
                diagnostics.push(
                    Diagnostic::file(template_name, message.clone())
                        .at_field(format!("run_message.{field}")),
                );
            }
            problems.is_empty().then_some(settings)
        }
        Err(error) => {
            diagnostics.push(
                Diagnostic::file(template_name, error.inner().to_string())
                    .at_field(join_path("run_message", &error.path().to_string())),
            );
            None
        }
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    match path {
        "" | "." => prefix.to_owned(),
        path => format!("{prefix}.{path}"),
    }
}

/// The indexes a file's rows may target.
struct RowRange {
    /// How many agents or jobs the run has, when the settings are valid.
    count: Option<u64>,
    /// The count is a run override's (`--jobs 40`): rows beyond it are left out, not errors.
    skip_beyond: bool,
}

/// Merges each row into the default, checks ranges, and checks every message that will be used
/// against the script's type. Returns the merged rows by index, and how many rows were left
/// out as beyond a run override's count.
fn merge_rows<T: DeserializeOwned, M>(
    default: &Value,
    overrides: overrides::Overrides,
    RowRange { count, skip_beyond }: RowRange,
    (singular, plural, index_column): (&str, &str, &str),
    template_name: &str,
    diagnostics: &mut Diagnostics,
    keep: impl Fn(Value) -> M,
) -> (BTreeMap<u64, M>, u64) {
    let mut merged = BTreeMap::new();
    let (mut skipped, mut out_of_range) = (0, 0);
    for row in overrides.rows {
        if let Some(count) = count.filter(|&count| row.index >= count) {
            if skip_beyond {
                skipped += 1;
                continue;
            }
            out_of_range += 1;
            if out_of_range > overrides::MAX_DIAGNOSTICS_PER_FILE {
                continue;
            }
            let valid = match count {
                0 => "no index is valid".to_owned(),
                count => format!("indexes 0 to {}", count - 1),
            };
            diagnostics.push(
                Diagnostic::file(
                    &overrides.file,
                    format!(
                        "{singular} {} is out of range: the run has {count} {plural} ({valid}); \
                         raise `{plural}` (run_message or --{plural}) or remove the row",
                        row.index,
                    ),
                )
                .at_line(row.line)
                .at_column(1)
                .at_field(index_column),
            );
            continue;
        }
        let mut message = default.clone();
        deep_merge(&mut message, Value::Object(row.overlay));
        if let Err((field, problem)) = check_type::<T>(&message) {
            diagnostics.push(
                Diagnostic::file(
                    &overrides.file,
                    format!("{singular} {}: {problem}", row.index),
                )
                .at_line(row.line)
                .at_field(field),
            );
        }
        merged.insert(row.index, keep(message));
    }
    if out_of_range > overrides::MAX_DIAGNOSTICS_PER_FILE {
        diagnostics.push(Diagnostic::file(
            &overrides.file,
            format!(
                "{} more rows target {plural} out of range",
                out_of_range - overrides::MAX_DIAGNOSTICS_PER_FILE
            ),
        ));
    }
    // Unknown count: check the default anyway, it is almost always used.
    let using_default = count.map_or(1, |count| count.saturating_sub(merged.len() as u64));
    if using_default > 0
        && let Err((field, problem)) = check_type::<T>(default)
    {
        let users = match count {
            Some(_) => format!("used by {using_default} {plural} without a CSV row"),
            None => format!("used by the {plural} without a CSV row"),
        };
        diagnostics.push(
            Diagnostic::file(
                template_name,
                format!("{problem} (the default {singular} message, {users})"),
            )
            .at_field(join_path(&format!("default_{singular}_message"), &field)),
        );
    }
    (merged, skipped)
}

/// Checks a message from the project's files against `T`, as `(field path, problem)`.
fn check_type<T: DeserializeOwned>(message: &Value) -> Result<(), (String, String)> {
    check_type_of::<T>(message).map_err(|(path, mut problem)| {
        if problem.contains("expected a string")
            && (problem.contains("integer") || problem.contains("floating point"))
        {
            problem.push_str(
                "; a CSV cell that looks like a number is read as one: write it as a JSON \
                 string, \"\"\"75001\"\"\"",
            );
        }
        (path, problem)
    })
}

/// Checks any message against `T`, as `(field path, problem)`.
fn check_type_of<T: DeserializeOwned>(message: &Value) -> Result<(), (String, String)> {
    serde_path_to_error::deserialize::<_, T>(message)
        .map(drop)
        .map_err(|error| {
            let path = error.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, error.inner().to_string())
        })
}

#[cfg(test)]
mod tests;

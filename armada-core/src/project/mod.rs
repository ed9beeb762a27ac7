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
mod unread;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use diagnostics::{Diagnostic, Diagnostics};
pub use files::{NamedFile, ProjectFiles, Tune};
pub use settings::{MAX_AGENTS, MAX_JOBS, RunOverrides, RunSettings};

use crate::{AgentIndex, JobIndex};
use unread::{Origin, UnreadKeys};

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
            <S::Job as crate::JobContext<S::Agent>>::Payload,
        >(files, overrides)
    }

    /// The run's settings, with `jobs` resolved.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Number of agents: `run_message.agents`, after any run override.
    pub fn agents(&self) -> u32 {
        self.settings.agents
    }

    /// Number of jobs: `run_message.jobs` after any run override, or else the rows of
    /// `data_job.csv`.
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

    /// Writes every merged message as JSON lines: agents first, then jobs, with every
    /// [`Secret`](crate::Secret) read while planning hidden.
    pub fn write_json_lines(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        for (index, message) in self.agent_messages.iter().enumerate() {
            let line = serde_json::json!({ "agent": index, "message": message });
            writeln!(out, "{}", crate::redact_secrets(&line.to_string()))?;
        }
        for index in 0..self.jobs() {
            let line = serde_json::json!({ "job": index, "message": self.job_payload(index) });
            writeln!(out, "{}", crate::redact_secrets(&line.to_string()))?;
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
    let agent_rows = parse_rows(files.agent_csv.as_ref(), &AGENTS, diagnostics);
    let job_rows = parse_rows(files.job_csv.as_ref(), &JOBS, diagnostics);

    let Sections {
        default_agent,
        default_job,
        settings,
    } = template_sections(template?, tune.as_ref(), files, run_overrides, diagnostics);
    let (default_agent, default_job) = (default_agent?, default_job?);
    // Counts are known only with valid settings; rows are still checked without them, so every
    // problem is reported at once.
    let agents = settings.as_ref().map(|settings| u64::from(settings.agents));
    let jobs = settings.as_ref().and_then(|settings| {
        job_count(settings.jobs, job_rows.records, template_name, diagnostics)
    });
    let (agent_messages, skipped_agent_rows) = merge_rows::<C, _>(
        &default_agent,
        agent_rows,
        RowRange {
            count: agents,
            skip_beyond: run_overrides.agents.is_some(),
        },
        &AGENTS,
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
        &JOBS,
        template_name,
        diagnostics,
        // Each job's message is held as text from here on (see `JobMessage::payload`).
        |message| compact(&message),
    );
    let (settings, jobs) = (settings?, jobs?);
    let agent_messages = (0..u64::from(settings.agents))
        .map(|index| merged_or_default(&agent_messages, index, &default_agent))
        .collect();
    Some(Plan {
        settings: RunSettings {
            jobs: Some(jobs),
            ..settings
        },
        agent_messages,
        default_job: compact(&default_job),
        job_overrides,
        skipped_rows: (skipped_agent_rows, skipped_job_rows),
    })
}

fn parse_rows(
    file: Option<&NamedFile>,
    target: &Target,
    diagnostics: &mut Diagnostics,
) -> overrides::Overrides {
    file.map(|file| overrides::parse(file, target.index_column, diagnostics))
        .unwrap_or_default()
}

/// The template's sections, each `None` when it has a problem (reported).
struct Sections {
    default_agent: Option<Value>,
    default_job: Option<Value>,
    settings: Option<RunSettings>,
}

fn template_sections(
    template: Map<String, Value>,
    tune: Option<&Map<String, Value>>,
    files: &ProjectFiles,
    run_overrides: &RunOverrides,
    diagnostics: &mut Diagnostics,
) -> Sections {
    let template_name = files.template.name.as_str();
    let mut template = Value::Object(template);
    // A tune file that is not valid JSON is reported already: substituting without it would
    // also report every placeholder as having no tune file.
    if files.tune.is_none() || tune.is_some() {
        tune::substitute(
            &mut template,
            &mut String::new(),
            tune,
            template_name,
            &files.tune_name,
            diagnostics,
        );
    }
    let Value::Object(mut template) = template else {
        unreachable!("the template was parsed as an object")
    };
    check_template_keys(&template, template_name, diagnostics);
    let mut default_message =
        |target: &Target| take_default_message(&mut template, target, template_name, diagnostics);
    let default_agent = default_message(&AGENTS);
    let default_job = default_message(&JOBS);
    let settings = run_settings(
        template.remove("run_message"),
        run_overrides,
        template_name,
        diagnostics,
    );
    Sections {
        default_agent,
        default_job,
        settings,
    }
}

fn check_template_keys(
    template: &Map<String, Value>,
    template_name: &str,
    diagnostics: &mut Diagnostics,
) {
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
}

/// Removes the target's default message from the template; an absent one is empty.
fn take_default_message(
    template: &mut Map<String, Value>,
    target: &Target,
    template_name: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Value> {
    match template.remove(target.default_message) {
        None => Some(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Some(value),
        Some(other) => {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    format!("must be an object, found {}", kind_of(&other)),
                )
                .at_field(target.default_message),
            );
            None
        }
    }
}

/// `run_message.jobs` when set, else one job per row of `data_job.csv`.
fn job_count(
    jobs: Option<u64>,
    job_csv_records: u64,
    template_name: &str,
    diagnostics: &mut Diagnostics,
) -> Option<u64> {
    match jobs {
        Some(jobs) => Some(jobs),
        None if job_csv_records > 0 => Some(job_csv_records),
        None => {
            diagnostics.push(
                Diagnostic::file(
                    template_name,
                    "the number of jobs is not set and data_job.csv has no rows: set \
                     run_message.jobs or override the run's job count",
                )
                .at_field("run_message.jobs"),
            );
            None
        }
    }
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

/// What the rows of a CSV file target, as messages and options name it.
struct Target {
    singular: &'static str,
    plural: &'static str,
    index_column: &'static str,
    default_message: &'static str,
    /// What the script's type makes of the message, as diagnostics name it.
    message_kind: &'static str,
}

const AGENTS: Target = Target {
    singular: "agent",
    plural: "agents",
    index_column: "targetted_agent",
    default_message: "default_agent_message",
    message_kind: "agent config",
};

const JOBS: Target = Target {
    singular: "job",
    plural: "jobs",
    index_column: "targetted_job",
    default_message: "default_job_message",
    message_kind: "job payload",
};

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
    target: &Target,
    template_name: &str,
    diagnostics: &mut Diagnostics,
    keep: impl Fn(Value) -> M,
) -> (BTreeMap<u64, M>, u64) {
    let overrides::Overrides {
        file,
        rows,
        columns,
        ..
    } = overrides;
    let mut merger = RowMerger {
        file: &file,
        template_name,
        columns: &columns,
        target,
        out_of_range: 0,
        unread: UnreadKeys::new(target.message_kind),
        diagnostics,
    };
    let mut merged = BTreeMap::new();
    let mut skipped = 0;
    for row in rows {
        match count.filter(|&count| row.index >= count) {
            Some(_) if skip_beyond => skipped += 1,
            Some(count) => merger.out_of_range(&row, count),
            None => {
                let (index, message) = merger.merge::<T>(default, row);
                merged.insert(index, keep(message));
            }
        }
    }
    let mut unread = merger.finish();
    check_default::<T>(
        default,
        count,
        merged.len(),
        target,
        template_name,
        (diagnostics, &mut unread),
    );
    unread.report(diagnostics);
    (merged, skipped)
}

/// Merges one file's rows and reports their problems; past the first out-of-range rows it only
/// counts them, as `overrides::parse` does with its problems.
struct RowMerger<'a> {
    file: &'a str,
    template_name: &'a str,
    /// The file's header paths and their columns.
    columns: &'a [(String, u64)],
    target: &'a Target,
    out_of_range: usize,
    unread: UnreadKeys,
    diagnostics: &'a mut Diagnostics,
}

impl RowMerger<'_> {
    fn out_of_range(&mut self, row: &overrides::Row, count: u64) {
        self.out_of_range += 1;
        if self.out_of_range > overrides::MAX_DIAGNOSTICS_PER_FILE {
            return;
        }
        let Target {
            singular,
            plural,
            index_column,
            ..
        } = self.target;
        let valid = match count {
            0 => "no index is valid".to_owned(),
            count => format!("indexes 0 to {}", count - 1),
        };
        self.diagnostics.push(
            Diagnostic::file(
                self.file,
                format!(
                    "{singular} {} is out of range: the run has {count} {plural} ({valid}); raise \
                     `{plural}` (run_message.{plural} or its run override) or remove the row",
                    row.index,
                ),
            )
            .at_line(row.line)
            .at_column(1)
            .at_field(*index_column),
        );
    }

    /// The row's index and message, the message checked against `T`.
    fn merge<T: DeserializeOwned>(&mut self, default: &Value, row: overrides::Row) -> (u64, Value) {
        let mut message = default.clone();
        deep_merge(&mut message, Value::Object(row.overlay));
        match check_type::<T>(&message) {
            Err((field, problem)) => self.diagnostics.push(
                Diagnostic::file(
                    self.file,
                    format!("{} {}: {problem}", self.target.singular, row.index),
                )
                .at_line(row.line)
                .at_field(field),
            ),
            Ok(unread) => self.note_unread::<T>(default, &message, &unread),
        }
        (row.index, message)
    }

    /// Blames each unread key on the template when its default message holds it, else on the
    /// CSV column that set it.
    fn note_unread<T: DeserializeOwned>(
        &mut self,
        default: &Value,
        message: &Value,
        unread: &[String],
    ) {
        for path in unread {
            let in_default = default
                .as_object()
                .is_some_and(|default| unread::holds(default, path));
            let origin = match overrides::column_of(self.columns, path) {
                Some(column) if !in_default => Origin::Column {
                    file: self.file.to_owned(),
                    column,
                },
                _ => Origin::Message {
                    file: self.template_name.to_owned(),
                    prefix: self.target.default_message.to_owned(),
                },
            };
            let siblings = unread::known_siblings::<T>(message, path, unread);
            self.unread.add(origin, path.clone(), siblings);
        }
    }

    /// Reports what only the whole file tells, and hands over its unread keys.
    fn finish(self) -> UnreadKeys {
        if self.out_of_range > overrides::MAX_DIAGNOSTICS_PER_FILE {
            self.diagnostics.push(Diagnostic::file(
                self.file,
                format!(
                    "{} more rows target {} out of range",
                    self.out_of_range - overrides::MAX_DIAGNOSTICS_PER_FILE,
                    self.target.plural
                ),
            ));
        }
        self.unread
    }
}

/// Checks the default message against `T` when some agent or job has no row; with an unknown
/// count it is checked anyway, as it is almost always used.
fn check_default<T: DeserializeOwned>(
    default: &Value,
    count: Option<u64>,
    rows: usize,
    target: &Target,
    template_name: &str,
    (diagnostics, unread): (&mut Diagnostics, &mut UnreadKeys),
) {
    let using_default = count.map_or(1, |count| count.saturating_sub(rows as u64));
    if using_default == 0 {
        return;
    }
    let (field, problem) = match check_type::<T>(default) {
        Err(problem) => problem,
        Ok(paths) => {
            for path in &paths {
                let origin = Origin::Message {
                    file: template_name.to_owned(),
                    prefix: target.default_message.to_owned(),
                };
                let siblings = unread::known_siblings::<T>(default, path, &paths);
                unread.add(origin, path.clone(), siblings);
            }
            return;
        }
    };
    let Target {
        singular, plural, ..
    } = target;
    let users = match count {
        Some(_) => format!("used by {using_default} {plural} without a CSV row"),
        None => format!("used by the {plural} without a CSV row"),
    };
    diagnostics.push(
        Diagnostic::file(
            template_name,
            format!("{problem} (the default {singular} message, {users})"),
        )
        .at_field(join_path(target.default_message, &field)),
    );
}

/// Checks a message from the project's files against `T`: its first problem as `(field path,
/// problem)`, or the keys `T` does not read.
fn check_type<T: DeserializeOwned>(message: &Value) -> Result<Vec<String>, (String, String)> {
    unread::check::<T>(message).map_err(|(path, mut problem)| {
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

#[cfg(test)]
mod tests;

//! The one reading of a launch over HTTP, for every route that launches: the dashboard's
//! Launch form (`POST /api/v1/launch`) and the service's `POST /runs`, as JSON or as a form.
//! Both give the same [`LaunchRequest`], refuse the same mistakes with the same words, and
//! answer through [`answer`](super::answer).

use axum::extract::Multipart;
use serde::Deserialize;
use serde_json::Value;

use super::{field_text, form_error};
use crate::control::LaunchRequest;
use crate::model::RunLabel;
use crate::{Error, Result};

/// A launch as a client writes it: the JSON body of `POST /runs`, or the same fields as the
/// parts of a form (the CSV files may be named `data_agent.csv` and `data_job.csv`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchBody {
    /// Deep-merged into the project's `config_template.json`.
    pub overrides: Option<Value>,
    /// A tune's name (`local`, `distant`, …) or its values.
    pub tune: Option<Value>,
    /// Replaces the project's `data_agent.csv`.
    pub data_agent_csv: Option<String>,
    /// Replaces the project's `data_job.csv`.
    pub data_job_csv: Option<String>,
    /// Overrides `run_message.agents`.
    pub agents: Option<u32>,
    /// Overrides `run_message.jobs`.
    pub jobs: Option<u64>,
    /// Where agents run; only `local` is served over HTTP.
    pub target: Option<String>,
    /// A run to repeat: its tune, counts and CSV files are reused unless given.
    pub relaunch_of: Option<String>,
    /// What to call the run.
    pub name: Option<String>,
    /// Words to group and find the run by; in a form, separated by commas or spaces.
    pub tags: Option<Vec<String>>,
}

/// The form parts a launch takes, for the message that refuses any other.
const FORM_PARTS: &str = "overrides, tune, agents, jobs, data_agent.csv, data_job.csv, target, relaunch_of, name \
     and tags";

impl LaunchBody {
    /// The launch this body asks for.
    pub fn into_request(self) -> Result<LaunchRequest> {
        if let Some(target) = self.target.as_deref().filter(|target| *target != "local") {
            return Err(Error::Invalid(format!(
                "target `{target}` cannot be launched over HTTP yet: use `local`, or launch \
                 from the project's command line with the Kubernetes target"
            )));
        }
        let (tune, tune_values) = match self.tune {
            None => (None, None),
            Some(Value::String(name)) => (Some(name), None),
            Some(values @ Value::Object(_)) => (None, Some(values)),
            Some(_) => {
                return Err(Error::Invalid(
                    "`tune` is a tune's name (\"local\") or its values as a JSON object".into(),
                ));
            }
        };
        let label = RunLabel::new(self.name.as_deref(), &self.tags.unwrap_or_default())
            .map_err(Error::Invalid)?;
        Ok(LaunchRequest {
            label,
            tune,
            tune_values,
            agents: self.agents,
            jobs: self.jobs,
            data_agent_csv: self.data_agent_csv,
            data_job_csv: self.data_job_csv,
            template_overrides: self.overrides,
            relaunch_of: self.relaunch_of,
            ..LaunchRequest::default()
        })
    }

    /// The body a form's parts give; an empty part is as if it were left out, as a browser
    /// sends every field of a form.
    pub fn from_form(parts: Vec<(String, String)>, what: &str) -> Result<Self> {
        let mut body = Self::default();
        for (name, text) in parts {
            if text.trim().is_empty() {
                continue;
            }
            let json = || {
                serde_json::from_str::<Value>(&text).map_err(|error| {
                    Error::Invalid(format!("{what}'s `{name}` is not JSON: {error}"))
                })
            };
            let number = || Error::Invalid(format!("{what}'s `{name}` must be a whole number"));
            match name.as_str() {
                "overrides" => body.overrides = Some(json()?),
                "tune" if text.trim_start().starts_with('{') => body.tune = Some(json()?),
                "tune" => body.tune = Some(Value::String(text.trim().to_owned())),
                "agents" => body.agents = Some(text.trim().parse().map_err(|_| number())?),
                "jobs" => body.jobs = Some(text.trim().parse().map_err(|_| number())?),
                "data_agent.csv" | "data_agent" => body.data_agent_csv = Some(text),
                "data_job.csv" | "data_job" => body.data_job_csv = Some(text),
                "target" => body.target = Some(text.trim().to_owned()),
                "relaunch_of" => body.relaunch_of = Some(text.trim().to_owned()),
                "name" => body.name = Some(text),
                "tags" => {
                    let words = text.split([',', ' ', '\n']).filter(|word| !word.is_empty());
                    body.tags = Some(words.map(str::to_owned).collect());
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "{what} has an unknown part `{other}`; it takes {FORM_PARTS}"
                    )));
                }
            }
        }
        Ok(body)
    }
}

/// A form's parts, each read whole as UTF-8 text; `what` names the form in errors.
pub async fn form_parts(mut form: Multipart, what: &str) -> Result<Vec<(String, String)>> {
    let mut parts = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|error| form_error(&error, what))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let text = field_text(field, &format!("{what}'s `{name}`")).await?;
        parts.push((name, text));
    }
    Ok(parts)
}

/// The launch a form asks for.
pub async fn launch_form(form: Multipart, what: &str) -> Result<LaunchRequest> {
    LaunchBody::from_form(form_parts(form, what).await?, what)?.into_request()
}

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{Diagnostic, Diagnostics};

/// Which tune file resolves the template's `$env_` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tune {
    /// `config/config_local.json`: running on this machine.
    #[default]
    Local,
    /// `config/config_distant.json`: running on shared infrastructure.
    Distant,
    /// Any other tune file, at this path (not joined to the project folder).
    Path(PathBuf),
}

impl FromStr for Tune {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "local" => Self::Local,
            "distant" => Self::Distant,
            path => Self::Path(path.into()),
        })
    }
}

impl Tune {
    fn path_in(&self, project: &Path) -> PathBuf {
        match self {
            Self::Local => project.join("config").join("config_local.json"),
            Self::Distant => project.join("config").join("config_distant.json"),
            Self::Path(path) => path.clone(),
        }
    }
}

/// A file's name, as shown in diagnostics, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    /// How diagnostics name the file.
    pub name: String,
    /// The file's raw bytes, not yet parsed.
    pub contents: Vec<u8>,
}

impl NamedFile {
    /// A file held in memory, for example an upload.
    pub fn new(name: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            contents: contents.into(),
        }
    }
}

/// The raw inputs of a plan: read from a project folder, or assembled in memory (uploads,
/// tests, other services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFiles {
    /// `config_template.json`.
    pub template: NamedFile,
    /// The tune file; `None` when it does not exist (fine while no placeholder needs it).
    pub tune: Option<NamedFile>,
    /// The name the tune file would have, for diagnostics when it is missing.
    pub tune_name: String,
    /// `data_agent.csv`, when present.
    pub agent_csv: Option<NamedFile>,
    /// `data_job.csv`, when present.
    pub job_csv: Option<NamedFile>,
}

impl ProjectFiles {
    /// A project made of a template held in memory, with no tune file and no CSV file; add
    /// them with [`ProjectFiles::with_tune`], [`ProjectFiles::with_agent_csv`] and
    /// [`ProjectFiles::with_job_csv`] (or through the public fields).
    pub fn from_template(template: impl Into<Vec<u8>>) -> Self {
        Self {
            template: NamedFile::new("config_template.json", template),
            tune: None,
            tune_name: "config_local.json".to_owned(),
            agent_csv: None,
            job_csv: None,
        }
    }

    /// Resolves the template's `$env_` placeholders from this tune file; diagnostics name it
    /// by its [`NamedFile::name`].
    pub fn with_tune(mut self, tune: NamedFile) -> Self {
        self.tune_name.clone_from(&tune.name);
        self.tune = Some(tune);
        self
    }

    /// Per-agent overrides, as the contents of `data_agent.csv` (and named so in diagnostics).
    pub fn with_agent_csv(mut self, csv: impl Into<Vec<u8>>) -> Self {
        self.agent_csv = Some(NamedFile::new("data_agent.csv", csv));
        self
    }

    /// Per-job overrides, as the contents of `data_job.csv` (and named so in diagnostics).
    pub fn with_job_csv(mut self, csv: impl Into<Vec<u8>>) -> Self {
        self.job_csv = Some(NamedFile::new("data_job.csv", csv));
        self
    }

    /// Reads `config/` of a project folder. A missing template, or a tune file given by path
    /// that does not exist, is a diagnostic; missing CSV files mean "defaults for everyone".
    pub fn read(project: &Path, tune: &Tune) -> crate::Result<Self> {
        let config = project.join("config");
        let mut diagnostics = Diagnostics::default();
        let template_path = config.join("config_template.json");
        let template = read_optional(&template_path, &mut diagnostics);
        if template.is_none() && diagnostics.is_empty() {
            diagnostics.push(Diagnostic::file(
                display(&template_path),
                format!(
                    "no config template here: is `{}` an Armada project folder (it needs \
                     config/config_template.json)?",
                    project.display()
                ),
            ));
        }
        let tune_path = tune.path_in(project);
        let tune_file = read_optional(&tune_path, &mut diagnostics);
        if tune_file.is_none() && matches!(tune, Tune::Path(_)) {
            diagnostics.push(Diagnostic::file(
                display(&tune_path),
                "the tune file chosen for this run does not exist",
            ));
        }
        let agent_csv = read_optional(&config.join("data_agent.csv"), &mut diagnostics);
        let job_csv = read_optional(&config.join("data_job.csv"), &mut diagnostics);
        let template = diagnostics.into_result(template)?;
        Ok(Self {
            template: template.unwrap_or_else(|| NamedFile::new("", Vec::new())),
            tune: tune_file,
            tune_name: display(&tune_path),
            agent_csv,
            job_csv,
        })
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn read_optional(path: &Path, diagnostics: &mut Diagnostics) -> Option<NamedFile> {
    match std::fs::read(path) {
        Ok(contents) => Some(NamedFile::new(display(path), contents)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            diagnostics.push(Diagnostic::file(
                display(path),
                format!("cannot read: {error}"),
            ));
            None
        }
    }
}

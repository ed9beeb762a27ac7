use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Index of an agent in its run, `0..agents`; the Kubernetes completion index.
pub type AgentIndex = u32;
/// Index of a job in its run, `0..jobs`; the `targetted_job` of `data_job.csv`.
pub type JobIndex = u64;

/// Identifies one run; every queue, key and monitor record of the run is namespaced by it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Arc<str>);

impl RunId {
    /// A fresh, random run id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }

    /// Takes a run id given by a user or another process. It must be non-empty and made of
    /// ASCII letters, digits, `-` and `_`, since it names queues, keys and folders.
    pub fn parse(text: &str) -> crate::Result<Self> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(text.into()))
        } else {
            Err(crate::Error::InvalidRunId(text.to_owned()))
        }
    }

    /// The id as text, as it appears in queue names, store keys and folder names.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

/// Identifies one job; it stays the same on every attempt so the monitor records the job once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh, random job id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id of job `index` of `run`: derived from both, so that any process following the
    /// run (`attach`) names its jobs as the launcher did, without storing every id.
    pub fn of(run: &RunId, index: u64) -> Self {
        let name = format!("{run}/{index}");
        Self(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            name.as_bytes(),
        ))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

//! What the benchmarks share: a script that does nothing, and its plan.

use armada::prelude::*;
use armada::{Plan, ProjectFiles, RunOverrides};
use serde::de::IgnoredAny;

/// A script that does nothing: what is measured is Armada around it.
pub struct Noop;

impl Script for Noop {
    type Agent = PlainAgent;
    type Job = Job<IgnoredAny>;
    type Output = ();

    async fn run(&self, _: &mut PlainAgent, _: &mut Job<IgnoredAny>) -> Result<(), ScriptError> {
        Ok(())
    }
}

/// A plan of `jobs` no-op jobs for `agents` agents, one attempt each.
pub fn noop_plan(agents: u32, jobs: u64) -> Plan {
    let template = serde_json::json!({
        "run_message": { "agents": agents, "jobs": jobs, "max_attempts": 1 },
        "default_job_message": { "url": "http://127.0.0.1/" },
    });
    let files = ProjectFiles::from_template(template.to_string());
    Plan::for_script::<Noop>(&files, &RunOverrides::default()).expect("a valid plan")
}

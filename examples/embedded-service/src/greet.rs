//! The script this service runs: no browser, each job greets a visitor in its agent's words,
//! after some simulated work. A visitor marked `fail` fails on purpose, to show failures.

use std::time::Duration;

use armada::prelude::*;
use serde::{Deserialize, Serialize};

/// The longest simulated work a job may ask for, so a request cannot hold agents for long.
pub const MAX_WORK_MS: u64 = 5_000;

/// Per-agent config, made in code by the service from the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Greeter {
    /// The greeting word ("Hello", "Bonjour").
    pub greeting: String,
}

/// One job's payload, as the caller sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visitor {
    /// Who to greet.
    pub name: String,
    /// Milliseconds of simulated work, standing in for a page load (at most [`MAX_WORK_MS`]).
    #[serde(default)]
    pub work_ms: u64,
    /// Fail this job, on purpose.
    #[serde(default)]
    pub fail: bool,
}

/// What a job returns.
#[derive(Debug, Serialize)]
pub struct Greeting {
    /// The greeting.
    pub text: String,
    /// The agent that wrote it.
    pub agent: u32,
}

/// The script.
#[derive(Debug, Default)]
pub struct Greet;

impl Script for Greet {
    type Agent = PlainAgent<Greeter>;
    type Job = Job<Visitor>;
    type Output = Greeting;

    async fn run(
        &self,
        agent: &mut Self::Agent,
        job: &mut Self::Job,
    ) -> Result<Greeting, ScriptError> {
        let visitor = &job.payload;
        tokio::time::sleep(Duration::from_millis(visitor.work_ms.min(MAX_WORK_MS))).await;
        if visitor.fail {
            return Err(ScriptError::fail(format!(
                "{} asked to fail, on purpose",
                visitor.name
            )));
        }
        let text = format!("{}, {}!", agent.config.greeting, visitor.name);
        job.report().success(text.clone());
        Ok(Greeting {
            text,
            agent: agent.info.index,
        })
    }
}

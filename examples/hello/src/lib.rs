//! The smallest Armada project: no browser. Each job takes a name and a number from its payload,
//! greets the name in its agent's style and measures the number's Collatz trajectory. Some jobs
//! fail their first attempt on purpose, to show retries.

use armada::Secret;
use armada::prelude::*;
use serde::{Deserialize, Serialize};

/// Per-agent config: `default_agent_message` merged with the agent's `data_agent.csv` row.
#[derive(Debug, Deserialize)]
pub struct Greeter {
    /// The greeting word ("Hello", "Bonjour").
    pub greeting: String,
    /// How the greeting is written.
    pub style: Style,
    /// A key for a service the greeting could be checked with. A `Secret`: plans, logs, results,
    /// events and the monitor show `***`; only the script sees its value.
    #[serde(default)]
    pub api_key: Option<Secret>,
}

/// How a greeting is written.
#[derive(Debug, Deserialize)]
pub struct Style {
    /// Shout it.
    pub uppercase: bool,
    /// Appended to the greeting.
    pub suffix: String,
}

/// Per-job payload: `default_job_message` merged with the job's `data_job.csv` row.
#[derive(Debug, Deserialize)]
pub struct Task {
    /// Who to greet.
    pub name: String,
    /// Where the Collatz trajectory starts (the job index is added).
    pub number: u64,
    /// Fail the first attempt on purpose.
    #[serde(default)]
    pub flaky: bool,
    /// Milliseconds of simulated work, standing in for a page load.
    #[serde(default)]
    pub work_ms: u64,
    /// Fail every attempt, to show a job running out of attempts and being dead-lettered.
    #[serde(default)]
    pub always_fail: bool,
    /// Milliseconds of a busy loop that never yields, as CPU-bound work run without
    /// `tokio::task::spawn_blocking` does: it holds its thread, and past the time limit its
    /// agent is replaced.
    #[serde(default)]
    pub spin_ms: u64,
    /// Abort the agent's process, to show a poison job: each attempt costs an agent, and the
    /// job fails after its attempts instead of taking every agent down.
    #[serde(default)]
    pub abort_agent: bool,
}

/// What a job returns.
#[derive(Debug, Serialize)]
pub struct Greeting {
    /// The greeting.
    pub text: String,
    /// Where the trajectory started.
    pub start: u64,
    /// Steps to reach 1.
    pub steps: u32,
    /// Highest value on the way.
    pub peak: u64,
    /// The length of the agent's API key, when it has one: what shows the script got its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_chars: Option<usize>,
}

/// The script.
#[derive(Debug, Default)]
pub struct Hello;

impl Script for Hello {
    type Agent = PlainAgent<Greeter>;
    type Job = Job<Task>;
    type Output = Greeting;

    async fn run(
        &self,
        agent: &mut Self::Agent,
        job: &mut Self::Job,
    ) -> Result<Greeting, ScriptError> {
        let task = &job.payload;
        // Every tenth job (and those marked flaky in data_job.csv) fails its first attempt.
        if (task.flaky || job.info.index % 10 == 3) && job.info.attempt == 1 {
            job.report().failure("first attempt fails on purpose");
            return Err(ScriptError::retry("flaky on the first attempt, on purpose"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(task.work_ms)).await;
        spin(std::time::Duration::from_millis(task.spin_ms));
        if task.abort_agent {
            std::process::abort();
        }
        if task.always_fail {
            return Err(ScriptError::retry("this job always fails, on purpose"));
        }
        let style = &agent.config.style;
        let mut text = format!("{}, {}{}", agent.config.greeting, task.name, style.suffix);
        if style.uppercase {
            text = text.to_uppercase();
        }
        let start = task.number + job.info.index;
        let (steps, peak) = collatz(start);
        let key_chars = agent.config.api_key.as_ref().map(|key| {
            // Even a script that reports the key shows `***` in the monitor.
            job.report()
                .info(format!("checked with key {}", key.expose()));
            key.expose().len()
        });
        job.report()
            .success(format!("{start} reaches 1 in {steps} steps"));
        Ok(Greeting {
            text,
            start,
            steps,
            peak,
            key_chars,
        })
    }
}

/// Keeps the thread busy for `time`, never yielding.
fn spin(time: std::time::Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < time {
        std::hint::spin_loop();
    }
}

/// Steps from `start` to 1 and the highest value on the way.
pub fn collatz(start: u64) -> (u32, u64) {
    let (mut value, mut steps, mut peak) = (start.max(1), 0, start.max(1));
    while value != 1 {
        value = if value % 2 == 0 {
            value / 2
        } else {
            3 * value + 1
        };
        peak = peak.max(value);
        steps += 1;
    }
    (steps, peak)
}
